"""`create_model`: a timm ViT-family model (or the `testbed`) with weights from an explicit source.

Weight sources, in the order `weights="auto"` tries them:
  * the built-in `testbed` (DINOv2 ViT-S/14 fitted to Fashion-MNIST, fully offline): "auto" is the
    converged FP32 reference (fine-tuned end to end), "probe" the frozen backbone + linear probe;
  * timm's pretrained cache, only when the file is already on disk (never downloads);
and, named explicitly:
  * a local `.safetensors` / `.pth` / `.pt` / `.bin` file (loaded with `weights_only=True`);
  * `random`, for smoke tests.
Nothing ever falls back to random weights silently.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

import torch
import torch.nn as nn

from ..errors import DeployError, WeightsNotFoundError
from ..model_info import model_info, record
from ..model_options import ModelOptions
from ..options import OptionError

TESTBED = "testbed"
WEIGHT_FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


class WeightsError(OptionError, WeightsNotFoundError):
    """No weights at the named source (an OptionError of `ModelOptions.weights`: the CLI names --weights)."""

    def __init__(self, message: str):
        OptionError.__init__(self, ModelOptions, "weights", message)


def _weights_error(weights: str, why: str, missing: bool = False) -> DeployError:
    """`weights = 'x': why` (the CLI writes `--weights 'x': why`)."""
    message = f"weights = {weights!r}: {why}"
    return WeightsError(message) if missing else OptionError(ModelOptions, "weights", message)


@dataclass
class ModelSpec:
    """Everything needed to rebuild a model's architecture and say where its weights came from."""

    name: str  # what the user asked for: "testbed" or a timm architecture name
    arch: str  # the timm architecture actually built
    kwargs: Dict[str, Any] = field(default_factory=dict)  # timm.create_model kwargs (num_classes, img_size)
    weights: str = "random"  # human-readable description of the weight source
    testbed_profile: Optional[str] = None
    testbed_reference: Optional[str] = None  # test bed only: "converged" (fine-tuned) or "probe"

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "arch": self.arch, "kwargs": dict(self.kwargs), "weights": self.weights,
                "testbed_profile": self.testbed_profile, "testbed_reference": self.testbed_reference}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "ModelSpec":
        kwargs = dict(d.get("kwargs", {}))
        if "img_size" in kwargs and isinstance(kwargs["img_size"], list):
            kwargs["img_size"] = tuple(kwargs["img_size"])
        return cls(d["name"], d["arch"], kwargs, d.get("weights", "random"), d.get("testbed_profile"),
                   d.get("testbed_reference"))


def has_random_weights(model: nn.Module) -> bool:
    """True when `model` was built with `weights="random"` (its argmax on real images is near-tied noise,
    so verification gates report top-1 agreement instead of enforcing it; closeness gates still apply)."""
    spec = model_info(model).spec
    return spec is not None and spec.weights == "random"


def check_arch(name: str) -> None:
    """A supported family (`models.families`) and a name timm knows; else one line saying why not."""
    import timm

    from .families import check_family, supported_prefixes

    check_family(name, TESTBED)
    if not timm.is_model(name):
        import difflib

        prefixes = supported_prefixes()
        family = [n for n in timm.list_models() if n.split("_")[0] in prefixes]
        close = difflib.get_close_matches(name, family, n=8, cutoff=0.6)
        raise DeployError(f"timm has no model {name!r}. Similar names: {', '.join(close) or 'none'}.")


def standard_layout_(model: nn.Module) -> nn.Module:
    """Rewrite, exactly, what keeps a block's Linears out of their slots: EVA / BEiT / Swin V2 q/v biases
    into a real `qkv` Linear (`models.attention`), EVA-02's two-Linear SwiGLU into one `fc1` (`models.swiglu`)."""
    from .attention import fold_qkv_bias_
    from .swiglu import pack_swiglu_

    fold_qkv_bias_(model)
    pack_swiglu_(model)
    return model


def build_architecture(spec: ModelSpec, timm_layout: bool = False) -> nn.Module:
    """The bare architecture of `spec` with freshly initialised weights (used when reloading artifacts),
    in the SDK's layout (`standard_layout_`) unless `timm_layout` (to load a timm checkpoint first)."""
    import timm

    model = timm.create_model(spec.arch, pretrained=False, **spec.kwargs)
    if not timm_layout:
        standard_layout_(model)
    if spec.kwargs.get("img_size"):
        size = spec.kwargs["img_size"]
        h, w = (size, size) if isinstance(size, int) else size
        model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, h, w)}
    if spec.name == TESTBED:
        from . import testbed

        cfg = testbed.get_profile(spec.testbed_profile or "quick")
        model.pretrained_cfg = {**model.pretrained_cfg, **testbed.data_config(cfg), "num_classes": testbed.NUM_CLASSES}
    return model.eval()


