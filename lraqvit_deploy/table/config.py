"""The harness config: which models, which methods, which targets, how to measure (one TOML file).

    [models.testbed]                 # a name `create_model` understands
    label = "DINOv2 ViT-S/14 (test bed)"
    # weights = "random"; img_size = 224; num_classes = 10; testbed_profile = "full"   (create_model options)

    [methods.fp32]                   # no `compress` and no `quant`: the dense model itself
    label = "FP32"
    [methods.rb-lra-wads]
    label = "RB-LRA + WADS"
    compress = "rb-lra"              # lra | rb-lra            -> LowRankConfig(method=...)
    param_reduction = 0.45           #                         -> LowRankConfig(param_reduction=...)
    quant = "wads"                   # none | naive | ... | wads -> quant_config(...)
    # kd_steps = 0                   # no distillation; recipe = { low_rank = { rank_multiple = 16 } } sets any
    #                                # other Recipe field; build = { precision = "q8" } sets AndroidBuildOptions

    [table4]
    methods = ["fp32", "rb-lra", "rb-lra-wads"]
    baseline = "fp32"                # speedups are baseline latency / method latency

    [targets.host]                   # runs the Android .pte in-process with the ExecuTorch runtime
    [targets.android]
    serials = ["R5CT..."]            # none listed: the column says "not measured (...)"
    [targets.jetson]
    results = "xavier/{model}_{method}.json"   # `deploy bench --target jetson` files from the device
    # local = true                   # or build and time here (run the harness on the Jetson)

    [accuracy.table1]                # optional accuracy tables (paper Tables 1, 2 and 9)
    kind = "compression"             # or "quantization"
    methods = ["fp32", "lra", "rb-lra"]

    [settings]
    iterations = 20
    warmup = 3
    threads = 1                      # latency runs; work_threads for compress/build/eval
    # eval_data = "fashion-mnist:test"; eval_limit = 200   (default: the model's own test split)
    # train_data = "fashion-mnist:train"; train_limit = 5000 (distillation and INT8 calibration images;
    #                                                          default: the model's own training split)
"""
from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..errors import DeployError
from ..lowrank.configs import METHODS as COMPRESS_METHODS
from ..lowrank.configs import DistillConfig, LowRankConfig
from ..options import OptionError, Options, option, option_like
from ..quant.configs import METHODS as _QUANT_METHODS

QUANT_METHODS = ("none", *_QUANT_METHODS)
TABLE_KINDS = ("compression", "quantization")
TARGETS = ("android", "jetson", "host")  # column order of Table 4


MODEL_OPTIONS = ("weights", "img_size", "num_classes", "testbed_profile")  # create_model keywords


@dataclass(frozen=True)
class ModelEntry:
    """A model to put in the tables; `options` are `create_model` keywords (weights, img_size, ...)."""

    name: str
    label: str
    options: Tuple[Tuple[str, Any], ...] = ()

    def create_kwargs(self) -> Dict[str, Any]:
        return {"name": self.name, **dict(self.options)}


