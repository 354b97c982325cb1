"""timoe: mixture-of-experts routing guided by temporal multimodal interactions."""

__version__ = "0.1.0"
