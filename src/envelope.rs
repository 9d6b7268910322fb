//! The v2 encrypted envelope, both directions, with no IO.
//!
//! Request:  `0x01 ‖ IV(12) ‖ AES-256-GCM(time_ms(8, BE) ‖ nonce(8) ‖ json) ‖ tag(16)`
//! Response: `IV(12) ‖ AES-256-GCM(time_ms(8, BE) ‖ nonce(8) ‖ json) ‖ tag(16)`
//!
//! The client side (`seal_request`, `open_response`) is what the operator
//! client uses; the server side (`open_request`, `seal_response`) is what the
//! simulated operator uses. Opening a response decrypts in place and keeps the
//! JSON inside the decoded buffer, because a first sync receives ~68 MiB of
//! plaintext and every copy shows up in peak memory.

use aes_gcm::aead::array::Array;
use aes_gcm::{AeadInOut, Aes256Gcm, KeyInit};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::credentials::ClientSecret;

pub(crate) const REQUEST_VERSION: u8 = 1;
pub(crate) const IV_LEN: usize = 12;
pub(crate) const TAG_LEN: usize = 16;
pub(crate) const TIMESTAMP_LEN: usize = 8;
pub(crate) const NONCE_LEN: usize = 8;
/// Plaintext header: time in ms, then the nonce.
const HEADER_LEN: usize = TIMESTAMP_LEN + NONCE_LEN;
pub(crate) const MIN_RESPONSE_LEN: usize = IV_LEN + HEADER_LEN + TAG_LEN;
pub(crate) const MIN_REQUEST_LEN: usize = 1 + MIN_RESPONSE_LEN;

/// The random value a client sends and the operator echoes back.
pub type Nonce = [u8; NONCE_LEN];
/// The AES-GCM initialisation vector.
pub type Iv = [u8; IV_LEN];

/// Every way an envelope can be malformed, each distinct so callers and
/// users can tell a wrong secret from a corrupted body or a confused peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("envelope is not valid base64")]
    InvalidBase64,
    #[error("envelope is too short: {len} bytes, at least {min} expected")]
    TooShort { len: usize, min: usize },
    #[error("envelope version byte is {0:#04x}, expected 0x01")]
    UnsupportedVersion(u8),
    #[error(
        "authentication tag check failed: the client secret is wrong or the body was corrupted"
    )]
    TagMismatch,
    #[error("response nonce does not match the request's nonce")]
    NonceMismatch,
    #[error("decrypted payload is not UTF-8")]
    PayloadNotUtf8,
    #[error("decrypted payload is not valid JSON: {0}")]
    PayloadNotJson(String),
}

/// The values that make a request envelope unique. Production code uses
/// [`RequestParams::fresh`]; tests pin them to reproduce known vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestParams {
    pub iv: Iv,
    pub timestamp_ms: i64,
    pub nonce: Nonce,
}

impl RequestParams {
    /// New random IV and nonce, stamped with `now_ms`. Every attempt needs
    /// one: the operator refuses envelopes older than about a minute.
    pub fn fresh(now_ms: i64) -> Self {
        let mut iv = [0u8; IV_LEN];
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut iv);
        fill_random(&mut nonce);
        Self {
            iv,
            timestamp_ms: now_ms,
            nonce,
        }
    }
}

/// A decrypted request, as the operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedRequest {
    pub timestamp_ms: i64,
    pub nonce: Nonce,
    pub payload: String,
}

/// A decrypted response whose JSON still lives inside the decode buffer.
#[derive(Debug)]
pub struct OpenedResponse {
    buffer: Vec<u8>,
    json: std::ops::Range<usize>,
    server_time_ms: i64,
}

impl OpenedResponse {
    pub fn server_time_ms(&self) -> i64 {
        self.server_time_ms
    }

