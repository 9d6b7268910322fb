//! The simulated salt-bucket table, kept as the JSON the operator sends.
//!
//! A since-epoch answer for 2^20 buckets is ~68 MiB of JSON, so the table is
//! stored *as* that answer: one buffer holding
//! `{"body":[row,row,…],"status":"success"}` where every row has the same
//! width. Row `i` therefore sits at a fixed offset, a rotation rewrites its
//! 23 timestamp bytes in place, and the full answer is always ready to be
//! encrypted without rendering anything. Other `since` values copy the
//! matching row fragments out of the same buffer. A parallel vector of
//! millisecond times serves the filtering.
//!
//! Each bucket also has a salt (derived from the seed and how often the
//! bucket rotated, see `salts.rs`) and possibly a refresh-from time a test
//! set, which the identity-map endpoints read.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use compact_str::CompactString;
use rand::distr::Alphanumeric;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::salts::{self, DAY_MS, PREVIOUS_UID_KEPT_MS, RawUid, SaltKeys};
use crate::identity::IdentityHash;
use crate::rotation::BucketRotation;
use crate::timestamp::{format_operator, from_millis, to_millis};

/// Length of every generated bucket id (what production ids look like).
pub(crate) const BUCKET_ID_LEN: usize = 10;
/// How far back initial `last_updated` values reach, in days.
pub(crate) const HISTORY_DAYS: i64 = 365;

const PREFIX: &[u8] = b"{\"body\":[";
const SUFFIX: &[u8] = b"],\"status\":\"success\"}";
const ROW_HEAD: &[u8] = b"{\"bucket_id\":\"";
const ROW_MID: &[u8] = b"\",\"last_updated\":\"";
const ROW_TAIL: &[u8] = b"\"}";
/// `yyyy-MM-ddTHH:mm:ss.SSS`
const TIME_LEN: usize = 23;
const ID_OFFSET: usize = ROW_HEAD.len();
const TIME_OFFSET: usize = ID_OFFSET + BUCKET_ID_LEN + ROW_MID.len();
const ROW_LEN: usize = TIME_OFFSET + TIME_LEN + ROW_TAIL.len();
/// A row plus the comma that separates it from the next.
const STRIDE: usize = ROW_LEN + 1;
const UNPARSABLE_TIME: &[u8] = b"not-a-date";

/// `0000-01-01T00:00:00.000` and `9999-12-31T23:59:59.999`: the instants
/// that print with exactly four year digits, so every row keeps its width.
const MIN_MS: i64 = -62_167_219_200_000;
const MAX_MS: i64 = 253_402_300_799_999;

pub(crate) struct Catalog {
    json: Vec<u8>,
    last_updated_ms: Vec<i64>,
    /// Rotations per bucket, starting at 1 so that every bucket has a
    /// previous salt (generation − 1), as long-lived production buckets do.
    generations: Vec<u32>,
    /// Refresh-from times (ms) set by tests; a rotation forgets its bucket's.
    refresh_overrides: HashMap<usize, i64>,
    keys: SaltKeys,
}

/// What the operator knows about one valid identity's mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mapping {
    pub(crate) bucket_id: CompactString,
    pub(crate) current: RawUid,
    /// Present while the bucket's last rotation is under 90 days old.
    pub(crate) previous: Option<RawUid>,
    /// Unix seconds, never in the past.
    pub(crate) refresh_from_s: i64,
}

