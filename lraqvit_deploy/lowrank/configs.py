"""Configs of the low-rank compression and its distillation: declared options (`lraqvit_deploy.options`).

Each field is declared once with its default, help and limits; `deploy compress` generates its
flags from these declarations (`flag=` names the flag where it differs from `--field-name`), and a
bad value is one `OptionError` naming the field (the CLI names the flag).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

from ..options import MAX_IMAGES, Options, option, seed_option

METHODS = ("lra", "rb-lra")
SVD_KINDS = ("auto", "plain", "activation")  # auto: activation-aware when calibration images are given
INITS = ("wr", "zero", "random")
DEFAULT_TARGETS = ("qkv", "proj", "fc1", "fc2")
MAX_RANK_MULTIPLE = 65_536
MAX_STEPS = 10 ** 9  # distillation steps
MAX_WORKERS = 256  # data-loading processes


@dataclass(frozen=True)
class LowRankConfig(Options):
    """Which Linears become rank-r pairs and how (LRA-QViT §3.1-3.3).

    Give either `param_reduction` (fraction of the WHOLE model's parameters to remove; every
    target layer loses the same fraction of its own parameters) or `ranks` ({module name: r},
    e.g. from `lraqvit_deploy.rank_alloc`); layers missing from `ranks` stay dense.
    """

    method: str = option("rb-lra", "lra: truncated SVD; rb-lra: SVD base + trainable branch merged after "
                                   "distillation", choices=METHODS, cli_default=None)
    param_reduction: Optional[float] = option(
        None, "fraction of the whole model's parameters to remove, e.g. 0.45; each target layer loses the same "
              "fraction of its weights (uniform allocation)", min=0, min_exclusive=True, max=1, max_exclusive=True,
        metavar="F")
    ranks: Optional[Mapping[str, int]] = option(None, "per-layer ranks {module name: rank}", flag="--ranks",
                                                cli=False)  # the CLI reads them from a JSON file
    rank_multiple: int = option(1, "round ranks to multiples of M (8 or 16 suit GEMM kernels)", min=1,
                                max=MAX_RANK_MULTIPLE, metavar="M")
    targets: Tuple[str, ...] = option(DEFAULT_TARGETS, "Linear attribute names inside encoder blocks", cli=False)
    include_patch_merging: bool = option(False, "also Swin's downsample.reduction", cli=False)
    init: str = option("wr", "RB-LRA branch init: wr (weight reconstruction), zero, random", choices=INITS)
    init_std: Optional[float] = option(None, "random init std (default: the RMS of the layer's WR branch)", min=0,
                                       min_exclusive=True, cli=False)
    train_base: bool = option(False, "RB-LRA: also train the SVD base factors")
    seed: int = seed_option()
    svd: str = option("plain", "plain: SVD of W (the LRA-QViT paper); activation: SVD of W whitened by the "
                               "calibration activations' second moment (Azizi et al.; far less damage); auto: "
                               "activation whenever calibration images are available (the test bed's, "
                               "the allocation's or the training images), else plain",
                      choices=SVD_KINDS, cli_default="auto")
    version: int = option(1, "config format version", cli=False)

    def validate(self) -> None:
        if (self.param_reduction is None) == (self.ranks is None):
            raise self.error("param_reduction", "give exactly one of param_reduction (e.g. 0.45) or ranks "
                                                "({layer: rank}).", "ranks")
        if self.ranks is not None:
            try:
                ranks = {str(k): int(v) for k, v in dict(self.ranks).items()}
            except (TypeError, ValueError):
                raise self.error("ranks", f"ranks = {self.ranks!r}: expected a mapping {{layer name: rank}}.") from None
            object.__setattr__(self, "ranks", ranks)
            if not ranks:
                raise self.error("ranks", "ranks is empty; name at least one layer.")
            bad = next((k for k, r in ranks.items() if r < 1), None)
            if bad is not None:
                raise self.error("ranks", f"ranks[{bad!r}] = {ranks[bad]}: a rank must be >= 1.")
        object.__setattr__(self, "targets", tuple(self.targets))

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["targets"] = list(self.targets)
        return d


# Defaults chosen for the test bed on 2 CPU cores (a few minutes); scale steps/batch up on a GPU.
DEFAULT_KD_STEPS = 240
DEFAULT_KD_BATCH = 16
DEFAULT_KD_LR = 1e-3  # chosen on 10,000 held-out training images against the converged reference (kd_objective.md)
DEFAULT_KD_ALPHA = 0.0  # no CE term: hard labels pull a converged student away from its teacher (kd_objective.md)
DEFAULT_KD_WARMUP = 0.05  # fraction of the steps, when warmup_steps is not given
DEFAULT_KD_FEATURE_LOSS = "nmse"
DEFAULT_KD_TRAINABLE = "low_rank"
TRAINABLE = ("low_rank", "low_rank+norm", "all")
FEATURE_LOSSES = ("mse", "nmse")
BLOCK_INPUTS = ("teacher", "student")
AMP_MODES = ("auto", "bf16", "fp16", "off")  # auto: bf16 on CUDA GPUs that have it, else fp16 on CUDA, off on CPU


@dataclass(frozen=True)
class DistillConfig(Options):
    """Block-level knowledge distillation (LRA-QViT §3.4): L = α CE + β Σ_l MSE(f_t^l(x_l), f_s^l(x_l)).

    The paper weights both terms (α = β = 1); the default here is α = 0, feature KD only: against a
    converged teacher the hard-label CE term cost accuracy at every lr tried, and without it a ~30x
    higher lr helps (benchmarks/results/kd_objective.md, chosen on held-out training images).

    `block_inputs="teacher"` feeds the teacher's block input x_l to both blocks (the paper's
    Eq. 10, one extra student pass); "student" compares the outputs of each model's own chain.
    `trainable="low_rank"` trains only the low-rank factors (RB-LRA: the branch, plus the base if
    `train_base`; LRA: up/down); "low_rank+norm" also the LayerNorm affines and every bias;
    "all" trains every parameter. `feature_loss="nmse"` divides each block's MSE by the mean
    square of that block's teacher output (a constant per block and batch, so each term keeps the
    paper's form): without it the deep blocks of DINOv2, whose features are ~10x larger, dominate.
    `branch_lr` gives RB-LRA's branch (`branch_up`, `branch_down`) its own peak lr, on the same
    warm-up + cosine schedule; every other trained parameter (the base with `train_base`) keeps
    `lr`. With a frozen base only the branch trains, so it equals setting `lr`.
    `amp` runs the teacher and student forwards under `torch.autocast` ("auto": bf16 on CUDA GPUs
    that support it, fp16 with a gradient scaler on older ones, off on the CPU); the loss stays FP32.
    `num_workers=None` picks the data-loading processes: 0 on the CPU, min(8, CPUs - 1) per GPU.
    A run stops on a NaN/inf loss and when its loss stays above 4x its running minimum for 10
    steps (`distill.loop.DIVERGENCE_FACTOR`, `DIVERGENCE_STEPS`); its last good checkpoint resumes
    with a lower `lr` / `branch_lr` (docs/compress.md, "Non-finite values and divergence").
    """

    steps: Optional[int] = option(None, f"optimizer steps (default {DEFAULT_KD_STEPS}; 0 = no distillation)", min=0,
                                  max=MAX_STEPS, flag="--kd-steps", metavar="N")
    epochs: Optional[float] = option(None, "epochs over the training images instead of `steps`", min=0,
                                     min_exclusive=True, max=1e6, flag="--kd-epochs", metavar="N")
    batch_size: int = option(DEFAULT_KD_BATCH, "images per batch, per process", min=1, max=MAX_IMAGES,
                             flag="--kd-batch-size", metavar="N")
    lr: float = option(DEFAULT_KD_LR, "AdamW peak lr, cosine decay", min=0, min_exclusive=True, max=10,
                       flag="--kd-lr", metavar="LR")
    branch_lr: Optional[float] = option(
        None, "rb-lra: a separate peak lr for the branch (default: `lr`); with a trained base (train_base) the "
              "base keeps `lr`", min=0, min_exclusive=True, max=10, flag="--kd-branch-lr", metavar="LR")
    weight_decay: float = option(0.01, "AdamW weight decay", min=0, max=10, flag="--kd-weight-decay", metavar="WD")
    alpha: float = option(DEFAULT_KD_ALPHA, "CE weight (the paper: 1; see kd_objective.md)", min=0, max=1e6,
                          flag="--kd-alpha")
    beta: float = option(1.0, "per-block feature-loss weight", min=0, max=1e6, flag="--kd-beta")
    max_grad_norm: Optional[float] = option(1.0, "gradient clipping norm", min=0, max=1e9, cli=False)
    warmup_steps: Optional[int] = option(None, "linear lr warm-up before the cosine decay (default "
                                               f"{DEFAULT_KD_WARMUP:.0%} of the steps)", min=0, max=MAX_STEPS,
                                         flag="--kd-warmup-steps", metavar="N")
    feature_loss: str = option(DEFAULT_KD_FEATURE_LOSS, "mse: the paper's per-block MSE; nmse: each block's MSE "
                                                        "divided by the mean square of its teacher output, so deep "
                                                        "blocks do not dominate", choices=FEATURE_LOSSES,
                               flag="--kd-feature-loss")
    block_inputs: str = option("teacher", "feed each student block the teacher's block input (the paper) or its own",
                               choices=BLOCK_INPUTS, flag="--kd-block-inputs")
    trainable: str = option(DEFAULT_KD_TRAINABLE, "what distillation trains: the low-rank factors, also LayerNorms "
                                                  "and biases, or everything", choices=TRAINABLE,
                            flag="--kd-trainable")
    checkpoint_every: int = option(20, "steps between resumable checkpoints", min=1, max=MAX_STEPS, cli=False)
    num_workers: Optional[int] = option(None, "data-loading worker processes per training process (default auto: 0 "
                                              "on the CPU, min(8, CPUs - 1) on a GPU)", min=0, max=MAX_WORKERS,
                                        flag="--kd-workers", metavar="N")
    amp: str = option("auto", "mixed precision of the KD forwards (loss stays FP32): auto = bf16 on GPUs that have "
                              "it, fp16 with loss scaling on older GPUs, off on the CPU; bf16 also runs on the CPU",
                      choices=AMP_MODES, flag="--kd-amp")
    seed: int = seed_option()
    device: str = option("auto", "'auto': the local CUDA device when present, else the CPU", cli=False)
    version: int = option(1, "config format version", cli=False)

    def validate(self) -> None:
        if self.amp == "fp16" and self.device == "cpu":
            raise self.error("amp", "amp = 'fp16' needs a CUDA device; on the CPU use amp = 'bf16' or 'off'.")
        if self.steps is not None and self.epochs is not None:
            raise self.error("steps", "give steps or epochs, not both.", "epochs")
        if self.alpha == 0 and self.beta == 0:
            raise self.error("alpha", "alpha = 0 and beta = 0: the loss has no term to train (the CE weight alpha "
                                      f"defaults to {DEFAULT_KD_ALPHA:g}); for a CE-only fine-tune give alpha = 1, "
                                      "beta = 0.", "beta")

    def total_steps(self, steps_per_epoch: int) -> int:
        if self.epochs is not None:
            return max(1, round(self.epochs * steps_per_epoch))
        return DEFAULT_KD_STEPS if self.steps is None else self.steps

    def warmup(self, total: int) -> int:
        """Warm-up steps of a run of `total` steps."""
        return round(DEFAULT_KD_WARMUP * total) if self.warmup_steps is None else self.warmup_steps

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["branch_lr"] is None:  # unset: the dict (manifests, checkpoint fingerprints) stays as before
            del d["branch_lr"]
        return d
