//! `spawn_app`: a simulated operator on 127.0.0.1 port 0, a fresh temporary
//! directory with a config file pointing at it and a database path, and the
//! ways to drive the real program against them: in-process (`sync_cycle`,
//! `daemon`) or as the real binary (`command`).

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use uid2_bucket_sync::config::{QueueSettings, Schedule};
use uid2_bucket_sync::credentials::{ApiKey, ClientSecret};
use uid2_bucket_sync::daemon::Daemon;
use uid2_bucket_sync::operator::{ClientOptions, OperatorClient, RetryPolicy};
use uid2_bucket_sync::simulator::{SimulatedOperator, SimulatorConfig};
use uid2_bucket_sync::store::{OpenMode, PostgresTarget, SharedStore, Store, StoreOptions};
use uid2_bucket_sync::sync::{SyncCycle, SyncPlan};

pub const API_KEY: &str = "test-api-key-7f3a9c";
/// Distinctive, so a test can search captured output for it.
pub const CLIENT_SECRET: &str = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTAwMDA=";
/// Before every simulated bucket's initial time.
pub const INITIAL_SINCE: &str = "2000-01-01T00:00:00";

pub struct TestApp {
    pub operator: SimulatedOperator,
    pub dir: tempfile::TempDir,
    pub db_path: PathBuf,
    pub config_path: PathBuf,
    /// Set by [`TestApp::on_postgres`]: the PostgreSQL database to use
    /// instead of the file at `db_path`.
    pub pg_url: Option<String>,
}

/// A simulated operator with `buckets` buckets and no periodic rotations,
/// and a config file (`[sync] interval = "1h"`, fast retries) next to an
/// empty database path.
pub async fn spawn_app(buckets: u32) -> TestApp {
    spawn_app_with(simulator_config(buckets)).await
}

pub fn simulator_config(buckets: u32) -> SimulatorConfig {
    SimulatorConfig::new(
        ApiKey::new(API_KEY).unwrap(),
        ClientSecret::from_base64(CLIENT_SECRET).unwrap(),
        buckets,
    )
}

pub async fn spawn_app_with(config: SimulatorConfig) -> TestApp {
    let operator = SimulatedOperator::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp {
        db_path: dir.path().join("buckets.db"),
        config_path: dir.path().join("config.toml"),
        pg_url: None,
        operator,
        dir,
    };
    app.write_config("");
    app
}

/// The `n`th test email.
pub fn email(n: usize) -> String {
    format!("user{n}@example.com")
}

impl TestApp {
    /// The config file's text: the operator, credentials, a 3 s request
    /// limit, a 1 h interval,
    /// `initial_since`, fast retries and the database path, then `extra`
    /// (whole `[section]`s that replace nothing, so use keys not set here).
    pub fn config_text(&self, extra: &str) -> String {
        format!(
            r#"[operator]
base_url = "{base_url}"
api_key = "{API_KEY}"
client_secret = "{CLIENT_SECRET}"
request_timeout = "3s"

[operator.retry]
max_attempts = 4
initial_backoff = "10ms"
max_backoff = "50ms"
max_elapsed = "20s"

[sync]
interval = "1h"
initial_since = "{INITIAL_SINCE}"

{database}
{extra}
"#,
            base_url = self.operator.base_url(),
            database = self.database_section(),
        )
    }

    /// The `[database]` table: the file, or the PostgreSQL database.
    fn database_section(&self) -> String {
        match &self.pg_url {
            Some(url) => format!("[database]\nurl = {url:?}"),
            None => format!(
                "[database]\npath = {:?}",
                self.db_path.display().to_string()
            ),
        }
    }

    /// The same app on a new database of the test PostgreSQL server;
    /// `None` where PostgreSQL is not installed.
    pub fn on_postgres(mut self) -> Option<Self> {
        self.pg_url = Some(super::pg_server::fresh_database()?);
        self.write_config("");
        Some(self)
    }

    /// The same app on `backend`; `None` for PostgreSQL where it is not
    /// installed.
    pub fn on(self, backend: super::Backend) -> Option<Self> {
        match backend {
            super::Backend::Sqlite => Some(self),
            super::Backend::Postgres => self.on_postgres(),
        }
    }

