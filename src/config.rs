//! Layered settings: built-in defaults, then the TOML file, then the
//! environment, then command-line flags.
//!
//! Credentials are resolved separately and only by the commands that talk to
//! the operator (`sync`, `run`), so batch jobs running `queue …` never need
//! read access to the secrets. Every error names where the bad value came
//! from (file or variable), the key, and the reason, and never the value of
//! a secret.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::credentials::{ApiKey, ClientSecret, CredentialOrigins, CredentialSource};
use crate::operator::options::check_base_url;
use crate::operator::{BodyEncoding, ClientOptions, ClientSetupError, OperatorClient, RetryPolicy};
use crate::timestamp;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/uid2-bucket-sync/config.toml";
pub(crate) const DEFAULT_DATABASE_PATH: &str = "/var/lib/uid2-bucket-sync/buckets.db";
pub(crate) const API_KEY_ENV: &str = "UID2_API_KEY";
pub(crate) const CLIENT_SECRET_ENV: &str = "UID2_CLIENT_SECRET";
pub(crate) const BASE_URL_ENV: &str = "UID2_BUCKET_SYNC_BASE_URL";
pub(crate) const DATABASE_ENV: &str = "UID2_BUCKET_SYNC_DATABASE";
pub(crate) const LOG_ENV: &str = "UID2_BUCKET_SYNC_LOG";
/// Names of the systemd credentials (`LoadCredential=`) looked up in
/// `$CREDENTIALS_DIRECTORY` when nothing else provides them.
pub(crate) const API_KEY_CREDENTIAL: &str = "api_key";
pub(crate) const CLIENT_SECRET_CREDENTIAL: &str = "client_secret";

/// The operator deployments, as named in the configuration.
pub(crate) const ENVIRONMENTS: &[(&str, &str)] = &[
    ("uid2-integ", "https://operator-integ.uidapi.com"),
    ("uid2-prod", "https://prod.uidapi.com"),
    ("uid2-global", "https://global.prod.uidapi.com"),
    ("uid2-usw", "https://usw.prod.uidapi.com"),
    ("uid2-au", "https://au.prod.uidapi.com"),
    ("uid2-jp", "https://jp.prod.uidapi.com"),
    ("uid2-sg", "https://sg.prod.uidapi.com"),
    ("euid-integ", "https://integ.euid.eu"),
    ("euid-prod", "https://prod.euid.eu"),
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no configuration file: pass --config FILE, set UID2_BUCKET_SYNC_CONFIG, or create {DEFAULT_CONFIG_PATH}"
    )]
    NoConfigFile,
    #[error("{}: cannot read: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: {key}: {reason}")]
    Invalid {
        origin: String,
        key: String,
        reason: String,
    },
}

impl ConfigError {
    fn invalid(origin: &str, key: &str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            origin: origin.to_owned(),
            key: key.to_owned(),
            reason: reason.into(),
        }
    }
}

/// What the command line contributes to loading.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `--config` or `$UID2_BUCKET_SYNC_CONFIG`.
    pub config: Option<PathBuf>,
    /// `--db`.
    pub db: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// The file that was read, if any.
    pub(crate) source: Option<PathBuf>,
    pub operator: OperatorSettings,
    pub sync: SyncSettings,
    pub database: DatabaseSettings,
    pub queue: QueueSettings,
    pub log: LogSettings,
    pub(crate) metrics: MetricsSettings,
    /// Things worth telling the user that don't stop the program (for
    /// example a world-readable secret). Logged once logging is set up.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct OperatorSettings {
    /// `None` when neither `environment` nor `base_url` is set; only
    /// `sync` and `run` need it.
    pub base_url: Option<String>,
    /// Time limits, body encoding (`binary_body`) and retries.
    pub(crate) client: ClientOptions,
    credentials: CredentialSources,
    origin: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// Six-field cron expression (seconds first), evaluated in UTC.
    Cron(CronSchedule),
    Interval(Duration),
}

/// The longest `sync.interval`: the scheduler works in whole seconds of a
/// `chrono` duration, and a poll less often than yearly is surely a typo.
pub(crate) const MAX_INTERVAL: Duration = Duration::from_secs(366 * 24 * 3600);

