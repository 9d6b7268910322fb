//! The real binary on a PostgreSQL database: the daemon's commands and the
//! consumers' commands, `run` instances that poll one at a time and take
//! over from each other, and the commands that need the SQLite identity
//! store saying so.
//!
//! Plain tests with a runtime of their own for the simulated operator: the
//! test's own database reads are blocking calls, made outside it.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common;

use common::app::{TestApp, spawn_app};
use common::process::{assert_no_secret, output_with_stdin, terminate, text, wait_at_most};

const PASSWORD: &str = "throwaway-test-password";

/// A simulated operator with `buckets` buckets on its own runtime, and an
/// app on a fresh PostgreSQL database; `None` without PostgreSQL.
fn app_on_postgres(buckets: u32) -> Option<(tokio::runtime::Runtime, TestApp)> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let app = runtime.block_on(spawn_app(buckets)).on_postgres()?;
    Some((runtime, app))
}

fn run_ok(app: &TestApp, args: &[&str], stdin: &str) -> String {
    let output = output_with_stdin(app.command().args(args), stdin);
    let shown = text(&output);
    assert!(output.status.success(), "{args:?} failed:\n{shown}");
    assert!(
        !shown.contains(PASSWORD),
        "{args:?} showed the password:\n{shown}"
    );
    assert_no_secret(&shown, &format!("{args:?}"));
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn sync_claim_ack_and_status_work_on_postgres() {
    let Some((_runtime, app)) = app_on_postgres(40) else {
        return;
    };
    let summary = run_ok(&app, &["sync"], "");
    assert!(summary.contains("received 40 rows"), "{summary}");

    let claimed = run_ok(
        &app,
        &[
            "queue", "claim", "--limit", "15", "--lease", "5m", "--worker", "w1", "--json",
        ],
        "",
    );
    let leases: Vec<serde_json::Value> = claimed
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(leases.len(), 15);
    let ids: String = leases
        .iter()
        .map(|lease| format!("{}\n", lease["lease_id"].as_str().unwrap()))
        .collect();
    run_ok(&app, &["queue", "ack"], &ids);
    // A second ack of the same leases is refused, naming each.
    let again = output_with_stdin(app.command().args(["queue", "ack"]), &ids);
    assert!(!again.status.success());
    assert_eq!(
        text(&again).matches("not held").count(),
        15,
        "{}",
        text(&again)
    );

    let status: serde_json::Value =
        serde_json::from_str(&run_ok(&app, &["status", "--json"], "")).unwrap();
    assert_eq!(status["queue"]["pending"], 25);
    assert_eq!(status["queue"]["done"], 15);
    assert!(status["high_water_mark"].is_string(), "{status}");
    let database = status["database"].as_str().unwrap();
    assert!(
        database.starts_with("postgresql://postgres@127.0.0.1:"),
        "{database}"
    );

    let done = run_ok(&app, &["queue", "list", "--state", "done", "--json"], "");
    assert_eq!(done.lines().count(), 15);
}

fn start_run(app: &TestApp) -> Child {
    app.command()
        .arg("run")
        .env("UID2_BUCKET_SYNC_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Polls `status` until `done` says yes, at most `limit`. Until the first
/// `run` has created the schema, `status` refuses the database.
fn wait_for(app: &TestApp, limit: Duration, what: &str, done: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        let output = output_with_stdin(app.command().args(["status", "--json"]), "");
        if output.status.success() {
            let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
            if done(&status) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {limit:?}: {}",
            text(&output)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn run_instances_poll_one_at_a_time_and_a_standby_takes_over_from_a_killed_one() {
    let Some((_runtime, app)) = app_on_postgres(8) else {
        return;
    };
    app.write_config("");
    std::fs::write(
        &app.config_path,
        app.config_text("")
            .replace("interval = \"1h\"", "interval = \"1s\""),
    )
    .unwrap();
    let mut first = start_run(&app);
    wait_for(&app, Duration::from_secs(30), "the first poll", |s| {
        s["high_water_mark"].is_string()
    });
    let mut second = start_run(&app);
    std::thread::sleep(Duration::from_secs(3));
    assert!(first.try_wait().unwrap().is_none() && second.try_wait().unwrap().is_none());

    // The holder dies without a word; the standby's next try takes over.
    first.kill().unwrap();
    let _ = first.wait();
    let killed_at = chrono::Utc::now();
    wait_for(
        &app,
        Duration::from_secs(30),
        "a poll by the standby",
        |s| {
            s["last_attempt_at"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .is_some_and(|t| t > killed_at)
        },
    );
    terminate(&second);
    let (output, _) = wait_at_most(second, Duration::from_secs(20));
    let log = text(&output);
    assert!(output.status.success(), "{log}");
    assert!(log.contains("waiting as a standby"), "{log}");
    assert!(log.contains("holding the poller lock"), "{log}");
    assert!(!log.contains(PASSWORD), "{log}");
    let mut stderr = String::new();
    use std::io::Read;
    first
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        !stderr.contains("standby"),
        "the first instance polled at once:\n{stderr}"
    );
}

/// The daemon's `[queue]` settings live with the queue: a consumer whose
/// own configuration has none (the default: five attempts) follows the
/// daemon's one attempt.
fn consumers_follow_the_daemons_queue_settings(app: &TestApp) {
    app.write_config("[queue]\nmax_attempts = 1\nretry_backoff = \"0s\"\n");
    run_ok(app, &["sync"], "");
    let consumer = app.dir.path().join("consumer.toml");
    let database = app
        .config_text("")
        .split("[database]")
        .nth(1)
        .unwrap()
        .to_owned();
    std::fs::write(&consumer, format!("[database]{database}")).unwrap();
    let consumer_run = |args: &[&str], stdin: &str| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_uid2-bucket-sync"));
        command
            .arg("--config")
            .arg(&consumer)
            .args(args)
            .env_remove("UID2_BUCKET_SYNC_DATABASE")
            .env_remove("UID2_BUCKET_SYNC_CONFIG");
        let output = output_with_stdin(&mut command, stdin);
        assert!(output.status.success(), "{args:?}: {}", text(&output));
        String::from_utf8(output.stdout).unwrap()
    };
    let claimed = consumer_run(
        &["queue", "claim", "--limit", "1", "--lease", "5m", "--json"],
        "",
    );
    let lease: serde_json::Value = serde_json::from_str(claimed.trim()).unwrap();
    consumer_run(
        &[
            "queue",
            "fail",
            lease["lease_id"].as_str().unwrap(),
            "--error",
            "no luck",
        ],
        "",
    );
    let stats: serde_json::Value =
        serde_json::from_str(&consumer_run(&["queue", "stats", "--json"], "")).unwrap();
    assert_eq!(stats["dead"], 1, "{stats}");
}

#[test]
fn consumers_follow_the_daemons_queue_settings_on_postgres() {
    let Some((_runtime, app)) = app_on_postgres(3) else {
        return;
    };
    consumers_follow_the_daemons_queue_settings(&app);
}

#[test]
fn consumers_follow_the_daemons_queue_settings_on_sqlite() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let app = runtime.block_on(spawn_app(3));
    consumers_follow_the_daemons_queue_settings(&app);
}
