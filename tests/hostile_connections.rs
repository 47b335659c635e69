//! Idle and slow connections cannot take a port down: on every port, more hostile connections
//! than `max_connections` (silent, slow body, HTTP/2 preface then nothing) are held open while
//! a health check still gets through at once, and each hostile connection is closed by the
//! server within its configured timeout; a slow but steady keep-alive client is never cut off;
//! an HTTP/2 connection the server closes (evicted, or idle too long) is sent GOAWAY first.

mod common;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use common::{copy_model, pb, TestServer};
use pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: usize = 16;
const HOSTILE: usize = LIMIT + 8;
/// Handshake, header and body timeouts of the servers under test, seconds.
const TIMEOUT: f64 = 3.0;
/// A health check must be answered within this while the hostile connections are held:
/// shorter than `TIMEOUT`, so it cannot pass by waiting for them to time out.
const HEALTH_BOUND: Duration = Duration::from_millis(2000);
/// A hostile connection must be closed within `TIMEOUT` plus this.
const SLACK: Duration = Duration::from_secs(4);

async fn server() -> (TestServer, tempfile::TempDir) {
    let repo = common::repo([copy_model("mlp")]);
    let server = TestServer::builder()
        .repo(repo.path())
        .configure(|c| {
            c.max_connections = LIMIT;
            c.handshake_timeout_secs = TIMEOUT;
            c.header_read_timeout_secs = TIMEOUT;
            c.body_read_timeout_secs = TIMEOUT;
            c.idle_timeout_secs = TIMEOUT;
        })
        .start()
        .await;
    (server, repo)
}

/// Opens `HOSTILE` connections to `addr`, each sending `prelude` and then nothing.
async fn open_silent(addr: SocketAddr, prelude: &[u8]) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..HOSTILE {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(prelude).await.unwrap();
        held.push(tcp);
    }
    held
}

/// Every held connection reaches EOF or an error (the server closed it) within `TIMEOUT` +
/// `SLACK` of `opened`.
async fn assert_all_closed(held: Vec<TcpStream>, opened: Instant) {
    let limit = Duration::from_secs_f64(TIMEOUT) + SLACK;
    let reads = held.into_iter().map(|mut tcp| async move {
        let mut sink = Vec::new();
        let _ = tcp.read_to_end(&mut sink).await;
    });
    let remaining = limit.saturating_sub(opened.elapsed());
    tokio::time::timeout(remaining, futures_util::future::join_all(reads))
        .await
        .unwrap_or_else(|_| panic!("hostile connections still open {limit:?} after opening"));
}

async fn assert_http_live(addr: SocketAddr, path: &str) {
    // A fresh client: a fresh connection, as a probe makes.
    let get = reqwest::Client::new()
        .get(format!("http://{addr}{path}"))
        .send();
    let r = tokio::time::timeout(HEALTH_BOUND, get)
        .await
        .unwrap_or_else(|_| panic!("{path} not answered within {HEALTH_BOUND:?}"))
        .unwrap();
    assert_eq!(r.status(), 200);
}