    /// The JSON text; UTF-8 was checked when the envelope was opened.
    pub fn payload(&self) -> &str {
        // SAFETY-free: validated in `open_response`, so this cannot fail.
        std::str::from_utf8(&self.buffer[self.json.clone()]).unwrap_or_default()
    }

    /// Deserializes the payload; a syntax or shape error is `PayloadNotJson`.
    pub fn json<'a, T: serde::Deserialize<'a>>(&'a self) -> Result<T, EnvelopeError> {
        serde_json::from_str(self.payload())
            .map_err(|e| EnvelopeError::PayloadNotJson(e.to_string()))
    }
}

/// Builds a request envelope (binary form).
pub fn seal_request(secret: &ClientSecret, params: &RequestParams, json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MIN_REQUEST_LEN + json.len());
    out.push(REQUEST_VERSION);
    seal_into(
        &mut out,
        secret,
        &params.iv,
        params.timestamp_ms,
        &params.nonce,
        json,
    );
    out
}

/// Builds a response envelope (binary form), as the operator does.
pub fn seal_response(
    secret: &ClientSecret,
    iv: &Iv,
    server_time_ms: i64,
    nonce: &Nonce,
    json: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(MIN_RESPONSE_LEN + json.len());
    seal_into(&mut out, secret, iv, server_time_ms, nonce, json);
    out
}

/// Opens a request envelope (binary form), as the operator does.
pub fn open_request(
    secret: &ClientSecret,
    envelope: &[u8],
) -> Result<OpenedRequest, EnvelopeError> {
    if envelope.len() < MIN_REQUEST_LEN {
        return Err(EnvelopeError::TooShort {
            len: envelope.len(),
            min: MIN_REQUEST_LEN,
        });
    }
    if envelope[0] != REQUEST_VERSION {
        return Err(EnvelopeError::UnsupportedVersion(envelope[0]));
    }
    let mut buffer = envelope[1..].to_vec();
    let (timestamp_ms, nonce, json) = open_in_place(secret, &mut buffer)?;
    let payload = std::str::from_utf8(&buffer[json])
        .map_err(|_| EnvelopeError::PayloadNotUtf8)?
        .to_owned();
    Ok(OpenedRequest {
        timestamp_ms,
        nonce,
        payload,
    })
}

/// Opens a response envelope (binary form) and checks the echoed nonce.
/// Takes the buffer by value and decrypts it in place.
pub fn open_response(
    secret: &ClientSecret,
    mut envelope: Vec<u8>,
    expected_nonce: &Nonce,
) -> Result<OpenedResponse, EnvelopeError> {
    if envelope.len() < MIN_RESPONSE_LEN {
        return Err(EnvelopeError::TooShort {
            len: envelope.len(),
            min: MIN_RESPONSE_LEN,
        });
    }
    let (server_time_ms, nonce, json) = open_in_place(secret, &mut envelope)?;
    if &nonce != expected_nonce {
        return Err(EnvelopeError::NonceMismatch);
    }
    if std::str::from_utf8(&envelope[json.clone()]).is_err() {
        return Err(EnvelopeError::PayloadNotUtf8);
    }
    Ok(OpenedResponse {
        buffer: envelope,
        json,
        server_time_ms,
    })
}

/// Base64 text of an envelope (standard alphabet, padded, no newlines).
pub fn encode_base64(envelope: &[u8]) -> String {
    STANDARD.encode(envelope)
}

/// Decodes envelope text; surrounding ASCII whitespace is tolerated.
pub fn decode_base64(text: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    STANDARD
        .decode(text.trim_ascii())
        .map_err(|_| EnvelopeError::InvalidBase64)
}

fn cipher(secret: &ClientSecret) -> Aes256Gcm {
    Aes256Gcm::new(&Array::from(*secret.key_bytes()))
}

