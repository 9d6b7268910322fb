//! Ingest of operator answers into real database files (release build):
//!
//! - `fresh 2^20`: a since-epoch answer with every bucket into a new file,
//!   commit and WAL checkpoint included (target: ≤ 1.5 s);
//! - `re-read 2^20`: the same answer again, every row already known;
//! - `one day`: ~2^20/365 rotations of known buckets, a typical hourly poll
//!   after a day's rotations.
//!
//! Peak memory of the first case: `examples/ingest_rss.rs`.

#[path = "../examples/support/synthetic.rs"]
mod synthetic;

use std::time::Duration;

use chrono::Utc;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use uid2_bucket_sync::store::{OpenMode, Store, StoreOptions};

const BUCKETS: usize = 1 << 20;

fn fresh_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        &dir.path().join("bench.db"),
        OpenMode::CreateIfMissing,
        &StoreOptions::default(),
    )
    .unwrap();
    (dir, store)
}

fn ingest(c: &mut Criterion) {
    let now = Utc::now();
    let every_bucket = synthetic::every_bucket(BUCKETS, now, 1);
    let mut group = c.benchmark_group("ingest");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(40))
        .warm_up_time(Duration::from_secs(1));

    group.bench_function("fresh 2^20", |b| {
        b.iter_batched(
            || (fresh_store(), every_bucket.clone()),
            // The store is handed back so closing it is not timed.
            |((dir, store), rows)| {
                let summary = store.ingest(rows, now).unwrap();
                assert_eq!(summary.newly_queued, BUCKETS as u64);
                (dir, store)
            },
            BatchSize::PerIteration,
        )
    });

    let (_dir, populated) = fresh_store();
    populated.ingest(every_bucket.clone(), now).unwrap();
    group.bench_function("re-read 2^20", |b| {
        b.iter_batched(
            || every_bucket.clone(),
            |rows| {
                let summary = populated.ingest(rows, now).unwrap();
                assert_eq!(summary.ignored_rereads, BUCKETS as u64);
            },
            BatchSize::PerIteration,
        )
    });

    let mut day = 0;
    group.bench_function("one day (2^20/365 rotations)", |b| {
        b.iter_batched(
            || {
                day += 1;
                let that_day = now + chrono::Duration::days(day);
                let rows =
                    synthetic::rotate_some(&every_bucket, BUCKETS / 365, that_day, day as u64);
                (rows, that_day)
            },
            |(rows, that_day)| populated.ingest(rows, that_day).unwrap(),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, ingest);
criterion_main!(benches);
