//! Issue 13, the adversarial suite: HTTP/2 attacks on the HTTP port (h2c) and the gRPC port.
//! Rapid reset (CVE-2023-44487: thousands of streams, each reset at once) and stream floods
//! (streams beyond `max_concurrent_streams`): the server closes that connection with GOAWAY or
//! keeps the work bounded, other clients' health checks and exact inferences succeed throughout,
//! and RSS stays bounded. RSS is the test process's, so these run one at a time, one process
//! each (.config/nextest.toml `process-wide-measurements`).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::probe::assert_still_serves;
use common::raw_h2::{RawH2, CANCEL};
use common::{assert_alone_in_this_process, rss_kib, TestServer};

/// Streams each attack opens.
const STREAMS: u32 = 20_000;
/// Frames written per write: the server sees bursts, as from a real attacker.
const BURST: u32 = 200;
/// `http2_max_concurrent_streams` of the servers under test.
const MAX_STREAMS: u32 = 16;
/// How long the server may take to act on everything the attack sent.
const SETTLE: Duration = Duration::from_secs(60);
/// RSS growth allowed across an attack, KiB (generous: the allocator keeps what it freed).
const RSS_SLACK_KIB: u64 = 96 * 1024;
/// ENHANCE_YOUR_CALM: h2's GOAWAY for too many resets.
const ENHANCE_YOUR_CALM: u32 = 0xb;

#[derive(Clone, Copy, PartialEq)]
enum Port {
    Http,
    Grpc,
}

#[derive(Clone, Copy)]
enum Attack {
    /// Each stream opened and reset (CANCEL) in the same burst.
    RapidReset,
    /// Streams opened without a body and never closed: all but `MAX_STREAMS` exceed the limit.
    Flood,
}

async fn server() -> TestServer {
    TestServer::builder()
        .configure(|c| c.http2_max_concurrent_streams = MAX_STREAMS)
        .start()
        .await
}

fn target(server: &TestServer, port: Port) -> (SocketAddr, &'static str) {
    match port {
        Port::Http => (server.http, "/v2/models/mlp/infer"),
        Port::Grpc => (server.grpc, "/inference.GRPCInferenceService/ModelInfer"),
    }
}

/// Runs `attack` on one connection; returns it once the server has closed it or has read
/// every frame (a PING sent last is acked).
async fn run_attack(addr: SocketAddr, path: &str, port: Port, attack: Attack) -> RawH2 {
    let conn = RawH2::connect(addr).await;
    let grpc = port == Port::Grpc;
    let mut stream = 1u32;
    'bursts: for _ in 0..STREAMS / BURST {
        let mut out = Vec::new();
        for _ in 0..BURST {
            match attack {
                Attack::RapidReset => {
                    conn.headers(stream, true, path, grpc, false, &mut out);
                    RawH2::rst(stream, CANCEL, &mut out);
                }
                Attack::Flood => conn.headers(stream, true, path, grpc, false, &mut out),
            }
            stream += 2;
        }
        if !conn.send(&out).await {
            break 'bursts;
        }
        tokio::task::yield_now().await;
    }
    let settled = tokio::time::timeout(SETTLE, conn.ping_acked(0x5eed)).await;
    assert!(
        settled.is_ok() || conn.is_closed(),
        "the server neither closed the attacking connection nor answered its PING within {SETTLE:?}"
    );
    conn
}

/// Health and the exact reference inference over both transports, again and again until
/// `done`; returns the rounds completed. Any failure fails the test.
async fn probe_until(server: &TestServer, done: &AtomicBool) -> usize {
    let mut rounds = 0;
    loop {
        let last = done.load(Ordering::SeqCst);
        assert_still_serves(server).await;
        rounds += 1;
        if last {
            return rounds;
        }
    }
}

/// The attack on `port` while other clients are served; then the verdict on the attacking
/// connection, RSS, and a last exact inference.
async fn attack_while_serving(test: &str, port: Port, attack: Attack) -> RawH2 {
    assert_alone_in_this_process(test);
    let server = server().await;
    assert_still_serves(&server).await;
    let before = rss_kib();
    let (addr, path) = target(&server, port);
    let done = AtomicBool::new(false);
    let (conn, rounds) = tokio::join!(
        async {
            let conn = run_attack(addr, path, port, attack).await;
            done.store(true, Ordering::SeqCst);
            conn
        },
        probe_until(&server, &done)
    );
    let grown = rss_kib().saturating_sub(before);
    eprintln!(
        "{test}: GOAWAY {:?}, {} resets ({} refused), {} responses from the server; \
         {rounds} probe rounds during the attack; RSS +{grown} KiB",
        conn.seen.goaway(),
        conn.seen.resets.load(Ordering::SeqCst),
        conn.seen.refused.load(Ordering::SeqCst),
        conn.seen.headers.load(Ordering::SeqCst),
    );
    assert!(rounds >= 1);
    assert!(
        grown <= RSS_SLACK_KIB,
        "{test}: RSS grew {grown} KiB during the attack"
    );
    assert_still_serves(&server).await;
    server.stop().await.unwrap();
    conn
}

/// Rapid reset ends either in GOAWAY (ENHANCE_YOUR_CALM) or with every stream read and
/// dropped; in both cases the work stayed bounded (RSS, other clients served).
fn assert_rapid_reset_bounded(conn: &RawH2) {
    match conn.seen.goaway() {
        Some(code) => assert_eq!(code, ENHANCE_YOUR_CALM, "GOAWAY code"),
        None => assert!(!conn.is_closed(), "closed without GOAWAY"),
    }
}

/// A flood beyond `max_concurrent_streams` is refused stream by stream (REFUSED_STREAM) and,
/// past the local-reset limit, closed with GOAWAY ENHANCE_YOUR_CALM.
fn assert_flood_closed(conn: &RawH2) {
    assert_eq!(
        conn.seen.goaway(),
        Some(ENHANCE_YOUR_CALM),
        "a flood of {STREAMS} streams beyond {MAX_STREAMS} must end in GOAWAY ENHANCE_YOUR_CALM"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rapid_reset_on_the_http_port_is_bounded_while_others_are_served() {
    let test = "rapid_reset_on_the_http_port_is_bounded_while_others_are_served";
    let conn = attack_while_serving(test, Port::Http, Attack::RapidReset).await;
    assert_rapid_reset_bounded(&conn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rapid_reset_on_the_grpc_port_is_bounded_while_others_are_served() {
    let test = "rapid_reset_on_the_grpc_port_is_bounded_while_others_are_served";
    let conn = attack_while_serving(test, Port::Grpc, Attack::RapidReset).await;
    assert_rapid_reset_bounded(&conn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stream_flood_on_the_http_port_ends_in_goaway_while_others_are_served() {
    let test = "stream_flood_on_the_http_port_ends_in_goaway_while_others_are_served";
    let conn = attack_while_serving(test, Port::Http, Attack::Flood).await;
    assert_flood_closed(&conn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stream_flood_on_the_grpc_port_ends_in_goaway_while_others_are_served() {
    let test = "stream_flood_on_the_grpc_port_ends_in_goaway_while_others_are_served";
    let conn = attack_while_serving(test, Port::Grpc, Attack::Flood).await;
    assert_flood_closed(&conn);
}
