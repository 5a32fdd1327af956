"""modalab: a lab for multimodal post-training experiments."""

__version__ = "0.1.0"
