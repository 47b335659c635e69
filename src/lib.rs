//! ferroserve: a low-latency model-serving runtime speaking the Open Inference Protocol.
//!
//! Map of the crate (data path first, then the control path):
//! - [`api`]: transports. `api::http` (axum, JSON + binary tensors), `api::grpc` (tonic,
//!   `inference.GRPCInferenceService`), `api::error` (the one error → status/code table),
//!   `api::serve` (the HTTP accept loop: header read timeout, connection bound).
//! - [`routing`]: per-request logic shared by both transports: resolve and choose a version
//!   (`routing::route`: pinned, by the traffic policy, or the default), admit (`routing::admit`),
//!   validate, submit; `routing::request` reads the route key and turns client timeouts into
//!   deadlines; request ids and spans; `routing::shadow` mirrors.
//! - [`batching`]: per-version queue, batch assembly, hand-off to free instances.
//! - [`drift`]: drift monitoring: reference profiles, per-feature windows, PSI / JS / chi-square.
//! - [`backend`]: the `Backend` trait, the tract engine, instance threads.
//! - [`registry`]: the atomically swapped model table, the repository scan and the loader.
//! - [`rollout`]: the traffic control plane: policies, promotion, progressive rollouts.
//! - [`policy`]: pure types below the registry and the router: the traffic policy and its pick
//!   (weights, sticky key), per-version windows for rollouts, bounded admission.
//! - [`tensor`]: datatype (and its wire spelling), shape and bytes, element-count checks;
//!   concatenation and split along the batch dimension.
//! - [`error`]: the transport-free `ErrorCode` every client-visible error maps to once; HTTP
//!   status, gRPC code and metric label all derive from it.
//! - [`config`], [`metrics`], [`server`]: configuration, Prometheus metrics (with process metrics
//!   from `/proc`) and the statistics extension's counters, wiring and shutdown.
//! - [`proto`]: the code generated from `proto/` (messages, services, clients), used by the
//!   transports, the load generator, the CLIs, the tests and the examples.
//! - [`telemetry`]: OpenTelemetry traces (off by default): the subscriber, W3C context, the
//!   spans of the data path and their bounded OTLP export.
//! - [`loadgen`]: `ferroserve bench`, the load generator (closed/open loop, HTTP and gRPC).
//! - [`predict`]: `ferroserve predict`, offline scoring of files through the registry and the
//!   router; [`dataio`]: the streaming CSV / Parquet / JSONL / `.npy` readers and writers.
//!
//! Dependencies point down only: the order is the `layers` block of `docs/ARCHITECTURE.md`,
//! and `tests/layering.rs` fails on any `crate::` path that points back up.

pub mod api;
pub mod backend;
pub mod batching;
pub mod config;
pub mod dataio;
pub mod drift;
pub mod error;
pub mod loadgen;
pub mod metrics;
pub mod policy;
pub mod predict;
pub mod proto;
pub mod registry;
pub mod rollout;
pub mod routing;
pub mod server;
pub mod telemetry;
pub mod tensor;
