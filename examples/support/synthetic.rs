//! Synthetic operator answers shaped like production: opaque 10-character
//! bucket ids, rotations stamped at 00:00:00.000 UTC of a day in the last
//! year, rows in no particular order. Shared by the ingest bench and the
//! examples through `#[path]`.

use chrono::{DateTime, Duration, Utc};
use compact_str::CompactString;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uid2_bucket_sync::rotation::BucketRotation;

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// `count` distinct buckets, each with one rotation day before `until`.
#[allow(dead_code)]
pub fn every_bucket(count: usize, until: DateTime<Utc>, seed: u64) -> Vec<BucketRotation> {
    let mut rng = StdRng::seed_from_u64(seed);
    let midnight = until
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc();
    let mut seen = std::collections::HashSet::with_capacity(count);
    let mut rows = Vec::with_capacity(count);
    while rows.len() < count {
        let id = bucket_id(&mut rng);
        if seen.insert(id.clone()) {
            let days = rng.random_range(0..365);
            rows.push(BucketRotation {
                bucket_id: id,
                last_updated: midnight - Duration::days(days),
            });
        }
    }
    rows
}

/// One day's rotations of `rows`: about 1/365 of them, stamped `day`.
#[allow(dead_code)]
pub fn rotate_some(
    rows: &[BucketRotation],
    count: usize,
    day: DateTime<Utc>,
    seed: u64,
) -> Vec<BucketRotation> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count)
        .map(|_| BucketRotation {
            bucket_id: rows[rng.random_range(0..rows.len())].bucket_id.clone(),
            last_updated: day,
        })
        .collect()
}

fn bucket_id(rng: &mut StdRng) -> CompactString {
    let bytes: Vec<u8> = (0..10)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())])
        .collect();
    CompactString::from_utf8(bytes).expect("ascii")
}