@dataclass(frozen=True)
class MethodEntry(Options):
    """One row recipe: dense, or `deploy compress` with these options (a `[methods.ID]` table).

    `recipe` and `build` are the TOML tables as given (sparse: only the keys written, so a row's
    step keys follow what its table says): `recipe` holds extra `Recipe` fields ({"low_rank": {...},
    "distill": {...}, ...}), `build` `AndroidBuildOptions` fields, e.g. {"precision": "q8"}; both are
    checked by building those objects once (`recipe_object`, `build_object`).
    """

    id: str = option(help="the method's id: [methods.ID]")
    label: str = option(help="the row's label")
    compress: Optional[str] = option_like(LowRankConfig, "method", "the low-rank method; none: dense (not compressed)",
                                          default=None)
    param_reduction: Optional[float] = option_like(LowRankConfig, "param_reduction",
                                                   "a fraction in (0, 1) of the model's parameters to remove")
    kd_steps: Optional[int] = option_like(DistillConfig, "steps", "distillation steps (none: the compress command's "
                                                                  "documented default; 0: no distillation)")
    quant: str = option("none", "the quantization method (none: FP32)", choices=QUANT_METHODS)
    prec: str = option("", "shown in the Prec. column; derived from `quant` when empty")
    recipe: Dict[str, Any] = option({}, "extra Recipe fields, e.g. { low_rank = { rank_multiple = 16 } }")
    build: Dict[str, Any] = option({}, "AndroidBuildOptions fields, e.g. { precision = \"q8\" }")

    def validate(self) -> None:
        if self.compress is not None and self.param_reduction is None:
            raise self.error("param_reduction", "a compressed method needs param_reduction (e.g. 0.45)")
        for name in ("recipe", "build"):
            if not isinstance(getattr(self, name), dict):
                raise self.error(name, f"{name} must be a table of options, got {getattr(self, name)!r}")

    @property
    def dense(self) -> bool:
        """No `deploy compress` run: the model itself (its build may still quantize, see `build`)."""
        return self.compress is None and self.quant == "none"

    @property
    def precision(self) -> str:
        return self.prec or ("FP32" if self.quant == "none" else "INT8")

    def recipe_dict(self, quant: Optional[str] = None) -> Dict[str, Any]:
        """`Recipe.to_dict()`-shaped dict of this method (`quant` overrides the method's own)."""
        quant = self.quant if quant is None else quant
        extra = copy.deepcopy(self.recipe)
        d: Dict[str, Any] = {}
        if self.compress:
            d["low_rank"] = {"method": self.compress, "param_reduction": self.param_reduction, "svd": "auto"}
            if self.kd_steps != 0:
                d["distill"] = {} if self.kd_steps is None else {"steps": int(self.kd_steps)}
        if quant != "none":
            d["quant"] = {"method": quant, "progress": False}
        for key, value in extra.items():
            if isinstance(value, dict) and isinstance(d.get(key), dict):
                d[key] = {**d[key], **value}
            else:
                d[key] = value
        return d

    def build_options(self) -> Dict[str, Any]:
        """The `build` table as given (a copy)."""
        return copy.deepcopy(self.build)

    def recipe_object(self, quant: Optional[str] = None):
        """The `Recipe` of this method (None for a dense one)."""
        from ..recipe import Recipe

        return Recipe.from_dict(self.recipe_dict(quant)) if self.compress or (quant or self.quant) != "none" else None

    def build_object(self):
        """The `AndroidBuildOptions` its `build` table gives."""
        from ..backends import options_type

        return options_type("android", "build").from_dict(self.build_options())


@dataclass(frozen=True)
class AccuracyTable:
    id: str
    title: str
    kind: str
    methods: Tuple[str, ...]


@dataclass(frozen=True)
class Targets:
    host: bool = True
    android_serials: Tuple[str, ...] = ()
    jetson_results: Optional[str] = None  # format string with {model} and {method}
    jetson_local: bool = False


@dataclass(frozen=True)
class Settings(Options):
    """How to measure: `[settings]`."""

    iterations: int = option(20, "timed iterations of each latency run", min=1)
    warmup: int = option(3, "untimed warm-up iterations", min=0)
    threads: Optional[int] = option(1, "threads of the latency runs (the paper: one core)", min=1)
    work_threads: Optional[int] = option(None, "threads of compress / build / eval (none: torch's choice)", min=1)
    eval_data: Optional[str] = option(None, "labelled images: an ImageFolder path or fashion-mnist:test (default: "
                                            "the model's own test split)")
    eval_limit: Optional[int] = option(None, "a seeded subset of that many evaluation images", min=1)
    train_data: Optional[str] = option(None, "distillation + calibration images: an ImageFolder path or "
                                             "fashion-mnist:train (default: the model's own training split)")
    train_limit: Optional[int] = option(None, "a seeded subset of that many training images", min=1)


