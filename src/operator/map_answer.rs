//! What both identity-map answers (`/v2/identity/map`, `/v3/identity/map`)
//! are made of: the per-identity outcomes a caller stores ([`RawUid2`],
//! [`UnmappedReason`]), the reasons an answer is refused
//! ([`MapAnswerError`], [`ElementProblem`]) and the readers for the fields
//! the two share.
//!
//! Answers are read into a borrowed JSON tree ([`Json`]) rather than into
//! derived structs: a derived struct fails with serde's message, which can
//! quote the offending string, and strings here are raw UID2s and echoed
//! identity hashes. Every check below names the array, index and field
//! instead, and describes a bad value by its kind only. An answer holds at
//! most a few thousand small objects, so the tree costs little.

use std::borrow::Cow;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use serde::de::{self, MapAccess, SeqAccess, Visitor};

use crate::operator::DocumentError;

/// The only `status` that carries mappings.
const STATUS_SUCCESS: &str = "success";
const REASON_OPTOUT: &str = "optout";
const REASON_INVALID: &str = "invalid identifier";

/// Bytes in a raw UID2 (and an EUID).
pub(crate) const RAW_UID2_LEN: usize = 32;

/// `r` values above this are milliseconds: the docs said milliseconds until
/// 2026-04 and third-party copies still do. As seconds it is the year 5138.
const MILLIS_THRESHOLD: i64 = 100_000_000_000;
/// The plausible range of `r`, in seconds: 2020-01-01 (before UID2's
/// identity map existed) to 2100-01-01. A refresh time is at most about 30
/// days ahead, so anything outside is a unit or encoding error.
const EARLIEST_REFRESH_S: i64 = 1_577_836_800;
const LATEST_REFRESH_S: i64 = 4_102_444_800;

/// A raw UID2 as the identity map returns it: 32 bytes. Its `Debug` is
/// redacted; [`RawUid2::to_base64`] is the deliberate way to show it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RawUid2([u8; RAW_UID2_LEN]);

impl RawUid2 {
    #[cfg(test)]
    pub(crate) fn from_bytes(bytes: [u8; RAW_UID2_LEN]) -> Self {
        Self(bytes)
    }

    /// The operator's spelling: standard padded base64.
    pub fn to_base64(self) -> String {
        STANDARD.encode(self.0)
    }
}

impl fmt::Debug for RawUid2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RawUid2(<redacted>)")
    }
}

/// Why the operator did not map an identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UnmappedReason {
    /// `optout`: the user opted out; drop any UID2 held for them.
    OptOut,
    /// `invalid identifier`: the hash was not a valid identifier.
    InvalidIdentifier,
    /// A reason this client does not know, as the operator wrote it. Kept,
    /// not refused: the operator may add reasons, and one unknown reason
    /// says nothing about the rest of the answer.
    Unknown(String),
}

impl UnmappedReason {
    fn from_operator(reason: &str) -> Self {
        match reason {
            REASON_OPTOUT => Self::OptOut,
            REASON_INVALID => Self::InvalidIdentifier,
            other => Self::Unknown(other.to_owned()),
        }
    }
}

impl fmt::Display for UnmappedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OptOut => f.write_str(REASON_OPTOUT),
            Self::InvalidIdentifier => f.write_str(REASON_INVALID),
            Self::Unknown(reason) => write!(f, "unknown reason {reason:?}"),
        }
    }
}

/// Why a decrypted identity-map answer was refused as a whole. No variant
/// holds a UID2 or an identity hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapAnswerError {
    #[error(transparent)]
    Document(#[from] DocumentError),
    #[error("response \"body\" is {found}, expected an object")]
    BodyNotAnObject { found: String },
    #[error("response \"body\" has no {0:?} array")]
    MissingArray(&'static str),
    #[error("response \"body.{array}\" is {found}, expected an array")]
    NotAnArray { array: &'static str, found: String },
    #[error(
        "response \"body.{array}\" has {answered} elements for {sent} identities sent; \
         the batch is refused because results cannot be matched to identities"
    )]
    WrongLength {
        array: &'static str,
        sent: usize,
        answered: usize,
    },
    #[error("response \"body.{array}[{index}]\": {problem}")]
    InvalidElement {
        array: &'static str,
        index: usize,
        problem: ElementProblem,
    },
    #[error(
        "response has no result for {count} of the identities sent (the first is input {input} \
         of the request)"
    )]
    Unanswered { input: usize, count: usize },
}

