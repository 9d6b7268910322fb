//! The CPU side of one full identity-map request: building the request
//! JSON for 5,000 hashes, and opening (base64, decrypt, nonce) plus
//! validating a v3 answer for 5,000 identities, as `map_v3` does per request.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use uid2_bucket_sync::credentials::ClientSecret;
use uid2_bucket_sync::envelope::{encode_base64, seal_response};
use uid2_bucket_sync::identity::{IdentityHash, IdentityType};
use uid2_bucket_sync::operator::body::open_body;
use uid2_bucket_sync::operator::{BodyEncoding, Endpoint, MapV3Request, V3Result};

const IDENTITIES: usize = 5_000;
/// 2026-09-01T00:00:00Z.
const REFRESH_FROM_S: i64 = 1_788_220_800;

/// Every third identity a phone, the rest emails.
fn request() -> MapV3Request {
    MapV3Request::new(
        (0..IDENTITIES)
            .map(|n| {
                if n.is_multiple_of(3) {
                    let phone = format!("+1555{n:07}");
                    (IdentityType::Phone, IdentityHash::of_phone(&phone).unwrap())
                } else {
                    let email = format!("user{n}@example.com");
                    (IdentityType::Email, IdentityHash::of_email(&email).unwrap())
                }
            })
            .collect(),
    )
}

/// An answer shaped like the operator's: mostly mapped, one in ten with a
/// previous UID2, one in fifty opted out.
fn answer_json() -> String {
    let element = |n: usize| {
        if n.is_multiple_of(50) {
            return serde_json::json!({ "e": "optout" });
        }
        let uid = |seed: usize| STANDARD.encode([(seed % 251) as u8; 32]);
        let previous = n.is_multiple_of(10).then(|| uid(n + 1));
        serde_json::json!({ "u": uid(n), "p": previous, "r": REFRESH_FROM_S })
    };
    let phones = (0..IDENTITIES)
        .filter(|n| n.is_multiple_of(3))
        .map(element)
        .collect::<Vec<_>>();
    let emails = (0..IDENTITIES)
        .filter(|n| !n.is_multiple_of(3))
        .map(element)
        .collect::<Vec<_>>();
    serde_json::json!({
        "body": { "email": [], "email_hash": emails, "phone": [], "phone_hash": phones },
        "status": "success",
    })
    .to_string()
}

fn identity_map(c: &mut Criterion) {
    let request = request();
    let secret = ClientSecret::from_bytes([7; 32]);
    let nonce = [5; 8];
    let json = answer_json();
    let body = encode_base64(&seal_response(
        &secret,
        &[3; 12],
        1_788_000_000_000,
        &nonce,
        json.as_bytes(),
    ))
    .into_bytes();
    eprintln!(
        "request: {} bytes JSON; answer: {} bytes JSON, {} bytes base64",
        request.request_json().len(),
        json.len(),
        body.len()
    );

    let mut group = c.benchmark_group("identity_map_5000");
    group.throughput(Throughput::Elements(IDENTITIES as u64));
    group.bench_function("v3_request_json", |b| b.iter(|| request.request_json()));
    group.bench_function("v3_open_and_validate_answer", |b| {
        b.iter_batched(
            || body.clone(),
            |body| {
                let opened = open_body(&secret, body, BodyEncoding::Base64, &nonce)
                    .expect("the fixture opens");
                let results = request
                    .parse_answer(opened.payload())
                    .expect("the fixture is valid");
                assert_eq!(results.len(), IDENTITIES);
                results
            },
            BatchSize::LargeInput,
        );
    });
    group.bench_function("v3_validate_answer_only", |b| {
        b.iter(|| {
            let results: Vec<V3Result> = request.parse_answer(&json).expect("valid");
            results
        });
    });
    group.finish();
}

criterion_group!(benches, identity_map);
criterion_main!(benches);
