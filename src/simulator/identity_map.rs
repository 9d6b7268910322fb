//! `POST /v2/identity/map` and `POST /v3/identity/map`: the operator's
//! request rules (`UIDOperatorVerticle.handleIdentityMapV2/V3`), its answers,
//! the opt-out store and the two map-only faults.
//!
//! Transport, authentication and the envelope are `server.rs`'s; this module
//! starts from the opened payload (a JSON object).

use std::collections::HashSet;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use super::Fault;
use super::catalog::Mapping;
use crate::identity::{IdentityHash, InvalidIdentity};

pub use crate::operator::{MAP_V2_PATH, MAP_V3_PATH};

/// Identities the operator treats specially, in every environment.
const ALWAYS_OPTED_OUT: [(Key, &str); 2] = [
    (Key::Email, "optout@example.com"),
    (Key::Phone, "+00000000000"),
];
const NEVER_OPTED_OUT: [(Key, &str); 2] = [
    (Key::Email, "validate@example.com"),
    (Key::Phone, "+12345678901"),
];

const V2_ONE_ARRAY: &str = "Required Parameter Missing: exactly one of [email, email_hash, phone, phone_hash] must be specified";
const V3_NO_ARRAY: &str = "Required Parameter Missing: one or more of [email, email_hash, phone, phone_hash] must be specified";
const V3_BAD_FORMAT: &str = "Incorrect request format";
const OPTOUT: &str = "optout";
const INVALID: &str = "invalid identifier";

/// One of the paths the simulated operator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Buckets,
    MapV2,
    MapV3,
}

impl Endpoint {
    pub(crate) fn from_path(path: &str) -> Option<Self> {
        match path {
            super::BUCKETS_PATH => Some(Self::Buckets),
            MAP_V2_PATH => Some(Self::MapV2),
            MAP_V3_PATH => Some(Self::MapV3),
            _ => None,
        }
    }

    pub(crate) fn path(self) -> &'static str {
        match self {
            Self::Buckets => super::BUCKETS_PATH,
            Self::MapV2 => MAP_V2_PATH,
            Self::MapV3 => MAP_V3_PATH,
        }
    }
}

/// How many elements each array of a map request held (0 when absent or
/// not an array).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MapCounts {
    pub email: usize,
    pub email_hash: usize,
    pub phone: usize,
    pub phone_hash: usize,
}

impl MapCounts {
    pub(crate) fn of(payload: &Map<String, Value>) -> Self {
        let count = |key: Key| {
            payload
                .get(key.name())
                .and_then(Value::as_array)
                .map_or(0, Vec::len)
        };
        Self {
            email: count(Key::Email),
            email_hash: count(Key::EmailHash),
            phone: count(Key::Phone),
            phone_hash: count(Key::PhoneHash),
        }
    }

    pub fn total(&self) -> usize {
        self.email + self.email_hash + self.phone + self.phone_hash
    }
}

/// The four arrays a map request may carry, in the order answers list them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Email,
    EmailHash,
    Phone,
    PhoneHash,
}

const KEYS: [Key; 4] = [Key::Email, Key::EmailHash, Key::Phone, Key::PhoneHash];

impl Key {
    fn name(self) -> &'static str {
        match self {
            Key::Email => "email",
            Key::EmailHash => "email_hash",
            Key::Phone => "phone",
            Key::PhoneHash => "phone_hash",
        }
    }

    /// The operator's `InputUtil` for this array: raw values are normalized
    /// and hashed, hashes are read as base64 or hex.
    fn hash(self, text: &str) -> Result<IdentityHash, InvalidIdentity> {
        match self {
            Key::Email => IdentityHash::of_email(text),
            Key::Phone => IdentityHash::of_phone(text),
            Key::EmailHash | Key::PhoneHash => IdentityHash::from_hash_text(text),
        }
    }
}

/// A map request the operator accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MapRequest {
    v3: bool,
    /// v3: all four keys, in answer order. v2: the one non-empty array, or
    /// nothing when every array sent was empty.
    inputs: Vec<(Key, Vec<String>)>,
}

/// Why a map request gets no mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refused {
    /// 400 `client_error` with this message.
    ClientError(String),
    /// The operator's handler fails with an unhandled exception (500).
    Unhandled,
}

