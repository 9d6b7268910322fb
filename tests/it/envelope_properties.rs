//! Properties of the v2 envelope that must hold for any input: what is
//! sealed opens to the same thing, any single corrupted byte is caught, and
//! no input, however malformed, makes the openers panic.

use proptest::prelude::*;
use uid2_bucket_sync::credentials::ClientSecret;
use uid2_bucket_sync::envelope::{
    EnvelopeError, Iv, Nonce, OpenedRequest, RequestParams, decode_base64, encode_base64,
    open_request, open_response, seal_request, seal_response,
};
use uid2_bucket_sync::operator::body::decode_base64_in_place;
use uid2_bucket_sync::operator::parse_buckets_json;

/// JSON-ish payloads: arbitrary UTF-8 text wrapped the way the endpoint's
/// requests and answers are, plus fully arbitrary text.
fn payload() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>()
            .prop_map(|text| serde_json::json!({ "since_timestamp": text }).to_string()),
        any::<String>().prop_map(|text| {
            serde_json::json!({ "body": [{ "bucket_id": text, "last_updated": "2025-01-01T00:00:00.000" }], "status": "success" })
                .to_string()
        }),
        ".{0,512}",
    ]
}

fn secret_strategy() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_sealed_request_opens_to_what_was_sealed(
        key in secret_strategy(),
        iv in any::<Iv>(),
        timestamp_ms in any::<i64>(),
        nonce in any::<Nonce>(),
        json in payload(),
    ) {
        let secret = ClientSecret::from_bytes(key);
        let params = RequestParams { iv, timestamp_ms, nonce };
        let sealed = seal_request(&secret, &params, json.as_bytes());
        let text = encode_base64(&sealed);
        let opened = open_request(&secret, &decode_base64(text.as_bytes()).unwrap()).unwrap();
        prop_assert_eq!(opened, OpenedRequest { timestamp_ms, nonce, payload: json });
    }

    #[test]
    fn a_sealed_response_opens_to_what_was_sealed(
        key in secret_strategy(),
        iv in any::<Iv>(),
        server_time_ms in any::<i64>(),
        nonce in any::<Nonce>(),
        json in payload(),
    ) {
        let secret = ClientSecret::from_bytes(key);
        let sealed = seal_response(&secret, &iv, server_time_ms, &nonce, json.as_bytes());
        let text = encode_base64(&sealed).into_bytes();
        for decoded in [decode_base64(&text).unwrap(), decode_base64_in_place(text.clone()).unwrap()] {
            let opened = open_response(&secret, decoded, &nonce).unwrap();
            prop_assert_eq!(opened.server_time_ms(), server_time_ms);
            prop_assert_eq!(opened.payload(), json.as_str());
        }
    }

    #[test]
    fn a_response_answering_another_nonce_is_refused(
        key in secret_strategy(),
        iv in any::<Iv>(),
        sent in any::<Nonce>(),
        echoed in any::<Nonce>(),
        json in payload(),
    ) {
        prop_assume!(sent != echoed);
        let secret = ClientSecret::from_bytes(key);
        let sealed = seal_response(&secret, &iv, 0, &echoed, json.as_bytes());
        prop_assert_eq!(open_response(&secret, sealed, &sent).unwrap_err(), EnvelopeError::NonceMismatch);
    }

    #[test]
    fn any_single_corrupted_response_byte_is_detected(
        key in secret_strategy(),
        iv in any::<Iv>(),
        server_time_ms in any::<i64>(),
        nonce in any::<Nonce>(),
        json in payload(),
        position in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let secret = ClientSecret::from_bytes(key);
        let mut sealed = seal_response(&secret, &iv, server_time_ms, &nonce, json.as_bytes());
        let index = position.index(sealed.len());
        sealed[index] ^= flip;
        prop_assert_eq!(open_response(&secret, sealed, &nonce).unwrap_err(), EnvelopeError::TagMismatch);
    }

    #[test]
    fn any_single_corrupted_request_byte_is_detected(
        key in secret_strategy(),
        iv in any::<Iv>(),
        timestamp_ms in any::<i64>(),
        nonce in any::<Nonce>(),
        json in payload(),
        position in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let secret = ClientSecret::from_bytes(key);
        let params = RequestParams { iv, timestamp_ms, nonce };
        let mut sealed = seal_request(&secret, &params, json.as_bytes());
        let index = position.index(sealed.len());
        sealed[index] ^= flip;
        let error = open_request(&secret, &sealed).unwrap_err();
        if index == 0 {
            prop_assert_eq!(error, EnvelopeError::UnsupportedVersion(1 ^ flip));
        } else {
            prop_assert_eq!(error, EnvelopeError::TagMismatch);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_openers(
        key in secret_strategy(),
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        nonce in any::<Nonce>(),
    ) {
        let secret = ClientSecret::from_bytes(key);
        // Random bytes essentially never carry a valid tag.
        prop_assert!(open_response(&secret, bytes.clone(), &nonce).is_err());
        prop_assert!(open_request(&secret, &bytes).is_err());
        prop_assert_eq!(decode_base64_in_place(bytes.clone()), decode_base64(&bytes));
    }

    #[test]
    fn in_place_base64_decoding_agrees_with_the_envelope_decoder(
        text in "[ \n]{0,2}[A-Za-z0-9+/]{0,64}={0,3}[ \r\n]{0,2}",
    ) {
        prop_assert_eq!(
            decode_base64_in_place(text.clone().into_bytes()),
            decode_base64(text.as_bytes())
        );
    }

    #[test]
    fn arbitrary_text_never_panics_the_response_parser(text in ".{0,256}") {
        let _ = parse_buckets_json(&text);
    }

    #[test]
    fn arbitrary_json_documents_never_panic_the_response_parser(
        status in prop_oneof![Just(serde_json::json!("success")), any::<i64>().prop_map(serde_json::Value::from), ".{0,8}".prop_map(serde_json::Value::from)],
        rows in prop::collection::vec(
            (prop::option::of(".{0,12}"), prop::option::of("[0-9T:.-]{0,25}"), any::<bool>()),
            0..8,
        ),
    ) {
        let body: Vec<serde_json::Value> = rows
            .iter()
            .map(|(id, at, extra)| {
                let mut row = serde_json::Map::new();
                if let Some(id) = id { row.insert("bucket_id".into(), id.clone().into()); }
                if let Some(at) = at { row.insert("last_updated".into(), at.clone().into()); }
                if *extra { row.insert("extra".into(), serde_json::json!([1, {"a": null}])); }
                serde_json::Value::Object(row)
            })
            .collect();
        let document = serde_json::json!({ "status": status, "body": body }).to_string();
        if let Ok(rotations) = parse_buckets_json(&document) {
            prop_assert_eq!(rotations.len(), rows.len());
            for (rotation, (id, _, _)) in rotations.iter().zip(&rows) {
                prop_assert_eq!(Some(rotation.0), id.as_deref());
            }
        }
    }
}
