//! Clients that do not read their answers cannot hold a connection slot: pipelined HTTP/1
//! requests whose answers are never read, and HTTP/2 streams whose flow-control window is left
//! at zero, are closed within `write_stall_timeout_secs`; a full table of them lets a health
//! check through (they are evicted first); a client that reads slowly but steadily is served
//! to the end.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::probe::assert_still_serves;
use common::{copy_model, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The write stall bound of the servers under test, seconds.
const STALL: f64 = 1.0;
/// Every other connection bound: far beyond the waits below, so only the write bound can
/// close what these tests open.
const OTHER: f64 = 60.0;
/// A stalled connection must be closed within this of its stall: the bound, the watchdog's
/// period (the bound again), the goodbye grace and the lingering close (1 s each), and slack.
const CLOSED_WITHIN: Duration = Duration::from_secs(9);
const HEALTH_BOUND: Duration = Duration::from_secs(5);
/// One metadata request, pipelined many times: each answer is a few hundred bytes.
const METADATA: &[u8] = b"GET /v2/models/mlp HTTP/1.1\r\nhost: x\r\n\r\n";

async fn server(max_connections: usize, stall: f64) -> (TestServer, tempfile::TempDir) {
    let repo = common::repo([copy_model("mlp")]);
    let server = TestServer::builder()
        .repo(repo.path())
        .configure(|c| {
            c.max_connections = max_connections;
            c.write_stall_timeout_secs = stall;
            c.handshake_timeout_secs = OTHER;
            c.header_read_timeout_secs = OTHER;
            c.body_read_timeout_secs = OTHER;
            c.idle_timeout_secs = OTHER;
            c.http2_keepalive_interval_secs = OTHER;
        })
        .start()
        .await;
    (server, repo)
}

/// A connection with a small receive buffer, so the server's writes back up at once.
async fn connect_small(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(addr).await.unwrap()
}

/// A client that pipelines metadata requests, a burst every 100 ms, and never reads: it ends
/// when a write fails (the server closed the connection), which only writes can tell.
fn never_reads(tcp: TcpStream) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let (_rd, mut wr) = tcp.into_split();
        let burst = METADATA.repeat(64);
        while wr.write_all(&burst).await.is_ok() {
            // The client's pace, not a wait for the server.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

async fn assert_http_live(addr: SocketAddr) {
    let get = reqwest::Client::new()
        .get(format!("http://{addr}/v2/health/live"))
        .send();
    let r = tokio::time::timeout(HEALTH_BOUND, get)
        .await
        .unwrap_or_else(|_| panic!("health not answered within {HEALTH_BOUND:?}"))
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_whose_answers_are_never_read_are_closed_by_the_write_bound() {
    let (server, _repo) = server(16, STALL).await;
    let attacker = never_reads(connect_small(server.http).await);
    tokio::time::timeout(CLOSED_WITHIN, attacker)
        .await
        .unwrap_or_else(|_| {
            panic!("a client that reads nothing still connected after {CLOSED_WITHIN:?}")
        })
        .unwrap();
    assert_still_serves(&server).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_table_of_clients_that_never_read_lets_a_health_check_through() {
    // The write bound far off: the slot comes from evicting a stalled client.
    const LIMIT: usize = 4;
    let (server, _repo) = server(LIMIT, OTHER).await;
    let mut attackers = Vec::new();
    for _ in 0..LIMIT {
        attackers.push(never_reads(connect_small(server.http).await));
    }
    assert_http_live(server.http).await;
    // The evicted one learns it from its writes, after the goodbye and the lingering close.
    common::wait_until(CLOSED_WITHIN, "an evicted client's writes to fail", || {
        let evicted = attackers.iter().any(|a| a.is_finished());
        async move { evicted }
    })
    .await;
    for a in &attackers {
        a.abort();
    }
    assert_still_serves(&server).await;
    server.stop().await.unwrap();
}

/// The client's side of a zero-window stream, held so the stream stays open.
type Held = (
    h2::client::SendRequest<bytes::Bytes>,
    http::Response<h2::RecvStream>,
);

/// Opens an HTTP/2 connection whose streams get a zero window (the client never sends
/// WINDOW_UPDATE), sends `request` with `body`, and waits for the answer's head: the server
/// now has an answer it may not send. Returns the connection's task (it ends when the server
/// closes the connection) and what to hold.
async fn zero_window_h2(
    addr: SocketAddr,
    request: http::Request<()>,
    body: &'static [u8],
) -> (tokio::task::JoinHandle<()>, Held) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .unwrap();
    let conn = tokio::spawn(async move {
        // Ends when the server closes the connection; how is not what this test reads.
        let _ = conn.await;
    });
    let mut client = client.ready().await.unwrap();
    let (response, mut send) = client.send_request(request, body.is_empty()).unwrap();
    if !body.is_empty() {
        send.send_data(bytes::Bytes::from_static(body), true)
            .unwrap();
    }
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    (conn, (client, response))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_stream_whose_window_stays_zero_is_closed_by_the_write_bound() {
    let (server, _repo) = server(16, STALL).await;
    let url = format!("http://{}/v2/models/mlp", server.http);
    let request = http::Request::get(url).body(()).unwrap();
    let (conn, _held) = zero_window_h2(server.http, request, b"").await;
    tokio::time::timeout(CLOSED_WITHIN, conn)
        .await
        .unwrap_or_else(|_| panic!("a zero-window stream still open after {CLOSED_WITHIN:?}"))
        .unwrap();
    assert_still_serves(&server).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_stream_whose_window_stays_zero_is_closed_by_the_write_bound() {
    let (server, _repo) = server(16, STALL).await;
    let url = format!(
        "http://{}/inference.GRPCInferenceService/ServerLive",
        server.grpc
    );
    let request = http::Request::post(url)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    // An empty ServerLiveRequest: uncompressed, zero length.
    let (conn, _held) = zero_window_h2(server.grpc, request, &[0, 0, 0, 0, 0]).await;
    tokio::time::timeout(CLOSED_WITHIN, conn)
        .await
        .unwrap_or_else(|_| panic!("a zero-window gRPC call still open after {CLOSED_WITHIN:?}"))
        .unwrap();
    assert_still_serves(&server).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_but_steady_reader_of_pipelined_answers_is_served_to_the_end() {
    // About 1.5 MB of answers: several times what the buffers on the way hold.
    const REQUESTS: usize = 5000;
    let (server, _repo) = server(16, STALL).await;
    let tcp = TcpStream::connect(server.http).await.unwrap();
    let (mut rd, mut wr) = tcp.into_split();
    let writer = tokio::spawn(async move {
        wr.write_all(&METADATA.repeat(REQUESTS)).await.unwrap();
        wr
    });
    let started = Instant::now();
    let (mut got, mut answers, mut chunk) = (Vec::new(), 0, vec![0u8; 32 * 1024]);
    while answers < REQUESTS {
        // The pace under test (a little every 100 ms), not a wait for the server.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let n = rd.read(&mut chunk).await.unwrap();
        assert!(n > 0, "cut off after {answers} answers");
        // From 11 bytes back: a status line split across two reads is counted once.
        let from = got.len().saturating_sub(11);
        got.extend_from_slice(&chunk[..n]);
        answers += got[from..]
            .windows(12)
            .filter(|w| w == b"HTTP/1.1 200")
            .count();
    }
    assert_eq!(answers, REQUESTS);
    // The premise: the transfer lasted well past the bound.
    assert!(
        started.elapsed() > Duration::from_secs_f64(STALL * 3.0),
        "{:?}",
        started.elapsed()
    );
    drop(writer.await.unwrap());
    assert_still_serves(&server).await;
    server.stop().await.unwrap();
}
