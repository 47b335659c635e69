//! The Open Inference Protocol's protobuf messages and gRPC stubs (`inference.proto`), generated
//! at build time. A module of its own so the load generator, a client, needs no server transport.

#![allow(clippy::all, clippy::pedantic)]

tonic::include_proto!("inference");
