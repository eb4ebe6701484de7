"""Model-risk tools on a finished run: curves, baselines, the report, applicant scoring."""
