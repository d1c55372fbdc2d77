"""Reading the files a user names: one place, and one kind of error for every way a file can be bad.

Every file the SDK reads on the user's behalf goes through a reader here: weights
(`.safetensors`, `.pt`/`.pth`/`.bin`), distillation checkpoints (`--checkpoint` / `--resume`),
images of an ImageFolder, artifact manifests and model files, JSON (`--ranks`, result files),
TOML configs (`deploy table --config`) and ExecuTorch programs (`.pte`). Each checks the path
first (it exists, it is a file, or a folder where one is expected, and it is not empty), then
parses it, and turns whatever the parser raises (safetensors' header errors, pickle/zip errors
of `torch.load`, PIL's `UnidentifiedImageError`, `tomllib`/`json` errors, undecodable bytes)
into ONE `DeployError` line:

    <path>: expected <what> (<short reason>)[; <what to do>]

Pickled code never runs: torch files are read with `torch.load(weights_only=True)`. This module
imports nothing of the SDK but `errors` (parsers are imported when used).
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Union

from .errors import DeployError

MANIFEST = "manifest.json"  # the file every artifact and build folder describes itself in (artifacts.py)

PathLike = Union[str, os.PathLike]
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
SKIP_FLAG = "--skip-bad-images"  # the CLI flag (Python API: skip_bad_images=True) that skips unreadable images


class BadImageError(DeployError):
    """An image of an ImageFolder that cannot be read; `.path` names it."""

    def __init__(self, path: PathLike, message: str):
        super().__init__(message)
        self.path = str(path)


def short_reason(e: BaseException, limit: int = 160) -> str:
    """`Type: first line of the message`, shortened: the parenthesised reason of a file error."""
    text = " ".join(str(e).split()) if str(e).strip() else ""
    text = text.splitlines()[0] if text else ""
    reason = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."


def bad_file(path: PathLike, what: str, reason: str, hint: str = "") -> DeployError:
    """The one-line error of a file that is not what it should be."""
    return DeployError(f"{path}: expected {what} ({reason})" + (f"; {hint}" if hint else ""))


# ---- paths ------------------------------------------------------------------------------------------
def check_file(path: PathLike, what: str, *, allow_empty: bool = False, hint: str = "") -> Path:
    """`path` as a Path, if it is an existing, readable, non-empty file; else one clear DeployError."""
    p = Path(path).expanduser()
    tail = f"; {hint}" if hint else ""
    if not p.exists():
        parent = next((a for a in p.parents if a.exists()), None)
        if parent is not None and not parent.is_dir():
            raise DeployError(f"{p}: no such file ({parent} is a file, not a folder); expected {what}{tail}")
        raise DeployError(f"{p}: no such file (expected {what}){tail}")
    if p.is_dir():
        raise DeployError(f"{p}: is a folder, expected {what}{tail}")
    if not p.is_file():
        raise DeployError(f"{p}: not a regular file, expected {what}{tail}")
    if not os.access(p, os.R_OK):
        raise DeployError(f"{p}: not readable (permission denied), expected {what}{tail}")
    if not allow_empty and p.stat().st_size == 0:
        raise DeployError(f"{p}: empty file (0 bytes), expected {what}{tail}")
    return p


def check_dir(path: PathLike, what: str, hint: str = "") -> Path:
    """`path` as a Path, if it is an existing folder; else one clear DeployError."""
    p = Path(path).expanduser()
    tail = f"; {hint}" if hint else ""
    if not p.exists():
        raise DeployError(f"{p}: no such folder (expected {what}){tail}")
    if not p.is_dir():
        raise DeployError(f"{p}: is a file, expected {what}{tail}")
    return p


def check_output_dir(path: PathLike, flag: str = "--out") -> Path:
    """An output folder we may (re)place atomically: not an existing file, and under a folder (or nothing)."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise DeployError(f"{flag} {p}: exists and is not a folder; it is left as it is: choose another {flag}.")
    _check_parents(p, flag)
    return p


