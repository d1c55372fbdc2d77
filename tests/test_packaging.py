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
    for sub in ("backends", "android_runner", "jetson", "lowrank", "quant", "layers", "models", "cli", "measure"):
        assert f"lraqvit_deploy/{sub}/__init__.py" in names, sub
    # the native runner's sources: an installed wheel builds pte_runner for the Arm check from these
    for f in ("build.sh", "pte_runner.cpp", "CMakeLists.txt"):
        assert f"lraqvit_deploy/android_runner/native/{f}" in names, f
    # installed (not a checkout), the Arm check finds its build script in the package and builds into the cache
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from lraqvit_deploy.backends.executorch import arm; "
            "print(arm.BUILD_SCRIPT); print(arm.BUILD_SCRIPT.is_file()); print(arm.native_dir())")
    out = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True, check=True,
                         cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "LRAQVIT_CACHE": str(tmp_path / "cache")})
    script, found, native = out.stdout.split("\n")[:3]
    assert script.startswith(str(target)) and found == "True", out.stdout
    assert native == str(tmp_path / "cache" / "native")


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
