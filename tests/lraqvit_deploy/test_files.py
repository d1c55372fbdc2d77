"""lraqvit_deploy.files: every way a user-named file can be bad is one DeployError line naming it."""
from __future__ import annotations

import os
import sys

import pytest
import torch

from lraqvit_deploy.errors import DeployError
from lraqvit_deploy.files import (check_file, check_image, check_output_dir, check_output_file, check_pte,
                                  native_stderr, native_stdout, read_json, read_json_object, read_kd_checkpoint, read_safetensors,
                                  read_state_dict, read_toml)

NOISE = bytes(range(256)) * 4


def one_line_error(fn, *args, match: str) -> str:
    with pytest.raises(DeployError, match=match) as e:
        fn(*args)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_paths(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "file").write_bytes(b"x")
    one_line_error(check_file, tmp_path / "none", "a thing", match="none: no such file")
    one_line_error(check_file, tmp_path, "a thing", match="is a folder, expected a thing")
    one_line_error(check_file, tmp_path / "empty", "a thing", match=r"empty file \(0 bytes\)")
    one_line_error(check_file, tmp_path / "file" / "x", "a thing", match="file is a file, not a folder")
    one_line_error(check_output_dir, tmp_path / "file", match="exists and is not a folder")
    one_line_error(check_output_file, tmp_path, "--json", match="is a folder; give a file path")
    one_line_error(check_output_file, tmp_path / "file" / "r.json", "--json", match="is a file, not a folder")
    assert check_output_file(tmp_path / "new" / "r.json", "--json").name == "r.json"


def test_text_formats(tmp_path):
    (tmp_path / "bin.json").write_bytes(NOISE)
    (tmp_path / "bad.json").write_text("{1")
    (tmp_path / "list.json").write_text("[1]")
    (tmp_path / "bad.toml").write_text("[a\n")
    one_line_error(read_json, tmp_path / "bin.json", match="not UTF-8 text")
    one_line_error(read_json, tmp_path / "bad.json", match="invalid JSON at line 1 column 2")
    one_line_error(read_json_object, tmp_path / "list.json", match="holds a list, not an object")
    one_line_error(read_toml, tmp_path / "bad.toml", match="not valid TOML")
    assert read_json(tmp_path / "list.json") == [1]


def test_tensor_files_never_run_pickled_code(tmp_path):
    (tmp_path / "w.safetensors").write_bytes(NOISE)
    (tmp_path / "w.pth").write_bytes(NOISE)
    torch.save({"x": os.system}, tmp_path / "code.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    one_line_error(read_safetensors, tmp_path / "w.safetensors", match="SafetensorError")
    one_line_error(read_state_dict, tmp_path / "w.pth", match="not a plain tensor file")
    one_line_error(read_state_dict, tmp_path / "code.pt", match="refused: it needs pickled code")
    one_line_error(read_state_dict, tmp_path / "list.pt", match="it holds list")


def test_kd_checkpoint_format_is_checked(tmp_path):
    torch.save({"a": 1}, tmp_path / "a.pt")
    torch.save({"format": "lraqvit-deploy/kd-checkpoint/0"}, tmp_path / "old.pt")
    from lraqvit_deploy.lowrank.distill import CHECKPOINT_FORMAT

    one_line_error(read_kd_checkpoint, tmp_path / "a.pt", CHECKPOINT_FORMAT, match="no checkpoint format key")
    msg = one_line_error(read_kd_checkpoint, tmp_path / "old.pt", CHECKPOINT_FORMAT, match="kd-checkpoint/0")
    assert "without --resume" in msg


def test_programs_and_images(tmp_path):
    (tmp_path / "x.pte").write_bytes(NOISE)
    (tmp_path / "ok.pte").write_bytes(b"\0\0\0\0ET12" + NOISE)
    one_line_error(check_pte, tmp_path / "x.pte", match="no ExecuTorch flatbuffer identifier")
    assert check_pte(tmp_path / "ok.pte") == tmp_path / "ok.pte"
    (tmp_path / "bad.png").write_bytes(NOISE)
    (tmp_path / "empty.png").write_bytes(b"")
    assert "UnidentifiedImageError" in check_image(tmp_path / "bad.png")
    assert check_image(tmp_path / "empty.png") == "empty file"


def test_native_stderr_is_collected():
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        pytest.skip("stderr has no file descriptor under this capture mode")
    lines = []
    with native_stderr(lines):
        os.write(fd, b"[program.cpp:1] Verification failed\n")
    assert lines == ["[program.cpp:1] Verification failed"]


def test_native_stdout_is_collected_and_printf_does_not_leak(capfd):
    """A C printf (buffered by stdio when descriptor 1 is no terminal, as HiGHS's stray line is) inside the
    block lands in `lines`, not in the process's output, even after the block."""
    import ctypes

    libc = ctypes.CDLL(None)
    lines = []
    with native_stdout(lines):
        libc.printf(b"HighsMipSolverData::transformNewIntegerFeasibleSolution tmpSolver.run();\n")
        os.write(1, b"raw line\n")
    libc.fflush(None)
    print("after", flush=True)
    out = capfd.readouterr().out
    assert sorted(lines) == ["HighsMipSolverData::transformNewIntegerFeasibleSolution tmpSolver.run();", "raw line"]
    assert "tmpSolver" not in out and "raw line" not in out and "after" in out


def test_image_folder_skips_unreadable_images_when_asked(tmp_path):
    from PIL import Image

    from lraqvit_deploy.data import calibration_batch, check_images, image_folder, skipped_images

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(3):
            Image.new("RGB", (20, 20), (40 * i, 0, 0)).save(tmp_path / c / f"{i}.png")
    (tmp_path / "b" / "bad.png").write_bytes(NOISE)
    cfg = {"input_size": (3, 16, 16), "mean": (0.5,) * 3, "std": (0.5,) * 3, "interpolation": "bilinear",
           "crop_pct": 1.0}
    ds = image_folder(tmp_path, cfg)
    msg = one_line_error(check_images, ds, match="bad.png: expected an image PIL can read")
    assert "--skip-bad-images" in msg
    assert ds.samples[-1][0].endswith("bad.png")  # ImageFolder sorts: b/0..2.png, b/bad.png
    with pytest.raises(DeployError, match="bad.png"):  # read directly: the same one line
        ds[len(ds) - 1]
    ds = image_folder(tmp_path, cfg, skip_bad_images=True)
    assert len(check_images(ds)) == 6 and skipped_images(ds) == [str(tmp_path / "b" / "bad.png")]
    ds = image_folder(tmp_path, cfg, skip_bad_images=True)
    assert calibration_batch(ds, 7).shape == (6, 3, 16, 16) and len(skipped_images(ds)) == 1
