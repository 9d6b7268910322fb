//! `demo` as a newcomer runs it: the real binary, offline, narrating the
//! first sync, rotations being queued and the consumer acking them.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{TempDb, at, rotation};
use uid2_bucket_sync::store::Store;

/// `demo` on `db` with nothing else set.
fn bare_demo(db: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_uid2-bucket-sync"));
    command
        .arg("--db")
        .arg(db)
        .arg("demo")
        .env_remove("UID2_BUCKET_SYNC_CONFIG")
        .env_remove("RUST_LOG");
    command
}

/// A small, fast demo: 3,000 buckets, 7 rotated and synced every second.
fn demo(db: &std::path::Path) -> Command {
    let mut command = bare_demo(db);
    command
        .args(["--buckets", "3000", "--rotate-every", "1s"])
        .args(["--rotate-count", "7", "--sync-every", "1s"]);
    command
}

fn status_json(db: &std::path::Path) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_uid2-bucket-sync"))
        .arg("--db")
        .arg(db)
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(output.status.success());
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The numbers in `text`, read with their thousands separators.
fn numbers(text: &str) -> Vec<u64> {
    text.split(|c: char| !c.is_ascii_digit() && c != ',')
        .map(|word| word.replace(',', ""))
        .filter(|digits| !digits.is_empty())
        .map(|digits| digits.parse().unwrap())
        .collect()
}

/// The text after `what` on the line that has it.
fn after<'a>(stdout: &'a str, what: &str) -> &'a str {
    let line = stdout
        .lines()
        .find(|l| l.contains(what))
        .unwrap_or_else(|| panic!("no {what:?} in\n{stdout}"));
    &line[line.find(what).unwrap() + what.len()..]
}

/// A PATH where the shell finds no uid2-bucket-sync.
const PATH_WITHOUT_THE_BINARY: &str = "/usr/bin:/bin";

#[test]
fn with_a_duration_the_demo_syncs_queues_rotations_consumes_them_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("demo.db");
    let output = demo(&db)
        .args(["--duration", "7s"])
        .current_dir(dir.path())
        .env("PATH", PATH_WITHOUT_THE_BINARY)
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stderr.is_empty(), "the demo keeps stderr quiet: {stderr}");

    assert!(
        stdout.contains(
            "3,000 new rotations of 3,000 rows received: 3,000 queued (3,000 new, 0 re-opened done entries)"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("operator  rotated 7 buckets"), "{stdout}");
    let rotation_cycles = stdout
        .lines()
        .filter(|l| l.contains("sync      7 new rotations"))
        .count();
    assert!(
        rotation_cycles >= 1,
        "a rotation batch was queued:\n{stdout}"
    );
    assert!(
        stdout.contains("consumer  claimed 3,000, re-mapped and acked 3,000"),
        "{stdout}"
    );
    // The identities: imported, mapped by the worker, read from the feed.
    assert!(
        stdout.contains("provider  imported 20,000 customers' emails"),
        "{stdout}"
    );
    assert!(
        stdout.contains("worker    re-map pass: 20000 identities sent (v2), 20000 changed"),
        "{stdout}"
    );
    assert!(stdout.contains("feed      "), "{stdout}");
    assert!(!stdout.contains("person0@example.com,"), "{stdout}");

    // Each cycle says where its new rotations went, and the queued ones
    // add up: new entries plus done entries re-opened (which is why done
    // drops by as many).
    let mut reopened_total = 0;
    for line in stdout.lines().filter(|l| l.contains("new rotations of")) {
        let counts = line
            .split("sync      ")
            .nth(1)
            .unwrap()
            .split("; mark")
            .next()
            .unwrap();
        let [rotations, _rows, queued, new, reopened, merged, deferred] = numbers(counts)[..]
        else {
            panic!("{line}");
        };
        assert_eq!(queued, new + reopened, "{line}");
        assert_eq!(rotations, queued + merged + deferred, "{line}");
        reopened_total += reopened;
    }
    assert!(
        reopened_total > 0,
        "rotations of done buckets re-opened them:\n{stdout}"
    );

    // The acks reconcile with the buckets: a bucket rotated after its ack
    // is acked again.
    let [_rotated, acks, buckets, reacks] = numbers(after(&stdout, "stopped. This run:"))[..]
    else {
        panic!("{stdout}");
    };
    assert_eq!(acks, buckets + reacks, "{stdout}");
    assert!(buckets <= 3_000 && reacks > 0, "{stdout}");

    // The hint runs as printed, although uid2-bucket-sync is not on PATH.
    let hint = after(&stdout, "look inside: ")
        .split("   (or:")
        .next()
        .unwrap();
    assert!(
        hint.contains(env!("CARGO_BIN_EXE_uid2-bucket-sync")),
        "{hint}"
    );
    let pasted = Command::new("sh")
        .args(["-c", hint])
        .current_dir(dir.path())
        .env("PATH", PATH_WITHOUT_THE_BINARY)
        .output()
        .unwrap();
    assert!(pasted.status.success(), "{hint}: {pasted:?}");
    assert!(
        String::from_utf8(pasted.stdout)
            .unwrap()
            .contains("high-water mark")
    );
    assert!(
        stdout
            .lines()
            .last()
            .unwrap()
            .contains("demo      look inside"),
        "{stdout}"
    );

    let status = status_json(&db);
    assert!(status["high_water_mark"].is_string(), "{status}");
    let queue = &status["queue"];
    let count = |state: &str| queue[state].as_u64().unwrap();
    assert_eq!(
        count("pending") + count("leased") + count("done"),
        3_000,
        "one entry per bucket, none dead: {status}"
    );
    assert!(count("done") > 0, "{status}");
    assert!(
        count("done") <= buckets,
        "every done entry was acked: {status}"
    );
}

