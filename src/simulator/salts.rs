//! Salts and the identity → raw UID2 mapping of the simulated operator.
//!
//! Like the operator: an identity's first-level hash picks its bucket, and
//! the raw UID2 is SHA-256 of the first-level hash and the bucket's current
//! salt, so it changes exactly when the bucket rotates. The functions are
//! ours (only determinism and rotation sensitivity matter); salts are
//! *derived* from the seed, the bucket and its rotation count instead of
//! stored, so 2^24 buckets cost four bytes each rather than two salts.

use sha2::{Digest, Sha256};

use crate::identity::IdentityHash;

/// Length of a raw UID2 (and of every salt and hash here).
pub(crate) const RAW_UID_LEN: usize = 32;
pub(crate) const DAY_MS: i64 = 86_400_000;
/// `r` is the last rotation day plus the next multiple of this.
const REFRESH_PERIOD_DAYS: i64 = 30;
/// `p` is served while the last rotation is younger than this.
pub(crate) const PREVIOUS_UID_KEPT_MS: i64 = 90 * DAY_MS;

pub(crate) type RawUid = [u8; RAW_UID_LEN];

/// The secrets every mapping derives from, fixed by the simulator's seed.
#[derive(Clone)]
pub(crate) struct SaltKeys {
    first_level: [u8; 32],
    bucket_root: [u8; 32],
}

impl SaltKeys {
    pub(crate) fn from_seed(seed: u64) -> Self {
        let derive = |label: &[u8]| -> [u8; 32] {
            Sha256::new()
                .chain_update(label)
                .chain_update(seed.to_be_bytes())
                .finalize()
                .into()
        };
        Self {
            first_level: derive(b"uid2-sim first-level salt"),
            bucket_root: derive(b"uid2-sim bucket salts"),
        }
    }

    /// The identity's first-level hash: what picks its bucket and, salted
    /// again, becomes its raw UID2.
    pub(crate) fn first_level_hash(&self, identity: &IdentityHash) -> [u8; 32] {
        Sha256::new()
            .chain_update(identity.as_bytes())
            .chain_update(self.first_level)
            .finalize()
            .into()
    }

    /// Bucket `index`'s salt after `generation` rotations.
    pub(crate) fn bucket_salt(&self, index: usize, generation: u32) -> [u8; 32] {
        Sha256::new()
            .chain_update(self.bucket_root)
            .chain_update((index as u64).to_be_bytes())
            .chain_update(generation.to_be_bytes())
            .finalize()
            .into()
    }
}

/// Which of `count` buckets (`count > 0`) a first-level hash falls into.
pub(crate) fn bucket_index(first_level: &[u8; 32], count: usize) -> usize {
    let mut prefix = [0u8; 8];
    prefix.copy_from_slice(&first_level[..8]);
    (u64::from_be_bytes(prefix) % count as u64) as usize
}

pub(crate) fn raw_uid(first_level: &[u8; 32], salt: &[u8; 32]) -> RawUid {
    Sha256::new()
        .chain_update(first_level)
        .chain_update(salt)
        .finalize()
        .into()
}

/// uid2-admin's refresh-from: the last rotation's UTC day plus the next
/// multiple of 30 days after today, so always a midnight after today.
pub(crate) fn refresh_from_ms(last_rotation_ms: i64, now_ms: i64) -> i64 {
    let rotation_day = last_rotation_ms.div_euclid(DAY_MS);
    let age_days = (now_ms.div_euclid(DAY_MS) - rotation_day).max(0);
    let periods = age_days / REFRESH_PERIOD_DAYS + 1;
    (rotation_day + periods * REFRESH_PERIOD_DAYS) * DAY_MS
}

/// The operator never serves a refresh-from in the past: an outdated one
/// becomes the next UTC midnight.
pub(crate) fn served_refresh_from_ms(refresh_from_ms: i64, now_ms: i64) -> i64 {
    if refresh_from_ms < now_ms {
        (now_ms.div_euclid(DAY_MS) + 1) * DAY_MS
    } else {
        refresh_from_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timestamp::{parse_iso_local, to_millis};

    fn ms(text: &str) -> i64 {
        to_millis(parse_iso_local(text).unwrap())
    }

    #[test]
    fn refresh_from_is_the_rotation_day_plus_the_next_multiple_of_thirty_days() {
        let rotated = ms("2026-01-10T13:45:00.250");
        // Same day and up to day 29: the first period ends on day 30.
        assert_eq!(
            refresh_from_ms(rotated, ms("2026-01-10T20:00")),
            ms("2026-02-09T00:00")
        );
        assert_eq!(
            refresh_from_ms(rotated, ms("2026-02-08T23:59:59.999")),
            ms("2026-02-09T00:00")
        );
        // On day 30 itself the next period is due.
        assert_eq!(
            refresh_from_ms(rotated, ms("2026-02-09T00:00")),
            ms("2026-03-11T00:00")
        );
        // A rotation stamped in the future counts as today's.
        assert_eq!(
            refresh_from_ms(ms("2026-03-01T00:00"), ms("2026-02-01T00:00")),
            ms("2026-03-31T00:00")
        );
    }

    #[test]
    fn an_outdated_refresh_from_is_served_as_the_next_midnight() {
        let now = ms("2026-05-05T10:00");
        assert_eq!(
            served_refresh_from_ms(ms("2026-05-01T00:00"), now),
            ms("2026-05-06T00:00")
        );
        let later = ms("2026-05-05T10:00:01");
        assert_eq!(served_refresh_from_ms(later, now), later);
    }

    #[test]
    fn the_raw_uid_follows_the_bucket_salt_and_the_seed() {
        let keys = SaltKeys::from_seed(1);
        let identity = IdentityHash::of_email("user@example.com").unwrap();
        let first = keys.first_level_hash(&identity);
        let uid = raw_uid(&first, &keys.bucket_salt(7, 1));
        assert_eq!(uid, raw_uid(&first, &keys.bucket_salt(7, 1)));
        assert_ne!(uid, raw_uid(&first, &keys.bucket_salt(7, 2)));
        let other_seed = SaltKeys::from_seed(2).first_level_hash(&identity);
        assert_ne!(first, other_seed);
        assert!(bucket_index(&first, 10) < 10);
    }
}
