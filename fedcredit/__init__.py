"""fedcredit: federated credit-risk (loan default) modelling with Flower and Keras."""

__version__ = "0.1.0"
