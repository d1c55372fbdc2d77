"""The backend interface: one class per deployment target, typed options, explicit data.

A backend lowers a model to a program for its target (`build`) and/or times a program on it
(`bench`). Options are frozen dataclasses (`lraqvit_deploy.options.Options`) validated on
construction; each names the target it belongs to, so `lraqvit_deploy.build(model, out,
AndroidBuildOptions(...))` needs no separate target argument. Data reaches a backend only
through `BuildData`, which loads what is asked for, when it is asked for:

* `verification()`: the test bed's test split, or the user's labelled images, or, for a model
  without data, seeded synthetic images (labelled as such: no top-1, closeness gates only);
* `calibration(n)`: training images for scales (never asked for by an already-INT8 artifact).

Heavy runtimes (executorch, onnx, tensorrt) are imported inside methods only; the registry
(`_registry.py`) checks that they are importable before handing a backend out.
"""
from __future__ import annotations

from abc import ABC
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, Optional, Tuple

import torch

from lraqvit_deploy.errors import DeployError
from lraqvit_deploy.measure.latency import BenchOptions  # noqa: F401  the latency protocol (shared with the device halves)
from lraqvit_deploy.options import Options, option


@dataclass(frozen=True)
class BuildOptions(Options):
    """Options every build takes; backends subclass it (and set `target`)."""

    target: ClassVar[str] = ""
    progress: bool = option(True, "progress output", cli=False)


@dataclass
class VerificationData:
    """Images a program is checked on, with labels when they are real."""

    images: torch.Tensor  # (N, 3, H, W)
    labels: Optional[torch.Tensor]  # (N,) or None
    description: str
    synthetic: bool = False

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class BuildData:
    """Where a build finds images; everything is loaded lazily and at most once.

    `eval_data` / `calib_data`: a Dataset, a spec string (`fashion-mnist:test`, an ImageFolder
    path) or None for the model's defaults (the test bed's own splits).
    """

    model: Any
    eval_data: Any = None
    calib_data: Any = None
    eval_limit: Optional[int] = None
    seed: int = 0
    skip_bad_images: bool = False  # leave out unreadable ImageFolder images (listed in `skipped`)
    _cache: Dict[str, Any] = field(default_factory=dict, repr=False)
    skipped: set = field(default_factory=set, repr=False)

    def verification(self, n: Optional[int] = None, synthetic_n: int = 64) -> VerificationData:
        """Up to `n` labelled images (all when None), or `synthetic_n` seeded N(0, 1) images without data."""
        from lraqvit_deploy.data import synthetic_images
        from lraqvit_deploy.data_sources import eval_dataset

        from lraqvit_deploy.data import skipped_images

        key = f"verify:{n}:{synthetic_n}"
        if key not in self._cache:
            ds, desc = eval_dataset(self.model, self.eval_data, self.eval_limit, required=False,
                                    skip_bad_images=self.skip_bad_images)
            self.skipped.update(skipped_images(ds))
            if ds is None:
                images = synthetic_images(self.model, n or synthetic_n, self.seed)
                self._cache[key] = VerificationData(images, None, f"{len(images)} seeded N(0,1) synthetic images "
                                                                  "(no dataset for this model)", True)
            else:
                count = min(n or len(ds), len(ds))
                items = [ds[i] for i in range(count)]
                self._cache[key] = VerificationData(torch.stack([x for x, _ in items]),
                                                    torch.tensor([int(y) for _, y in items]),
                                                    f"{count} images of {desc}")
        return self._cache[key]

    def calibration(self, n: int, why: str = "calibration") -> torch.Tensor:
        """`n` seeded training images; a clear error when the model has none and none were given."""
        from lraqvit_deploy.data_sources import calibration_images

        key = f"calib:{n}"
        if key not in self._cache:
            self._cache[key] = calibration_images(self.model, n, self.calib_data, seed=self.seed, why=why,
                                                  skip_bad_images=self.skip_bad_images, skipped=self.skipped)
        return self._cache[key]


@dataclass
class BuildResult:
    """What a build wrote: the output folder and its manifest."""

    target: str
    out: Path
    manifest: Dict[str, Any]
    skipped_images: int = 0  # unreadable ImageFolder images left out (skip_bad_images=True)
    # seconds per stage of the build ("lower", "verify", "arm_verify", "onnx_export", "engine_model", "total";
    # lraqvit_deploy.measure.stages), so a caller need not patch anything to time it
    stage_seconds: Dict[str, Any] = field(default_factory=dict)

    def summary(self) -> Dict[str, Any]:
        """The manifest's scalar entries (what `deploy build` prints)."""
        return {k: v for k, v in self.manifest.items() if not isinstance(v, (dict, list))}


class Backend(ABC):
    """One deployment target. Subclasses set the class attributes and implement what they support."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    build_options: ClassVar[Optional[type]] = None  # BuildOptions subclass, None: cannot build
    bench_options: ClassVar[Optional[type]] = None  # BenchOptions subclass, None: cannot bench
    # python modules a build / bench needs, and what to install when one is missing
    build_requires: ClassVar[Tuple[str, ...]] = ()
    bench_requires: ClassVar[Tuple[str, ...]] = ()
    install_hint: ClassVar[str] = ""

    def build(self, model, out: Path, options: BuildOptions, data: BuildData) -> BuildResult:
        raise DeployError(f"target {self.name!r} has nothing to build; "
                          f"build for android (its .pte runs here) or jetson.")

    def bench(self, program: Path, options: BenchOptions):
        raise DeployError(f"target {self.name!r} cannot time programs.")
