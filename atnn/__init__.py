"""atnn: new-arrival popularity ranking with the Adversarial Two-Tower Neural Network (ICDE 2021)."""

__version__ = "0.1.0"
