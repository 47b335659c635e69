#!/usr/bin/env bash
# Fetches the ONNX Runtime shared library that ferroserve's `onnxruntime` backend loads at run time
# (the `ort` crate is built with `load-dynamic`: nothing is linked or downloaded at build time).
#
#   scripts/fetch-onnxruntime.sh          CPU: onnxruntime==1.31.1          (~24 MB download)
#   scripts/fetch-onnxruntime.sh --gpu    CUDA 13 / cuDNN 9: onnxruntime-gpu==1.31.1 and the
#                                         nvidia-* runtime wheels it needs (x86_64 only, ~3 GB)
#
# The library comes out of the PyPI wheel, downloaded with pip against the sha256 hashes below
# (pip refuses any other file). Always the CPython 3.11 manylinux_2_28 wheel of this machine's
# architecture, whatever Python runs pip: the library inside does not depend on the interpreter,
# so one pinned file per architecture keeps the fetched bytes the same everywhere.
#
# Output: the library's absolute path on stdout (progress goes to stderr), so callers can write
#   export ORT_DYLIB_PATH="$(scripts/fetch-onnxruntime.sh)"
# Files go to <repo>/.cache/onnxruntime/<version>[-gpu]/ (git-ignored). The CPU variant is also
# linked as .cache/onnxruntime/libonnxruntime.so, where the server looks when neither
# `onnxruntime.library` nor ORT_DYLIB_PATH is set. Idempotent: a finished folder carries a stamp
# naming the wheel hashes it came from, and is reused while they match.
#
# Environment: PYTHON=<interpreter with pip> (default: <repo>/.venv/bin/python, then python3).
#   ORT_WHEELS_DIR=<dir>: a folder holding the pinned wheels is used offline (pip --no-index
#   --find-links, hashes still checked); an empty or missing one is filled by the download, so a
#   machine with network can prepare it for one without (scripts/gpu-check.sh --wheels).
#   --print-requirements (after --gpu when wanted) prints the pinned requirements and exits.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION="1.31.1"
CACHE="$ROOT/.cache/onnxruntime"

log() { echo "fetch-onnxruntime: $*" >&2; }
die() { log "$*"; exit 1; }

gpu=0
case "${1:-}" in
    "") ;;
    --gpu) gpu=1 ;;
    --print-requirements) ;;
    -h | --help) sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
    *) die "unknown argument ${1} (usage: $0 [--gpu])" ;;
esac

arch="$(uname -m)"
case "$arch" in
    x86_64 | aarch64) ;;
    *) die "no pinned ONNX Runtime wheel for $(uname -s)/$arch (pinned: Linux x86_64, aarch64)" ;;
esac
[ "$(uname -s)" = "Linux" ] || die "only Linux wheels are pinned (this is $(uname -s))"

# Requirements with hashes. The CPU wheel for both architectures (pip picks the one matching
# --platform); the GPU set was resolved from onnxruntime-gpu[cuda,cudnn]==1.31.1 for x86_64.
CPU_REQS="onnxruntime==$VERSION \\
    --hash=sha256:5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f \\
    --hash=sha256:da05378364c44d4407e463982d2bf8d5e4cfea873283757e48beeb41df97b7f3
"
GPU_REQS="onnxruntime-gpu==$VERSION \\
    --hash=sha256:e26c475fe361b2015f45b4b824bd13f0bb20204e59b62814e6f0acd5f3d491a6
nvidia-cuda-runtime==13.5.37 \\
    --hash=sha256:df2b79a8852f10d1fef8c848489c49eebb5754051bf870202a862831412b179d
nvidia-cuda-nvrtc==13.5.37 \\
    --hash=sha256:86b4d68058807988b7d9af5b44917a0601e9c337f35ccd657bfb3c759ff8d8bc
nvidia-cublas==13.10.0.20 \\
    --hash=sha256:dcc6d63884c53d07e267ce7e6feac17b2538cebaafec5db865736c3e28e4dc84
nvidia-cufft==12.5.0.14 \\
    --hash=sha256:b8be26837a5abad2b5b74f3e92dd29f622a42934b355be0961a48712cbba23ad
nvidia-curand==10.4.5.25 \\
    --hash=sha256:22bb226a857e5888fe6b54ae465fc4371296bcff13a35f79e19691bcf454f529
nvidia-nvjitlink==13.5.37 \\
    --hash=sha256:280d7cb9649704145f074b8dbde500de04ce02d0872e066e20a83c17bcaa93eb
nvidia-cudnn-cu13==9.28.1.4 \\
    --hash=sha256:a54f205b1db1f2895d99f398754db1369816f0569dd459731f925635cf7b65ec
"

if [ "${2:-}" = "--print-requirements" ] || [ "${1:-}" = "--print-requirements" ]; then
    [ "$gpu" -eq 1 ] && printf '%s' "$GPU_REQS" || printf '%s' "$CPU_REQS"
    exit 0
