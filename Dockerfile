# ferroserve container images (linux/amd64).
#
#   docker build -t ferroserve:0.1.0 .                      # CPU image (the default, last stage)
#   docker build --target gpu -t ferroserve:0.1.0-gpu .     # NVIDIA GPU image (CUDA 13, cuDNN 9)
#   docker run --rm -p 8000-8002:8000-8002 ferroserve:0.1.0
#
# Stages: `builder` compiles the release binary, dependencies first in their own cached layer;
# `onnxruntime-cpu` / `onnxruntime-gpu` take ONNX Runtime's shared libraries out of the
# hash-pinned PyPI wheels (the server loads them from ORT_DYLIB_PATH once its ONNX Runtime backend
# lands; tract, built in, needs nothing); `gpu` and `runtime` are the images. BuildKit builds only
# the stages a target needs, so the CPU image never downloads the GPU wheel.
# The server drains itself on SIGTERM (readiness false, serve on for shutdown.drain_delay, then
# finish in-flight requests within shutdown.timeout): give `docker stop` a grace period above
# drain_delay + timeout, e.g. `docker stop -t 40` with the defaults 5 + 30.

# ---------------------------------------------------------------------------------------------
FROM rust:1.95.0-slim-bookworm AS builder
WORKDIR /src
# 1. The dependency graph (tract, tonic, ...) in a layer of its own: it is rebuilt only when the
#    manifest, the lock file, build.rs or the protos change. The crate's own targets are stubs
#    here (the [[bench]] targets must exist for Cargo.toml to parse).
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && echo 'fn main() {}' > benches/inprocess.rs \
    && echo 'fn main() {}' > benches/micro.rs \
    && cargo build --release --locked --bin ferroserve \
    && rm -rf src
# 2. The sources. COPY keeps the context's modification times, which may be older than the stub
#    build: touch them so that cargo rebuilds the crate itself.
COPY src ./src
RUN find src -name '*.rs' -exec touch {} + \
    && cargo build --release --locked --bin ferroserve \
    && install -m 0755 target/release/ferroserve /usr/local/bin/ferroserve \
    && /usr/local/bin/ferroserve --version

# ---------------------------------------------------------------------------------------------
# ONNX Runtime from PyPI: pip checks the wheel against the sha256 in docker/onnxruntime-*.txt
# (--require-hashes) and installs nothing; only the shared libraries are kept.
FROM python:3.11-slim-bookworm AS onnxruntime-cpu
WORKDIR /tmp/ort
COPY docker/onnxruntime-cpu.txt docker/extract_onnxruntime.py ./
RUN python3 -m pip download --no-cache-dir --disable-pip-version-check --no-deps --require-hashes \
        --only-binary=:all: --platform manylinux_2_28_x86_64 --python-version 3.11 \
        --implementation cp --abi cp311 -r onnxruntime-cpu.txt -d wheels \
    && python3 extract_onnxruntime.py wheels/onnxruntime-1.31.1-*.whl /opt/onnxruntime/lib \
        libonnxruntime.so.1.31.1 \
    && rm -rf wheels

FROM python:3.11-slim-bookworm AS onnxruntime-gpu
WORKDIR /tmp/ort
COPY docker/onnxruntime-gpu.txt docker/extract_onnxruntime.py ./
RUN python3 -m pip download --no-cache-dir --disable-pip-version-check --no-deps --require-hashes \
        --only-binary=:all: --platform manylinux_2_28_x86_64 --python-version 3.11 \
        --implementation cp --abi cp311 -r onnxruntime-gpu.txt -d wheels \
    && python3 extract_onnxruntime.py wheels/onnxruntime_gpu-1.31.1-*.whl /opt/onnxruntime/lib \
        libonnxruntime.so.1.31.1 libonnxruntime_providers_shared.so libonnxruntime_providers_cuda.so \
    && rm -rf wheels

# ---------------------------------------------------------------------------------------------
# GPU image: the CUDA 13 runtime with cuDNN 9 (Ubuntu 24.04, glibc 2.39 >= the builder's 2.36).
# Needs the NVIDIA driver and container toolkit on the host (`docker run --gpus all`, or the
# nvidia.com/gpu resource in Kubernetes: k8s/overlays/gpu).
FROM nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04 AS gpu
RUN groupadd --system --gid 10001 ferroserve \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin ferroserve
COPY --from=onnxruntime-gpu /opt/onnxruntime/lib /opt/onnxruntime/lib
COPY --from=builder /usr/local/bin/ferroserve /usr/local/bin/ferroserve
COPY docker/healthcheck.sh /usr/local/bin/ferroserve-healthcheck
COPY models /models
ENV ORT_DYLIB_PATH=/opt/onnxruntime/lib/libonnxruntime.so.1.31.1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    RUST_LOG=info
LABEL org.opencontainers.image.title="ferroserve-gpu" \
      org.opencontainers.image.description="Low-latency ONNX model server (Open Inference Protocol over HTTP and gRPC), CUDA build" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 10001:10001
WORKDIR /
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/ferroserve-healthcheck"]
STOPSIGNAL SIGTERM
# The CUDA base image's entrypoint only prints a banner; the server is PID 1 in both images.
ENTRYPOINT []
CMD ["ferroserve", "serve", "--model-repository", "/models"]

# ---------------------------------------------------------------------------------------------
# CPU image (default target): Debian bookworm-slim. The binary needs only glibc and libgcc_s;
# libonnxruntime also needs libstdc++6, which the slim image has (apt depends on it). No package
# is installed: the healthcheck uses bash's /dev/tcp instead of curl.
FROM debian:bookworm-slim AS runtime
RUN groupadd --system --gid 10001 ferroserve \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin ferroserve
COPY --from=onnxruntime-cpu /opt/onnxruntime/lib /opt/onnxruntime/lib
COPY --from=builder /usr/local/bin/ferroserve /usr/local/bin/ferroserve
COPY docker/healthcheck.sh /usr/local/bin/ferroserve-healthcheck
# The bundled models (the build tooling in models/ is left out by .dockerignore), owned by root
# and read-only for the server's user.
COPY models /models
ENV ORT_DYLIB_PATH=/opt/onnxruntime/lib/libonnxruntime.so.1.31.1 \
    RUST_LOG=info
LABEL org.opencontainers.image.title="ferroserve" \
      org.opencontainers.image.description="Low-latency ONNX model server (Open Inference Protocol over HTTP and gRPC)" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 10001:10001
WORKDIR /
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/ferroserve-healthcheck"]
STOPSIGNAL SIGTERM
CMD ["ferroserve", "serve", "--model-repository", "/models"]
