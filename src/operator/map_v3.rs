//! `POST /v3/identity/map`: current and previous raw UID2 and refresh time
//! for each identity hash, one answer element per input at the same index.
//!
//! The request carries only `email_hash` and `phone_hash` (hashing happens
//! on our side; raw values never leave the process), and omits an array
//! with nothing in it. The operator refuses any other key, so nothing else
//! is ever sent. The answer is refused as a whole on any failed check:
//! results are matched to identities by position, so one missing or
//! malformed element puts every result after it in doubt.

use chrono::{DateTime, Utc};

use crate::identity::{IdentityHash, IdentityType};
use crate::operator::body::BodyEncoding;
use crate::operator::map_answer::{
    ElementProblem, Json, MapAnswerError, RawUid2, UnmappedReason, array, element_fields, optional,
    parse_document, raw_uid, reason, refresh_from, required, success_body,
};
use crate::operator::transport::Endpoint;

/// The endpoint, relative to the base URL.
pub const MAP_V3_PATH: &str = "/v3/identity/map";

/// The answer's arrays in the operator's order, and what each held in the
/// request: raw values are never sent, so their arrays must come back empty.
const ARRAYS: [(&str, Option<IdentityType>); 4] = [
    ("email", None),
    ("email_hash", Some(IdentityType::Email)),
    ("phone", None),
    ("phone_hash", Some(IdentityType::Phone)),
];

/// One mapped identity: what a re-map worker stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V3Mapping {
    /// The identity's raw UID2 now.
    pub current: RawUid2,
    /// The raw UID2 before the bucket's last rotation, while that rotation
    /// is under 90 days old.
    pub previous: Option<RawUid2>,
    /// Map the identity again at or after this instant (a UTC midnight).
    pub refresh_from: DateTime<Utc>,
}

/// The outcome for one identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum V3Result {
    Mapped(V3Mapping),
    Unmapped(UnmappedReason),
}

/// A v3 request: the identities in the caller's order. The answer lists
/// results in the same order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapV3Request {
    identities: Vec<(IdentityType, IdentityHash)>,
}

impl MapV3Request {
    pub fn new(identities: Vec<(IdentityType, IdentityHash)>) -> Self {
        Self { identities }
    }

    pub(crate) fn len(&self) -> usize {
        self.identities.len()
    }

    fn hashes(&self, kind: IdentityType) -> impl Iterator<Item = &IdentityHash> {
        self.identities
            .iter()
            .filter(move |(of, _)| *of == kind)
            .map(|(_, hash)| hash)
    }
}

impl Endpoint for MapV3Request {
    fn encoding(_configured: BodyEncoding) -> BodyEncoding {
        BodyEncoding::Binary
    }

    const PATH: &'static str = MAP_V3_PATH;
    type Answer = Vec<V3Result>;
    type Problem = MapAnswerError;

    fn request_json(&self) -> Vec<u8> {
        let mut json = Vec::with_capacity(super::batch::json_bytes(self.len()));
        json.push(b'{');
        for (name, kind) in ARRAYS {
            let Some(kind) = kind else { continue };
            let mut hashes = self.hashes(kind).peekable();
            if hashes.peek().is_none() {
                continue;
            }
            if json.len() > 1 {
                json.push(b',');
            }
            super::batch::write_hash_array(&mut json, name, hashes);
        }
        json.push(b'}');
        json
    }

    fn parse_answer(&self, json: &str) -> Result<Self::Answer, Self::Problem> {
        let document = parse_document(json)?;
        let body = success_body(&document)?;
        let mut emails: &[Json] = &[];
        let mut phones: &[Json] = &[];
        for (name, kind) in ARRAYS {
            let elements = array(body, name)?.ok_or(MapAnswerError::MissingArray(name))?;
            let sent = kind.map_or(0, |kind| self.hashes(kind).count());
            if elements.len() != sent {
                return Err(MapAnswerError::WrongLength {
                    array: name,
                    sent,
                    answered: elements.len(),
                });
            }
            match kind {
                Some(IdentityType::Email) => emails = elements,
                Some(IdentityType::Phone) => phones = elements,
                None => {}
            }
        }
        let (mut next_email, mut next_phone) = (0, 0);
        self.identities
            .iter()
            .map(|(kind, _)| {
                let (array, elements, next) = match kind {
                    IdentityType::Email => ("email_hash", emails, &mut next_email),
                    IdentityType::Phone => ("phone_hash", phones, &mut next_phone),
                };
                let index = *next;
                *next += 1;
                read_element(&elements[index]).map_err(|problem| MapAnswerError::InvalidElement {
                    array,
                    index,
                    problem,
                })
            })
            .collect()
    }
}