#[test]
fn ctrl_c_stops_the_demo_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("demo.db");
    let mut child = demo(&db).stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = lines.next().expect("demo output ended early").unwrap();
        if line.contains("consumer  claimed") {
            break;
        }
        assert!(Instant::now() < deadline, "no consumer line within 60 s");
    }
    let interrupted = Instant::now();
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(interrupted.elapsed() < Duration::from_secs(10));
    assert!(
        rest.iter().any(|l| l.contains("demo      stopped.")),
        "{rest:?}"
    );
}

#[test]
fn the_demo_refuses_a_database_the_daemon_created_and_leaves_it_byte_for_byte_unchanged() {
    let db = TempDb::new();
    {
        let store = db.open();
        store
            .ingest(
                (0..227)
                    .map(|i| rotation(&format!("bucket{i:03}"), at(1, 0, 0)))
                    .collect(),
                at(1, 1, 0),
            )
            .unwrap();
    }
    let before = std::fs::read(&db.path).unwrap();

    let output = demo(&db.path).args(["--duration", "2s"]).output().unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(
        output.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.is_empty(),
        "refused before the demo started: {stdout}"
    );
    for expected in [
        db.path.display().to_string().as_str(),
        "created by `uid2-bucket-sync sync` or `run`",
        "choose another --db or delete the demo file",
    ] {
        assert!(stderr.contains(expected), "{expected:?} in {stderr}");
    }
    assert!(
        std::fs::read(&db.path).unwrap() == before,
        "the refused database changed"
    );
    let status = status_json(&db.path);
    assert_eq!(status["queue"]["pending"], 227, "{status}");
}

#[test]
fn a_database_the_demo_created_is_recorded_as_the_demos_and_continued_by_the_next_demo() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("demo.db");
    let first = demo(&db).args(["--duration", "2s"]).output().unwrap();
    assert!(first.status.success(), "{first:?}");
    assert_eq!(Store::created_by(&db).unwrap().as_deref(), Some("demo"));
    let mark = status_json(&db)["high_water_mark"].clone();
    assert!(mark.is_string(), "{mark}");

    let binary_dir = std::path::Path::new(env!("CARGO_BIN_EXE_uid2-bucket-sync"))
        .parent()
        .unwrap();
    let second = demo(&db)
        .args(["--duration", "2s"])
        .env(
            "PATH",
            format!("{}:{PATH_WITHOUT_THE_BINARY}", binary_dir.display()),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8(second.stdout).unwrap();
    assert!(second.status.success(), "{stdout}");
    assert!(
        stdout.contains("(exists: continuing from its high-water mark"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("3,000 new rotations"),
        "the second demo started over:\n{stdout}"
    );
    assert!(
        after(&stdout, "look inside: ").starts_with("uid2-bucket-sync --db "),
        "the binary on PATH is named as it is:\n{stdout}"
    );
}

#[test]
fn the_demo_refuses_a_bucket_count_outside_the_one_range_its_help_states() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("demo.db");
    let help = String::from_utf8(bare_demo(&db).arg("--help").output().unwrap().stdout).unwrap();
    assert!(
        help.contains("Number of simulated salt buckets, 1..=1048576"),
        "{help}"
    );
    for value in ["0", "1048577"] {
        let output = bare_demo(&db)
            .arg(format!("--buckets={value}"))
            .output()
            .unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(&format!("{value} is not in 1..=1048576")),
            "{stderr}"
        );
        assert!(!db.exists());
    }
}

#[test]
fn a_large_first_download_is_narrated_at_most_once_a_second_with_its_real_duration() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("demo.db");
    // The default 65,536 buckets: a response of several megabytes. Long
    // enough for the first sync to end while the worker maps the demo's
    // identities on a loaded machine.
    let output = bare_demo(&db).args(["--duration", "8s"]).output().unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "{stdout}");
    let downloads: Vec<(f64, &str)> = stdout
        .lines()
        .filter(|l| l.contains("sync      download"))
        .map(|l| {
            let (at, what) = l.trim_start().split_once("s  ").unwrap();
            (at.parse().unwrap(), what)
        })
        .collect();
    for pair in downloads.windows(2) {
        // Printed with one decimal: 0.9 apart at least.
        assert!(
            pair[1].0 - pair[0].0 >= 0.9 || !pair[1].1.contains("downloading"),
            "{stdout}"
        );
    }
    for (_, what) in &downloads[..downloads.len().saturating_sub(1)] {
        assert!(what.contains(" MB after "), "{stdout}");
    }
    let done = downloads.last().map(|(_, what)| *what).unwrap_or_default();
    assert!(
        done.starts_with("sync      downloaded 5.9 MB in ") && done.contains("s; decrypting"),
        "{stdout}"
    );
}
