//! The one error type of the wire vocabulary: every way an input can be wrong.

use thiserror::Error;

/// What was wrong with a payload, a topic or a value.
///
/// The messages are written for the person who sent the input: they end up
/// verbatim in `{"ok":false,"error":...}` answers.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtoError {
    /// The payload is larger than the parser accepts.
    #[error("payload too large: {len} bytes, at most {max}")]
    TooLarge {
        /// Bytes received.
        len: usize,
        /// Bytes accepted.
        max: usize,
    },
    /// The payload is not UTF-8.
    #[error("payload is not UTF-8")]
    NotUtf8,
    /// The payload is nested deeper than the parser accepts.
    #[error("JSON nested deeper than {max} levels")]
    TooDeep {
        /// Levels accepted.
        max: usize,
    },
    /// The payload is not valid JSON.
    #[error("not JSON: {0}")]
    Json(String),
    /// The JSON is valid but is not an object.
    #[error("expected a JSON object")]
    NotAnObject,
    /// A required field is absent.
    #[error("missing field `{0}`")]
    Missing(&'static str),
    /// A field has the wrong JSON type.
    #[error("field `{field}` must be {expected}")]
    WrongType {
        /// The field.
        field: String,
        /// What it must be.
        expected: &'static str,
    },
    /// A field has the right type but a value out of range or malformed.
    #[error("field `{field}`: {reason}")]
    BadValue {
        /// The field.
        field: String,
        /// Why the value is refused.
        reason: String,
    },
    /// The roll-call's `cmd` is not one this protocol answers.
    #[error("unknown cmd `{0}`")]
    UnknownCmd(String),
    /// A topic is not acceptable where it was given.
    #[error("bad topic `{topic}`: {reason}")]
    BadTopic {
        /// The topic.
        topic: String,
        /// Why.
        reason: &'static str,
    },
    /// A signed roll-call failed verification.
    #[error("signature rejected: {0}")]
    Signature(&'static str),
    /// A cluster key that would not keep anyone out.
    #[error("cluster key: {0}")]
    Key(String),
}

impl ProtoError {
    pub(crate) fn wrong_type(field: &str, expected: &'static str) -> Self {
        ProtoError::WrongType {
            field: field.to_owned(),
            expected,
        }
    }

    pub(crate) fn bad_value(field: &str, reason: impl Into<String>) -> Self {
        ProtoError::BadValue {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }
}