/// `{"u","p","r"}` or `{"e"}`; other keys are ignored.
fn read_element(element: &Json<'_>) -> Result<V3Result, ElementProblem> {
    let fields = element_fields(element)?;
    match (optional(fields, "u")?, optional(fields, "e")?) {
        (Some(_), Some(_)) => Err(ElementProblem::MappedAndUnmapped),
        (None, None) => Err(ElementProblem::NeitherMappedNorUnmapped),
        (None, Some(e)) => reason("e", e).map(V3Result::Unmapped),
        (Some(u), None) => {
            let previous = match optional(fields, "p")? {
                None | Some(Json::Null) => None,
                Some(p) => Some(raw_uid("p", p)?),
            };
            Ok(V3Result::Mapped(V3Mapping {
                current: raw_uid("u", u)?,
                previous,
                refresh_from: refresh_from(required(fields, "r")?)?,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    use super::*;
    use crate::identity::IdentityType::{Email, Phone};

    use crate::operator::map_answer::test_values::{hash, uid};

    /// 2026-09-01T00:00:00Z.
    const R: i64 = 1_788_220_800;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 0).unwrap()
    }

    fn mapped(u: u8, p: Option<u8>) -> String {
        let p = p.map_or("null".to_owned(), |p| format!("{:?}", uid(p).to_base64()));
        format!(r#"{{"u":{:?},"p":{p},"r":{R}}}"#, uid(u).to_base64())
    }

    fn answer(email_hash: &[String], phone_hash: &[String]) -> String {
        format!(
            r#"{{"body":{{"email":[],"email_hash":[{}],"phone":[],"phone_hash":[{}]}},"status":"success"}}"#,
            email_hash.join(","),
            phone_hash.join(",")
        )
    }

    fn request() -> MapV3Request {
        MapV3Request::new(vec![(Phone, hash(1)), (Email, hash(2)), (Email, hash(3))])
    }

    #[test]
    fn the_request_sends_only_the_hash_arrays_in_input_order() {
        let json: serde_json::Value = serde_json::from_slice(&request().request_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "email_hash": [hash(2).to_string(), hash(3).to_string()],
                "phone_hash": [hash(1).to_string()],
            })
        );
    }

    #[test]
    fn an_array_with_nothing_to_send_is_left_out() {
        let only_phones = MapV3Request::new(vec![(Phone, hash(1))]);
        assert_eq!(
            String::from_utf8(only_phones.request_json()).unwrap(),
            format!(r#"{{"phone_hash":["{}"]}}"#, hash(1))
        );
    }

    #[test]
    fn results_come_back_in_input_order_across_both_arrays() {
        let json = answer(
            &[r#"{"e":"optout"}"#.to_owned(), mapped(3, Some(4))],
            &[mapped(1, None)],
        );
        assert_eq!(
            request().parse_answer(&json).unwrap(),
            vec![
                V3Result::Mapped(V3Mapping {
                    current: uid(1),
                    previous: None,
                    refresh_from: at(R),
                }),
                V3Result::Unmapped(UnmappedReason::OptOut),
                V3Result::Mapped(V3Mapping {
                    current: uid(3),
                    previous: Some(uid(4)),
                    refresh_from: at(R),
                }),
            ]
        );
    }

    #[test]
    fn a_refresh_time_in_milliseconds_is_converted_to_the_same_instant() {
        let json = answer(
            &[],
            &[format!(
                r#"{{"u":{:?},"p":null,"r":{}}}"#,
                uid(1).to_base64(),
                R * 1000
            )],
        );
        let request = MapV3Request::new(vec![(Phone, hash(1))]);
        let [V3Result::Mapped(mapping)] = request.parse_answer(&json).unwrap()[..] else {
            panic!("one mapped result");
        };
        assert_eq!(mapping.refresh_from, at(R));
    }

    #[test]
    fn an_implausible_refresh_time_rejects_the_batch_naming_the_element() {
        let json = answer(
            &[],
            &[format!(r#"{{"u":{:?},"r":12345}}"#, uid(1).to_base64())],
        );
        let error = MapV3Request::new(vec![(Phone, hash(1))])
            .parse_answer(&json)
            .unwrap_err();
        assert_eq!(
            error,
            MapAnswerError::InvalidElement {
                array: "phone_hash",
                index: 0,
                problem: ElementProblem::ImplausibleRefresh {
                    value: "12345".to_owned()
                },
            }
        );
    }

    #[test]
    fn a_missing_or_absent_previous_uid_is_none() {
        let json = answer(
            &[format!(r#"{{"u":{:?},"r":{R}}}"#, uid(5).to_base64())],
            &[],
        );
        let [V3Result::Mapped(mapping)] = MapV3Request::new(vec![(Email, hash(5))])
            .parse_answer(&json)
            .unwrap()[..]
        else {
            panic!("one mapped result");
        };
        assert_eq!(mapping.previous, None);
    }

    #[test]
    fn an_unknown_reason_is_kept_as_unknown() {
        let json = answer(
            &[
                r#"{"e":"invalid identifier"}"#.to_owned(),
                r#"{"e":"geo restricted"}"#.to_owned(),
            ],
            &[],
        );
        assert_eq!(
            MapV3Request::new(vec![(Email, hash(1)), (Email, hash(2))])
                .parse_answer(&json)
                .unwrap(),
            vec![
                V3Result::Unmapped(UnmappedReason::InvalidIdentifier),
                V3Result::Unmapped(UnmappedReason::Unknown("geo restricted".to_owned())),
            ]
        );
    }

    #[test]
    fn each_missing_array_is_named() {
        for missing in ["email", "email_hash", "phone", "phone_hash"] {
            let mut body = serde_json::json!({
                "email": [], "email_hash": [], "phone": [], "phone_hash": []
            });
            body.as_object_mut().unwrap().remove(missing);
            let json = serde_json::json!({ "body": body, "status": "success" }).to_string();
            assert_eq!(
                MapV3Request::new(vec![]).parse_answer(&json).unwrap_err(),
                MapAnswerError::MissingArray(missing),
                "{missing}"
            );
        }
    }

    #[test]
    fn a_status_other_than_success_rejects_the_batch() {
        let json = r#"{"status":"client_error","message":"Incorrect request format"}"#;
        assert_eq!(
            request().parse_answer(json).unwrap_err().to_string(),
            "operator answered status client_error: Incorrect request format"
        );
    }

    #[test]
    fn a_result_count_other_than_the_inputs_rejects_the_batch() {
        let json = answer(&[mapped(2, None)], &[mapped(1, None)]);
        assert_eq!(
            request().parse_answer(&json).unwrap_err(),
            MapAnswerError::WrongLength {
                array: "email_hash",
                sent: 2,
                answered: 1
            }
        );
        let extra_raw = r#"{"body":{"email":[{"e":"optout"}],"email_hash":[],"phone":[],"phone_hash":[]},"status":"success"}"#;
        assert_eq!(
            MapV3Request::new(vec![])
                .parse_answer(extra_raw)
                .unwrap_err(),
            MapAnswerError::WrongLength {
                array: "email",
                sent: 0,
                answered: 1
            }
        );
    }

    #[test]
    fn each_malformed_element_rejects_the_batch_with_its_own_problem() {
        let u = uid(1).to_base64();
        for (element, problem) in [
            (
                "[]".to_owned(),
                ElementProblem::NotAnObject {
                    found: "an array".to_owned(),
                },
            ),
            (
                format!(r#"{{"r":{R}}}"#),
                ElementProblem::NeitherMappedNorUnmapped,
            ),
            (
                format!(r#"{{"u":"{u}","e":"optout","r":{R}}}"#),
                ElementProblem::MappedAndUnmapped,
            ),
            (format!(r#"{{"u":"{u}"}}"#), ElementProblem::Missing("r")),
            (
                format!(
                    r#"{{"u":"{u}","p":"{}","r":{R}}}"#,
                    STANDARD.encode([1; 16])
                ),
                ElementProblem::WrongUidLength {
                    field: "p",
                    bytes: 16,
                },
            ),
            (
                format!(r#"{{"u":7,"r":{R}}}"#),
                ElementProblem::WrongType {
                    field: "u",
                    found: "the number 7".to_owned(),
                    expected: "a string",
                },
            ),
            (
                r#"{"e":null}"#.to_owned(),
                ElementProblem::WrongType {
                    field: "e",
                    found: "null".to_owned(),
                    expected: "a string",
                },
            ),
        ] {
            let json = answer(&[mapped(9, None), element.clone()], &[]);
            assert_eq!(
                MapV3Request::new(vec![(Email, hash(9)), (Email, hash(1))])
                    .parse_answer(&json)
                    .unwrap_err(),
                MapAnswerError::InvalidElement {
                    array: "email_hash",
                    index: 1,
                    problem,
                },
                "{element}"
            );
        }
    }

    #[test]
    fn an_error_never_shows_a_uid_from_the_answer() {
        let short = STANDARD.encode([0x5a; 31]);
        let json = answer(&[format!(r#"{{"u":"{short}","r":{R}}}"#)], &[]);
        let error = MapV3Request::new(vec![(Email, hash(1))])
            .parse_answer(&json)
            .unwrap_err();
        let shown = format!("{error} {error:?}");
        assert!(shown.contains("email_hash[0]"), "{shown}");
        assert!(!shown.contains(&short), "{shown}");
    }
}
