//! A gRPC `ModelInfer` call with an already encoded message (the codec is `raw_codec`).

use bytes::Bytes;
use tonic::Status;

use super::raw_codec::unary;
use super::{pb, TestServer};

pub async fn send_raw_grpc(server: &TestServer, msg: Bytes) -> Status {
    let channel = tonic::transport::Channel::from_shared(server.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let path = "/inference.GRPCInferenceService/ModelInfer";
    unary::<pb::ModelInferResponse>(channel, path, tonic::Request::new(msg))
        .await
        .expect_err("the hostile message is refused")
}
