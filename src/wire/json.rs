//! The protobuf JSON mapping (proto3 canonical JSON: camelCase names, enums by name, bytes in
//! base64) of the contract's messages, driven by the compiled descriptor set.

use std::sync::OnceLock;

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};

use crate::wire::proto::DESCRIPTOR_SET;

/// Why a JSON document could not be mapped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown message type {0}")]
    UnknownType(String),
    #[error("invalid JSON for {message}: {detail}")]
    Json { message: String, detail: String },
    #[error("protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
}

fn descriptor(full_name: &str) -> Result<MessageDescriptor, Error> {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(DESCRIPTOR_SET).expect("the compiled descriptor set decodes")
    })
    .get_message_by_name(full_name)
    .ok_or_else(|| Error::UnknownType(full_name.to_owned()))
}

/// Parses JSON into the message `full_name` (e.g. `rxgate.v1.Prescription`). Unknown JSON fields
/// are errors.
pub fn from_json<M: Message + Default>(full_name: &str, json: &str) -> Result<M, Error> {
    let desc = descriptor(full_name)?;
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let dynamic = DynamicMessage::deserialize(desc, &mut deserializer)
        .and_then(|m| deserializer.end().map(|()| m))
        .map_err(|e| Error::Json {
            message: full_name.to_owned(),
            detail: e.to_string(),
        })?;
    Ok(M::decode(dynamic.encode_to_vec().as_slice())?)
}

/// Renders a message as pretty JSON.
pub fn to_json<M: Message>(full_name: &str, message: &M) -> Result<String, Error> {
    let dynamic =
        DynamicMessage::decode(descriptor(full_name)?, message.encode_to_vec().as_slice())?;
    serde_json::to_string_pretty(&dynamic).map_err(|e| Error::Json {
        message: full_name.to_owned(),
        detail: e.to_string(),
    })
}
