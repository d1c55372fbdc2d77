"""Low-rank compression (LRA / RB-LRA, LRA-QViT §3.1-3.3) and block-level distillation (§3.4)."""
from .api import compress_, low_rank_ranks, merge_, register_compress_handler
from .configs import DistillConfig, LowRankConfig
from .distill import DistillResult, distill_, kd_loss
from .svd import find_targets, plan_ranks, rank_summary

__all__ = ["compress_", "merge_", "low_rank_ranks", "register_compress_handler", "LowRankConfig", "DistillConfig",
           "distill_", "kd_loss", "DistillResult", "find_targets", "plan_ranks", "rank_summary"]
