#!/usr/bin/env bash
# A bounded run of every cargo-fuzz target in fuzz/ (a stage of scripts/test.sh).
#
#   scripts/fuzz.sh [SECONDS]      SECONDS per target, default 20 (FUZZ_SECONDS also works)
#   FUZZ_SEED=N                    a fixed libFuzzer seed (default: libFuzzer picks one)
#   FUZZ_TARGETS="a b"             a subset of the targets
#
# Installs cargo-fuzz (pinned) when missing, builds all targets once (release, opt-level 1,
# debug assertions and overflow checks on, no sanitizer: the fuzzed paths have no unsafe code,
# and AddressSanitizer would double the cold build of tract and tonic on two cores), then runs
# each from its seed corpus fuzz/corpus/<target>/ (read only: new inputs go to a scratch
# corpus under fuzz/corpus-run/, not into git). Fails on any crash, panic, timeout or
# out-of-memory; the input that did it is in fuzz/artifacts/<target>/. Prints one line per
# target: executions, execs/s, coverage (edges), features, corpus size, peak RSS.
# cargo fuzz needs nightly flags (-Z sanitizer coverage); RUSTC_BOOTSTRAP=1 allows them here.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT/fuzz"

SECONDS_PER_TARGET="${1:-${FUZZ_SECONDS:-20}}"
CARGO_FUZZ_VERSION=0.13.1
TARGETS=(${FUZZ_TARGETS:-http_json http_binary grpc_infer config_toml repository_scan})
export RUSTC_BOOTSTRAP=1
# The fuzz build has its own target dir (fuzz/target): never the main or a shared debug one.
unset CARGO_TARGET_DIR
BUILD=(--sanitizer none --debug-assertions)

if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
    echo "cargo-fuzz $CARGO_FUZZ_VERSION missing: installing from crates.io"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

t0=$(date +%s)
cargo fuzz build "${BUILD[@]}"
echo "fuzz build: $(($(date +%s) - t0)) s"

failed=()
for target in "${TARGETS[@]}"; do
    scratch="corpus-run/$target"
    rm -rf "$scratch"
    mkdir -p "$scratch" "artifacts/$target"
    log="$(mktemp)"
    args=(-max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048
        -timeout=10 -max_len=16384 -print_final_stats=1)
    [ -n "${FUZZ_SEED:-}" ] && args+=(-seed="$FUZZ_SEED")
    rc=0
    cargo fuzz run "${BUILD[@]}" "$target" "$scratch" "corpus/$target" -- "${args[@]}" \
        >"$log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
    if [ "$rc" -ne 0 ]; then
        failed+=("$target")
        echo "---- $target failed (exit $rc); the end of its log:"
        grep -v '^#' "$log" | tail -40
        ls "artifacts/$target"
    fi
    printf 'fuzz %-16s %s: %s execs in %s s (%s/s), cov %s, ft %s, corpus %s, peak RSS %s MB\n' \
        "$target" "$([ "$rc" -eq 0 ] && echo ok || echo CRASH)" "${execs:-?}" \
        "$SECONDS_PER_TARGET" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "${rss:-?}"
    rm -f "$log"
done

if [ "${#failed[@]}" -ne 0 ]; then
    echo "fuzz: crashes in ${failed[*]} (inputs in fuzz/artifacts/)"
    exit 1
fi
echo "fuzz: ${#TARGETS[@]} targets, 0 crashes"
