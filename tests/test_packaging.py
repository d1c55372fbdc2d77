"""The wheel installs exactly one top-level package, with backends/ etc. inside our namespace."""
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_has_one_top_level_package(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("lraqvit_deploy-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"lraqvit_deploy"}
    for sub in ("backends", "android_runner", "jetson", "lowrank", "quant", "layers", "models", "cli"):
        assert f"lraqvit_deploy/{sub}/__init__.py" in names, sub


def test_every_source_package_is_listed_in_pyproject():
    """setuptools can't auto-discover with package-dir mappings: a new sub-package must be listed."""
    import tomllib

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed, mapping = set(cfg["packages"]), cfg["package-dir"]
    for pkg_root, prefix in [(ROOT / "lraqvit_deploy", "lraqvit_deploy")] + [
        (ROOT / d, p) for p, d in mapping.items()
    ]:
        for init in pkg_root.rglob("__init__.py"):
            rel = init.parent.relative_to(pkg_root).parts
            assert ".".join((prefix, *rel)) in listed, f"add {'.'.join((prefix, *rel))} to pyproject packages"
