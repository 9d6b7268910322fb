//! The database file and the ingest of operator responses, on real files.

use crate::common;

use common::{TempDb, ack_all, at, claim, lease_for, rotation};
use rusqlite::Connection;
use uid2_bucket_sync::queue::{ListFilter, QueueOptions, QueueState, RemapQueue};
use uid2_bucket_sync::store::{
    APPLICATION_ID, CREATED_BY_DAEMON, CycleCounts, Failure, OpenMode, SCHEMA_VERSION, Store,
    StoreError, StoreOptions,
};
use uid2_bucket_sync::timestamp::{format_utc, from_millis};

fn raw(path: &std::path::Path) -> Connection {
    Connection::open(path).unwrap()
}

fn count(path: &std::path::Path, table: &str) -> i64 {
    raw(path)
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
            row.get(0)
        })
        .unwrap()
}

// ---- opening ---------------------------------------------------------------

#[test]
fn creates_a_wal_database_at_the_current_schema_version() {
    let db = TempDb::new();
    drop(db.open());
    let conn = raw(&db.path);
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    let version: u32 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(version, SCHEMA_VERSION);
}

#[test]
fn a_new_database_is_marked_as_ours_and_records_its_creator() {
    let db = TempDb::new();
    drop(db.open());
    let application_id: i64 = raw(&db.path)
        .query_row("PRAGMA application_id", [], |row| row.get(0))
        .unwrap();
    assert_eq!(application_id, APPLICATION_ID);
    assert_eq!(
        Store::created_by(&db.path).unwrap().as_deref(),
        Some(CREATED_BY_DAEMON)
    );

    let demo = TempDb::new();
    let options = StoreOptions {
        created_by: "demo",
        ..StoreOptions::default()
    };
    drop(Store::open(&demo.path, OpenMode::CreateIfMissing, &options).unwrap());
    assert_eq!(
        Store::created_by(&demo.path).unwrap().as_deref(),
        Some("demo")
    );
}

#[test]
fn a_new_database_file_is_group_writable_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let db = TempDb::new();
    // Tests run with the usual 0022 umask, which alone would give 0644.
    drop(db.open());
    let mode = std::fs::metadata(&db.path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
}

#[test]
fn another_applications_database_is_refused_and_left_unchanged() {
    let db = TempDb::new();
    {
        let conn = raw(&db.path);
        conn.execute_batch(
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT);
             INSERT INTO customers (email) VALUES ('a@example.com');",
        )
        .unwrap();
    }
    let before = std::fs::read(&db.path).unwrap();
    for mode in [OpenMode::MustExist, OpenMode::CreateIfMissing] {
        let error = Store::open(&db.path, mode, &StoreOptions::default()).unwrap_err();
        assert!(
            matches!(error, StoreError::NotOurs { tables: 1, .. }),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!(
                "{} is another application's SQLite database (application_id 0x0, 1 table(s)); \
                 refusing to add uid2-bucket-sync's tables to it: point the database path at a \
                 new file",
                db.path.display()
            )
        );
    }
    assert_eq!(std::fs::read(&db.path).unwrap(), before);
    assert_eq!(count(&db.path, "customers"), 1);
}

#[test]
fn a_database_written_by_schema_version_1_is_carried_over() {
    let db = TempDb::new();
    {
        let conn = raw(&db.path);
        conn.execute_batch(include_str!("../../migrations/0001_initial.sql"))
            .unwrap();
        conn.execute_batch(
            "PRAGMA user_version = 1;
             INSERT INTO rotation_log VALUES ('a', 1000, 2000);",
        )
        .unwrap();
    }
    let store = Store::open(&db.path, OpenMode::MustExist, &StoreOptions::default()).unwrap();
    assert_eq!(
        store.bucket_last_updated("a").unwrap(),
        Some(from_millis(1000))
    );
    drop(store);
    let (version, application_id): (u32, i64) = raw(&db.path)
        .query_row(
            "SELECT (SELECT user_version FROM pragma_user_version),
                    (SELECT application_id FROM pragma_application_id)",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!((version, application_id), (SCHEMA_VERSION, APPLICATION_ID));
    // Who created it was not recorded then, and is not made up now.
    assert_eq!(Store::created_by(&db.path).unwrap(), None);
}

#[test]
fn a_directory_given_as_the_database_is_named_as_a_directory() {
    let db = TempDb::new();
    let dir = db.dir.path();
    for mode in [OpenMode::MustExist, OpenMode::CreateIfMissing] {
        let error = Store::open(dir, mode, &StoreOptions::default()).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "{} is a directory; the database path must name a file, e.g. {}",
                dir.display(),
                dir.join("buckets.db").display()
            )
        );
    }
}