@dataclass(frozen=True)
class TableConfig:
    name: str
    models: Tuple[ModelEntry, ...]
    methods: Dict[str, MethodEntry]
    table4: Tuple[str, ...]
    baseline: Optional[str]
    targets: Targets
    settings: Settings
    accuracy: Tuple[AccuracyTable, ...] = ()
    source: Optional[Path] = None  # the TOML file; relative paths in it resolve against its folder
    extra: Dict[str, Any] = field(default_factory=dict)

    def method(self, mid: str) -> MethodEntry:
        return self.methods[mid]

    def all_methods(self) -> List[str]:
        """Every method id some table needs, in first-use order."""
        seen: Dict[str, None] = {}
        for mid in self.table4:
            seen.setdefault(mid)
        for t in self.accuracy:
            for mid in t.methods:
                seen.setdefault(mid)
        return list(seen)

    def resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() or self.source is None else self.source.parent / p

    def digest(self) -> str:
        """sha256 of the config's content (for the run record)."""
        d = asdict(self)
        d.pop("source")
        for m in d["methods"].values():  # as when these tables were kept as JSON text: digests of runs stay valid
            m["recipe"], m["build"] = (json.dumps(m[k], sort_keys=True) for k in ("recipe", "build"))
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


def _err(where: str, msg: str) -> DeployError:
    return DeployError(f"table config, {where}: {msg}")


def _strs(v: Any, where: str) -> Tuple[str, ...]:
    if v is None:
        return ()
    if isinstance(v, str) or not all(isinstance(x, str) for x in v):
        raise _err(where, f"expected a list of strings, got {v!r}")
    return tuple(v)


def _table(v: Any, where: str) -> None:
    if v is not None and not isinstance(v, dict):
        raise _err(where, f"expected a table, got {type(v).__name__} {v!r}")


def _take(d: Dict[str, Any], known: Tuple[str, ...], where: str) -> Dict[str, Any]:
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise _err(where, f"unknown key(s) {unknown}; known: {list(known)}")
    return d


def _moved(d: Dict[str, Any], key: str, where: str, how: str) -> None:
    if key in d:
        raise _err(where, f"`{key}` (command-line flags) is no longer read: the harness calls the library; {how}")


def _fields(cls) -> Tuple[str, ...]:
    from dataclasses import fields

    return tuple(f.name for f in fields(cls))


def _build(cls, where: str, **values: Any):
    """`cls(**values)`, a bad value one error naming the table and the key."""
    try:
        return cls(**values)
    except OptionError as e:
        raise _err(where, str(e).rstrip(".")) from None


def _check_method(m: MethodEntry, where: str) -> None:
    """Build the method's recipe and build options once, so a bad value fails at load time, naming the method."""
    from ..backends import options_type
    from ..recipe import Recipe

    try:
        if m.compress or m.quant != "none":
            Recipe.from_dict(m.recipe_dict(), f"{where} recipe")
        options_type("android", "build").from_dict(m.build_options(), f"{where} build")
    except DeployError as e:
        raise _err(where, str(e)) from None


