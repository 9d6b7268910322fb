//! Helpers shared by the store, queue and CLI tests: real database files in
//! temporary directories, times on a fixed calendar.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use uid2_bucket_sync::queue::{ClaimRequest, Lease, QueueOptions, RemapQueue};
use uid2_bucket_sync::rotation::BucketRotation;
use uid2_bucket_sync::store::{OpenMode, Store, StoreOptions};

/// 2025-06-`day` `hour`:`minute` UTC.
pub fn at(day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, day, hour, minute, 0).unwrap()
}

pub fn rotation(bucket: &str, last_updated: DateTime<Utc>) -> BucketRotation {
    BucketRotation {
        bucket_id: bucket.into(),
        last_updated,
    }
}

pub struct TempDb {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl TempDb {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("buckets.db");
        Self { dir, path }
    }

    pub fn open(&self) -> Store {
        open_existing_or_new(&self.path)
    }
}

pub fn open_existing_or_new(path: &Path) -> Store {
    Store::open(path, OpenMode::CreateIfMissing, &StoreOptions::default()).unwrap()
}

pub fn lease_for(minutes: u64) -> Duration {
    Duration::from_secs(minutes * 60)
}

pub fn claim(store: &Store, limit: u32, lease: Duration, now: DateTime<Utc>) -> Vec<Lease> {
    store
        .queue(QueueOptions::default())
        .claim(
            &ClaimRequest {
                limit,
                lease,
                worker: None,
            },
            now,
        )
        .unwrap()
}

pub fn lease_ids(leases: &[Lease]) -> Vec<&str> {
    leases.iter().map(|l| l.lease_id.as_str()).collect()
}

/// Acks every lease and insists each one was accepted.
pub fn ack_all(store: &Store, leases: &[Lease], now: DateTime<Utc>) {
    let outcomes = store
        .queue(QueueOptions::default())
        .ack(&lease_ids(leases), now)
        .unwrap();
    assert!(
        outcomes.iter().all(|o| !o.is_refused()),
        "refused: {outcomes:?}"
    );
}
pub mod app;
pub mod process;
