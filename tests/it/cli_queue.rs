//! `queue …` and `status` as batch jobs run them: the real binary on a real
//! database file, checking output and exit codes (INTERFACE.md).

use crate::common;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use chrono::{DateTime, Utc};
use common::{TempDb, rotation};
use serde_json::Value;
use uid2_bucket_sync::store::SCHEMA_VERSION;
use uid2_bucket_sync::timestamp::{format_utc, truncate_to_millis};

const BIN: &str = env!("CARGO_BIN_EXE_uid2-bucket-sync");

struct Cli {
    db: TempDb,
    config: PathBuf,
}

impl Cli {
    /// A database with `buckets` pending rotations, and a configuration
    /// with `max_attempts = 2`.
    fn with_pending(buckets: usize) -> Self {
        let db = TempDb::new();
        let config = db.dir.path().join("config.toml");
        std::fs::write(&config, "[queue]\nmax_attempts = 2\n").unwrap();
        if buckets > 0 {
            let response = (0..buckets)
                .map(|i| rotation(&format!("bucket{i:03}"), recent_day(i)))
                .collect();
            db.open().ingest(response, Utc::now()).unwrap();
        }
        Self { db, config }
    }

    /// Replaces the configuration's `[queue]` section body.
    fn configure_queue(&self, keys: &str) {
        std::fs::write(&self.config, format!("[queue]\n{keys}\n")).unwrap();
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_with_stdin(args, None)
    }

    fn run_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        run(&self.config, &self.db.path, args, stdin)
    }

    fn claim_json(&self, limit: u32, lease: &str) -> Vec<Value> {
        let output = self.run(&[
            "queue",
            "claim",
            "--limit",
            &limit.to_string(),
            "--lease",
            lease,
            "--json",
        ]);
        assert_ok(&output);
        json_lines(&output)
    }
}

