//! Calls sent exactly as given: a codec that writes and reads message bytes untouched, so that
//! garbage bytes, oversize messages, unknown methods and stray headers reach the server as a
//! client would send them; and an HTTP/2 connection of its own, whose frames go out as the test
//! sends them.

use std::sync::Arc;

use prost::bytes::{Buf, BufMut, Bytes};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::http::{self, uri::PathAndQuery},
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

/// An HTTP/2 connection to the server at `addr` (`https://127.0.0.1:PORT`) as the dev client
/// `name`, over mutual TLS, driven by a task of its own. Unlike tonic's client, which sends a
/// call's body and begins new calls from tasks of their own, it sends frames in the order the
/// test hands them over, and says what ended a call (an `h2::Error`, a GOAWAY's reason).
pub(crate) async fn h2_connection(addr: &str, name: &str) -> h2::client::SendRequest<Bytes> {
    let files = super::dev_pki().client(name);
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&files.ca).unwrap())
        .unwrap();
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&files.key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let host = addr.trim_start_matches("https://");
    let tcp = tokio::net::TcpStream::connect(host).await.unwrap();
    let server = ServerName::try_from(host.rsplit_once(':').unwrap().0.to_owned()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server, tcp)
        .await
        .unwrap();
    let (client, connection) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// The head of a gRPC call of `path` to the server at `addr`, for [`h2_connection`].
pub(crate) fn grpc_head(addr: &str, path: &str) -> http::Request<()> {
    http::Request::post(format!("{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}
