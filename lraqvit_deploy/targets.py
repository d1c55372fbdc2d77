"""`build(model, out, options)` and `bench(program, options)`: lower to and time on a deployment target.

    >>> from lraqvit_deploy import build, bench, AndroidBuildOptions
    >>> build("out/rb45-wads", "out/android", "android")               # an artifact, default options
    >>> build(model, "out/android-ln", AndroidBuildOptions(delegate_layernorm=True))
    >>> build(model, "out/jetson", "jetson", calib_data="/data/imagenet/train")
    >>> bench("out/android", "host").median_ms

`options` is a target name ("android", "jetson"; for bench also "host") for the target's
defaults, or an options object (`AndroidBuildOptions`, `JetsonBuildOptions`, `HostBenchOptions`,
`AndroidBenchOptions`, `JetsonBenchOptions`), which names its target itself.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

import torch.nn as nn

from .errors import DeployError
from .model_info import model_info

ModelOrArtifact = Union[nn.Module, str, Path]


def as_model(model: ModelOrArtifact) -> nn.Module:
    """A model object, or the model an artifact folder (written by `compress`) holds."""
    from .artifacts import is_model_artifact, load_model_artifact

    if isinstance(model, nn.Module):
        return model
    if isinstance(model, (str, Path)):
        if not is_model_artifact(model) and not Path(model).exists() and "/" not in str(model):
            raise DeployError(f"{model}: no such artifact folder. To build a model by name, create it first: "
                              "create_model(name, weights=...).")
        return load_model_artifact(model)
    raise DeployError(f"expected a model or an artifact folder, got {type(model).__name__}.")


def _resolve(options: Any, operation: str):
    """(backend, options object) for a target name or an options instance."""
    from .backends import get_backend

    if isinstance(options, str):
        backend = get_backend(options, operation)
        cls = getattr(backend, f"{operation}_options")
        if cls is None:
            raise DeployError(f"target {options!r} cannot {operation}; "
                              f"{'build for android and bench --target host' if options == 'host' else ''}".rstrip())
        return backend, cls()
    target = getattr(type(options), "target", "")
    if not target:
        raise DeployError(f"options must be a target name or a backend's options object, got "
                          f"{type(options).__name__}.")
    backend = get_backend(target, operation)
    cls = getattr(backend, f"{operation}_options")
    if cls is None or not isinstance(options, cls):
        raise DeployError(f"{type(options).__name__} are not {operation} options of target {target!r}.")
    return backend, options


def build(model: ModelOrArtifact, out, options: Any = "android", *, data: Any = None, calib_data: Any = None,
          data_limit: Optional[int] = None, skip_bad_images: bool = False):
    """Lower `model` (or an artifact folder) for a target into `out`, verified on this host; returns a BuildResult.

    Args:
        options: "android" | "jetson", or an options object of that target.
        data: labelled images to verify on (a Dataset, an ImageFolder path or `fashion-mnist:test`);
            default: the test bed's test split, or seeded synthetic images for a model without data
            (gated on output agreement, labelled as synthetic in the manifest).
        calib_data: training images for INT8 scales, asked for only when the target needs them
            (Jetson INT8 of an FP32 model; default: the test bed's training split).
        data_limit: verify on a seeded subset of this many images.
        skip_bad_images: leave out ImageFolder images that cannot be read (counted in the result's
            `skipped_images`) instead of failing on the first one, which is named.
    `out` is written atomically: a failed build leaves an existing `out` as it was. A model whose
    weights or scales hold NaN/inf is refused before lowering (`lraqvit_deploy.finite`).
    """
    from .backends.base import BuildData
    from .data import check_data_spec
    from .data_sources import check_count
    from .files import check_output_dir

    backend, opts = _resolve(options, "build")
    out = check_output_dir(out)
    check_count(data_limit, "data_limit (--limit)")
    check_data_spec(data, "data (--data)")
    check_data_spec(calib_data, "calib_data (--calib-data)")
    model = as_model(model)
    from .finite import check_finite_weights

    info = model_info(model)
    spec = info.spec
    name = info.path or (spec.name if spec else type(model).__name__)
    check_finite_weights(model, f"refusing to build {name}",
                         "nothing was lowered. Recompress it (`deploy compress` refuses to save such weights) or "
                         "check --weights.")
    data = BuildData(model, data, calib_data, data_limit, skip_bad_images=skip_bad_images)
    from .measure.stages import recording, rounded, stage

    with recording() as times:
        with stage("total"):
            result = backend.build(model.eval(), out, opts, data)
    result.skipped_images = len(data.skipped)
    result.stage_seconds = rounded(times)
    return result


def bench(program, options: Any = "host"):
    """Time a built program (a `build` folder, a .pte, an engine or a Jetson result file); returns a BenchResult."""
    backend, opts = _resolve(options, "bench")
    program = Path(program).expanduser()
    if not program.exists():
        raise DeployError(f"{program}: does not exist; pass a folder written by `deploy build` or its program file.")
    return backend.bench(program, opts)
