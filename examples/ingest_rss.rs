//! Ingests a synthetic full answer (2^20 buckets by default) into a fresh
//! database and reports the time; run under `/usr/bin/time -v` for the
//! peak RSS:
//!
//! ```text
//! cargo build --release --example ingest_rss
//! /usr/bin/time -v target/release/examples/ingest_rss [--rows N] [--db PATH]
//! ```
//!
//! With `--db PATH` the database is kept (its directory must exist and the
//! file must not), which is how `scripts/bench-drain.sh` fills its queue.

#[path = "support/synthetic.rs"]
mod synthetic;

use std::path::PathBuf;
use std::time::Instant;

use uid2_bucket_sync::store::{OpenMode, Store, StoreOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut rows: usize = 1 << 20;
    let mut db: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rows" => rows = args.next().ok_or("--rows needs a value")?.parse()?,
            "--db" => db = Some(args.next().ok_or("--db needs a value")?.into()),
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let scratch = tempfile::tempdir()?;
    let path = match db {
        Some(path) if path.exists() => {
            return Err(format!("{} exists; give a new file", path.display()).into());
        }
        Some(path) => path,
        None => scratch.path().join("ingest.db"),
    };

    let now = chrono::Utc::now();
    let started = Instant::now();
    let rotations = synthetic::every_bucket(rows, now, 1);
    let generated = started.elapsed();

    let store = Store::open(&path, OpenMode::CreateIfMissing, &StoreOptions::default())?;
    let started = Instant::now();
    let summary = store.ingest(rotations, now)?;
    let ingested = started.elapsed();
    drop(store);

    println!(
        "generated {rows} rows in {:.3} s; ingested in {:.3} s ({} new, {} queued); database {} MiB",
        generated.as_secs_f64(),
        ingested.as_secs_f64(),
        summary.new_rotations,
        summary.newly_queued,
        std::fs::metadata(&path)?.len() / (1 << 20),
    );
    Ok(())
}