fi

if [ "$gpu" -eq 1 ]; then
    [ "$arch" = "x86_64" ] || die "the --gpu set is pinned for x86_64 only"
    reqs="$GPU_REQS"
    dest="$CACHE/$VERSION-gpu"
    # NVIDIA's wheels carry older manylinux tags than onnxruntime's.
    platforms=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64
        manylinux_2_12_x86_64 manylinux2010_x86_64 manylinux_2_5_x86_64 manylinux1_x86_64)
else
    reqs="$CPU_REQS"
    dest="$CACHE/$VERSION"
    platforms=("manylinux_2_28_$arch")
fi
lib="$dest/libonnxruntime.so.$VERSION"
stamp="$dest/.fetched"
want="$(printf '%s' "$reqs" | sha256sum | cut -d' ' -f1)"

link_default() {
    # Only the CPU library becomes the default; CUDA models name the GPU one explicitly.
    if [ "$gpu" -eq 0 ]; then
        ln -sfn "$VERSION/libonnxruntime.so.$VERSION" "$CACHE/libonnxruntime.so"
    fi
}

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -f "$lib" ]; then
    log "ONNX Runtime $VERSION$([ "$gpu" -eq 1 ] && echo ' (GPU)') already in $dest"
    link_default
    echo "$lib"
    exit 0
fi

python=""
for candidate in "${PYTHON:-}" "$ROOT/.venv/bin/python" python3; do
    if [ -n "$candidate" ] && "$candidate" -m pip --version >/dev/null 2>&1; then
        python="$candidate"
        break
    fi
done
[ -n "$python" ] || die "no Python with pip found (set PYTHON, or run scripts/setup-test-env.sh first)"

work="$(mktemp -d "${TMPDIR:-/tmp}/fetch-onnxruntime.XXXXXX")"
trap 'rm -rf "$work"' EXIT
printf '%s' "$reqs" >"$work/requirements.txt"
platform_args=()
for p in "${platforms[@]}"; do platform_args+=(--platform "$p"); done
index_args=()
wheels_dir="${ORT_WHEELS_DIR:-}"
if [ -n "$wheels_dir" ] && compgen -G "$wheels_dir/*.whl" >/dev/null; then
    index_args=(--no-index --find-links "$wheels_dir")
    log "installing ONNX Runtime $VERSION from $wheels_dir (offline, hash-pinned)"
else
    log "downloading ONNX Runtime $VERSION$([ "$gpu" -eq 1 ] && echo ' (GPU, several GB)') with pip (hash-pinned)"
fi
PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 "$python" -m pip download --quiet \
    --no-deps --only-binary=:all: --require-hashes "${index_args[@]}" \
    "${platform_args[@]}" --python-version 311 --implementation cp --abi cp311 --abi none \
    -r "$work/requirements.txt" -d "$work/wheels" >&2
if [ -n "$wheels_dir" ] && [ "${#index_args[@]}" -eq 0 ]; then
    mkdir -p "$wheels_dir" && cp "$work/wheels"/*.whl "$wheels_dir/"
    log "kept the wheels in $wheels_dir"
fi

# Extract into a fresh folder and swap it in, so an interrupted run leaves nothing half-done.
rm -rf "$dest.partial"
mkdir -p "$dest.partial"
"$python" - "$work/wheels" "$dest.partial" "$VERSION" <<'PY' >&2
"""Copies the shared libraries out of the wheels (zip files) into one flat folder."""
import re
import shutil
import sys
import zipfile
from pathlib import Path

wheels, dest, version = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
found_core = False
for wheel in sorted(wheels.glob("*.whl")):
    with zipfile.ZipFile(wheel) as zf:
        for member in zf.namelist():
            name = member.rsplit("/", 1)[-1]
            if member.startswith("onnxruntime/capi/"):
                # The core library and the provider libraries ORT loads from its own folder;
                # not the Python extension module.
                keep = re.fullmatch(r"libonnxruntime(_providers_\w+)?\.so(\.[\d.]+)?", name)
            else:
                # nvidia-* wheels: nvidia/<component>/lib/lib*.so*
                keep = member.startswith("nvidia/") and "/lib/" in member and ".so" in name
            if not keep:
                continue
            with zf.open(member) as src, open(dest / name, "wb") as out:
                shutil.copyfileobj(src, out)
            (dest / name).chmod(0o755)
            found_core |= name == f"libonnxruntime.so.{version}"
    print(f"extracted {wheel.name}")
if not found_core:
    sys.exit(f"no onnxruntime/capi/libonnxruntime.so.{version} in the downloaded wheels")
PY
ln -sfn "libonnxruntime.so.$VERSION" "$dest.partial/libonnxruntime.so"
echo "$want" >"$dest.partial/.fetched"
rm -rf "$dest"
mv "$dest.partial" "$dest"
link_default
log "ONNX Runtime $VERSION in $dest"
echo "$lib"
