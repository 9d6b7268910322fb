//! The decrypted JSON of a `/v2/identity/buckets` answer:
//! `{"body":[{"bucket_id":…,"last_updated":…},…],"status":"success"}`.
//!
//! A first sync carries about a million rows (~68 MiB of JSON), so rows are
//! deserialized straight into packed [`Rotations`] by hand-written visitors
//! that borrow strings from the input: no allocation per row or field, and
//! no intermediate `serde_json::Value` tree is ever built. Validation happens while reading: the first bad row is kept
//! (index and value), the rows read so far are dropped, and the rest of the
//! document is skipped without allocating, so a broken answer costs no more
//! memory than a good one.
//!
//! Validation is all-or-nothing: any problem rejects the whole response,
//! because ingesting part of an answer would move the high-water mark past
//! rotations the operator did report.
//!
//! Why not derived structs: a derived document stops at the first bad row,
//! so a `status` after the body, which says why the rows are odd, is never
//! read (a failure status must win over the rows); and its messages are
//! serde's, not a row index and a named problem. The visitors below stay
//! small: a row reads two keys, and every shape a visitor does not expect
//! goes through one macro.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::operator::DocumentError;
use crate::rotation::Rotations;
use crate::timestamp::{TimestampError, parse_iso_local, to_millis};

/// The only `status` value that carries rotations.
const STATUS_SUCCESS: &str = "success";

/// Bytes of JSON per row in the operator's compact output, used to pre-size
/// the row vector (`{"bucket_id":"a30od4mNRd","last_updated":"2022-06-05T22:52:03.109"},`
/// is 68 bytes); slightly under, so the estimate rarely has to grow.
const JSON_BYTES_PER_ROW: usize = 64;
/// Bytes of bucket id per row, to pre-size the packed ids: production ids
/// have 10 characters.
const ID_BYTES_PER_ROW: usize = 10;

/// Why a decrypted answer was refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error(transparent)]
    Document(#[from] DocumentError),
    #[error("response \"body\" is {found}, expected an array of rows")]
    BodyNotArray { found: String },
    #[error("response row {index}: {problem}")]
    InvalidRow { index: usize, problem: RowProblem },
}

/// What is wrong with one row of `body`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowProblem {
    #[error("row is {found}, expected an object")]
    NotAnObject { found: String },
    #[error("\"bucket_id\" is missing")]
    MissingBucketId,
    #[error("\"bucket_id\" is empty")]
    EmptyBucketId,
    #[error("\"bucket_id\" is {found}, expected a string")]
    BucketIdNotString { found: String },
    #[error("\"last_updated\" is missing")]
    MissingLastUpdated,
    #[error("\"last_updated\" is {found}, expected a string")]
    LastUpdatedNotString { found: String },
    #[error("\"last_updated\" {value:?} is not a timestamp: {source}")]
    UnparsableLastUpdated {
        value: String,
        source: TimestampError,
    },
    #[error("the key {0:?} appears more than once")]
    DuplicateKey(&'static str),
}

/// Parses and validates a decrypted answer into its rotations, in the order
/// the operator sent them; times to the millisecond, as they are stored.
pub fn parse_buckets_json(json: &str) -> Result<Rotations, ResponseError> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let document = DocumentSeed {
        expected_rows: json.len() / JSON_BYTES_PER_ROW,
    }
    .deserialize(&mut deserializer)
    .and_then(|document| deserializer.end().map(|()| document))
    .map_err(|error| ResponseError::Document(DocumentError::NotJson(error.to_string())))?;
    document.into_rotations()
}