async fn assert_grpc_live(addr: SocketAddr) {
    let live = async {
        let mut client = GrpcInferenceServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        client
            .server_live(pb::ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    };
    let live = tokio::time::timeout(HEALTH_BOUND, live)
        .await
        .unwrap_or_else(|_| panic!("ServerLive not answered within {HEALTH_BOUND:?}"));
    assert!(live);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_tcp_connections_do_not_block_http_health_and_are_closed() {
    let (server, _repo) = server().await;
    let opened = Instant::now();
    let held = open_silent(server.http, b"").await;
    assert_http_live(server.http, "/v2/health/live").await;
    assert_all_closed(held, opened).await;
    assert_http_live(server.http, "/v2/health/live").await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_preface_then_nothing_does_not_block_http_health_and_is_closed() {
    let (server, _repo) = server().await;
    let opened = Instant::now();
    let held = open_silent(server.http, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    assert_http_live(server.http, "/v2/health/live").await;
    assert_all_closed(held, opened).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_connections_without_a_preface_do_not_block_server_live_and_are_closed() {
    let (server, _repo) = server().await;
    let opened = Instant::now();
    let held = open_silent(server.grpc, b"").await;
    assert_grpc_live(server.grpc).await;
    assert_all_closed(held, opened).await;
    assert_grpc_live(server.grpc).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_to_the_metrics_port_do_not_block_scrapes_and_are_closed() {
    let (server, _repo) = server().await;
    let opened = Instant::now();
    let held = open_silent(server.metrics, b"").await;
    assert_http_live(server.metrics, "/metrics").await;
    assert_all_closed(held, opened).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_sent_a_byte_at_a_time_do_not_block_health_and_are_cut_off() {
    let (server, _repo) = server().await;
    let head = "POST /v2/models/mlp/infer HTTP/1.1\r\nhost: x\r\n\
                content-type: application/json\r\ncontent-length: 100000\r\n\r\n";
    let opened = Instant::now();
    let mut readers = Vec::new();
    for _ in 0..HOSTILE {
        let tcp = TcpStream::connect(server.http).await.unwrap();
        let (rd, mut wr) = tcp.into_split();
        wr.write_all(head.as_bytes()).await.unwrap();
        tokio::spawn(async move {
            // The slowness under test: a deliberate pace, not a wait for the server.
            while wr.write_all(b" ").await.is_ok() {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        readers.push(rd);
    }
    assert_http_live(server.http, "/v2/health/live").await;
    let limit = Duration::from_secs_f64(TIMEOUT) + SLACK;
    let reads = readers.into_iter().map(|mut rd| async move {
        let mut got = Vec::new();
        let _ = rd.read_to_end(&mut got).await;
        String::from_utf8_lossy(&got).into_owned()
    });
    let answers = tokio::time::timeout(
        limit.saturating_sub(opened.elapsed()),
        futures_util::future::join_all(reads),
    )
    .await
    .unwrap_or_else(|_| panic!("slow bodies still being read {limit:?} after they began"));
    // Evicted for a newcomer (nothing sent back), or answered with the reason.
    let told = answers
        .iter()
        .filter(|a| a.contains("request body not received within 3 s"))
        .count();
    assert!(
        answers
            .iter()
            .all(|a| a.is_empty() || a.starts_with("HTTP/1.1 408")),
        "{answers:?}"
    );
    assert!(told >= LIMIT / 2, "{answers:?}");
    assert_http_live(server.http, "/v2/health/live").await;
    server.stop().await.unwrap();
}

/// Reads one HTTP/1 response with a Content-Length body; `None` at EOF.
async fn read_response(tcp: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if tcp.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).ok()?;
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    tcp.read_exact(&mut body).await.ok()?;
    Some(head)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_but_steady_keep_alive_client_is_not_cut_off() {
    let (server, _repo) = server().await;
    let mut tcp = TcpStream::connect(server.http).await.unwrap();
    let started = Instant::now();
    let mut answered = 0;
    // Longer in total than every timeout, each gap well inside them.
    while started.elapsed() < Duration::from_secs_f64(TIMEOUT * 2.0) {
        tcp.write_all(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let head = read_response(&mut tcp)
            .await
            .unwrap_or_else(|| panic!("cut off after {answered} requests"));
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        answered += 1;
        // The pace under test, not a wait for the server.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(answered >= 8, "{answered}");
    server.stop().await.unwrap();
}

/// A socket that keeps a copy of every byte the server sends, for frame-level assertions.
struct Recording {
    tcp: TcpStream,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl tokio::io::AsyncRead for Recording {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.tcp).poll_read(cx, buf);
        let new = buf.filled()[before..].to_vec();
        self.seen.lock().unwrap().extend_from_slice(&new);
        polled
    }
}

impl tokio::io::AsyncWrite for Recording {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        b: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, b)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// The error code of the first GOAWAY among the server's HTTP/2 frames, if one was sent.
fn goaway_code(frames: &[u8]) -> Option<u32> {
    let mut at = 0;
    while let Some(head) = frames.get(at..at + 9) {
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let payload = frames.get(at + 9..at + 9 + len)?;
        if head[3] == 0x7 {
            return Some(u32::from_be_bytes(payload.get(4..8)?.try_into().ok()?));
        }
        at += 9 + len;
    }
    None
}

/// An HTTP/2 connection to `addr` that has completed one request (`path`, gRPC or plain):
/// the bytes the server has sent on it, and the client's handle (dropping the last one would
/// close the connection from the client's side).
async fn served_h2(
    addr: SocketAddr,
    path: &str,
    grpc: bool,
) -> (Arc<Mutex<Vec<u8>>>, h2::client::SendRequest<bytes::Bytes>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let io = Recording {
        tcp,
        seen: seen.clone(),
    };
    let (client, conn) = h2::client::handshake(io).await.unwrap();
    tokio::spawn(async move {
        // The connection ends when the server closes it; how is what the test reads.
        let _ = conn.await;
    });
    let mut client = client.ready().await.unwrap();
    let mut request = http::Request::post(format!("http://{addr}{path}"));
    if grpc {
        request = request
            .header("content-type", "application/grpc")
            .header("te", "trailers");
    } else {
        request = http::Request::get(format!("http://{addr}{path}"));
    }
    // A GET ends its stream with its headers: the server may answer (and close the stream)
    // before an empty DATA frame could follow, which h2 then refuses to send.
    let (response, mut body) = client
        .send_request(request.body(()).unwrap(), !grpc)
        .unwrap();
    if grpc {
        body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
            .unwrap();
    }
    let mut response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    while let Some(chunk) = response.body_mut().data().await {
        chunk.unwrap();
    }
    let _ = response.body_mut().trailers().await;
    (seen, client)
}

async fn assert_goaway_within(seen: &Arc<Mutex<Vec<u8>>>, limit: Duration) {
    // The error code, or u32::MAX while no GOAWAY has come.
    let got = common::poll_until(
        limit,
        "no GOAWAY from the server",
        || {
            let seen = seen.clone();
            async move { goaway_code(&seen.lock().unwrap()).unwrap_or(u32::MAX) }
        },
        |code| *code != u32::MAX,
    )
    .await;
    assert_eq!(got, 0, "GOAWAY with NO_ERROR");
}

/// One connection slot; `idle_timeout_secs` also bounds the handshake (the watchdog of a
/// connection first wakes at its handshake deadline).
async fn one_slot_server(idle_timeout_secs: f64) -> (TestServer, tempfile::TempDir) {
    let repo = common::repo([copy_model("mlp")]);
    let server = TestServer::builder()
        .repo(repo.path())
        .configure(|c| {
            c.max_connections = 1;
            c.idle_timeout_secs = idle_timeout_secs;
            c.handshake_timeout_secs = idle_timeout_secs.min(10.0);
        })
        .start()
        .await;
    (server, repo)
}

const SERVER_LIVE: &str = "/inference.GRPCInferenceService/ServerLive";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_connection_evicted_for_a_newcomer_receives_goaway() {
    let (server, _repo) = one_slot_server(300.0).await;
    let (seen, _client) = served_h2(server.grpc, SERVER_LIVE, true).await;
    assert_eq!(goaway_code(&seen.lock().unwrap()), None);
    // The newcomer takes the only slot from the idle client.
    let _newcomer = TcpStream::connect(server.grpc).await.unwrap();
    assert_goaway_within(&seen, Duration::from_secs(5)).await;
    assert_grpc_live(server.grpc).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_connection_evicted_from_the_http_port_receives_goaway() {
    let (server, _repo) = one_slot_server(300.0).await;
    let (seen, _client) = served_h2(server.http, "/v2/health/live", false).await;
    assert_eq!(goaway_code(&seen.lock().unwrap()), None);
    let _newcomer = TcpStream::connect(server.http).await.unwrap();
    assert_goaway_within(&seen, Duration::from_secs(5)).await;
    assert_http_live(server.http, "/v2/health/live").await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_connection_closed_by_its_idle_bound_receives_goaway() {
    let (server, _repo) = one_slot_server(1.0).await;
    let (seen, _client) = served_h2(server.grpc, SERVER_LIVE, true).await;
    assert_goaway_within(&seen, Duration::from_secs(6)).await;
    assert_grpc_live(server.grpc).await;
    server.stop().await.unwrap();
}
