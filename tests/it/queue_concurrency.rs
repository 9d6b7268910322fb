//! Several consumer processes and the poller at once (INTERFACE.md,
//! "Concurrency"), on both backends: four processes of the real binary claim and ack in a
//! loop while this test ingests rotations through the library on its own
//! connection, re-rotating buckets that are leased at that moment.
//!
//! Checked afterwards: no bucket was leased to two consumers at once, every
//! generation of every bucket was acked exactly once and the last one
//! carries the bucket's latest rotation, and no "database is locked" (or
//! any other error) reached a caller.

use crate::common;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use common::deliveries::{Held, assert_each_rotation_delivered_once, by_bucket_never_held_twice};
use common::process::output_with_stdin;
use common::{TempDb, rotation};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use uid2_bucket_sync::queue::{ListFilter, QueueOptions, QueueState, RemapQueue};
use uid2_bucket_sync::rotation::BucketRotation;
use uid2_bucket_sync::store::{DatabaseLocation, OpenMode, Store, StoreOptions};

const BIN: &str = env!("CARGO_BIN_EXE_uid2-bucket-sync");
const WORKERS: usize = 4;
const INITIAL_BUCKETS: usize = 1000;
const ROUNDS: i64 = 100;

fn run(config: &Path, args: &[&str], stdin: Option<String>) -> Output {
    let mut command = Command::new(BIN);
    command
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("UID2_BUCKET_SYNC_CONFIG")
        .env_remove("UID2_BUCKET_SYNC_DATABASE");
    output_with_stdin(&mut command, stdin.as_deref().unwrap_or(""))
}

/// Every process must succeed silently on stderr: a busy database that
/// leaked through the busy timeout would show up here.
fn check(output: &Output, what: &str) -> Result<String, String> {
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() && stderr.is_empty() {
        Ok(String::from_utf8(output.stdout.clone()).unwrap())
    } else {
        Err(format!("{what}: {:?}: {stderr}", output.status.code()))
    }
}

fn consume(
    worker: usize,
    config: PathBuf,
    db: DatabaseLocation,
    ingest_done: Arc<AtomicBool>,
) -> Result<Vec<Held>, String> {
    let name = format!("worker-{worker}");
    let reader = Store::open_location(&db, OpenMode::MustExist, &StoreOptions::default()).unwrap();
    let mut held = Vec::new();
    loop {
        let claim = run(
            &config,
            &[
                "queue", "claim", "--limit", "25", "--lease", "10m", "--worker", &name, "--json",
            ],
            None,
        );
        let claimed_at = Instant::now();
        let lines = check(&claim, "claim")?;
        let leases: Vec<Value> = lines
            .lines()
            .map(|line| serde_json::from_str(line).map_err(|e| format!("{line:?}: {e}")))
            .collect::<Result<_, _>>()?;
        if leases.is_empty() {
            let stats = reader
                .queue(QueueOptions::default())
                .stats(Utc::now())
                .map_err(|e| e.to_string())?;
            if ingest_done.load(Ordering::SeqCst) && stats.pending == 0 && stats.leased == 0 {
                return Ok(held);
            }
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let ids: String = leases
            .iter()
            .map(|l| format!("{}\n", l["lease_id"].as_str().unwrap()))
            .collect();
        let acking = Instant::now();
        let ack = run(&config, &["queue", "ack"], Some(ids));
        let acked = check(&ack, "ack")?;
        if acked != format!("acked {0} of {0}\n", leases.len())
            && !acked.starts_with(&format!("acked {0} of {0} (", leases.len()))
        {
            return Err(format!("ack answered {acked:?}"));
        }
        held.extend(Held::from_claim(worker, &leases, claimed_at, acking));
    }
}

fn hour(n: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 1, 0, 0, 0).unwrap() + chrono::Duration::hours(n)
}

fn four_consumer_processes_and_the_poller_never_double_lease_or_lose_a_rotation(db: TempDb) {
    let config = db.dir.path().join("config.toml");
    std::fs::write(&config, db.config_section()).unwrap();
    let ingester = db.open();
    let mut latest: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    let initial: Vec<BucketRotation> = (0..INITIAL_BUCKETS)
        .map(|i| rotation(&format!("b{i:04}"), hour(0)))
        .collect();
    for r in &initial {
        latest.insert(r.bucket_id.to_string(), r.last_updated);
    }
    ingester.ingest(initial, Utc::now()).unwrap();

    let ingest_done = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..WORKERS)
        .map(|worker| {
            let (config, path, done) = (config.clone(), db.location(), ingest_done.clone());
            std::thread::spawn(move || consume(worker, config, path, done))
        })
        .collect();

    let mut rng = StdRng::seed_from_u64(7);
    let mut requeued_after_lease = 0;
    let mut coalesced = 0;
    let mut next_new = INITIAL_BUCKETS;
    for round in 1..=ROUNDS {
        let at = hour(round);
        let mut response = Vec::new();
        let leased = ingester
            .queue(QueueOptions::default())
            .list(&ListFilter {
                state: Some(QueueState::Leased),
                limit: Some(10),
            })
            .unwrap();
        response.extend(leased.iter().map(|e| rotation(&e.subject.key, at)));
        for _ in 0..20 {
            let i = rng.random_range(0..next_new);
            response.push(rotation(&format!("b{i:04}"), at));
        }
        for _ in 0..5 {
            response.push(rotation(&format!("b{next_new:04}"), at));
            next_new += 1;
        }
        // The inclusive re-read of the previous round's boundary.
        response.push(rotation("b0000", *latest.get("b0000").unwrap()));
        for r in &response {
            let known = latest
                .entry(r.bucket_id.to_string())
                .or_insert(r.last_updated);
            *known = (*known).max(r.last_updated);
        }
        let summary = ingester.ingest(response, Utc::now()).unwrap();
        requeued_after_lease += summary.requeued_after_lease;
        coalesced += summary.coalesced;
        std::thread::sleep(Duration::from_millis(rng.random_range(5..40)));
    }
    ingest_done.store(true, Ordering::SeqCst);

    let mut held = Vec::new();
    let mut failures = Vec::new();
    for worker in workers {
        match worker.join().unwrap() {
            Ok(records) => held.extend(records),
            Err(failure) => failures.push(failure),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");

    // No lease ever expired or failed, so every claim is a first attempt:
    // a second claim of one generation could only be a double lease.
    assert!(
        held.iter().all(|h| h.attempt == 1),
        "re-claimed while leased"
    );
    let by_bucket = by_bucket_never_held_twice(&held);

    // Each generation acked exactly once, generations 1..=n with none
    // skipped, the last one carrying the latest rotation.
    let final_entries = ingester
        .queue(QueueOptions::default())
        .list(&ListFilter::default())
        .unwrap();
    assert_eq!(final_entries.len(), latest.len());
    assert_each_rotation_delivered_once(&final_entries, &by_bucket, |bucket| {
        latest.get(bucket).copied()
    });

    let workers_used: HashSet<usize> = held.iter().map(|h| h.worker).collect();
    eprintln!(
        "{} deliveries of {} buckets by {} workers; {requeued_after_lease} rotations arrived \
         while leased, {coalesced} coalesced",
        held.len(),
        latest.len(),
        workers_used.len()
    );
}

crate::on_both_backends!(
    four_consumer_processes_and_the_poller_never_double_lease_or_lose_a_rotation
);
