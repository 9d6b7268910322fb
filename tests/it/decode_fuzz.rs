//! Fuzzing the whole decoding path of an answer (base64 or binary body,
//! envelope, JSON, rows) with thousands of generated inputs: arbitrary
//! bytes, valid envelopes around arbitrary or mutated payloads, and
//! structurally wrong documents. Nothing may panic, and the parser must be
//! differential-equal to a plain `serde_json::Value` reading of the same
//! JSON: it accepts a payload exactly when that reading finds a valid
//! answer, with the same rows.

use proptest::prelude::*;
use uid2_bucket_sync::credentials::ClientSecret;
use uid2_bucket_sync::envelope::{Iv, Nonce, encode_base64, seal_response};
use uid2_bucket_sync::operator::{
    BodyEncoding, BucketsError, DocumentError, OpenedBuckets, OperatorError, ResponseError,
    RowProblem, open_buckets_body, parse_buckets_json,
};
use uid2_bucket_sync::rotation::BucketRotation;
use uid2_bucket_sync::timestamp::{format_operator, parse_iso_local, truncate_to_millis};

const CASES: u32 = 4_000;

fn secret() -> ClientSecret {
    ClientSecret::from_bytes([7; 32])
}

const NONCE: Nonce = [1, 2, 3, 4, 5, 6, 7, 8];

/// The envelope an operator would send around `payload`.
fn sealed(payload: &[u8], encoding: BodyEncoding) -> Vec<u8> {
    let envelope = seal_response(
        &secret(),
        &Iv::default(),
        1_700_000_000_000,
        &NONCE,
        payload,
    );
    match encoding {
        BodyEncoding::Binary => envelope,
        BodyEncoding::Base64 => encode_base64(&envelope).into_bytes(),
    }
}

fn encoding() -> impl Strategy<Value = BodyEncoding> {
    prop_oneof![Just(BodyEncoding::Base64), Just(BodyEncoding::Binary)]
}

/// Every accepted row names a bucket and a time that prints and parses back
/// to itself in the operator's dialect at the millisecond precision the
/// store keeps (the parser accepts up to nine fraction digits).
fn well_formed(rotations: &[BucketRotation]) -> Result<(), TestCaseError> {
    for rotation in rotations {
        prop_assert!(!rotation.bucket_id.is_empty());
        let printed = format_operator(rotation.last_updated);
        prop_assert_eq!(
            parse_iso_local(&printed).ok(),
            Some(truncate_to_millis(rotation.last_updated))
        );
    }
    Ok(())
}

/// The answer as a plain `serde_json::Value` reading sees it: the rows when
/// it is a valid answer (an object whose `status` is the string `success`
/// and whose `body` is an array of objects, each with a non-empty string
/// `bucket_id` and a string `last_updated` in the operator's format).
fn value_reading(payload: &[u8]) -> Option<Vec<BucketRotation>> {
    let document: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let document = document.as_object()?;
    if document.get("status")?.as_str()? != "success" {
        return None;
    }
    document
        .get("body")?
        .as_array()?
        .iter()
        .map(|row| {
            let row = row.as_object()?;
            let bucket_id = row.get("bucket_id")?.as_str().filter(|id| !id.is_empty())?;
            let last_updated = parse_iso_local(row.get("last_updated")?.as_str()?).ok()?;
            // The parser keeps the millisecond, as the store does.
            Some(BucketRotation {
                bucket_id: bucket_id.into(),
                last_updated: truncate_to_millis(last_updated),
            })
        })
        .collect()
}

/// The parser's verdict on `payload`, the answer's problem when it was the
/// JSON that was refused.
type Verdict = Result<Vec<BucketRotation>, Option<ResponseError>>;

fn verdict_of(opened: Result<OpenedBuckets, BucketsError>) -> Verdict {
    match opened {
        Ok(opened) => Ok(opened.rotations.to_vec()),
        Err(OperatorError::InvalidResponse(problem)) => Err(Some(problem)),
        Err(OperatorError::Transport(_)) => Err(None),
    }
}

/// The parser accepts `payload` exactly when the `Value` reading finds a
/// valid answer, and then with the same rows in the same order. The one
/// allowed difference: a `Value` keeps the last of repeated keys, which the
/// parser refuses.
fn agrees_with_value_reading(payload: &[u8], parsed: Verdict) -> Result<(), TestCaseError> {
    match (parsed, value_reading(payload)) {
        (Ok(rows), Some(expected)) => {
            prop_assert_eq!(&rows, &expected);
            well_formed(&rows)
        }
        (Err(_), None) => Ok(()),
        (
            Err(Some(
                ResponseError::Document(DocumentError::DuplicateKey(_))
                | ResponseError::InvalidRow {
                    problem: RowProblem::DuplicateKey(_),
                    ..
                },
            )),
            Some(_),
        ) => Ok(()),
        (parsed, expected) => Err(TestCaseError::fail(format!(
            "the parser and a serde_json::Value reading disagree on {:?}: parser {parsed:?}, \
             Value reading {expected:?}",
            String::from_utf8_lossy(payload)
        ))),
    }
}

/// A valid answer with `rows` buckets.
fn valid_document(rows: usize) -> String {
    let body: Vec<serde_json::Value> = (0..rows)
        .map(|i| {
            serde_json::json!({
                "bucket_id": format!("bucket{i:04}"),
                "last_updated": format!("2025-06-0{}T12:34:56.{:03}", 1 + i % 9, i % 1000),
            })
        })
        .collect();
    serde_json::json!({ "body": body, "status": "success" }).to_string()
}