fn seal_into(
    out: &mut Vec<u8>,
    secret: &ClientSecret,
    iv: &Iv,
    timestamp_ms: i64,
    nonce: &Nonce,
    json: &[u8],
) {
    out.extend_from_slice(iv);
    let body_start = out.len();
    out.extend_from_slice(&timestamp_ms.to_be_bytes());
    out.extend_from_slice(nonce);
    out.extend_from_slice(json);
    let tag = cipher(secret)
        .encrypt_inout_detached(&Array::from(*iv), &[], (&mut out[body_start..]).into())
        // Only fails for plaintexts over 64 GiB, far beyond any request or
        // response this protocol carries.
        .expect("AES-GCM plaintext within size limit");
    out.extend_from_slice(&tag);
}

/// Decrypts `IV ‖ ciphertext ‖ tag` in place and splits the plaintext header.
fn open_in_place(
    secret: &ClientSecret,
    envelope: &mut [u8],
) -> Result<(i64, Nonce, std::ops::Range<usize>), EnvelopeError> {
    let len = envelope.len();
    let (iv, rest) = envelope.split_at_mut(IV_LEN);
    let (ciphertext, tag) = rest.split_at_mut(len - IV_LEN - TAG_LEN);
    let iv: Iv = (&*iv).try_into().map_err(|_| EnvelopeError::TagMismatch)?;
    let tag: [u8; TAG_LEN] = (&*tag).try_into().map_err(|_| EnvelopeError::TagMismatch)?;
    cipher(secret)
        .decrypt_inout_detached(&Array::from(iv), &[], ciphertext.into(), &Array::from(tag))
        .map_err(|_| EnvelopeError::TagMismatch)?;
    let timestamp_ms =
        i64::from_be_bytes(ciphertext[..TIMESTAMP_LEN].try_into().unwrap_or_default());
    let nonce: Nonce = ciphertext[TIMESTAMP_LEN..HEADER_LEN]
        .try_into()
        .unwrap_or_default();
    let json_start = IV_LEN + HEADER_LEN;
    Ok((timestamp_ms, nonce, json_start..len - TAG_LEN))
}

