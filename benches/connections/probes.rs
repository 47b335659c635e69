//! The probe loops: health over HTTP and gRPC, on fresh and kept-alive connections.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ferroserve::proto::inference as pb;
use pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Latencies of one probe loop; a probe that fails or takes over 5 s counts as failed.
#[derive(Default)]
pub struct Probes {
    ms: Vec<f64>,
    failed: usize,
}

impl Probes {
    fn record<T, E>(
        &mut self,
        started: Instant,
        r: Result<Result<T, E>, tokio::time::error::Elapsed>,
    ) -> bool {
        let ok = matches!(r, Ok(Ok(_)));
        if ok {
            self.ms.push(started.elapsed().as_secs_f64() * 1e3);
        } else {
            self.failed += 1;
        }
        ok
    }

    pub fn row(&mut self, limit: usize, name: &str) -> String {
        self.ms.sort_by(f64::total_cmp);
        let q = |p: f64| {
            let i = ((self.ms.len() as f64 - 1.0) * p).round() as usize;
            self.ms.get(i).copied().unwrap_or(f64::NAN)
        };
        format!(
            "| {limit} | {name} | {} | {} | {:.2} | {:.2} | {:.2} |",
            self.ms.len(),
            self.failed,
            q(0.5),
            q(0.99),
            q(1.0)
        )
    }
}

const PROBE_LIMIT: Duration = Duration::from_secs(5);
const PROBE_GAP: Duration = Duration::from_millis(10);
const LIVE: &[u8] = b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n";

pub async fn http_fresh(addr: SocketAddr, until: Instant) -> Probes {
    let mut p = Probes::default();
    while Instant::now() < until {
        let t = Instant::now();
        let r = tokio::time::timeout(PROBE_LIMIT, async {
            let mut tcp = TcpStream::connect(addr).await?;
            tcp.write_all(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .await?;
            let mut got = Vec::new();
            tcp.read_to_end(&mut got).await?;
            ok_head(&got)
        })
        .await;
        p.record(t, r);
        tokio::time::sleep(PROBE_GAP).await;
    }
    p
}

pub fn ok_head(got: &[u8]) -> std::io::Result<()> {
    match got.starts_with(b"HTTP/1.1 200") {
        true => Ok(()),
        false => Err(std::io::Error::other("not 200")),
    }
}

/// The health answer has a body of its Content-Length; reads the head and that many bytes.
pub async fn http_kept(addr: SocketAddr, until: Instant) -> Probes {
    let mut p = Probes::default();
    let mut tcp: Option<TcpStream> = None;
    while Instant::now() < until {
        let t = Instant::now();
        let r = tokio::time::timeout(PROBE_LIMIT, async {
            if tcp.is_none() {
                tcp = Some(TcpStream::connect(addr).await?);
            }
            let s = tcp
                .as_mut()
                .ok_or_else(|| std::io::Error::other("no stream"))?;
            s.write_all(LIVE).await?;
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            loop {
                let n = s.read(&mut buf).await?;
                if n == 0 {
                    return Err(std::io::Error::other("closed"));
                }
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got);
                if let Some(end) = text.find("\r\n\r\n") {
                    let len: usize = text[..end]
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: ")?.trim().parse().ok())
                        .unwrap_or(0);
                    if got.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            ok_head(&got)
        })
        .await;
        if !p.record(t, r) {
            tcp = None;
        }
        tokio::time::sleep(PROBE_GAP).await;
    }
    p
}

pub async fn grpc_probes(addr: SocketAddr, until: Instant, fresh: bool) -> Probes {
    let mut p = Probes::default();
    let mut kept: Option<GrpcInferenceServiceClient<tonic::transport::Channel>> = None;
    while Instant::now() < until {
        let t = Instant::now();
        let r = tokio::time::timeout(PROBE_LIMIT, async {
            if fresh || kept.is_none() {
                kept = Some(GrpcInferenceServiceClient::connect(format!("http://{addr}")).await?);
            }
            let client = kept.as_mut().ok_or("no client")?;
            let live = client.server_live(pb::ServerLiveRequest {}).await?;
            match live.into_inner().live {
                true => Ok::<(), Box<dyn std::error::Error>>(()),
                false => Err("not live".into()),
            }
        })
        .await;
        if !p.record(t, r) {
            kept = None;
        }
        tokio::time::sleep(PROBE_GAP).await;
    }
    p
}