#[test]
fn reopening_keeps_the_data_and_the_schema() {
    let db = TempDb::new();
    db.open()
        .ingest(vec![rotation("a", at(1, 0, 0))], at(1, 1, 0))
        .unwrap();
    let store = Store::open(&db.path, OpenMode::MustExist, &StoreOptions::default()).unwrap();
    assert_eq!(store.high_water_mark().unwrap(), Some(at(1, 0, 0)));
    assert_eq!(store.bucket_last_updated("a").unwrap(), Some(at(1, 0, 0)));
}

#[test]
fn consumers_refuse_a_missing_file_and_create_nothing() {
    let db = TempDb::new();
    let error = Store::open(&db.path, OpenMode::MustExist, &StoreOptions::default()).unwrap_err();
    assert!(matches!(error, StoreError::Missing { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        format!(
            "no database at {}; run `uid2-bucket-sync sync` first",
            db.path.display()
        )
    );
    assert!(!db.path.exists());
}

#[test]
fn creating_in_a_missing_directory_names_the_directory() {
    let db = TempDb::new();
    let path = db.dir.path().join("no/such/dir/buckets.db");
    let error =
        Store::open(&path, OpenMode::CreateIfMissing, &StoreOptions::default()).unwrap_err();
    assert!(matches!(error, StoreError::NoDirectory { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains(&db.dir.path().join("no/such/dir").display().to_string())
            && message.contains("does not exist"),
        "{message}"
    );
}

#[test]
fn a_file_that_is_not_sqlite_is_refused_and_left_alone() {
    let db = TempDb::new();
    let text = "these are not the bytes you are looking for\n".repeat(200);
    std::fs::write(&db.path, &text).unwrap();
    for mode in [OpenMode::MustExist, OpenMode::CreateIfMissing] {
        let error = Store::open(&db.path, mode, &StoreOptions::default()).unwrap_err();
        assert!(
            matches!(error, StoreError::NotADatabase { .. }),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!("{} is not a SQLite database", db.path.display())
        );
    }
    assert_eq!(std::fs::read_to_string(&db.path).unwrap(), text);
}

#[test]
fn a_newer_schema_is_refused_naming_both_versions() {
    let db = TempDb::new();
    drop(db.open());
    let newer = SCHEMA_VERSION + 1;
    raw(&db.path)
        .pragma_update(None, "user_version", newer)
        .unwrap();
    for mode in [OpenMode::MustExist, OpenMode::CreateIfMissing] {
        let error = Store::open(&db.path, mode, &StoreOptions::default()).unwrap_err();
        match &error {
            StoreError::SchemaTooNew {
                found, supported, ..
            } => {
                assert_eq!((*found, *supported), (newer, SCHEMA_VERSION));
            }
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
        let message = error.to_string();
        assert!(
            message.contains(&format!("schema version {newer}"))
                && message.contains(&format!("version {SCHEMA_VERSION} this")),
            "{message}"
        );
    }
    let version: u32 = raw(&db.path)
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, newer, "a refused file is not migrated");
}

// ---- ingest ------------------------------------------------------------------

fn new_rotations_are_logged_and_queued(db: TempDb) {
    let store = db.open();
    let summary = store
        .ingest(
            vec![
                rotation("b", at(1, 0, 0)),
                rotation("a", at(2, 0, 0)),
                rotation("c", at(1, 12, 0)),
            ],
            at(3, 0, 0),
        )
        .unwrap();
    assert_eq!(summary.received, 3);
    assert_eq!(summary.new_rotations, 3);
    assert_eq!(summary.newly_queued, 3);
    assert_eq!(summary.ignored_rereads, 0);
    assert_eq!(summary.mark_before, None);
    assert_eq!(summary.mark_after, Some(at(2, 0, 0)));

    let pending = store
        .queue(QueueOptions::default())
        .list(&ListFilter::default())
        .unwrap();
    let queued: Vec<_> = pending
        .iter()
        .map(|e| (e.subject.bucket_id().unwrap(), e.state, e.version, e.due_at))
        .collect();
    assert_eq!(
        queued,
        vec![
            ("a", QueueState::Pending, at(2, 0, 0), at(3, 0, 0)),
            ("b", QueueState::Pending, at(1, 0, 0), at(3, 0, 0)),
            ("c", QueueState::Pending, at(1, 12, 0), at(3, 0, 0)),
        ]
    );
    assert_eq!(db.count("rotation_log"), 3);
}

fn rereading_the_inclusive_boundary_changes_nothing(db: TempDb) {
    let store = db.open();
    let response = vec![rotation("a", at(1, 0, 0)), rotation("b", at(2, 0, 0))];
    store.ingest(response.clone(), at(3, 0, 0)).unwrap();
    let queue = store.queue(QueueOptions::default());
    let before = queue.list(&ListFilter::default()).unwrap();

    let summary = store.ingest(response, at(4, 0, 0)).unwrap();
    assert_eq!(summary.ignored_rereads, 2);
    assert_eq!(summary.new_rotations, 0);
    assert_eq!(summary.newly_queued, 0);
    assert_eq!(queue.list(&ListFilter::default()).unwrap(), before);
    assert_eq!(db.count("rotation_log"), 2);
}

fn rereading_after_the_ack_does_not_queue_again(db: TempDb) {
    let store = db.open();
    let response = vec![rotation("a", at(1, 0, 0)), rotation("b", at(2, 0, 0))];
    store.ingest(response.clone(), at(3, 0, 0)).unwrap();
    let leases = claim(&store, 10, lease_for(10), at(3, 1, 0));
    ack_all(&store, &leases, at(3, 1, 5));
    let queue = store.queue(QueueOptions::default());

    let summary = store.ingest(response, at(4, 0, 0)).unwrap();
    assert_eq!(summary.ignored_rereads, 2);
    let stats = queue.stats(at(4, 0, 0)).unwrap();
    assert_eq!((stats.pending, stats.done), (0, 2));
    assert!(claim(&store, 10, lease_for(10), at(4, 1, 0)).is_empty());
}

fn rereading_after_the_done_entries_are_purged_does_not_queue_again(db: TempDb) {
    let store = db.open();
    let response = vec![rotation("a", at(1, 0, 0))];
    store.ingest(response.clone(), at(3, 0, 0)).unwrap();
    let leases = claim(&store, 10, lease_for(10), at(3, 1, 0));
    ack_all(&store, &leases, at(3, 1, 5));
    let queue = store.queue(QueueOptions::default());
    assert_eq!(queue.purge_done(at(20, 0, 0)).unwrap(), 1);

    let summary = store.ingest(response, at(21, 0, 0)).unwrap();
    assert_eq!(summary.ignored_rereads, 1);
    assert_eq!(queue.stats(at(21, 0, 0)).unwrap().pending, 0);
}

fn duplicates_within_one_response_keep_the_latest(db: TempDb) {
    let store = db.open();
    let summary = store
        .ingest(
            vec![
                rotation("a", at(1, 0, 0)),
                rotation("a", at(3, 0, 0)),
                rotation("b", at(1, 0, 0)),
                rotation("a", at(2, 0, 0)),
            ],
            at(4, 0, 0),
        )
        .unwrap();
    assert_eq!(summary.received, 4);
    assert_eq!(summary.duplicates_in_response, 2);
    assert_eq!(summary.new_rotations, 2);
    assert_eq!(summary.newly_queued, 2);
    assert_eq!(store.bucket_last_updated("a").unwrap(), Some(at(3, 0, 0)));
    let entries = store
        .queue(QueueOptions::default())
        .list(&ListFilter::default())
        .unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].version, at(3, 0, 0));
    assert_eq!(db.count("rotation_log"), 2);
}

fn a_rotation_older_than_the_known_one_is_ignored(db: TempDb) {
    let store = db.open();
    store
        .ingest(vec![rotation("a", at(2, 0, 0))], at(3, 0, 0))
        .unwrap();
    let summary = store
        .ingest(vec![rotation("a", at(1, 0, 0))], at(4, 0, 0))
        .unwrap();
    assert_eq!(summary.ignored_stale, 1);
    assert_eq!(summary.new_rotations, 0);
    assert_eq!(store.bucket_last_updated("a").unwrap(), Some(at(2, 0, 0)));
    assert_eq!(db.count("rotation_log"), 1);
}

fn later_rotations_of_known_buckets_are_logged_next_to_the_earlier_ones(db: TempDb) {
    let store = db.open();
    store
        .ingest(vec![rotation("a", at(1, 0, 0))], at(1, 1, 0))
        .unwrap();
    let summary = store
        .ingest(
            vec![rotation("a", at(2, 0, 0)), rotation("new", at(2, 0, 0))],
            at(2, 1, 0),
        )
        .unwrap();
    assert_eq!(summary.new_rotations, 2);
    assert_eq!(summary.coalesced, 1);
    assert_eq!(summary.newly_queued, 1);
    let log: Vec<_> = db
        .rows("SELECT bucket_id, last_updated_ms FROM rotation_log ORDER BY 1, 2")
        .into_iter()
        .map(|row| {
            let ms: i64 = row[1].as_deref().unwrap().parse().unwrap();
            (row[0].clone().unwrap(), from_millis(ms))
        })
        .collect();
    assert_eq!(
        log,
        vec![
            ("a".to_owned(), at(1, 0, 0)),
            ("a".to_owned(), at(2, 0, 0)),
            ("new".to_owned(), at(2, 0, 0)),
        ]
    );
}

fn the_high_water_mark_is_the_latest_rotation_received_not_the_clock(db: TempDb) {
    let store = db.open();
    let summary = store
        .ingest(
            vec![rotation("a", at(1, 0, 0)), rotation("b", at(2, 3, 4))],
            at(9, 0, 0),
        )
        .unwrap();
    assert_eq!(summary.mark_after, Some(at(2, 3, 4)));
    assert_eq!(store.high_water_mark().unwrap(), Some(at(2, 3, 4)));
}

fn the_high_water_mark_never_moves_backwards(db: TempDb) {
    let store = db.open();
    store
        .ingest(vec![rotation("a", at(5, 0, 0))], at(6, 0, 0))
        .unwrap();
    // An empty answer, a re-read, an older rotation of a new bucket and a
    // stale row of a known one all leave the mark where it is.
    for response in [
        vec![],
        vec![rotation("a", at(5, 0, 0))],
        vec![rotation("late", at(1, 0, 0))],
        vec![rotation("a", at(4, 0, 0))],
    ] {
        let summary = store.ingest(response, at(7, 0, 0)).unwrap();
        assert_eq!(summary.mark_before, Some(at(5, 0, 0)));
        assert_eq!(summary.mark_after, Some(at(5, 0, 0)));
        assert_eq!(store.high_water_mark().unwrap(), Some(at(5, 0, 0)));
    }
    // The late bucket is still recorded and queued.
    assert_eq!(
        store.bucket_last_updated("late").unwrap(),
        Some(at(1, 0, 0))
    );
}

fn an_empty_first_answer_records_success_without_a_mark(db: TempDb) {
    let store = db.open();
    let summary = store.ingest(vec![], at(1, 0, 0)).unwrap();
    assert_eq!((summary.mark_before, summary.mark_after), (None, None));
    let state = store.sync_state().unwrap();
    assert_eq!(state.high_water_mark, None);
    assert_eq!(state.last_success_at, Some(at(1, 0, 0)));
}

fn attempts_and_failures_are_recorded_in_the_sync_state_only(db: TempDb) {
    let store = db.open();
    store
        .ingest(vec![rotation("a", at(1, 0, 0))], at(1, 1, 0))
        .unwrap();
    let queue_before = store
        .queue(QueueOptions::default())
        .list(&ListFilter::default())
        .unwrap();

    store.record_attempt(at(2, 0, 0)).unwrap();
    store
        .record_failure("timeout", "no answer within 5m", at(2, 0, 5))
        .unwrap();

    let state = store.sync_state().unwrap();
    assert_eq!(state.last_attempt_at, Some(at(2, 0, 0)));
    assert_eq!(
        state.last_error,
        Some(Failure {
            at: at(2, 0, 5),
            kind: "timeout".into(),
            message: "no answer within 5m".into(),
        })
    );
    assert_eq!(state.last_success_at, Some(at(1, 1, 0)));
    assert_eq!(state.high_water_mark, Some(at(1, 0, 0)));
    assert_eq!(
        state.last_cycle,
        Some(CycleCounts {
            received: 1,
            new_rotations: 1,
            newly_queued: 1
        })
    );
    assert_eq!(
        store
            .queue(QueueOptions::default())
            .list(&ListFilter::default())
            .unwrap(),
        queue_before
    );
    assert_eq!(db.count("rotation_log"), 1);
}

// ---- the SQL contract ----------------------------------------------------------

fn the_documented_views_have_their_documented_columns(db: TempDb) {
    drop(db.open());
    assert_eq!(
        db.columns("remap_queue"),
        [
            "kind",
            "subject",
            "bucket_id",
            "state",
            "last_updated",
            "newer_last_updated",
            "generation",
            "attempts",
            "due_at",
            "leased_by",
            "lease_expires_at",
            "done_at",
            "last_error",
            "updated_at"
        ]
    );
    assert_eq!(
        db.columns("bucket_rotations"),
        ["bucket_id", "last_updated", "observed_at"]
    );
    assert_eq!(db.columns("buckets"), ["bucket_id", "last_updated"]);
    assert_eq!(
        db.columns("sync_status"),
        [
            "high_water_mark",
            "last_attempt_at",
            "last_success_at",
            "last_error_at",
            "last_error_kind",
            "last_error_message",
            "last_received",
            "last_new_rotations",
            "last_newly_queued"
        ]
    );
}

fn the_views_show_times_as_iso_8601_utc_to_the_millisecond(db: TempDb) {
    let store = db.open();
    let odd = [
        uid2_bucket_sync::timestamp::parse_iso_local("2022-06-05T22:52:03.109").unwrap(),
        uid2_bucket_sync::timestamp::parse_iso_local("2022-06-05T22:52:03.999").unwrap(),
        uid2_bucket_sync::timestamp::parse_iso_local("2022-06-05T22:52:03.001").unwrap(),
        uid2_bucket_sync::timestamp::parse_iso_local("2025-06-01T00:00:00.000").unwrap(),
    ];
    let response = odd
        .iter()
        .enumerate()
        .map(|(i, t)| rotation(&format!("b{i}"), *t))
        .collect();
    store.ingest(response, at(7, 8, 9)).unwrap();
    let rows =
        db.rows("SELECT bucket_id, last_updated, observed_at FROM bucket_rotations ORDER BY 1");
    assert_eq!(rows.len(), odd.len());
    for (i, row) in rows.iter().enumerate() {
        let text = |column: usize| row[column].as_deref().unwrap();
        assert_eq!(text(0), format!("b{i}"));
        assert_eq!(text(1), format_utc(odd[i]));
        assert_eq!(text(2), "2025-06-07T08:09:00.000Z");
    }
    let row = &db.rows(
        "SELECT (SELECT high_water_mark FROM sync_status),
                (SELECT last_updated FROM remap_queue WHERE bucket_id = 'b1')",
    )[0];
    assert_eq!(row[0].as_deref(), Some("2025-06-01T00:00:00.000Z"));
    assert_eq!(row[1].as_deref(), Some("2022-06-05T22:52:03.999Z"));
}

fn the_rotation_log_is_append_only(db: TempDb) {
    db.open()
        .ingest(vec![rotation("a", at(1, 0, 0))], at(1, 1, 0))
        .unwrap();
    for sql in [
        "DELETE FROM rotation_log",
        "UPDATE rotation_log SET last_updated_ms = 0",
    ] {
        let error = db.execute_error(sql);
        assert!(error.contains("append-only"), "{error}");
    }
}

#[test]
fn processes_opening_a_new_file_at_once_all_succeed() {
    for _ in 0..5 {
        let db = TempDb::new();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(6));
        let openers: Vec<_> = (0..6)
            .map(|_| {
                let (path, barrier) = (db.path.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    Store::open(&path, OpenMode::CreateIfMissing, &StoreOptions::default())
                        .map(|store| store.sync_state().unwrap())
                        .map_err(|e| e.to_string())
                })
            })
            .collect();
        for opener in openers {
            assert_eq!(opener.join().unwrap(), Ok(Default::default()));
        }
        let version: u32 = raw(&db.path)
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }
}

crate::on_both_backends!(
    new_rotations_are_logged_and_queued,
    rereading_the_inclusive_boundary_changes_nothing,
    rereading_after_the_ack_does_not_queue_again,
    rereading_after_the_done_entries_are_purged_does_not_queue_again,
    duplicates_within_one_response_keep_the_latest,
    a_rotation_older_than_the_known_one_is_ignored,
    later_rotations_of_known_buckets_are_logged_next_to_the_earlier_ones,
    the_high_water_mark_is_the_latest_rotation_received_not_the_clock,
    the_high_water_mark_never_moves_backwards,
    an_empty_first_answer_records_success_without_a_mark,
    attempts_and_failures_are_recorded_in_the_sync_state_only,
    the_documented_views_have_their_documented_columns,
    the_views_show_times_as_iso_8601_utc_to_the_millisecond,
    the_rotation_log_is_append_only,
);
