//! A byte-level HTTP/2 client for hostile tests: it writes frames as it is told, ignoring the
//! server's settings (a real client would wait for stream slots), and records what the server
//! sends back (GOAWAY, RST_STREAM, PING acks). HPACK is written literally, never Huffman.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{watch, Mutex};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;
pub const CANCEL: u32 = 0x8;
pub const REFUSED_STREAM: u32 = 0x7;

/// What the server has sent on the connection so far.
#[derive(Default)]
pub struct Seen {
    /// The GOAWAY error code plus one (0: none yet).
    goaway: AtomicU32,
    pub resets: AtomicUsize,
    pub refused: AtomicUsize,
    pub headers: AtomicUsize,
    /// The payload of the last PING ack.
    ping_ack: AtomicU64,
}

impl Seen {
    /// The error code of the server's GOAWAY, if it sent one.
    pub fn goaway(&self) -> Option<u32> {
        self.goaway.load(Ordering::SeqCst).checked_sub(1)
    }
}

pub struct RawH2 {
    write: Arc<Mutex<OwnedWriteHalf>>,
    pub seen: Arc<Seen>,
    /// True once the server closed the connection (EOF or error).
    closed: watch::Receiver<bool>,
    authority: String,
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8], out: &mut Vec<u8>) {
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// A literal header field without indexing, its name from the static table (`index` < 15).
fn literal(index: u8, value: &str, out: &mut Vec<u8>) {
    assert!(index < 15 && value.len() < 127);
    out.push(index);
    out.push(value.len() as u8);
    out.extend_from_slice(value.as_bytes());
}

impl RawH2 {
    /// Connects, sends the preface and empty SETTINGS, and starts reading the server's frames.
    pub async fn connect(addr: SocketAddr) -> RawH2 {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (mut read, mut write) = tcp.into_split();
        let mut hello = PREFACE.to_vec();
        frame(SETTINGS, 0, 0, &[], &mut hello);
        write.write_all(&hello).await.unwrap();
        let write = Arc::new(Mutex::new(write));
        let seen = Arc::new(Seen::default());
        let (closed_tx, closed) = watch::channel(false);
        let (w, s) = (write.clone(), seen.clone());
        tokio::spawn(async move {
            let mut head = [0u8; 9];
            loop {
                if read.read_exact(&mut head).await.is_err() {
                    break;
                }
                let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
                let mut payload = vec![0u8; len];
                if read.read_exact(&mut payload).await.is_err() {
                    break;
                }
                let (kind, flags) = (head[3], head[4]);
                match kind {
                    SETTINGS if flags & ACK == 0 => {
                        let mut ack = Vec::new();
                        frame(SETTINGS, ACK, 0, &[], &mut ack);
                        let _ = w.lock().await.write_all(&ack).await;
                    }
                    PING if flags & ACK != 0 && len == 8 => {
                        let v = u64::from_be_bytes(payload[..8].try_into().unwrap());
                        s.ping_ack.store(v, Ordering::SeqCst);
                    }
                    HEADERS => {
                        s.headers.fetch_add(1, Ordering::SeqCst);
                    }
                    RST_STREAM if len == 4 => {
                        s.resets.fetch_add(1, Ordering::SeqCst);
                        if u32::from_be_bytes(payload[..4].try_into().unwrap()) == REFUSED_STREAM {
                            s.refused.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    GOAWAY if len >= 8 => {
                        let code = u32::from_be_bytes(payload[4..8].try_into().unwrap());
                        s.goaway.store(code.saturating_add(1), Ordering::SeqCst);
                    }
                    _ => {}
                }
            }
            let _ = closed_tx.send(true);
        });
        RawH2 {
            write,
            seen,
            closed,
            authority: addr.to_string(),
        }
    }

    /// A HEADERS frame opening `stream` as `method path` (`grpc`: with gRPC's content-type and
    /// `te: trailers`), ending the stream when `end` (no body follows).
    pub fn headers(
        &self,
        stream: u32,
        post: bool,
        path: &str,
        grpc: bool,
        end: bool,
        out: &mut Vec<u8>,
    ) {
        let mut block = vec![if post { 0x83 } else { 0x82 }, 0x86];
        literal(4, path, &mut block);
        literal(1, &self.authority, &mut block);
        if grpc {
            // content-type is static entry 31: a 4-bit prefix of 15, then 16.
            block.extend_from_slice(&[0x0f, 0x10, 16]);
            block.extend_from_slice(b"application/grpc");
            block.extend_from_slice(&[0x00, 2]);
            block.extend_from_slice(b"te");
            block.push(8);
            block.extend_from_slice(b"trailers");
        }
        let flags = END_HEADERS | if end { END_STREAM } else { 0 };
        frame(HEADERS, flags, stream, &block, out);
    }

    pub fn rst(stream: u32, code: u32, out: &mut Vec<u8>) {
        frame(RST_STREAM, 0, stream, &code.to_be_bytes(), out);
    }

    /// Writes `bytes`; false once the server has closed the connection.
    pub async fn send(&self, bytes: &[u8]) -> bool {
        self.write.lock().await.write_all(bytes).await.is_ok()
    }

    /// Sends a PING and waits until it is acked (the server has read every frame before it)
    /// or the connection is closed; true if acked.
    pub async fn ping_acked(&self, payload: u64) -> bool {
        let mut ping = Vec::new();
        frame(PING, 0, 0, &payload.to_be_bytes(), &mut ping);
        if !self.send(&ping).await {
            return false;
        }
        let mut closed = self.closed.clone();
        loop {
            if self.seen.ping_ack.load(Ordering::SeqCst) == payload {
                return true;
            }
            if *closed.borrow() {
                return false;
            }
            // Woken by the close; the ack is polled at a short period in between.
            let _ =
                tokio::time::timeout(std::time::Duration::from_millis(10), closed.changed()).await;
        }
    }

    /// Waits until the server closes the connection.
    pub async fn closed(&self) {
        let mut closed = self.closed.clone();
        let _ = closed.wait_for(|c| *c).await;
    }

    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }
}
