//! `run`, `sync` and `status` as real processes: a clean stop on SIGTERM,
//! secrets kept out of every line they print, and configuration mistakes
//! refused at start with the file, the key and the reason.

use crate::common;

use std::process::Stdio;
use std::time::Duration;

use common::app::{CLIENT_SECRET, TestApp, spawn_app};
use common::process::{assert_no_secret, terminate, text, wait_at_most, wait_for_stderr_line};
use uid2_bucket_sync::simulator::Fault;

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_cycle_exits_0_within_5_seconds_and_commits_nothing() {
    let app = spawn_app(100).await;
    app.operator
        .inject_always(Fault::Delay(Duration::from_secs(60)));
    let mut child = app
        .command()
        .arg("run")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_stderr_line(
        &mut child,
        "running the first one now",
        Duration::from_secs(20),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    terminate(&child);
    let (output, took) = wait_at_most(child, Duration::from_secs(30));
    assert!(output.status.success(), "{output:?}");
    assert!(took < Duration::from_secs(5), "stopped in {took:?}");

    let state = app.store().sync_state().unwrap();
    assert_eq!(state.high_water_mark, None);
    assert_eq!(state.last_error, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_reaches_any_output_of_run_sync_or_status() {
    let app = spawn_app(30).await;
    app.write_config("[log]\nlevel = \"trace\"\n");

    // The daemon, traced, through one successful cycle and a stop.
    let mut child = app
        .command()
        .arg("run")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut daemon_output =
        wait_for_stderr_line(&mut child, "sync cycle: received", Duration::from_secs(30));
    terminate(&child);
    let (output, _) = wait_at_most(child, Duration::from_secs(30));
    daemon_output.push_str(&text(&output));
    assert!(daemon_output.contains("TRACE") || daemon_output.contains("DEBUG"));
    assert_no_secret(&daemon_output, "run");

    // `sync` succeeding, then failing in the ways that talk about credentials.
    let mut outputs = vec![("sync ok", app.command().arg("sync").output().unwrap())];
    app.operator.inject_always(Fault::CorruptTag);
    outputs.push((
        "sync tag mismatch",
        app.command().arg("sync").output().unwrap(),
    ));
    app.operator.clear_faults();
    app.operator.inject_always(Fault::Status {
        code: 401,
        retry_after: None,
    });
    outputs.push(("sync 401", app.command().arg("sync").output().unwrap()));
    app.operator.clear_faults();
    outputs.push(("status", app.command().arg("status").output().unwrap()));
    outputs.push((
        "status --json",
        app.command().args(["status", "--json"]).output().unwrap(),
    ));
    for (context, output) in &outputs {
        assert_no_secret(&text(output), context);
    }
    assert!(text(&outputs[3].1).contains("last error"));
}

fn refusal(app: &TestApp, config: &str) -> String {
    std::fs::write(&app.config_path, config).unwrap();
    let output = app.command().arg("run").output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert_no_secret(&stderr, "refusal");
    stderr
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_config_file_is_named() {
    let app = spawn_app(1).await;
    let missing = app.dir.path().join("nowhere.toml");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_uid2-bucket-sync"))
        .arg("--config")
        .arg(&missing)
        .arg("run")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
    assert!(stderr.contains("cannot read"), "{stderr}");
}

/// Runs `run --config CONFIG` and returns its one line of stderr.
fn config_read_refusal(config: &std::path::Path) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_uid2-bucket-sync"))
        .arg("--config")
        .arg(config)
        .arg("run")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    stderr
}

#[test]
fn an_unreadable_config_names_the_os_reason_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    // A directory cannot be read as a file, whoever runs the test.
    let stderr = config_read_refusal(dir.path());
    let reason = "Is a directory (os error 21)";
    assert_eq!(stderr.matches(reason).count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!("error: {}: cannot read: ", dir.path().display())),
        "{stderr}"
    );

    // The case users meet: a file they may not read. Root reads it anyway.
    use std::os::unix::fs::PermissionsExt;
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "").unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::read(&config).is_ok() {
        eprintln!("skipping the chmod 000 case: this user (root?) can read any file");
        return;
    }
    let stderr = config_read_refusal(&config);
    let reason = "Permission denied (os error 13)";
    assert_eq!(stderr.matches(reason).count(), 1, "{stderr}");
}

/// `extra` appended to a valid config is refused naming the file, `key`
/// and `reason`.
async fn assert_refused_naming(extra: &str, key: &str, reason: &str) {
    let app = spawn_app(1).await;
    let stderr = refusal(&app, &app.config_text(extra));
    let file = app.config_path.display().to_string();
    for wanted in [file.as_str(), key, reason] {
        assert!(stderr.contains(wanted), "{wanted:?} not in {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_key_is_refused_with_file_key_and_reason() {
    assert_refused_naming("[queue]\nmax_atempts = 3\n", "max_atempts", "unknown").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_duration_is_refused_with_file_key_and_reason() {
    assert_refused_naming(
        "[queue]\ndone_retention = \"a week\"\n",
        "queue.done_retention",
        "not a duration",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_to_another_host_is_refused() {
    let app = spawn_app(1).await;
    let config = app
        .config_text("")
        .replace(&app.operator.base_url(), "http://operator.example.com");
    let stderr = refusal(&app, &config);
    assert!(stderr.contains("operator.base_url"), "{stderr}");
    assert!(stderr.contains("use https"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_secret_that_is_not_32_bytes_is_refused_without_echoing_it() {
    let app = spawn_app(1).await;
    let short = "c2hvcnQtc2VjcmV0"; // "short-secret"
    let config = app.config_text("").replace(CLIENT_SECRET, short);
    let stderr = refusal(&app, &config);
    assert!(stderr.contains("operator.client_secret"), "{stderr}");
    assert!(stderr.contains("12 bytes"), "{stderr}");
    assert!(!stderr.contains(short), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cron_schedule_and_an_interval_together_are_refused() {
    let app = spawn_app(1).await;
    let config = app.config_text("").replace(
        "interval = \"1h\"",
        "interval = \"1h\"\nschedule = \"0 5 * * * *\"",
    );
    let stderr = refusal(&app, &config);
    assert!(stderr.contains("not both"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_absurd_interval_is_refused_at_start_instead_of_crashing() {
    let app = spawn_app(1).await;
    let config = app
        .config_text("")
        .replace("interval = \"1h\"", "interval = \"600000000y\"");
    let stderr = refusal(&app, &config);
    assert!(stderr.contains("sync.interval: "), "{stderr}");
    assert!(stderr.contains("366 days"), "{stderr}");
}
