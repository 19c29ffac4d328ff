//! The one domain error type and its one mapping to a gRPC `Status`.
//!
//! Every failure a client can see carries an `ErrorInfo` with a stable `reason`
//! (domain `tenantry`); bad input additionally carries `BadRequest` field violations.
//! Internal errors are logged with their cause and reach the client as a generic message.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

pub use crate::domain::text::{MAX_QUOTED_CHARS, quoted, truncate};

/// `ErrorInfo.domain` of every error.
pub const ERROR_DOMAIN: &str = "tenantry";

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field, e.g. `organization.name`.
    pub field: String,
    /// What is wrong with it, lowercase, no trailing period.
    pub description: String,
}

/// A failure of a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; every bad field is listed.
    #[error("invalid argument: {}", summary(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// The request is malformed in a way that has its own stable reason (e.g.
    /// `INVALID_EVENT`); every bad field is listed.
    #[error("invalid argument: {}", summary(.violations))]
    InvalidWithReason {
        /// Stable reason.
        reason: &'static str,
        /// The bad fields.
        violations: Vec<FieldViolation>,
    },
    /// A rule of the domain refused the request.
    #[error("{message}")]
    Rejected {
        /// gRPC code.
        code: Code,
        /// Stable reason, e.g. `SLUG_TAKEN`.
        reason: &'static str,
        /// Human-readable message.
        message: String,
        /// Extra facts, e.g. the agent count.
        metadata: Vec<(&'static str, String)>,
    },
    /// No or bad credentials.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// Credentials fine, action or tenant not allowed.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A database failure.
    #[error("database error: {0}")]
    Database(#[from] sea_orm::DbErr),
    /// Any other internal failure.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Most field violations a reply lists; the rest are counted in one last entry.
pub const MAX_VIOLATIONS: usize = 50;
/// Most characters of a violation's description (or field) a reply carries.
pub const MAX_DESCRIPTION_CHARS: usize = 300;
/// Most characters of a reply's message.
pub const MAX_MESSAGE_CHARS: usize = 1_000;
/// At most `MAX_VIOLATIONS` violations with bounded texts, plus an "… and N more" entry
/// when some were left out: replies must fit in HTTP/2 trailers whatever the input.
fn bounded(violations: Vec<FieldViolation>) -> Vec<FieldViolation> {
    let total = violations.len();
    let mut kept: Vec<FieldViolation> = violations
        .into_iter()
        .take(MAX_VIOLATIONS)
        .map(|v| FieldViolation {
            field: truncate(&v.field, MAX_DESCRIPTION_CHARS),
            description: truncate(&v.description, MAX_DESCRIPTION_CHARS),
        })
        .collect();
    if total > MAX_VIOLATIONS {
        kept.push(FieldViolation {
            field: String::new(),
            description: format!("… and {} more", total - MAX_VIOLATIONS),
        });
    }
    kept
}

/// The violations as one line, bounded like a reply's message.
fn summary(violations: &[FieldViolation]) -> String {
    let shown = violations.len().min(MAX_VIOLATIONS);
    let mut line = violations[..shown]
        .iter()
        .map(|v| {
            let field = truncate(&v.field, MAX_DESCRIPTION_CHARS);
            format!(
                "{field}: {}",
                truncate(&v.description, MAX_DESCRIPTION_CHARS)
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    if violations.len() > shown {
        line.push_str(&format!("; … and {} more", violations.len() - shown));
    }
    truncate(&line, MAX_MESSAGE_CHARS)
}

/// Result with the domain error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// One invalid field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Error::InvalidArgument(vec![FieldViolation {
            field: field.into(),
            description: description.into(),
        }])
    }

    /// A refusal with a code and a stable reason.
    pub fn rejected(code: Code, reason: &'static str, message: impl Into<String>) -> Self {
        Error::Rejected {
            code,
            reason,
            message: message.into(),
            metadata: Vec::new(),
        }
    }

    /// `NOT_FOUND` for a resource the caller may see.
    pub fn not_found(what: &str, id: &str) -> Self {
        Self::rejected(
            Code::NotFound,
            "NOT_FOUND",
            format!("{what} {id} not found"),
        )
    }

    /// `ABORTED`: the etag does not match the stored version.
    pub fn stale_etag() -> Self {
        Self::rejected(
            Code::Aborted,
            "ETAG_MISMATCH",
            "the resource changed since it was read; read it again and retry",
        )
    }

    /// `FAILED_PRECONDITION` with a reason.
    pub fn precondition(reason: &'static str, message: impl Into<String>) -> Self {
        Self::rejected(Code::FailedPrecondition, reason, message)
    }

    /// Adds a fact to a refusal's `ErrorInfo` metadata.
    pub fn with(mut self, key: &'static str, value: impl ToString) -> Self {
        if let Error::Rejected { metadata, .. } = &mut self {
            metadata.push((key, value.to_string()));
        }
        self
    }

    /// The stable reason of this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::InvalidArgument(_) => "INVALID_ARGUMENT",
            Error::InvalidWithReason { reason, .. } => reason,
            Error::Rejected { reason, .. } => reason,
            Error::Unauthenticated(_) => "UNAUTHENTICATED",
            Error::PermissionDenied(_) => "PERMISSION_DENIED",
            Error::Database(_) | Error::Internal(_) => "INTERNAL",
        }
    }

    /// Whether the database refused a write because a unique key exists.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, Error::Database(e) if is_unique_violation(e))
    }
}

