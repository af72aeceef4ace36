//! The operator's one error type. Variants name the operation that failed and carry the cause;
//! `metric_label` gives the `reason` label of `vecshard_operator_reconcile_errors_total`.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("applying {kind} {name}: {source}")]
    Apply {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("reading {kind} {name}: {source}")]
    Get {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("updating the status of {kind} {name}: {source}")]
    Status {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("object has no {0}")]
    MissingField(&'static str),
    #[error("issuing the collection's certificate: {0}")]
    Certificate(String),
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Apply { .. } => "apply",
            Error::Get { .. } => "get",
            Error::Status { .. } => "status",
            Error::MissingField(_) => "missing_field",
            Error::Certificate(_) => "certificate",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
