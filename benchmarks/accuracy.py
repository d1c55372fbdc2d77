"""What every accuracy table of the test bed shares (issue 13): the converged reference, the data splits,
and rows scored on held-out TRAINING images (where choices are made) and on the test subset (reported),
each with its paired difference to the reference and a 95 % interval over the same images.

    bed = TestBed("full")                  # converged reference + probe, splits, CPU description
    row = bed.score("LRA + KD", model)     # {"held_out": {...}, "test": {...}, ...}
    bed.cells(row)                         # Markdown cells: top-1 and diff [95 % CI] on each split
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List

import torch
from torch.utils.data import Subset

from lraqvit_deploy.data import FashionMNIST, seeded_subset  # noqa: E402
from lraqvit_deploy.evaluate import EvalResult, evaluate  # noqa: E402
from lraqvit_deploy.measure.host import cpu_line, lscpu  # noqa: E402
from lraqvit_deploy.models import create_model  # noqa: E402
from lraqvit_deploy.models import testbed as tb  # noqa: E402
from lraqvit_deploy.stats import format_difference  # noqa: E402


class TestBed:
    """The test bed at one profile: reference model, probe figure, the three splits and the scorer."""

    def __init__(self, profile: str = "full", progress: bool = True, held_out: range = tb.HELD_OUT):
        if held_out.start < tb.TRAIN_POOL or held_out.stop > 60000:
            raise ValueError(f"held-out images must lie in train[{tb.TRAIN_POOL}:60000], which no step trains on")
        self.profile = profile
        self.held_out_range = held_out
        self.cfg = tb.get_profile(profile)
        self.progress = progress
        self.reference = create_model("testbed", testbed_profile=profile, progress=progress)
        dc = tb.data_config(self.cfg)
        self.train = Subset(FashionMNIST("train", dc), range(tb.TRAIN_POOL))  # never the held-out images
        self.held_out = Subset(FashionMNIST("train", dc), held_out)
        self.test = seeded_subset(FashionMNIST("test", dc), self.cfg.n_test, self.cfg.seed)
        self.cpu = lscpu()
        self._results: Dict[Any, Any] = {}
        self._ref = {"held_out": evaluate(self.reference, self.held_out, progress=progress),
                     "test": evaluate(self.reference, self.test, progress=progress)}
        probe = create_model("testbed", "probe", testbed_profile=profile, progress=False)
        self.probe_row = self.score("FP32 probe only (frozen backbone + linear head)", probe)

    def score(self, name: str, model: torch.nn.Module, versus: str = None, **extra: Any) -> Dict[str, Any]:
        """Top-1 on both splits with the paired difference to the reference (and to the row `versus`)."""
        row: Dict[str, Any] = {"row": name}
        for split in ("held_out", "test"):
            r = evaluate(model, getattr(self, split), progress=self.progress)
            self._results[(name, split)] = r
            d = r.paired_with(self._ref[split])
            row[split] = {"top1": r.top1, "n_images": r.n_images, "vs_reference": d.to_dict()}
            if versus is not None:
                row[split]["vs"] = {"row": versus, **r.paired_with(self._results[(versus, split)]).to_dict()}
            if split == "test":
                row.update(params=r.params, gflops=r.gflops, size_mb=r.size_mb)
        row.update(extra)
        return row

    def versus_reference(self, result: EvalResult, split: str = "test"):
        """The paired difference of `result` (per-image correctness on `split`) to the reference's."""
        return result.paired_with(self._ref[split])

    def scored(self, name: str) -> bool:
        """Whether the row `name` was scored (or restored) here, so `score(..., versus=name)` can pair with it."""
        return all((name, s) in self._results for s in ("held_out", "test"))

    def per_image(self, name: str) -> Dict[str, str]:
        """The row's per-image correctness on both splits as '0'/'1' strings: JSON-storable, read by `restore`."""
        return {s: "".join("1" if c else "0" for c in self._results[(name, s)].correct.tolist())
                for s in ("held_out", "test")}

    def restore(self, row: Dict[str, Any]) -> None:
        """Register a stored row (with its `per_image` strings under "correct") for pairing, without a re-run."""
        for split, bits in (row.get("correct") or {}).items():
            self._results[(row["row"], split)] = EvalResult(row[split]["top1"], len(bits), 0, 0.0, 0.0,
                                                            correct=torch.tensor([b == "1" for b in bits]))

    @property
    def reference_row(self) -> Dict[str, Any]:
        r = self._ref["test"]
        return {"row": "FP32 converged reference", "params": r.params, "gflops": r.gflops, "size_mb": r.size_mb,
                **{s: {"top1": v.top1, "n_images": v.n_images, "vs_reference": None} for s, v in self._ref.items()}}

    def meta(self) -> Dict[str, Any]:
        return {"profile": self.profile, "testbed": dataclasses.asdict(self.cfg), "cpu": self.cpu,
                "threads": torch.get_num_threads(), "train_pool": f"train[0:{tb.TRAIN_POOL}]",
                "held_out": f"train[{self.held_out_range.start}:{self.held_out_range.stop}]", "test_images": len(self.test),
                "reference_top1": {s: v.top1 for s, v in self._ref.items()},
                "probe_top1": {s: self.probe_row[s]["top1"] for s in ("held_out", "test")},
                "interval": "paired normal 95 % over the same images vs the converged reference; exact McNemar p"}

    def header(self) -> List[str]:
        m = self.meta()
        return [f"Test bed `{self.profile}` profile: DINOv2 ViT-S/14 at {self.cfg.img_size} px, Fashion-MNIST. "
                f"Reference = the converged FP32 model (probe + end-to-end CE fine-tune on {self.cfg.n_train} training "
                f"images): held-out {m['reference_top1']['held_out']:.2f} %, test {m['reference_top1']['test']:.2f} % "
                f"(probe only: {m['probe_top1']['held_out']:.2f} / {m['probe_top1']['test']:.2f}). "
                f"Held-out = train[{self.held_out_range.start}:{self.held_out_range.stop}] ({len(self.held_out):,} "
                f"images; every choice is made here); test = {len(self.test):,} "
                f"test images (reported only). Every training step draws from train[0:50000]. "
                f"Δ = paired difference to the reference over the same images, [95 % interval]; a row is better or "
                f"worse only when its interval excludes 0.",
                f"CPU: {cpu_line(self.cpu)}; {torch.get_num_threads()} threads."]

    @staticmethod
    def cells(row: Dict[str, Any]) -> str:
        out = []
        for split in ("held_out", "test"):
            s = row[split]
            d = s.get("vs_reference")
            ci = "ref." if d is None else format_difference(d)
            out += [f"{s['top1']:.2f}", ci]
        return " | ".join(out)

    @staticmethod
    def vs_cell(row: Dict[str, Any], split: str = "test") -> str:
        d = row[split].get("vs")
        return "" if d is None else format_difference(d)

    CELL_HEADER = "held-out top-1 | Δ held-out [95 % CI] | test top-1 | Δ test [95 % CI]"
    CELL_RULE = "---:|---|---:|---"
