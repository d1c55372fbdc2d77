"""The harness plan: every step the tables need, each keyed by a hash of what determines its output.

A step's key hashes its kind, its options, the keys of the steps it consumes and the versions of the
packages that shape the numbers. Outputs live under `work/<kind>/<model>/<method>-<key>`, and a
stamp `work/.done/<key>.json` is written only after a step succeeded, so

* an artifact is reused whenever the same recipe is asked for again (by this or another table),
* changing one method's options re-runs only that method's steps and what depends on them,
* an interrupted run leaves no stamp for the step in flight, and a rerun starts there.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

from ..artifacts import read_json, sha256_file, versions
from ..io import sha256_json
from .config import TableConfig

KINDS = ("eval", "compress", "build", "bench", "collect")
COLUMN_LABELS = {"android": "Android (ms)", "jetson": "Xavier (ms)", "host": "Host (ms)"}


@dataclass
class Step:
    """One unit of work; `out` is a folder (compress, build) or a JSON file (eval, bench, collect)."""

    kind: str
    model: str
    method: str
    spec: Dict  # everything that determines the output, JSON-serialisable
    deps: Tuple["Step", ...] = ()
    target: Optional[str] = None  # build/bench/collect: android | jetson | host
    column: Optional[str] = None  # bench/collect: the Table 4 column it fills
    key: str = ""
    out: Path = Path()
    json: Optional[Path] = None  # compress: the metrics JSON beside the artifact

    @property
    def measurement(self) -> bool:
        """Latency runs are repeated on every fresh run (so ratios come from one run); --resume keeps them."""
        return self.kind == "bench"

    @property
    def name(self) -> str:
        where = f" [{self.column or self.target}]" if (self.column or self.target) else ""
        return f"{self.kind} {self.model}/{self.method}{where}"


Cell = Union[Step, str]  # a step that yields the number, or the reason there is none


@dataclass
class Plan:
    config: TableConfig
    out: Path
    steps: List[Step]  # dependency order, no duplicates
    columns: List[str]  # Table 4 latency columns, in order
    cells: Dict[Tuple[str, str, str], Cell] = field(default_factory=dict)  # (model, method, column)
    builds: Dict[Tuple[str, str], Cell] = field(default_factory=dict)  # (model, method) -> android build
    metrics: Dict[Tuple[str, str], Step] = field(default_factory=dict)  # (model, method) -> eval/compress

    @property
    def work(self) -> Path:
        return self.out / "work"

    def stamp(self, step: Step) -> Path:
        return self.work / ".done" / f"{step.key}.json"

    def is_done(self, step: Step) -> bool:
        s = self.stamp(step)
        if not (s.is_file() and step.out.exists()):
            return False
        try:
            return read_json(s).get("key") == step.key
        except Exception:  # a damaged stamp means "not done"
            return False


def column_label(column: str) -> str:
    target, _, serial = column.partition(":")
    return COLUMN_LABELS[target] if not serial else f"Android {serial} (ms)"


def _key(kind: str, spec: Dict, deps: Tuple[Step, ...], env: Dict[str, str]) -> str:
    return sha256_json({"kind": kind, "spec": spec, "deps": [d.key for d in deps], "env": env})


def make_plan(config: TableConfig, out: Path) -> Plan:
    """Every step for `config`, deduplicated by key, with the Table 4 cells pointing at their steps."""
    out = Path(out)
    env = versions()
    env.pop("lraqvit-deploy", None)  # an editable checkout keeps one version; don't tie keys to it
    steps: Dict[str, Step] = {}

    def add(step: Step) -> Step:
        step.key = _key(step.kind, step.spec, step.deps, env)
        if step.key in steps:
            return steps[step.key]
        base = out / "work" / step.kind / step.model / f"{step.method}-{step.key[:12]}"
        if step.target:
            base = out / "work" / step.kind / (step.column or step.target).replace(":", "_") / step.model / \
                f"{step.method}-{step.key[:12]}"
        if step.kind in ("compress", "build"):
            step.out = base
            step.json = base.with_name(base.name + ".json")
        else:
            step.out = base.with_name(base.name + ".json")
        steps[step.key] = step
        return step

    models = {m.name: m for m in config.models}
    s = config.settings
    columns = _columns(config)
    plan = Plan(config, out, [], columns)
    jetson_reason = _jetson_reason(config)

    for model in config.models:
        for mid in config.all_methods():
            m = config.method(mid)
            evaluation = {"eval_data": s.eval_data, "eval_limit": s.eval_limit}
            # training images only where set, so that configs without them keep their cached steps
            training = {k: v for k, v in (("train_data", s.train_data), ("train_limit", s.train_limit)) if v is not None}
            if m.dense:
                metrics = add(Step("eval", model.name, mid, {"model": model.create_kwargs(), **evaluation}))
            elif m.compress and m.quant != "none":
                # distil once: quantize the shared FP32 compressed artifact (compress(artifact, quant-only recipe))
                fp32 = add(Step("compress", model.name, mid, {"model": model.create_kwargs(), **evaluation,
                                                              **training, "recipe": m.recipe_dict(quant="none")}))
                quant_only = {k: v for k, v in m.recipe_dict().items() if k not in ("low_rank", "distill", "allocation")}
                metrics = add(Step("compress", model.name, mid, {"recipe": quant_only, **evaluation, **training}, (fp32,)))
            else:
                metrics = add(Step("compress", model.name, mid, {"model": model.create_kwargs(), **evaluation,
                                                                 **training, "recipe": m.recipe_dict()}))
            plan.metrics[(model.name, mid)] = metrics

        for mid in config.table4:
            m = config.method(mid)
            source = () if m.dense else (plan.metrics[(model.name, mid)],)
            model_kw = models[model.name].create_kwargs() if m.dense else None
            android = None
            if config.targets.host or config.targets.android_serials:
                android = add(Step("build", model.name, mid, {"model": model_kw, "options": m.build_options(),
                                                              "target": "android"}, source, target="android"))
                plan.builds[(model.name, mid)] = android
            else:
                plan.builds[(model.name, mid)] = "no host or Android target in the config"
            bench = {"iterations": s.iterations, "warmup": s.warmup, "threads": s.threads}
            for col in columns:
                target, _, serial = col.partition(":")
                serial = serial or next(iter(config.targets.android_serials), "")
                if target == "host":
                    cell: Cell = (add(Step("bench", model.name, mid, {**bench, "target": "host"}, (android,),
                                           target="host", column=col))
                                  if config.targets.host else "host disabled in the config")
                elif target == "android":
                    cell = (add(Step("bench", model.name, mid, {**bench, "target": "android", "serial": serial},
                                     (android,), target="android", column=col))
                            if serial else "no Android serial configured; list phones in [targets.android] serials")
                elif config.targets.jetson_results:
                    path = config.resolve(config.targets.jetson_results.format(model=model.name, method=mid))
                    digest = sha256_file(path) if path.is_file() else "missing"
                    cell = add(Step("collect", model.name, mid, {"file": str(path), "sha256": digest},
                                    target="jetson", column=col))
                elif jetson_reason:
                    cell = jetson_reason
                else:
                    jbuild = add(Step("build", model.name, mid, {"model": model_kw, "options": {}, "target": "jetson"},
                                      source, target="jetson"))
                    precision = m.precision.lower() if m.precision.lower() in ("int8", "fp16", "fp32") else "int8"
                    cell = add(Step("bench", model.name, mid, {**bench, "target": "jetson",
                                                                "jetson_precision": precision}, (jbuild,),
                                    target="jetson", column=col))
                plan.cells[(model.name, mid, col)] = cell
    plan.steps = _order(list(steps.values()), [c for c in plan.cells.values() if isinstance(c, Step)])
    return plan


def _columns(config: TableConfig) -> List[str]:
    serials = config.targets.android_serials
    android = [f"android:{s}" for s in serials] if len(serials) > 1 else ["android"]
    return [*android, "jetson", "host"]


def _jetson_reason(config: TableConfig) -> Optional[str]:
    t = config.targets
    if t.jetson_results:
        return None
    if not t.jetson_local:
        return "no Jetson configured; set [targets.jetson] results = \"...{model}_{method}.json\" or local = true"
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed here; run the harness on the Jetson or collect its result files"
    return None


def _order(steps: List[Step], table4: List[Step]) -> List[Step]:
    """Table 4's steps first (its table is complete early in a long run), each group in kind order.

    Kind order puts every dependency before its users (compress < build < bench) and keeps the
    latency runs of one target back to back.
    """
    needed = set()
    todo = list(table4)
    while todo:
        st = todo.pop()
        if st.key not in needed:
            needed.add(st.key)
            todo.extend(st.deps)
    rank = {k: i for i, k in enumerate(KINDS)}
    targets = {"host": 0, "android": 1, "jetson": 2}
    return sorted(steps, key=lambda st: (st.key not in needed, rank[st.kind], targets.get(st.target, -1)))
