"""Host-side ExecuTorch runtime helpers: load a .pte's `forward`, set the thread pool."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional, Tuple

from lraqvit_deploy.artifacts import MANIFEST, read_json
from lraqvit_deploy.errors import DeployError


def resolve_program(path) -> Path:
    """A .pte file, or the single .pte named by (or found in) a `deploy build` folder."""
    path = Path(path)
    if path.is_file():
        if path.suffix != ".pte":
            raise DeployError(f"{path} is not an ExecuTorch program (.pte).")
        return path
    if path.is_dir():
        if (path / MANIFEST).is_file():
            program = read_json(path / MANIFEST).get("program")
            if program and (path / program).is_file():
                return path / program
        ptes = sorted(path.glob("*.pte"))
        if len(ptes) == 1:
            return ptes[0]
        raise DeployError(f"{path}: expected exactly one .pte inside, found {len(ptes)}; pass the .pte itself.")
    raise DeployError(f"{path} does not exist; pass a `deploy build --target android` folder or a .pte.")


def set_threads(threads: Optional[int]) -> int:
    """Resize the runtime's thread pool (XNNPACK uses it); returns the count in effect."""
    from executorch.extension.pybindings import portable_lib

    if threads is not None:
        if threads < 1:
            raise DeployError("--threads must be >= 1.")
        portable_lib._unsafe_reset_threadpool(int(threads))
    return int(portable_lib._threadpool_get_thread_count())


def load_forward(path, method: str = "forward") -> Tuple[object, float]:
    """(method, load time in ms). Loading also runs XNNPACK's init (weight packing)."""
    from executorch.runtime import Runtime

    path = resolve_program(path)
    t0 = time.perf_counter()
    try:
        program = Runtime.get().load_program(str(path))
        if method not in program.method_names:
            raise DeployError(f"{path} has no method {method!r} (it has {sorted(program.method_names)}).")
        m = program.load_method(method)
    except DeployError:
        raise
    except Exception as e:
        raise DeployError(f"the ExecuTorch runtime could not load {path}: {e}") from e
    return m, (time.perf_counter() - t0) * 1e3
