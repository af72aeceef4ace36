//! The one error type of the shard server, with constructors per kind of failure and exactly
//! one conversion each to a gRPC status and to an HTTP response.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or breaks a limit; nothing was changed.
    #[error("{message}")]
    InvalidArgument { message: String },
    #[error("{message}")]
    NotFound { message: String },
    /// Too much work in flight: the client should back off and retry.
    #[error("{message}")]
    ResourceExhausted { message: String },
    #[error("{message}")]
    PayloadTooLarge { message: String },
    /// The shard is starting or stopping.
    #[error("{message}")]
    Unavailable { message: String },
    /// The caller's deadline passed before the answer was complete.
    #[error("{message}")]
    DeadlineExceeded { message: String },
    #[error("storage {operation} failed: {source}")]
    Storage {
        operation: &'static str,
        #[source]
        source: sled::Error,
    },
    #[error("vector index {operation} failed: {message}")]
    Index {
        operation: &'static str,
        message: String,
    },
    #[error("internal error: {message}")]
    Internal { message: String },
}

impl Error {
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            message: message.into(),
        }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Error::NotFound {
            message: message.into(),
        }
    }
    pub fn exhausted(message: impl Into<String>) -> Self {
        Error::ResourceExhausted {
            message: message.into(),
        }
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        Error::PayloadTooLarge {
            message: message.into(),
        }
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Error::Unavailable {
            message: message.into(),
        }
    }
    pub fn deadline(message: impl Into<String>) -> Self {
        Error::DeadlineExceeded {
            message: message.into(),
        }
    }
    pub fn storage(operation: &'static str, source: sled::Error) -> Self {
        Error::Storage { operation, source }
    }
    pub fn index(operation: &'static str, message: impl ToString) -> Self {
        Error::Index {
            operation,
            message: message.to_string(),
        }
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Error::Internal {
            message: message.into(),
        }
    }

    /// The gRPC-style code name, used in HTTP error bodies and as the `code` metric label.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidArgument { .. } => "INVALID_ARGUMENT",
            Error::NotFound { .. } => "NOT_FOUND",
            Error::ResourceExhausted { .. } => "RESOURCE_EXHAUSTED",
            Error::PayloadTooLarge { .. } => "INVALID_ARGUMENT",
            Error::Unavailable { .. } => "UNAVAILABLE",
            Error::DeadlineExceeded { .. } => "DEADLINE_EXCEEDED",
            Error::Storage { .. } | Error::Index { .. } | Error::Internal { .. } => "INTERNAL",
        }
    }

    fn http_status(&self) -> StatusCode {
        match self {
            Error::InvalidArgument { .. } => StatusCode::BAD_REQUEST,
            Error::NotFound { .. } => StatusCode::NOT_FOUND,
            Error::ResourceExhausted { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::DeadlineExceeded { .. } => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        match e {
            Error::InvalidArgument { .. } | Error::PayloadTooLarge { .. } => {
                tonic::Status::invalid_argument(message)
            }
            Error::NotFound { .. } => tonic::Status::not_found(message),
            Error::ResourceExhausted { .. } => tonic::Status::resource_exhausted(message),
            Error::Unavailable { .. } => tonic::Status::unavailable(message),
            Error::DeadlineExceeded { .. } => tonic::Status::deadline_exceeded(message),
            _ => tonic::Status::internal(message),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code(), "message": self.to_string()}});
        (self.http_status(), axum::Json(body)).into_response()
    }
}
