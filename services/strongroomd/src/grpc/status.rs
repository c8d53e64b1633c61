//! The one place where core errors become gRPC statuses.
//!
//! Internal failures stay internal: the caller gets a generic message with the
//! request id, and the full chain goes to the server log (never with secret
//! material: no core error carries any).

use strongroom_core::Error;
use tonic::{Code, Status};

/// Converts a core error into the status the caller sees.
pub fn to_status(error: Error, request_id: &str) -> Status {
    match error {
        Error::InvalidArgument { field, message } => {
            Status::invalid_argument(format!("{field}: {message}"))
        }
        Error::NotFound(what) => Status::not_found(format!("{what} not found")),
        Error::AlreadyExists(what) => Status::already_exists(format!("{what} already exists")),
        Error::PermissionDenied(why) => Status::permission_denied(why.into_owned()),
        Error::Unauthenticated(why) => Status::unauthenticated(why.into_owned()),
        Error::FailedPrecondition(why) => Status::failed_precondition(why.to_string()),
        Error::ResourceExhausted(why) => Status::resource_exhausted(why.into_owned()),
        Error::Unavailable(why) => Status::unavailable(why.into_owned()),
        Error::Unimplemented(what) => Status::unimplemented(what.into_owned()),
        Error::Internal(detail) => {
            tracing::error!(request_id, error = %detail, "internal error");
            Status::new(
                Code::Internal,
                format!("internal error (request id {request_id})"),
            )
        }
    }
}

/// The status of a call refused by a rate limit: RESOURCE_EXHAUSTED,
/// saying (in the message, and as a `google.rpc.RetryInfo` in the status
/// details) how long to wait.
pub fn rate_limited(refusal: &strongroom_engine::abuse::Refusal) -> Status {
    use tonic_types::{ErrorDetails, StatusExt};
    // Rounded up, so a client that waits as told is not refused again.
    let ms = refusal.retry_after.as_millis() + 1;
    let wait = std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX));
    Status::with_error_details(
        Code::ResourceExhausted,
        format!("{}; retry after {ms} ms", refusal.limit.explain()),
        ErrorDetails::with_retry_info(Some(wait)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        let s = to_status(Error::invalid("name", "must not be empty"), "r1");
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "name: must not be empty");
        let s = to_status(Error::internal("db exploded: table x"), "r2");
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("exploded"));
        assert!(s.message().contains("r2"));
    }
}