    /// Every row `sql` returns from the test's database, as text.
    pub fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        super::rows(self.pg_url.as_deref(), &self.db_path, sql)
    }

    /// Runs one statement on the test's database; the rows it changed.
    pub fn execute(&self, sql: &str) -> u64 {
        super::execute(self.pg_url.as_deref(), &self.db_path, sql)
    }

    /// Imports `count` emails ([`email`]) with ids `id0`, `id1`, … through
    /// `identities import`.
    pub fn import_emails(&self, count: usize) {
        let mut csv = String::from("id,email\n");
        for n in 0..count {
            csv.push_str(&format!("id{n},{}\n", email(n)));
        }
        let output = super::process::output_with_stdin(
            self.command()
                .args(["identities", "import", "-", "--format", "csv"]),
            &csv,
        );
        assert!(output.status.success(), "{}", super::process::text(&output));
    }

    /// Identities sent to either map endpoint of the operator so far.
    pub fn identities_sent(&self) -> usize {
        self.operator
            .map_requests()
            .iter()
            .map(|request| {
                request
                    .map_counts
                    .as_ref()
                    .map_or(0, |counts| counts.total())
            })
            .sum()
    }

    /// The one number `sql` returns.
    pub fn number(&self, sql: &str) -> i64 {
        self.rows(sql)[0][0].as_deref().unwrap().parse().unwrap()
    }

    /// Rewrites the config file, readable by the owner only.
    pub fn write_config(&self, extra: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(&self.config_path, self.config_text(extra)).unwrap();
        std::fs::set_permissions(&self.config_path, std::fs::Permissions::from_mode(0o600))
            .unwrap();
    }

    /// The real binary with `--config` set and a clean environment for the
    /// variables it reads.
    pub fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_uid2-bucket-sync"));
        command
            .arg("--config")
            .arg(&self.config_path)
            .env_remove("UID2_API_KEY")
            .env_remove("UID2_CLIENT_SECRET")
            .env_remove("UID2_BUCKET_SYNC_CONFIG")
            .env_remove("UID2_BUCKET_SYNC_BASE_URL")
            .env_remove("UID2_BUCKET_SYNC_DATABASE")
            .env_remove("UID2_BUCKET_SYNC_LOG")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("RUST_LOG");
        command
    }

    /// Opens the test's database (created if missing). From an async test,
    /// a PostgreSQL store is used inside `block_in_place` or `with_store`:
    /// its blocking client may not run on the runtime's threads.
    pub fn store(&self) -> Store {
        match &self.pg_url {
            Some(url) => super::on_own_thread(|| {
                Store::connect(
                    &PostgresTarget::parse(url).unwrap(),
                    OpenMode::CreateIfMissing,
                    &StoreOptions::default(),
                )
            }),
            None => Store::open(
                &self.db_path,
                OpenMode::CreateIfMissing,
                &StoreOptions::default(),
            ),
        }
        .unwrap()
    }

    pub fn shared_store(&self) -> SharedStore {
        Arc::new(Mutex::new(self.store()))
    }

    /// A client for the simulated operator with fast retries.
    pub fn client(&self) -> OperatorClient {
        self.client_for(&self.operator.base_url())
    }

    /// A client like [`TestApp::client`] for another address.
    pub fn client_for(&self, base_url: &str) -> OperatorClient {
        self.client_with(base_url, Duration::from_secs(30))
    }

    /// A client like [`TestApp::client`] with another whole-request limit.
    pub fn client_with(&self, base_url: &str, request_timeout: Duration) -> OperatorClient {
        OperatorClient::new(
            base_url,
            ApiKey::new(API_KEY).unwrap(),
            ClientSecret::from_base64(CLIENT_SECRET).unwrap(),
            ClientOptions {
                connect_timeout: Duration::from_secs(2),
                request_timeout,
                retry: RetryPolicy {
                    max_attempts: 4,
                    initial_backoff: Duration::from_millis(10),
                    max_backoff: Duration::from_millis(50),
                    max_elapsed: Duration::from_secs(20),
                },
                ..ClientOptions::default()
            },
        )
        .unwrap()
    }

    /// An in-process sync cycle on this app's database, starting from
    /// [`INITIAL_SINCE`].
    pub fn sync_cycle(&self) -> SyncCycle {
        self.sync_cycle_with(self.client())
    }

    /// As [`TestApp::sync_cycle`], with the given client.
    pub fn sync_cycle_with(&self, client: OperatorClient) -> SyncCycle {
        SyncCycle::new(
            client,
            self.shared_store(),
            SyncPlan {
                initial_since: Some(
                    uid2_bucket_sync::timestamp::parse_iso_local(INITIAL_SINCE).unwrap(),
                ),
                overlap: Duration::ZERO,
            },
        )
    }

    /// An in-process daemon ticking every `interval`.
    pub fn daemon(&self, interval: Duration) -> Daemon {
        Daemon::new(
            self.sync_cycle(),
            Schedule::Interval(interval),
            QueueSettings {
                max_attempts: 5,
                done_retention: Duration::from_secs(7 * 24 * 3600),
                retry_backoff: Duration::from_secs(30),
                max_retry_backoff: Duration::from_secs(3600),
            },
        )
    }
}
