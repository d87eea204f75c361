"""driftline: streaming drift detection and training-serving skew monitoring for ML risk models."""

__version__ = "0.1.0"
