//! The fault matrix: every failure the simulated operator can produce, met
//! by the `sync` command (the real binary) and by the daemon's cycle
//! (in-process). For each: what the user sees, and that the high-water mark,
//! the rotation log and the queue are exactly as before. Each fault is then
//! injected once: transient ones are retried to success within the cycle,
//! the others fail without writing anything.
//!
//! One test per fault. The README's matrix is printed by the ignored
//! `print_fault_matrix` (`scripts/bench fault-matrix` writes it to
//! `target/fault-matrix.md`).

use crate::common;

use std::fmt::Write as _;
use std::time::Duration;

use chrono::Utc;
use common::Backend;
use common::app::{TestApp, spawn_app};
use tokio_util::sync::CancellationToken;
use uid2_bucket_sync::simulator::Fault;
use uid2_bucket_sync::sync::{SyncCycle, SyncError};
use uid2_bucket_sync::timestamp::truncate_to_millis;

/// Longer than the app's 3 s request limit.
const STALL: Duration = Duration::from_secs(4);

struct Case {
    name: &'static str,
    fault: Fault,
    kind: &'static str,
    transient: bool,
}

fn status(code: u16, retry_after: Option<Duration>) -> Fault {
    Fault::Status { code, retry_after }
}

/// One test per case, so one failure hides no other, and [`cases`] with
/// all of them, in the README's order, for the matrix.
macro_rules! fault_cases {
    ($($test:ident: $name:expr, $fault:expr, $kind:expr, transient = $transient:expr;)*) => {
        fn cases() -> Vec<Case> {
            vec![$(Case { name: $name, fault: $fault, kind: $kind, transient: $transient }),*]
        }

        $(
            async fn $test(backend: Backend) {
                let case = Case { name: $name, fault: $fault, kind: $kind, transient: $transient };
                examine(&case, backend).await;
            }
        )*

        crate::on_both_backends_async!($($test),*);
    };
}

fault_cases! {
    a_500_is_a_transient_server_error:
        "500 Internal Server Error", status(500, None), "server_error", transient = true;
    a_503_with_retry_after_is_a_transient_server_error:
        "503 with Retry-After: 1", status(503, Some(Duration::from_secs(1))), "server_error",
        transient = true;
    a_429_is_transient_rate_limiting:
        "429 Too Many Requests", status(429, None), "rate_limited", transient = true;
    a_404_is_an_unexpected_status_and_not_retried:
        "404 Not Found", status(404, None), "unexpected_status", transient = false;
    an_answer_slower_than_the_request_limit_is_a_transient_timeout:
        "answer slower than request_timeout", Fault::Delay(STALL), "timeout", transient = true;
    a_dropped_connection_is_a_transient_reset:
        "connection dropped", Fault::DropConnection, "connection_reset", transient = true;
    a_truncated_body_is_transient:
        "body truncated", Fault::TruncatedBody, "truncated_body", transient = true;
    a_corrupted_gcm_tag_is_an_envelope_error_and_not_retried:
        "GCM tag corrupted", Fault::CorruptTag, "envelope", transient = false;
    a_wrong_nonce_is_an_envelope_error_and_not_retried:
        "wrong nonce", Fault::WrongNonce, "envelope", transient = false;
    a_payload_that_is_not_json_is_an_invalid_response_and_not_retried:
        "payload not JSON", Fault::BadJson, "invalid_response", transient = false;
    a_client_error_status_is_an_invalid_response_and_not_retried:
        "status \"client_error\"", Fault::ClientErrorStatus, "invalid_response", transient = false;
    an_unparsable_last_updated_is_an_invalid_response_and_not_retried:
        "unparsable last_updated", Fault::UnparsableLastUpdated, "invalid_response",
        transient = false;
}

/// Everything a failed cycle must leave untouched.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    mark: Option<chrono::DateTime<Utc>>,
    last_success: Option<chrono::DateTime<Utc>>,
    rotations: i64,
    queue: (u64, u64, u64, u64),
}

fn snapshot(app: &TestApp) -> Snapshot {
    // The blocking PostgreSQL client may not run on the runtime's threads.
    let status = tokio::task::block_in_place(|| app.store().status(Utc::now()).unwrap());
    let rotations = app.number("SELECT count(*) FROM bucket_rotations");
    Snapshot {
        mark: status.sync.high_water_mark,
        last_success: status.sync.last_success_at,
        rotations,
        queue: (
            status.queue.pending,
            status.queue.leased,
            status.queue.done,
            status.queue.dead,
        ),
    }
}

fn cycle(app: &TestApp) -> SyncCycle {
    // A 1 s limit keeps the stalled-answer case short in-process.
    app.sync_cycle_with(app.client_with(&app.operator.base_url(), Duration::from_secs(1)))
}

struct Row {
    name: &'static str,
    sync_exit: String,
    kind: String,
    state: &'static str,
    once: String,
    message: String,
}