impl Catalog {
    /// `count` buckets with distinct random alphanumeric ids and
    /// `last_updated` values spread over the [`HISTORY_DAYS`] before the
    /// UTC day of `today`: about half at 00:00:00.000 (as operators stamp
    /// rotations since 2025-05), the rest at arbitrary milliseconds (as
    /// older operators did). The same `seed` and day give the same table.
    pub(crate) fn generate(count: usize, seed: u64, today: DateTime<Utc>) -> Self {
        let midnight = to_millis(today).div_euclid(DAY_MS) * DAY_MS;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut seen: HashSet<[u8; BUCKET_ID_LEN]> = HashSet::with_capacity(count);
        let mut json = Vec::with_capacity(PREFIX.len() + count * STRIDE + SUFFIX.len());
        let mut last_updated_ms = Vec::with_capacity(count);

        json.extend_from_slice(PREFIX);
        for index in 0..count {
            let id = loop {
                let candidate: [u8; BUCKET_ID_LEN] =
                    std::array::from_fn(|_| rng.sample(Alphanumeric));
                if seen.insert(candidate) {
                    break candidate;
                }
            };
            let mut millis = midnight - rng.random_range(1..=HISTORY_DAYS) * DAY_MS;
            if rng.random_bool(0.5) {
                millis += rng.random_range(0..DAY_MS);
            }
            let millis = millis.clamp(MIN_MS, MAX_MS);
            if index > 0 {
                json.push(b',');
            }
            json.extend_from_slice(ROW_HEAD);
            json.extend_from_slice(&id);
            json.extend_from_slice(ROW_MID);
            json.extend_from_slice(time_text(millis).as_bytes());
            json.extend_from_slice(ROW_TAIL);
            last_updated_ms.push(millis);
        }
        json.extend_from_slice(SUFFIX);
        Self {
            json,
            last_updated_ms,
            generations: vec![1; count],
            refresh_overrides: HashMap::new(),
            keys: SaltKeys::from_seed(seed),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.last_updated_ms.len()
    }

    pub(crate) fn row(&self, index: usize) -> BucketRotation {
        BucketRotation {
            bucket_id: CompactString::from(self.id(index)),
            last_updated: from_millis(self.last_updated_ms[index]),
        }
    }

    /// Every bucket, in serving order.
    pub(crate) fn snapshot(&self) -> Vec<BucketRotation> {
        (0..self.len()).map(|index| self.row(index)).collect()
    }

    /// Stamps the named buckets with `at` and gives them a new salt; unknown
    /// ids are ignored. Returns the new rows in serving order, each bucket once.
    pub(crate) fn rotate_ids(&mut self, ids: &[&str], at: DateTime<Utc>) -> Vec<BucketRotation> {
        let indices = self.indices_of(ids);
        self.rotate_indices(&indices, at)
    }

    /// Makes the named buckets report refresh-from `at` (until they rotate).
    /// Unknown ids are ignored; returns how many buckets were found.
    pub(crate) fn set_refresh_from(&mut self, ids: &[&str], at: DateTime<Utc>) -> usize {
        let indices = self.indices_of(ids);
        for &index in &indices {
            self.refresh_overrides.insert(index, to_millis(at));
        }
        indices.len()
    }

    /// The bucket an identity falls into; `None` for an empty table.
    pub(crate) fn bucket_of(&self, identity: &IdentityHash) -> Option<CompactString> {
        let first_level = self.keys.first_level_hash(identity);
        self.index_of(&first_level)
            .map(|index| CompactString::from(self.id(index)))
    }

    /// How the operator maps `identity` at `now_ms`; `None` for an empty table.
    pub(crate) fn map(&self, identity: &IdentityHash, now_ms: i64) -> Option<Mapping> {
        let first_level = self.keys.first_level_hash(identity);
        let index = self.index_of(&first_level)?;
        let generation = self.generations[index];
        let last_rotation = self.last_updated_ms[index];
        let current = salts::raw_uid(&first_level, &self.keys.bucket_salt(index, generation));
        let previous = (now_ms.saturating_sub(last_rotation) < PREVIOUS_UID_KEPT_MS).then(|| {
            let salt = self.keys.bucket_salt(index, generation.wrapping_sub(1));
            salts::raw_uid(&first_level, &salt)
        });
        let refresh_from = self
            .refresh_overrides
            .get(&index)
            .copied()
            .unwrap_or_else(|| salts::refresh_from_ms(last_rotation, now_ms));
        Some(Mapping {
            bucket_id: CompactString::from(self.id(index)),
            current,
            previous,
            refresh_from_s: salts::served_refresh_from_ms(refresh_from, now_ms).div_euclid(1000),
        })
    }

    fn index_of(&self, first_level: &[u8; 32]) -> Option<usize> {
        (self.len() > 0).then(|| salts::bucket_index(first_level, self.len()))
    }

    fn indices_of(&self, ids: &[&str]) -> Vec<usize> {
        let wanted: HashSet<&[u8]> = ids
            .iter()
            .map(|id| id.as_bytes())
            .filter(|id| id.len() == BUCKET_ID_LEN)
            .collect();
        if wanted.is_empty() {
            return Vec::new();
        }
        (0..self.len())
            .filter(|&index| wanted.contains(self.id_bytes(index)))
            .collect()
    }

    /// Stamps `count` distinct buckets (all of them if `count` is larger)
    /// chosen with `rng`. Returns the new rows in serving order.
    pub(crate) fn rotate_random(
        &mut self,
        rng: &mut StdRng,
        count: usize,
        at: DateTime<Utc>,
    ) -> Vec<BucketRotation> {
        let count = count.min(self.len());
        let mut indices = rand::seq::index::sample(rng, self.len(), count).into_vec();
        indices.sort_unstable();
        self.rotate_indices(&indices, at)
    }

    fn rotate_indices(&mut self, indices: &[usize], at: DateTime<Utc>) -> Vec<BucketRotation> {
        let millis = to_millis(at).clamp(MIN_MS, MAX_MS);
        let text = time_text(millis);
        for &index in indices {
            let start = row_start(index) + TIME_OFFSET;
            self.json[start..start + TIME_LEN].copy_from_slice(text.as_bytes());
            self.last_updated_ms[index] = millis;
            self.generations[index] = self.generations[index].wrapping_add(1);
            self.refresh_overrides.remove(&index);
        }
        indices.iter().map(|&index| self.row(index)).collect()
    }

    /// The answer's JSON for `since_ms`: rows with `last_updated >= since`
    /// (inclusive, as the operator compares). Borrows the stored buffer
    /// when every row qualifies.
    pub(crate) fn json_since(&self, since_ms: i64) -> Cow<'_, [u8]> {
        let matching = self
            .last_updated_ms
            .iter()
            .filter(|&&millis| millis >= since_ms)
            .count();
        if matching == self.len() {
            return Cow::Borrowed(&self.json);
        }
        let mut out = Vec::with_capacity(PREFIX.len() + matching * STRIDE + SUFFIX.len());
        out.extend_from_slice(PREFIX);
        let rows = self
            .last_updated_ms
            .iter()
            .enumerate()
            .filter(|&(_, &millis)| millis >= since_ms);
        for (written, (index, _)) in rows.enumerate() {
            if written > 0 {
                out.push(b',');
            }
            out.extend_from_slice(self.row_bytes(index));
        }
        out.extend_from_slice(SUFFIX);
        Cow::Owned(out)
    }

