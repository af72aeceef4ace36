//! The one error type of vecshard, with constructors per kind of failure. Transport-free: the
//! server's `api::status` maps each kind to exactly one gRPC status and one HTTP status, with
//! exhaustive matches, so a new kind cannot silently become INTERNAL.

// A new error kind must be mapped by hand in every match, never swept into a `_` arm.
#![deny(clippy::wildcard_enum_match_arm)]

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
    /// The request was routed with a shard map other than the one this shard's partition
    /// ownership belongs to (a rebalancing step happened): reload the map and retry.
    #[error("{message}")]
    StaleMap { message: String },
    /// The caller's deadline passed before the answer was complete.
    #[error("{message}")]
    DeadlineExceeded { message: String },
    /// The storage engine failed; the engine's own error is kept as the source.
    #[error("storage {operation} failed: {source}")]
    Storage {
        operation: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
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
    pub fn stale_map(message: impl Into<String>) -> Self {
        Error::StaleMap {
            message: message.into(),
        }
    }
    pub fn deadline(message: impl Into<String>) -> Self {
        Error::DeadlineExceeded {
            message: message.into(),
        }
    }
    pub fn storage(
        operation: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::Storage {
            operation,
            source: source.into(),
        }
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
            Error::StaleMap { .. } => "FAILED_PRECONDITION",
            Error::Storage { .. } | Error::Index { .. } | Error::Internal { .. } => "INTERNAL",
        }
    }
}
