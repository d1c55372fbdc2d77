"""Layering rules: backends and runners never import the CLI; the package is reached as lraqvit_deploy.backends."""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOWER = ("backends", "android_runner", "jetson")


def _imports(path: Path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # resolve `..cli` against the installed package path
                parts = ("lraqvit_deploy." + ".".join(path.relative_to(ROOT).with_suffix("").parts)).split(".")
                base = ".".join(parts[: len(parts) - node.level] + ([base] if base else []))
            yield base


def test_no_backend_module_imports_the_cli():
    offenders = [f"{p.relative_to(ROOT)} imports {name}" for d in LOWER for p in (ROOT / d).rglob("*.py")
                 for name in _imports(p) if name == "lraqvit_deploy.cli" or name.startswith("lraqvit_deploy.cli.")]
    assert not offenders, offenders


def test_device_halves_never_import_the_backends():
    """One direction: a backend imports its device half (android_runner, jetson), never the reverse; what both
    need (the latency protocol, the closeness gates, finding a .pte) sits below both in lraqvit_deploy."""
    offenders = [f"{p.relative_to(ROOT)} imports {name}" for d in ("android_runner", "jetson")
                 for p in (ROOT / d).rglob("*.py") for name in _imports(p)
                 if name == "lraqvit_deploy.backends" or name.startswith("lraqvit_deploy.backends.")]
    assert not offenders, offenders


def test_nothing_imports_the_bare_backends_package():
    """`import backends` from the repository root would load a second copy of every module (two registries)."""
    bare = ("backends", "android_runner", "jetson")
    offenders = [f"{p.relative_to(ROOT)}: {name}" for d in ("lraqvit_deploy", *LOWER, "tests", "benchmarks")
                 for p in (ROOT / d).rglob("*.py") for name in _imports(p)
                 if name.split(".")[0] in bare and not p.is_relative_to(ROOT / "tests" / "backends")]
    assert not offenders, offenders


def test_backends_resolve_inside_lraqvit_deploy(tmp_path):
    code = ("import lraqvit_deploy.backends as b, sys; "
            "assert 'backends' not in sys.modules; print(b.__file__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert Path(out.stdout.strip()).resolve() == (ROOT / "backends" / "__init__.py").resolve()