/// The visitor methods for the JSON shapes a visitor does not expect: each
/// is described for the error message (`the number 42`, `an array`) and
/// handed to `$found`. Arrays and objects are skipped without allocating.
/// Names the shapes beyond the scalars the visitor leaves to this macro.
macro_rules! describe_other_shapes {
    ($de:lifetime, $value:ty, $found:expr $(, $shape:ident)*) => {
        fn visit_bool<E>(self, v: bool) -> Result<$value, E> {
            Ok(($found)(format!("the boolean {v}")))
        }
        fn visit_i64<E>(self, v: i64) -> Result<$value, E> {
            Ok(($found)(format!("the number {v}")))
        }
        fn visit_u64<E>(self, v: u64) -> Result<$value, E> {
            Ok(($found)(format!("the number {v}")))
        }
        fn visit_f64<E>(self, v: f64) -> Result<$value, E> {
            Ok(($found)(format!("the number {v}")))
        }
        fn visit_unit<E>(self) -> Result<$value, E> {
            Ok(($found)("null".to_owned()))
        }
        $(describe_other_shapes!(@$shape $de, $value, $found);)*
    };
    (@strings $de:lifetime, $value:ty, $found:expr) => {
        fn visit_str<E>(self, v: &str) -> Result<$value, E> {
            Ok(($found)(format!("the string {v:?}")))
        }
    };
    (@arrays $de:lifetime, $value:ty, $found:expr) => {
        fn visit_seq<A: SeqAccess<$de>>(self, seq: A) -> Result<$value, A::Error> {
            drain_seq(seq)?;
            Ok(($found)("an array".to_owned()))
        }
    };
    (@objects $de:lifetime, $value:ty, $found:expr) => {
        fn visit_map<A: MapAccess<$de>>(self, map: A) -> Result<$value, A::Error> {
            drain_map(map)?;
            Ok(($found)("an object".to_owned()))
        }
    };
}

/// A JSON value where a string is expected: the string (borrowed from the
/// input when it has no escapes), or a short rendering of anything else for
/// error messages.
enum Scalar<'de> {
    Text(Cow<'de, str>),
    Other(String),
}

impl Scalar<'_> {
    fn describe(&self) -> String {
        match self {
            Scalar::Text(text) => format!("the string {text:?}"),
            Scalar::Other(rendering) => rendering.clone(),
        }
    }
}

impl<'de> de::Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Text(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Text(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Scalar::Text(Cow::Owned(v)))
    }
    describe_other_shapes!('de, Scalar<'de>, Scalar::Other, arrays, objects);
}

fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Object keys this module cares about; everything else is skipped.
#[derive(Clone, Copy)]
enum Key {
    Status,
    Message,
    Body,
    BucketId,
    LastUpdated,
    Unknown,
}

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E>(self, v: &str) -> Result<Key, E> {
                Ok(match v {
                    "status" => Key::Status,
                    "message" => Key::Message,
                    "body" => Key::Body,
                    "bucket_id" => Key::BucketId,
                    "last_updated" => Key::LastUpdated,
                    _ => Key::Unknown,
                })
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

/// The top level as read, before the checks that need all of it (the status
/// can come after the body).
struct Document<'de> {
    shape: Result<Fields<'de>, String>,
}

#[derive(Default)]
struct Fields<'de> {
    status: Option<Scalar<'de>>,
    message: Option<Scalar<'de>>,
    body: Option<Body>,
    duplicate: Option<&'static str>,
}

enum Body {
    Rows(Rotations),
    NotArray(String),
    BadRow(usize, RowProblem),
}

impl Document<'_> {
    fn into_rotations(self) -> Result<Rotations, ResponseError> {
        let fields = self
            .shape
            .map_err(|found| ResponseError::Document(DocumentError::NotAnObject { found }))?;
        if let Some(key) = fields.duplicate {
            return Err(ResponseError::Document(DocumentError::DuplicateKey(key)));
        }
        match fields.status {
            None => return Err(ResponseError::Document(DocumentError::MissingStatus)),
            Some(Scalar::Text(status)) if status == STATUS_SUCCESS => {}
            Some(other) => {
                let status = match other {
                    Scalar::Text(text) => text.into_owned(),
                    Scalar::Other(rendering) => rendering,
                };
                let message = fields.message.map(|message| match message {
                    Scalar::Text(text) => text.into_owned(),
                    Scalar::Other(rendering) => rendering,
                });
                return Err(ResponseError::Document(DocumentError::StatusNotSuccess {
                    status,
                    message,
                }));
            }
        }
        match fields.body {
            None => Err(ResponseError::Document(DocumentError::MissingBody)),
            Some(Body::Rows(rows)) => Ok(rows),
            Some(Body::NotArray(found)) => Err(ResponseError::BodyNotArray { found }),
            Some(Body::BadRow(index, problem)) => Err(ResponseError::InvalidRow { index, problem }),
        }
    }
}

