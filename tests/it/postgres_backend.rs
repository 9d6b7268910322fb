//! What only the PostgreSQL backend has: a server to reach, a password to
//! find and keep secret, a schema shared by many processes, the poller lock.
//! The behaviour both backends share is tested once for both (queue.rs,
//! store.rs, `on_both_backends!`).

use crate::common;

use common::{TempDb, at, rotation};
use uid2_bucket_sync::config::{LoadOptions, Settings};
use uid2_bucket_sync::store::{
    CREATED_BY_DAEMON, DatabaseLocation, OpenMode, PollerLock, PostgresTarget, Store, StoreOptions,
};

fn target(db: &TempDb) -> PostgresTarget {
    PostgresTarget::parse(db.url.as_deref().unwrap()).unwrap()
}

fn connect(db: &TempDb, mode: OpenMode) -> Result<Store, String> {
    Store::connect(&target(db), mode, &StoreOptions::default()).map_err(|e| e.to_string())
}

#[test]
fn a_new_database_gets_the_schema_and_records_its_creator() {
    let Some(db) = TempDb::postgres() else { return };
    drop(connect(&db, OpenMode::CreateIfMissing).unwrap());
    assert_eq!(
        db.rows("SELECT value FROM database_meta WHERE key = 'created_by'"),
        [[Some(CREATED_BY_DAEMON.to_owned())]]
    );
    // Consumers open it as it is.
    let store = connect(&db, OpenMode::MustExist).unwrap();
    assert_eq!(store.sync_state().unwrap(), Default::default());
}

#[test]
fn consumers_refuse_an_empty_database_and_create_nothing() {
    let Some(db) = TempDb::postgres() else { return };
    let error = connect(&db, OpenMode::MustExist).unwrap_err();
    assert!(
        error.contains("has no uid2-bucket-sync schema; run `uid2-bucket-sync sync`"),
        "{error}"
    );
    assert_eq!(db.count("pg_tables WHERE schemaname = 'public'"), 0);
}

#[test]
fn another_applications_database_is_refused_and_left_unchanged() {
    let Some(db) = TempDb::postgres() else { return };
    db.rows("CREATE TABLE customers (id int); INSERT INTO customers VALUES (1)");
    let error = connect(&db, OpenMode::CreateIfMissing).unwrap_err();
    assert!(
        error.contains("it holds 1 table(s) of another application"),
        "{error}"
    );
    assert_eq!(
        db.rows("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"),
        [[Some("customers".to_owned())]]
    );
}

#[test]
fn a_newer_schema_is_refused_naming_both_versions() {
    let Some(db) = TempDb::postgres() else { return };
    drop(connect(&db, OpenMode::CreateIfMissing).unwrap());
    db.rows(
        "INSERT INTO uid2_schema_history (version, name, applied_on, checksum)
         VALUES (99, 'from_the_future', '2030-01-01', '0')",
    );
    let error = connect(&db, OpenMode::MustExist).unwrap_err();
    assert!(
        error.contains("it has schema version 99, newer than the version 2"),
        "{error}"
    );
}

#[test]
fn processes_creating_the_schema_at_once_all_succeed() {
    let Some(db) = TempDb::postgres() else { return };
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(6));
    let openers: Vec<_> = (0..6)
        .map(|_| {
            let (target, barrier) = (target(&db), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                Store::connect(&target, OpenMode::CreateIfMissing, &StoreOptions::default())
                    .map(|store| store.sync_state().unwrap())
                    .map_err(|e| e.to_string())
            })
        })
        .collect();
    for opener in openers {
        assert_eq!(opener.join().unwrap(), Ok(Default::default()));
    }
    assert_eq!(db.count("uid2_schema_history"), 2);
}

mod embedded {
    refinery::embed_migrations!("migrations/postgres");
}

