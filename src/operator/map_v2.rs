//! `POST /v2/identity/map` (deprecated 2026-09-30; use [`super::map_v3`]):
//! raw UID2 and salt bucket for each identity hash of one type.
//!
//! The request carries one array, `email_hash` or `phone_hash`. The answer
//! splits results into `mapped` and `unmapped` (the latter left out when
//! empty), each naming its input by `identifier`, the hash echoed as sent.
//! Results are matched to inputs by that identifier, not by position; every
//! input must be accounted for exactly once, else the batch is refused.

use std::collections::{HashMap, VecDeque};

use crate::identity::{IdentityHash, IdentityType};
use crate::operator::body::BodyEncoding;
use crate::operator::map_answer::{
    ElementProblem, Fields, Json, MapAnswerError, RawUid2, UnmappedReason, array, element_fields,
    parse_document, raw_uid, reason, required, success_body, text,
};
use crate::operator::transport::Endpoint;

/// The endpoint, relative to the base URL.
pub const MAP_V2_PATH: &str = "/v2/identity/map";

/// The outcome for one identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum V2Result {
    Mapped {
        /// The identity's raw UID2.
        uid: RawUid2,
        /// The salt bucket it is in: a rotation of this bucket changes it.
        bucket_id: String,
    },
    Unmapped(UnmappedReason),
}

/// A v2 request: hashes of one identity type, in the caller's order. The
/// answer is returned in the same order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapV2Request {
    kind: IdentityType,
    hashes: Vec<IdentityHash>,
}

impl MapV2Request {
    pub(crate) fn new(kind: IdentityType, hashes: Vec<IdentityHash>) -> Self {
        Self { kind, hashes }
    }

    pub(crate) fn len(&self) -> usize {
        self.hashes.len()
    }

    fn array_name(&self) -> &'static str {
        match self.kind {
            IdentityType::Email => "email_hash",
            IdentityType::Phone => "phone_hash",
        }
    }
}

impl Endpoint for MapV2Request {
    fn encoding(_configured: BodyEncoding) -> BodyEncoding {
        BodyEncoding::Binary
    }

    const PATH: &'static str = MAP_V2_PATH;
    type Answer = Vec<V2Result>;
    type Problem = MapAnswerError;

    fn request_json(&self) -> Vec<u8> {
        let mut json = Vec::with_capacity(super::batch::json_bytes(self.len()));
        json.push(b'{');
        super::batch::write_hash_array(&mut json, self.array_name(), self.hashes.iter());
        json.push(b'}');
        json
    }

    fn parse_answer(&self, json: &str) -> Result<Self::Answer, Self::Problem> {
        let document = parse_document(json)?;
        let body = success_body(&document)?;
        let mapped = array(body, "mapped")?.ok_or(MapAnswerError::MissingArray("mapped"))?;
        let unmapped = array(body, "unmapped")?.unwrap_or_default();

        // Where each hash sits in the request; a hash sent twice is
        // answered twice and fills its positions in order.
        let mut positions: HashMap<IdentityHash, VecDeque<usize>> =
            HashMap::with_capacity(self.hashes.len());
        for (position, hash) in self.hashes.iter().enumerate() {
            positions.entry(*hash).or_default().push_back(position);
        }
        let mut results: Vec<Option<V2Result>> = vec![None; self.hashes.len()];
        for (name, elements, read) in [
            ("mapped", mapped, read_mapped as ReadElement),
            ("unmapped", unmapped, read_unmapped),
        ] {
            for (index, element) in elements.iter().enumerate() {
                let invalid = |problem| MapAnswerError::InvalidElement {
                    array: name,
                    index,
                    problem,
                };
                let (identifier, result) = read(element).map_err(invalid)?;
                let position = match positions.get_mut(&identifier) {
                    None => return Err(invalid(ElementProblem::IdentifierNotSent)),
                    Some(left) => left
                        .pop_front()
                        .ok_or_else(|| invalid(ElementProblem::IdentifierRepeated))?,
                };
                results[position] = Some(result);
            }
        }
        let unanswered = results.iter().filter(|result| result.is_none()).count();
        if let Some(input) = results.iter().position(Option::is_none) {
            return Err(MapAnswerError::Unanswered {
                input,
                count: unanswered,
            });
        }
        Ok(results.into_iter().flatten().collect())
    }
}