/// A cron expression parsed once, at load, the way the scheduler reads it
/// (six fields, seconds first; day-of-month and weekday must both match),
/// and known to fire at least once more. Boxed: a parsed pattern is large.
#[derive(Debug, Clone)]
pub struct CronSchedule(Box<croner::Cron>);

impl CronSchedule {
    pub fn parse(expression: &str) -> Result<Self, String> {
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Required)
            .dom_and_dow(true)
            .build()
            .parse(expression)
            .map_err(|e| {
                format!(
                    "{expression:?} is not a cron expression with six fields (sec min hour day month weekday): {e}"
                )
            })?;
        let schedule = Self(Box::new(cron));
        if schedule.next_after(Utc::now()).is_none() {
            return Err(format!(
                "{expression:?} never fires: no date matches it (for example February 30)"
            ));
        }
        Ok(schedule)
    }

    /// The expression as written.
    pub(crate) fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The parsed expression, for the scheduler.
    pub(crate) fn cron(&self) -> &croner::Cron {
        &self.0
    }

    /// The first tick strictly after `time`.
    pub(crate) fn next_after(&self, time: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.0.find_next_occurrence(&time, false).ok()
    }

    /// The last tick at or before `time`.
    pub(crate) fn previous_at_or_before(&self, time: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.0.find_previous_occurrence(&time, true).ok()
    }
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for CronSchedule {}

