//! OpenTelemetry traces, seen by a real OTLP receiver (tests/common/otlp.rs) over both
//! transports: a request's spans join the caller's W3C trace with the expected structure and
//! attributes, a batch's compute span is linked with every request in it, and a collector that
//! is down costs no request while the spans it loses are counted.

mod common;

use std::time::Duration;

use common::otlp::{self, attr, hex, Span};
use common::spawned::Spawned;
use common::{copy_model, pb, poll_until, probe};
use pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use serde_json::json;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

fn traceparent(trace: &str) -> String {
    format!("00-{trace}-{PARENT}-01")
}

fn otel_env(protocol: &str, endpoint: String) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.into()),
        ("OTEL_SERVICE_NAME", "ferroserve-under-test".into()),
        // Export every 50 ms so the test sees its spans soon.
        ("OTEL_BSP_SCHEDULE_DELAY", "50".into()),
    ]
}

fn one_row() -> serde_json::Value {
    json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": vec![0.5f32; 64]}]})
}

/// The spans of trace `trace` once `names` are all there.
async fn trace_of(rx: &otlp::Receiver, trace: &str, names: &[&str]) -> Vec<Span> {
    let received = rx.received.clone();
    let of_trace = move || {
        received
            .spans()
            .into_iter()
            .filter(|s| hex(&s.trace_id) == trace)
            .collect::<Vec<_>>()
    };
    let spans = poll_until(
        Duration::from_secs(30),
        "the receiver never got the request's spans",
        || {
            let of_trace = of_trace.clone();
            async move {
                let names: Vec<String> = of_trace().into_iter().map(|s| s.name).collect();
                names.join(",")
            }
        },
        |got| names.iter().all(|n| got.split(',').any(|g| g == *n)),
    )
    .await;
    assert!(!spans.is_empty());
    of_trace()
}

