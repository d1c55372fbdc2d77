"""The benchmark scripts use the public API: none edits sys.path or imports a private name of the library."""
from __future__ import annotations

import ast
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
NOT_YET: set = set()  # every script is held to it


def offences(source: str, local: set) -> list:
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in ("insert", "append") and \
                isinstance(node.value, ast.Attribute) and node.value.attr == "path" and \
                getattr(node.value.value, "id", "") == "sys":
            out.append(f"line {node.lineno}: sys.path.{node.attr}")
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] not in local:
            out += [f"line {node.lineno}: from {node.module} import {a.name}" for a in node.names
                    if a.name.startswith("_") and a.name != "__future__"]
            out += [f"line {node.lineno}: from {node.module} ..." for part in (node.module or "").split(".")
                    if part.startswith("_") and part != "__future__"]
    return sorted(out, key=lambda s: int(s.split()[1].rstrip(":")))


def test_no_script_edits_sys_path_or_imports_a_private_name():
    local = {p.stem for p in BENCH.glob("*.py")} | {"figures"}
    bad = {p.name: offences(p.read_text(), local) for p in sorted(BENCH.glob("*.py")) if p.name not in NOT_YET}
    assert {k: v for k, v in bad.items() if v} == {}


def test_the_check_sees_both():
    src = ("import sys\nsys.path.insert(0, 'x')\nfrom lraqvit_deploy.quant.wads import _search\n"
           "from lraqvit_deploy._registry import thing\nfrom accuracy import _ok\nimport _result_file\n")
    assert offences(src, {"accuracy", "_result_file"}) == [
        "line 2: sys.path.insert", "line 3: from lraqvit_deploy.quant.wads import _search",
        "line 4: from lraqvit_deploy._registry ..."]