fn run(config: &Path, db: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut command = Command::new(BIN);
    command
        .arg("--config")
        .arg(config)
        .arg("--db")
        .arg(db)
        .args(args)
        .env_remove("UID2_BUCKET_SYNC_CONFIG")
        .env_remove("UID2_BUCKET_SYNC_DATABASE")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn recent_day(i: usize) -> DateTime<Utc> {
    let midnight = Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    midnight - chrono::Duration::days((i % 30) as i64)
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

fn assert_ok(output: &Output) {
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        stdout(output),
        stderr(output)
    );
    assert_eq!(stderr(output), "");
}

fn json_lines(output: &Output) -> Vec<Value> {
    stdout(output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect()
}

fn json(output: &Output) -> Value {
    assert_ok(output);
    serde_json::from_str(&stdout(output)).unwrap()
}

fn lease_ids(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .map(|line| line["lease_id"].as_str().unwrap().to_owned())
        .collect()
}

fn counts(cli: &Cli) -> (u64, u64, u64, u64) {
    let stats = json(&cli.run(&["queue", "stats", "--json"]));
    let n = |key: &str| stats[key].as_u64().unwrap();
    (n("pending"), n("leased"), n("done"), n("dead"))
}

// ---- opening ---------------------------------------------------------------------

#[test]
fn consumers_commands_refuse_a_missing_database_and_create_nothing() {
    let cli = Cli::with_pending(0);
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["queue", "stats"],
        &["queue", "claim", "--limit", "1", "--lease", "1m", "--json"],
        &["queue", "list"],
        &["queue", "ack", "abc"],
        &["queue", "fail", "abc", "--error", "x"],
        &["queue", "retry", "--dead"],
        &["queue", "purge"],
    ] {
        let output = cli.run(args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert_eq!(
            stderr(&output),
            format!(
                "error: no database at {}; run `uid2-bucket-sync sync` first\n",
                cli.db.path.display()
            ),
            "{args:?}"
        );
        assert_eq!(stdout(&output), "");
        assert!(!cli.db.path.exists(), "{args:?} created the file");
    }
}

#[test]
fn a_newer_schema_is_refused_with_both_versions() {
    let cli = Cli::with_pending(1);
    rusqlite::Connection::open(&cli.db.path)
        .unwrap()
        .pragma_update(None, "user_version", SCHEMA_VERSION + 7)
        .unwrap();
    let output = cli.run(&["status"]);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains(&format!("schema version {}", SCHEMA_VERSION + 7))
            && message.contains(&format!("version {SCHEMA_VERSION} this")),
        "{message}"
    );
}

#[test]
fn a_file_that_is_not_sqlite_is_refused() {
    let cli = Cli::with_pending(0);
    std::fs::write(&cli.db.path, "#!/bin/sh\necho hello\n".repeat(100)).unwrap();
    let output = cli.run(&["queue", "stats"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output),
        format!(
            "error: {} is not a SQLite database\n",
            cli.db.path.display()
        )
    );
}

// ---- claim -------------------------------------------------------------------------

#[test]
fn claim_json_prints_one_object_per_line_with_bucket_last_updated_and_lease() {
    let cli = Cli::with_pending(3);
    let lines = cli.claim_json(2, "5m");
    assert_eq!(lines.len(), 2);
    let mut seen = Vec::new();
    for line in &lines {
        let bucket = line["bucket_id"].as_str().unwrap();
        let index: usize = bucket.trim_start_matches("bucket").parse().unwrap();
        assert_eq!(
            line["last_updated"].as_str().unwrap(),
            format_utc(recent_day(index))
        );
        let lease = line["lease_id"].as_str().unwrap();
        assert_eq!(lease.len(), 32);
        assert!(lease.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(line["attempt"], 1);
        let expires: DateTime<Utc> = line["lease_expires_at"].as_str().unwrap().parse().unwrap();
        assert!(expires > Utc::now() + chrono::Duration::minutes(4));
        seen.push(bucket.to_owned());
    }
    assert_eq!(seen, ["bucket000", "bucket001"]);
    assert_eq!(counts(&cli), (1, 2, 0, 0));
}

#[test]
fn claim_with_nothing_pending_exits_zero_and_prints_nothing() {
    let cli = Cli::with_pending(1);
    assert_eq!(cli.claim_json(5, "1m").len(), 1);
    for json in [true, false] {
        let mut args = vec!["queue", "claim", "--limit", "5", "--lease", "1m"];
        if json {
            args.push("--json");
        }
        let output = cli.run(&args);
        assert_ok(&output);
        assert_eq!(stdout(&output), "");
    }
}

#[test]
fn claim_for_people_is_an_aligned_table() {
    let cli = Cli::with_pending(2);
    let output = cli.run(&[
        "queue", "claim", "--limit", "2", "--lease", "10m", "--worker", "nightly",
    ]);
    assert_ok(&output);
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("LEASE_ID "), "{text}");
    let subject_column = lines[0].find("SUBJECT").unwrap();
    for line in &lines[1..] {
        assert_eq!(
            &line[subject_column..subject_column + 6],
            "bucket",
            "{text}"
        );
        assert!(line.ends_with("in 10m"), "{text}");
    }
    let listed = json_lines(&cli.run(&["queue", "list", "--state", "leased", "--json"]));
    assert!(listed.iter().all(|e| e["leased_by"] == "nightly"));
}

#[test]
fn a_lease_that_is_not_a_duration_is_a_usage_error() {
    let cli = Cli::with_pending(1);
    let output = cli.run(&["queue", "claim", "--limit", "1", "--lease", "soon"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("not a duration"),
        "{}",
        stderr(&output)
    );
    assert_eq!(counts(&cli), (1, 0, 0, 0));
}

// ---- ack and fail --------------------------------------------------------------------

#[test]
fn ack_reads_lease_ids_from_stdin_one_per_line() {
    let cli = Cli::with_pending(3);
    let ids = lease_ids(&cli.claim_json(3, "5m"));
    let input = format!("{}\n\n  {}  \n{}\n", ids[0], ids[1], ids[2]);
    let output = cli.run_with_stdin(&["queue", "ack"], Some(&input));
    assert_ok(&output);
    assert_eq!(stdout(&output), "acked 3 of 3\n");
    assert_eq!(counts(&cli), (0, 0, 3, 0));
}

#[test]
fn ack_exits_3_naming_each_id_whose_lease_is_not_held() {
    let cli = Cli::with_pending(2);
    let ids = lease_ids(&cli.claim_json(2, "5m"));
    let output = cli.run(&["queue", "ack", &ids[0], "0123abcd", &ids[1], "feedface"]);
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(stdout(&output), "acked 2 of 4\n");
    assert_eq!(
        stderr(&output),
        "lease 0123abcd: lease is not held (unknown, released or expired)\n\
         lease feedface: lease is not held (unknown, released or expired)\n"
    );
    assert_eq!(counts(&cli), (0, 0, 2, 0));

    // Acking the same leases again: each refused, nothing changes.
    let output = cli.run(&["queue", "ack", &ids[0], &ids[1]]);
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(stderr(&output).lines().count(), 2);
    assert_eq!(counts(&cli), (0, 0, 2, 0));
}

#[test]
fn acking_an_expired_lease_exits_3_and_the_item_is_delivered_again() {
    let cli = Cli::with_pending(1);
    let ids = lease_ids(&cli.claim_json(1, "1ms"));
    std::thread::sleep(std::time::Duration::from_millis(20));
    let output = cli.run(&["queue", "ack", &ids[0]]);
    assert_eq!(output.status.code(), Some(3));
    let message = stderr(&output);
    assert!(
        message.starts_with(&format!("lease {}: lease expired at ", ids[0])),
        "{message}"
    );
    let again = cli.claim_json(1, "5m");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["attempt"], 2);
}

#[test]
fn ack_with_no_ids_at_all_acks_nothing_and_succeeds() {
    let cli = Cli::with_pending(1);
    let output = cli.run_with_stdin(&["queue", "ack"], Some(""));
    assert_ok(&output);
    assert_eq!(stdout(&output), "acked 0 of 0\n");
}

#[test]
fn fail_returns_items_for_retry_then_dead_and_retry_dead_revives_them() {
    let cli = Cli::with_pending(1);
    let first = lease_ids(&cli.claim_json(1, "5m"));
    let output = cli.run(&[
        "queue",
        "fail",
        &first[0],
        "--error",
        "map returned 503",
        "--retry-after",
        "0s",
    ]);
    assert_ok(&output);
    assert_eq!(
        stdout(&output),
        "failed 1 of 1: 1 to retry, 0 dead, 0 pending with a newer rotation\n"
    );
    assert_eq!(counts(&cli), (1, 0, 0, 0));

    let second = lease_ids(&cli.claim_json(1, "5m"));
    let output = cli.run_with_stdin(
        &["queue", "fail", "--error", "map returned 503 again"],
        Some(&format!("{}\n", second[0])),
    );
    assert_ok(&output);
    assert_eq!(
        stdout(&output),
        "failed 1 of 1: 0 to retry, 1 dead, 0 pending with a newer rotation\n"
    );
    let dead = json_lines(&cli.run(&["queue", "list", "--state", "dead", "--json"]));
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["last_error"], "map returned 503 again");
    assert_eq!(dead[0]["attempts"], 2);

    let output = cli.run(&["queue", "fail", &second[0], "--error", "again"]);
    assert_eq!(output.status.code(), Some(3));

    let output = cli.run(&["queue", "retry", "--dead"]);
    assert_ok(&output);
    assert_eq!(stdout(&output), "1 dead item(s) pending again\n");
    assert_eq!(counts(&cli), (1, 0, 0, 0));
    assert_eq!(cli.claim_json(1, "5m")[0]["attempt"], 1);
}