impl std::fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct SyncSettings {
    pub schedule: Schedule,
    /// `since_timestamp` for a database with no high-water mark yet.
    pub(crate) initial_since: Option<DateTime<Utc>>,
    /// Re-read this much before the mark, in case the operator publishes late.
    pub(crate) overlap: Duration,
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub path: PathBuf,
    pub busy_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct QueueSettings {
    pub max_attempts: u32,
    /// Done items older than this are purged by the daemon and `queue purge`.
    pub done_retention: Duration,
    /// A failed item's wait before its next claim, doubled per attempt.
    pub retry_backoff: Duration,
    /// The longest such wait.
    pub max_retry_backoff: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A tracing `EnvFilter` directive such as `info` or `uid2_bucket_sync=debug`.
    pub(crate) level: String,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct MetricsSettings {
    /// Where to serve Prometheus text; off when `None`.
    pub(crate) listen: Option<SocketAddr>,
}

/// The credentials and endpoint `sync` and `run` need, fully resolved.
#[derive(Debug, Clone)]
pub struct OperatorConnection {
    pub(crate) base_url: String,
    pub api_key: ApiKey,
    pub(crate) client_secret: ClientSecret,
    pub(crate) client: ClientOptions,
    /// Where each credential was read from, for hints.
    pub credentials: CredentialOrigins,
    /// Which source won where more than one provides a credential, and
    /// which were ignored: worth one INFO line each at start.
    pub credential_notes: Vec<String>,
}

impl OperatorConnection {
    /// Builds the operator client `sync`, `run` and `config check` use. It
    /// sends nothing.
    pub(crate) fn client(&self) -> Result<OperatorClient, ClientSetupError> {
        OperatorClient::new(
            &self.base_url,
            self.api_key.clone(),
            self.client_secret.clone(),
            self.client.clone(),
        )
    }
}

#[derive(Debug, Clone, Default)]
struct CredentialSources {
    api_key: Option<String>,
    api_key_file: Option<PathBuf>,
    client_secret: Option<String>,
    client_secret_file: Option<PathBuf>,
}

// ---- the file as written -------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    operator: RawOperator,
    #[serde(default)]
    sync: RawSync,
    #[serde(default)]
    database: RawDatabase,
    #[serde(default)]
    queue: RawQueue,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    metrics: RawMetrics,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOperator {
    environment: Option<String>,
    base_url: Option<String>,
    api_key: Option<String>,
    api_key_file: Option<PathBuf>,
    client_secret: Option<String>,
    client_secret_file: Option<PathBuf>,
    connect_timeout: Option<String>,
    request_timeout: Option<String>,
    binary_body: Option<bool>,
    #[serde(default)]
    retry: RawRetry,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    max_attempts: Option<u32>,
    initial_backoff: Option<String>,
    max_backoff: Option<String>,
    max_elapsed: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSync {
    schedule: Option<String>,
    interval: Option<String>,
    initial_since: Option<String>,
    overlap: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    path: Option<PathBuf>,
    busy_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    max_attempts: Option<u32>,
    done_retention: Option<String>,
    retry_backoff: Option<String>,
    max_retry_backoff: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<String>,
    level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<String>,
}

impl Settings {
    /// Loads the configuration file (if any), then applies the environment
    /// and the command line. Fails with the origin, the key and the reason.
    pub fn load(options: &LoadOptions) -> Result<Self, ConfigError> {
        Self::load_with_env(options, &|name| std::env::var(name).ok())
    }

    /// As [`Settings::load`], with the environment supplied by the caller.
    pub fn load_with_env(
        options: &LoadOptions,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let file = match &options.config {
            Some(path) => Some(path.clone()),
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
                Some(PathBuf::from(DEFAULT_CONFIG_PATH))
            }
            None if options.db.is_some() || env(DATABASE_ENV).is_some() => None,
            None => return Err(ConfigError::NoConfigFile),
        };
        let raw = match &file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    file: path.clone(),
                    source,
                })?;
                parse_file(path, &text)?
            }
            None => RawFile::default(),
        };
        let origin = file.as_ref().map_or_else(
            || "built-in defaults".to_owned(),
            |p| p.display().to_string(),
        );
        let mut warnings = Vec::new();
        if let Some(path) = &file
            && (raw.operator.api_key.is_some() || raw.operator.client_secret.is_some())
        {
            warn_if_world_readable(
                path,
                "this configuration file holds a secret and",
                &mut warnings,
            );
        }

        let operator = build_operator(raw.operator, &origin, env)?;
        let sync = build_sync(raw.sync, &origin)?;
        let database = build_database(raw.database, &origin, options, env)?;
        let queue = QueueSettings {
            max_attempts: positive(
                raw.queue.max_attempts.unwrap_or(5),
                &origin,
                "queue.max_attempts",
            )?,
            done_retention: duration_or(
                raw.queue.done_retention,
                "7d",
                &origin,
                "queue.done_retention",
            )?,
            retry_backoff: retry_delay(
                raw.queue.retry_backoff,
                "30s",
                &origin,
                "queue.retry_backoff",
            )?,
            max_retry_backoff: retry_delay(
                raw.queue.max_retry_backoff,
                "1h",
                &origin,
                "queue.max_retry_backoff",
            )?,
        };
        if queue.max_retry_backoff < queue.retry_backoff {
            return Err(ConfigError::invalid(
                &origin,
                "queue.max_retry_backoff",
                format!(
                    "{} is shorter than queue.retry_backoff ({})",
                    humantime::format_duration(queue.max_retry_backoff),
                    humantime::format_duration(queue.retry_backoff)
                ),
            ));
        }
        let log = build_log(raw.log, &origin, env)?;
        let metrics = MetricsSettings {
            listen: raw
                .metrics
                .listen
                .map(|text| {
                    text.parse::<SocketAddr>().map_err(|_| {
                        ConfigError::invalid(
                            &origin,
                            "metrics.listen",
                            format!("{text:?} is not an address like 127.0.0.1:9464"),
                        )
                    })
                })
                .transpose()?,
        };
        Ok(Self {
            source: file,
            operator,
            sync,
            database,
            queue,
            log,
            metrics,
            warnings,
        })
    }

    /// Resolves the endpoint and both credentials, reading environment
    /// variables through `env`; also returns warnings about how secrets are
    /// stored. `sync` and `run` call this at start so a bad secret stops
    /// them before any work.
    pub fn operator_connection_with_env(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(OperatorConnection, Vec<String>), ConfigError> {
        let op = &self.operator;
        let base_url = op.base_url.clone().ok_or_else(|| {
            ConfigError::invalid(
                &op.origin,
                "operator.environment",
                "not set: name an environment (e.g. uid2-integ) or set operator.base_url",
            )
        })?;
        let mut warnings = Vec::new();
        let mut notes = Vec::new();
        let api_key_text = resolve_secret(
            SecretSpec {
                what: "API key",
                key: "operator.api_key",
                env_name: API_KEY_ENV,
                credential_name: API_KEY_CREDENTIAL,
            },
            &op.origin,
            op.credentials.api_key.as_deref(),
            op.credentials.api_key_file.as_deref(),
            env,
            &mut warnings,
            &mut notes,
        )?;
        let api_key =
            ApiKey::new(&api_key_text.text).map_err(|e| api_key_text.invalid(e.to_string()))?;
        let secret_text = resolve_secret(
            SecretSpec {
                what: "client secret",
                key: "operator.client_secret",
                env_name: CLIENT_SECRET_ENV,
                credential_name: CLIENT_SECRET_CREDENTIAL,
            },
            &op.origin,
            op.credentials.client_secret.as_deref(),
            op.credentials.client_secret_file.as_deref(),
            env,
            &mut warnings,
            &mut notes,
        )?;
        let client_secret = ClientSecret::from_base64(&secret_text.text)
            .map_err(|e| secret_text.invalid(e.to_string()))?;
        Ok((
            OperatorConnection {
                base_url,
                api_key,
                client_secret,
                client: op.client.clone(),
                credentials: CredentialOrigins {
                    api_key: Some(api_key_text.source),
                    client_secret: Some(secret_text.source),
                },
                credential_notes: notes,
            },
            warnings,
        ))
    }
}

