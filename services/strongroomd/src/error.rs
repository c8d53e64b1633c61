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
        Error::FailedPrecondition(why) => Status::failed_precondition(why.into_owned()),
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
