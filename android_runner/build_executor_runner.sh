#!/usr/bin/env bash
# Build ExecuTorch's executor_runner (XNNPACK on) for arm64-v8a with the Android NDK.
#
#   bash build_executor_runner.sh EXECUTORCH_CHECKOUT ANDROID_NDK [OUT_DIR]
#
# EXECUTORCH_CHECKOUT must be a git checkout of pytorch/executorch at v1.5.1 (the version that
# wrote the .pte; the flatbuffer schema and XNNPACK serialization must match), with submodules:
#   git clone -b v1.5.1 --recurse-submodules https://github.com/pytorch/executorch.git
# ANDROID_NDK: an NDK r27 or newer (e.g. $ANDROID_HOME/ndk/27.2.12479018).
# The runner logs through the posix PAL (stderr), so `deploy bench --target android` reads the
# timings from the runner's own output instead of logcat.
set -euo pipefail

ET_DIR=${1:?usage: $0 EXECUTORCH_CHECKOUT ANDROID_NDK [OUT_DIR]}
NDK=${2:?usage: $0 EXECUTORCH_CHECKOUT ANDROID_NDK [OUT_DIR]}
OUT=${3:-${LRAQVIT_CACHE:-$HOME/.cache/lraqvit_deploy}/android/arm64-v8a}
WANT=v1.5.1

[ -f "$ET_DIR/CMakeLists.txt" ] && [ -d "$ET_DIR/backends/xnnpack" ] || {
  echo "error: $ET_DIR is not an ExecuTorch checkout" >&2; exit 2; }
[ -f "$NDK/build/cmake/android.toolchain.cmake" ] || {
  echo "error: $NDK is not an Android NDK (no build/cmake/android.toolchain.cmake)" >&2; exit 2; }
command -v cmake >/dev/null || { echo "error: cmake not found (need >= 3.24)" >&2; exit 2; }

HAVE=$(git -C "$ET_DIR" describe --tags --exact-match 2>/dev/null || git -C "$ET_DIR" rev-parse --short HEAD)
if [ "$HAVE" != "$WANT" ]; then
  echo "warning: checkout is at $HAVE, not $WANT; programs from executorch==1.5.1 may not load" >&2
fi
[ -f "$ET_DIR/backends/xnnpack/third-party/XNNPACK/CMakeLists.txt" ] || {
  echo "error: submodules missing; run: git -C $ET_DIR submodule update --init --recursive" >&2; exit 2; }

BUILD="$ET_DIR/cmake-out-lraqvit-android-arm64-v8a"
cmake -S "$ET_DIR" -B "$BUILD" \
  -DCMAKE_TOOLCHAIN_FILE="$NDK/build/cmake/android.toolchain.cmake" \
  -DANDROID_ABI=arm64-v8a \
  -DANDROID_PLATFORM=android-26 \
  -DCMAKE_BUILD_TYPE=Release \
  -DEXECUTORCH_BUILD_XNNPACK=ON \
  -DEXECUTORCH_BUILD_EXECUTOR_RUNNER=ON \
  -DEXECUTORCH_BUILD_EXTENSION_DATA_LOADER=ON \
  -DEXECUTORCH_BUILD_EXTENSION_FLAT_TENSOR=ON \
  -DEXECUTORCH_BUILD_EXTENSION_EVALUE_UTIL=ON \
  -DEXECUTORCH_BUILD_EXTENSION_RUNNER_UTIL=ON \
  -DEXECUTORCH_BUILD_KERNELS_OPTIMIZED=ON \
  -DEXECUTORCH_BUILD_KERNELS_QUANTIZED=ON \
  -DEXECUTORCH_ENABLE_LOGGING=ON \
  -DEXECUTORCH_LOG_LEVEL=Info \
  -DEXECUTORCH_PAL_DEFAULT=posix
cmake --build "$BUILD" --target executor_runner -j"$(nproc 2>/dev/null || echo 4)"

mkdir -p "$OUT"
cp "$BUILD/executor_runner" "$OUT/executor_runner"
"$NDK"/toolchains/llvm/prebuilt/*/bin/llvm-strip "$OUT/executor_runner" 2>/dev/null || true
echo "built $OUT/executor_runner"
echo "use: deploy bench --target android OUT_DIR --runner $OUT/executor_runner"