def check_output_file(path: PathLike, flag: str, example: str = "results.json") -> Path:
    """An output file we may write atomically: not a folder, and under a folder (or nothing yet)."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise DeployError(f"{flag} {p}: is a folder; give a file path (e.g. {p / example}).")
    _check_parents(p, flag)
    return p


def _check_parents(p: Path, flag: str) -> None:
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise DeployError(f"{flag} {p}: {parent} is a file, not a folder; choose another {flag}.")
            return


# ---- text formats -----------------------------------------------------------------------------------
def read_text(path: PathLike, what: str, hint: str = "") -> str:
    p = check_file(path, what, hint=hint)
    data = p.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise bad_file(p, what, f"not UTF-8 text: undecodable byte at offset {e.start}", hint) from None


def read_json(path: PathLike, what: str = "a JSON file", hint: str = "") -> Any:
    """The parsed JSON document at `path`."""
    import json

    text = read_text(path, what, hint)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise bad_file(Path(path).expanduser(), what, f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}",
                       hint) from None


def read_json_object(path: PathLike, what: str = "a JSON object", hint: str = "") -> Dict[str, Any]:
    data = read_json(path, what, hint)
    if not isinstance(data, dict):
        raise bad_file(Path(path).expanduser(), what, f"the JSON holds a {type(data).__name__}, not an object", hint)
    return data


def read_toml(path: PathLike, what: str = "a TOML file", hint: str = "") -> Dict[str, Any]:
    """The parsed TOML document at `path`."""
    import tomllib

    p = Path(path).expanduser()
    text = read_text(p, what, hint)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise bad_file(p, what, f"not valid TOML: {' '.join(str(e).split())}", hint) from None


# ---- tensors ------------------------------------------------------------------------------------------
def read_safetensors(path: PathLike, what: str = "a .safetensors file", hint: str = "") -> Dict[str, Any]:
    """The tensors of a .safetensors file (its header and every tensor checked by safetensors)."""
    from safetensors.torch import load_file

    p = check_file(path, what, hint=hint)
    try:
        return load_file(str(p))
    except Exception as e:  # SafetensorError (HeaderTooLarge, InvalidHeader..., MetadataIncompleteBuffer), OSError
        raise bad_file(p, what, short_reason(e), hint) from None


def torch_load(path: PathLike, what: str, hint: str = "", mmap: bool = False) -> Any:
    """`torch.load(path, weights_only=True)`: tensors and plain containers only, never pickled code."""
    import torch

    p = check_file(path, what, hint=hint)
    try:
        return torch.load(str(p), map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # UnpicklingError (incl. refused globals), zip errors, EOFError, ...
        if mmap and "mmap" in str(e):  # an old non-zip torch file: read it whole instead
            return torch_load(p, what, hint)
        raise bad_file(p, what, _torch_reason(e), hint) from None


def _torch_reason(e: BaseException) -> str:
    """torch.load's reason without its weights_only boilerplate (which would fill the line)."""
    text = str(e)
    if "Weights only load failed" not in text:
        return short_reason(e)
    boiler = ("Weights only load failed", "Please file an issue", "Check the documentation")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith(boiler)]
    detail = " ".join(lines) or "not a plain tensor file"
    kind = "refused: it needs pickled code to load" if "GLOBAL" in detail else "not a plain tensor file"
    return short_reason(type(e)(f"{kind}: {detail}"))