fn one<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    let found: Vec<&Span> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one {name} span: {spans:#?}");
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_request_joins_the_callers_trace_with_queue_and_encode_children() {
    let rx = otlp::http().await;
    let repo = common::repo([copy_model("mlp")]);
    let server = Spawned::start(
        repo.path(),
        &otel_env("http/protobuf", format!("http://{}", rx.addr)),
    )
    .await;
    let resp = reqwest::Client::new()
        .post(format!("http://{}/v2/models/mlp/infer", server.http))
        .header("traceparent", traceparent(TRACE))
        .header("tracestate", "vendor=1")
        .json(&one_row())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let names = [
        "POST /v2/models/{model}/infer",
        "request",
        "queue_wait",
        "encode_output",
    ];
    let spans = trace_of(&rx, TRACE, &names).await;
    let server_span = one(&spans, names[0]);
    let request = one(&spans, "request");
    let queued = one(&spans, "queue_wait");
    let encode = one(&spans, "encode_output");
    assert_eq!(
        hex(&server_span.parent_span_id),
        PARENT,
        "joined the caller's span"
    );
    assert_eq!(server_span.trace_state, "vendor=1");
    assert_eq!(request.parent_span_id, server_span.span_id);
    assert_eq!(queued.parent_span_id, request.span_id);
    assert_eq!(encode.parent_span_id, server_span.span_id);
    assert_eq!(
        attr(server_span, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(attr(server_span, "rpc.system").as_deref(), Some("http"));
    for (key, want) in [
        ("ferroserve.model", "mlp"),
        ("ferroserve.version", "1"),
        ("ferroserve.routing_reason", "default"),
        ("ferroserve.protocol", "http"),
        ("ferroserve.status_code", "ok"),
    ] {
        assert_eq!(
            attr(request, key).as_deref(),
            Some(want),
            "{key}: {request:#?}"
        );
    }
    assert!(
        rx.received
            .services()
            .iter()
            .all(|s| s == "ferroserve-under-test"),
        "OTEL_SERVICE_NAME names the resource: {:?}",
        rx.received.services()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_request_joins_the_trace_in_its_metadata_over_otlp_grpc() {
    let rx = otlp::grpc().await;
    let repo = common::repo([copy_model("mlp")]);
    let server = Spawned::start(
        repo.path(),
        &otel_env("grpc", format!("http://{}", rx.addr)),
    )
    .await;
    let mut client = GrpcInferenceServiceClient::connect(format!("http://{}", server.grpc))
        .await
        .unwrap();
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let mut req = tonic::Request::new(probe::mlp_grpc());
    req.metadata_mut()
        .insert("traceparent", traceparent(trace).parse().unwrap());
    client.model_infer(req).await.unwrap();

    let name = "inference.GRPCInferenceService/ModelInfer";
    let spans = trace_of(
        &rx,
        trace,
        &[name, "request", "queue_wait", "encode_output"],
    )
    .await;
    let server_span = one(&spans, name);
    assert_eq!(hex(&server_span.parent_span_id), PARENT);
    assert_eq!(
        attr(server_span, "rpc.grpc.status_code").as_deref(),
        Some("0")
    );
    let request = one(&spans, "request");
    assert_eq!(request.parent_span_id, server_span.span_id);
    assert_eq!(
        attr(request, "ferroserve.protocol").as_deref(),
        Some("grpc")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_records_its_status_code() {
    let rx = otlp::http().await;
    let repo = common::repo([copy_model("mlp")]);
    let server = Spawned::start(
        repo.path(),
        &otel_env("http/protobuf", format!("http://{}", rx.addr)),
    )
    .await;
    let trace = "11111111111111111111111111111111";
    let bad = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]});
    let resp = reqwest::Client::new()
        .post(format!("http://{}/v2/models/mlp/infer", server.http))
        .header("traceparent", traceparent(trace))
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let spans = trace_of(&rx, trace, &["POST /v2/models/{model}/infer", "request"]).await;
    let server_span = one(&spans, "POST /v2/models/{model}/infer");
    assert_eq!(
        attr(server_span, "http.response.status_code").as_deref(),
        Some("400")
    );
    let request = one(&spans, "request");
    assert_eq!(
        attr(request, "ferroserve.status_code").as_deref(),
        Some("invalid_argument")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_eight_requests_has_one_compute_span_linked_with_all_eight() {
    let rx = otlp::grpc().await;
    // Eight rows fill the batch; until then the instance waits (up to 10 s) for companions.
    let model = copy_model("mlp")
        .config("[dynamic_batching]\nmax_queue_delay_us = 10000000\npreferred_batch_sizes = [8]\n");
    let repo = common::repo([model]);
    let server = Spawned::start(
        repo.path(),
        &otel_env("grpc", format!("http://{}", rx.addr)),
    )
    .await;
    let traces: Vec<String> = (0..8).map(|i| format!("{:032x}", 0xabc0 + i)).collect();
    let client = reqwest::Client::new();
    let sends = traces.iter().map(|t| {
        client
            .post(format!("http://{}/v2/models/mlp/infer", server.http))
            .header("traceparent", traceparent(t))
            .json(&one_row())
            .send()
    });
    for resp in futures_util::future::join_all(sends).await {
        assert_eq!(resp.unwrap().status(), 200);
    }

    let received = rx.received.clone();
    let batches = poll_until(
        Duration::from_secs(30),
        "no batch span with all eight requests' links",
        || {
            let received = received.clone();
            async move {
                let b = received.named("batch_compute");
                let r = received.named("request").len();
                format!("{} batch spans, {r} request spans", b.len())
            }
        },
        |_| {
            rx.received.named("request").len() == 8
                && rx
                    .received
                    .named("batch_compute")
                    .iter()
                    .any(|b| b.links.len() == 8)
        },
    )
    .await;
    assert!(!batches.is_empty());
    let batch_spans = rx.received.named("batch_compute");
    assert_eq!(batch_spans.len(), 1, "one compute span: {batch_spans:#?}");
    let batch = &batch_spans[0];
    assert_eq!(attr(batch, "ferroserve.batch.size").as_deref(), Some("8"));
    assert_eq!(attr(batch, "ferroserve.batch.rows").as_deref(), Some("8"));
    assert_eq!(attr(batch, "ferroserve.model").as_deref(), Some("mlp"));
    let mut linked: Vec<String> = batch.links.iter().map(|l| hex(&l.trace_id)).collect();
    linked.sort();
    assert_eq!(
        linked, traces,
        "the compute span links every request's trace"
    );
    for request in rx.received.named("request") {
        assert_eq!(request.links.len(), 1, "{request:#?}");
        assert_eq!(
            request.links[0].span_id, batch.span_id,
            "linked to the compute span"
        );
        assert!(batch.links.iter().any(|l| l.span_id == request.span_id));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_collector_down_requests_are_served_and_lost_spans_counted() {
    // A port nobody listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let repo = common::repo([copy_model("mlp")]);
    let mut env = otel_env("grpc", format!("http://{closed}"));
    env.push(("OTEL_BSP_MAX_QUEUE_SIZE", "16".into()));
    env.push(("OTEL_BSP_EXPORT_TIMEOUT", "200".into()));
    let server = Spawned::start(repo.path(), &env).await;
    assert_eq!(
        server.metric("ferroserve_trace_spans_dropped_total").await,
        0.0
    );
    let client = reqwest::Client::new();
    for _ in 0..100 {
        let resp = client
            .post(format!("http://{}/v2/models/mlp/infer", server.http))
            .json(&one_row())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let dropped = poll_until(
        Duration::from_secs(30),
        "dropped spans were never counted",
        || server.metric("ferroserve_trace_spans_dropped_total"),
        |n| *n >= 100.0,
    )
    .await;
    // Five spans per request, every one of them lost somewhere: in the full queue or in a
    // failed export.
    assert!(dropped <= 500.0, "{dropped}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_did_not_sample_its_trace_gets_no_spans_exported() {
    let rx = otlp::http().await;
    let repo = common::repo([copy_model("mlp")]);
    let server = Spawned::start(
        repo.path(),
        &otel_env("http/protobuf", format!("http://{}", rx.addr)),
    )
    .await;
    let client = reqwest::Client::new();
    let unsampled = "22222222222222222222222222222222";
    let sampled = "33333333333333333333333333333333";
    for (trace, flags) in [(unsampled, "00"), (sampled, "01")] {
        let resp = client
            .post(format!("http://{}/v2/models/mlp/infer", server.http))
            .header("traceparent", format!("00-{trace}-{PARENT}-{flags}"))
            .json(&one_row())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    // Spans are exported in the order they end: once the later request's are in, the earlier
    // one's would be too.
    trace_of(&rx, sampled, &["request", "queue_wait", "encode_output"]).await;
    let leaked: Vec<Span> = rx
        .received
        .spans()
        .into_iter()
        .filter(|s| hex(&s.trace_id) == unsampled)
        .collect();
    assert!(leaked.is_empty(), "{leaked:#?}");
    let batches = rx.received.named("batch_compute");
    assert_eq!(
        batches.len(),
        1,
        "only the sampled request's batch: {batches:#?}"
    );
    assert_eq!(hex(&batches[0].trace_id), sampled);
}
