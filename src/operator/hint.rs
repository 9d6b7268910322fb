//! What the person running the daemon should do about a failed exchange
//! with the operator: one hint per cause, naming where a credential was
//! read from, never its value. The sync cycle and the re-map worker both
//! record it next to the error.

use crate::credentials::CredentialOrigins;
use crate::envelope::EnvelopeError;
use crate::operator::TransportError;

/// What to do about a failed exchange with the operator. `transient` is
/// what the caller does next after an error that may pass.
pub(crate) fn transport_hint(
    error: &TransportError,
    credentials: &CredentialOrigins,
    transient: &str,
) -> Option<String> {
    let api_key = credentials.api_key_phrase();
    let secret = credentials.client_secret_phrase();
    let wrong_secret = format!("{secret} is wrong or does not belong to {api_key}");
    match error {
        TransportError::Envelope(EnvelopeError::TagMismatch) => Some(format!(
            "the response did not authenticate with {secret}; as the operator accepted \
             the request, which needs the same secret, the body was most likely altered \
             on the way (a proxy?)"
        )),
        TransportError::Envelope(_) => Some(
            "the response is not a valid v2 envelope: check that base_url points at a UID2 \
             or EUID operator"
                .to_owned(),
        ),
        TransportError::Unauthorized => Some(format!(
            "check {api_key} and that it matches operator.environment"
        )),
        TransportError::BadRequest { message } => Some(match BadRequestCause::of(message) {
            BadRequestCause::Undecryptable => {
                format!("the operator could not decrypt the request: {wrong_secret}")
            }
            BadRequestCause::ClockOff => "the operator says the request's time is off: \
                this machine's clock is off by more than a minute; sync it (chrony, \
                systemd-timesyncd)"
                .to_owned(),
            BadRequestCause::Other => format!(
                "the operator rejected the request itself: if it is about decrypting, \
                 {wrong_secret}; if it is about the time, this machine's clock is off \
                 by more than a minute"
            ),
        }),
        TransportError::Connect { .. } => Some(
            "check operator.environment or operator.base_url and outbound HTTPS access".to_owned(),
        ),
        error if error.is_transient() => Some(transient.to_owned()),
        _ => None,
    }
}

/// What a 400 from the operator is about, from the start of its message
/// (the operator's code: the request envelope is decrypted with the API
/// key's own secret first, and only then is its time checked).
enum BadRequestCause {
    /// `Invalid body: Check encryption key (ClientSecret)`.
    Undecryptable,
    /// `Invalid timestamp: Request too old or client time drift.`
    ClockOff,
    Other,
}

impl BadRequestCause {
    fn of(message: &str) -> Self {
        if message.starts_with("Invalid body: Check encryption key") {
            BadRequestCause::Undecryptable
        } else if message.starts_with("Invalid timestamp") {
            BadRequestCause::ClockOff
        } else {
            BadRequestCause::Other
        }
    }
}