#[test]
fn retry_requires_dead() {
    let cli = Cli::with_pending(1);
    let output = cli.run(&["queue", "retry"]);
    assert_eq!(output.status.code(), Some(2));
}

// ---- list, stats, purge ----------------------------------------------------------------

#[test]
fn list_filters_by_state_and_limit() {
    let cli = Cli::with_pending(4);
    let claimed = cli.claim_json(1, "5m");
    let pending = json_lines(&cli.run(&["queue", "list", "--state", "pending", "--json"]));
    assert_eq!(pending.len(), 3);
    assert!(
        pending
            .iter()
            .all(|e| e["state"] == "pending" && e["lease_id"].is_null())
    );
    let leased = json_lines(&cli.run(&["queue", "list", "--state", "leased", "--json"]));
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0]["lease_id"], claimed[0]["lease_id"]);
    assert_eq!(leased[0]["bucket_id"], claimed[0]["bucket_id"]);
    let limited = json_lines(&cli.run(&["queue", "list", "--limit", "2", "--json"]));
    assert_eq!(limited.len(), 2);

    let output = cli.run(&["queue", "list"]);
    assert_ok(&output);
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(lines[0].starts_with("SUBJECT "), "{text}");
    let state_column = lines[0].find("STATE").unwrap();
    let states: Vec<&str> = lines[1..]
        .iter()
        .map(|line| line[state_column..].split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        states.iter().filter(|s| **s == "pending").count(),
        3,
        "{text}"
    );
    assert_eq!(
        states.iter().filter(|s| **s == "leased").count(),
        1,
        "{text}"
    );

    let output = cli.run(&["queue", "list", "--state", "done"]);
    assert_ok(&output);
    assert_eq!(stdout(&output), "");
}

