#!/usr/bin/env bash
# Rebuild the bundled model repository (models/*/1/model.onnx, models/*/config.toml) and the
# test reference data (tests/data/*.json). Creates/reuses a venv at <repo>/.venv-models and
# only re-runs pip when models/requirements.txt changed. Extra args are passed to build.py.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-models"
REQS="$ROOT/models/requirements.txt"
STAMP="$VENV/.requirements.sha256"
PYTHON="${PYTHON:-python3.11}"

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    PYTHON=python3
fi

want="$(sha256sum "$REQS" | cut -d' ' -f1)"
if [[ ! -x "$VENV/bin/python" ]]; then
    echo "creating venv $VENV ($("$PYTHON" --version))"
    "$PYTHON" -m venv "$VENV"
fi
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$want" ]]; then
    echo "installing $REQS"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQS"
    echo "$want" > "$STAMP"
else
    echo "venv up to date ($VENV)"
fi

cd "$ROOT"
exec "$VENV/bin/python" models/build.py "$@"
