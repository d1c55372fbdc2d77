#!/usr/bin/env bash
# Build pte_runner (android_runner/native/pte_runner.cpp) against ExecuTorch's shipped libraries.
#
#   bash android_runner/native/build.sh [host|aarch64|all]        # default: host
#   bash android_runner/native/build.sh android EXECUTORCH_CHECKOUT ANDROID_NDK
#   bash android_runner/native/build.sh fetch                      # only fetch the aarch64 libs
#
# host     x86-64 (or whatever this machine is) with g++, against the executorch wheel of the
#          Python that runs the SDK ($PYTHON, default .venv/bin/python): its package carries
#          include/, lib/libexecutorch*.so and share/cmake. -> build/native/host/pte_runner
# aarch64  linux-aarch64 (glibc) with Debian's g++-aarch64-linux-gnu, against PyPI's
#          executorch==<same version> manylinux_2_28_aarch64 wheel (pip download, only its
#          include/ lib/ share/ are unpacked, into $LRAQVIT_CACHE/arm/executorch-<v>-aarch64).
#          The libraries are copied to build/native/aarch64/lib and found through
#          RPATH=$ORIGIN/lib, so the folder runs as is under qemu-aarch64 -L SYSROOT or on any
#          arm64 Linux board. -> build/native/aarch64/pte_runner
# android  arm64-v8a with the Android NDK. The PyPI wheels are glibc builds and cannot link
#          against bionic, so this mode builds ExecuTorch from a v<version> source checkout
#          (git clone -b v1.5.1 --recurse-submodules https://github.com/pytorch/executorch) as a
#          CMake subproject (android_runner/native/CMakeLists.txt), the documented way to embed
#          ExecuTorch in an app. NOT TESTED HERE: this machine has no NDK and no checkout.
#          -> build/native/android-arm64-v8a/pte_runner (statically linked, push it alone)
#
# Outputs live under build/native/ (git-ignored). Set LRAQVIT_NATIVE_DIR to build elsewhere.
# A target whose output is newer than pte_runner.cpp and this script is not rebuilt (FORCE=1 to
# rebuild). Exit status: 0 built (or up to date), 1 failed, 3 a toolchain is missing (the
# message says which and how to install it: bash scripts/install.sh).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SRC="$HERE/pte_runner.cpp"
OUT_ROOT=${LRAQVIT_NATIVE_DIR:-$ROOT/build/native}
CACHE=${LRAQVIT_CACHE:-$HOME/.cache/lraqvit_deploy}
PY=${PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PY" ] || PY=python3
CXXFLAGS_COMMON=(-std=c++17 -O2 -Wall -Wno-unused-function -Wno-deprecated-declarations
  -DC10_USING_CUSTOM_GENERATED_MACROS -DET_EVENT_TRACER_ENABLED -DET_USE_THREADPOOL)
# XNNPACK delegate, CPU kernels (LayerNorm etc. run outside the delegate), quantized kernels
# (PT2E programs may keep quantize ops outside XNNPACK), the thread pool. These libraries only
# register themselves from static initialisers, so --no-as-needed keeps them on the link.
ET_LIBS=(-lexecutorch -lexecutorch_backend_xnnpack -lexecutorch_kernels_optimized
  -lexecutorch_kernels_quantized -lexecutorch_threadpool)

die() { echo "build.sh: $*" >&2; exit 1; }
missing() { echo "build.sh: $*" >&2; exit 3; }

et_version() {  # the host wheel's version without a local label (1.5.1+cpu -> 1.5.1)
  "$PY" -c "import importlib.metadata as m; print(m.version('executorch').split('+')[0])" 2>/dev/null ||
    missing "no executorch in $PY; run bash scripts/install.sh"
}

up_to_date() {  # $1 = output binary
  [ -z "${FORCE:-}" ] && [ -x "$1" ] && [ "$1" -nt "$SRC" ] && [ "$1" -nt "$0" ]
}

build_host() {
  local out="$OUT_ROOT/host" et
  et=$("$PY" -c "import executorch; print(list(executorch.__path__)[0])" 2>/dev/null) ||
    missing "no executorch in $PY; run bash scripts/install.sh"
  [ -f "$et/include/executorch/extension/module/module.h" ] && [ -f "$et/lib/libexecutorch.so" ] ||
    missing "$et carries no C++ headers/libraries (an executorch wheel older than 1.5?)"
  command -v "${CXX:-g++}" >/dev/null || missing "no C++ compiler (apt install g++)"
  if up_to_date "$out/pte_runner"; then echo "up to date: $out/pte_runner"; return; fi
  mkdir -p "$out"
  "${CXX:-g++}" "${CXXFLAGS_COMMON[@]}" -DLRAQVIT_ET_VERSION="\"$(et_version)\"" \
    -I"$et/include" -I"$et/include/executorch/runtime/core/portable_type/c10" \
    "$SRC" -o "$out/pte_runner.tmp" \
    -L"$et/lib" -Wl,--no-as-needed "${ET_LIBS[@]}" -Wl,--as-needed -Wl,-rpath,"$et/lib" -ldl -lpthread
  mv "$out/pte_runner.tmp" "$out/pte_runner"
  echo "built $out/pte_runner (against $et)"
}

fetch_aarch64() {  # prints the unpacked package root
  local v dir wheel
  v=$(et_version)
  dir="$CACHE/arm/executorch-$v-aarch64"
  if [ ! -f "$dir/.complete" ]; then
    mkdir -p "$CACHE/arm/wheels"
    wheel=$(ls "$CACHE/arm/wheels"/executorch-"$v"-cp311-*manylinux*aarch64.whl 2>/dev/null | head -1 || true)
    if [ -z "$wheel" ]; then
      "$PY" -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_28_aarch64 \
        --python-version 3.11 "executorch==$v" -d "$CACHE/arm/wheels" >&2 ||
        missing "pip could not download executorch==$v for manylinux_2_28_aarch64"
      wheel=$(ls "$CACHE/arm/wheels"/executorch-"$v"-cp311-*manylinux*aarch64.whl | head -1)
    fi
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
    "$PY" - "$wheel" "$dir.tmp" <<'EOF'
import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
keep = [n for n in z.namelist() if n.startswith(("executorch/include/", "executorch/lib/", "executorch/share/"))]
z.extractall(sys.argv[2], keep)
EOF
    rm -rf "$dir" && mv "$dir.tmp/executorch" "$dir" && rm -rf "$dir.tmp"
    echo "$wheel" > "$dir/.complete"
  fi
  echo "$dir"
}

build_aarch64() {
  local out="$OUT_ROOT/aarch64" cxx=${CXX_AARCH64:-aarch64-linux-gnu-g++} et
  command -v "$cxx" >/dev/null ||
    missing "no $cxx (apt install g++-aarch64-linux-gnu, or bash scripts/install.sh)"
  et=$(fetch_aarch64)
  if up_to_date "$out/pte_runner" && [ -f "$out/lib/libexecutorch.so" ]; then
    echo "up to date: $out/pte_runner"; return
  fi
  mkdir -p "$out/lib"
  cp -f "$et"/lib/libexecutorch.so "$et"/lib/libexecutorch_backend_xnnpack.so \
    "$et"/lib/libexecutorch_kernels_optimized.so "$et"/lib/libexecutorch_kernels_quantized.so \
    "$et"/lib/libexecutorch_threadpool.so "$out/lib/"
  "$cxx" "${CXXFLAGS_COMMON[@]}" -DLRAQVIT_ET_VERSION="\"$(et_version)\"" \
    -I"$et/include" -I"$et/include/executorch/runtime/core/portable_type/c10" \
    "$SRC" -o "$out/pte_runner.tmp" \
    -L"$out/lib" -Wl,--no-as-needed "${ET_LIBS[@]}" -Wl,--as-needed -Wl,-rpath,'$ORIGIN/lib' -ldl -lpthread
  mv "$out/pte_runner.tmp" "$out/pte_runner"
  echo "built $out/pte_runner (against $et; run: qemu-aarch64 -cpu MODEL -L /usr/aarch64-linux-gnu $out/pte_runner ...)"
}

build_android() {
  local et_src=${1:?usage: build.sh android EXECUTORCH_CHECKOUT ANDROID_NDK} ndk=${2:?usage: build.sh android EXECUTORCH_CHECKOUT ANDROID_NDK}
  local out="$OUT_ROOT/android-arm64-v8a" bdir
  [ -f "$et_src/CMakeLists.txt" ] && [ -d "$et_src/backends/xnnpack" ] || die "$et_src is not an ExecuTorch checkout"
  [ -f "$ndk/build/cmake/android.toolchain.cmake" ] || die "$ndk is not an Android NDK (no build/cmake/android.toolchain.cmake)"
  command -v cmake >/dev/null || missing "cmake not found (need >= 3.24)"
  bdir="$out/cmake-build"
  cmake -S "$HERE" -B "$bdir" \
    -DEXECUTORCH_SOURCE_DIR="$(cd "$et_src" && pwd)" \
    -DLRAQVIT_ET_VERSION="$(et_version 2>/dev/null || echo unknown)" \
    -DCMAKE_TOOLCHAIN_FILE="$ndk/build/cmake/android.toolchain.cmake" \
    -DANDROID_ABI=arm64-v8a -DANDROID_PLATFORM=android-26 -DCMAKE_BUILD_TYPE=Release
  cmake --build "$bdir" --target pte_runner -j"$(nproc 2>/dev/null || echo 4)"
  cp "$bdir/pte_runner" "$out/pte_runner"
  "$ndk"/toolchains/llvm/prebuilt/*/bin/llvm-strip "$out/pte_runner" 2>/dev/null || true
  echo "built $out/pte_runner (push it with adb; run from /data/local/tmp)"
}

case "${1:-host}" in
  host) build_host ;;
  aarch64) build_aarch64 ;;
  all) build_host; build_aarch64 ;;
  fetch) fetch_aarch64 ;;
  android) shift; build_android "$@" ;;
  -h|--help) sed -n '2,30p' "$0" ;;
  *) die "unknown target '$1' (host | aarch64 | all | android CHECKOUT NDK | fetch)" ;;
esac