struct DocumentSeed {
    expected_rows: usize,
}

impl<'de> DeserializeSeed<'de> for DocumentSeed {
    type Value = Document<'de>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(DocumentVisitor {
            expected_rows: self.expected_rows,
        })
    }
}

struct DocumentVisitor {
    expected_rows: usize,
}

impl DocumentVisitor {
    fn not_an_object<'de>(found: String) -> Document<'de> {
        Document { shape: Err(found) }
    }
}

impl<'de> Visitor<'de> for DocumentVisitor {
    type Value = Document<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Fields::default();
        while let Some(key) = map.next_key::<Key>()? {
            let repeated = match key {
                Key::Status => fields.status.replace(map.next_value()?).is_some(),
                Key::Message => fields.message.replace(map.next_value()?).is_some(),
                Key::Body if fields.body.is_some() => {
                    map.next_value::<IgnoredAny>()?;
                    true
                }
                Key::Body => {
                    fields.body = Some(map.next_value_seed(BodySeed {
                        expected_rows: self.expected_rows,
                    })?);
                    false
                }
                Key::BucketId | Key::LastUpdated | Key::Unknown => {
                    map.next_value::<IgnoredAny>()?;
                    false
                }
            };
            if repeated {
                fields.duplicate.get_or_insert(match key {
                    Key::Status => "status",
                    Key::Message => "message",
                    _ => "body",
                });
            }
        }
        Ok(Document { shape: Ok(fields) })
    }

    describe_other_shapes!('de, Document<'de>, Self::not_an_object, strings, arrays);
}

struct BodySeed {
    expected_rows: usize,
}

impl<'de> DeserializeSeed<'de> for BodySeed {
    type Value = Body;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Body, D::Error> {
        deserializer.deserialize_any(BodyVisitor {
            expected_rows: self.expected_rows,
        })
    }
}

struct BodyVisitor {
    expected_rows: usize,
}

impl<'de> Visitor<'de> for BodyVisitor {
    type Value = Body;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of rows")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Body, A::Error> {
        let mut rows =
            Rotations::with_capacity(self.expected_rows, self.expected_rows * ID_BYTES_PER_ROW);
        let mut index = 0;
        while let Some(row) = seq.next_element::<Row>()? {
            match row.0 {
                Ok((bucket_id, last_updated_ms)) => rows
                    .push(&bucket_id, last_updated_ms)
                    .map_err(de::Error::custom)?,
                Err(problem) => {
                    drop(rows);
                    drain_seq(seq)?;
                    return Ok(Body::BadRow(index, problem));
                }
            }
            index += 1;
        }
        Ok(Body::Rows(rows))
    }

    describe_other_shapes!('de, Body, Body::NotArray, strings, objects);
}

/// One element of `body`, already validated: its bucket id (borrowed from
/// the input unless escaped) and time in ms. Problems are values, not serde
/// errors, so the caller can name the row and keep reading the document.
struct Row<'de>(Result<(Cow<'de, str>, i64), RowProblem>);

impl<'de> de::Deserialize<'de> for Row<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RowVisitor)
    }
}

struct RowVisitor;

impl RowVisitor {
    fn not_an_object<'de>(found: String) -> Row<'de> {
        Row(Err(RowProblem::NotAnObject { found }))
    }
}

impl<'de> Visitor<'de> for RowVisitor {
    type Value = Row<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a bucket row object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Row<'de>, A::Error> {
        let mut bucket_id: Option<Scalar<'de>> = None;
        let mut last_updated: Option<Scalar<'de>> = None;
        let mut duplicate = None;
        while let Some(key) = map.next_key::<Key>()? {
            let slot = match key {
                Key::BucketId => &mut bucket_id,
                Key::LastUpdated => &mut last_updated,
                Key::Status | Key::Message | Key::Body | Key::Unknown => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            if slot.replace(map.next_value::<Scalar>()?).is_some() {
                duplicate.get_or_insert(match key {
                    Key::BucketId => "bucket_id",
                    _ => "last_updated",
                });
            }
        }
        if let Some(key) = duplicate {
            return Ok(Row(Err(RowProblem::DuplicateKey(key))));
        }
        Ok(Row(validate_row(bucket_id, last_updated)))
    }

