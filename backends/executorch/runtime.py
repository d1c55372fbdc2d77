"""Host-side ExecuTorch runtime helpers: load a .pte's `forward`, set the thread pool."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional, Tuple

from lraqvit_deploy.errors import DeployError
from lraqvit_deploy.files import resolve_program


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

    from lraqvit_deploy.files import bad_file, native_stderr, pass_on_native_log, short_reason

    path = resolve_program(path)
    t0 = time.perf_counter()
    logged = []  # the runtime's own log lines (C++ on fd 2): the reason of a failure, passed on otherwise
    try:
        with native_stderr(logged):
            program = Runtime.get().load_program(str(path))
            if method not in program.method_names:
                raise DeployError(f"{path} has no method {method!r} (it has {sorted(program.method_names)}).")
            m = program.load_method(method)
    except DeployError:
        raise
    except Exception as e:
        why = logged[-1].split("] ", 1)[-1] if logged else short_reason(e)
        raise bad_file(path, "an ExecuTorch program the runtime can load", f"{why}; {short_reason(e)}"
                       if logged else why) from None
    pass_on_native_log(logged)  # ExecuTorch's `[cpuinfo_utils.cpp:...]` lines: shown only with --debug
    return m, (time.perf_counter() - t0) * 1e3


def execute(method, inputs, path) -> list:
    """`method.execute(inputs)` with the runtime's C++ log lines (fd 2) collected: shown only with --debug,
    and on a failure the reason of one DeployError line naming `path`."""
    from lraqvit_deploy.files import native_stderr, pass_on_native_log, short_reason

    logged: list = []
    try:
        with native_stderr(logged):
            out = method.execute(inputs)
    except Exception as e:
        why = logged[-1].split("] ", 1)[-1] if logged else short_reason(e)
        raise DeployError(f"{path}: the ExecuTorch runtime could not run it ({why}).") from None
    pass_on_native_log(logged)
    return out


def predict_program(path, ds, batch_size: int = 64, progress: bool = True):
    """(predicted classes, labels) of the .pte on every image of `ds` (batch 1 each, as exported).

    With `lraqvit_deploy.evaluate.EvalResult(..., correct=preds == labels)` the program's top-1
    pairs with any other model's over the same images (`EvalResult.paired_with`).
    """
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    method, _ = load_forward(path)
    preds, labels = [], []
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False)
    for x, y in tqdm(loader, desc=f"{Path(str(path)).name} top-1", unit="batch", disable=not progress, leave=False):
        out = torch.cat([execute(method, [x[i : i + 1].contiguous()], path)[0] for i in range(len(x))])
        preds.append(out.argmax(-1))
        labels.append(torch.as_tensor(y))
    return torch.cat(preds), torch.cat(labels)