/// `POST /v2/identity/map`: exactly one non-empty array; other keys ignored.
/// `payload` is `None` when the envelope carried no payload at all.
pub(crate) fn parse_v2(payload: Option<&Map<String, Value>>) -> Result<MapRequest, Refused> {
    // The operator reads the body without a null check here and fails.
    let payload = payload.ok_or(Refused::Unhandled)?;
    let mut present = false;
    let mut chosen: Option<(Key, Vec<String>)> = None;
    for key in KEYS {
        let elements = match payload.get(key.name()) {
            None | Some(Value::Null) => continue,
            Some(Value::Array(elements)) => elements,
            Some(_) => {
                return Err(Refused::ClientError(format!(
                    "{} must be an array",
                    key.name()
                )));
            }
        };
        present = true;
        if elements.is_empty() {
            continue;
        }
        if chosen.is_some() {
            return Err(Refused::ClientError(V2_ONE_ARRAY.to_owned()));
        }
        // The operator reads each element as a string: a null fails its
        // normalization and any other value its cast, both as a 500.
        let texts = elements
            .iter()
            .map(|element| element.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or(Refused::Unhandled)?;
        chosen = Some((key, texts));
    }
    if !present {
        return Err(Refused::ClientError(V2_ONE_ARRAY.to_owned()));
    }
    // Arrays that were all empty: the operator answers with nothing mapped.
    Ok(MapRequest {
        v3: false,
        inputs: chosen.into_iter().collect(),
    })
}

/// `POST /v3/identity/map`: any mix of the four arrays, nothing else.
pub(crate) fn parse_v3(payload: Option<&Map<String, Value>>) -> Result<MapRequest, Refused> {
    let payload = match payload {
        Some(payload) if !payload.is_empty() => payload,
        _ => return Err(Refused::ClientError(V3_NO_ARRAY.to_owned())),
    };
    let bad_format = || Refused::ClientError(V3_BAD_FORMAT.to_owned());
    if payload
        .keys()
        .any(|name| !KEYS.iter().any(|key| key.name() == name))
    {
        return Err(bad_format());
    }
    let mut inputs = Vec::with_capacity(KEYS.len());
    for key in KEYS {
        let texts = match payload.get(key.name()) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(elements)) => elements
                .iter()
                .map(|element| match element {
                    Value::String(text) => Some(text.clone()),
                    // Jackson coerces scalars into a String[] element.
                    Value::Number(_) | Value::Bool(_) => Some(element.to_string()),
                    Value::Null | Value::Array(_) | Value::Object(_) => None,
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(bad_format)?,
            Some(_) => return Err(bad_format()),
        };
        inputs.push((key, texts));
    }
    Ok(MapRequest { v3: true, inputs })
}

/// The opt-out records the simulated operator holds, by identity hash.
pub(crate) struct OptOuts {
    always: [IdentityHash; 2],
    never: [IdentityHash; 2],
    added: HashSet<IdentityHash>,
}

impl Default for OptOuts {
    fn default() -> Self {
        let hash = |(key, text): (Key, &str)| key.hash(text).expect("a valid test identity");
        Self {
            always: ALWAYS_OPTED_OUT.map(hash),
            never: NEVER_OPTED_OUT.map(hash),
            added: HashSet::new(),
        }
    }
}

impl OptOuts {
    pub(crate) fn add(&mut self, identities: &[IdentityHash]) {
        self.added.extend(identities.iter().copied());
    }

    pub(crate) fn contains(&self, identity: &IdentityHash) -> bool {
        self.always.contains(identity)
            || (!self.never.contains(identity) && self.added.contains(identity))
    }
}

/// The answer's JSON (`{"body":…,"status":"success"}`), shaped by `fault`.
/// `map` gives a valid identity's mapping; `opted_out` says whether it is
/// opted out.
pub(crate) fn answer(
    request: &MapRequest,
    map: impl Fn(&IdentityHash) -> Mapping,
    opted_out: impl Fn(&IdentityHash) -> bool,
    fault: Option<&Fault>,
) -> Vec<u8> {
    let resolve = |key: Key, text: &str| -> Result<Mapping, &'static str> {
        let identity = key.hash(text).map_err(|_| INVALID)?;
        if opted_out(&identity) {
            return Err(OPTOUT);
        }
        Ok(map(&identity))
    };
    let mut body = if request.v3 {
        v3_body(request, resolve)
    } else {
        v2_body(request, resolve)
    };
    match fault {
        Some(Fault::ShortArray) => drop_one_answer(&mut body, request.v3),
        Some(Fault::MalformedUid) => spoil_first_uid(&mut body, request.v3),
        _ => {}
    }
    serde_json::to_vec(&json!({ "body": body, "status": "success" }))
        .expect("JSON values serialize")
}