fn parse_file(path: &Path, text: &str) -> Result<RawFile, ConfigError> {
    let origin = path.display().to_string();
    let deserializer =
        toml::Deserializer::parse(text).map_err(|e| toml_error(&origin, text, &e, ""))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = e.path().to_string();
        toml_error(&origin, text, e.inner(), if key == "." { "" } else { &key })
    })
}

fn toml_error(origin: &str, text: &str, error: &toml::de::Error, key: &str) -> ConfigError {
    let line = error
        .span()
        .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
    let origin = match line {
        Some(line) => format!("{origin}:{line}"),
        None => origin.to_owned(),
    };
    let key = if key.is_empty() { "(file)" } else { key };
    ConfigError::invalid(&origin, key, error.message().trim().replace('\n', " "))
}

fn build_operator(
    raw: RawOperator,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<OperatorSettings, ConfigError> {
    let base_url = match (env(BASE_URL_ENV), raw.base_url, raw.environment) {
        (Some(url), _, _) => Some(validate_base_url(&url, BASE_URL_ENV, "value")?),
        (None, Some(url), _) => Some(validate_base_url(&url, origin, "operator.base_url")?),
        (None, None, Some(name)) => Some(
            ENVIRONMENTS
                .iter()
                .find(|(known, _)| *known == name)
                .map(|(_, url)| (*url).to_owned())
                .ok_or_else(|| {
                    let names: Vec<_> = ENVIRONMENTS.iter().map(|(n, _)| *n).collect();
                    ConfigError::invalid(
                        origin,
                        "operator.environment",
                        format!("{name:?} is not one of {}", names.join(", ")),
                    )
                })?,
        ),
        (None, None, None) => None,
    };
    if raw.api_key.is_some() && raw.api_key_file.is_some() {
        return Err(ConfigError::invalid(
            origin,
            "operator.api_key_file",
            "set either api_key or api_key_file, not both",
        ));
    }
    if raw.client_secret.is_some() && raw.client_secret_file.is_some() {
        return Err(ConfigError::invalid(
            origin,
            "operator.client_secret_file",
            "set either client_secret or client_secret_file, not both",
        ));
    }
    // A malformed inline secret is a mistake in the file itself: report it
    // at load, with the file and key, even for commands that don't use it.
    if let Some(secret) = &raw.client_secret {
        ClientSecret::from_base64(secret)
            .map_err(|e| ConfigError::invalid(origin, "operator.client_secret", e.to_string()))?;
    }
    let defaults = ClientOptions::default();
    let retry = RetryPolicy {
        max_attempts: positive(
            raw.retry
                .max_attempts
                .unwrap_or(defaults.retry.max_attempts),
            origin,
            "operator.retry.max_attempts",
        )?,
        initial_backoff: duration_or_default(
            raw.retry.initial_backoff,
            defaults.retry.initial_backoff,
            origin,
            "operator.retry.initial_backoff",
        )?,
        max_backoff: duration_or_default(
            raw.retry.max_backoff,
            defaults.retry.max_backoff,
            origin,
            "operator.retry.max_backoff",
        )?,
        max_elapsed: duration_or_default(
            raw.retry.max_elapsed,
            defaults.retry.max_elapsed,
            origin,
            "operator.retry.max_elapsed",
        )?,
    };
    if retry.initial_backoff > retry.max_backoff {
        return Err(ConfigError::invalid(
            origin,
            "operator.retry.initial_backoff",
            "is longer than operator.retry.max_backoff",
        ));
    }
    let client = ClientOptions {
        connect_timeout: nonzero(
            duration_or_default(
                raw.connect_timeout,
                defaults.connect_timeout,
                origin,
                "operator.connect_timeout",
            )?,
            origin,
            "operator.connect_timeout",
        )?,
        request_timeout: nonzero(
            duration_or_default(
                raw.request_timeout,
                defaults.request_timeout,
                origin,
                "operator.request_timeout",
            )?,
            origin,
            "operator.request_timeout",
        )?,
        encoding: match raw.binary_body {
            Some(true) => BodyEncoding::Binary,
            Some(false) => BodyEncoding::Base64,
            None => defaults.encoding,
        },
        retry,
        ..defaults
    };
    Ok(OperatorSettings {
        base_url,
        client,
        credentials: CredentialSources {
            api_key: raw.api_key,
            api_key_file: raw.api_key_file,
            client_secret: raw.client_secret,
            client_secret_file: raw.client_secret_file,
        },
        origin: origin.to_owned(),
    })
}

/// The operator client's own rules (https, or http to loopback; nothing
/// that could carry a credential), checked at load so a bad URL is refused
/// with the file and key. The message never shows a user name, password or
/// query.
fn validate_base_url(url: &str, origin: &str, key: &str) -> Result<String, ConfigError> {
    check_base_url(url).map_err(|e| ConfigError::invalid(origin, key, e.to_string()))?;
    Ok(url.trim().trim_end_matches('/').to_owned())
}

fn build_sync(raw: RawSync, origin: &str) -> Result<SyncSettings, ConfigError> {
    let schedule = match (raw.schedule, raw.interval) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::invalid(
                origin,
                "sync.interval",
                "set either sync.schedule or sync.interval, not both",
            ));
        }
        (Some(expression), None) => Schedule::Cron(
            CronSchedule::parse(&expression)
                .map_err(|reason| ConfigError::invalid(origin, "sync.schedule", reason))?,
        ),
        (None, Some(text)) => Schedule::Interval(
            validate_interval(parse_duration(&text, origin, "sync.interval")?)
                .map_err(|reason| ConfigError::invalid(origin, "sync.interval", reason))?,
        ),
        // The operator's guidance: poll hourly when fidelity matters.
        (None, None) => Schedule::Interval(Duration::from_secs(3600)),
    };
    let initial_since = raw
        .initial_since
        .map(|text| {
            let since = timestamp::parse_iso_local(&text)
                .map_err(|e| ConfigError::invalid(origin, "sync.initial_since", e.to_string()))?;
            // The operator answers a future since_timestamp with no rows, so
            // the first sync would succeed forever without recording anything.
            if since > Utc::now() {
                return Err(ConfigError::invalid(
                    origin,
                    "sync.initial_since",
                    format!(
                        "{text:?} is in the future; set it to when your identifiers were last \
                         mapped (UTC)"
                    ),
                ));
            }
            Ok(since)
        })
        .transpose()?;
    Ok(SyncSettings {
        schedule,
        initial_since,
        overlap: duration_or(raw.overlap, "0s", origin, "sync.overlap")?,
    })
}