type ReadElement = fn(&Json<'_>) -> Result<(IdentityHash, V2Result), ElementProblem>;

/// The hash an element answers for.
fn identifier(fields: &Fields<'_>) -> Result<IdentityHash, ElementProblem> {
    let text = text("identifier", required(fields, "identifier")?)?;
    IdentityHash::from_hash_text(text).map_err(|_| ElementProblem::IdentifierNotAHash)
}

/// `{"identifier","advertising_id","bucket_id"}`.
fn read_mapped(element: &Json<'_>) -> Result<(IdentityHash, V2Result), ElementProblem> {
    let fields = element_fields(element)?;
    let identifier = identifier(fields)?;
    let uid = raw_uid("advertising_id", required(fields, "advertising_id")?)?;
    let bucket_id = text("bucket_id", required(fields, "bucket_id")?)?;
    if bucket_id.is_empty() {
        return Err(ElementProblem::EmptyBucketId);
    }
    Ok((
        identifier,
        V2Result::Mapped {
            uid,
            bucket_id: bucket_id.to_owned(),
        },
    ))
}

/// `{"identifier","reason"}`.
fn read_unmapped(element: &Json<'_>) -> Result<(IdentityHash, V2Result), ElementProblem> {
    let fields = element_fields(element)?;
    let identifier = identifier(fields)?;
    let reason = reason("reason", required(fields, "reason")?)?;
    Ok((identifier, V2Result::Unmapped(reason)))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::operator::map_answer::test_values::{hash, uid};

    fn mapped(n: u8) -> String {
        format!(
            r#"{{"identifier":"{}","advertising_id":"{}","bucket_id":"b{n}"}}"#,
            hash(n),
            uid(n).to_base64()
        )
    }

    fn unmapped(n: u8, reason: &str) -> String {
        format!(r#"{{"identifier":"{}","reason":"{reason}"}}"#, hash(n))
    }

    fn answer(mapped: &[String], unmapped: Option<&[String]>) -> String {
        let unmapped = unmapped
            .map(|rows| format!(r#","unmapped":[{}]"#, rows.join(",")))
            .unwrap_or_default();
        format!(
            r#"{{"body":{{"mapped":[{}]{unmapped}}},"status":"success"}}"#,
            mapped.join(",")
        )
    }

    fn request(numbers: &[u8]) -> MapV2Request {
        MapV2Request::new(
            IdentityType::Phone,
            numbers.iter().map(|n| hash(*n)).collect(),
        )
    }

    fn v2_mapped(n: u8) -> V2Result {
        V2Result::Mapped {
            uid: uid(n),
            bucket_id: format!("b{n}"),
        }
    }

    #[test]
    fn the_request_is_one_array_of_the_types_hashes() {
        assert_eq!(
            String::from_utf8(request(&[1, 2]).request_json()).unwrap(),
            format!(r#"{{"phone_hash":["{}","{}"]}}"#, hash(1), hash(2))
        );
        let emails = MapV2Request::new(IdentityType::Email, vec![hash(3)]);
        assert_eq!(
            String::from_utf8(emails.request_json()).unwrap(),
            format!(r#"{{"email_hash":["{}"]}}"#, hash(3))
        );
    }

    #[test]
    fn results_are_matched_to_inputs_by_identifier_not_position() {
        let json = answer(&[mapped(3), mapped(1)], Some(&[unmapped(2, "optout")]));
        assert_eq!(
            request(&[1, 2, 3]).parse_answer(&json).unwrap(),
            vec![
                v2_mapped(1),
                V2Result::Unmapped(UnmappedReason::OptOut),
                v2_mapped(3)
            ]
        );
    }

    #[test]
    fn an_absent_unmapped_array_means_none_unmapped() {
        let json = answer(&[mapped(1)], None);
        assert_eq!(
            request(&[1]).parse_answer(&json).unwrap(),
            vec![v2_mapped(1)]
        );
    }

    #[test]
    fn a_hash_sent_twice_is_answered_twice() {
        let json = answer(&[mapped(1), mapped(1)], None);
        assert_eq!(
            request(&[1, 1]).parse_answer(&json).unwrap(),
            vec![v2_mapped(1), v2_mapped(1)]
        );
    }

    #[test]
    fn an_input_without_a_result_rejects_the_batch() {
        let json = answer(&[mapped(1)], Some(&[unmapped(3, "optout")]));
        assert_eq!(
            request(&[1, 2, 3, 4]).parse_answer(&json).unwrap_err(),
            MapAnswerError::Unanswered { input: 1, count: 2 }
        );
    }

    #[test]
    fn a_result_for_an_identity_not_sent_or_answered_twice_rejects_the_batch() {
        let json = answer(&[mapped(1), mapped(9)], None);
        assert_eq!(
            request(&[1]).parse_answer(&json).unwrap_err(),
            MapAnswerError::InvalidElement {
                array: "mapped",
                index: 1,
                problem: ElementProblem::IdentifierNotSent,
            }
        );
        let json = answer(&[mapped(1)], Some(&[unmapped(1, "optout")]));
        assert_eq!(
            request(&[1]).parse_answer(&json).unwrap_err(),
            MapAnswerError::InvalidElement {
                array: "unmapped",
                index: 0,
                problem: ElementProblem::IdentifierRepeated,
            }
        );
    }

    #[test]
    fn each_malformed_element_is_refused_with_its_own_problem() {
        for (json, error) in [
            (
                r#"{"body":{"unmapped":[]},"status":"success"}"#.to_owned(),
                MapAnswerError::MissingArray("mapped"),
            ),
            (
                answer(
                    &[format!(
                        r#"{{"identifier":"{}","advertising_id":"{}","bucket_id":""}}"#,
                        hash(1),
                        uid(1).to_base64()
                    )],
                    None,
                ),
                MapAnswerError::InvalidElement {
                    array: "mapped",
                    index: 0,
                    problem: ElementProblem::EmptyBucketId,
                },
            ),
            (
                answer(
                    &[format!(r#"{{"identifier":"{}","bucket_id":"b"}}"#, hash(1))],
                    None,
                ),
                MapAnswerError::InvalidElement {
                    array: "mapped",
                    index: 0,
                    problem: ElementProblem::Missing("advertising_id"),
                },
            ),
            (
                answer(
                    &[],
                    Some(&[r#"{"identifier":"abc","reason":"optout"}"#.to_owned()]),
                ),
                MapAnswerError::InvalidElement {
                    array: "unmapped",
                    index: 0,
                    problem: ElementProblem::IdentifierNotAHash,
                },
            ),
            (
                answer(&[], Some(&[format!(r#"{{"identifier":"{}"}}"#, hash(1))])),
                MapAnswerError::InvalidElement {
                    array: "unmapped",
                    index: 0,
                    problem: ElementProblem::Missing("reason"),
                },
            ),
        ] {
            assert_eq!(
                request(&[1]).parse_answer(&json).unwrap_err(),
                error,
                "{json}"
            );
        }
    }

    #[test]
    fn an_unknown_reason_is_kept_as_unknown() {
        let json = answer(&[], Some(&[unmapped(1, "not in region")]));
        assert_eq!(
            request(&[1]).parse_answer(&json).unwrap(),
            vec![V2Result::Unmapped(UnmappedReason::Unknown(
                "not in region".to_owned()
            ))]
        );
    }

    #[test]
    fn an_error_never_shows_the_identifier() {
        let json = answer(&[mapped(1), mapped(9)], None);
        let error = request(&[1]).parse_answer(&json).unwrap_err();
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains(&hash(9).to_string()), "{shown}");
        assert!(shown.contains("mapped[1]"), "{shown}");
    }
}