/// The code the database gave a failed statement or commit: PostgreSQL's SQLSTATE
/// (`40P01`, `23505`, …), SQLite's extended result code as a number (`5` for
/// SQLITE_BUSY). `None` for errors that did not come from the database (a pool timeout,
/// a dropped connection, a decoding error). Matching codes rather than message text
/// keeps working whatever the server's `lc_messages` language.
pub fn db_code(err: &sea_orm::DbErr) -> Option<String> {
    use sea_orm::{DbErr, RuntimeErr, sqlx};
    match err {
        DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e))
        | DbErr::Conn(RuntimeErr::SqlxError(e)) => match &**e {
            sqlx::Error::Database(e) => e.code().map(|code| code.into_owned()),
            _ => None,
        },
        _ => None,
    }
}

/// Whether a database error is a unique-constraint violation.
pub fn is_unique_violation(err: &sea_orm::DbErr) -> bool {
    matches!(
        err.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    )
}

impl From<Error> for Status {
    fn from(err: Error) -> Status {
        let reason = err.reason();
        let (code, message, metadata, violations) = match err {
            Error::InvalidArgument(v) | Error::InvalidWithReason { violations: v, .. } => {
                let message = format!("invalid argument: {}", summary(&v));
                (Code::InvalidArgument, message, Vec::new(), bounded(v))
            }
            Error::Rejected {
                code,
                message,
                metadata,
                ..
            } => (code, message, metadata, Vec::new()),
            Error::Unauthenticated(m) => (Code::Unauthenticated, m, Vec::new(), Vec::new()),
            Error::PermissionDenied(m) => (Code::PermissionDenied, m, Vec::new(), Vec::new()),
            Error::Database(e) => {
                tracing::error!(error = %e, "database error");
                if matches!(e, sea_orm::DbErr::ConnectionAcquire(_)) {
                    return Status::unavailable("the database is unavailable; retry later");
                }
                (
                    Code::Internal,
                    "internal error".to_owned(),
                    Vec::new(),
                    Vec::new(),
                )
            }
            Error::Internal(e) => {
                tracing::error!(error = %e, "internal error");
                (
                    Code::Internal,
                    "internal error".to_owned(),
                    Vec::new(),
                    Vec::new(),
                )
            }
        };
        let message = truncate(&message, MAX_MESSAGE_CHARS);
        let metadata: HashMap<String, String> = metadata
            .into_iter()
            .map(|(k, v)| (k.to_owned(), truncate(&v, MAX_DESCRIPTION_CHARS)))
            .collect();
        let mut details = ErrorDetails::new();
        details.set_error_info(reason, ERROR_DOMAIN, metadata);
        for v in violations {
            details.add_bad_request_violation(v.field, v.description);
        }
        Status::with_error_details(code, message, details)
    }
}

/// Collects field violations so a request reports every bad field at once.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    /// An empty collection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a violation.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation {
            field: field.into(),
            description: description.into(),
        });
    }

    /// Runs a parser and records its failure under `field`; returns the value if valid.
    pub fn check<T, E: std::fmt::Display>(
        &mut self,
        field: &str,
        parsed: std::result::Result<T, E>,
    ) -> Option<T> {
        match parsed {
            Ok(v) => Some(v),
            Err(e) => {
                self.add(field, e.to_string());
                None
            }
        }
    }

    /// Takes the violations of a nested error (prefixing their fields), or keeps the value.
    pub fn nested<T>(&mut self, prefix: &str, result: Result<T>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(Error::InvalidArgument(vs)) => {
                for v in vs {
                    self.add(format!("{prefix}.{}", v.field), v.description);
                }
                None
            }
            Err(other) => {
                self.add(prefix, other.to_string());
                None
            }
        }
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(())` when nothing was recorded, the collected `InvalidArgument` otherwise.
    pub fn finish(self) -> Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidArgument(self.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_stay_bounded_whatever_the_input() {
        let mut v = Violations::new();
        for i in 0..1_000 {
            v.add(format!("f{i}"), "é".repeat(10_000));
        }
        let status = Status::from(v.finish().unwrap_err());
        assert!(status.message().chars().count() <= MAX_MESSAGE_CHARS + 1);
        let short = Status::from(Error::InvalidArgument(vec![FieldViolation {
            field: "a".into(),
            description: "b".into(),
        }]));
        assert_eq!(short.message(), "invalid argument: a: b");
        let bad = status
            .get_details_bad_request()
            .expect("bad request details");
        assert_eq!(bad.field_violations.len(), MAX_VIOLATIONS + 1);
        assert!(bad.field_violations[0].description.ends_with('…'));
        assert_eq!(
            bad.field_violations[MAX_VIOLATIONS].description,
            "… and 950 more"
        );
        assert_eq!(quoted("ab"), "\"ab\"");
        assert_eq!(
            quoted(&"İ".repeat(100)).chars().count(),
            MAX_QUOTED_CHARS + 3
        );
    }
}
