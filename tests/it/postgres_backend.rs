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
        error.contains("it has schema version 99, newer than the version 1"),
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
    assert_eq!(db.count("uid2_schema_history"), 1);
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
