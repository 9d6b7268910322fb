//! What an operator of the service sees, with real processes: the metrics
//! endpoint, `--version`, `status` telling whether a daemon runs, one `run`
//! per database, and `config check` for install scripts.

use crate::common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::app::{API_KEY, CLIENT_SECRET, TestApp, spawn_app};
use common::process::{assert_no_secret, terminate, text, wait_at_most, wait_for_stderr_line};
use uid2_bucket_sync::build_info::{COMMIT, VERSION};
use uid2_bucket_sync::simulator::Fault;

const SERIES: [&str; 9] = [
    "uid2_bucket_sync_cycles_total",
    "uid2_bucket_sync_rows_received_total",
    "uid2_bucket_sync_queued_total",
    "uid2_bucket_sync_ticks_skipped_total",
    "uid2_bucket_sync_cycle_duration_seconds",
    "uid2_bucket_sync_last_success_timestamp_seconds",
    "uid2_bucket_sync_queue_items",
    "uid2_bucket_sync_oldest_pending_age_seconds",
    "uid2_bucket_sync_build_info",
];

/// An address nobody listens on right now.
fn free_address() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Starts `run` and returns once its log says `wanted`.
fn start_run(app: &TestApp, wanted: &str) -> Child {
    let mut child = app
        .command()
        .arg("run")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_stderr_line(&mut child, wanted, Duration::from_secs(30));
    child
}

fn stop(child: Child) {
    terminate(&child);
    let (output, _) = wait_at_most(child, Duration::from_secs(30));
    assert!(output.status.success(), "{output:?}");
}

async fn get(address: SocketAddr, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://{address}{path}"))
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// The value of the sample whose name and labels are exactly `series`.
fn sample(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in:\n{body}"))
        .parse()
        .unwrap()
}

fn status_json(app: &TestApp) -> serde_json::Value {
    let output = app.command().args(["status", "--json"]).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).unwrap()
}

