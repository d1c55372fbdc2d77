"""Artifacts on disk: a folder with `manifest.json` beside the files it describes.

The format (manifest keys, model file, module entries, versions) lives here; the safe file I/O it
is written with lives in `io.py` (re-exported below for callers that import it from here).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from .errors import DeployError
from .io import PathLike, atomic_dir, atomic_write, read_json, sha256_file, write_json  # noqa: F401  (re-exported)

MANIFEST = "manifest.json"


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
    """Write `model` (weights + structure + provenance) to `out_dir` atomically; returns the dir."""
    from safetensors.torch import save

    spec = getattr(model, "lraqvit_spec", None)
    if spec is None:
        raise DeployError("the model has no lraqvit_spec; create it with lraqvit_deploy.models.create_model.")
    manifest: Dict[str, Any] = {
        "format": MODEL_FORMAT,
        "model": spec.to_dict(),
        "modules": custom_modules(model),
        **(extra or {}),
        "versions": versions(),
    }
    tensors = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_dir(out_dir) as tmp:
        (tmp / MODEL_FILE).write_bytes(save(tensors))
        manifest["files"] = {MODEL_FILE: {"sha256": sha256_file(tmp / MODEL_FILE)}}
        write_json(tmp / MANIFEST, manifest)
    return Path(out_dir)


def is_model_artifact(path: PathLike) -> bool:
    path = Path(path)
    return path.is_dir() and (path / MANIFEST).is_file() and (path / MODEL_FILE).is_file()


def load_model_artifact(path: PathLike):
    """Rebuild the model saved by `save_model_artifact` (no compression is re-run)."""
    from safetensors.torch import load_file

    from . import layers  # noqa: F401  registers the SDK's module types
    from .layers import get_builder, replace_module
    from .models import ModelSpec, build_architecture

    path = Path(path)
    if not is_model_artifact(path):
        raise DeployError(f"{path} is not a model artifact (expected {MANIFEST} and {MODEL_FILE} inside).")
    manifest = read_json(path / MANIFEST)
    if manifest.get("format") != MODEL_FORMAT:
        raise DeployError(f"{path}: unsupported artifact format {manifest.get('format')!r} (want {MODEL_FORMAT}).")
    want = manifest.get("files", {}).get(MODEL_FILE, {}).get("sha256")
    if want and sha256_file(path / MODEL_FILE) != want:
        raise DeployError(f"{path / MODEL_FILE} does not match the sha256 in its manifest; the artifact is corrupt.")
    spec = ModelSpec.from_dict(manifest["model"])
    model = build_architecture(spec)
    for name, entry in manifest.get("modules", {}).items():
        replace_module(model, name, get_builder(entry["type"])(model.get_submodule(name), entry))
    model.load_state_dict(load_file(str(path / MODEL_FILE)), strict=True)
    model.lraqvit_spec = spec
    model.lraqvit_manifest = manifest
    return model.eval()
