//! `sync` as a user runs it: the real binary against the simulated operator.

use crate::common;

use common::app::{API_KEY, CLIENT_SECRET, spawn_app};

#[tokio::test(flavor = "multi_thread")]
async fn a_first_sync_queues_every_bucket_and_prints_one_summary_line() {
    let app = spawn_app(500).await;
    let output = app.command().arg("sync").output().unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.starts_with("sync: received 500 rows (500 new rotations, 0 already known); 500 newly queued; high-water mark none -> "), "{stdout}");

    let status = app.store().status(chrono::Utc::now()).unwrap();
    assert_eq!(status.queue.pending, 500);
    let latest = app.operator.snapshot().iter().map(|r| r.last_updated).max();
    assert_eq!(status.sync.high_water_mark, latest);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_sync_exits_1_with_one_line_naming_the_kind_and_changes_nothing_but_the_error_record()
 {
    let app = spawn_app(50).await;
    app.command().arg("sync").output().unwrap();
    let before = app.store().sync_state().unwrap();

    app.operator
        .inject_always(uid2_bucket_sync::simulator::Fault::CorruptTag);
    let output = app.command().arg("sync").output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    let last = stderr.lines().last().unwrap();
    assert!(
        last.starts_with("error: sync failed (envelope): "),
        "{stderr}"
    );
    assert!(last.contains("client_secret"), "{last}");

    let after = app.store().sync_state().unwrap();
    assert_eq!(after.high_water_mark, before.high_water_mark);
    assert_eq!(after.last_success_at, before.last_success_at);
    assert_eq!(after.last_error.unwrap().kind, "envelope");
}

/// Runs `sync` and returns its stderr, insisting it failed with exit 1.
fn failed_sync(command: &mut std::process::Command) -> String {
    let output = command.arg("sync").output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    String::from_utf8(output.stderr).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_api_key_from_the_environment_wins_says_so_and_the_401_hint_names_it() {
    let app = spawn_app(5).await;
    let credentials = app.dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    std::fs::write(credentials.join("api_key"), API_KEY).unwrap();
    let stderr = failed_sync(
        app.command()
            .env("UID2_API_KEY", "stale-key-from-an-old-shell")
            .env("CREDENTIALS_DIRECTORY", &credentials),
    );
    let config = app.config_path.display();
    let note = format!(
        "API key: using the environment variable UID2_API_KEY; ignoring operator.api_key in \
         {config}, the systemd credential api_key ({}/api_key)",
        credentials.display()
    );
    let note_line = stderr.lines().find(|line| line.contains(&note));
    assert!(
        note_line.is_some_and(|line| line.contains("INFO")),
        "{stderr}"
    );

    let last = stderr.lines().last().unwrap();
    assert!(
        last.starts_with("error: sync failed (unauthorized): "),
        "{stderr}"
    );
    assert!(
        last.contains("hint: check the API key (from the environment variable UID2_API_KEY)"),
        "{last}"
    );
    assert!(!last.contains("operator.api_key"), "{last}");
    assert!(!stderr.contains("stale-key-from-an-old-shell"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_single_credential_source_is_not_announced() {
    let app = spawn_app(5).await;
    let output = app.command().arg("sync").output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(!stderr.contains("ignoring"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_client_secret_is_a_400_whose_hint_names_the_secret_and_where_it_came_from() {
    let app = spawn_app(5).await;
    let other_secret = "b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldC0wMDAwMDA=";
    let config = app.config_text("").replace(CLIENT_SECRET, other_secret);
    std::fs::write(&app.config_path, config).unwrap();
    let stderr = failed_sync(&mut app.command());
    let last = stderr.lines().last().unwrap();
    assert!(
        last.starts_with(
            "error: sync failed (bad_request): operator refused the request (400 Bad Request): \
             Invalid body: Check encryption key (ClientSecret)"
        ),
        "{stderr}"
    );
    let file = app.config_path.display();
    assert!(
        last.contains(&format!(
            "(hint: the operator could not decrypt the request: the client_secret (from \
             operator.client_secret in {file}) is wrong or does not belong to the API key (from \
             operator.api_key in {file}))"
        )),
        "{last}"
    );
    assert!(!last.contains("clock"), "{last}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_refused_for_its_time_gets_a_hint_about_the_clock_not_the_secret() {
    let app = spawn_app(5).await;
    let two_minutes_ago = chrono::Utc::now().timestamp_millis() - 2 * 60 * 1000;
    let cycle = app.sync_cycle_with(app.client().with_clock(move || two_minutes_ago));
    let error = cycle
        .run(&tokio_util::sync::CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "bad_request");
    let message = error.message_with_hint(cycle.credential_origins());
    assert!(
        message.contains("this machine's clock is off by more than a minute"),
        "{message}"
    );
    assert!(!message.contains("client_secret"), "{message}");
}
