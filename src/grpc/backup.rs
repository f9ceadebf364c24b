//! The Backup stream: the service's chunks of the dump as protobuf messages, an error as its
//! status.

use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use super::{paged::PagedStream, to_status};
use crate::{service::BackupChunks, wire::proto::v1 as pb};

/// The chunks as the stream the client reads.
pub(super) fn stream(chunks: BackupChunks) -> PagedStream<pb::BackupChunk> {
    Box::pin(ReceiverStream::new(chunks).map(|chunk| {
        chunk
            .map(|data| pb::BackupChunk { data })
            .map_err(to_status)
    }))
}