/// Byte-level damage: replace, insert or delete at random places.
fn mutated(document: String) -> impl Strategy<Value = Vec<u8>> {
    let len = document.len();
    prop::collection::vec((0..len.max(1), any::<u8>(), 0u8..3), 1..8).prop_map(move |edits| {
        let mut bytes = document.clone().into_bytes();
        for (position, byte, action) in edits {
            let at = position.min(bytes.len().saturating_sub(1));
            match action {
                0 if !bytes.is_empty() => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                _ if !bytes.is_empty() => {
                    bytes.remove(at);
                }
                _ => {}
            }
        }
        bytes
    })
}

/// JSON values of the wrong kind, odd sizes and odd times.
fn odd_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        Just(serde_json::json!(u64::MAX)),
        Just(serde_json::json!("")),
        Just(serde_json::json!("2025-01-01T00:00:00")),
        Just(serde_json::json!("2025-01-01T23:59:60")),
        Just(serde_json::json!("0000-01-01T00:00:00.000")),
        Just(serde_json::json!("9999-12-31T23:59:59.999999999")),
        Just(serde_json::json!("2025-02-30T00:00:00")),
        Just(serde_json::json!("2025-01-01T00:00:00.1234567890123")),
        Just(serde_json::json!("2025-01-01T00:00:00Z")),
        Just(serde_json::json!("-2025-01-01T00:00:00")),
        "[0-9T:.Z+ -]{0,32}".prop_map(serde_json::Value::from),
        ".{0,16}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(".{0,6}", inner, 0..4)
                .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
        ]
    })
}

fn odd_document() -> impl Strategy<Value = String> {
    let row = prop_oneof![
        odd_value(),
        (odd_value(), odd_value()).prop_map(|(id, at)| serde_json::json!({
            "bucket_id": id, "last_updated": at
        })),
        (".{0,12}", odd_value()).prop_map(|(id, at)| serde_json::json!({
            "bucket_id": id, "last_updated": at
        })),
    ];
    (
        prop_oneof![Just(serde_json::json!("success")), odd_value()],
        prop_oneof![
            prop::collection::vec(row, 0..6).prop_map(serde_json::Value::from),
            odd_value()
        ],
        any::<bool>(),
    )
        .prop_map(|(status, body, with_message)| {
            let mut document = serde_json::json!({ "status": status, "body": body });
            if with_message {
                document["message"] = serde_json::json!("something");
            }
            document.to_string()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn arbitrary_bodies_are_refused_without_panicking(
        body in prop::collection::vec(any::<u8>(), 0..512),
        encoding in encoding(),
    ) {
        prop_assert!(open_buckets_body(&secret(), body, encoding, &NONCE).is_err());
    }

    #[test]
    fn arbitrary_payloads_in_valid_envelopes_are_read_as_a_value_reading_reads_them(
        payload in prop::collection::vec(any::<u8>(), 0..512),
        encoding in encoding(),
    ) {
        let opened = open_buckets_body(&secret(), sealed(&payload, encoding), encoding, &NONCE);
        agrees_with_value_reading(&payload, verdict_of(opened))?;
    }

    #[test]
    fn mutated_answers_are_read_as_a_value_reading_reads_them(
        payload in (0usize..6).prop_map(valid_document).prop_flat_map(mutated),
        encoding in encoding(),
    ) {
        let opened = open_buckets_body(&secret(), sealed(&payload, encoding), encoding, &NONCE);
        agrees_with_value_reading(&payload, verdict_of(opened))?;
    }

    #[test]
    fn structurally_wrong_documents_are_read_as_a_value_reading_reads_them(
        document in odd_document(),
    ) {
        let parsed = parse_buckets_json(&document)
            .map(|rows| rows.to_vec())
            .map_err(Some);
        agrees_with_value_reading(document.as_bytes(), parsed)?;
    }

    #[test]
    fn damaged_envelopes_of_valid_answers_are_refused(
        rows in 0usize..4,
        position in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let mut body = sealed(valid_document(rows).as_bytes(), BodyEncoding::Binary);
        let index = position.index(body.len());
        body[index] ^= flip;
        prop_assert!(open_buckets_body(&secret(), body, BodyEncoding::Binary, &NONCE).is_err());
    }
}

#[test]
fn an_undamaged_valid_answer_is_accepted_whole() {
    for encoding in [BodyEncoding::Base64, BodyEncoding::Binary] {
        let opened = open_buckets_body(
            &secret(),
            sealed(valid_document(5).as_bytes(), encoding),
            encoding,
            &NONCE,
        )
        .unwrap();
        assert_eq!(opened.rotations.len(), 5);
        assert_eq!(opened.rotations.iter().next().unwrap().0, "bucket0000");
    }
}

#[test]
fn the_differential_check_fails_a_parser_that_drops_a_row_or_accepts_a_bad_answer() {
    let valid = valid_document(2);
    let mut one_row_short = parse_buckets_json(&valid).unwrap().to_vec();
    one_row_short.pop();
    assert!(agrees_with_value_reading(valid.as_bytes(), Ok(one_row_short)).is_err());
    let failure = r#"{"status":"error","body":[]}"#;
    assert!(agrees_with_value_reading(failure.as_bytes(), Ok(Vec::new())).is_err());
    assert!(agrees_with_value_reading(valid.as_bytes(), Err(None)).is_err());
    let repeated = r#"{"status":"success","body":[],"body":[]}"#;
    assert!(
        agrees_with_value_reading(
            repeated.as_bytes(),
            parse_buckets_json(repeated)
                .map(|rows| rows.to_vec())
                .map_err(Some)
        )
        .is_ok()
    );
}