/// What is wrong with one element of an answer's array.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElementProblem {
    #[error("element is {found}, expected an object")]
    NotAnObject { found: String },
    #[error("the key {0:?} appears more than once")]
    DuplicateKey(&'static str),
    #[error("{0:?} is missing")]
    Missing(&'static str),
    #[error("{field:?} is {found}, expected {expected}")]
    WrongType {
        field: &'static str,
        found: String,
        expected: &'static str,
    },
    #[error("{0:?} is not standard padded base64")]
    NotBase64(&'static str),
    #[error("{field:?} decodes to {bytes} bytes, expected {RAW_UID2_LEN}")]
    WrongUidLength { field: &'static str, bytes: usize },
    #[error("neither \"u\" (mapped) nor \"e\" (unmapped) is present")]
    NeitherMappedNorUnmapped,
    #[error("both \"u\" (mapped) and \"e\" (unmapped) are present")]
    MappedAndUnmapped,
    #[error(
        "\"r\" is {value}, not a plausible refresh time (seconds since 1970 between 2020 and \
         2100, or milliseconds above 10^11)"
    )]
    ImplausibleRefresh { value: String },
    #[error("\"bucket_id\" is empty")]
    EmptyBucketId,
    #[error("\"identifier\" is not the base64 of a 32-byte hash, so it cannot be one sent")]
    IdentifierNotAHash,
    #[error("\"identifier\" is not one of the identities sent")]
    IdentifierNotSent,
    #[error("\"identifier\" is answered more often than it was sent")]
    IdentifierRepeated,
}

/// Any JSON value, strings borrowed from the input when unescaped.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json<'a> {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    Text(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
}

impl Json<'_> {
    /// The value's kind for an error message. Never a string's content:
    /// it could be a UID2 or a hash.
    pub(crate) fn describe(&self) -> String {
        match self {
            Json::Null => "null".to_owned(),
            Json::Bool(value) => format!("the boolean {value}"),
            Json::Number(value) => format!("the number {value}"),
            Json::Text(_) => "a string".to_owned(),
            Json::Array(_) => "an array".to_owned(),
            Json::Object(_) => "an object".to_owned(),
        }
    }
}

impl<'de> de::Deserialize<'de> for Json<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Json::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Json::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        serde_json::Number::from_f64(v)
            .map(Json::Number)
            .ok_or_else(|| E::custom("a number that is not finite"))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Json::Text(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Json::Text(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Json::Text(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut elements = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(element) = seq.next_element()? {
            elements.push(element);
        }
        Ok(Json::Array(elements))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Vec::with_capacity(4);
        while let Some((key, value)) = map.next_entry::<Cow<'de, str>, Json<'de>>()? {
            fields.push((key, value));
        }
        Ok(Json::Object(fields))
    }
}

/// An object's fields, in the order sent.
pub(crate) type Fields<'a> = [(Cow<'a, str>, Json<'a>)];

/// The value of `name` in `fields`; `Err(name)` when it appears twice.
pub(crate) fn field<'f, 'a>(
    fields: &'f Fields<'a>,
    name: &'static str,
) -> Result<Option<&'f Json<'a>>, &'static str> {
    let mut found = fields.iter().filter(|(key, _)| key == name);
    let first = found.next().map(|(_, value)| value);
    match found.next() {
        Some(_) => Err(name),
        None => Ok(first),
    }
}

/// Parses the answer and checks its envelope fields: an object with
/// `status` `"success"` and an object `body`, whose fields are returned.
pub(crate) fn parse_document(json: &str) -> Result<Json<'_>, MapAnswerError> {
    serde_json::from_str(json)
        .map_err(|error| MapAnswerError::Document(DocumentError::NotJson(error.to_string())))
}