#[test]
fn stats_count_every_state() {
    let cli = Cli::with_pending(5);
    let ids = lease_ids(&cli.claim_json(3, "5m"));
    assert_ok(&cli.run(&["queue", "ack", &ids[0]]));
    assert_ok(&cli.run(&["queue", "fail", &ids[1], "--error", "x"]));
    let stats = json(&cli.run(&["queue", "stats", "--json"]));
    assert_eq!(stats["pending"], 3);
    assert_eq!(stats["retry_waiting"], 1);
    assert_eq!(stats["leased"], 1);
    assert_eq!(stats["done"], 1);
    assert_eq!(stats["dead"], 0);
    assert_eq!(stats["expired_leases"], 0);
    assert!(
        stats["oldest_pending_due_at"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );

    let output = cli.run(&["queue", "stats"]);
    assert_ok(&output);
    let text = stdout(&output);
    assert!(
        text.starts_with(
            "pending         3  (1 waiting for their retry time, not claimable yet)\n\
             leased          1\ndone            1\ndead            0\noldest pending  "
        ),
        "{text}"
    );
}

#[test]
fn purge_deletes_done_items_older_than_the_retention() {
    let cli = Cli::with_pending(2);
    let ids = lease_ids(&cli.claim_json(2, "5m"));
    assert_ok(&cli.run(&["queue", "ack", &ids[0], &ids[1]]));
    let output = cli.run(&["queue", "purge"]);
    assert_ok(&output);
    assert!(stdout(&output).starts_with("purged 0 done item(s) finished before "));
    std::thread::sleep(std::time::Duration::from_millis(5));
    let output = cli.run(&["queue", "purge", "--older-than", "0s"]);
    assert_ok(&output);
    assert!(
        stdout(&output).starts_with("purged 2 done item(s)"),
        "{}",
        stdout(&output)
    );
    assert_eq!(counts(&cli), (0, 0, 0, 0));
}

// ---- status ------------------------------------------------------------------------

#[test]
fn status_json_reports_the_mark_the_last_cycle_and_the_queue() {
    let cli = Cli::with_pending(0);
    let store = cli.db.open();
    let observed = truncate_to_millis(Utc::now()) - chrono::Duration::hours(2);
    store.record_attempt(observed).unwrap();
    store
        .ingest(
            vec![
                rotation("a", recent_day(3)),
                rotation("b", recent_day(1)),
                rotation("b", recent_day(2)),
            ],
            observed,
        )
        .unwrap();
    store
        .record_failure("unauthorized", "the operator answered 401", observed)
        .unwrap();
    drop(store);

    let status = json(&cli.run(&["status", "--json"]));
    assert_eq!(status["high_water_mark"], format_utc(recent_day(1)));
    assert_eq!(status["last_attempt_at"], format_utc(observed));
    assert_eq!(status["last_success_at"], format_utc(observed));
    assert_eq!(status["last_error"]["kind"], "unauthorized");
    assert_eq!(status["last_error"]["message"], "the operator answered 401");
    assert_eq!(status["last_error"]["at"], format_utc(observed));
    assert_eq!(status["last_cycle"]["received"], 3);
    assert_eq!(status["last_cycle"]["new_rotations"], 2);
    assert_eq!(status["queue"]["pending"], 2);
    assert_eq!(status["queue"]["leased"], 0);
    assert_eq!(status["queue"]["done"], 0);
    assert_eq!(status["queue"]["dead"], 0);
    let age = status["oldest_pending_age_seconds"].as_i64().unwrap();
    assert!(age >= 7200, "{age}");

    let output = cli.run(&["status"]);
    assert_ok(&output);
    let text = stdout(&output);
    let value_column = "high-water mark  ".len();
    for (line, key) in text.lines().zip([
        "database",
        "high-water mark",
        "last attempt",
        "last success",
        "last error",
        "queue",
        "oldest pending",
    ]) {
        assert!(line.starts_with(key), "{text}");
        assert_ne!(&line[value_column..value_column + 1], " ", "{text}");
    }
    assert!(
        text.contains("unauthorized: the operator answered 401"),
        "{text}"
    );
    assert!(
        text.contains("2 pending, 0 leased, 0 done, 0 dead"),
        "{text}"
    );
}

#[test]
fn status_of_a_database_never_synced_has_a_null_mark() {
    let cli = Cli::with_pending(0);
    drop(cli.db.open());
    let status = json(&cli.run(&["status", "--json"]));
    assert!(status["high_water_mark"].is_null());
    assert!(status["last_success_at"].is_null());
    assert!(status["last_error"].is_null());
    assert_eq!(status["queue"]["pending"], 0);
    assert!(status["oldest_pending_age_seconds"].is_null());
    let text = stdout(&cli.run(&["status"]));
    assert!(
        text.contains("high-water mark  none (never synced)"),
        "{text}"
    );
}

// ---- retry backoff -------------------------------------------------------------------

#[test]
fn a_failed_item_waits_the_configured_backoff_before_it_is_claimed_again() {
    let cli = Cli::with_pending(1);
    cli.configure_queue("max_attempts = 5\nretry_backoff = \"1h\"\nmax_retry_backoff = \"2h\"");
    let ids = lease_ids(&cli.claim_json(1, "5m"));
    let before = truncate_to_millis(Utc::now());
    assert_ok(&cli.run(&["queue", "fail", &ids[0], "--error", "map returned 503"]));
    let after = truncate_to_millis(Utc::now());

    // Retried immediately, as examples/consumer.sh does: nothing to claim.
    assert_eq!(cli.claim_json(1, "5m").len(), 0);
    let listed = json_lines(&cli.run(&["queue", "list", "--json"]));
    let due: DateTime<Utc> = listed[0]["due_at"].as_str().unwrap().parse().unwrap();
    let hour = chrono::Duration::hours(1);
    assert!(before + hour <= due && due <= after + hour, "{due}");

    let stats = json(&cli.run(&["queue", "stats", "--json"]));
    assert_eq!(
        (stats["pending"].as_u64(), stats["retry_waiting"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(stats["oldest_pending_due_at"].is_null(), "{stats}");
    let text = stdout(&cli.run(&["status"]));
    assert!(
        text.contains("1 pending (1 waiting to retry), 0 leased"),
        "{text}"
    );
    let text = stdout(&cli.run(&["queue", "list"]));
    assert!(
        text.contains("retry due in 59m 59s") || text.contains("retry due in 1h"),
        "{text}"
    );
}

#[test]
fn fail_retry_after_overrides_the_backoff() {
    let cli = Cli::with_pending(2);
    let ids = lease_ids(&cli.claim_json(2, "5m"));
    assert_ok(&cli.run(&[
        "queue",
        "fail",
        &ids[0],
        "--error",
        "x",
        "--retry-after",
        "0s",
    ]));
    assert_ok(&cli.run(&[
        "queue",
        "fail",
        &ids[1],
        "--error",
        "x",
        "--retry-after",
        "3h",
    ]));
    let again = cli.claim_json(2, "5m");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["attempt"], 2);
    let waiting = json_lines(&cli.run(&["queue", "list", "--state", "pending", "--json"]));
    let due: DateTime<Utc> = waiting[0]["due_at"].as_str().unwrap().parse().unwrap();
    assert!(due > Utc::now() + chrono::Duration::minutes(179), "{due}");
}

#[test]
fn a_backoff_cap_shorter_than_the_first_wait_is_refused_naming_the_key() {
    let cli = Cli::with_pending(1);
    cli.configure_queue("retry_backoff = \"10m\"\nmax_retry_backoff = \"1m\"");
    let output = cli.run(&["queue", "stats"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output),
        format!(
            "error: {}: queue.max_retry_backoff: 1m is shorter than queue.retry_backoff (10m)\n",
            cli.config.display()
        )
    );
}

// ---- bounds on the command line ------------------------------------------------------

fn assert_usage_error(cli: &Cli, args: &[&str], wording: &str) {
    let output = cli.run(args);
    assert_eq!(
        output.status.code(),
        Some(2),
        "{args:?}: {}",
        stderr(&output)
    );
    assert!(
        stderr(&output).contains(wording),
        "{args:?}: {}",
        stderr(&output)
    );
    assert_eq!(stdout(&output), "", "{args:?}");
}

#[test]
fn a_lease_out_of_range_is_a_usage_error_in_the_lease_wording() {
    let cli = Cli::with_pending(1);
    for (lease, shown) in [("0s", "0s"), ("11years", "11years")] {
        assert_usage_error(
            &cli,
            &["queue", "claim", "--limit", "1", "--lease", lease],
            &format!("a lease must last between 1 ms and 10 years, not {shown}"),
        );
    }
    assert_eq!(counts(&cli), (1, 0, 0, 0));
}

#[test]
fn a_claim_limit_out_of_range_is_a_usage_error() {
    let cli = Cli::with_pending(1);
    for limit in ["0", "100001", "4294967295"] {
        assert_usage_error(
            &cli,
            &["queue", "claim", "--limit", limit, "--lease", "1m"],
            "not in 1..=100000",
        );
    }
    assert_eq!(counts(&cli), (1, 0, 0, 0));
    assert_eq!(cli.claim_json(100_000, "1m").len(), 1);
}

#[test]
fn a_worker_name_too_long_or_with_control_characters_is_a_usage_error() {
    let cli = Cli::with_pending(1);
    let long = "w".repeat(129);
    for (worker, wording) in [
        (long.as_str(), "must be at most 128 bytes, not 129"),
        (
            "job\x1b]0;pwned\x07",
            "must not contain control characters (found U+001B)",
        ),
        ("job\rok", "(found U+000D)"),
    ] {
        assert_usage_error(
            &cli,
            &[
                "queue", "claim", "--limit", "1", "--lease", "1m", "--worker", worker,
            ],
            wording,
        );
    }
    assert_eq!(counts(&cli), (1, 0, 0, 0));
}

#[test]
fn a_long_error_text_is_stored_cut_with_a_marker() {
    let cli = Cli::with_pending(1);
    let ids = lease_ids(&cli.claim_json(1, "5m"));
    let error = "e".repeat(100_000);
    assert_ok(&cli.run(&["queue", "fail", &ids[0], "--error", &error]));
    let listed = json_lines(&cli.run(&["queue", "list", "--json"]));
    let stored = listed[0]["last_error"].as_str().unwrap();
    assert!(stored.len() <= 4096, "{}", stored.len());
    assert!(stored.ends_with("… [cut, 100000 bytes in all]"), "{stored}");
}

#[test]
fn stored_text_cannot_drive_the_terminal_in_human_output() {
    let cli = Cli::with_pending(1);
    let ids = lease_ids(&cli.claim_json(1, "5m"));
    let error = "\x1b[2J\x1b]0;owned\x07gone\rfake line\nsecond";
    assert_ok(&cli.run(&[
        "queue",
        "fail",
        &ids[0],
        "--error",
        error,
        "--retry-after",
        "0s",
    ]));
    let text = stdout(&cli.run(&["queue", "list"]));
    assert!(
        !text.contains(['\x1b', '\x07', '\r']),
        "raw control characters in {text:?}"
    );
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(
        text.contains(r"last error: \u{1b}[2J\u{1b}]0;owned\u{7}gone\rfake line\nsecond"),
        "{text}"
    );
    // JSON keeps the text as it was stored, escaped by JSON itself.
    let listed = json_lines(&cli.run(&["queue", "list", "--json"]));
    assert_eq!(listed[0]["last_error"], error);
}

// ---- `-` for stdin -----------------------------------------------------------------------

#[test]
fn ack_and_fail_read_lease_ids_from_stdin_when_given_a_dash() {
    let cli = Cli::with_pending(3);
    let ids = lease_ids(&cli.claim_json(3, "5m"));
    let output = cli.run_with_stdin(
        &["queue", "ack", "-"],
        Some(&format!("{}\n{}\n", ids[0], ids[1])),
    );
    assert_ok(&output);
    assert_eq!(stdout(&output), "acked 2 of 2\n");
    let output = cli.run_with_stdin(
        &["queue", "fail", "-", "--error", "x"],
        Some(&format!("{}\n", ids[2])),
    );
    assert_ok(&output);
    assert!(
        stdout(&output).starts_with("failed 1 of 1: 1 to retry"),
        "{}",
        stdout(&output)
    );
    assert_eq!(counts(&cli), (1, 0, 2, 0));
}

#[test]
fn a_dash_among_lease_ids_is_a_usage_error_and_changes_nothing() {
    let cli = Cli::with_pending(1);
    let ids = lease_ids(&cli.claim_json(1, "5m"));
    for args in [
        &["queue", "ack", &ids[0], "-"][..],
        &["queue", "fail", "-", &ids[0], "--error", "x"],
    ] {
        assert_usage_error(&cli, args, "cannot be given together with lease ids");
    }
    assert_eq!(counts(&cli), (0, 1, 0, 0));
}

// ---- streaming -------------------------------------------------------------------------

#[test]
fn list_streams_and_a_reader_that_stops_early_is_not_an_error() {
    let cli = Cli::with_pending(3000);
    for json in [false, true] {
        let mut command = Command::new(BIN);
        command
            .arg("--config")
            .arg(&cli.config)
            .arg("--db")
            .arg(&cli.db.path)
            .args(["queue", "list"])
            .args(json.then_some("--json"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        // The pipe is closed here, with most of the 3000 entries unread.
        let output = child.wait_with_output().unwrap();
        assert!(!first.is_empty());
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        assert_eq!(stderr(&output), "");
    }
}