fn fill_random(buffer: &mut [u8]) {
    // The OS random source failing is not a condition this program can
    // recover from or work around safely.
    getrandom::fill(buffer).expect("operating system random source unavailable");
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "ioG3wKxAokmp+rERx6A4kM/13qhyolUXIu14WN16Spo=";

    fn hex<const N: usize>(text: &str) -> [u8; N] {
        let bytes: Vec<u8> = (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect();
        bytes.try_into().unwrap()
    }

    fn vector_params() -> RequestParams {
        RequestParams {
            iv: hex("cc3ccaca9889eab3800e787e"),
            timestamp_ms: 1_667_885_597_644,
            nonce: hex("312fe5aa08b2a049"),
        }
    }

    fn secret() -> ClientSecret {
        ClientSecret::from_base64(SECRET).unwrap()
    }

    #[test]
    fn vector_1_official_java_sdk_request() {
        let envelope = seal_request(
            &secret(),
            &vector_params(),
            br#"{"email":"test@example.com"}"#,
        );
        assert_eq!(
            encode_base64(&envelope),
            "Acw8ysqYieqzgA54fifdV1TB6V+da8p/AFc8Ju/IYrD77pL7JYMJj8YqD9EsrG3d2d2j0H7kZjH41YsNLpFVCH+oce28z9L9ug=="
        );
    }

    #[test]
    fn vector_2_buckets_request() {
        let json = br#"{"since_timestamp":"2022-06-01T13:00:00"}"#;
        let envelope = seal_request(&secret(), &vector_params(), json);
        assert_eq!(
            encode_base64(&envelope),
            "Acw8ysqYieqzgA54fifdV1TB6V+da8p/AFc8Ju/IYqb/4ZjyWM1ClsYqD/AkpC6Ki4P2zC+mOyWod1hTMrUqJwADXkDoo5D32H/k3IM7ER9bA2bxwpQ="
        );
        let opened = open_request(&secret(), &envelope).unwrap();
        assert_eq!(opened.timestamp_ms, 1_667_885_597_644);
        assert_eq!(opened.nonce, vector_params().nonce);
        assert_eq!(opened.payload.as_bytes(), json);
    }

    #[test]
    fn vector_3_buckets_response() {
        let text = "AAECAwQFBgcICQoLjY5737QNcINwh3qQe6yvzsuv19HYE5ZNdtJ3xkvycfseQ0HYVWEKAmVFYYXqL6555oEMfY3o1HkLj+Pkr0qnkOWyjDC4vQOyNSmgVOI2vOE/I5rEBEQ3iNlWqMhYDtXXOL3XQQVkP8lhMlcgVltGii4rGWlZBIueRGL7RXsXRJMa";
        let json = r#"{"body":[{"bucket_id":"a30od4mNRd","last_updated":"2022-06-05T22:52:03.109"}],"status":"success"}"#;
        let nonce = hex("312fe5aa08b2a049");
        let opened =
            open_response(&secret(), decode_base64(text.as_bytes()).unwrap(), &nonce).unwrap();
        assert_eq!(opened.server_time_ms(), 1_667_885_598_000);
        assert_eq!(opened.payload(), json);

        let resealed = seal_response(
            &secret(),
            &hex("000102030405060708090a0b"),
            1_667_885_598_000,
            &nonce,
            json.as_bytes(),
        );
        assert_eq!(encode_base64(&resealed), text);
    }

    #[test]
    fn each_malformed_envelope_has_its_own_error() {
        let secret = secret();
        let params = vector_params();
        let request = seal_request(&secret, &params, b"{}");
        let response = seal_response(&secret, &params.iv, 1, &params.nonce, b"{}");

        assert_eq!(
            decode_base64(b"not base64!!").unwrap_err(),
            EnvelopeError::InvalidBase64
        );
        assert_eq!(
            open_request(&secret, &request[..10]).unwrap_err(),
            EnvelopeError::TooShort {
                len: 10,
                min: MIN_REQUEST_LEN
            }
        );
        assert_eq!(
            open_response(
                &secret,
                response[..MIN_RESPONSE_LEN - 1].to_vec(),
                &params.nonce
            )
            .unwrap_err(),
            EnvelopeError::TooShort {
                len: MIN_RESPONSE_LEN - 1,
                min: MIN_RESPONSE_LEN
            }
        );
        let mut wrong_version = request.clone();
        wrong_version[0] = 2;
        assert_eq!(
            open_request(&secret, &wrong_version).unwrap_err(),
            EnvelopeError::UnsupportedVersion(2)
        );
        let other_secret = ClientSecret::from_bytes([7; 32]);
        assert_eq!(
            open_response(&other_secret, response.clone(), &params.nonce).unwrap_err(),
            EnvelopeError::TagMismatch
        );
        assert_eq!(
            open_response(&secret, response.clone(), &[0; NONCE_LEN]).unwrap_err(),
            EnvelopeError::NonceMismatch
        );
        let not_utf8 = seal_response(&secret, &params.iv, 1, &params.nonce, &[0xff, 0xfe]);
        assert_eq!(
            open_response(&secret, not_utf8, &params.nonce).unwrap_err(),
            EnvelopeError::PayloadNotUtf8
        );
        let not_json = seal_response(&secret, &params.iv, 1, &params.nonce, b"{\"body\":");
        let opened = open_response(&secret, not_json, &params.nonce).unwrap();
        assert!(matches!(
            opened.json::<serde_json::Value>().unwrap_err(),
            EnvelopeError::PayloadNotJson(_)
        ));
    }

    #[test]
    fn fresh_params_differ_every_time() {
        let a = RequestParams::fresh(1);
        let b = RequestParams::fresh(1);
        assert_ne!(a.iv, b.iv);
        assert_ne!(a.nonce, b.nonce);
    }
}
