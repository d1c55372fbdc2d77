"""Block-level knowledge distillation of a low-rank student from its dense teacher (LRA-QViT §3.4).

    loss.py         L = α CE + β Σ_l MSE(f_t^l(x_l), f_s^l(x_l)), the block hooks, `kd_loss`
    loop.py         `distill_`: AdamW + warm-up/cosine, resumable checkpoints, `DistillResult`
    distributed.py  torchrun / DDP: `init_distributed`, `is_main_process`
"""
from .distributed import init_distributed, is_main_process
from .loop import CHECKPOINT_FORMAT, DistillResult, distill_, kd_parameters, warmup_cosine
from .loss import BlockKDStudent, block_kd_loss, encoder_blocks, kd_loss

__all__ = ["init_distributed", "is_main_process", "CHECKPOINT_FORMAT", "DistillResult", "distill_", "kd_parameters",
           "warmup_cosine", "BlockKDStudent", "block_kd_loss", "encoder_blocks", "kd_loss"]