/// The fields of a parsed answer's `body`, after the `status` check.
pub(crate) fn success_body<'f, 'a>(
    document: &'f Json<'a>,
) -> Result<&'f Fields<'a>, MapAnswerError> {
    let Json::Object(top) = document else {
        return Err(MapAnswerError::Document(DocumentError::NotAnObject {
            found: document.describe(),
        }));
    };
    let status = field(top, "status").map_err(DocumentError::DuplicateKey)?;
    let message = field(top, "message").map_err(DocumentError::DuplicateKey)?;
    let body = field(top, "body").map_err(DocumentError::DuplicateKey)?;
    match status {
        None => return Err(MapAnswerError::Document(DocumentError::MissingStatus)),
        Some(Json::Text(status)) if status == STATUS_SUCCESS => {}
        Some(other) => {
            let shown = |value: &Json| match value {
                // The operator's own words: a status and an error message.
                Json::Text(text) => super::error::clip_detail(text),
                other => other.describe(),
            };
            return Err(MapAnswerError::Document(DocumentError::StatusNotSuccess {
                status: shown(other),
                message: message.map(shown),
            }));
        }
    }
    match body {
        None => Err(MapAnswerError::Document(DocumentError::MissingBody)),
        Some(Json::Object(fields)) => Ok(fields),
        Some(other) => Err(MapAnswerError::BodyNotAnObject {
            found: other.describe(),
        }),
    }
}

/// The array `name` of `body`, `None` when absent.
pub(crate) fn array<'f, 'a>(
    body: &'f Fields<'a>,
    name: &'static str,
) -> Result<Option<&'f [Json<'a>]>, MapAnswerError> {
    match field(body, name).map_err(DocumentError::DuplicateKey)? {
        None => Ok(None),
        Some(Json::Array(elements)) => Ok(Some(elements)),
        Some(other) => Err(MapAnswerError::NotAnArray {
            array: name,
            found: other.describe(),
        }),
    }
}

/// An array element's fields.
pub(crate) fn element_fields<'f, 'a>(
    element: &'f Json<'a>,
) -> Result<&'f Fields<'a>, ElementProblem> {
    match element {
        Json::Object(fields) => Ok(fields),
        other => Err(ElementProblem::NotAnObject {
            found: other.describe(),
        }),
    }
}

/// The field `name` of an element, `None` when absent.
pub(crate) fn optional<'f, 'a>(
    fields: &'f Fields<'a>,
    name: &'static str,
) -> Result<Option<&'f Json<'a>>, ElementProblem> {
    field(fields, name).map_err(ElementProblem::DuplicateKey)
}

/// The field `name` of an element, which must be present.
pub(crate) fn required<'f, 'a>(
    fields: &'f Fields<'a>,
    name: &'static str,
) -> Result<&'f Json<'a>, ElementProblem> {
    optional(fields, name)?.ok_or(ElementProblem::Missing(name))
}

/// The string in field `name`.
pub(crate) fn text<'f>(name: &'static str, value: &'f Json<'_>) -> Result<&'f str, ElementProblem> {
    match value {
        Json::Text(text) => Ok(text),
        other => Err(ElementProblem::WrongType {
            field: name,
            found: other.describe(),
            expected: "a string",
        }),
    }
}

/// A raw UID2 in field `name`: base64 of exactly 32 bytes.
pub(crate) fn raw_uid(name: &'static str, value: &Json<'_>) -> Result<RawUid2, ElementProblem> {
    let text = text(name, value)?;
    // Room for any text up to twice the right length, so a wrong length
    // is reported as such rather than as bad base64.
    let mut bytes = [0u8; 2 * RAW_UID2_LEN];
    if text.len() > 4 * bytes.len() / 3 {
        return Err(ElementProblem::WrongUidLength {
            field: name,
            bytes: text.len() / 4 * 3,
        });
    }
    let decoded = STANDARD
        .decode_slice(text, &mut bytes)
        .map_err(|_| ElementProblem::NotBase64(name))?;
    let uid = bytes[..decoded]
        .try_into()
        .map_err(|_| ElementProblem::WrongUidLength {
            field: name,
            bytes: decoded,
        })?;
    Ok(RawUid2(uid))
}

