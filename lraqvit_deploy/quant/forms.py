"""What each deployment target runs, and what a built program stores: the one place for both.

A weight *form* is (bits, group size): `WeightForm(8)` int8 per output channel, `WeightForm(4)`
int4 per output channel (XNNPACK `qc4w`), `WeightForm(4, 32)` int4 with one scale per block of 32
input columns (XNNPACK `qb4w`). Activations of every quantized form are int8, quantized per token
at run time (Android) or per tensor with a static scale (the Jetson's Q/DQ engine).

    target    forms                                    why
    android   w8, w4, w4g32, w4g64, w4g128             XNNPACK qd8 x qc8w / qc4w / qb4w GEMMs (KleidiAI)
    jetson    w8                                       TensorRT 8.5 on Xavier: INT8 only, per-channel weights

`program_bytes` is the memory model MLoRQ plans with and the size reports state: the bytes of the
built program, i.e. packed integers (two 4-bit weights per byte), weight scales (float32 per
channel; bfloat16 per block, which is how XNNPACK stores blockwise scales), everything else at its
own width (biases, LayerNorms, embeddings, the head: float32), plus the program's structure
(fitted on built .pte files of tiny ViT, DeiT, DINOv2 and Swin models, dense and low-rank, FP32, w8
and w4: 265 bytes per operator of the exported float graph and 450 bytes per quantized matrix;
`tests/lraqvit_deploy/quant/test_forms.py` checks the estimate against built programs within 5 %).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

TARGETS = ("android", "jetson")
GROUP_MULTIPLE = 32  # XNNPACK's blockwise GEMMs (and KleidiAI's qsi4c32p) take blocks of 32k input columns
ANDROID_GROUPS = (32, 64, 128)
QUANT_MATRIX_OVERHEAD_BYTES = 450  # the delegate's tensor records and quantize/dequantize nodes of one matrix
OP_OVERHEAD_BYTES = 265  # one operator of the exported float graph: its instruction and tensor records


@dataclass(frozen=True, order=True)
class WeightForm:
    """Integer weights at `bits`, one scale per output channel (`group` None) or per block of `group` inputs."""

    bits: int
    group: Optional[int] = None

    @property
    def name(self) -> str:
        return f"w{self.bits}" + (f"g{self.group}" if self.group else "")

    def matrix_bytes(self, out_f: int, in_f: int) -> float:
        """Packed integers + scales of an (out_f, in_f) matrix (no bias, no structure)."""
        ints = out_f * in_f * self.bits / 8
        scales = out_f * 4 if self.group is None else out_f * (in_f // self.group) * 2
        return ints + scales

    def fits(self, in_f: int) -> bool:
        return self.group is None or in_f % self.group == 0

    @classmethod
    def parse(cls, text: str) -> "WeightForm":
        """`w8`, `w4`, `w4g32` (also `8`, `4`, `4g32`)."""
        t = str(text).strip().lower().lstrip("w")
        bits, _, group = t.partition("g")
        try:
            return cls(int(bits), int(group) if group else None)
        except ValueError:
            raise ValueError(f"{text!r}: expected a weight form like w8, w4 or w4g32") from None


def target_forms(target: str) -> Tuple[WeightForm, ...]:
    """The weight forms `target` lowers, smallest storage first."""
    if target == "android":
        return tuple([WeightForm(4, g) for g in reversed(ANDROID_GROUPS)] + [WeightForm(4), WeightForm(8)])
    if target == "jetson":
        return (WeightForm(8),)
    raise ValueError(f"unknown target {target!r}; choose one of {TARGETS}")


def form_problem(target: str, form: WeightForm, in_f: int, act_scheme: str = "per_token_dynamic",
                 a_bits: int = 8) -> Optional[str]:
    """Why `target` cannot run a matrix of `in_f` inputs in `form` (None: it can)."""
    if target == "android":
        if act_scheme != "per_token_dynamic":
            return (f"activations {act_scheme!r} (XNNPACK runs dynamic per-token int8 activations: "
                    "act_scheme='per_token_dynamic')")
        if a_bits != 8:
            return f"{a_bits}-bit activations (XNNPACK runs int8)"
        if form.bits not in (8, 4):
            return f"{form.bits}-bit weights (XNNPACK runs 8- and 4-bit)"
        if form.group is not None and form.bits != 4:
            return f"blockwise {form.bits}-bit weights (XNNPACK's blockwise GEMM is 4-bit only)"
        if form.group is not None and (form.group % GROUP_MULTIPLE or in_f % form.group):
            return (f"group size {form.group} on {in_f} inputs (XNNPACK needs a multiple of {GROUP_MULTIPLE} "
                    "that divides the inputs)")
        if form.bits == 4 and in_f % 2:
            return f"4-bit weights on an odd number of inputs ({in_f}; XNNPACK packs two per byte)"
        return None
    if target == "jetson":
        if form != WeightForm(8) or a_bits != 8:
            return f"{form.name}a{a_bits} (TensorRT on Xavier runs INT8 weights and activations only)"
        return None
    raise ValueError(f"unknown target {target!r}; choose one of {TARGETS}")


def model_form_problems(model, target: str) -> Dict[str, str]:
    """`{layer: why}` for every QuantLinear of `model` that `target` cannot run as it is (empty: all can)."""
    from ..layers.quant_linear import QuantLinear

    return {n: why for n, m in model.named_modules() if isinstance(m, QuantLinear)
            for why in [form_problem(target, WeightForm(m.w_bits, m.w_group_size), m.in_features,
                                     m.act_scheme, m.a_bits)] if why}


def refuse_problems(problems: Dict[str, str], build: str, remedy: str) -> None:
    """One DeployError line naming the first layer `build` cannot lower (and how many more), or nothing."""
    if problems:
        from ..errors import DeployError

        name, why = next(iter(problems.items()))
        more = f" ({len(problems) - 1} more layer(s) too)" if len(problems) > 1 else ""
        raise DeployError(f"the {build} build cannot lower layer {name}: {why}{more}. {remedy}")


def layer_forms(target: str, in_f: int) -> List[WeightForm]:
    """The forms `target` runs for a matrix with `in_f` inputs."""
    return [f for f in target_forms(target) if form_problem(target, f, in_f) is None]


def quantized_bytes(forms: Iterable[Tuple[WeightForm, int, int]], structure: bool = True) -> float:
    """Stored bytes of quantized matrices `(form, out_f, in_f)`, with each one's structure overhead."""
    return sum(f.matrix_bytes(o, i) + (QUANT_MATRIX_OVERHEAD_BYTES if structure else 0) for f, o, i in forms)