def read_state_dict(path: PathLike, what: str = "") -> Dict[str, Any]:
    """{name: tensor} of a weights file (.safetensors, or .pt/.pth/.bin read with weights_only=True)."""
    import torch

    p = Path(path).expanduser()
    what = what or f"a weights file ({', '.join(WEIGHT_SUFFIXES)})"
    if p.suffix == ".safetensors":
        return read_safetensors(p, what)
    hint = ("lraqvit-deploy loads only tensors (torch.load weights_only=True): re-save it with "
            "torch.save(model.state_dict(), path) or convert it to .safetensors")
    obj = torch_load(p, what, hint)
    for key in ("state_dict", "model", "model_ema", "module"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        got = type(obj).__name__ if not isinstance(obj, dict) else ("an empty dict" if not obj else "a dict of non-tensors")
        raise bad_file(p, "a dict of tensors (a state_dict)", f"it holds {got}", hint)
    return {str(k).removeprefix("module."): v for k, v in obj.items()}


def read_kd_checkpoint(path: PathLike, expected_format: str, flag: str = "--checkpoint") -> Dict[str, Any]:
    """A distillation checkpoint's content, checked for its format key (tensors are memory-mapped, not read).

    `expected_format`: the format this version writes (`lowrank.distill.CHECKPOINT_FORMAT`; passed in so that
    this module, which every file read goes through, does not import the training loop).
    """
    p = Path(path).expanduser()
    what = f"a distillation checkpoint ({flag}) written by `deploy compress`"
    hint = f"delete it or pass another {flag}"
    state = torch_load(p, what, hint, mmap=True)
    if not isinstance(state, dict) or not isinstance(state.get("format"), str):
        raise bad_file(p, what, "it has no checkpoint format key", hint)
    if state["format"] != expected_format:
        raise bad_file(p, what, f"format {state['format']!r}, this version reads {expected_format!r}",
                       f"rerun without --resume to start afresh (the checkpoint is then replaced), or {hint}")
    missing = [k for k in ("fingerprint", "step", "student", "optimizer", "scheduler", "losses") if k not in state]
    if missing or not isinstance(state["fingerprint"], str) or not isinstance(state["step"], int):
        raise bad_file(p, what, f"incomplete checkpoint (missing or malformed: {', '.join(missing) or 'fingerprint/step'})",
                       hint)
    return state


def is_kd_checkpoint(path: PathLike) -> bool:
    """Whether `path` holds a distillation checkpoint of any version (so replacing it loses nothing foreign)."""
    try:
        state = torch_load(path, "a checkpoint", mmap=True)
    except DeployError:
        return False
    return isinstance(state, dict) and str(state.get("format", "")).startswith("lraqvit-deploy/kd-checkpoint/")


# ---- images -------------------------------------------------------------------------------------------
def _image_error(path: PathLike, reason: str, skip: bool) -> BadImageError:
    hint = ("remove or replace it" if skip else
            f"remove or replace it, or pass {SKIP_FLAG} (Python: skip_bad_images=True) to skip unreadable images")
    return BadImageError(path, f"{path}: expected an image PIL can read ({reason}); {hint}")


def open_image(path: PathLike, skip_hint: bool = True):
    """The image at `path` as RGB (PIL), or a BadImageError naming it."""
    from PIL import Image

    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            return img.convert("RGB")
    except Exception as e:  # UnidentifiedImageError, OSError (truncated), DecompressionBombError, ValueError
        raise _image_error(path, "empty file" if _empty(path) else short_reason(e), not skip_hint) from None


def check_image(path: PathLike) -> Optional[str]:
    """None if PIL identifies the image at `path` from its header (cheap: nothing is decoded), else why not."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.size  # noqa: B018  (header parsed)
        return None
    except Exception as e:
        return "empty file" if _empty(path) else short_reason(e)


def _empty(path: PathLike) -> bool:
    try:
        return os.path.getsize(path) == 0
    except OSError:
        return False


# ---- ExecuTorch programs --------------------------------------------------------------------------------
def check_pte(path: PathLike) -> Path:
    """`path` if it looks like an ExecuTorch program (flatbuffer with the ETxx identifier); checked before the
    runtime sees it, since the runtime aborts the process on some malformed files."""
    import re

    what = "an ExecuTorch program (.pte) written by `deploy build --target android`"
    p = check_file(path, what)
    with open(p, "rb") as f:
        head = f.read(8)
    if len(head) < 8:
        raise bad_file(p, what, f"only {len(head)} bytes")
    if not re.fullmatch(rb"ET[0-9A-Za-z]{2}", head[4:8]):
        raise bad_file(p, what, f"no ExecuTorch flatbuffer identifier: bytes 4-8 are {head[4:8]!r}")
    return p


def _flush_stderr() -> None:
    try:
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):
        pass


def _flush_c_stdio() -> None:
    """fflush(NULL): C's stdio buffers (a printf into a file or pipe waits there) reach their descriptors now."""
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError, TypeError):
        pass


@contextlib.contextmanager
def _descriptors_to(lines: List[str], fds, extra=None) -> Iterator[None]:
    """Point each of `fds` at one temporary file during the block, then restore them and add the file's
    non-blank lines (and `extra()`'s text, read after the restore) to `lines`. C's stdio is flushed at
    both ends, so nothing written inside the block reaches the real descriptors later."""
    saved = {}
    for fd in sorted(set(fds)):
        try:
            saved[fd] = os.dup(fd)
        except OSError:  # no such descriptor
            pass
    _flush_c_stdio()
    with tempfile.TemporaryFile() as tmp:
        for fd in saved:
            os.dup2(tmp.fileno(), fd)
        try:
            yield
        finally:
            _flush_c_stdio()
            for fd, old in saved.items():
                os.dup2(old, fd)
                os.close(old)
            tmp.seek(0)
            text = tmp.read().decode("utf-8", "replace") + (extra() if extra is not None else "")
            lines.extend(line for line in text.splitlines() if line.strip())