/// The unmapped reason in field `name`.
pub(crate) fn reason(
    name: &'static str,
    value: &Json<'_>,
) -> Result<UnmappedReason, ElementProblem> {
    text(name, value).map(UnmappedReason::from_operator)
}

/// v3's `r`: Unix seconds, or milliseconds when above 10^11.
pub(crate) fn refresh_from(value: &Json<'_>) -> Result<DateTime<Utc>, ElementProblem> {
    let number = match value {
        Json::Number(number) => number,
        other => {
            return Err(ElementProblem::WrongType {
                field: "r",
                found: other.describe(),
                expected: "an integer",
            });
        }
    };
    let implausible = || ElementProblem::ImplausibleRefresh {
        value: number.to_string(),
    };
    let Some(raw) = number.as_i64() else {
        return Err(if number.is_f64() {
            ElementProblem::WrongType {
                field: "r",
                found: value.describe(),
                expected: "an integer",
            }
        } else {
            implausible()
        });
    };
    let millis = if raw > MILLIS_THRESHOLD {
        raw
    } else {
        raw.saturating_mul(1000)
    };
    if !(EARLIEST_REFRESH_S * 1000..=LATEST_REFRESH_S * 1000).contains(&millis) {
        return Err(implausible());
    }
    DateTime::from_timestamp_millis(millis).ok_or_else(implausible)
}

/// Distinct, recognisable values for the endpoints' unit tests.
#[cfg(test)]
pub(crate) mod test_values {
    use super::RawUid2;
    use crate::identity::IdentityHash;

    /// The hash whose 32 bytes are all `n`.
    pub(crate) fn hash(n: u8) -> IdentityHash {
        use base64::Engine;
        IdentityHash::from_hash_text(&base64::engine::general_purpose::STANDARD.encode([n; 32]))
            .unwrap()
    }

    /// The raw UID2 whose 32 bytes are all `n`.
    pub(crate) fn uid(n: u8) -> RawUid2 {
        RawUid2::from_bytes([n; 32])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(json: &str) -> Json<'_> {
        parse_document(json).unwrap()
    }

    #[test]
    fn strings_without_escapes_are_borrowed_from_the_answer() {
        let Json::Object(fields) = parsed(r#"{"u":"abc","e":"a\"b"}"#) else {
            panic!("an object");
        };
        assert!(matches!(fields[0].1, Json::Text(Cow::Borrowed("abc"))));
        assert!(matches!(&fields[1].1, Json::Text(Cow::Owned(text)) if text == "a\"b"));
    }

    #[test]
    fn a_value_is_described_by_its_kind_never_by_its_text() {
        let described: Vec<String> = [
            "null",
            "true",
            "-3",
            "1.5",
            r#""tMmiiTI7IaAcPpQPFQ65uMVCWH8av9jw4cwf/F5HVRQ=""#,
            "[]",
            "{}",
        ]
        .iter()
        .map(|json| parsed(json).describe())
        .collect();
        assert_eq!(
            described,
            [
                "null",
                "the boolean true",
                "the number -3",
                "the number 1.5",
                "a string",
                "an array",
                "an object"
            ]
        );
    }

