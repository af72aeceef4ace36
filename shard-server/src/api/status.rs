//! How the one domain error travels on each transport: exactly one gRPC code and one HTTP
//! status per kind. The matches are exhaustive (no `_` arm): a new kind of error does not
//! compile until it is given its codes here, instead of silently becoming INTERNAL.

// A new error kind must be mapped by hand in every match, never swept into a `_` arm.
#![deny(clippy::wildcard_enum_match_arm)]

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use vecshard_core::error::Error;

/// The gRPC status of an error; the message is the error's full text.
pub fn grpc_status(e: Error) -> tonic::Status {
    let message = e.to_string();
    match e {
        Error::InvalidArgument { .. } | Error::PayloadTooLarge { .. } => {
            tonic::Status::invalid_argument(message)
        }
        Error::NotFound { .. } => tonic::Status::not_found(message),
        Error::ResourceExhausted { .. } => tonic::Status::resource_exhausted(message),
        Error::Unavailable { .. } => tonic::Status::unavailable(message),
        Error::DeadlineExceeded { .. } => tonic::Status::deadline_exceeded(message),
        Error::StaleMap { .. } => tonic::Status::failed_precondition(message),
        Error::Storage { .. } | Error::Index { .. } | Error::Internal { .. } => {
            tonic::Status::internal(message)
        }
    }
}

fn http_status(e: &Error) -> StatusCode {
    match e {
        Error::InvalidArgument { .. } => StatusCode::BAD_REQUEST,
        Error::NotFound { .. } => StatusCode::NOT_FOUND,
        Error::ResourceExhausted { .. } => StatusCode::TOO_MANY_REQUESTS,
        Error::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        Error::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        Error::DeadlineExceeded { .. } => StatusCode::GATEWAY_TIMEOUT,
        Error::StaleMap { .. } => StatusCode::CONFLICT,
        Error::Storage { .. } | Error::Index { .. } | Error::Internal { .. } => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

/// The HTTP answer to an error: its status, Qdrant's `{"status": {"error"}}` (what its
/// clients show) and vecshard's `{"error": {"code", "message"}}`.
pub fn http_error(e: Error) -> Response {
    let message = e.to_string();
    let body = serde_json::json!({
        "status": {"error": message},
        "time": 0.0,
        "error": {"code": e.code(), "message": message},
    });
    (http_status(&e), axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_keeps_its_code_on_both_transports() {
        let cases = [
            (Error::invalid("x"), tonic::Code::InvalidArgument, 400),
            (Error::not_found("x"), tonic::Code::NotFound, 404),
            (Error::exhausted("x"), tonic::Code::ResourceExhausted, 429),
            (Error::too_large("x"), tonic::Code::InvalidArgument, 413),
            (Error::unavailable("x"), tonic::Code::Unavailable, 503),
            (Error::stale_map("x"), tonic::Code::FailedPrecondition, 409),
            (Error::deadline("x"), tonic::Code::DeadlineExceeded, 504),
            (Error::index("add", "x"), tonic::Code::Internal, 500),
            (Error::internal("x"), tonic::Code::Internal, 500),
            (
                Error::storage("flush", std::io::Error::other("disk gone")),
                tonic::Code::Internal,
                500,
            ),
        ];
        for (e, code, http) in cases {
            assert_eq!(http_status(&e).as_u16(), http, "{e}");
            assert_eq!(grpc_status(e).code(), code);
        }
    }

    #[test]
    fn storage_errors_keep_their_cause() {
        let e = Error::storage("flush", std::io::Error::other("disk gone"));
        let source = std::error::Error::source(&e).expect("the engine's error is kept");
        assert_eq!(source.to_string(), "disk gone");
        assert_eq!(e.to_string(), "storage flush failed: disk gone");
    }
}
