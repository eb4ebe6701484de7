"""Loans, schema, statistics, model and pooled metrics: the pieces every side shares. No Flower import."""