def create_model(
    name: str = TESTBED,
    weights: str = "auto",
    *,
    num_classes: Optional[int] = None,
    img_size: Optional[int] = None,
    testbed_profile: str = "quick",
    progress: bool = True,
) -> nn.Module:
    """Build `name` with weights from `weights` ("auto", "random", "timm-cache" or a file path).

    The returned model records its `ModelSpec` (`model_info(model).spec`) so artifacts can record and
    rebuild it, and timm's `pretrained_cfg` for preprocessing.

    Example:
        >>> model = create_model("deit_tiny_patch16_224", weights="random")
    """
    if isinstance(weights, os.PathLike):
        weights = os.fspath(weights)
    opts = ModelOptions(weights=weights, num_classes=num_classes, img_size=img_size, testbed_profile=testbed_profile)
    weights, num_classes, img_size = opts.weights, opts.num_classes, opts.img_size
    if name == TESTBED:
        reference = {"auto": "converged", TESTBED: "converged", "converged": "converged", "probe": "probe"}.get(weights)
        if reference is None:
            raise _weights_error(weights, "the testbed brings its own weights: give 'auto' (the converged "
                                          "reference) or 'probe' (linear probe only).")
        from . import testbed

        cfg = testbed.get_profile(testbed_profile)
        model = testbed.build(cfg, progress=progress, reference=reference)
        record(model, spec=ModelSpec(TESTBED, testbed.dinov2_onnx.TIMM_ARCH, testbed.model_kwargs(cfg),
                                     testbed.describe(reference), testbed_profile, reference))
        return model

    check_arch(name)
    kwargs: Dict[str, Any] = {}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if img_size is not None:
        kwargs["img_size"] = img_size
    spec = ModelSpec(name, name, kwargs)
    # the weights are read (and checked) before the architecture is built: a bad file fails in a second
    if weights == "random":
        path, sd = None, None
    elif weights in ("auto", "timm-cache"):
        path = timm_cache_file(name)
        if path is None:
            raise _weights_error(weights, _no_weights_message(name), missing=True)
        sd = read_state_dict(path)
    else:
        path = Path(weights).expanduser()
        if path.suffix not in WEIGHT_FILE_SUFFIXES:
            raise _weights_error(weights, f"expected 'auto', 'random', 'timm-cache' or a file ending in "
                                          f"{', '.join(WEIGHT_FILE_SUFFIXES)}.")
        if not path.exists():
            raise _weights_error(weights, f"no such file ({path}); " + _no_weights_message(name, found=False),
                                 missing=True)
        sd = read_state_dict(path)
    model = build_architecture(spec, timm_layout=True)
    if path is None:
        spec.weights = "random"
    else:
        load_weights_file(model, path, sd)
        spec.weights = (f"timm cache: {path}" if weights in ("auto", "timm-cache")
                        else f"file: {path.resolve()}")
    standard_layout_(model)  # after the checkpoint: its keys are timm's (q_bias, v_bias, fc1_g, ...)
    record(model, spec=spec)
    return model.eval()


def _no_weights_message(name: str, found: bool = True) -> str:
    """What to do without weights, on one line (the CLI prints errors as one line)."""
    head = (f"no weights found for {name!r} (lraqvit-deploy never downloads and never falls back to random "
            "weights); " if found else "")
    return (f"{head}choose one: weights from a local checkpoint of {name} (PATH.safetensors|PATH.pth), 'random' "
            f"weights (smoke tests only), timm's cache pre-filled on a networked machine (python -c \"import timm; "
            f"timm.create_model('{name}', pretrained=True)\", then copy ~/.cache/huggingface), or the model "
            f"'{TESTBED}' (the built-in offline DINOv2 test bed).")


def timm_cache_file(name: str) -> Optional[Path]:
    """The pretrained file of `name` if timm's caches (HF hub or torch hub) already hold it."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:  # pragma: no cover - timm depends on huggingface_hub
            try_to_load_from_cache = None
        if try_to_load_from_cache is not None:
            repo = cfg.hf_hub_id.split("@")[0]
            for fname in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
                hit = try_to_load_from_cache(repo, fname)
                if isinstance(hit, str) and os.path.isfile(hit):
                    return Path(hit)
    if cfg.url:
        hit = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(cfg.url.split("?")[0])
        if hit.is_file() and hit.suffix in WEIGHT_FILE_SUFFIXES:  # e.g. big_vision .npz files are not read here
            return hit
    return None


def read_state_dict(path: Path) -> Dict[str, torch.Tensor]:
    """Tensors from a checkpoint file, never unpickling arbitrary objects (`lraqvit_deploy.files`)."""
    from ..files import read_state_dict as _read

    return _read(path)


def load_weights_file(model: nn.Module, path: Path, sd: Optional[Dict[str, torch.Tensor]] = None) -> None:
    """Load a checkpoint (or its tensors `sd`, already read) through timm's own per-architecture filter
    (original-format keys, pos-embed resize)."""
    import importlib

    sd = read_state_dict(path) if sd is None else sd
    filter_fn = getattr(importlib.import_module(type(model).__module__), "checkpoint_filter_fn", None)
    if filter_fn is not None:
        sd = filter_fn(sd, model)
    head = getattr(model, "head", None)
    head = getattr(head, "fc", head)  # swin keeps its Linear under head.fc
    if isinstance(head, nn.Linear):
        for k in (k for k in sd if "head" in k and k.endswith("weight") and sd[k].ndim == 2):
            if sd[k].shape[1] == head.in_features and sd[k].shape[0] != head.out_features:
                raise OptionError(ModelOptions, "num_classes",
                                  f"num_classes = {head.out_features}: {path}'s classifier {k} has {sd[k].shape[0]} "
                                  f"classes; set {sd[k].shape[0]}.")
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    wrong_shape = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in sd if k in own and sd[k].shape != own[k].shape]
    if missing or unexpected or wrong_shape:
        spec = model_info(model).spec
        arch = spec.arch if spec is not None else type(model).__name__
        raise OptionError(ModelOptions, "img_size",
                          f"{path} does not fit {arch}: {_few(missing)} missing, {_few(unexpected)} unexpected, "
                          f"{_few(wrong_shape)} with another shape. Is it a checkpoint of this architecture and "
                          f"img_size?", prose=True)
    model.load_state_dict(sd, strict=True)


def _few(items, n: int = 3) -> str:
    return "none" if not items else f"{len(items)} ({', '.join(items[:n])}{', ...' if len(items) > n else ''})"