    #[test]
    fn a_status_other_than_success_is_refused_with_the_operators_message() {
        let document = parsed(r#"{"status":"client_error","message":"Invalid body"}"#);
        assert_eq!(
            success_body(&document).unwrap_err(),
            MapAnswerError::Document(DocumentError::StatusNotSuccess {
                status: "client_error".to_owned(),
                message: Some("Invalid body".to_owned()),
            })
        );
        let document = parsed(r#"{"status":7,"body":{}}"#);
        assert_eq!(
            success_body(&document).unwrap_err().to_string(),
            "operator answered status the number 7"
        );
    }

    #[test]
    fn the_envelope_fields_are_checked_in_order() {
        for (json, error) in [
            (
                "[]",
                MapAnswerError::Document(DocumentError::NotAnObject {
                    found: "an array".to_owned(),
                }),
            ),
            (
                r#"{"body":{}}"#,
                MapAnswerError::Document(DocumentError::MissingStatus),
            ),
            (
                r#"{"status":"success"}"#,
                MapAnswerError::Document(DocumentError::MissingBody),
            ),
            (
                r#"{"status":"success","body":[]}"#,
                MapAnswerError::BodyNotAnObject {
                    found: "an array".to_owned(),
                },
            ),
            (
                r#"{"status":"success","status":"success","body":{}}"#,
                MapAnswerError::Document(DocumentError::DuplicateKey("status")),
            ),
        ] {
            assert_eq!(success_body(&parsed(json)).unwrap_err(), error, "{json}");
        }
        assert!(matches!(
            parse_document(r#"{"status":"#).unwrap_err(),
            MapAnswerError::Document(DocumentError::NotJson(_))
        ));
    }

    #[test]
    fn a_raw_uid_must_be_base64_of_exactly_32_bytes() {
        let uid = RawUid2([7; 32]);
        let text = Json::Text(uid.to_base64().into());
        assert_eq!(raw_uid("u", &text).unwrap(), uid);
        let short = Json::Text(STANDARD.encode([7; 31]).into());
        assert_eq!(
            raw_uid("u", &short).unwrap_err(),
            ElementProblem::WrongUidLength {
                field: "u",
                bytes: 31
            }
        );
        let long = Json::Text(STANDARD.encode([7; 200]).into());
        assert!(matches!(
            raw_uid("p", &long).unwrap_err(),
            ElementProblem::WrongUidLength { field: "p", .. }
        ));
        let broken = Json::Text("not base64 at all!!".into());
        assert_eq!(
            raw_uid("u", &broken).unwrap_err(),
            ElementProblem::NotBase64("u")
        );
        assert_eq!(
            raw_uid("u", &Json::Null).unwrap_err().to_string(),
            "\"u\" is null, expected a string"
        );
    }

    #[test]
    fn a_raw_uid_debug_output_is_redacted() {
        let uid = RawUid2([0xab; 32]);
        assert_eq!(format!("{uid:?}"), "RawUid2(<redacted>)");
        assert!(!format!("{:?}", Some(uid)).contains(&uid.to_base64()));
    }

    #[test]
    fn refresh_from_reads_seconds_and_converts_milliseconds() {
        let midnight = DateTime::parse_from_rfc3339("2026-09-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let seconds = midnight.timestamp();
        assert_eq!(refresh_from(&parsed(&seconds.to_string())), Ok(midnight));
        assert_eq!(
            refresh_from(&parsed(&(seconds * 1000).to_string())),
            Ok(midnight)
        );
    }

    #[test]
    fn an_implausible_or_non_integer_refresh_is_refused() {
        for json in [
            "0",
            "-1",
            "1000",
            "99999999999",
            "4102444801",
            "5000000000000",
            "18446744073709551615",
        ] {
            assert!(
                matches!(
                    refresh_from(&parsed(json)),
                    Err(ElementProblem::ImplausibleRefresh { .. })
                ),
                "{json}"
            );
        }
        for json in ["1756684800.5", r#""1756684800""#, "null"] {
            assert!(
                matches!(
                    refresh_from(&parsed(json)),
                    Err(ElementProblem::WrongType { field: "r", .. })
                ),
                "{json}"
            );
        }
    }

    #[test]
    fn known_reasons_are_named_and_others_kept_as_unknown() {
        assert_eq!(
            UnmappedReason::from_operator("optout"),
            UnmappedReason::OptOut
        );
        assert_eq!(
            UnmappedReason::from_operator("invalid identifier"),
            UnmappedReason::InvalidIdentifier
        );
        assert_eq!(
            UnmappedReason::from_operator("Optout"),
            UnmappedReason::Unknown("Optout".to_owned())
        );
    }

    #[test]
    fn a_repeated_field_is_refused() {
        let Json::Object(fields) = parsed(r#"{"u":"a","u":"b"}"#) else {
            panic!("an object");
        };
        assert_eq!(
            optional(&fields, "u").unwrap_err(),
            ElementProblem::DuplicateKey("u")
        );
        assert_eq!(
            required(&fields, "r").unwrap_err(),
            ElementProblem::Missing("r")
        );
    }
}
