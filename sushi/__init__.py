"""SUSHI: SubGraph-Stationary serving of weight-shared neural networks on FPGAs."""
__version__ = "0.1.0"