fn uid_text(uid: &[u8]) -> String {
    STANDARD.encode(uid)
}

fn v3_body(
    request: &MapRequest,
    resolve: impl Fn(Key, &str) -> Result<Mapping, &'static str>,
) -> Value {
    let mut body = Map::new();
    for (key, texts) in &request.inputs {
        let answers: Vec<Value> = texts
            .iter()
            .map(|text| match resolve(*key, text) {
                Ok(mapping) => json!({
                    "u": uid_text(&mapping.current),
                    "p": mapping.previous.as_ref().map(|uid| uid_text(uid)),
                    "r": mapping.refresh_from_s,
                }),
                Err(reason) => json!({ "e": reason }),
            })
            .collect();
        body.insert(key.name().to_owned(), Value::Array(answers));
    }
    Value::Object(body)
}

fn v2_body(
    request: &MapRequest,
    resolve: impl Fn(Key, &str) -> Result<Mapping, &'static str>,
) -> Value {
    let mut mapped = Vec::new();
    let mut unmapped = Vec::new();
    for (key, texts) in &request.inputs {
        for text in texts {
            match resolve(*key, text) {
                Ok(mapping) => mapped.push(json!({
                    "identifier": text,
                    "advertising_id": uid_text(&mapping.current),
                    "bucket_id": mapping.bucket_id.as_str(),
                })),
                Err(reason) => unmapped.push(json!({ "identifier": text, "reason": reason })),
            }
        }
    }
    let mut body = Map::new();
    body.insert("mapped".to_owned(), Value::Array(mapped));
    if !unmapped.is_empty() {
        body.insert("unmapped".to_owned(), Value::Array(unmapped));
    }
    Value::Object(body)
}

/// The arrays of a body in answer order: v3's four, v2's `mapped` then `unmapped`.
fn arrays_mut(body: &mut Value, v3: bool) -> Vec<&mut Vec<Value>> {
    let names: &[&str] = if v3 {
        &["email", "email_hash", "phone", "phone_hash"]
    } else {
        &["mapped", "unmapped"]
    };
    let Value::Object(body) = body else {
        return Vec::new();
    };
    let mut arrays: Vec<(usize, &mut Vec<Value>)> = body
        .iter_mut()
        .filter_map(|(name, value)| {
            let position = names.iter().position(|wanted| wanted == name)?;
            value.as_array_mut().map(|array| (position, array))
        })
        .collect();
    arrays.sort_by_key(|(position, _)| *position);
    arrays.into_iter().map(|(_, array)| array).collect()
}

fn drop_one_answer(body: &mut Value, v3: bool) {
    if let Some(array) = arrays_mut(body, v3)
        .into_iter()
        .find(|array| !array.is_empty())
    {
        array.pop();
    }
    if !v3
        && let Value::Object(body) = body
        && body
            .get("unmapped")
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty)
    {
        body.remove("unmapped");
    }
}

fn spoil_first_uid(body: &mut Value, v3: bool) {
    let field = if v3 { "u" } else { "advertising_id" };
    let first = arrays_mut(body, v3)
        .into_iter()
        .flat_map(|array| array.iter_mut())
        .find_map(|element| element.get_mut(field));
    if let Some(uid) = first
        && let Some(text) = uid.as_str()
        && let Ok(bytes) = STANDARD.decode(text)
    {
        *uid = Value::String(uid_text(&bytes[..bytes.len().saturating_sub(1)]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(json: &str) -> Map<String, Value> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn v2_takes_the_one_non_empty_array_and_ignores_other_keys() {
        let request = parse_v2(Some(&object(
            r#"{"email":[],"phone":["+12345678901"],"policy":1,"optout_check":1}"#,
        )))
        .unwrap();
        assert_eq!(
            request.inputs,
            vec![(Key::Phone, vec!["+12345678901".to_owned()])]
        );
        let empty = parse_v2(Some(&object(r#"{"email":[],"phone_hash":null}"#))).unwrap();
        assert!(empty.inputs.is_empty());
    }

    #[test]
    fn the_two_map_only_faults_leave_an_empty_answer_alone() {
        let request = parse_v3(Some(&object(r#"{"email":[]}"#))).unwrap();
        let unreachable = |_: &IdentityHash| -> Mapping { panic!("nothing to map") };
        let clean = answer(&request, unreachable, |_| false, None);
        for fault in [Fault::ShortArray, Fault::MalformedUid] {
            assert_eq!(
                answer(&request, unreachable, |_| false, Some(&fault)),
                clean
            );
        }
    }
}