/// The scheduler counts repeat intervals in whole seconds: `1500ms` would
/// silently become 1 s and anything under a second would never tick; past
/// [`MAX_INTERVAL`] its time arithmetic overflows.
pub(crate) fn validate_interval(interval: Duration) -> Result<Duration, String> {
    if interval < Duration::from_secs(1) || interval.subsec_nanos() != 0 {
        return Err(format!(
            "{} is not a whole number of seconds of at least 1s; the scheduler counts in seconds",
            humantime::format_duration(interval)
        ));
    }
    if interval > MAX_INTERVAL {
        return Err(format!(
            "{} is longer than the longest interval, 366 days",
            humantime::format_duration(interval)
        ));
    }
    Ok(interval)
}

fn build_database(
    raw: RawDatabase,
    origin: &str,
    options: &LoadOptions,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<DatabaseSettings, ConfigError> {
    let path = options
        .db
        .clone()
        .or_else(|| env(DATABASE_ENV).map(PathBuf::from))
        .or(raw.path)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATABASE_PATH));
    if path.as_os_str().is_empty() {
        return Err(ConfigError::invalid(origin, "database.path", "is empty"));
    }
    Ok(DatabaseSettings {
        path,
        busy_timeout: duration_or(raw.busy_timeout, "30s", origin, "database.busy_timeout")?,
    })
}

