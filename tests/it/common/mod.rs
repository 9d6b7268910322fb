//! Helpers shared by the store, queue and CLI tests: real database files in
//! temporary directories, times on a fixed calendar.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use uid2_bucket_sync::queue::{ClaimRequest, Lease, QueueOptions, RemapQueue};
use uid2_bucket_sync::rotation::BucketRotation;
use uid2_bucket_sync::store::{DatabaseLocation, OpenMode, PostgresTarget, Store, StoreOptions};

/// 2025-06-`day` `hour`:`minute` UTC.
pub fn at(day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, day, hour, minute, 0).unwrap()
}

pub fn rotation(bucket: &str, last_updated: DateTime<Utc>) -> BucketRotation {
    BucketRotation {
        bucket_id: bucket.into(),
        last_updated,
    }
}

/// A fresh database of one backend: a SQLite file in a temporary
/// directory, or a new database on the test PostgreSQL server.
pub struct TempDb {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    /// The PostgreSQL database's URL, for the PostgreSQL backend.
    pub url: Option<String>,
}

impl TempDb {
    /// A SQLite file.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("buckets.db");
        Self {
            dir,
            path,
            url: None,
        }
    }

    /// A PostgreSQL database; `None` where PostgreSQL is not installed
    /// (see `pg_server::server`).
    pub fn postgres() -> Option<Self> {
        let url = pg_server::fresh_database()?;
        Some(Self {
            url: Some(url),
            ..Self::new()
        })
    }

    pub fn open(&self) -> Store {
        match &self.url {
            Some(_) => Store::open_location(
                &self.location(),
                OpenMode::CreateIfMissing,
                &StoreOptions::default(),
            )
            .unwrap(),
            None => open_existing_or_new(&self.path),
        }
    }

    /// Where the state lives, as the configuration would say.
    pub fn location(&self) -> DatabaseLocation {
        match &self.url {
            Some(url) => DatabaseLocation::Postgres(Box::new(PostgresTarget::parse(url).unwrap())),
            None => DatabaseLocation::File(self.path.clone()),
        }
    }

    /// Every row `sql` returns, each value as text (`None` for NULL), read
    /// straight from the database as a batch job would.
    pub fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        rows(self.url.as_deref(), &self.path, sql)
    }

    /// Runs one statement straight on the database; returns the rows it
    /// changed.
    pub fn execute(&self, sql: &str) -> u64 {
        execute(self.url.as_deref(), &self.path, sql)
    }
}

