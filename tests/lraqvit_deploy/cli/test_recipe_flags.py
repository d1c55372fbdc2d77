"""The recipe's flags are generated from the configs' declarations: one flag per field, its default and limits
written once; a bad value is one line naming the field in Python and the flag on the command line."""
from __future__ import annotations

import argparse
import dataclasses

import pytest

from lraqvit_deploy.cli.args import flag_error
from lraqvit_deploy.cli.compress import QUANT_FIELDS
from lraqvit_deploy.cli.main import build_parser, main
from lraqvit_deploy.errors import DeployError
from lraqvit_deploy.lowrank import DistillConfig, LowRankConfig
from lraqvit_deploy.options import MAX_SEED, OptionError, flag_of
from lraqvit_deploy.quant import WADSConfig
from lraqvit_deploy.recipe import AllocationConfig, Recipe

# (class, fields with a flag of `deploy compress`)
DECLARED = [(cls, tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("cli", True)))
            for cls in (LowRankConfig, AllocationConfig, DistillConfig)]
DECLARED += [(Recipe, ("quant_calib_images",)), (WADSConfig, QUANT_FIELDS)]
FIELDS = [(cls, name) for cls, names in DECLARED for name in names]


def compress_actions():
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {s: a for a in sub.choices["compress"]._actions for s in a.option_strings}


@pytest.mark.parametrize("cls, name", FIELDS, ids=[f"{c.__name__}.{n}" for c, n in FIELDS])
def test_every_declared_field_has_its_generated_flag(cls, name):
    """The flag exists once, its help is the declaration's, its limits and default come from the field."""
    actions = compress_actions()
    flag = flag_of(cls, name)
    assert flag in actions, f"{cls.__name__}.{name}: no {flag} in deploy compress"
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    help_ = actions[flag].help.replace("%%", "%")
    assert f.metadata["help"].split(";")[0].split("(")[0].strip()[:25] in help_
    if f.metadata.get("min") is not None and not actions[flag].choices:
        assert ">" in help_, help_  # the limits are shown
    default = f.metadata["cli_default"] if f.metadata["cli_default"] is not dataclasses.MISSING else f.default
    if default not in (None, False, True) and not isinstance(default, tuple):
        shown = str(default)
        shown = {"per_token_dynamic": "per-token-dynamic"}.get(shown, shown)
        assert f"default {shown}" in help_, help_


def test_the_seed_has_one_flag_and_one_bound():
    assert flag_of(LowRankConfig, "seed") == flag_of(DistillConfig, "seed") == "--seed"
    for cls in (LowRankConfig, DistillConfig):
        kw = {"param_reduction": 0.3} if cls is LowRankConfig else {}
        assert cls(seed=MAX_SEED, **kw).seed == MAX_SEED
        with pytest.raises(OptionError, match=f"seed = {MAX_SEED + 1}: must be <= {MAX_SEED}"):
            cls(seed=MAX_SEED + 1, **kw)


BAD = [  # (a config built with a bad value, the field it names, the flag the CLI names)
    (lambda: LowRankConfig("lra", param_reduction=0.0), "param_reduction = 0.0: must be > 0", "--param-reduction 0.0"),
    (lambda: LowRankConfig("svd", param_reduction=0.3), "method = 'svd': must be one of lra, rb-lra", "--method 'svd'"),
    (lambda: DistillConfig(lr=float("nan")), "lr = nan: expected a finite number", "--kd-lr nan"),
    (lambda: DistillConfig(batch_size=0), "batch_size = 0: must be >= 1", "--kd-batch-size 0"),
    (lambda: DistillConfig(alpha=0, beta=0), "alpha = 0 and beta = 0", "--kd-alpha 0 and --kd-beta 0"),
    (lambda: DistillConfig(steps=3, epochs=1.0), "give steps or epochs", "give --kd-steps or --kd-epochs"),
    (lambda: AllocationConfig(calib_images=0), "calib_images = 0: must be >= 1", "--alloc-calib-images 0"),
    (lambda: AllocationConfig(size_budget_mb=10), "size_budget_mb is the size of a built program: give target = ",
     "--size-budget-mb is the size of a built program: give --target android"),
    (lambda: AllocationConfig(activation_aware=1), "activation_aware = 1: expected true or false",
     "--no-activation-aware 1"),
    (lambda: WADSConfig(wads_iters=-1), "wads_iters = -1: must be >= 0", "--wads-iters -1"),
    (lambda: WADSConfig(fc2="fold"), "fc2 = 'fold': must be one of skip, explicit", "--wads-fc2 'fold'"),
    (lambda: Recipe(quant_calib_images=0), "quant_calib_images = 0: must be >= 1", "--calib-images 0"),
    (lambda: Recipe(allocation=AllocationConfig("mlorq", memory_budget_mb=3), quant=WADSConfig()),
     "rank allocation mlorq already chooses weight bits; drop quant.", "drop --quant."),
    (lambda: Recipe(low_rank=LowRankConfig("lra", ranks={"blocks.0.attn.qkv": 4}),
                    allocation=AllocationConfig("energy")),
     "give a parameter reduction (low_rank.param_reduction)", "give a parameter reduction (--param-reduction)"),
]


