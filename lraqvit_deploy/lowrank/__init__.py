"""Low-rank compression (LRA / RB-LRA, LRA-QViT §3.1-3.3), block-level distillation (§3.4), and the
activation-aware pieces of Azizi et al. (§2): whitened SVD, error compensation, partial fine-tune."""
from .activation_svd import ActivationSVD, Spectrum, weighted_error, whitening
from .activations import LayerStats, collect_stats
from .api import compress_, low_rank_ranks, merge_, register_compress_handler
from .compensation import compensate_model_, fit_compensation
from .configs import DistillConfig, LowRankConfig
from .distill import DistillResult, distill_, init_distributed, is_main_process, kd_loss
from .finetune import partial_finetune_, partial_parameters
from .svd import find_targets, plan_ranks, rank_summary, uniform_ranks

__all__ = ["compress_", "merge_", "low_rank_ranks", "register_compress_handler", "LowRankConfig", "DistillConfig",
           "distill_", "kd_loss", "DistillResult", "init_distributed", "is_main_process", "find_targets",
           "plan_ranks", "rank_summary", "uniform_ranks", "ActivationSVD", "Spectrum", "weighted_error", "whitening",
           "LayerStats", "collect_stats", "compensate_model_", "fit_compensation", "partial_finetune_",
           "partial_parameters"]
