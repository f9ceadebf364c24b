//! Calls sent exactly as given: a codec that writes and reads message bytes untouched, so that
//! garbage bytes, oversize messages, unknown methods and stray headers reach the server as a
//! client would send them.

use prost::bytes::{Buf, BufMut};
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::http::uri::PathAndQuery,
    metadata::MetadataValue,
    transport::Channel,
};

/// A codec that sends and reads message bytes exactly as given.
#[derive(Clone, Copy, Default)]
pub(crate) struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// Calls `path` on `channel` with `messages` as the request stream and `headers` as its
/// metadata, exactly as given, and reads the answer to its end: how many messages it had, or
/// its status.
pub(crate) async fn call_raw(
    channel: Channel,
    path: &str,
    messages: Vec<Vec<u8>>,
    headers: &[(&'static str, &'static str)],
) -> Result<usize, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut request = tonic::Request::new(tokio_stream::iter(messages));
    for (name, value) in headers {
        request
            .metadata_mut()
            .insert(*name, MetadataValue::from_static(value));
    }
    let path = PathAndQuery::try_from(path).map_err(|e| Status::internal(e.to_string()))?;
    let mut answer = grpc.streaming(request, path, Raw).await?.into_inner();
    let mut messages = 0;
    while answer.message().await?.is_some() {
        messages += 1;
    }
    Ok(messages)
}