def parse_config(data: Dict[str, Any], source: Optional[Path] = None) -> TableConfig:
    """Validate a parsed TOML document; every mistake raises a DeployError naming the key."""
    _take(data, ("name", "models", "methods", "table4", "targets", "settings", "accuracy"), "top level")
    for key in ("models", "methods", "table4", "targets", "settings", "accuracy"):
        _table(data.get(key), f"[{key}]")
    for key in ("models", "methods", "accuracy", "targets"):
        for name, v in (data.get(key) or {}).items():
            _table(v, f"[{key}.{name}]")
    if data.get("name") is not None and not isinstance(data["name"], str):
        raise _err("top level", f"name = {data['name']!r}; expected a string")
    models = []
    for name, m in (data.get("models") or {}).items():
        where = f"[models.{name}]"
        _moved(m, "args", where, "give create_model options as keys, e.g. weights = \"random\", img_size = 224")
        _take(m, ("label",) + MODEL_OPTIONS, where)
        opts = tuple((k, m[k]) for k in MODEL_OPTIONS if k in m)
        for k, v in opts:
            if k in ("img_size", "num_classes") and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
                raise _err(where, f"{k} = {v!r}; expected a positive integer")
            if k in ("weights", "testbed_profile") and not isinstance(v, str):
                raise _err(where, f"{k} = {v!r}; expected a string")
        models.append(ModelEntry(name, m.get("label", name), opts))
    if not models:
        raise _err("[models]", "list at least one model, e.g. [models.testbed]")

    methods: Dict[str, MethodEntry] = {}
    for mid, m in (data.get("methods") or {}).items():
        where = f"[methods.{mid}]"
        _moved(m, "args", where, "give Recipe fields as a table, e.g. recipe = { low_rank = { rank_multiple = 16 } }")
        _moved(m, "build_args", where, "give AndroidBuildOptions fields as a table, e.g. build = { precision = \"q8\" }")
        _take(m, tuple(f for f in _fields(MethodEntry) if f != "id"), where)
        entry = _build(MethodEntry, where, id=mid, **{"label": mid, **m})
        _check_method(entry, where)
        methods[mid] = entry

    def known(ids: Any, where: str) -> Tuple[str, ...]:
        ids = _strs(ids, where)
        for mid in ids:
            if mid not in methods:
                raise _err(where, f"method {mid!r} is not defined; defined: {list(methods)}")
        return ids

    t4 = _take(data.get("table4") or {}, ("methods", "baseline"), "[table4]")
    table4 = known(t4.get("methods", list(methods)), "[table4] methods")
    baseline = t4.get("baseline", next((m for m in table4 if methods[m].dense), None))
    if baseline is not None and baseline not in table4:
        raise _err("[table4] baseline", f"{baseline!r} is not one of the table's methods {list(table4)}")

    accuracy = []
    for tid, t in (data.get("accuracy") or {}).items():
        where = f"[accuracy.{tid}]"
        _take(t, ("title", "kind", "methods"), where)
        kind = t.get("kind", "compression")
        if kind not in TABLE_KINDS:
            raise _err(where, f"kind = {kind!r}; choose one of {list(TABLE_KINDS)}")
        accuracy.append(AccuracyTable(tid, t.get("title", tid), kind, known(t.get("methods"), where + " methods")))

    tg = data.get("targets") or {}
    _take(tg, TARGETS, "[targets]")
    host = _take(tg.get("host", {}), ("enabled",), "[targets.host]")
    android = _take(tg.get("android", {}), ("serials",), "[targets.android]")
    jetson = _take(tg.get("jetson", {}), ("results", "local"), "[targets.jetson]")
    if jetson.get("results") and jetson.get("local"):
        raise _err("[targets.jetson]", "give either results = \"...{model}_{method}.json\" or local = true, not both")
    if jetson.get("results"):
        try:
            str(jetson["results"]).format(model="m", method="x")
        except (KeyError, IndexError, ValueError) as e:
            raise _err("[targets.jetson] results", f"{jetson['results']!r} is not a pattern with {{model}} and "
                                                   f"{{method}} ({type(e).__name__}: {e})") from None
    targets = Targets(
        host=bool(host.get("enabled", "host" in tg)),
        android_serials=_strs(android.get("serials"), "[targets.android] serials"),
        jetson_results=jetson.get("results"),
        jetson_local=bool(jetson.get("local", False)),
    )

    s = data.get("settings") or {}
    _moved(s, "eval_args", "[settings]", "use eval_data = \"...\" and eval_limit = N")
    _take(s, _fields(Settings), "[settings]")
    settings = _build(Settings, "[settings]", **s)
    return TableConfig(data.get("name", source.stem if source else "table"), tuple(models), methods, table4,
                       baseline, targets, settings, tuple(accuracy), source)


def load_config(path) -> TableConfig:
    """Read and validate a harness config (TOML)."""
    from ..files import read_toml

    path = Path(path).expanduser()
    if not path.exists():
        raise DeployError(f"{path}: config not found; see benchmarks/table4.toml for an example.")
    data = read_toml(path, "a harness config (TOML, e.g. benchmarks/table4.toml)")
    return parse_config(data, path.resolve())
