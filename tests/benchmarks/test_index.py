"""benchmarks/README.md's index: generated from the module docstrings, complete, and naming only real flags.

Flags are read from each script's source (its `add_argument` calls; `_result_file.add_out` is `--out`),
so no script's heavy imports run; `run_table4.py` passes its flags to `deploy table`, whose `--help` is read.
"""
from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Set

import pytest

import figures
from figures.index import command, entries

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
FORWARDS = {"run_table4.py": ["table"]}  # scripts that hand their arguments to a `deploy` subcommand
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def defined_flags(source: str) -> Set[str]:
    """The option strings a script's argparse defines, read from its source without running it."""
    flags = {"-h", "--help"}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            fn = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if fn == "add_argument":
                flags |= {a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("-")}
            elif fn == "add_out":  # _result_file.add_out(parser, default, ..., aliases=(...))
                flags.add("--out")
                for kw in node.keywords:
                    if kw.arg == "aliases" and isinstance(kw.value, (ast.Tuple, ast.List)):
                        flags |= {e.value for e in kw.value.elts if isinstance(e, ast.Constant)}
    return flags


def undefined_flags(files: Dict[str, str], forwarded: Dict[str, Set[str]]) -> Dict[str, Set[str]]:
    """Per script of the index, the flags its usage lines name that its parser does not define."""
    bad = {}
    for e in entries(files):
        named = {f for u in e.usage for f in FLAG.findall(command(u))}
        missing = named - (forwarded.get(e.name) or defined_flags(files[e.name]))
        if missing:
            bad[e.name] = missing
    return bad


def _scripts(folder: Path) -> Dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.glob("*.py"))}


def _index_rows(readme: str) -> Set[str]:
    (region,) = [r for r in figures.regions(readme, "benchmarks/README.md") if r.name == "benchmarks_index"]
    return set(re.findall(r"^\| `([\w.]+\.py)` \|", readme[region.start:region.end], re.M))


def test_the_index_lists_every_file():
    listed = _index_rows((BENCH / "README.md").read_text())
    assert listed == {p.name for p in BENCH.glob("*.py")}
    assert not figures.check([BENCH / "README.md"]), "run python benchmarks/render_docs.py"


def test_every_flag_the_index_names_exists():
    deploy = {}
    for script, sub in FORWARDS.items():
        out = subprocess.run([sys.executable, "-m", "lraqvit_deploy", *sub, "--help"], capture_output=True, text=True,
                             check=True, cwd=ROOT).stdout
        deploy[script] = set(FLAG.findall(out)) | {"-h"}
    assert undefined_flags(_scripts(BENCH), deploy) == {}


def test_flags_are_read_from_the_source():
    src = ("import argparse, _result_file\np = argparse.ArgumentParser()\np.add_argument('--rows', '-r')\n"
           "p.add_argument('work')\n_result_file.add_out(p, 'x', aliases=('--json',))\n")
    assert defined_flags(src) == {"-h", "--help", "--rows", "-r", "--out", "--json"}


def test_a_stale_flag_or_a_new_script_is_caught(tmp_path):
    # a copy of benchmarks/: one script's docstring names a flag its parser lacks, one script is new
    shutil.copytree(BENCH, tmp_path / "benchmarks", ignore=shutil.ignore_patterns("results", "__pycache__"))
    table1 = tmp_path / "benchmarks" / "table1_lra.py"
    table1.write_text(table1.read_text().replace("--out benchmarks/results/table1_lra --quiet",
                                                 "--out benchmarks/results/table1_lra --silent  # quietly"))
    assert undefined_flags(_scripts(tmp_path / "benchmarks"), {"run_table4.py": {"--config", "--out", "--resume"}}) \
        == {"table1_lra.py": {"--silent"}}
    (tmp_path / "benchmarks" / "new_bench.py").write_text('"""A new benchmark.\n\n    python benchmarks/new_bench.py\n"""\n')
    (bad,) = figures.check([tmp_path / "benchmarks" / "README.md"], tmp_path)
    assert bad.name == "benchmarks_index" and "+| `new_bench.py` | A new benchmark. |" in bad.diff


def test_a_file_without_a_docstring_is_an_error():
    with pytest.raises(figures.FiguresError, match="x.py has no module docstring"):
        entries({"x.py": "import os\n"})
