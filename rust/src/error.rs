//! Errors of the pure core: what makes a whole body unreadable, and why one item is rejected.

use std::borrow::Cow;
use std::fmt;

/// An error that stops the whole call: the input cannot be read at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoreError {
    /// The body is not a well-formed DynamoDB JSON document of the expected kind
    /// (invalid JSON, invalid UTF-8, truncated, or the wrong top-level shape).
    BadBody { offset: usize, why: String },
    /// DynamoDB answered with an error document (`__type`) instead of a result.
    ServiceError { code: String, message: String },
    /// The table layout given by the caller is inconsistent.
    BadLayout(String),
    /// An export data file is not whole gzip (cut short, damaged, or not gzip at all).
    BadGzip { offset: usize, why: String },
}

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoreError::BadBody { offset, why } => {
                write!(f, "not a readable DynamoDB response: {why} (at byte {offset})")
            }
            CoreError::ServiceError { code, message } => {
                write!(f, "DynamoDB returned an error instead of a result: {code}: {message}")
            }
            CoreError::BadLayout(why) => write!(f, "invalid table layout: {why}"),
            CoreError::BadGzip { offset, why } => write!(f, "{why} (after {offset} inflated bytes)"),
        }
    }
}

impl std::error::Error for CoreError {}

pub type CoreResult<T> = Result<T, CoreError>;

impl From<crate::json::SyntaxError> for CoreError {
    fn from(e: crate::json::SyntaxError) -> Self {
        CoreError::BadBody { offset: e.offset, why: e.why.to_string() }
    }
}

/// Why one item cannot be represented; it goes to the reject table with this text.
pub type Reason = Cow<'static, str>;
