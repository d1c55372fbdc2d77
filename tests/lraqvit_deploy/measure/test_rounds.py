"""lraqvit_deploy.measure.rounds (interleaved rounds, per-round ratios, the GEMM floor) and .host (the CPU)."""
import pytest

from lraqvit_deploy.measure import host
from lraqvit_deploy.measure import rounds as timing


def test_rotation_puts_every_program_first_once_per_cycle():
    progs = list(("fp32", "pt2e-int8", "rb-fp32", "rb-wads-int8"))
    orders = [timing.rotated(progs, r) for r in range(len(progs))]
    assert orders[0] == progs
    assert orders[1] == progs[1:] + progs[:1]
    assert [o[0] for o in orders] == progs  # each leads once
    for pos in range(len(progs)):  # and each sits in every position once
        assert sorted(o[pos] for o in orders) == sorted(progs)
    assert timing.rotated(progs, len(progs) + 1) == orders[1]
    assert timing.rotated([], 3) == []


def test_ratios_are_taken_within_each_round():
    # the machine drifts: round 2 is twice as slow for everything; per-round ratios cancel that
    rounds = [{"fp32": 10.0, "rb": 5.0, "q8": 4.0}, {"fp32": 20.0, "rb": 10.0, "q8": 8.0},
              {"fp32": 11.0, "rb": 6.6, "q8": 4.4}]
    s = timing.summarize_rounds(rounds, "fp32")
    assert s["rb"]["median_ms"] == 6.6 and (s["rb"]["min_ms"], s["rb"]["max_ms"]) == (5.0, 10.0)
    assert s["rb"]["ratio_median"] == pytest.approx(0.5)
    assert (s["rb"]["ratio_min"], s["rb"]["ratio_max"]) == (pytest.approx(0.5), pytest.approx(0.6))
    # the ratio of the medians would be 6.6 / 11 = 0.6, not the per-round 0.5
    assert s["rb"]["median_ms"] / s["fp32"]["median_ms"] == pytest.approx(0.6)
    assert s["q8"]["ratio_median"] == pytest.approx(0.4)
    assert s["fp32"]["ratio_median"] == 1.0 and s["fp32"]["rounds"] == 3


def test_a_program_missing_from_a_round_is_left_out_of_that_round():
    rounds = [{"fp32": 10.0, "rb": 5.0}, {"fp32": 12.0}, {"rb": 7.0}]
    s = timing.summarize_rounds(rounds, "fp32")
    assert s["rb"]["rounds"] == 2 and s["rb"]["median_ms"] == 6.0
    assert s["rb"]["ratio_median"] == 0.5  # only round 0 has both
    s = timing.summarize_rounds([{"rb": 7.0}], "fp32")
    assert s["rb"]["ratio_median"] is None


def test_floor_arithmetic():
    rate = timing.gemm_rate(197, 768, 3072, 0.010)  # 0.93 GFLOP in 10 ms
    assert rate == pytest.approx(2 * 197 * 768 * 3072 / 0.010 / 1e9)
    assert timing.floor_ms(4.6, 92.0) == pytest.approx(50.0)
    assert timing.floor_fraction(50.0, 200.0) == 0.25
    assert timing.floor_ms(None, 10.0) is None and timing.floor_ms(1.0, None) is None
    assert timing.floor_fraction(None, 3.0) is None and timing.floor_fraction(1.0, 0) is None


LSCPU = """Architecture:            x86_64
Model name:              Intel(R) Xeon(R) Platinum 8480+
CPU family:              6
Model:                   143
Stepping:                8
CPU(s):                  16
Hypervisor vendor:       KVM
Flags:                   fpu avx2 avx512f avx512_vnni amx_int8 sse4_2
"""


def test_lscpu_parsing():
    cpu = host.parse_lscpu(LSCPU)
    assert cpu["model_name"] == "Intel(R) Xeon(R) Platinum 8480+" and cpu["cpus"] == "16"
    assert cpu["flags"] == {"avx2": True, "avx512f": True, "avx512_vnni": True, "avx_vnni": False,
                            "amx_int8": True, "amx_bf16": False}
    line = host.cpu_line(cpu)
    assert line.startswith("Intel(R) Xeon(R) Platinum 8480+ (family 6 model 143 stepping 8, 16 CPUs, KVM guest)")
    assert "avx_vnni no" in line and "amx_int8 yes" in line


def test_interleaved_times_each_program_once_per_round_in_rotated_order():
    calls = []

    def time_one(p):
        calls.append(p)
        return {"a": 10.0, "b": 5.0, "c": 2.0}[p] * (1 + len(calls) // 3)  # the machine slows down each round

    seen = []
    out = timing.interleaved(["a", "b", "c"], time_one, 3, on_round=lambda r, t: seen.append((r, sorted(t))))
    assert out["orders"] == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    assert calls == [p for o in out["orders"] for p in o] and [r for r, _ in seen] == [0, 1, 2]
    s = timing.summarize_rounds(out["rounds"], "a")
    assert s["b"]["ratio_min"] <= s["b"]["ratio_median"] <= s["b"]["ratio_max"]


def test_this_host_is_described():
    cpu = host.lscpu()
    assert cpu["model_name"] and set(cpu["flags"]) == set(host.FLAGS_OF_INTEREST)
    assert host.cpu_description().startswith(cpu["model_name"])
    assert "torch" in host.versions()
