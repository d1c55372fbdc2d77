"""QADS: the channel scale alpha searched on the output error alone (LRA-QViT Eq. 12), folded.

The search is WADS' (`methods/wads.py`) without its weight term, on every layer whose scale can
be folded (or executed, fc2='explicit'), not only those below the weight-error threshold.
"""
from __future__ import annotations

from .._registry import register_quant_handler
from ..api import quantize_layers_, scalable
from ..configs import QADSConfig
from .wads import alpha_search


@register_quant_handler(QADSConfig)
def _qads_transform(model, config: QADSConfig, calib_images):
    return quantize_layers_(model, config, calib_images,
                            select=lambda targets: [t for t in targets if scalable(t, config.fc2)],
                            scale=alpha_search(config, weight_term=False), keep_inputs=True)
