"""Model loading: timm ViT-family architectures and the offline test bed."""
from .factory import TESTBED, ModelSpec, build_architecture, create_model, has_random_weights, read_state_dict

__all__ = ["TESTBED", "ModelSpec", "build_architecture", "create_model", "has_random_weights", "read_state_dict"]