@pytest.mark.parametrize("make, field, flag", BAD, ids=[b[1][:30] for b in BAD])
def test_bad_values_name_the_field_in_python_and_the_flag_on_the_command_line(make, field, flag):
    with pytest.raises(OptionError) as e:
        make()
    msg, cli = str(e.value), flag_error(e.value)
    assert field in msg and "--" not in msg.split(" (")[0] and "\n" not in msg
    assert flag in cli and "\n" not in cli


@pytest.mark.parametrize("argv, words", [
    (["--method", "lra", "--param-reduction", "1", "--kd-steps", "0"], "--param-reduction 1.0: must be < 1"),
    (["--method", "lra", "--param-reduction", "0.3", "--kd-alpha", "0", "--kd-beta", "0"],
     "--kd-alpha 0 and --kd-beta 0: the loss has no term"),
    (["--size-budget-mb", "10", "--rank-alloc", "energy", "--target", "android"],
     "--size-budget-mb is planned by MLoRQ"),
    (["--method", "lra", "--param-reduction", "0.3", "--kd-branch-lr", "1e-3"], "--kd-branch-lr sets the lr"),
    (["--quant", "wads", "--mlorq-bits", "4,x"], "--mlorq-bits: '4,x': expected comma-separated integers"),
    (["--quant", "naive", "--act-scheme", "per_token_dynamic"], "--act-scheme: invalid choice"),
    (["--quant", "naive", "--wads-iters", "3"], "'--wads-iters' does not apply to quantization method 'naive'"),
    (["--size-budget-mb", "5", "--memory-budget-mb", "3", "--target", "android"],
     "give either --size-budget-mb (the built program, for its target) or --memory-budget-mb"),
    # a latency budget (issue 26)
    (["--speedup", "2"], "--speedup is the latency of a built program: give --target android"),
    (["--speedup", "0", "--target", "android"], "--speedup 0.0: must be > 0"),
    (["--latency-budget-ms", "30", "--target", "jetson"], "with --target 'jetson' is priced by the Jetson's own cost "
                                                          "table: give --cost-table"),
    (["--cost-table", "t.json", "--method", "lra", "--param-reduction", "0.3"], "--cost-table prices a latency"),
    (["--speedup", "2", "--target", "android", "--cost-table", "missing.json"],  # before any model is built
     "--cost-table missing.json: no such file; write it with `deploy profile --target host --model testbed"),
    (["--speedup", "2", "--target", "android", "--cost-table", "."], "--cost-table .: is a folder"),
])
def test_compress_names_the_flag(argv, words, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        rc = main(["compress", "--out", "o", "--quiet", *argv])
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 1 and words in err and len(err.strip().splitlines()) == 1, err


def test_flags_become_the_declared_values():
    from lraqvit_deploy.cli.compress import recipe_from_args

    args = build_parser().parse_args(["compress", "--out", "o", "--method", "rb-lra", "--param-reduction", "0.45",
                                      "--svd", "plain", "--no-activation-aware", "--rank-alloc", "energy",
                                      "--kd-steps", "0", "--quant", "wads", "--act-scheme", "per-tensor",
                                      "--wads-fc2", "explicit", "--mlorq-bits", "4,8", "--calib-images", "8"])
    r = recipe_from_args(args)
    assert (r.low_rank.method, r.low_rank.param_reduction, r.low_rank.svd) == ("rb-lra", 0.45, "plain")
    assert r.allocation.activation_aware is False and r.allocation.mlorq_bits == (4, 8)
    assert (r.quant.act_scheme, r.quant.fc2, r.quant_calib_images) == ("per_tensor_static", "explicit", 8)
    plain = recipe_from_args(build_parser().parse_args(["compress", "--out", "o", "--method", "lra",
                                                        "--param-reduction", "0.3", "--kd-steps", "0"]))
    assert plain.low_rank.svd == "auto" and plain.low_rank.seed == 0  # the CLI's default, the field's default


def test_compress_help_still_teaches(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["compress", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps the help lines
    for words in ("examples:", "deploy compress --method rb-lra --param-reduction 0.45 --quant wads",
                  "low-rank compression", "rank allocation", "distillation", "quantization",
                  "--kd-batch-size N", "default 16", "--svd {auto,plain,activation}", "default auto",
                  "--rank-multiple M", "(>= 1 and <= 65536); default 1", "--w-group-size G", "one of 32, 64, 128",
                  "--act-scheme {per-tensor,per-token-static,per-token-dynamic}", "under --memory-budget-mb",
                  "--seed SEED", "(>= 0 and <= 2147483647); default 0", "--no-activation-aware",
                  "--kd-warmup-steps N", "(default 5% of the steps)"):
        assert words in out, words
    assert "memory_budget_mb" not in out and "%%" not in out


def test_library_messages_do_not_name_flags():
    """The library's own errors name fields; only the CLI (flag_error) writes flags."""
    for make, _, _ in BAD:
        with pytest.raises(DeployError) as e:
            make()
        assert "--" not in str(e.value), str(e.value)
