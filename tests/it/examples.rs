//! The consumer examples in `examples/` run against a real database with
//! the real binary: every bucket is re-mapped and acked, and a bucket whose
//! re-mapping keeps failing ends up dead after the configured attempts.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};

use common::{TempDb, at, rotation};
use uid2_bucket_sync::queue::{ListFilter, QueueOptions, QueueState, RemapQueue};

const BIN: &str = env!("CARGO_BIN_EXE_uid2-bucket-sync");
const BUCKETS: usize = 23;
const FAILING: &str = "bucket007";

fn prepared() -> (TempDb, std::path::PathBuf) {
    let db = TempDb::new();
    let response = (0..BUCKETS)
        .map(|i| rotation(&format!("bucket{i:03}"), at(1, 0, 0)))
        .collect();
    db.open().ingest(response, at(1, 1, 0)).unwrap();
    let config = db.dir.path().join("config.toml");
    // No backoff: the consumers run until nothing is claimable, and the
    // failing bucket must use up its attempts within the run.
    std::fs::write(
        &config,
        "[queue]\nmax_attempts = 2\nretry_backoff = \"0s\"\n",
    )
    .unwrap();
    (db, config)
}

fn example(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

fn assert_consumed(db: &TempDb, output: &Output) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{:?}\nstdout: {stdout}\nstderr: {stderr}",
        output.status
    );
    for i in 0..BUCKETS {
        let bucket = format!("bucket{i:03}");
        let line =
            format!("re-mapping identifiers of bucket {bucket} (rotated 2025-06-01T00:00:00.000Z)");
        assert_eq!(
            stdout.lines().filter(|l| *l == line).count(),
            usize::from(bucket != FAILING),
            "{bucket}\n{stdout}"
        );
    }
    let store = db.open();
    let queue = store.queue(QueueOptions::default());
    let entries = queue.list(&ListFilter::default()).unwrap();
    for entry in entries {
        let expected = if entry.subject.key == FAILING {
            QueueState::Dead
        } else {
            QueueState::Done
        };
        assert_eq!(entry.state, expected, "{entry:?}");
    }
    let dead = queue
        .list(&ListFilter {
            state: Some(QueueState::Dead),
            limit: None,
        })
        .unwrap();
    assert_eq!(dead[0].attempts, 2);
    assert!(
        dead[0].last_error.as_deref().unwrap().contains(FAILING),
        "{dead:?}"
    );
}

#[test]
fn the_python_consumer_with_until_empty_drains_the_queue_and_stops() {
    let (db, config) = prepared();
    let output = Command::new("python3")
        .arg(example("consumer.py"))
        .args(["--binary", BIN, "--config"])
        .arg(&config)
        .arg("--db")
        .arg(&db.path)
        .args(["--batch", "5", "--lease", "1m", "--until-empty"])
        .args(["--simulate-failure", FAILING])
        .env_remove("UID2_BUCKET_SYNC_CONFIG")
        .output()
        .expect("python3 runs examples/consumer.py");
    assert_consumed(&db, &output);
}

#[test]
fn the_bash_consumer_with_until_empty_drains_the_queue_and_stops() {
    let (db, config) = prepared();
    let output = Command::new("bash")
        .arg(example("consumer.sh"))
        .arg("--config")
        .arg(&config)
        .arg("--db")
        .arg(&db.path)
        .arg("--until-empty")
        .env("UID2_BUCKET_SYNC_BIN", BIN)
        .env("BATCH", "5")
        .env("LEASE", "1m")
        .env_remove("UNTIL_EMPTY")
        .env("REMAP_FAIL_BUCKETS", FAILING)
        .env_remove("UID2_BUCKET_SYNC_CONFIG")
        .output()
        .expect("bash runs examples/consumer.sh");
    assert_consumed(&db, &output);
}

/// `examples/change_feed.py` applies every change record once, saves its
/// position, and on the next run applies only what came after it.
#[tokio::test(flavor = "multi_thread")]
async fn the_python_change_feed_follower_applies_each_record_once_across_runs() {
    let app = common::app::spawn_app(64).await;
    let import = |from: usize, to: usize| {
        let mut csv = String::from("id,email\n");
        for n in from..to {
            csv.push_str(&format!("id{n},feed{n}@example.com\n"));
        }
        let output = common::process::output_with_stdin(
            app.command()
                .args(["identities", "import", "-", "--format", "csv"]),
            &csv,
        );
        assert!(
            output.status.success(),
            "{}",
            common::process::text(&output)
        );
        let output = app.command().arg("remap").output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            common::process::text(&output)
        );
    };
    let position = app.dir.path().join("feed.position");
    let follow = || {
        let output = Command::new("python3")
            .arg(example("change_feed.py"))
            .args(["--binary", BIN, "--config"])
            .arg(&app.config_path)
            .arg("--position-file")
            .arg(&position)
            .args(["--batch", "4", "--until-empty"])
            .output()
            .expect("python3 runs examples/change_feed.py");
        assert!(
            output.status.success(),
            "{}",
            common::process::text(&output)
        );
        String::from_utf8(output.stdout).unwrap()
    };

    import(0, 10);
    let first = follow();
    assert_eq!(first.lines().count(), 10, "{first}");
    assert!(
        first
            .lines()
            .all(|l| l.contains(": uid2 ") && l.ends_with("(was none)")),
        "{first}"
    );
    assert_eq!(std::fs::read_to_string(&position).unwrap(), "10\n");

    import(10, 13);
    let second = follow();
    let ids: Vec<&str> = second
        .lines()
        .map(|l| l.split(':').next().unwrap())
        .collect();
    assert_eq!(ids, ["id10", "id11", "id12"], "{second}");
    assert_eq!(follow(), "");
}