fn build_log(
    raw: RawLog,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<LogSettings, ConfigError> {
    let format = match raw.format.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            return Err(ConfigError::invalid(
                origin,
                "log.format",
                format!("{other:?} is not one of text, json"),
            ));
        }
    };
    let (level, level_origin, level_key) = match env(LOG_ENV) {
        Some(level) => (level, LOG_ENV.to_owned(), "value"),
        None => (
            raw.level.unwrap_or_else(|| "info".to_owned()),
            origin.to_owned(),
            "log.level",
        ),
    };
    tracing_subscriber::EnvFilter::try_new(&level).map_err(|e| {
        ConfigError::invalid(
            &level_origin,
            level_key,
            format!("{level:?} is not a log filter: {e}"),
        )
    })?;
    Ok(LogSettings { format, level })
}

/// One credential and the names it goes by.
struct SecretSpec {
    what: &'static str,
    key: &'static str,
    env_name: &'static str,
    credential_name: &'static str,
}

struct ResolvedSecret {
    text: String,
    source: CredentialSource,
}

impl ResolvedSecret {
    fn invalid(&self, reason: String) -> ConfigError {
        refuse_credential(&self.source, reason)
    }
}

/// A refusal of a credential, naming where it came from (never its value).
fn refuse_credential(source: &CredentialSource, reason: String) -> ConfigError {
    let (origin, key) = match source {
        CredentialSource::Environment(name) => ((*name).to_owned(), "value".to_owned()),
        CredentialSource::ConfigValue { file, key } => (file.clone(), key.clone()),
        CredentialSource::ConfigFile { file, key, path } => {
            (format!("{file} ({})", path.display()), key.clone())
        }
        CredentialSource::SystemdCredential { name, path } => (
            format!("systemd credentials ({})", path.display()),
            (*name).to_owned(),
        ),
    };
    ConfigError::invalid(&origin, &key, reason)
}

/// Precedence: environment variable, then the configuration (inline value
/// or `*_file`), then the systemd credential of the conventional name.
/// When several are present, says in `notes` which one won.
fn resolve_secret(
    spec: SecretSpec,
    origin: &str,
    inline: Option<&str>,
    file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
    notes: &mut Vec<String>,
) -> Result<ResolvedSecret, ConfigError> {
    let SecretSpec {
        what,
        key,
        env_name,
        credential_name,
    } = spec;
    let from_env = env(env_name);
    let mut present = Vec::new();
    if from_env.is_some() {
        present.push(CredentialSource::Environment(env_name));
    }
    if inline.is_some() {
        present.push(CredentialSource::ConfigValue {
            file: origin.to_owned(),
            key: key.to_owned(),
        });
    }
    if let Some(path) = file {
        present.push(CredentialSource::ConfigFile {
            file: origin.to_owned(),
            key: format!("{key}_file"),
            path: path.to_path_buf(),
        });
    }
    if let Some(path) = env("CREDENTIALS_DIRECTORY")
        .map(|dir| Path::new(&dir).join(credential_name))
        .filter(|path| path.exists())
    {
        present.push(CredentialSource::SystemdCredential {
            name: credential_name,
            path,
        });
    }
    let mut present = present.into_iter();
    let Some(source) = present.next() else {
        return Err(ConfigError::invalid(
            origin,
            key,
            format!(
                "not set: set {key}_file (or {key}), the environment variable {env_name}, \
                 or a systemd credential named {credential_name}"
            ),
        ));
    };
    let ignored: Vec<String> = present.map(|source| source.to_string()).collect();
    if !ignored.is_empty() {
        notes.push(format!(
            "{what}: using {source}; ignoring {}",
            ignored.join(", ")
        ));
    }
    let text = match &source {
        CredentialSource::Environment(_) => from_env.unwrap_or_default(),
        CredentialSource::ConfigValue { .. } => inline.unwrap_or_default().to_owned(),
        CredentialSource::ConfigFile { path, .. }
        | CredentialSource::SystemdCredential { path, .. } => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| refuse_credential(&source, format!("cannot read: {e}")))?;
            warn_if_world_readable(path, "this file holds a secret and", warnings);
            text
        }
    };
    Ok(ResolvedSecret { text, source })
}