/// A database of the previous release (schema 1: no identities yet) is
/// refused by consumers until the daemon migrates it, and the migration
/// keeps what it held and adds the identities.
#[test]
fn a_schema_1_database_is_migrated_by_the_daemon_with_its_data() {
    let Some(db) = TempDb::postgres() else { return };
    let mut client =
        postgres::Client::connect(db.url.as_deref().unwrap(), postgres::NoTls).unwrap();
    let mut runner = embedded::migrations::runner().set_target(refinery::Target::Version(1));
    runner.set_migration_table_name("uid2_schema_history");
    runner.run(&mut client).unwrap();
    client
        .batch_execute(
            "INSERT INTO database_meta (key, value) VALUES ('created_by', 'uid2-bucket-sync');
             INSERT INTO rotation_log VALUES ('b1', 1000, 2000);
             INSERT INTO bucket VALUES ('b1', 1000);
             UPDATE sync_state SET high_water_mark_ms = 1000",
        )
        .unwrap();
    drop(client);

    let refused = connect(&db, OpenMode::MustExist).unwrap_err();
    assert!(
        refused.contains("it has schema version 1, older than the version 2"),
        "{refused}"
    );
    let store = connect(&db, OpenMode::CreateIfMissing).unwrap();
    assert_eq!(
        store.sync_state().unwrap().high_water_mark,
        Some(chrono::DateTime::from_timestamp_millis(1000).unwrap())
    );
    assert_eq!(
        store
            .bucket_last_updated("b1")
            .unwrap()
            .unwrap()
            .timestamp_millis(),
        1000
    );
    assert_eq!(db.count("identities"), 0);
    assert_eq!(db.count("mapping_status"), 1);
    assert!(connect(&db, OpenMode::MustExist).is_ok());
}

#[test]
fn a_wrong_password_is_refused_without_showing_it() {
    let Some(db) = TempDb::postgres() else { return };
    let url = db.url.as_deref().unwrap();
    let wrong = PostgresTarget::parse(url)
        .unwrap()
        .with_password("not-the-password-4711".to_owned().into());
    let error = Store::connect(&wrong, OpenMode::CreateIfMissing, &StoreOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("cannot connect to the PostgreSQL database"),
        "{error}"
    );
    assert!(!error.contains("not-the-password-4711"), "{error}");
    assert!(!error.contains("throwaway-test-password"), "{error}");
}

#[test]
fn the_password_comes_from_password_file_or_pgpassword_and_never_shows() {
    let Some(db) = TempDb::postgres() else { return };
    let url = db.url.as_deref().unwrap();
    let (without_password, password) = split_password(url);
    let file = db.dir.path().join("db_password");
    std::fs::write(&file, format!("{password}\n")).unwrap();
    let config = db.dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = {without_password:?}\npassword_file = {:?}\n",
            file
        ),
    )
    .unwrap();
    let load = |env: &dyn Fn(&str) -> Option<String>| {
        Settings::load_with_env(
            &LoadOptions {
                config: Some(config.clone()),
                db: None,
            },
            env,
        )
        .unwrap()
    };
    let from_file = load(&|_| None);
    let from_env = load(&|name| (name == "PGPASSWORD").then(|| password.clone()));
    for settings in [from_file, from_env] {
        let shown = format!("{:?} {}", settings.database, settings.database.location);
        assert!(!shown.contains(&password), "{shown}");
        let store = Store::open_location(
            &settings.database.location,
            OpenMode::CreateIfMissing,
            &StoreOptions::default(),
        )
        .unwrap();
        store.record_attempt(at(1, 0, 0)).unwrap();
    }
    let DatabaseLocation::Postgres(_) = load(&|_| None).database.location else {
        panic!("database.url must give a PostgreSQL location");
    };
}

/// The URL without its password, and the password.
fn split_password(url: &str) -> (String, String) {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (credentials, host) = rest.split_once('@').unwrap();
    let (user, password) = credentials.split_once(':').unwrap();
    (format!("{scheme}://{user}@{host}"), password.to_owned())
}

#[test]
fn one_session_holds_the_poller_lock_until_it_ends() {
    let Some(db) = TempDb::postgres() else { return };
    drop(connect(&db, OpenMode::CreateIfMissing).unwrap());
    let store = connect(&db, OpenMode::MustExist).unwrap();
    assert_eq!(store.poller_running().unwrap(), Some(false));

    let held = PollerLock::try_acquire(&target(&db)).unwrap().unwrap();
    assert!(PollerLock::try_acquire(&target(&db)).unwrap().is_none());
    assert_eq!(store.poller_running().unwrap(), Some(true));

    drop(held);
    let standby = PollerLock::try_acquire(&target(&db)).unwrap();
    assert!(standby.is_some());
}

#[test]
fn an_ingest_and_the_queue_see_the_same_database_from_two_connections() {
    let Some(db) = TempDb::postgres() else { return };
    let daemon = db.open();
    let consumer = connect(&db, OpenMode::MustExist).unwrap();
    daemon
        .ingest(vec![rotation("a", at(1, 0, 0))], at(1, 1, 0))
        .unwrap();
    let leases = common::claim(&consumer, 10, common::lease_for(5), at(1, 2, 0));
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].subject.bucket_id(), Some("a"));
}

