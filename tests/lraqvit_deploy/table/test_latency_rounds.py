"""table/latency_rounds.py on a real tiny .pte (depth-2 ViT): the rounds' structure, never the timings' values."""
from __future__ import annotations

import pytest
from conftest import make_tiny

from lraqvit_deploy import AndroidBuildOptions, HostBenchOptions
from lraqvit_deploy.errors import DeployError
from lraqvit_deploy.table.latency_rounds import bench_rounds
from lraqvit_deploy.targets import build


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    out = tmp_path_factory.mktemp("rounds") / "tiny"
    build(make_tiny(), out, AndroidBuildOptions(verify=False, arm_verify=False, progress=False))
    return out


def test_rounds_interleave_and_ratio_within_a_round(program):
    seen = []
    opts = HostBenchOptions(iterations=2, warmup=1, threads=1, progress=False)
    pte = next(program.glob("*.pte"))  # a program file works as well as its build folder
    res = bench_rounds({"a": program, "b": pte, "c": program}, opts, rounds=3, baseline="b",
                       on_round=lambda r, times: seen.append((r, sorted(times))))
    assert res["baseline"] == "b" and res["orders"] == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    assert seen == [(r, ["a", "b", "c"]) for r in range(3)]
    assert all(len(rnd) == 3 and all(ms > 0 for ms in rnd.values()) for rnd in res["rounds"])
    s = res["summary"]
    assert s["b"]["ratio_median"] == s["b"]["ratio_min"] == s["b"]["ratio_max"] == 1.0
    for label in "ac":
        per_round = sorted(rnd[label] / rnd["b"] for rnd in res["rounds"])
        assert s[label]["rounds"] == 3 and s[label]["ratio_median"] == per_round[1]
        assert (s[label]["ratio_min"], s[label]["ratio_max"]) == (per_round[0], per_round[-1])


def test_bad_requests_are_deploy_errors(program, tmp_path):
    with pytest.raises(DeployError, match="baseline 'z' is not one of the programs"):
        bench_rounds({"a": program}, rounds=1, baseline="z")
    with pytest.raises(DeployError, match="rounds = 0"):
        bench_rounds({"a": program}, rounds=0)
    with pytest.raises(DeployError, match="does not exist"):
        bench_rounds({"a": program, "gone": tmp_path / "gone"}, HostBenchOptions(iterations=1, warmup=0), rounds=1)