    /// Like [`Catalog::json_since`], with the first row's `last_updated`
    /// replaced by `"not-a-date"`. An empty answer gets one such row, for
    /// the first bucket, so the fault is always visible.
    pub(crate) fn json_since_with_unparsable_row(&self, since_ms: i64) -> Vec<u8> {
        let valid = self.json_since(since_ms);
        if valid.len() > PREFIX.len() + SUFFIX.len() {
            let time = PREFIX.len() + TIME_OFFSET;
            let mut out = Vec::with_capacity(valid.len());
            out.extend_from_slice(&valid[..time]);
            out.extend_from_slice(UNPARSABLE_TIME);
            out.extend_from_slice(&valid[time + TIME_LEN..]);
            return out;
        }
        let id = if self.len() > 0 {
            self.id_bytes(0)
        } else {
            b"0000000000".as_slice()
        };
        [
            PREFIX,
            ROW_HEAD,
            id,
            ROW_MID,
            UNPARSABLE_TIME,
            ROW_TAIL,
            SUFFIX,
        ]
        .concat()
    }

    fn row_bytes(&self, index: usize) -> &[u8] {
        let start = row_start(index);
        &self.json[start..start + ROW_LEN]
    }

    fn id_bytes(&self, index: usize) -> &[u8] {
        let start = row_start(index) + ID_OFFSET;
        &self.json[start..start + BUCKET_ID_LEN]
    }