def program_bytes(model, n_ops: Optional[int] = None, structure: bool = True) -> float:
    """The estimated size of `model`'s built program: quantized Linears in their forms, the rest as stored.

    `structure` adds the program's own records (False: weights, scales and the rest only).
    `n_ops`: the exported graph's operator count when known; otherwise 45 per encoder block plus
    10 (what timm ViTs export to).
    """
    import torch

    from ..layers.quant_linear import QuantLinear

    quant, skip = [], set()
    for name, m in model.named_modules():
        if isinstance(m, QuantLinear):
            quant.append((WeightForm(m.w_bits, m.w_group_size), m.out_features, m.in_features))
            prefix = f"{name}." if name else ""
            skip.update(prefix + k for k, _ in m.named_parameters())
            skip.update(prefix + k for k, _ in m.named_buffers())
            if m.linear.bias is not None:  # the bias stays float32
                skip.discard(f"{prefix}linear.bias")
            if m.input_scale.numel():  # an explicit divisor (fc2) stays float32
                skip.discard(f"{prefix}input_scale")
    rest = sum(t.numel() * t.element_size() for k, t in model.state_dict(keep_vars=True).items()
               if k not in skip and isinstance(t, torch.Tensor))
    if n_ops is None and structure:
        n_ops = graph_ops(model)
    return rest + quantized_bytes(quant, structure) + (OP_OVERHEAD_BYTES * n_ops if structure else 0)


def graph_ops(model) -> int:
    """Operators in the exported float graph of `model` (QuantLinears as their float Linears, attention
    unfused as the Android build exports it); 0 when the model does not export."""
    import torch

    from ..data import input_size
    from ..vit_layout import unfused_attention
    from .api import float_copy

    f = float_copy(model).eval()
    try:
        with torch.no_grad(), unfused_attention(f):
            ep = torch.export.export(f, (torch.zeros(1, *input_size(f)),), strict=False)
    except Exception:  # an estimate only: the build reports the real size
        return 0
    return sum(1 for n in ep.graph.nodes if n.op == "call_function")


def forms_summary(model) -> Dict[str, int]:
    """`{form name: count}` of the model's quantized Linears (e.g. {"w4g32": 40, "w8": 8})."""
    from ..layers.quant_linear import QuantLinear

    out: Dict[str, int] = {}
    for m in model.modules():
        if isinstance(m, QuantLinear):
            k = WeightForm(m.w_bits, m.w_group_size).name
            out[k] = out.get(k, 0) + 1
    return dict(sorted(out.items()))


def quantized_size_mb(model) -> float:
    """Stored size in MB (1e6) of the weights as a program holds them: QuantLinear weights packed at w_bits
    (4-bit: two per byte) with their scales, everything else at its own width (`program_bytes`
    without the program's structure records)."""
    return program_bytes(model, structure=False) / 1e6
