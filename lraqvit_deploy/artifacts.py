"""Artifacts on disk: a folder with `manifest.json` beside the files it describes.

The format (manifest keys, model file, module entries, versions) lives here; the safe file I/O it
is written with lives in `io.py` (re-exported below for callers that import it from here).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from .errors import DeployError
from .model_info import model_info, record
from .io import PathLike, atomic_dir, atomic_write, read_json, sha256_file, write_json  # noqa: F401  (re-exported)

from .files import MANIFEST  # noqa: E402,F401  (defined beside the readers that find it)


# ---------------------------------------------------------------------------------------------
# Model artifacts: DIR/model.safetensors + DIR/manifest.json
# ---------------------------------------------------------------------------------------------
MODEL_FILE = "model.safetensors"
MODEL_FORMAT = "lraqvit-deploy/model/1"


def versions() -> Dict[str, str]:
    """Versions of the packages that shape an artifact's numbers."""
    import importlib.metadata as md

    out = {}
    for pkg in ("lraqvit-deploy", "torch", "timm", "executorch", "onnx", "onnxruntime"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def custom_modules(model) -> Dict[str, Dict[str, Any]]:
    """`{qualified_name: entry}` for every SDK module (those with `artifact_entry()`) in `model`."""
    return {
        name: m.artifact_entry()
        for name, m in model.named_modules()
        if name and hasattr(m, "artifact_entry")
    }


def save_model_artifact(out_dir: PathLike, model, extra: Dict[str, Any] | None = None) -> Path:
    """Write `model` (weights + structure + provenance) to `out_dir` atomically; returns the dir.

    Non-finite weights or scales (NaN/inf) are refused in one line before anything is written.
    """
    from safetensors.torch import save

    spec = model_info(model).spec
    if spec is None:
        raise DeployError("the model has no ModelInfo spec; create it with lraqvit_deploy.models.create_model.")
    manifest: Dict[str, Any] = {
        "format": MODEL_FORMAT,
        "model": spec.to_dict(),
        "modules": custom_modules(model),
        **(extra or {}),
        "versions": versions(),
    }
    from .finite import check_finite_weights

    check_finite_weights(model, f"refusing to save {out_dir}",
                         "nothing was written. A diverged distillation is the usual cause (lower --kd-lr / "
                         "--kd-branch-lr), else weights that already held them (check --weights).")
    tensors = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_dir(out_dir) as tmp:
        (tmp / MODEL_FILE).write_bytes(save(tensors))
        manifest["files"] = {MODEL_FILE: {"sha256": sha256_file(tmp / MODEL_FILE)}}
        write_json(tmp / MANIFEST, manifest)
    return Path(out_dir)


def is_model_artifact(path: PathLike) -> bool:
    path = Path(path)
    return path.is_dir() and (path / MANIFEST).is_file() and (path / MODEL_FILE).is_file()


def check_model_artifact(path: PathLike, what: str = "an artifact folder written by `deploy compress`") -> Path:
    """`path` if it is an artifact folder (manifest.json + model.safetensors); else one line saying what it is."""
    from .files import check_dir

    p = check_dir(path, what)
    missing = [f for f in (MANIFEST, MODEL_FILE) if not (p / f).is_file()]
    if missing:
        raise DeployError(f"{p}: not a model artifact (no {' and no '.join(missing)} inside: not an artifact folder "
                          f"of `deploy compress`); expected {what}.")
    return p


def load_model_artifact(path: PathLike):
    """Rebuild the model saved by `save_model_artifact` (no compression is re-run).

    Every file is checked before the architecture is built: a missing, corrupt or foreign
    manifest or model file is one DeployError line naming it.
    """
    from .files import bad_file, read_json_object, read_safetensors

    from . import layers  # noqa: F401  registers the SDK's module types
    from .layers import get_builder, replace_module
    from .models import ModelSpec, build_architecture

    path = check_model_artifact(path)
    what = "an artifact manifest written by `deploy compress`"
    manifest = read_json_object(path / MANIFEST, what)
    if manifest.get("format") != MODEL_FORMAT:
        raise DeployError(f"{path}: unsupported artifact format {manifest.get('format')!r} (want {MODEL_FORMAT}).")
    files = manifest.get("files") if isinstance(manifest.get("files"), dict) else {}
    want = (files.get(MODEL_FILE) or {}).get("sha256") if isinstance(files.get(MODEL_FILE), dict) else None
    if want and sha256_file(path / MODEL_FILE) != want:
        raise DeployError(f"{path / MODEL_FILE} does not match the sha256 in its manifest; the artifact is corrupt.")
    modules = manifest.get("modules", {})
    try:
        spec = ModelSpec.from_dict(manifest["model"])
        if not isinstance(modules, dict) or not all(isinstance(e, dict) and isinstance(e.get("type"), str)
                                                    for e in modules.values()):
            raise TypeError("'modules' is not a table of {name: {type: ...}}")
        builders = {name: get_builder(entry["type"]) for name, entry in modules.items()}
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise bad_file(path / MANIFEST, what, f"it does not describe a model: {type(e).__name__}: {e}") from None
    state = read_safetensors(path / MODEL_FILE, "the artifact's weights (safetensors)")
    model = build_architecture(spec)
    try:
        for name, entry in modules.items():
            replace_module(model, name, builders[name](model.get_submodule(name), entry))
    except (KeyError, AttributeError, TypeError, ValueError) as e:  # a module entry that does not fit the model
        raise bad_file(path / MANIFEST, what, f"module {name!r} does not fit {spec.arch}: {type(e).__name__}: {e}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise bad_file(path / MODEL_FILE, f"the weights of the model its manifest describes ({spec.arch})",
                       " ".join(str(e).split())[:200]) from None
    record(model, spec=spec, manifest=manifest, path=str(path))  # path: named by the checks that refuse it
    return model.eval()