    fn id(&self, index: usize) -> &str {
        std::str::from_utf8(self.id_bytes(index)).expect("generated bucket ids are ASCII")
    }
}

fn row_start(index: usize) -> usize {
    PREFIX.len() + index * STRIDE
}

fn time_text(millis: i64) -> String {
    let text = format_operator(from_millis(millis));
    debug_assert_eq!(text.len(), TIME_LEN, "{text}");
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timestamp::parse_iso_local;

    fn today() -> DateTime<Utc> {
        parse_iso_local("2026-03-15T13:45:10.250").unwrap()
    }

    fn parse(json: &[u8]) -> Vec<(String, String)> {
        let value: serde_json::Value = serde_json::from_slice(json).unwrap();
        assert_eq!(value["status"], "success");
        value["body"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                (
                    row["bucket_id"].as_str().unwrap().to_owned(),
                    row["last_updated"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    fn as_pairs(rows: &[BucketRotation]) -> Vec<(String, String)> {
        rows.iter()
            .map(|row| (row.bucket_id.to_string(), format_operator(row.last_updated)))
            .collect()
    }

    #[test]
    fn the_same_seed_and_day_give_the_same_table() {
        let a = Catalog::generate(2_000, 7, today());
        let b = Catalog::generate(2_000, 7, today());
        assert_eq!(a.snapshot(), b.snapshot());
        assert_eq!(a.json, b.json);

        let other_seed = Catalog::generate(2_000, 8, today());
        assert_ne!(a.row(0).bucket_id, other_seed.row(0).bucket_id);
    }

    #[test]
    fn ids_are_distinct_ten_character_alphanumerics() {
        let catalog = Catalog::generate(50_000, 1, today());
        let rows = catalog.snapshot();
        assert_eq!(rows.len(), 50_000);
        let distinct: HashSet<&str> = rows.iter().map(|row| row.bucket_id.as_str()).collect();
        assert_eq!(distinct.len(), rows.len());
        for row in &rows {
            assert_eq!(row.bucket_id.len(), BUCKET_ID_LEN);
            assert!(row.bucket_id.bytes().all(|b| b.is_ascii_alphanumeric()));
        }
    }

    #[test]
    fn initial_times_lie_in_the_year_before_today_some_at_midnight() {
        let catalog = Catalog::generate(5_000, 3, today());
        let midnight = parse_iso_local("2026-03-15T00:00").unwrap();
        let earliest = parse_iso_local("2025-03-15T00:00").unwrap();
        let rows = catalog.snapshot();
        assert!(rows.iter().all(|row| row.last_updated < midnight));
        assert!(rows.iter().all(|row| row.last_updated >= earliest));
        let at_midnight = rows
            .iter()
            .filter(|row| to_millis(row.last_updated) % DAY_MS == 0)
            .count();
        assert!(at_midnight > 1_000, "{at_midnight} of 5000 at midnight");
        assert!(at_midnight < 4_000, "{at_midnight} of 5000 at midnight");
        let distinct_days: HashSet<i64> = rows
            .iter()
            .map(|row| to_millis(row.last_updated) / DAY_MS)
            .collect();
        assert!(distinct_days.len() > 300);
    }

    #[test]
    fn the_stored_json_is_the_full_answer() {
        let catalog = Catalog::generate(300, 5, today());
        let since_epoch = catalog.json_since(0);
        assert!(matches!(since_epoch, Cow::Borrowed(_)));
        assert_eq!(parse(&since_epoch), as_pairs(&catalog.snapshot()));
        assert_eq!(
            parse(&catalog.json_since(to_millis(today()))),
            Vec::<(String, String)>::new()
        );
    }

    #[test]
    fn filtering_is_inclusive_of_the_since_instant() {
        let catalog = Catalog::generate(1_000, 9, today());
        let rows = catalog.snapshot();
        let mut times: Vec<i64> = rows.iter().map(|r| to_millis(r.last_updated)).collect();
        times.sort_unstable();
        let boundary = times[700];
        let expected: Vec<(String, String)> = as_pairs(&rows)
            .into_iter()
            .zip(&rows)
            .filter(|(_, row)| to_millis(row.last_updated) >= boundary)
            .map(|(pair, _)| pair)
            .collect();
        let at_boundary = parse(&catalog.json_since(boundary));
        assert_eq!(at_boundary, expected);
        let just_after = parse(&catalog.json_since(boundary + 1));
        assert!(just_after.len() < at_boundary.len());
        assert!(
            just_after
                .iter()
                .all(|(_, time)| to_millis(parse_iso_local(time).unwrap()) > boundary)
        );
    }

    #[test]
    fn rotating_by_id_rewrites_only_those_rows() {
        let mut catalog = Catalog::generate(500, 11, today());
        let before = catalog.snapshot();
        let at = parse_iso_local("2026-03-15T13:00:00.123").unwrap();
        let first = before[3].bucket_id.to_string();
        let second = before[400].bucket_id.to_string();
        let rotated = catalog.rotate_ids(&[&second, "unknown-id", &first, &first, "short"], at);
        assert_eq!(
            rotated,
            vec![
                BucketRotation {
                    bucket_id: before[3].bucket_id.clone(),
                    last_updated: at
                },
                BucketRotation {
                    bucket_id: before[400].bucket_id.clone(),
                    last_updated: at
                },
            ]
        );
        let after = catalog.snapshot();
        for (index, (old, new)) in before.iter().zip(&after).enumerate() {
            if index == 3 || index == 400 {
                assert_eq!(new.last_updated, at);
            } else {
                assert_eq!(old, new);
            }
        }
        assert_eq!(parse(&catalog.json_since(0)), as_pairs(&after));
        assert_eq!(
            parse(&catalog.json_since(to_millis(at))),
            as_pairs(&rotated)
        );
    }

    #[test]
    fn random_rotation_picks_distinct_buckets_and_caps_at_the_table_size() {
        let mut catalog = Catalog::generate(50, 13, today());
        let mut rng = StdRng::seed_from_u64(1);
        let at = parse_iso_local("2026-03-15T13:00").unwrap();
        let rotated = catalog.rotate_random(&mut rng, 20, at);
        let ids: HashSet<&str> = rotated.iter().map(|r| r.bucket_id.as_str()).collect();
        assert_eq!(ids.len(), 20);
        assert_eq!(parse(&catalog.json_since(to_millis(at))).len(), 20);
        assert_eq!(catalog.rotate_random(&mut rng, 500, at).len(), 50);
    }

    #[test]
    fn rotation_times_are_truncated_to_millis_and_kept_printable() {
        let mut catalog = Catalog::generate(3, 17, today());
        let id = catalog.row(0).bucket_id.to_string();
        let fine = parse_iso_local("2026-03-15T13:00:00.123456789").unwrap();
        assert_eq!(
            format_operator(catalog.rotate_ids(&[&id], fine)[0].last_updated),
            "2026-03-15T13:00:00.123"
        );
        let far = DateTime::<Utc>::MAX_UTC;
        let rotated = catalog.rotate_ids(&[&id], far);
        assert_eq!(
            format_operator(rotated[0].last_updated),
            "9999-12-31T23:59:59.999"
        );
        assert_eq!(parse(&catalog.json_since(0)).len(), 3);
    }

    fn user() -> IdentityHash {
        IdentityHash::of_email("user@example.com").unwrap()
    }

    #[test]
    fn a_rotation_changes_the_raw_uid_and_keeps_the_old_one_as_previous() {
        let mut catalog = Catalog::generate(100, 21, today());
        let now = to_millis(today());
        let before = catalog.map(&user(), now).unwrap();
        let bucket = catalog.bucket_of(&user()).unwrap();
        assert_eq!(before.bucket_id, bucket);
        assert_eq!(catalog.map(&user(), now).unwrap(), before);

        let at = parse_iso_local("2026-03-15T00:00").unwrap();
        catalog.rotate_ids(&[&bucket], at);
        let after = catalog.map(&user(), now).unwrap();
        assert_eq!(after.bucket_id, bucket);
        assert_ne!(after.current, before.current);
        assert_eq!(after.previous, Some(before.current));
        // Rotated 2026-03-15: due 30 days later, at midnight.
        assert_eq!(
            after.refresh_from_s * 1000,
            to_millis(parse_iso_local("2026-04-14T00:00").unwrap())
        );
        // Other buckets' identities are untouched.
        let other = (0..)
            .map(|n| IdentityHash::of_phone(&format!("+1555000{n:04}")).unwrap())
            .find(|identity| catalog.bucket_of(identity).unwrap() != bucket)
            .unwrap();
        let unrotated = Catalog::generate(100, 21, today());
        assert_eq!(
            catalog.map(&other, now).unwrap(),
            unrotated.map(&other, now).unwrap()
        );
    }

    #[test]
    fn the_previous_uid_is_served_for_ninety_days_after_a_rotation() {
        let mut catalog = Catalog::generate(10, 23, today());
        let bucket = catalog.bucket_of(&user()).unwrap();
        let at = parse_iso_local("2026-01-01T00:00").unwrap();
        catalog.rotate_ids(&[&bucket], at);
        let day = |text: &str| to_millis(parse_iso_local(text).unwrap());
        let just_before = day("2026-04-01T00:00") - 1;
        assert!(
            catalog
                .map(&user(), just_before)
                .unwrap()
                .previous
                .is_some()
        );
        assert!(
            catalog
                .map(&user(), day("2026-04-01T00:00"))
                .unwrap()
                .previous
                .is_none()
        );
    }

    #[test]
    fn a_set_refresh_time_holds_until_the_bucket_rotates() {
        let mut catalog = Catalog::generate(10, 25, today());
        let bucket = catalog.bucket_of(&user()).unwrap();
        let now = to_millis(today());
        let soon = parse_iso_local("2026-03-15T14:00:00.900").unwrap();
        assert_eq!(catalog.set_refresh_from(&[&bucket, "unknown"], soon), 1);
        assert_eq!(
            catalog.map(&user(), now).unwrap().refresh_from_s,
            to_millis(soon) / 1000
        );
        // Once past, the next midnight is served.
        let later = to_millis(parse_iso_local("2026-03-15T15:00").unwrap());
        assert_eq!(
            catalog.map(&user(), later).unwrap().refresh_from_s * 1000,
            to_millis(parse_iso_local("2026-03-16T00:00").unwrap())
        );
        catalog.rotate_ids(&[&bucket], today());
        assert_eq!(
            catalog.map(&user(), now).unwrap().refresh_from_s * 1000,
            to_millis(parse_iso_local("2026-04-14T00:00").unwrap())
        );
    }

    #[test]
    fn an_empty_table_maps_nothing() {
        let catalog = Catalog::generate(0, 27, today());
        assert_eq!(catalog.map(&user(), 0), None);
        assert_eq!(catalog.bucket_of(&user()), None);
    }

    #[test]
    fn the_unparsable_row_fault_spoils_exactly_one_row() {
        let catalog = Catalog::generate(20, 19, today());
        let rows = parse(&catalog.json_since_with_unparsable_row(0));
        assert_eq!(rows.len(), 20);
        assert_eq!(rows[0].1, "not-a-date");
        assert_eq!(&rows[1..], &as_pairs(&catalog.snapshot())[1..]);

        let empty = parse(&catalog.json_since_with_unparsable_row(i64::MAX));
        assert_eq!(
            empty,
            vec![(
                catalog.row(0).bucket_id.to_string(),
                "not-a-date".to_owned()
            )]
        );
    }
}
