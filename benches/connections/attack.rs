//! The attackers: connections that send nothing or trickle, each reopened after the server
//! closes it, counted by port and kind with their age at close.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Silent,
    SlowHeaders,
    SlowBody,
    SlowReader,
    SlowPreface,
    SlowGrpcBody,
}

/// What the attackers saw: per port and kind, connections opened and ages when the server
/// closed them.
#[derive(Default)]
pub struct Closes {
    pub opened: BTreeMap<(&'static str, Kind), usize>,
    pub ages: BTreeMap<(&'static str, Kind), Vec<f64>>,
}

pub struct Attack {
    pub stop: AtomicBool,
    pub open_now: AtomicUsize,
    pub closes: Mutex<Closes>,
    pub reconnect: Duration,
}

/// One attacker: opens its kind of connection, waits for the server to close it, records the
/// age, and opens another until the attack stops.
pub async fn attacker(attack: Arc<Attack>, port: &'static str, addr: SocketAddr, kind: Kind) {
    while !attack.stop.load(Ordering::Relaxed) {
        let opened = Instant::now();
        let Ok(tcp) = connect(addr, kind == Kind::SlowReader).await else {
            tokio::time::sleep(attack.reconnect).await;
            continue;
        };
        attack.open_now.fetch_add(1, Ordering::Relaxed);
        *lock(&attack.closes).opened.entry((port, kind)).or_default() += 1;
        let closed = tokio::select! {
            () = hold(tcp, kind) => true,
            () = stopped(&attack) => false,
        };
        attack.open_now.fetch_sub(1, Ordering::Relaxed);
        if closed {
            let age = opened.elapsed().as_secs_f64();
            lock(&attack.closes)
                .ages
                .entry((port, kind))
                .or_default()
                .push(age);
            tokio::time::sleep(attack.reconnect).await;
        }
    }
}

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn stopped(attack: &Attack) {
    while !attack.stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A slow reader's receive buffer is small, so the server's writes back up within seconds.
async fn connect(addr: SocketAddr, small_buffer: bool) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if small_buffer {
        socket.set_recv_buffer_size(4096)?;
    }
    socket.connect(addr).await
}

/// Plays `kind` on `tcp` until the server closes it (EOF, an error, or a refused write).
async fn hold(tcp: TcpStream, kind: Kind) {
    let second = Duration::from_secs(1);
    match kind {
        Kind::SlowGrpcBody => return slow_grpc_body(tcp).await,
        Kind::SlowReader => {
            // Pipelined requests, 256 a second, answers never read: only writes tell the end.
            let burst = b"GET /v2 HTTP/1.1\r\nhost: x\r\n\r\n".repeat(256);
            let mut tcp = tcp;
            while tokio::time::timeout(second * 30, tcp.write_all(&burst))
                .await
                .is_ok_and(|r| r.is_ok())
            {
                tokio::time::sleep(second).await;
            }
            return;
        }
        _ => {}
    }
    let (mut rd, mut wr) = tcp.into_split();
    // The prelude at once, then the trickle a byte a second (repeated when it is one byte).
    let (prelude, trickle): (&[u8], &[u8]) = match kind {
        Kind::SlowHeaders => (b"GET /v2/health/live HTTP/1.1\r\nx-slow: ", b"a"),
        Kind::SlowBody => (
            b"POST /v2/models/mlp/infer HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\n\r\n",
            b" ",
        ),
        Kind::SlowPreface => (b"", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        _ => (b"", b""),
    };
    let write = async move {
        if wr.write_all(prelude).await.is_err() {
            return;
        }
        for i in 0.. {
            let Some(byte) = trickle.get(if trickle.len() == 1 { 0 } else { i }) else {
                break;
            };
            tokio::time::sleep(second).await;
            if wr.write_all(std::slice::from_ref(byte)).await.is_err() {
                return;
            }
        }
        std::future::pending::<()>().await;
    };
    let read = async move {
        let mut sink = [0u8; 4096];
        while rd.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    };
    tokio::select! {
        () = write => {}
        () = read => {}
    }
}

/// A ModelInfer whose message arrives a byte a second over a real HTTP/2 connection.
async fn slow_grpc_body(tcp: TcpStream) {
    let Ok((client, conn)) = h2::client::handshake(tcp).await else {
        return;
    };
    let mut conn = Box::pin(conn);
    let request = http::Request::post("/inference.GRPCInferenceService/ModelInfer")
        .header("content-type", "application/grpc")
        .body(())
        .expect("a request");
    let send = async {
        let mut client = client.ready().await.ok()?;
        let (_answer, mut body) = client.send_request(request, false).ok()?;
        let mut next: &'static [u8] = &[0, 0, 0, 1, 0];
        while body
            .send_data(bytes::Bytes::from_static(next), false)
            .is_ok()
        {
            tokio::time::sleep(Duration::from_secs(1)).await;
            next = &[0];
        }
        Some(())
    };
    tokio::select! {
        _ = &mut conn => {}
        _ = send => {}
    }
}
