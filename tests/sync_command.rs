//! `sync` as a user runs it: the real binary against the simulated operator.

mod common;

use common::app::spawn_app;

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