/// The case on `backend`; `None` where PostgreSQL is not installed.
async fn examine(case: &Case, backend: Backend) -> Option<Row> {
    let app = spawn_app(40).await.on(backend)?;
    cycle(&app).run(&CancellationToken::new()).await.unwrap();
    let rotated_at = truncate_to_millis(Utc::now());
    app.operator.rotate_random(3, rotated_at);
    let before = snapshot(&app);

    // Persistent: the `sync` command.
    app.operator.inject_always(case.fault.clone());
    let output = tokio::task::spawn_blocking({
        let mut command = app.command();
        move || command.arg("sync").output().unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    let message = stderr.lines().last().unwrap_or_default().to_owned();
    assert_eq!(output.status.code(), Some(1), "{}: {stderr}", case.name);
    assert!(
        message.starts_with(&format!("error: sync failed ({}): ", case.kind)),
        "{}: {message}",
        case.name
    );
    assert_eq!(
        snapshot(&app),
        before,
        "{}: sync changed the state",
        case.name
    );
    let recorded = tokio::task::block_in_place(|| app.store().sync_state().unwrap())
        .last_error
        .unwrap();
    assert_eq!(recorded.kind, case.kind, "{}", case.name);

    // Persistent: the daemon's cycle.
    let error = cycle(&app)
        .run(&CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(error.kind(), case.kind, "{}: {error}", case.name);
    assert_eq!(
        snapshot(&app),
        before,
        "{}: the cycle changed the state",
        case.name
    );

    // Once: retried within the cycle if transient.
    app.operator.clear_faults();
    app.operator.inject(case.fault.clone());
    let outcome = cycle(&app).run(&CancellationToken::new()).await;
    let once = match (&outcome, case.transient) {
        (Ok(report), true) => {
            assert_eq!(report.attempts, 2, "{}", case.name);
            assert_eq!(report.ingest.mark_after, Some(rotated_at), "{}", case.name);
            assert_eq!(report.ingest.new_rotations, 3, "{}", case.name);
            "retried, then mark advanced".to_owned()
        }
        (Err(SyncError::Operator(error)), false) => {
            assert_eq!(error.kind(), case.kind, "{}", case.name);
            assert_eq!(snapshot(&app), before, "{}", case.name);
            "not retried; nothing written".to_owned()
        }
        (outcome, transient) => panic!("{}: transient={transient}, got {outcome:?}", case.name),
    };

    Some(Row {
        name: case.name,
        sync_exit: output.status.code().unwrap().to_string(),
        kind: case.kind.to_owned(),
        state: "unchanged",
        once,
        message: message.trim_start_matches("error: ").to_owned(),
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_api_key_is_unauthorized_and_not_retried() {
    wrong_key_row().await;
}

/// The README's fault matrix, printed to stdout: every case above examined
/// again, in order. `scripts/bench fault-matrix` runs it.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "prints the README's fault matrix; run by scripts/bench"]
async fn print_fault_matrix() {
    let mut rows = Vec::new();
    for case in cases() {
        rows.extend(examine(&case, Backend::Sqlite).await);
    }
    // The credential faults the operator itself produces.
    rows.push(wrong_key_row().await);

    let mut table = String::from(
        "| fault | `sync` exit | error kind | mark, log, queue | injected once | what the user sees |\n|---|---|---|---|---|---|\n",
    );
    for row in &rows {
        writeln!(
            table,
            "| {} | {} | `{}` | {} | {} | `{}` |",
            row.name,
            row.sync_exit,
            row.kind,
            row.state,
            row.once,
            row.message.replace('|', "\\|")
        )
        .unwrap();
    }
    // On lines of its own, whatever the test harness printed before.
    println!("\n{table}");
}

/// A key the operator does not know: 401, never retried.
async fn wrong_key_row() -> Row {
    let app = spawn_app(10).await;
    cycle(&app).run(&CancellationToken::new()).await.unwrap();
    let before = snapshot(&app);
    let text = app
        .config_text("")
        .replace(common::app::API_KEY, "a-key-the-operator-never-issued");
    std::fs::write(&app.config_path, text).unwrap();
    let output = app.command().arg("sync").output().unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    let message = stderr.lines().last().unwrap_or_default().to_owned();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        message.starts_with("error: sync failed (unauthorized): "),
        "{message}"
    );
    assert!(
        message.contains("hint: check the API key (from operator.api_key in "),
        "{message}"
    );
    assert_eq!(snapshot(&app), before);
    let attempts = app.operator.requests().len();
    assert_eq!(attempts, 2, "one initial sync, one refused attempt");
    Row {
        name: "API key refused (401)",
        sync_exit: "1".into(),
        kind: "unauthorized".into(),
        state: "unchanged",
        once: "not retried; nothing written".into(),
        message: message.trim_start_matches("error: ").to_owned(),
    }
}
