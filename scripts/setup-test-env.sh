#!/usr/bin/env bash
# Prepares what the Python end-to-end suite needs; safe to run any number of times.
#   - apt package libb64-0d (perf_analyzer links libb64.so.0d), installed only when missing;
#   - the virtualenv .venv at the repo root with tests/python/requirements.txt installed,
#     re-installed only when the requirements (or the interpreter) changed.
#   - the torch venv .venv-torch of the exporter corpus (scripts/setup-torch-env.sh).
# Environment: PYTHON=<interpreter> to pick the Python used for the venv (default python3).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

REQS="tests/python/requirements.txt"
VENV="$ROOT/.venv"
STAMP="$VENV/.requirements.sha256"
PYTHON="${PYTHON:-python3}"

export DEBIAN_FRONTEND=noninteractive
export PIP_NO_INPUT=1
export PIP_DISABLE_PIP_VERSION_CHECK=1

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    else
        sudo -n "$@"
    fi
}

apt_updated=0
apt_install() {
    if [ "$apt_updated" -eq 0 ]; then
        as_root apt-get update -qq
        apt_updated=1
    fi
    as_root apt-get install -y --no-install-recommends "$@"
}

deb_installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

# 1. System libraries for perf_analyzer.
if deb_installed libb64-0d; then
    echo "setup-test-env: libb64-0d already installed"
else
    echo "setup-test-env: installing libb64-0d"
    apt_install libb64-0d
fi

# 1b. Monitoring and status-page tests (tests/python/test_monitoring.py, test_status_page.py): a
#     real Prometheus with promtool (pinned: bookworm's; promtool also checks and unit-tests the
#     drift rules in scripts/lint-deploy.sh), and headless Chromium (not pinned: the
#     security archive replaces each build, so an old pin would stop installing).
PROMETHEUS_DEB="prometheus=2.42.0+ds-5+deb12u1"
if deb_installed prometheus; then
    echo "setup-test-env: prometheus already installed"
else
    echo "setup-test-env: installing $PROMETHEUS_DEB"
    apt_install "$PROMETHEUS_DEB"
fi
if deb_installed chromium; then
    echo "setup-test-env: chromium already installed"
else
    echo "setup-test-env: installing chromium"
    apt_install chromium
fi

# 2. The virtualenv.
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "setup-test-env: no '$PYTHON' on PATH" >&2
    exit 1
fi
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    echo "setup-test-env: creating $VENV with $("$PYTHON" --version 2>&1)"
    rm -rf "$VENV"
    if ! "$PYTHON" -m venv "$VENV"; then
        # Debian's own python3 ships venv/ensurepip separately.
        echo "setup-test-env: '$PYTHON -m venv' failed; installing python3-venv and retrying"
        rm -rf "$VENV"
        apt_install python3-venv
        "$PYTHON" -m venv "$VENV"
    fi
fi

want="$( { sha256sum "$REQS" | cut -d' ' -f1; "$VENV/bin/python" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [ "$want" = "$have" ]; then
    echo "setup-test-env: $REQS unchanged, skipping pip install"
else
    echo "setup-test-env: installing $REQS into $VENV"
    rm -f "$STAMP"
    "$VENV/bin/python" -m pip install --quiet -r "$REQS"
    echo "$want" >"$STAMP"
fi

# 2b. The MLflow environment (.venv-mlflow) of tests/python/test_mlflow_source.py: mlflow's pins
#     apart from tritonclient's; re-installed only when tests/python/requirements-mlflow.txt changes.
MLFLOW_REQS="tests/python/requirements-mlflow.txt"
MLFLOW_VENV="$ROOT/.venv-mlflow"
[ -x "$MLFLOW_VENV/bin/python" ] || "$PYTHON" -m venv "$MLFLOW_VENV"
mlflow_want="$( { sha256sum "$MLFLOW_REQS" | cut -d' ' -f1; "$MLFLOW_VENV/bin/python" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)"
if [ "$mlflow_want" != "$(cat "$MLFLOW_VENV/.requirements.sha256" 2>/dev/null || true)" ]; then
    echo "setup-test-env: installing $MLFLOW_REQS into $MLFLOW_VENV"
    "$MLFLOW_VENV/bin/python" -m pip install --quiet -r "$MLFLOW_REQS"
    echo "$mlflow_want" >"$MLFLOW_VENV/.requirements.sha256"
fi

# 3. Report where perf_analyzer and libcudart are, and that perf_analyzer's libraries resolve.
site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
pa="$VENV/bin/perf_analyzer"
[ -x "$pa" ] || pa="$(find "$site/tritonclient" -name perf_analyzer -type f 2>/dev/null | head -n1)"
cudart_dir="$site/nvidia/cuda_runtime/lib"
echo "setup-test-env: perf_analyzer: ${pa:-NOT FOUND}"
echo "setup-test-env: libcudart:     $(ls "$cudart_dir"/libcudart.so.12 2>/dev/null || echo NOT FOUND)"
if [ -n "$pa" ] && [ -x "$pa" ]; then
    missing="$(LD_LIBRARY_PATH="$cudart_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ldd "$pa" | grep 'not found' || true)"
    if [ -n "$missing" ]; then
        echo "setup-test-env: perf_analyzer has unresolved libraries:" >&2
        echo "$missing" >&2
        exit 1
    fi
fi

# 4. The torch venv of the exporter corpus (tests/exporters/requirements-torch.txt), kept in
#    ~/.cache/ferroserve and linked as .venv-torch: see scripts/setup-torch-env.sh.
PYTHON="$PYTHON" "$ROOT/scripts/setup-torch-env.sh"
