//! What travels on the wire: the generated gRPC and document types of `proto/rxgate/v1`
//! (`proto`), the strict decode of the signed document types (`documents`) and their protobuf
//! JSON mapping (`json`). Knows nothing of the service layer or the store.

pub mod documents;
pub mod json;
pub mod proto;