/// The grants the README gives batch jobs' role, verbatim.
const JOBS_GRANTS: &str = "
GRANT CONNECT ON DATABASE {database} TO uid2jobs;
GRANT USAGE ON SCHEMA public TO uid2jobs;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO uid2jobs;
GRANT UPDATE, DELETE ON queue_item TO uid2jobs;
";

#[test]
fn a_jobs_role_with_the_readme_grants_consumes_but_cannot_change_the_schema() {
    let Some(db) = TempDb::postgres() else { return };
    let daemon = db.open();
    daemon
        .ingest(
            vec![rotation("a", at(1, 0, 0)), rotation("b", at(1, 0, 0))],
            at(1, 1, 0),
        )
        .unwrap();
    let name = target(&db).database().to_owned();
    db.rows(
        "DO $$ BEGIN
             IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'uid2jobs') THEN
                 CREATE ROLE uid2jobs LOGIN PASSWORD 'jobs-password';
             END IF;
         END $$",
    );
    db.rows(&JOBS_GRANTS.replace("{database}", &name));
    let url = db.url.as_deref().unwrap().replace(
        "postgres:throwaway-test-password@",
        "uid2jobs:jobs-password@",
    );
    let jobs = Store::connect(
        &PostgresTarget::parse(&url).unwrap(),
        OpenMode::MustExist,
        &StoreOptions::default(),
    )
    .unwrap();
    let leases = common::claim(&jobs, 1, common::lease_for(5), at(1, 2, 0));
    common::ack_all(&jobs, &leases, at(1, 2, 1));
    let status = jobs.status(at(1, 4, 0)).unwrap();
    assert_eq!((status.queue.pending, status.queue.done), (1, 1));
    use uid2_bucket_sync::queue::RemapQueue;
    let queue = jobs.queue(Default::default());
    assert_eq!(queue.purge_done(at(2, 0, 0)).unwrap(), 1);
    assert_eq!(jobs.bucket_last_updated("b").unwrap(), Some(at(1, 0, 0)));

    // The role reads the views, and cannot write the log or the state.
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let pending: i64 = client
        .query_one(
            "SELECT count(*) FROM remap_queue WHERE state = 'pending'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(pending, 1);
    let refused = client
        .batch_execute("INSERT INTO rotation_log VALUES ('x', 1, 1)")
        .unwrap_err();
    let message = refused.as_db_error().unwrap().message();
    assert!(message.contains("permission denied"), "{message}");
    // It follows the change feed and sees the worker's state, and cannot
    // change an identity.
    assert!(jobs.mapping_state().unwrap().last_started_at.is_none());
    for view in ["identity_changes", "identities", "mapping_status"] {
        client.query(&format!("SELECT * FROM {view}"), &[]).unwrap();
    }
    let refused = client
        .batch_execute("UPDATE identity SET status = 'unmapped'")
        .unwrap_err();
    let message = refused.as_db_error().unwrap().message();
    assert!(message.contains("permission denied"), "{message}");
}

