#!/usr/bin/env bash
# The torch venv of the exporter corpus (tests/exporters/torch_models.py): the pinned, exact
# environment of tests/exporters/requirements-torch.txt (installed with --no-deps; see there why
# it is ~2.7 GB of wheels), linked as <repo>/.venv-torch, where tests/exporters/build_corpus.py
# looks for it. Called by scripts/setup-test-env.sh; safe to run any number of times.
#
# The venv lives outside the work tree, in $FERROSERVE_CACHE_DIR (default
# ${XDG_CACHE_HOME:-~/.cache}/ferroserve)/venv-torch-<hash of the requirements and the Python>, so
# a fresh clone on the same machine (CI's) reuses it: a second run costs nothing. It is made under
# a .partial name and renamed when complete; venvs of other hashes are removed when a new one is.
# Environment: PYTHON=<interpreter> (default python3).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REQS="$ROOT/tests/exporters/requirements-torch.txt"
PYTHON="${PYTHON:-python3}"
if [ -n "${FERROSERVE_CACHE_DIR:-}" ]; then
    CACHE="$FERROSERVE_CACHE_DIR"
elif [ -n "${XDG_CACHE_HOME:-}${HOME:-}" ]; then
    CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/ferroserve"
else
    CACHE="$ROOT/.cache/ferroserve" # no home: kept with the work tree only
fi
LINK="$ROOT/.venv-torch"

log() { echo "setup-torch-env: $*" >&2; }

hash="$( { sha256sum "$REQS" | cut -d' ' -f1; "$PYTHON" -c 'import sys; print(sys.version)'; } | sha256sum | cut -c1-16)"
venv="$CACHE/venv-torch-$hash"
if [ -x "$venv/bin/python" ]; then
    log "reusing $venv"
else
    log "creating $venv (torch and the libraries it links, ~2.7 GB of wheels)"
    mkdir -p "$CACHE"
    # Only bin/python is used, which works from the renamed folder (pip's scripts would not);
    # a .partial left by an interrupted run is started over.
    partial="$venv.partial"
    rm -rf "$partial"
    t0=$(date +%s)
    "$PYTHON" -m venv "$partial"
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 "$partial/bin/python" -m pip install --quiet \
        --no-cache-dir --no-deps --only-binary=:all: -r "$REQS"
    "$partial/bin/python" -c 'import torch, onnx, onnxscript'
    find "$CACHE" -maxdepth 1 -name 'venv-torch-*' ! -name "venv-torch-$hash*" -exec rm -rf {} +
    mv "$partial" "$venv"
    log "installed in $(($(date +%s) - t0)) s, $(du -sh "$venv" | cut -f1)"
fi
ln -sfn "$venv" "$LINK"
log "$LINK -> $venv"
