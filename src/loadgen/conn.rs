//! A worker's connection, HTTP or gRPC, and opening one per worker. Above the two clients and
//! below the driver: [`super::http`] and [`super::grpc`] know nothing of the workers using them.

use std::sync::Arc;

use super::config::{Plan, Protocol};
use super::grpc::{self, GrpcConn};
use super::http::{self, HttpConn};
use super::stats::ErrorCode;

/// One worker's connection to the server.
pub enum Conn {
    Http(HttpConn),
    Grpc(GrpcConn),
}

impl Conn {
    pub(super) async fn call(&mut self) -> Result<(), ErrorCode> {
        match self {
            Conn::Http(c) => c.call().await,
            Conn::Grpc(c) => c.call().await,
        }
    }
}

/// One [`Conn`] per worker, worker `i` on connection `i % connections`.
pub async fn connect(plan: &Plan) -> anyhow::Result<Vec<Conn>> {
    let workers = plan.load.workers();
    Ok(match plan.protocol {
        Protocol::HttpJson | Protocol::HttpBinary => {
            let target = http::setup(plan).await?;
            let slots = HttpConn::open_slots(plan).await?;
            (0..workers)
                .map(|i| {
                    Conn::Http(HttpConn::new(
                        target.clone(),
                        slots[i % slots.len()].clone(),
                    ))
                })
                .collect()
        }
        Protocol::Grpc => {
            let request = grpc::setup(plan).await?;
            let channels = GrpcConn::open_channels(plan).await?;
            (0..workers)
                .map(|i| {
                    let ch = channels[i % channels.len()].clone();
                    Conn::Grpc(GrpcConn::new(ch, Arc::clone(&request)))
                })
                .collect()
        }
    })
}
