//! A first-sync-sized answer for the bench and the memory example: 2^20 rows
//! with random 10-character ids and millisecond times, sealed and base64'd
//! (~91 MiB), exactly as the operator sends it.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uid2_bucket_sync::credentials::ClientSecret;
use uid2_bucket_sync::envelope::{Nonce, encode_base64, seal_response};
use uid2_bucket_sync::timestamp::{format_operator, from_millis};

pub const ROWS: usize = 1 << 20;

pub struct LargeResponse {
    pub secret_key: [u8; 32],
    pub nonce: Nonce,
    /// The HTTP body: base64 text of the response envelope.
    pub body: Vec<u8>,
    pub json_bytes: usize,
}

pub fn build(rows: usize) -> LargeResponse {
    const ID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    // 2022-01-01 .. 2026-01-01, UTC.
    const FROM_MS: i64 = 1_640_995_200_000;
    const TO_MS: i64 = 1_767_225_600_000;

    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut json = String::with_capacity(rows * 70 + 64);
    json.push_str(r#"{"body":["#);
    for row in 0..rows {
        if row > 0 {
            json.push(',');
        }
        json.push_str(r#"{"bucket_id":""#);
        for _ in 0..10 {
            json.push(ID_ALPHABET[rng.random_range(0..ID_ALPHABET.len())] as char);
        }
        json.push_str(r#"","last_updated":""#);
        json.push_str(&format_operator(from_millis(
            rng.random_range(FROM_MS..TO_MS),
        )));
        json.push_str(r#""}"#);
    }
    json.push_str(r#"],"status":"success"}"#);

    let secret_key: [u8; 32] = rng.random();
    let secret = ClientSecret::from_bytes(secret_key);
    let nonce: Nonce = rng.random();
    let envelope = seal_response(&secret, &rng.random(), TO_MS, &nonce, json.as_bytes());
    LargeResponse {
        secret_key,
        nonce,
        body: encode_base64(&envelope).into_bytes(),
        json_bytes: json.len(),
    }
}