/// `migrate-to` as the real binary: the views read the same on both sides,
/// a lease taken on SQLite is acked on PostgreSQL, and a second copy into
/// the now non-empty database is refused.
#[test]
fn migrate_to_copies_every_view_and_live_lease_and_refuses_a_non_empty_target() {
    use uid2_bucket_sync::queue::{QueueOptions, RemapQueue};
    let Some(target_db) = TempDb::postgres() else {
        return;
    };
    let source = TempDb::new();
    let store = source.open();
    store
        .ingest(
            (0..20)
                .map(|i| rotation(&format!("b{i:02}"), at(1, 0, 0)))
                .collect(),
            at(1, 1, 0),
        )
        .unwrap();
    store
        .ingest(vec![rotation("b03", at(2, 0, 0))], at(2, 1, 0))
        .unwrap();
    let leases = common::claim(&store, 6, common::lease_for(600), at(2, 2, 0));
    let queue = store.queue(QueueOptions::default());
    queue
        .ack(&[leases[0].lease_id.as_str()], at(2, 3, 0))
        .unwrap();
    queue
        .fail(&[leases[1].lease_id.as_str()], "no luck", None, at(2, 3, 0))
        .unwrap();
    store
        .record_failure("timeout", "no answer", at(2, 4, 0))
        .unwrap();
    drop(store);
    // Identities, a change feed whose first two records were pruned, and
    // the worker's state.
    source.execute(
        "INSERT INTO identity (id, identity_type, hash, status, uid2, previous_uid2, bucket_id,
             refresh_from_ms, mapped_at_ms, updated_at_ms)
         VALUES ('a', 'email', zeroblob(32), 'mapped', 'U-a', 'P-a', NULL, 5000, 4000, 4000),
                ('b', 'phone', randomblob(32), 'unmapped', NULL, NULL, NULL, NULL, NULL, 3000),
                ('c', 'email', randomblob(32), 'optout', NULL, 'U-c', 'B7', NULL, 4000, 4000)",
    );
    for (id, status) in [
        ("a", "mapped"),
        ("c", "mapped"),
        ("a", "mapped"),
        ("c", "optout"),
    ] {
        source.execute(&format!(
            "INSERT INTO identity_change (id, status, uid2, changed_at_ms)
             VALUES ('{id}', '{status}', 'U-{id}', 4000)"
        ));
    }
    source.execute("DELETE FROM identity_change WHERE seq <= 2");
    source.execute(
        "UPDATE mapping_state SET api = 'v3', last_started_at_ms = 3900, last_sent = 2,
             last_error_kind = 'timeout', last_error_message = 'slow', last_error_at_ms = 3950",
    );

    let (without_password, password) = split_password(target_db.url.as_deref().unwrap());
    let migrate = |url: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_uid2-bucket-sync"))
            .args(["--db"])
            .arg(&source.path)
            .args(["migrate-to", url])
            .env("PGPASSWORD", &password)
            .env_remove("UID2_BUCKET_SYNC_CONFIG")
            .env_remove("UID2_BUCKET_SYNC_DATABASE")
            .output()
            .unwrap()
    };
    let refused = migrate(target_db.url.as_deref().unwrap());
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("the URL holds a password"),
        "{refused:?}"
    );
    assert_eq!(target_db.count("pg_tables WHERE schemaname = 'public'"), 0);

    let copied = migrate(&without_password);
    let said = String::from_utf8_lossy(&copied.stdout);
    assert!(copied.status.success(), "{copied:?}");
    assert!(
        said.contains(
            "21 rotations of 20 buckets, 20 queue entries (4 leased), 3 identities, \
             2 change records"
        ),
        "{said}"
    );
    assert!(!said.contains(&password), "{said}");

    for view in [
        "sync_status",
        "buckets ORDER BY bucket_id",
        "bucket_rotations ORDER BY bucket_id, last_updated",
        "remap_queue ORDER BY kind, subject",
        "identities ORDER BY id",
        "identity_changes ORDER BY seq",
        "mapping_status",
    ] {
        let sql = format!("SELECT * FROM {view}");
        assert_eq!(source.rows(&sql), target_db.rows(&sql), "{view}");
    }
    let copy = target_db.open();
    let acked = copy
        .queue(QueueOptions::default())
        .ack(&[leases[2].lease_id.as_str()], at(2, 5, 0))
        .unwrap();
    assert!(!acked[0].is_refused(), "{acked:?}");
    // The hashes came over byte for byte, and the feed goes on after the
    // highest seq ever handed out, pruned ones included.
    assert_eq!(
        target_db.rows("SELECT encode(hash, 'hex') FROM identity WHERE id = 'a'")[0][0].as_deref(),
        Some("0".repeat(64).as_str())
    );
    let next = target_db.rows(
        "INSERT INTO identity_change (id, status, changed_at_ms) VALUES ('b', 'mapped', 1)
         RETURNING seq",
    );
    assert_eq!(next[0][0].as_deref(), Some("5"));

    let again = migrate(&without_password);
    assert!(!again.status.success());
    let refusal = String::from_utf8_lossy(&again.stderr);
    assert!(refusal.contains("is not empty"), "{refusal}");
}

#[test]
fn a_lock_held_past_the_busy_timeout_is_database_busy_and_changes_nothing() {
    let Some(db) = TempDb::postgres() else { return };
    drop(db.open());
    let store = Store::connect(
        &target(&db),
        OpenMode::MustExist,
        &StoreOptions {
            busy_timeout: std::time::Duration::from_millis(200),
            ..StoreOptions::default()
        },
    )
    .unwrap();
    // Another writer (an ingest elsewhere) holds the sync state's row.
    let mut other = postgres::Client::connect(db.url.as_deref().unwrap(), postgres::NoTls).unwrap();
    let mut holding = other.transaction().unwrap();
    holding
        .execute("SELECT 1 FROM sync_state WHERE id = 1 FOR UPDATE", &[])
        .unwrap();
    let error = store
        .ingest(vec![rotation("a", at(1, 0, 0))], at(1, 1, 0))
        .unwrap_err();
    assert!(
        error.to_string().starts_with(
            "the database stayed locked by another writer for longer than the busy timeout"
        ),
        "{error}"
    );
    holding.rollback().unwrap();
    assert_eq!(db.count("rotation_log"), 0);
    assert_eq!(store.sync_state().unwrap(), Default::default());
}
