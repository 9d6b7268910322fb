//! What happens to a 200 body once it is in memory: base64-decode (when the
//! body is text), decrypt, check the nonce. The endpoint then parses the
//! JSON where it lies.
//!
//! A first buckets sync is a ~91 MiB base64 body holding ~68 MiB of JSON.
//! The body buffer is reused for every step: base64 is decoded into the
//! front of the same buffer (the output is always behind the input), the
//! envelope is decrypted in place, and parsers borrow their strings from it.
//! Peak memory is the body plus the parsed answer.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::credentials::ClientSecret;
use crate::envelope::{EnvelopeError, Nonce, OpenedResponse, open_response};

/// How the envelope travels in the HTTP body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyEncoding {
    /// Base64 text, the operator's default and what the official SDKs send.
    #[default]
    Base64,
    /// Raw bytes (`Content-Type: application/octet-stream`), a quarter smaller.
    Binary,
}

/// Opens a complete 200 body: the decrypted payload, its nonce checked.
/// The transport calls exactly this once the body is read.
pub fn open_body(
    secret: &ClientSecret,
    body: Vec<u8>,
    encoding: BodyEncoding,
    expected_nonce: &Nonce,
) -> Result<OpenedResponse, EnvelopeError> {
    let envelope = match encoding {
        BodyEncoding::Binary => body,
        BodyEncoding::Base64 => decode_base64_in_place(body)?,
    };
    open_response(secret, envelope, expected_nonce)
}

/// Base64 characters decoded per step; a multiple of 4 so that only the
/// last step can carry padding.
const DECODE_CHUNK: usize = 16 * 1024;

/// Decodes standard, padded base64 into the front of the same buffer.
/// Accepts exactly what [`crate::envelope::decode_base64`] accepts
/// (surrounding ASCII whitespace included) without a second allocation.
pub fn decode_base64_in_place(mut text: Vec<u8>) -> Result<Vec<u8>, EnvelopeError> {
    let start = text.len() - text.trim_ascii_start().len();
    let end = start + text[start..].trim_ascii_end().len();
    if !(end - start).is_multiple_of(4) {
        // Unpadded or truncated text; the engine would reject it too, but
        // chunking must never see a partial quantum in the middle.
        return Err(EnvelopeError::InvalidBase64);
    }
    let mut chunk = [0u8; DECODE_CHUNK];
    let mut read = start;
    let mut written = 0;
    while read < end {
        let take = DECODE_CHUNK.min(end - read);
        let is_last = read + take == end;
        chunk[..take].copy_from_slice(&text[read..read + take]);
        if !is_last && chunk[take - 1] == b'=' {
            // Padding is only allowed at the very end.
            return Err(EnvelopeError::InvalidBase64);
        }
        // Every 4 characters decode to at most 3 bytes and `written` trails
        // `read` by at least the start offset, so the output region
        // `written..` never reaches bytes not yet copied out.
        let decoded = STANDARD
            .decode_slice(&chunk[..take], &mut text[written..])
            .map_err(|_| EnvelopeError::InvalidBase64)?;
        written += decoded;
        read += take;
    }
    text.truncate(written);
    // The decoded envelope is three quarters of the text: give the rest
    // back before the answer is parsed next to it. A large buffer is its
    // own mapping, which shrinks in place without a copy.
    text.shrink_to_fit();
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{decode_base64, encode_base64, seal_response};

    #[test]
    fn in_place_decoding_matches_the_envelope_decoder() {
        for len in [
            0,
            1,
            2,
            3,
            4,
            5,
            DECODE_CHUNK,
            DECODE_CHUNK * 3 / 4 + 1,
            50_000,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let text = encode_base64(&data);
            assert_eq!(
                decode_base64_in_place(text.clone().into_bytes()).unwrap(),
                data,
                "length {len}"
            );
            let padded = format!(" \n{text}\r\n");
            assert_eq!(
                decode_base64_in_place(padded.into_bytes()).unwrap(),
                decode_base64(format!(" \n{text}\r\n").as_bytes()).unwrap()
            );
        }
    }

    #[test]
    fn in_place_decoding_rejects_what_the_envelope_decoder_rejects() {
        let long = encode_base64(&[7u8; DECODE_CHUNK]);
        // Padding that lands exactly at a chunk boundary.
        let mut inner_padding = encode_base64(&[1u8; DECODE_CHUNK / 4 * 3 - 2]);
        assert!(inner_padding.ends_with('='));
        inner_padding.push_str(&long);
        for text in [
            "not base64!!".to_owned(),
            "AAA".to_owned(),
            "AA==AAAA".to_owned(),
            format!("{long}A"),
            inner_padding,
        ] {
            assert_eq!(
                decode_base64(text.as_bytes()),
                Err(EnvelopeError::InvalidBase64)
            );
            assert_eq!(
                decode_base64_in_place(text.into_bytes()),
                Err(EnvelopeError::InvalidBase64)
            );
        }
    }

    #[test]
    fn a_sealed_answer_opens_in_both_encodings_and_checks_the_nonce() {
        let secret = ClientSecret::from_bytes([3; 32]);
        let nonce = [9; 8];
        let json = br#"{"status":"success"}"#;
        let envelope = seal_response(&secret, &[1; 12], 1_740_787_200_123, &nonce, json);
        for (body, encoding) in [
            (envelope.clone(), BodyEncoding::Binary),
            (encode_base64(&envelope).into_bytes(), BodyEncoding::Base64),
        ] {
            let opened = open_body(&secret, body, encoding, &nonce).unwrap();
            assert_eq!(opened.payload().as_bytes(), json);
            assert_eq!(opened.server_time_ms(), 1_740_787_200_123);
        }
        assert_eq!(
            open_body(&secret, envelope, BodyEncoding::Binary, &[0; 8]).unwrap_err(),
            EnvelopeError::NonceMismatch
        );
    }
}
