"""Writing files safely: every file the SDK writes goes through `atomic_write` / `atomic_dir`.

An interrupted or failed run never leaves a half-written file or artifact behind: content is
written to a temporary sibling path and renamed into place only once complete. This module knows
nothing of what the files hold (the artifact format is `artifacts.py`).
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


def read_json(path: PathLike, what: str = "a JSON file written by lraqvit-deploy") -> Dict[str, Any]:
    """The JSON document at `path` (`files.read_json`: a missing, empty or malformed file is one DeployError line)."""
    from .files import read_json as _read

    return _read(path, what)


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sha256_json(data: Any) -> str:
    """The sha256 (hex) of `data` as JSON with sorted keys: a content key of settings (same data, same key)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


__all__ = ["PathLike", "atomic_write", "atomic_dir", "write_json", "read_json", "sha256_file", "sha256_json"]
