//! Crash consistency, on both backends: the real binary killed with SIGKILL
//! at random moments (during the download, the ingest and the commit of a
//! first sync; during daemon cycles; during consumers' claims and acks).
//! After every kill the database (a SQLite file also passing `PRAGMA
//! integrity_check`) holds all of a response or none of it, and a normal
//! run afterwards completes with every bucket queued exactly once.
//!
//! Sizes: `CRASH_BUCKETS` (default 2^18; `scripts/crash-test.sh` runs 2^20
//! with the release build). Moments: `CRASH_SEED` (printed, so a failure
//! can be replayed).

use crate::common;

use std::io::Write;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::Backend;
use common::app::{TestApp, spawn_app};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uid2_bucket_sync::timestamp::{format_utc, truncate_to_millis};

const KILLS: usize = 10;

/// One test at a time: kill moments are aimed from a measured run, which
/// only means something if the machine is as busy during the kills.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn buckets() -> u32 {
    std::env::var("CRASH_BUCKETS")
        .ok()
        .map(|v| v.parse().expect("CRASH_BUCKETS is a number"))
        .unwrap_or(1 << 18)
}

fn rng(test: &str) -> StdRng {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .map(|v| v.parse().expect("CRASH_SEED is a number"))
        .unwrap_or_else(|| Utc::now().timestamp_micros() as u64);
    println!("{test}: CRASH_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

/// What a killed process left behind, read with plain SQL as a batch job
/// would.
#[derive(Debug, PartialEq, Eq)]
struct Contents {
    mark: Option<String>,
    rotations: i64,
    queue_entries: i64,
    distinct_subjects: i64,
    pending: i64,
    leased: i64,
    done: i64,
    dead: i64,
    /// Buckets whose queue entry is not at their latest rotation.
    behind: i64,
    latest_rotation: Option<String>,
}

/// What the app's database holds, read through the views; `None` before
/// the schema was created. A SQLite file must pass its integrity check.
fn inspect(app: &TestApp) -> Option<Contents> {
    match app.pg_url {
        None => {
            if !app.db_path.exists() {
                return None;
            }
            let integrity = app.rows("PRAGMA integrity_check");
            assert_eq!(integrity[0][0].as_deref(), Some("ok"), "integrity_check");
            if app.number("PRAGMA user_version") == 0 {
                return None; // killed before the schema was created
            }
        }
        Some(_) => {
            // A killed client's server session finishes the statement it
            // was running (and commits, if the client had asked to) before
            // it notices: the database's state is final once it has gone.
            let started = Instant::now();
            while app.number(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
            ) > 0
            {
                assert!(
                    started.elapsed() < Duration::from_secs(120),
                    "a killed client's session is still running"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            // None: killed before the schema was created.
            app.rows("SELECT to_regclass('sync_status')")[0][0].as_ref()?;
        }
    }
    let one = |sql: &str| app.number(sql);
    let text = |sql: &str| app.rows(sql)[0][0].clone();
    Some(Contents {
        mark: text("SELECT high_water_mark FROM sync_status"),
        rotations: one("SELECT count(*) FROM bucket_rotations"),
        queue_entries: one("SELECT count(*) FROM remap_queue"),
        distinct_subjects: one("SELECT count(DISTINCT subject) FROM remap_queue"),
        pending: one("SELECT count(*) FROM remap_queue WHERE state = 'pending'"),
        leased: one("SELECT count(*) FROM remap_queue WHERE state = 'leased'"),
        done: one("SELECT count(*) FROM remap_queue WHERE state = 'done'"),
        dead: one("SELECT count(*) FROM remap_queue WHERE state = 'dead'"),
        behind: one("SELECT count(*) FROM buckets b
             LEFT JOIN remap_queue q ON q.kind = 'bucket' AND q.subject = b.bucket_id
             WHERE q.last_updated IS DISTINCT FROM b.last_updated
               AND q.newer_last_updated IS DISTINCT FROM b.last_updated"),
        latest_rotation: text("SELECT max(last_updated) FROM buckets"),
    })
}

fn is_empty(contents: &Option<Contents>) -> bool {
    match contents {
        None => true,
        Some(c) => c.mark.is_none() && c.rotations == 0 && c.queue_entries == 0,
    }
}

fn assert_complete(contents: &Contents, buckets: u32, max: DateTime<Utc>) {
    let n = i64::from(buckets);
    assert_eq!(
        contents.mark.as_deref(),
        Some(format_utc(max).as_str()),
        "{contents:?}"
    );
    assert_eq!(contents.rotations, n, "{contents:?}");
    assert_eq!(contents.queue_entries, n, "{contents:?}");
    assert_eq!(
        contents.distinct_subjects, n,
        "one entry per bucket: {contents:?}"
    );
    assert_eq!(contents.pending, n, "{contents:?}");
    assert_eq!(contents.behind, 0, "{contents:?}");
}

/// The app's config with room for a production-sized answer in a debug
/// build on a busy machine, and `interval`.
fn write_roomy_config(app: &TestApp, interval: &str) {
    let text = app
        .config_text("")
        .replace("request_timeout = \"3s\"", "request_timeout = \"5m\"")
        .replace("interval = \"1h\"", &format!("interval = \"{interval}\""));
    std::fs::write(&app.config_path, text).unwrap();
}

fn kill_after(mut child: Child, delay: Duration) -> bool {
    let deadline = Instant::now() + delay;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let finished_first = child.try_wait().unwrap().is_some();
    child.kill().ok(); // SIGKILL
    child.wait().unwrap();
    !finished_first
}

fn sync(app: &TestApp) -> Child {
    app.command()
        .arg("sync")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// An undisturbed `sync`, which must succeed; its output shows if not.
fn sync_to_the_end(app: &TestApp) {
    let output = app.command().arg("sync").output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        common::process::text(&output)
    );
}

/// The lease ids in `queue claim --json` output.
fn lease_ids(claim_output: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(claim_output)
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["lease_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// Makes the app's database empty again.
fn remove_database(app: &TestApp) {
    if app.pg_url.is_some() {
        app.execute("DROP SCHEMA public CASCADE");
        app.execute("CREATE SCHEMA public");
        return;
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut path = app.db_path.as_os_str().to_owned();
        path.push(suffix);
        let _ = std::fs::remove_file(path);
    }
}

async fn a_first_sync_killed_at_any_moment_leaves_all_or_nothing(backend: Backend) {
    let _serial = ONE_AT_A_TIME.lock().await;
    let test_started = Instant::now();
    let buckets = buckets();
    let mut rng = rng("first sync");
    let Some(app) = spawn_app(buckets).await.on(backend) else {
        return;
    };
    write_roomy_config(&app, "1h");
    let max = app
        .operator
        .snapshot()
        .iter()
        .map(|r| r.last_updated)
        .max()
        .unwrap();

    // How long an undisturbed first sync takes here, to aim the kills.
    let started = Instant::now();
    sync_to_the_end(&app);
    let full = started.elapsed();
    println!("[{:?}] measured", test_started.elapsed());
    assert_complete(&inspect(&app).unwrap(), buckets, max);
    remove_database(&app);

    let (mut empty, mut complete) = (0, 0);
    for kill in 0..KILLS {
        // One moment in each tenth of the run: fetch, ingest and commit all get hit.
        let fraction = (kill as f64 + rng.random::<f64>()) / KILLS as f64;
        let delay = full.mul_f64(fraction.min(0.995));
        tokio::task::block_in_place(|| kill_after(sync(&app), delay));
        let contents = inspect(&app);
        if is_empty(&contents) {
            empty += 1;
        } else {
            assert_complete(contents.as_ref().unwrap(), buckets, max);
            complete += 1;
            remove_database(&app);
        }
        println!(
            "[{:?}] kill {kill} at {delay:?} of {full:?}: {}",
            test_started.elapsed(),
            if is_empty(&contents) {
                "nothing"
            } else {
                "everything"
            }
        );
    }
    println!("first sync: {KILLS} kills, {empty} left nothing, {complete} left everything");

    let final_sync = Instant::now();
    sync_to_the_end(&app);
    println!("final sync took {:?}", final_sync.elapsed());
    assert_complete(&inspect(&app).unwrap(), buckets, max);
}

async fn a_daemon_killed_during_cycles_loses_no_rotation(backend: Backend) {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut rng = rng("daemon");
    let Some(app) = spawn_app(20_000).await.on(backend) else {
        return;
    };
    write_roomy_config(&app, "1s");

    for kill in 0..KILLS {
        let rotated_at = truncate_to_millis(Utc::now());
        app.operator.rotate_random(500, rotated_at);
        let daemon = app
            .command()
            .arg("run")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let delay = Duration::from_millis(rng.random_range(50..2500));
        tokio::task::block_in_place(|| kill_after(daemon, delay));
        if let Some(contents) = inspect(&app) {
            assert_eq!(contents.behind, 0, "kill {kill}: {contents:?}");
            assert_eq!(contents.queue_entries, contents.distinct_subjects);
            assert_eq!(
                contents.mark, contents.latest_rotation,
                "kill {kill}: {contents:?}"
            );
        }
    }

    // An undisturbed cycle then has every bucket at its latest rotation.
    sync_to_the_end(&app);
    let contents = inspect(&app).unwrap();
    let table = app.operator.snapshot();
    let latest = table.iter().map(|r| r.last_updated).max().unwrap();
    assert_eq!(contents.mark.as_deref(), Some(format_utc(latest).as_str()));
    assert!(contents.rotations >= 20_000);
    assert_eq!(contents.queue_entries, 20_000);
    assert_eq!(contents.behind, 0);
    // The blocking PostgreSQL client may not run on the runtime's threads.
    tokio::task::block_in_place(|| {
        let store = app.store();
        for row in table.iter().step_by(97) {
            assert_eq!(
                store.bucket_last_updated(&row.bucket_id).unwrap(),
                Some(row.last_updated)
            );
        }
    });
}

async fn consumers_killed_while_claiming_or_acking_lose_nothing(backend: Backend) {
    let _serial = ONE_AT_A_TIME.lock().await;
    const N: u32 = 3_000;
    let mut rng = rng("consumers");
    let Some(app) = spawn_app(N).await.on(backend) else {
        return;
    };
    write_roomy_config(&app, "1h");
    sync_to_the_end(&app);

    let mut kills = 0;
    let mut acked_before = 0;
    while kills < KILLS {
        let claim = app
            .command()
            .args([
                "queue", "claim", "--limit", "200", "--lease", "1s", "--json",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lease_ids = if rng.random_bool(0.5) {
            let delay = Duration::from_millis(rng.random_range(0..40));
            if tokio::task::block_in_place(|| kill_after(claim, delay)) {
                kills += 1;
            }
            Vec::new()
        } else {
            lease_ids(&claim.wait_with_output().unwrap().stdout)
        };
        if !lease_ids.is_empty() {
            let mut ack = app
                .command()
                .args(["queue", "ack"])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut stdin = ack.stdin.take().unwrap();
            let _ = stdin.write_all(lease_ids.join("\n").as_bytes());
            drop(stdin);
            let delay = Duration::from_millis(rng.random_range(0..40));
            if tokio::task::block_in_place(|| kill_after(ack, delay)) {
                kills += 1;
            }
        }
        let contents = inspect(&app).unwrap();
        assert_eq!(
            contents.queue_entries,
            i64::from(N),
            "nothing lost: {contents:?}"
        );
        assert_eq!(
            contents.pending + contents.leased + contents.done,
            i64::from(N)
        );
        assert_eq!(contents.dead, 0);
        assert!(
            contents.done >= acked_before,
            "an ack was undone: {contents:?}"
        );
        acked_before = contents.done;
    }

    // Leases held by killed consumers expire; an undisturbed consumer then
    // drains everything.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    loop {
        let claim = app
            .command()
            .args([
                "queue", "claim", "--limit", "1000", "--lease", "1m", "--json",
            ])
            .output()
            .unwrap();
        let ids = lease_ids(&claim.stdout);
        if ids.is_empty() {
            break;
        }
        let status = app
            .command()
            .args(["queue", "ack"])
            .args(&ids)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    }
    let contents = inspect(&app).unwrap();
    assert_eq!(contents.done, i64::from(N), "{contents:?}");
}

crate::on_both_backends_async!(
    a_first_sync_killed_at_any_moment_leaves_all_or_nothing,
    a_daemon_killed_during_cycles_loses_no_rotation,
    consumers_killed_while_claiming_or_acking_lose_nothing,
);