/// Every row `sql` returns from the PostgreSQL database at `url`, or else
/// the SQLite file at `path`, each value as text (`None` for NULL).
pub fn rows(url: Option<&str>, path: &Path, sql: &str) -> Vec<Vec<Option<String>>> {
    match url {
        Some(url) => on_own_thread(|| {
            let mut client = ::postgres::Client::connect(url, ::postgres::NoTls).unwrap();
            client
                .simple_query(sql)
                .unwrap()
                .into_iter()
                .filter_map(|message| match message {
                    ::postgres::SimpleQueryMessage::Row(row) => Some(
                        (0..row.len())
                            .map(|i| row.get(i).map(str::to_owned))
                            .collect(),
                    ),
                    _ => None,
                })
                .collect()
        }),
        None => {
            let conn = rusqlite::Connection::open(path).unwrap();
            conn.busy_timeout(Duration::from_secs(10)).unwrap();
            let mut statement = conn.prepare(sql).unwrap();
            let columns = statement.column_count();
            statement
                .query_map([], |row| {
                    (0..columns)
                        .map(|i| {
                            Ok(match row.get_ref(i)? {
                                rusqlite::types::ValueRef::Null => None,
                                rusqlite::types::ValueRef::Integer(n) => Some(n.to_string()),
                                rusqlite::types::ValueRef::Real(x) => Some(x.to_string()),
                                rusqlite::types::ValueRef::Text(text) => {
                                    Some(String::from_utf8_lossy(text).into_owned())
                                }
                                rusqlite::types::ValueRef::Blob(_) => Some("<blob>".into()),
                            })
                        })
                        .collect()
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        }
    }
}

impl TempDb {
    /// The rows of `relation`.
    pub fn count(&self, relation: &str) -> i64 {
        self.rows(&format!("SELECT count(*) FROM {relation}"))[0][0]
            .as_deref()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// The columns of a table or view, in order.
    pub fn columns(&self, relation: &str) -> Vec<String> {
        let sql = match &self.url {
            Some(_) => format!(
                "SELECT column_name FROM information_schema.columns
                 WHERE table_name = '{relation}' ORDER BY ordinal_position"
            ),
            None => format!("SELECT name FROM pragma_table_info('{relation}')"),
        };
        self.rows(&sql)
            .into_iter()
            .map(|row| row[0].clone().unwrap())
            .collect()
    }

    /// Runs `sql`, which must fail, and returns the error's text.
    pub fn execute_error(&self, sql: &str) -> String {
        match &self.url {
            Some(url) => {
                let mut client = ::postgres::Client::connect(url, ::postgres::NoTls).unwrap();
                let error = client.batch_execute(sql).unwrap_err();
                error
                    .as_db_error()
                    .map_or_else(|| error.to_string(), |db| db.message().to_owned())
            }
            None => rusqlite::Connection::open(&self.path)
                .unwrap()
                .execute(sql, [])
                .unwrap_err()
                .to_string(),
        }
    }

    /// The `[database]` table of a configuration file for this database.
    pub fn config_section(&self) -> String {
        match &self.url {
            Some(url) => format!("[database]\nurl = {url:?}\n"),
            None => format!("[database]\npath = {:?}\n", self.path),
        }
    }
}

/// Runs one statement on the PostgreSQL database at `url`, or else the
/// SQLite file at `path`; returns the rows it changed.
pub fn execute(url: Option<&str>, path: &Path, sql: &str) -> u64 {
    match url {
        Some(url) => on_own_thread(|| {
            let mut client = ::postgres::Client::connect(url, ::postgres::NoTls).unwrap();
            client.execute(sql, &[]).unwrap()
        }),
        None => {
            let conn = rusqlite::Connection::open(path).unwrap();
            conn.busy_timeout(Duration::from_secs(10)).unwrap();
            conn.execute(sql, []).unwrap() as u64
        }
    }
}

/// Runs `work` on a thread of its own: the blocking PostgreSQL client
/// refuses to run inside an async test's runtime.
pub fn on_own_thread<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| scope.spawn(work).join().unwrap())
}

/// Which database a test of [`on_both_backends_async`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Declares each named test, an `async fn(Backend)`, once per backend, in
/// modules `sqlite` and `postgres` (which skips where PostgreSQL is not
/// installed: the test gets `None` from `TestApp::on`).
#[macro_export]
macro_rules! on_both_backends_async {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $test() {
                    super::$test($crate::common::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $test() {
                    super::$test($crate::common::Backend::Postgres).await;
                }
            )*
        }
    };
}

/// Declares each named test, a `fn(TempDb)`, once per backend: in module
/// `sqlite` on a database file, in module `postgres` on a database of the
/// test server (where PostgreSQL is installed).
#[macro_export]
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $test() {
                    super::$test($crate::common::TempDb::new());
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $test() {
                    if let Some(db) = $crate::common::TempDb::postgres() {
                        super::$test(db);
                    }
                }
            )*
        }
    };
}

pub fn open_existing_or_new(path: &Path) -> Store {
    Store::open(path, OpenMode::CreateIfMissing, &StoreOptions::default()).unwrap()
}

pub fn lease_for(minutes: u64) -> Duration {
    Duration::from_secs(minutes * 60)
}

pub fn claim(store: &Store, limit: u32, lease: Duration, now: DateTime<Utc>) -> Vec<Lease> {
    store
        .queue(QueueOptions::default())
        .claim(
            &ClaimRequest {
                limit,
                lease,
                worker: None,
            },
            now,
        )
        .unwrap()
}

pub fn lease_ids(leases: &[Lease]) -> Vec<&str> {
    leases.iter().map(|l| l.lease_id.as_str()).collect()
}

/// Acks every lease and insists each one was accepted.
pub fn ack_all(store: &Store, leases: &[Lease], now: DateTime<Utc>) {
    let outcomes = store
        .queue(QueueOptions::default())
        .ack(&lease_ids(leases), now)
        .unwrap();
    assert!(
        outcomes.iter().all(|o| !o.is_refused()),
        "refused: {outcomes:?}"
    );
}
pub mod app;
pub mod deliveries;
pub mod pg_server;
pub mod process;