fn status_text(app: &TestApp) -> String {
    let output = app.command().arg("status").output().unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// The `key  value` line of a status or summary block.
fn line_of<'a>(block: &'a str, key: &str) -> &'a str {
    block
        .lines()
        .find(|line| {
            line.strip_prefix(key)
                .is_some_and(|rest| rest.starts_with("  "))
        })
        .unwrap_or_else(|| panic!("no {key:?} line in:\n{block}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_described_zero_before_the_first_cycle_and_served_on_metrics_only() {
    let app = spawn_app(10).await;
    // The first cycle hangs, so everything scraped is the starting state.
    app.operator
        .inject_always(Fault::Delay(Duration::from_secs(60)));
    let listen = free_address();
    app.write_config(&format!("[metrics]\nlisten = \"{listen}\"\n"));
    let child = start_run(&app, "running the first one now");

    let (status, body) = get(listen, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    for series in SERIES {
        assert!(
            body.contains(&format!("# HELP {series} ")),
            "no HELP for {series}:\n{body}"
        );
    }
    for zero in [
        "uid2_bucket_sync_cycles_total{outcome=\"success\"}",
        "uid2_bucket_sync_rows_received_total",
        "uid2_bucket_sync_queued_total",
        "uid2_bucket_sync_ticks_skipped_total",
        "uid2_bucket_sync_cycle_duration_seconds_count",
        "uid2_bucket_sync_last_success_timestamp_seconds",
        "uid2_bucket_sync_queue_items{state=\"pending\"}",
        "uid2_bucket_sync_queue_items{state=\"leased\"}",
        "uid2_bucket_sync_queue_items{state=\"done\"}",
        "uid2_bucket_sync_queue_items{state=\"dead\"}",
        "uid2_bucket_sync_oldest_pending_age_seconds",
    ] {
        assert_eq!(sample(&body, zero), 0.0, "{zero}");
    }
    let build_info =
        format!("uid2_bucket_sync_build_info{{version=\"{VERSION}\",commit=\"{COMMIT}\"}}");
    assert_eq!(sample(&body, &build_info), 1.0);

    for elsewhere in ["/", "/metric", "/metrics/x", "/healthz"] {
        let (status, _) = get(listen, elsewhere).await;
        assert_eq!(status, 404, "{elsewhere}");
    }
    stop(child);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_after_a_restart_start_from_the_databases_last_success_and_queue() {
    let app = spawn_app(30).await;
    let synced = app.command().arg("sync").output().unwrap();
    assert!(synced.status.success(), "{synced:?}");
    let last_success = app.store().sync_state().unwrap().last_success_at.unwrap();

    // Synced a moment ago with an hourly interval: no catch-up cycle.
    let listen = free_address();
    app.write_config(&format!("[metrics]\nlisten = \"{listen}\"\n"));
    let child = start_run(&app, "daemon started");
    let (_, body) = get(listen, "/metrics").await;
    stop(child);

    assert_eq!(
        sample(&body, "uid2_bucket_sync_last_success_timestamp_seconds"),
        last_success.timestamp_millis() as f64 / 1000.0
    );
    assert_eq!(
        sample(&body, "uid2_bucket_sync_queue_items{state=\"pending\"}"),
        30.0
    );
    assert_eq!(
        sample(&body, "uid2_bucket_sync_cycles_total{outcome=\"success\"}"),
        0.0
    );
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let output = Command::new(env!("CARGO_BIN_EXE_uid2-bucket-sync"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(output.status.success());
    let git_head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map_or_else(
            || "unknown".to_owned(),
            |output| String::from_utf8(output.stdout).unwrap().trim().to_owned(),
        );
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        format!(
            "uid2-bucket-sync {} (commit {git_head})\n",
            env!("CARGO_PKG_VERSION")
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn status_shows_a_daemon_running_while_run_is_up_and_not_after_it_stops() {
    let app = spawn_app(10).await;
    let child = start_run(&app, "sync cycle: received");

    let running = status_json(&app);
    assert_eq!(running["daemon_running"], true, "{running}");
    assert_eq!(running["base_url"], app.operator.base_url().as_str());
    assert_eq!(running["environment"], serde_json::Value::Null);
    assert_eq!(
        running["schedule"],
        serde_json::json!({"kind": "interval", "seconds": 3600})
    );
    let last_attempt = running["last_attempt_at"].as_str().unwrap();
    let next_poll = running["next_poll"].as_str().unwrap();
    let parse = |text: &str| chrono::DateTime::parse_from_rfc3339(text).unwrap();
    assert_eq!(
        parse(next_poll) - parse(last_attempt),
        chrono::Duration::hours(1)
    );
    assert_eq!(running["queue"]["pending"], 10, "existing fields stay");
    let shown = status_text(&app);
    assert!(line_of(&shown, "daemon").ends_with("  running"), "{shown}");
    assert!(
        line_of(&shown, "schedule").ends_with("  every 1h"),
        "{shown}"
    );
    assert!(line_of(&shown, "next poll").contains("(in 59m"), "{shown}");

    stop(child);
    let stopped = status_json(&app);
    assert_eq!(stopped["daemon_running"], false, "{stopped}");
    assert_eq!(stopped["next_poll"], serde_json::Value::Null);
    let shown = status_text(&app);
    assert!(
        line_of(&shown, "daemon").ends_with("  not running"),
        "{shown}"
    );
    assert!(
        line_of(&shown, "next poll").ends_with("none: no daemon is running"),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn status_without_a_configuration_file_leaves_the_configuration_out() {
    let app = spawn_app(5).await;
    assert!(app.command().arg("sync").output().unwrap().status.success());
    let without_config = |json: bool| {
        let mut bare = Command::new(env!("CARGO_BIN_EXE_uid2-bucket-sync"));
        bare.env_clear()
            .arg("--db")
            .arg(&app.db_path)
            .arg("status")
            .args(json.then_some("--json"));
        let output = bare.output().unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let json: serde_json::Value = serde_json::from_str(&without_config(true)).unwrap();
    assert_eq!(json["daemon_running"], false, "{json}");
    for unknown in ["base_url", "environment", "schedule", "next_poll"] {
        assert_eq!(json[unknown], serde_json::Value::Null, "{unknown}: {json}");
    }
    let shown = without_config(false);
    assert!(line_of(&shown, "daemon").ends_with("  not running"));
    for absent in ["operator  ", "schedule  ", "next poll  "] {
        assert!(!shown.contains(absent), "{absent:?} in:\n{shown}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_run_on_the_same_database_is_refused_while_the_first_polls() {
    let app = spawn_app(10).await;
    let listen = free_address();
    app.write_config(&format!("[metrics]\nlisten = \"{listen}\"\n"));
    let first = start_run(&app, "daemon started");

    let second = app.command().arg("run").output().unwrap();
    stop(first);
    assert_eq!(second.status.code(), Some(1), "{second:?}");
    assert!(second.stdout.is_empty());
    assert_eq!(
        String::from_utf8(second.stderr).unwrap(),
        format!(
            "error: another uid2-bucket-sync run is already polling {}\n",
            app.db_path.display()
        )
    );
    // Once the first has stopped, the database is free again.
    stop(start_run(&app, "daemon started"));
}

/// Writes `text` as the config file, readable by the owner only.
fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn without_inline_credentials(app: &TestApp) -> String {
    app.config_text("")
        .replace(&format!("api_key = \"{API_KEY}\"\n"), "")
        .replace(&format!("client_secret = \"{CLIENT_SECRET}\"\n"), "")
}

fn config_check(command: &mut Command) -> Output {
    let output = command.args(["config", "check"]).output().unwrap();
    assert_no_secret(&text(&output), "config check");
    output
}

/// Exit 1, nothing on stdout, one line on stderr, which is returned.
fn config_check_refusal(app: &TestApp) -> String {
    let output = config_check(&mut app.command());
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(output.stdout.is_empty(), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    stderr
}

#[tokio::test(flavor = "multi_thread")]
async fn config_check_summarises_a_good_configuration_and_creates_nothing() {
    let app = spawn_app(1).await;
    let output = config_check(&mut app.command());
    assert!(output.status.success(), "{output:?}");
    assert!(output.stderr.is_empty(), "{output:?}");
    let summary = String::from_utf8(output.stdout).unwrap();
    let config = app.config_path.display().to_string();
    assert_eq!(summary.lines().next(), Some("configuration OK"));
    assert!(line_of(&summary, "file").ends_with(&config), "{summary}");
    assert!(
        line_of(&summary, "operator").ends_with(&app.operator.base_url()),
        "{summary}"
    );
    assert!(line_of(&summary, "schedule").ends_with("every 1h"));
    assert!(
        line_of(&summary, "database").contains(&app.db_path.display().to_string()),
        "{summary}"
    );
    assert!(
        line_of(&summary, "api key").ends_with(&format!("operator.api_key in {config}")),
        "{summary}"
    );
    assert!(!app.db_path.exists(), "config check created the database");
    assert!(app.operator.requests().is_empty(), "config check polled");
}

#[tokio::test(flavor = "multi_thread")]
async fn config_check_names_where_each_credential_comes_from() {
    let app = spawn_app(1).await;
    let credentials = app.dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    write_private(&credentials.join("client_secret"), CLIENT_SECRET);
    write_private(&app.config_path, &without_inline_credentials(&app));
    let output = config_check(
        app.command()
            .env("UID2_API_KEY", API_KEY)
            .env("CREDENTIALS_DIRECTORY", &credentials),
    );
    assert!(output.status.success(), "{output:?}");
    let summary = String::from_utf8(output.stdout).unwrap();
    assert!(
        line_of(&summary, "api key").ends_with("  the environment variable UID2_API_KEY"),
        "{summary}"
    );
    assert!(
        line_of(&summary, "client secret").ends_with(&format!(
            "  the systemd credential client_secret ({})",
            credentials.join("client_secret").display()
        )),
        "{summary}"
    );

    let key_file = app.dir.path().join("api_key");
    write_private(&key_file, API_KEY);
    let config = app.config_text("").replace(
        &format!("api_key = \"{API_KEY}\""),
        &format!("api_key_file = \"{}\"", key_file.display()),
    );
    write_private(&app.config_path, &config);
    let output = config_check(&mut app.command());
    assert!(output.status.success(), "{output:?}");
    let summary = String::from_utf8(output.stdout).unwrap();
    assert!(
        line_of(&summary, "api key").ends_with(&format!(
            "  the file {} (operator.api_key_file in {})",
            key_file.display(),
            app.config_path.display()
        )),
        "{summary}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn config_check_refuses_missing_credentials_with_exit_1() {
    let app = spawn_app(1).await;
    write_private(&app.config_path, &without_inline_credentials(&app));
    let stderr = config_check_refusal(&app);
    assert!(stderr.contains("operator.api_key: not set"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn config_check_refuses_malformed_credentials_without_echoing_them() {
    let app = spawn_app(1).await;
    let short = "c2hvcnQtc2VjcmV0"; // "short-secret"
    write_private(
        &app.config_path,
        &app.config_text("").replace(CLIENT_SECRET, short),
    );
    let stderr = config_check_refusal(&app);
    assert!(stderr.contains("operator.client_secret"), "{stderr}");
    assert!(stderr.contains("12 bytes"), "{stderr}");
    assert!(!stderr.contains(short), "{stderr}");

    write_private(
        &app.config_path,
        &app.config_text("").replace(API_KEY, "   "),
    );
    let stderr = config_check_refusal(&app);
    assert!(
        stderr.contains("operator.api_key: API key is empty"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn config_check_refuses_a_database_directory_that_does_not_exist() {
    let app = spawn_app(1).await;
    let nowhere = app.dir.path().join("missing").join("buckets.db");
    let config = app.config_text("").replace(
        &app.db_path.display().to_string(),
        &nowhere.display().to_string(),
    );
    write_private(&app.config_path, &config);
    let stderr = config_check_refusal(&app);
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert!(!nowhere.parent().unwrap().exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn config_check_refuses_a_database_path_that_is_another_kind_of_file() {
    let app = spawn_app(1).await;
    std::fs::write(&app.db_path, "not a database, just text\n").unwrap();
    let stderr = config_check_refusal(&app);
    assert!(stderr.contains("is not a SQLite database"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn config_check_refuses_a_new_database_without_a_starting_point() {
    let app = spawn_app(1).await;
    let config = app
        .config_text("")
        .replace("initial_since = \"2000-01-01T00:00:00\"\n", "");
    write_private(&app.config_path, &config);
    let stderr = config_check_refusal(&app);
    assert!(stderr.contains("sync.initial_since is not set"), "{stderr}");

    // An existing database carries its own high-water mark.
    app.write_config("");
    assert!(app.command().arg("sync").output().unwrap().status.success());
    write_private(&app.config_path, &config);
    assert!(config_check(&mut app.command()).status.success());
}
