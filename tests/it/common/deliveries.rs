//! What consumer processes were handed: each claimed item with the span in
//! which its worker certainly held it, and the checks the concurrency tests
//! make of them.

use std::collections::HashMap;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::Value;
use uid2_bucket_sync::queue::{QueueEntry, QueueState};
use uid2_bucket_sync::timestamp::format_utc;

/// One claimed item and the span in which its worker certainly held it:
/// from the end of the claim process to the start of the ack process.
#[derive(Debug, Clone)]
pub struct Held {
    pub worker: usize,
    pub bucket: String,
    pub last_updated: String,
    pub generation: u64,
    pub attempt: u64,
    pub claimed: Instant,
    pub acking: Instant,
}

impl Held {
    /// The items of one claim's `--json` lines.
    pub fn from_claim(
        worker: usize,
        leases: &[Value],
        claimed: Instant,
        acking: Instant,
    ) -> Vec<Self> {
        leases
            .iter()
            .map(|lease| Self {
                worker,
                bucket: lease["bucket_id"].as_str().unwrap().to_owned(),
                last_updated: lease["last_updated"].as_str().unwrap().to_owned(),
                generation: lease["generation"].as_u64().unwrap(),
                attempt: lease["attempt"].as_u64().unwrap(),
                claimed,
                acking,
            })
            .collect()
    }
}

/// The deliveries by bucket, once no bucket turned out to be held by two
/// workers at the same time.
pub fn by_bucket_never_held_twice(held: &[Held]) -> HashMap<&str, Vec<&Held>> {
    let mut by_bucket: HashMap<&str, Vec<&Held>> = HashMap::new();
    for h in held {
        by_bucket.entry(&h.bucket).or_default().push(h);
    }
    for (bucket, spans) in &by_bucket {
        for (i, a) in spans.iter().enumerate() {
            for b in &spans[i + 1..] {
                let overlap = a.claimed < b.acking && b.claimed < a.acking;
                assert!(!overlap, "{bucket} held twice at once: {a:?} {b:?}");
            }
        }
    }
    by_bucket
}

/// Every entry is done at its bucket's latest rotation, its generations
/// 1..=n were each delivered once, the last one with that rotation, and
/// nothing else was delivered.
pub fn assert_each_rotation_delivered_once(
    entries: &[QueueEntry],
    by_bucket: &HashMap<&str, Vec<&Held>>,
    latest: impl Fn(&str) -> Option<DateTime<Utc>>,
) {
    for entry in entries {
        let bucket = entry.subject.bucket_id().unwrap();
        assert_eq!(entry.state, QueueState::Done, "{entry:?}");
        assert_eq!(Some(entry.version), latest(bucket), "{entry:?}");
        let spans = by_bucket.get(bucket).map(Vec::as_slice).unwrap_or_default();
        let mut generations: Vec<u64> = spans.iter().map(|h| h.generation).collect();
        generations.sort_unstable();
        let expected: Vec<u64> = (1..=u64::from(entry.generation)).collect();
        assert_eq!(generations, expected, "{bucket}");
        let last = spans.iter().max_by_key(|h| h.generation).unwrap();
        assert_eq!(last.last_updated, format_utc(entry.version), "{bucket}");
    }
    let entered: std::collections::HashSet<&str> = entries
        .iter()
        .filter_map(|entry| entry.subject.bucket_id())
        .collect();
    let unknown: Vec<&&str> = by_bucket
        .keys()
        .filter(|b| !entered.contains(**b))
        .collect();
    assert!(unknown.is_empty(), "claims of unknown buckets: {unknown:?}");
}