    describe_other_shapes!('de, Row<'de>, Self::not_an_object, strings, arrays);
}

fn validate_row<'de>(
    bucket_id: Option<Scalar<'de>>,
    last_updated: Option<Scalar<'_>>,
) -> Result<(Cow<'de, str>, i64), RowProblem> {
    let bucket_id = match bucket_id {
        None => return Err(RowProblem::MissingBucketId),
        Some(Scalar::Text(text)) if text.is_empty() => return Err(RowProblem::EmptyBucketId),
        Some(Scalar::Text(text)) => text,
        Some(other) => {
            return Err(RowProblem::BucketIdNotString {
                found: other.describe(),
            });
        }
    };
    let last_updated = match last_updated {
        None => return Err(RowProblem::MissingLastUpdated),
        Some(Scalar::Text(text)) => {
            parse_iso_local(&text).map_err(|source| RowProblem::UnparsableLastUpdated {
                value: text.into_owned(),
                source,
            })?
        }
        Some(other) => {
            return Err(RowProblem::LastUpdatedNotString {
                found: other.describe(),
            });
        }
    };
    Ok((bucket_id, to_millis(last_updated)))
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;
    use crate::rotation::BucketRotation;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn rotation(bucket_id: &str, at: &str) -> BucketRotation {
        BucketRotation {
            bucket_id: bucket_id.into(),
            last_updated: utc(at),
        }
    }

    fn row_problem(json: &str) -> (usize, RowProblem) {
        match parse_buckets_json(json) {
            Err(ResponseError::InvalidRow { index, problem }) => (index, problem),
            other => panic!("expected an invalid row, got {other:?}"),
        }
    }

    #[test]
    fn vector_3_payload_is_one_rotation() {
        let json = r#"{"body":[{"bucket_id":"a30od4mNRd","last_updated":"2022-06-05T22:52:03.109"}],"status":"success"}"#;
        assert_eq!(
            parse_buckets_json(json).unwrap().to_vec(),
            vec![rotation("a30od4mNRd", "2022-06-05T22:52:03.109Z")]
        );
    }

    #[test]
    fn every_fraction_precision_the_operator_has_printed_is_read_to_the_millisecond() {
        let json = r#"{"status":"success","body":[
            {"bucket_id":"m","last_updated":"2022-06-05T22:52"},
            {"bucket_id":"s","last_updated":"2022-06-05T22:52:03"},
            {"bucket_id":"f1","last_updated":"2022-06-05T22:52:03.1"},
            {"bucket_id":"f3","last_updated":"2022-06-05T22:52:03.109"},
            {"bucket_id":"f6","last_updated":"2022-06-05T22:52:03.109876"},
            {"bucket_id":"f9","last_updated":"2022-06-05T22:52:03.109876543"}
        ]}"#;
        assert_eq!(
            parse_buckets_json(json).unwrap().to_vec(),
            vec![
                rotation("m", "2022-06-05T22:52:00Z"),
                rotation("s", "2022-06-05T22:52:03Z"),
                rotation("f1", "2022-06-05T22:52:03.1Z"),
                rotation("f3", "2022-06-05T22:52:03.109Z"),
                rotation("f6", "2022-06-05T22:52:03.109Z"),
                rotation("f9", "2022-06-05T22:52:03.109Z"),
            ]
        );
    }

    #[test]
    fn key_order_does_not_matter_and_row_order_is_kept() {
        let json = r#"{"status":"success","body":[
            {"last_updated":"2025-03-02T00:00:00.000","bucket_id":"zzz"},
            {"bucket_id":"aaa","last_updated":"2025-03-01T00:00:00.000"}
        ]}"#;
        assert_eq!(
            parse_buckets_json(json).unwrap().to_vec(),
            vec![
                rotation("zzz", "2025-03-02T00:00:00Z"),
                rotation("aaa", "2025-03-01T00:00:00Z"),
            ]
        );
    }

    #[test]
    fn unknown_fields_are_ignored_at_every_level() {
        let json = r#"{"trace":{"id":[1,2,{"x":null}]},"body":[
            {"bucket_id":"b1","salt":"ignored","last_updated":"2025-03-01T00:00:00","extra":[true]}
        ],"status":"success","message":"fine"}"#;
        assert_eq!(
            parse_buckets_json(json).unwrap().to_vec(),
            vec![rotation("b1", "2025-03-01T00:00:00Z")]
        );
    }

    #[test]
    fn an_empty_body_is_no_rotations() {
        assert_eq!(
            parse_buckets_json(r#"{"body":[],"status":"success"}"#).unwrap(),
            Rotations::default()
        );
    }

    #[test]
    fn escaped_bucket_ids_are_unescaped() {
        let json = r#"{"status":"success","body":[{"bucket_id":"a\/b\u0041","last_updated":"2025-03-01T00:00"}]}"#;
        assert_eq!(
            parse_buckets_json(json).unwrap().iter().next().unwrap().0,
            "a/bA"
        );
    }

    #[test]
    fn a_status_other_than_success_carries_status_and_message() {
        let error = parse_buckets_json(
            r#"{"message":"invalid date, must conform to ISO 8601","status":"client_error"}"#,
        )
        .unwrap_err();
        assert_eq!(
            error,
            ResponseError::Document(DocumentError::StatusNotSuccess {
                status: "client_error".to_owned(),
                message: Some("invalid date, must conform to ISO 8601".to_owned()),
            })
        );
        assert_eq!(
            error.to_string(),
            "operator answered status client_error: invalid date, must conform to ISO 8601"
        );
        // The status decides even when the body is present and well-formed.
        assert_eq!(
            parse_buckets_json(r#"{"body":[],"status":"error"}"#).unwrap_err(),
            ResponseError::Document(DocumentError::StatusNotSuccess {
                status: "error".to_owned(),
                message: None
            })
        );
        assert_eq!(
            parse_buckets_json(r#"{"body":[],"status":1}"#).unwrap_err(),
            ResponseError::Document(DocumentError::StatusNotSuccess {
                status: "the number 1".to_owned(),
                message: None
            })
        );
    }

    #[test]
    fn a_failure_status_is_reported_rather_than_a_bad_row_before_it() {
        // A failure status wins over row problems: it says why the rows are odd.
        assert_eq!(
            parse_buckets_json(r#"{"body":[{"bucket_id":""}],"status":"error"}"#).unwrap_err(),
            ResponseError::Document(DocumentError::StatusNotSuccess {
                status: "error".to_owned(),
                message: None
            })
        );
    }

    #[test]
    fn document_level_rejections_each_have_their_own_error() {
        assert!(matches!(
            parse_buckets_json(r#"{"body":["#).unwrap_err(),
            ResponseError::Document(DocumentError::NotJson(_))
        ));
        assert!(matches!(
            parse_buckets_json(r#"{"body":[],"status":"success"} trailing"#).unwrap_err(),
            ResponseError::Document(DocumentError::NotJson(_))
        ));
        assert_eq!(
            parse_buckets_json(r#"[{"bucket_id":"a"}]"#).unwrap_err(),
            ResponseError::Document(DocumentError::NotAnObject {
                found: "an array".to_owned()
            })
        );
        assert_eq!(
            parse_buckets_json(r#""success""#).unwrap_err(),
            ResponseError::Document(DocumentError::NotAnObject {
                found: "the string \"success\"".to_owned()
            })
        );
        assert_eq!(
            parse_buckets_json(r#"{"body":[]}"#).unwrap_err(),
            ResponseError::Document(DocumentError::MissingStatus)
        );
        assert_eq!(
            parse_buckets_json(r#"{"status":"success"}"#).unwrap_err(),
            ResponseError::Document(DocumentError::MissingBody)
        );
        assert_eq!(
            parse_buckets_json(r#"{"status":"success","body":{"a":1}}"#).unwrap_err(),
            ResponseError::BodyNotArray {
                found: "an object".to_owned()
            }
        );
        assert_eq!(
            parse_buckets_json(r#"{"status":"success","body":null}"#).unwrap_err(),
            ResponseError::BodyNotArray {
                found: "null".to_owned()
            }
        );
        assert_eq!(
            parse_buckets_json(r#"{"status":"success","body":[],"body":[]}"#).unwrap_err(),
            ResponseError::Document(DocumentError::DuplicateKey("body"))
        );
        assert_eq!(
            parse_buckets_json(r#"{"status":"error","body":[],"status":"success"}"#).unwrap_err(),
            ResponseError::Document(DocumentError::DuplicateKey("status"))
        );
    }

    #[test]
    fn row_rejections_name_the_row_and_the_bad_value() {
        let ok = r#"{"bucket_id":"good","last_updated":"2025-03-01T00:00:00.000"}"#;
        let with_second_row =
            |row: &str| format!(r#"{{"status":"success","body":[{ok},{row},{ok}]}}"#);

        assert_eq!(
            row_problem(&with_second_row(r#""a string row""#)),
            (
                1,
                RowProblem::NotAnObject {
                    found: "the string \"a string row\"".to_owned()
                }
            )
        );
        assert_eq!(
            row_problem(&with_second_row(r#"{"last_updated":"2025-03-01T00:00"}"#)),
            (1, RowProblem::MissingBucketId)
        );
        assert_eq!(
            row_problem(&with_second_row(
                r#"{"bucket_id":"","last_updated":"2025-03-01T00:00"}"#
            )),
            (1, RowProblem::EmptyBucketId)
        );
        assert_eq!(
            row_problem(&with_second_row(
                r#"{"bucket_id":42,"last_updated":"2025-03-01T00:00"}"#
            )),
            (
                1,
                RowProblem::BucketIdNotString {
                    found: "the number 42".to_owned()
                }
            )
        );
        assert_eq!(
            row_problem(&with_second_row(r#"{"bucket_id":"b"}"#)),
            (1, RowProblem::MissingLastUpdated)
        );
        assert_eq!(
            row_problem(&with_second_row(
                r#"{"bucket_id":"b","last_updated":1654469523}"#
            )),
            (
                1,
                RowProblem::LastUpdatedNotString {
                    found: "the number 1654469523".to_owned()
                }
            )
        );
        let (index, problem) = row_problem(&with_second_row(
            r#"{"bucket_id":"b","last_updated":"2022-06-05T22:52:03Z"}"#,
        ));
        assert_eq!(index, 1);
        assert!(matches!(
            &problem,
            RowProblem::UnparsableLastUpdated { value, source: TimestampError::Malformed(_) }
                if value == "2022-06-05T22:52:03Z"
        ));
        assert_eq!(
            ResponseError::InvalidRow { index, problem }.to_string(),
            "response row 1: \"last_updated\" \"2022-06-05T22:52:03Z\" is not a timestamp: \
             \"2022-06-05T22:52:03Z\" is not an ISO-8601 local date-time \
             (expected yyyy-MM-ddTHH:mm[:ss[.fraction]], no zone)"
        );
        assert!(matches!(
            row_problem(&with_second_row(
                r#"{"bucket_id":"b","last_updated":"2022-02-30T00:00:00"}"#
            )),
            (
                1,
                RowProblem::UnparsableLastUpdated {
                    source: TimestampError::OutOfRange(_),
                    ..
                }
            )
        ));
        assert_eq!(
            row_problem(&with_second_row(
                r#"{"bucket_id":"b","bucket_id":"c","last_updated":"2025-03-01T00:00"}"#
            )),
            (1, RowProblem::DuplicateKey("bucket_id"))
        );
    }

    #[test]
    fn the_first_bad_row_is_reported_and_syntax_after_it_is_still_checked() {
        let json = r#"{"status":"success","body":[{"bucket_id":""},{"bucket_id":5}]}"#;
        assert_eq!(row_problem(json), (0, RowProblem::EmptyBucketId));
        let broken_after = r#"{"status":"success","body":[{"bucket_id":""},{"bucket_id":5]}"#;
        assert!(matches!(
            parse_buckets_json(broken_after).unwrap_err(),
            ResponseError::Document(DocumentError::NotJson(_))
        ));
    }
}
