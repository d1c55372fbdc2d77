"""One file per INT8 method; importing this package registers every handler (`register_quant_handler`)."""
from . import naive, per_token, qads, repq, smoothquant, wads  # noqa: F401

__all__ = ["naive", "per_token", "qads", "repq", "smoothquant", "wads"]