@contextlib.contextmanager
def native_stderr(lines: List[str]) -> Iterator[None]:
    """Collect what native code writes to file descriptor 2 during the block into `lines` (not the terminal).

    Runtimes written in C++ log their errors there; the caller turns them into the reason of one
    DeployError line, or, on success, hands them to `pass_on_native_log` (shown only with --debug).
    """
    import io

    # ExecuTorch's pybindings print the runtime's log through Python's sys.stderr, other C++ code writes
    # to descriptor 2 itself: both are collected (sys.stderr may be a capture object without a descriptor)
    fds = {2}
    try:
        fds.add(sys.stderr.fileno())  # the same descriptor, unless a capture moved sys.stderr elsewhere
    except (AttributeError, OSError, ValueError):
        pass
    _flush_stderr()
    py_err, buf = sys.stderr, io.StringIO()
    with _descriptors_to(lines, fds, buf.getvalue):
        sys.stderr = buf
        try:
            yield
        finally:
            sys.stderr = py_err


@contextlib.contextmanager
def native_stdout(lines: List[str]) -> Iterator[None]:
    """Collect what native code prints to file descriptor 1 during the block into `lines` (not the user's output).

    HiGHS (scipy's MILP solver, which the rank planner's integer program runs) prints a stray debug line,
    `HighsMipSolverData::transformNewIntegerFeasibleSolution tmpSolver.run();`, with printf. C's stdio
    buffer is flushed before the descriptor is restored, so nothing of the block leaks out later. Hand
    `lines` to `pass_on_native_log` (shown only with --debug).
    """
    try:
        sys.stdout.flush()
    except (AttributeError, OSError, ValueError):
        pass
    with _descriptors_to(lines, {1}):
        yield


_NATIVE_LOG = {"show": False}


def show_native_log(show: bool = True) -> None:
    """Whether the C++ runtimes' log lines of successful calls reach stderr (`deploy --debug` turns this on).

    ExecuTorch logs informational lines on every program load (`[cpuinfo_utils.cpp:71] Reading file
    ...`); they say nothing to a user, so they are dropped unless asked for. A failure's lines are
    never dropped: they become the reason of its one-line error. Torch's own deprecation line about
    ExecuTorch's enums (`_pytree.py:630] <enum 'KernelPreference'> is an Enum subclass ...`, printed
    once per process while lowering) is dropped the same way.
    """
    import logging

    _NATIVE_LOG["show"] = bool(show)
    logging.getLogger("torch.utils._pytree").setLevel(logging.NOTSET if show else logging.ERROR)


def pass_on_native_log(lines: List[str]) -> None:
    """Print what `native_stderr` collected from a call that succeeded, if `show_native_log` asked for it."""
    if lines and _NATIVE_LOG["show"]:
        print("\n".join(lines), file=sys.stderr)


__all__ = ["BadImageError", "SKIP_FLAG", "WEIGHT_SUFFIXES", "bad_file", "check_dir", "check_file", "check_image",
           "check_output_dir", "check_output_file", "check_pte", "is_kd_checkpoint", "native_stderr", "native_stdout",
           "open_image",
           "pass_on_native_log", "show_native_log",
           "read_json", "read_json_object", "read_kd_checkpoint", "read_safetensors", "read_state_dict", "read_text",
           "read_toml", "resolve_program", "short_reason", "torch_load"]


def resolve_program(path) -> Path:
    """A .pte file, or the single .pte named by (or found in) a `deploy build` folder; checked to be an
    ExecuTorch flatbuffer (`files.check_pte`) before any runtime reads it."""
    path = Path(path).expanduser()
    if path.is_file():
        if path.suffix != ".pte":
            raise DeployError(f"{path}: expected an ExecuTorch program (.pte) or a `deploy build --target android` "
                              f"folder, not a {path.suffix or 'suffix-less'} file.")
        return check_pte(path)
    if path.is_dir():
        if (path / MANIFEST).is_file():
            program = read_json_object(path / MANIFEST, "a build manifest written by `deploy build`").get("program")
            if isinstance(program, str) and program and (path / program).is_file():
                return check_pte(path / program)
        ptes = sorted(path.glob("*.pte"))
        if len(ptes) == 1:
            return check_pte(ptes[0])
        raise DeployError(f"{path}: expected exactly one .pte inside, found {len(ptes)}; pass the .pte itself.")
    raise DeployError(f"{path}: no such file or folder; pass a `deploy build --target android` folder or a .pte.")
