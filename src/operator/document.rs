//! What every decrypted operator answer is: a JSON object with a `status`
//! (`success` or not, with an optional `message`) and a `body`. Each
//! endpoint reads its own body; why a document is refused before that is
//! the same for all of them.

/// Why a decrypted answer was refused as a document, before its body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    #[error("response is not valid JSON: {0}")]
    NotJson(String),
    #[error("response JSON is {found}, expected an object")]
    NotAnObject { found: String },
    #[error("response JSON has the key {0:?} more than once")]
    DuplicateKey(&'static str),
    #[error("response has no \"status\" field")]
    MissingStatus,
    #[error(
        "operator answered status {status}{}",
        message.as_ref().map(|m| format!(": {m}")).unwrap_or_default()
    )]
    StatusNotSuccess {
        /// The status as received: a JSON string's text, or the rendering of
        /// whatever else was there.
        status: String,
        message: Option<String>,
    },
    #[error("response has status \"success\" but no \"body\" field")]
    MissingBody,
}