fn warn_if_world_readable(path: &Path, what: &str, warnings: &mut Vec<String>) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(metadata) = std::fs::metadata(path)
        && metadata.permissions().mode() & 0o004 != 0
    {
        warnings.push(format!(
            "{}: {what} is readable by every user on this machine; chmod o-r it",
            path.display()
        ));
    }
}

fn parse_duration(text: &str, origin: &str, key: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text).map_err(|e| {
        ConfigError::invalid(
            origin,
            key,
            format!("{text:?} is not a duration like 30s, 10m or 1h: {e}"),
        )
    })
}

fn duration_or(
    text: Option<String>,
    default: &str,
    origin: &str,
    key: &str,
) -> Result<Duration, ConfigError> {
    parse_duration(text.as_deref().unwrap_or(default), origin, key)
}

/// As [`duration_or`], for a default that lives with the type it configures.
fn duration_or_default(
    text: Option<String>,
    default: Duration,
    origin: &str,
    key: &str,
) -> Result<Duration, ConfigError> {
    text.map_or(Ok(default), |text| parse_duration(&text, origin, key))
}

fn retry_delay(
    text: Option<String>,
    default: &str,
    origin: &str,
    key: &str,
) -> Result<Duration, ConfigError> {
    crate::queue::check_retry_delay(duration_or(text, default, origin, key)?)
        .map_err(|error| ConfigError::invalid(origin, key, error.to_string()))
}

fn nonzero(value: Duration, origin: &str, key: &str) -> Result<Duration, ConfigError> {
    if value.is_zero() {
        return Err(ConfigError::invalid(
            origin,
            key,
            "must be longer than zero",
        ));
    }
    Ok(value)
}

fn positive(value: u32, origin: &str, key: &str) -> Result<u32, ConfigError> {
    if value == 0 {
        return Err(ConfigError::invalid(origin, key, "must be at least 1"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operator_settings(text: &str) -> Result<OperatorSettings, ConfigError> {
        let raw = parse_file(Path::new("c.toml"), text)?;
        build_operator(raw.operator, "c.toml", &|_| None)
    }

    #[test]
    fn without_operator_keys_the_client_gets_the_documented_defaults() {
        let settings = operator_settings("").unwrap();
        assert_eq!(settings.client, ClientOptions::default());
        assert_eq!(settings.client.retry.max_attempts, 6);
        assert_eq!(
            settings.client.retry.initial_backoff,
            Duration::from_secs(1)
        );
    }

    #[test]
    fn every_operator_client_key_lands_in_the_client_options() {
        let settings = operator_settings(
            "[operator]\nconnect_timeout = \"3s\"\nrequest_timeout = \"2m\"\nbinary_body = true\n\
             [operator.retry]\nmax_attempts = 2\ninitial_backoff = \"250ms\"\n\
             max_backoff = \"5s\"\nmax_elapsed = \"1m\"\n",
        )
        .unwrap();
        assert_eq!(
            settings.client,
            ClientOptions {
                connect_timeout: Duration::from_secs(3),
                request_timeout: Duration::from_secs(120),
                encoding: BodyEncoding::Binary,
                retry: RetryPolicy {
                    max_attempts: 2,
                    initial_backoff: Duration::from_millis(250),
                    max_backoff: Duration::from_secs(5),
                    max_elapsed: Duration::from_secs(60),
                },
                ..ClientOptions::default()
            }
        );
    }

    #[test]
    fn impossible_retry_settings_are_refused_with_their_key() {
        for (text, key) in [
            (
                "[operator.retry]\nmax_attempts = 0\n",
                "operator.retry.max_attempts",
            ),
            (
                "[operator.retry]\ninitial_backoff = \"2m\"\n",
                "operator.retry.initial_backoff",
            ),
            (
                "[operator.retry]\nmax_elapsed = \"soon\"\n",
                "operator.retry.max_elapsed",
            ),
            (
                "[operator]\nconnect_timeout = \"0s\"\n",
                "operator.connect_timeout",
            ),
        ] {
            let message = operator_settings(text).unwrap_err().to_string();
            assert!(message.contains(key), "{text}: {message}");
        }
    }
}
