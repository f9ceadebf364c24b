//! A request body that is not a valid protobuf encoding of the request message is the client's
//! error: this rewrites tonic's answer to it (INTERNAL, as gRPC's status-code guide puts parse
//! failures) into INVALID_ARGUMENT with a `google.rpc.BadRequest` naming the request. Only
//! the answer of the prost codec's decode failure is rewritten; every other INTERNAL stays.
//! Depends on tonic's status headers only: no service, no store.

use tonic::{
    Code, Status,
    codegen::http::{HeaderMap, Response},
};
use tonic_types::{ErrorDetails, StatusExt};

/// How tonic-prost's decode error begins (prost's `DecodeError` display, which the codec wraps
/// in `Status::internal`).
const PROST_DECODE_ERROR: &str = "failed to decode Protobuf message";

/// The field a rewritten answer names: the request message as a whole.
pub(super) const UNDECODABLE_FIELD: &str = "request";

/// Rewrites a trailers-only INTERNAL answer to an undecodable request (the unary and
/// server-streaming handlers decode their one request before running, so the codec's error is
/// the whole answer, in the response headers). Answers of streaming requests, decoded inside the
/// handler, are the handler's to map.
pub fn undecodable_is_invalid_argument<B>(mut response: Response<B>) -> Response<B> {
    let headers = response.headers_mut();
    let Some(status) = undecodable(headers) else {
        return response;
    };
    let mut details = ErrorDetails::new();
    details.add_bad_request_violation(
        UNDECODABLE_FIELD,
        "a valid protobuf encoding of the request message",
    );
    let message = format!("{UNDECODABLE_FIELD}: {}", status.message());
    let rewritten = Status::with_error_details(Code::InvalidArgument, message, details);
    for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        headers.remove(name);
    }
    if rewritten.add_header(headers).is_err() {
        // A message that cannot be a header value: keep the code right, drop the detail.
        headers.insert("grpc-status", (Code::InvalidArgument as i32).into());
    }
    response
}

/// The status of a trailers-only answer that reports the codec's decode failure.
fn undecodable(headers: &HeaderMap) -> Option<Status> {
    let status = Status::from_header_map(headers)?;
    (status.code() == Code::Internal && status.message().starts_with(PROST_DECODE_ERROR))
        .then_some(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: Status) -> Response<()> {
        status.into_http()
    }

    fn status_of(response: &Response<()>) -> Status {
        Status::from_header_map(response.headers()).expect("a status")
    }

    #[test]
    fn a_decode_failure_names_the_request() {
        let decode = Status::internal(format!("{PROST_DECODE_ERROR}: invalid varint"));
        let status = status_of(&undecodable_is_invalid_argument(answer(decode)));
        assert_eq!(status.code(), Code::InvalidArgument);
        let violations = status.get_details_bad_request().unwrap().field_violations;
        assert_eq!(violations[0].field, UNDECODABLE_FIELD);
        assert!(status.message().contains("invalid varint"), "{status:?}");
    }

    #[test]
    fn other_answers_are_left_alone() {
        for kept in [
            Status::internal("internal error"),
            Status::internal("Unexpected EOF decoding stream."),
            Status::not_found(PROST_DECODE_ERROR),
        ] {
            let status = status_of(&undecodable_is_invalid_argument(answer(kept.clone())));
            assert_eq!(
                (status.code(), status.message()),
                (kept.code(), kept.message())
            );
        }
        let ok = Response::new(());
        assert!(
            undecodable_is_invalid_argument(ok)
                .headers()
                .get("grpc-status")
                .is_none()
        );
    }
}
