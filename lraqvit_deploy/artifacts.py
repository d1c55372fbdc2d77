"""Artifacts on disk: a folder with `manifest.json` beside the files it describes.

Every file the SDK writes goes through `atomic_write` / `atomic_dir`, so an interrupted or
failed run never leaves a half-written artifact behind: content is written to a temporary
sibling path and renamed into place only once complete.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, Union

from .errors import DeployError

MANIFEST = "manifest.json"
PathLike = Union[str, os.PathLike]


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file next to `path`; rename it onto `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Build a directory in a temporary sibling and swap it in place when the block succeeds.

    The previous content of `path` (if any) survives a failure untouched.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DeployError(f"{path} exists and is not a directory; choose another --out.")
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise DeployError(f"{path} is not empty; pass --overwrite or choose another --out.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.old-{os.getpid()}"
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path: PathLike, data: Dict[str, Any]) -> None:
    """Write JSON atomically (sorted keys are not forced: manifests read top-down)."""
    with atomic_write(path, "w") as f:
        json.dump(data, f, indent=2, default=_json_default)
        f.write("\n")


def read_json(path: PathLike) -> Dict[str, Any]:
    path = Path(path)
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise DeployError(f"{path} not found.") from None
    except json.JSONDecodeError as e:
        raise DeployError(f"{path} is not valid JSON ({e}); was it written by lraqvit-deploy?") from None


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


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
    from .layers import get_builder
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
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, get_builder(entry["type"])(getattr(parent, child), entry))
    model.load_state_dict(load_file(str(path / MODEL_FILE)), strict=True)
    model.lraqvit_spec = spec
    model.lraqvit_manifest = manifest
    return model.eval()
