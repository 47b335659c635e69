//! gRPC messages sent already encoded, and the hostile ones of issue 13 built byte by byte: a
//! hostile message built with prost would cost the client the gigabytes it is meant to cost the
//! server. Shared by the tests (`common::raw_grpc`) and `benches/memory.rs`, which includes this
//! file by path, so it names nothing of the test harness.
#![allow(dead_code)]

use std::marker::PhantomData;

use bytes::{BufMut, Bytes};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// Sends `Bytes` as the message as is; decodes the answer as `T`.
pub struct RawCodec<T>(PhantomData<T>);

impl<T> Default for RawCodec<T> {
    fn default() -> Self {
        RawCodec(PhantomData)
    }
}

pub struct RawEncoder;
pub struct ProstDecoder<T>(PhantomData<T>);

impl<T: prost::Message + Default + Send + 'static> Codec for RawCodec<T> {
    type Encode = Bytes;
    type Decode = T;
    type Encoder = RawEncoder;
    type Decoder = ProstDecoder<T>;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> ProstDecoder<T> {
        ProstDecoder(PhantomData)
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl<T: prost::Message + Default> Decoder for ProstDecoder<T> {
    type Item = T;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<T>, Status> {
        T::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

/// One unary call of `path` on `channel` with `msg` as the encoded message.
pub async fn unary<T: prost::Message + Default + Send + 'static>(
    channel: tonic::transport::Channel,
    path: &'static str,
    msg: tonic::Request<Bytes>,
) -> Result<T, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let path = http::uri::PathAndQuery::from_static(path);
    grpc.unary(msg, path, RawCodec::<T>::default())
        .await
        .map(tonic::Response::into_inner)
}

/// A `ModelInferRequest` for `mlp` followed by `entry` (an encoded field) repeated up to `size`
/// bytes: `[0x2a, 0]` empty inputs, `[0x32, 0]` outputs, `[0x3a, 0]` raw contents.
pub fn repeated_entries(entry: &[u8], size: usize) -> Bytes {
    let mut msg = vec![0x0a, 3, b'm', b'l', b'p'];
    while msg.len() < size {
        msg.extend_from_slice(entry);
    }
    msg.into()
}

/// A `ModelInferRequest` for `mlp` with one BYTES input of `size / 2` empty strings, its shape
/// saying so.
pub fn empty_bytes_contents(size: usize) -> Bytes {
    let strings = size / 2;
    let mut input = vec![0x0a, 5];
    input.extend_from_slice(b"input");
    input.extend_from_slice(&[0x12, 5]);
    input.extend_from_slice(b"BYTES");
    let mut shape = Vec::new();
    prost::encoding::encode_varint(strings as u64, &mut shape);
    input.push(0x1a);
    prost::encoding::encode_varint(shape.len() as u64, &mut input);
    input.extend_from_slice(&shape);
    input.push(0x2a);
    prost::encoding::encode_varint((strings * 2) as u64, &mut input);
    input.extend(std::iter::repeat_n([0x42u8, 0], strings).flatten());
    let mut msg = vec![0x0a, 3, b'm', b'l', b'p', 0x2a];
    prost::encoding::encode_varint(input.len() as u64, &mut msg);
    msg.extend_from_slice(&input);
    msg.into()
}
