"""Model loading: timm ViT-family architectures (`families`, rewritten to the SDK's layout by `standard_layout_`)
and the offline test bed."""
from .factory import (TESTBED, ModelSpec, build_architecture, create_model, has_random_weights, read_state_dict,
                      standard_layout_)
from .families import FAMILIES, check_family

__all__ = ["TESTBED", "ModelSpec", "build_architecture", "create_model", "has_random_weights", "read_state_dict",
           "standard_layout_", "FAMILIES", "check_family"]
