"""Every measured number in README.md and docs/*.md is rendered from a committed result file.

`benchmarks/render_docs.py --check` re-renders each `<!-- figures: ... -->` region from its JSON
and fails, naming the document and the region, when the committed text differs. No model work:
it reads JSON and Markdown only.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "render_docs.py"


@pytest.fixture(scope="module")
def rd():
    spec = importlib.util.spec_from_file_location("render_docs", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["render_docs"] = mod
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("render_docs", None)


def test_documents_agree_with_their_result_files(rd):
    docs = rd.default_documents()
    bad = rd.check(docs)
    assert not bad, "\n".join(map(str, bad))


def test_the_documents_hold_their_figure_regions(rd):
    # each measured section is a region; losing a marker would silently stop the check
    want = {"README.md": {"testbed_profiles", "testbed_cpus"},
            "docs/compress.md": {"svd_why", "kd_objective", "table1", "kd_cost"},
            "docs/quantization.md": {"table2"}, "docs/android.md": {"arm_testbed"},
            "docs/jetson.md": {"jetson_sizes"}, "docs/table.md": {"table4_testbed"},
            "benchmarks/README.md": {"benchmarks_index"}}
    for doc, names in want.items():
        have = {r.name for r in rd.regions((ROOT / doc).read_text(), doc)}
        assert names <= have, f"{doc} lost its figure regions {sorted(names - have)}"


def test_check_runs_as_a_script():
    r = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "0 differ" in r.stdout


def _fixture(tmp_path: Path) -> Path:
    """A test-bed result file and a document with its rendered region, in tmp_path."""
    src = json.loads((ROOT / "benchmarks/results/testbed_reference_quick.json").read_text())
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "ref.json").write_text(json.dumps(src))
    doc = tmp_path / "doc.md"
    doc.write_text("# A doc\n\nprose\n\n<!-- figures: testbed_cpus results/ref.json -->\n<!-- /figures -->\n\nmore prose\n")
    return doc


def test_render_then_check_passes(rd, tmp_path):
    doc = _fixture(tmp_path)
    assert rd.check([doc], tmp_path)  # an empty region differs
    assert rd.render([doc], tmp_path) == ["doc.md"]
    text = doc.read_text()
    assert "85.7 % on an AMD EPYC (Zen 5, AVX-512)" in text and "`results/ref.json`" in text
    assert text.startswith("# A doc\n\nprose\n\n<!-- figures:") and text.endswith("<!-- /figures -->\n\nmore prose\n")
    assert rd.check([doc], tmp_path) == []
    assert rd.render([doc], tmp_path) == []  # idempotent


def test_check_fails_on_a_tampered_region(rd, tmp_path):
    doc = _fixture(tmp_path)
    rd.render([doc], tmp_path)
    doc.write_text(doc.read_text().replace("85.7 %", "87.5 %"))
    bad = rd.check([doc], tmp_path)
    assert len(bad) == 1 and bad[0].doc == "doc.md" and bad[0].name == "testbed_cpus" and bad[0].line == 5
    assert "-The quick profile" in bad[0].diff and "87.5 %" in bad[0].diff
    r = subprocess.run([sys.executable, str(SCRIPT), "--check", "--root", str(tmp_path), str(doc)],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert "doc.md:5: region `testbed_cpus` differs from results/ref.json" in r.stderr


def test_check_fails_when_the_result_file_changes(rd, tmp_path):
    doc = _fixture(tmp_path)
    rd.render([doc], tmp_path)
    res = tmp_path / "results" / "ref.json"
    data = json.loads(res.read_text())
    next(r for r in data["rows"] if r.get("is_default"))["test_top1"] = 90.04
    res.write_text(json.dumps(data))
    (bad,) = rd.check([doc], tmp_path)
    assert "+The quick profile's converged top-1" in bad.diff and "90.0 %" in bad.diff


def test_labels_follow_the_recorded_settings(rd, tmp_path):
    doc = _fixture(tmp_path)
    res = tmp_path / "results" / "ref.json"
    data = json.loads(res.read_text())
    data["cpu"].update(family="25", model="1", flags={"avx2": True, "avx512f": False})
    res.write_text(json.dumps(data))
    rd.render([doc], tmp_path)
    assert "on an AMD EPYC (Zen 3, AVX2)" in doc.read_text()


@pytest.mark.parametrize("text, why", [
    ("<!-- figures: no_such_renderer results/ref.json -->\n<!-- /figures -->\n", "unknown renderer `no_such_renderer`"),
    ("<!-- figures: testbed_cpus results/missing.json -->\n<!-- /figures -->\n", "results/missing.json does not exist"),
    ("<!-- figures: testbed_cpus results/ref.json -->\nno end\n", "is not closed"),
    ("text\n<!-- /figures -->\n", "without an opening marker"),
])
def test_bad_regions_are_errors_naming_the_line(rd, tmp_path, text, why):
    _fixture(tmp_path)
    doc = tmp_path / "bad.md"
    doc.write_text(text)
    with pytest.raises(rd.FiguresError, match=why):
        rd.check([doc], tmp_path)
    r = subprocess.run([sys.executable, str(SCRIPT), "--check", "--root", str(tmp_path), str(doc)],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "bad.md:" in r.stderr and why.split("`")[0] in r.stderr


def test_formatting_helpers(rd):
    assert rd.lr(1e-3) == "1e-3" and rd.lr(3e-05) == "3e-5" and rd.lr(0.0015) == "1.5e-3"
    assert rd.interval({"diff_pt": -0.88, "ci95_pt": [-1.1806, -0.5794]}) == "\u22120.88 [\u22121.18, \u22120.58]"
    assert rd.cpu_label({"model_name": "AMD EPYC", "family": "25", "model": "17", "flags": {"avx512f": True}}) \
        == "AMD EPYC (Zen 4, AVX-512)"
    assert rd.cpu_label({"model_name": "Intel(R) Xeon(R)", "family": "6", "model": "143",
                         "flags": {"avx2": True}}) == "Intel(R) Xeon(R) (AVX2)"


def test_the_documented_kd_default_is_the_chosen_row():
    # docs/compress.md renders kd_objective.json's chosen row next to the words "the shipped default":
    # the library's DistillConfig defaults must be that row's settings
    from lraqvit_deploy.lowrank.configs import DEFAULT_KD_ALPHA, DEFAULT_KD_LR, DEFAULT_KD_STEPS

    d = json.loads((ROOT / "benchmarks/results/kd_objective.json").read_text())
    rows = [r for r in d["rows"] if r.get("kd_steps") == d["meta"]["steps"]]
    chosen = max(rows, key=lambda r: r["held_out"]["top1"])
    assert (chosen["kd_alpha"], chosen["kd_lr"], chosen["kd_steps"]) == (DEFAULT_KD_ALPHA, DEFAULT_KD_LR, DEFAULT_KD_STEPS)


def test_the_documented_wads_default_is_the_measured_one():
    from lraqvit_deploy.quant.configs import WADSConfig

    d = json.loads((ROOT / "benchmarks/results/table2_quant.json").read_text())
    cfg = next(r for r in d["models"]["lowrank"]["rows"] if r["id"] == "wads")["config"]
    default = WADSConfig()
    assert (cfg["wads_iters"], cfg["wads_lr"], cfg["wads_max_rows"]) == \
        (default.wads_iters, default.wads_lr, default.wads_max_rows)
