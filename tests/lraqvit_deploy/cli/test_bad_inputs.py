"""Every bad input of every command, generated from the parsers: one line, exit 1, no traceback, nothing lost.

The cases are built by introspecting `build_parser()`: every option of type int/float of every
command gets 0, -1, nan, inf, 1e30 and a huge integer (unless the value is valid for that flag:
`VALID`, an explicit allow-list), and every path-like option or positional gets a missing path,
a folder, an empty file and random bytes (unless valid: `VALID_PATHS`). Each runs through
`main(argv)` in-process and must give exit status 1, exactly one non-empty stderr line naming
the flag (numbers) or the path (files), no traceback, and no new or changed file anywhere in
the case's folder: an existing --out folder with a marker file, the input files themselves.

Validation must come before any heavy work: building a model (or loading an artifact's model),
timing a program and running the table harness are replaced by `HeavyWork`, a BaseException that
`main` does not catch, so a check that happens too late fails the case loudly instead of making
it slow. Each numeric case has a control (the same command with a valid value) that must reach
that heavy work, so a case cannot pass because its command was wrong for another reason.
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import torch

from lraqvit_deploy.cli.main import build_parser, main, one_line

TINY = ["--model", "deit_tiny_patch16_224", "--weights", "random", "--img-size", "32", "--num-classes", "10"]
HUGE_INT = str(10 ** 20)
BAD_NUMBERS = {int: ["0", "-1", "nan", "inf", "1e30", HUGE_INT], float: ["0", "-1", "nan", "inf", "1e30"]}

# (flag, value) pairs that are legitimately valid: not a bad input, so no case (each says why).
VALID = {
    ("--seed", "0"): "the default seed",
    ("--warmup", "0"): "no untimed warm-up iterations",
    ("--kd-steps", "0"): "0 = no distillation (plain LRA)",
    ("--kd-warmup-steps", "0"): "no lr warm-up",
    ("--kd-workers", "0"): "load data in the training process",
    ("--kd-weight-decay", "0"): "no weight decay",
    ("--kd-alpha", "0"): "no CE term (feature loss only)",
    ("--wads-iters", "0"): "0 search steps keeps alpha = 1",
    ("--min-agreement", "0"): "no agreement gate",
    ("--arm-min-agreement", "0"): "never report an emulated CPU as failed",
    ("--trt-min-agreement", "0"): "no agreement gate",
    ("--min-sqnr-db", "0"): "the weakest SQNR gate",
    ("--trt-latency-iters", "0"): "0 skips the onnxruntime timing",
    ("--trt-min-sqnr-db", "0"): "the weakest SQNR gate",
    ("--trt-min-cosine", "0"): "the weakest cosine gate",
    ("--trt-device-images", "0"): "no on-device output check data in the bundle",
    ("--cooldown", "0"): "no idle wait before the run",
}
# A valid value per numeric flag, for the controls (default: 1 for ints, 0.5 for floats).
GOOD = {"--trt-opset": "16", "--w-bits": "4", "--w-group-size": "32"}

# What each numeric flag needs beside it to take effect (a flag that is ignored could not fail).
LOW_RANK = ["--method", "lra", "--param-reduction", "0.3", "--kd-steps", "0"]
KD = ["--method", "lra", "--param-reduction", "0.3", "--train-data", "fashion-mnist:train"]
QUANT = ["--quant", "naive", "--calib-data", "fashion-mnist:train", "--calib-images", "4"]
CONTEXT = {
    "--param-reduction": ["--method", "lra", "--kd-steps", "0"],
    "--rank-multiple": LOW_RANK,
    "--memory-budget-mb": ["--method", "lra", "--rank-alloc", "mlorq", "--alloc-calib-data", "fashion-mnist:train"],
    "--size-budget-mb": ["--target", "android", "--alloc-calib-data", "fashion-mnist:train"],
    "--latency-budget-ms": ["--target", "android", "--alloc-calib-data", "fashion-mnist:train"],
    "--speedup": ["--target", "android", "--alloc-calib-data", "fashion-mnist:train"],
    "--cost-table": ["--speedup", "2", "--target", "android", "--alloc-calib-data", "fashion-mnist:train"],
    "--w-bits": [*QUANT[:1], "per-token", *QUANT[2:]],
    "--w-group-size": [*QUANT[:1], "per-token", *QUANT[2:], "--w-bits", "4"],
    "--alloc-calib-images": ["--method", "lra", "--param-reduction", "0.3", "--kd-steps", "0", "--rank-alloc", "energy",
                             "--alloc-calib-data", "fashion-mnist:train"],
    "--kd-steps": KD, "--kd-epochs": KD, "--kd-batch-size": KD, "--kd-lr": KD, "--kd-warmup-steps": KD,
    "--kd-weight-decay": KD, "--kd-alpha": KD, "--kd-beta": KD, "--kd-workers": KD, "--seed": KD,
    "--train-limit": KD,
    "--calib-images": ["--quant", "naive", "--calib-data", "fashion-mnist:train"],
    "--wads-iters": ["--quant", "wads", "--calib-data", "fashion-mnist:train", "--calib-images", "4"],
}
# Options that are not numbers and not paths (everything else must be classified, see test_every_option_...).
NOT_PATHS = {"--model", "--mlorq-bits", "--mlorq-factor-bits", "--serial", "--cpus", "--arm-cpus", "--remote-dir"}
PATH_METAVARS = {"ARTIFACT_DIR", "DATA", "PATH", "JSON", "MODEL_OR_DIR", "DIR_OR_PROGRAM"}
PATH_DESTS = {"weights", "config", "out", "program", "checkpoint", "json", "ranks", "opt_AndroidBenchOptions__adb",
              "opt_AndroidBenchOptions__runner", "cost_table"}
OUTPUTS = {"--out"}  # observed, not fed bad content: see test_out_is_never_overwritten
KINDS = ("missing", "folder", "empty", "random")
# (flag, kind) pairs that are valid inputs (each says why).
VALID_PATHS = {
    ("--json", "missing"): "an output file: created",
    ("--json", "empty"): "an output file: replaced atomically",
    ("--json", "random"): "an output file: replaced atomically",
    ("--checkpoint", "missing"): "with --resume: no checkpoint yet, distillation starts from step 0 (a note says so)",
}


class HeavyWork(BaseException):
    """Raised where the real work would start; `main` does not catch it (it is no Exception)."""


def _heavy(*_a, **_k):
    raise HeavyWork


@pytest.fixture(autouse=True)
def no_heavy_work(monkeypatch):
    import lraqvit_deploy.android_runner.adb as adb
    import lraqvit_deploy.backends.executorch.runtime as runtime
    import lraqvit_deploy.jetson.bench as jetson
    import lraqvit_deploy.models as models
    import lraqvit_deploy.models.factory as factory
    import lraqvit_deploy.models.testbed as testbed
    import lraqvit_deploy.table as table

    for mod, name in ((models, "build_architecture"), (factory, "build_architecture"), (testbed, "build"),
                      (runtime, "set_threads"), (runtime, "load_forward"), (adb.Adb, "select"),
                      (jetson, "_collect"), (table, "run_table")):
        monkeypatch.setattr(mod, name, _heavy)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


# ---- the files the cases point at -------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bad-inputs")
    rng = torch.Generator().manual_seed(0)
    noise = bytes(torch.randint(0, 256, (4096,), generator=rng, dtype=torch.uint8).tolist())
    for suffix in ("", ".safetensors", ".pth", ".pte", ".json", ".toml"):
        (d / f"empty{suffix}").write_bytes(b"")
        (d / f"random{suffix}").write_bytes(noise)
        (d / f"folder{suffix}").mkdir()
    (d / "fake.pte").write_bytes(b"\x00\x00\x00\x00ET12" + noise)  # passes the identifier check
    (d / "runner").write_bytes(b"\x7fELF\x02" + bytes(13) + (183).to_bytes(2, "little"))  # an AArch64 ELF header
    (d / "table.toml").write_text('[models.testbed]\n[methods.fp32]\nlabel = "FP32"\n[targets.host]\n')
    return d


def bad_path(files: Path, kind: str, suffix: str = "") -> str:
    return str(files / ("missing" + suffix if kind == "missing" else f"{kind}{suffix}"))


def snapshot(*roots: Path) -> Dict[str, Tuple[int, str]]:
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            out[str(p)] = (-1, "dir") if p.is_dir() else (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def run(argv: List[str], capsys) -> Tuple[int, str]:
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own checks (a non-number for a number flag)
        rc = e.code
    return rc, capsys.readouterr().err


def assert_one_line_error(rc: int, err: str, names: str, argv: List[str]) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 1, f"exit {rc} for {argv}: {err}"
    assert len(lines) == 1, f"{len(lines)} stderr lines for {argv}:\n{err}"
    assert "Traceback" not in err and "internal error" not in err, err
    assert names in lines[0], f"the error does not name {names!r}: {lines[0]}"


# ---- the parsers ------------------------------------------------------------------------------------
def subcommands() -> Dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def options(command: str):
    for a in subcommands()[command]._actions:
        if isinstance(a, argparse._HelpAction) or a.nargs == 0:
            continue
        yield a


def is_path(a: argparse.Action) -> bool:
    return a.type is Path or a.metavar in PATH_METAVARS or a.dest in PATH_DESTS


def flag(a: argparse.Action) -> str:
    return a.option_strings[0] if a.option_strings else a.dest


COMMANDS = sorted(subcommands())
NUMERIC = [(c, flag(a), a.type) for c in COMMANDS for a in options(c) if a.type in (int, float)]
PATHS = [(c, flag(a)) for c in COMMANDS for a in options(c)
         if is_path(a) and flag(a) not in OUTPUTS and a.type not in (int, float)]


def test_every_option_is_classified():
    """A new option is a number (cases generated), a path (cases generated), a choice, or listed in NOT_PATHS."""
    for c in COMMANDS:
        for a in options(c):
            if a.type in (int, float) or a.choices or is_path(a):
                continue
            assert flag(a) in NOT_PATHS, f"deploy {c} {flag(a)}: classify it (number, path or NOT_PATHS)"


def base(command: str, opt: str, files: Path, out: Path) -> List[str]:
    """A command line that is valid up to the heavy work, with what `opt` needs to take effect."""
    if command == "eval":
        return ["eval", *TINY, "--data", "fashion-mnist:test", "--limit", "8", "--quiet"]
    if command == "compress":
        return ["compress", *TINY, "--out", str(out), "--quiet", *CONTEXT.get(opt, QUANT)]
    if command == "build":
        target = "jetson" if opt.startswith("--trt") else "android"
        return ["build", "--target", target, *TINY, "--out", str(out), "--quiet", *CONTEXT.get(opt, [])]
    if command == "bench":
        target = {"--cooldown": "android", "--jetson-workspace-mb": "jetson"}.get(opt, "host")
        android = ["--adb", "/bin/true", "--runner", str(files / "runner")] if target == "android" else []
        return ["bench", "--target", target, str(files / "fake.pte"), "--quiet", *android]
    if command == "table":
        return ["table", "--config", str(files / "table.toml"), "--out", str(out), "--quiet"]
    if command == "profile":
        android = ["--target", "android", "--adb", "/bin/true", "--runner", str(files / "runner")]
        return ["profile", "--model", "deit_tiny_patch16_224", "--img-size", "32", "--quiet",
                *(android if opt in ("--adb", "--runner") else ["--target", "host"])]
    raise AssertionError(command)


@pytest.fixture
def out(tmp_path) -> Path:
    """An existing --out folder with a marker file: a failed run must leave it as it was."""
    d = tmp_path / "out"
    d.mkdir()
    (d / "marker.txt").write_text("keep me\n")
    return d


NUMERIC_CASES = [(c, f, v) for c, f, t in NUMERIC for v in BAD_NUMBERS[t] if (f, v) not in VALID]


@pytest.mark.parametrize("command, opt, value", NUMERIC_CASES, ids=[f"{c} {f} {v}" for c, f, v in NUMERIC_CASES])
def test_bad_number_is_one_line_naming_the_flag(command, opt, value, files, out, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = base(command, opt, files, out) + [opt, value]
    before = snapshot(tmp_path, files)
    rc, err = run(argv, capsys)
    assert_one_line_error(rc, err, opt, argv)
    assert snapshot(tmp_path, files) == before, f"files changed by {argv}"


CONTROLS = sorted({(c, f, t) for c, f, t in NUMERIC}, key=str)


@pytest.mark.parametrize("command, opt, tp", CONTROLS, ids=[f"{c} {f}" for c, f, _ in CONTROLS])
def test_the_same_command_with_a_valid_value_reaches_the_work(command, opt, tp, files, out, tmp_path, capsys,
                                                              monkeypatch):
    """The numeric cases fail because of their value: with a valid one the command gets to its heavy work."""
    monkeypatch.chdir(tmp_path)
    argv = base(command, opt, files, out) + [opt, GOOD.get(opt, "1" if tp is int else "0.5")]
    with pytest.raises(HeavyWork):
        rc, err = run(argv, capsys)
        pytest.fail(f"exit {rc} before the work for {argv}: {err}")


# ---- paths ----------------------------------------------------------------------------------------------
def path_argv(command: str, opt: str, value: str, files: Path, out: Path) -> List[str]:
    """The command line of a path case: `opt` (or the positional) set to `value`."""
    if opt == "source":
        return base(command, opt, files, out) + [value]
    if command == "bench" and opt == "program":
        argv = base(command, opt, files, out)
        return [value if a == str(files / "fake.pte") else a for a in argv]
    if command == "bench" and opt in ("--adb", "--runner"):
        return base(command, "--cooldown", files, out) + [opt, value]  # the android target
    if command == "table" and opt == "--config":
        return ["table", "--config", value, "--out", str(out), "--quiet"]
    argv = base(command, opt, files, out)
    if opt == "--weights":
        i = argv.index("--weights")
        return argv[:i + 1] + [value] + argv[i + 2:]
    if opt == "--ranks":
        return argv + LOW_RANK[:2] + ["--kd-steps", "0", "--ranks", value]
    if opt == "--checkpoint":
        return argv + KD + ["--resume", "--checkpoint", value]
    if opt in ("--train-data",):
        return argv + KD[:4] + [opt, value]
    if opt == "--alloc-calib-data":
        return argv + LOW_RANK + [opt, value]
    if opt == "--calib-data" and command == "build":
        return argv + ["--quant", "naive", opt, value]
    return argv + [opt, value]


SUFFIX = {"--weights": ".safetensors", "program": ".pte", "--config": ".toml", "--ranks": ".json", "--json": ".json",
          "--checkpoint": ".pth"}
PATH_CASES = [(c, f, k, s) for c, f in PATHS for k in KINDS for s in ([SUFFIX.get(f, "")] + (
    [".pth"] if f == "--weights" else [])) if (f, k) not in VALID_PATHS]


@pytest.mark.parametrize("command, opt, kind, suffix", PATH_CASES,
                         ids=[f"{c} {f} {k}{s}" for c, f, k, s in PATH_CASES])
def test_bad_file_is_one_line_naming_it(command, opt, kind, suffix, files, out, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    value = bad_path(files, kind, suffix)
    if command == "bench" and opt == "--json":
        value = bad_path(files, kind, ".json")
    argv = path_argv(command, opt, value, files, out)
    before = snapshot(tmp_path, files)
    rc, err = run(argv, capsys)
    assert_one_line_error(rc, err, Path(value).name, argv)
    assert snapshot(tmp_path, files) == before, f"files changed by {argv}"


@pytest.mark.parametrize("command", ["compress", "build", "table"])
def test_out_is_never_overwritten(command, files, tmp_path, capsys, monkeypatch):
    """--out naming an existing file: refused before any work, the file left as it was."""
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "results.bin"
    target.write_bytes(b"precious")
    argv = base(command, "", files, target)
    if command == "build":
        argv += ["--method", "lra", "--param-reduction", "0.3", "--kd-steps", "0"]
    rc, err = run(argv, capsys)
    assert_one_line_error(rc, err, "results.bin", argv)
    assert target.read_bytes() == b"precious"
    rc, err = run([a if a != str(target) else str(target / "sub") for a in argv], capsys)  # under a file
    assert_one_line_error(rc, err, "results.bin", argv)


# ---- images ------------------------------------------------------------------------------------------------
@pytest.fixture
def image_folder(tmp_path) -> Path:
    from PIL import Image

    root = tmp_path / "images"
    g = torch.Generator().manual_seed(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(4):
            px = torch.randint(0, 256, (16, 16, 3), generator=g, dtype=torch.uint8).numpy()
            Image.fromarray(px).save(root / c / f"{i}.png")
    (root / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really" * 8)
    return root


def test_an_unreadable_image_is_named_with_the_skip_flag(image_folder, tmp_path, capsys, monkeypatch):
    monkeypatch.undo()  # the real model: the image folder is read after it is built
    monkeypatch.chdir(tmp_path)
    argv = ["eval", *TINY, "--data", str(image_folder), "--quiet", "--json", str(tmp_path / "e.json")]
    rc, err = run(argv, capsys)
    assert_one_line_error(rc, err, "broken.png", argv)
    assert "--skip-bad-images" in err and not (tmp_path / "e.json").exists()
    rc, err = run(argv + ["--skip-bad-images"], capsys)
    assert rc == 0, err
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["skipped_images"] == 1 and result["n_images"] == 8


def test_compress_reports_skipped_calibration_images(image_folder, tmp_path, capsys, monkeypatch, one_thread):
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    argv = ["compress", *TINY, "--quant", "naive", "--calib-data", str(image_folder), "--calib-images", "9",
            "--out", str(tmp_path / "q"), "--quiet", "--json", str(tmp_path / "q.json")]
    rc, err = run(argv, capsys)
    assert_one_line_error(rc, err, "broken.png", argv)
    assert not (tmp_path / "q").exists()
    rc, err = run(argv + ["--skip-bad-images"], capsys)
    assert rc == 0, err
    assert json.loads((tmp_path / "q.json").read_text())["skipped_images"] == 1


# ---- --resume ------------------------------------------------------------------------------------------------
def _checkpoint(path: Path, **distill) -> None:
    from lraqvit_deploy.lowrank import DistillConfig, LowRankConfig
    from lraqvit_deploy.lowrank.distill.loop import CHECKPOINT_FORMAT
    from lraqvit_deploy.pipeline import _fingerprint_of
    from lraqvit_deploy.recipe import Recipe

    recipe = Recipe(low_rank=LowRankConfig("lra", param_reduction=0.3, svd="auto"), distill=DistillConfig(**distill))
    torch.save({"format": CHECKPOINT_FORMAT, "fingerprint": _fingerprint_of(recipe, None, None), "step": 3,
                "student": {}, "optimizer": {}, "scheduler": {}, "losses": [1.0, 0.9, 0.8]}, path)


def test_resume_checks_the_checkpoint_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ckpt = tmp_path / "kd.pt"
    _checkpoint(ckpt, lr=3e-4)
    argv = ["compress", *TINY, "--out", str(tmp_path / "o"), *KD, "--resume", "--checkpoint", str(ckpt), "--quiet"]
    rc, err = run(argv, capsys)
    from lraqvit_deploy.lowrank.configs import DEFAULT_KD_LR

    assert_one_line_error(rc, err, f"--kd-lr 0.0003 there, {DEFAULT_KD_LR:g} here", argv)
    assert "without --resume" in err
    with pytest.raises(HeavyWork):  # the options it was made with: accepted, on to the model
        run(argv + ["--kd-lr", "3e-4"], capsys)
    old = tmp_path / "old.pt"
    torch.save({"format": "lraqvit-deploy/kd-checkpoint/0", "step": 1}, old)
    rc, err = run(argv[:-3] + ["--checkpoint", str(old), "--quiet"], capsys)
    assert_one_line_error(rc, err, "old.pt", argv)
    assert "kd-checkpoint/0" in err
    with pytest.raises(HeavyWork):  # without --resume, a checkpoint of any version may be replaced
        run([a for a in argv if a != "--resume"][:-3] + ["--checkpoint", str(old)], capsys)


def test_resume_check_in_the_python_api(tmp_path, monkeypatch):
    """`compress(..., resume=True)` checks the checkpoint against the model too, before the SVD."""
    from conftest import make_tiny

    monkeypatch.undo()  # a real (tiny) model

    from lraqvit_deploy import DeployError, compress
    from lraqvit_deploy.lowrank import DistillConfig, LowRankConfig
    from lraqvit_deploy.recipe import Recipe

    ckpt = tmp_path / "kd.pt"
    _checkpoint(ckpt)
    recipe = Recipe(low_rank=LowRankConfig("lra", param_reduction=0.3, svd="auto"), distill=DistillConfig())
    model = make_tiny("deit")
    with pytest.raises(DeployError, match="model None") as e:  # made (here) without a model record
        compress(model, recipe, train_data="fashion-mnist:train", train_limit=16, evaluate=False, checkpoint=ckpt,
                 resume=True, progress=False)
    assert "\n" not in str(e.value)
    assert type(model.blocks[0].attn.qkv).__name__ == "Linear"  # nothing was compressed


# ---- the error machinery itself -------------------------------------------------------------------------------
def test_internal_errors_stay_distinguishable(capsys, monkeypatch):
    import lraqvit_deploy.cli.bench as bench

    monkeypatch.setattr(bench, "run", lambda args: {}["a bug"])
    rc, err = run(["bench", "--target", "host", "x.pte"], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "internal error, please report (KeyError" in err and "--debug" in err
    with pytest.raises(KeyError):
        main(["bench", "--target", "host", "x.pte", "--debug"])


def test_a_dataloader_workers_error_keeps_only_its_message():
    wrapped = ("Caught BadImageError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
               '  File "x.py", line 1, in f\nlraqvit_deploy.files.BadImageError: /d/b/x.png: expected an image')
    assert one_line(wrapped) == "/d/b/x.png: expected an image"
    assert one_line("a\nb") == "a b"


def test_runtime_logs_do_not_reach_the_terminal(tmp_path):
    """A .pte the ExecuTorch runtime rejects: its own C++ log lines become the reason of the one line."""
    import subprocess
    import sys

    pte = tmp_path / "fake.pte"
    pte.write_bytes(b"\x00\x00\x00\x00ET12" + bytes(range(256)) * 8)
    r = subprocess.run([sys.executable, "-m", "lraqvit_deploy", "bench", "--target", "host", str(pte), "--quiet"],
                       capture_output=True, text=True, cwd=tmp_path)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and "register_constant" not in ln
             and "_pytree.py" not in ln]  # torch's own import-time warning, not ours
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert "fake.pte" in lines[0] and "Traceback" not in r.stderr


def test_a_real_interrupted_run_resumes_and_another_config_is_refused_early(tmp_path, monkeypatch, one_thread):
    """The early check agrees with the distillation loop's own fingerprint: same settings resume, others fail
    before the SVD (checked on a run interrupted after its first checkpoint)."""
    from conftest import make_tiny
    from torch.utils.data import Dataset

    from lraqvit_deploy import DeployError, compress
    from lraqvit_deploy.lowrank import DistillConfig, LowRankConfig
    from lraqvit_deploy.recipe import Recipe

    monkeypatch.undo()

    class Flaky(Dataset):  # 32 labelled images; reading more than `budget` of them is an interruption
        def __init__(self, budget):
            g = torch.Generator().manual_seed(0)
            self.x, self.y, self.budget = torch.randn(32, 3, 32, 32, generator=g), torch.arange(32) % 10, budget

        def __len__(self):
            return 32

        def __getitem__(self, i):
            self.budget -= 1
            if self.budget < 0:
                raise KeyboardInterrupt
            return self.x[i], int(self.y[i])

    def recipe(lr=1e-4):
        return Recipe(low_rank=LowRankConfig("lra", param_reduction=0.3, svd="plain"),
                      distill=DistillConfig(steps=4, batch_size=4, checkpoint_every=2, lr=lr))

    ckpt = tmp_path / "kd.pt"
    with pytest.raises(KeyboardInterrupt):  # interrupted in step 3: the checkpoint of step 2 stays
        compress(make_tiny("vit"), recipe(), train_data=Flaky(10), evaluate=False, checkpoint=ckpt, progress=False)
    assert ckpt.is_file()
    model = make_tiny("vit")
    with pytest.raises(DeployError, match="--kd-lr 0.0001 there, 0.0002 here"):
        compress(model, recipe(2e-4), train_data=Flaky(100), evaluate=False, checkpoint=ckpt, resume=True,
                 progress=False)
    assert type(model.blocks[0].attn.qkv).__name__ == "Linear"  # refused before the SVD
    report = compress(model, recipe(), train_data=Flaky(100), evaluate=False, checkpoint=ckpt, resume=True,
                      progress=False)
    assert report.compression["distill"]["start_step"] == 2 and not ckpt.exists()
