//! Layered settings: built-in defaults, then the TOML file, then the
//! environment, then command-line flags.
//!
//! Credentials are resolved separately and only by the commands that talk to
//! the operator (`sync`, `run`), so batch jobs running `queue …` never need
//! read access to the secrets. Every error names where the bad value came
//! from (file or variable), the key, and the reason, and never the value of
//! a secret.
//!
//! Layout: the settings and how they are assembled here; the TOML file's
//! shape in `schema`; credential resolution in `secrets`; the checks on
//! durations, URLs, cron expressions and intervals in `validate`.

mod schema;
mod secrets;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::credentials::{ApiKey, ClientSecret, CredentialOrigins};
use crate::operator::{BodyEncoding, ClientOptions, ClientSetupError, OperatorClient, RetryPolicy};
use crate::operator::{MAX_BATCH_SIZE, MapLimits};
use crate::store::{DatabaseLocation, MapApi, PostgresTarget};
use crate::timestamp;
use schema::{RawDatabase, RawFile, RawLog, RawMapping, RawOperator, RawSync, parse_file};
use secrets::{ConfiguredSecret, CredentialSources, warn_if_world_readable};
pub use validate::CronSchedule;
pub(crate) use validate::validate_interval;
use validate::{duration, nonzero, parse_duration, positive, retry_delay, validate_base_url};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/uid2-bucket-sync/config.toml";
pub(crate) const DEFAULT_DATABASE_PATH: &str = "/var/lib/uid2-bucket-sync/buckets.db";
pub(crate) const BASE_URL_ENV: &str = "UID2_BUCKET_SYNC_BASE_URL";
pub(crate) const DATABASE_ENV: &str = "UID2_BUCKET_SYNC_DATABASE";
pub(crate) const LOG_ENV: &str = "UID2_BUCKET_SYNC_LOG";

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
    pub mapping: MappingSettings,
    pub log: LogSettings,
    pub(crate) metrics: MetricsSettings,
    /// Things worth telling the user that don't stop the program (for
    /// example a world-readable secret). Logged once logging is set up.
    pub warnings: Vec<String>,
    /// Which of several sources of a secret was used; logged at start.
    pub(crate) notes: Vec<String>,
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
    /// The SQLite file (`database.path`, the default) or the PostgreSQL
    /// database (`database.url`).
    pub location: DatabaseLocation,
    pub busy_timeout: Duration,
}

impl DatabaseSettings {
    /// The SQLite file, when the state lives in one.
    pub fn file(&self) -> Option<&Path> {
        match &self.location {
            DatabaseLocation::File(path) => Some(path),
            DatabaseLocation::Postgres(_) => None,
        }
    }
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

/// The built-in re-map worker (`[mapping]`).
#[derive(Debug, Clone)]
pub struct MappingSettings {
    /// Whether `run` also maps new identities and re-maps due ones.
    pub enabled: bool,
    pub api: MapApi,
    /// Identities per request and requests in flight.
    pub limits: MapLimits,
    /// How often `run` starts a pass.
    pub interval: Duration,
    /// `run` spreads the re-maps that come due at a UTC midnight over this
    /// much of the day; zero sends them all in the first pass.
    pub spread_over: Duration,
    /// Change records older than this are pruned by the daemon.
    pub change_retention: Duration,
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
        let mut notes = Vec::new();
        let database = build_database(
            raw.database,
            &origin,
            options,
            env,
            &mut warnings,
            &mut notes,
        )?;
        let queue = QueueSettings {
            max_attempts: positive(
                raw.queue.max_attempts.unwrap_or(5),
                &origin,
                "queue.max_attempts",
            )?,
            done_retention: duration(
                raw.queue.done_retention,
                Duration::from_secs(7 * 24 * 3600),
                &origin,
                "queue.done_retention",
            )?,
            retry_backoff: retry_delay(
                raw.queue.retry_backoff,
                Duration::from_secs(30),
                &origin,
                "queue.retry_backoff",
            )?,
            max_retry_backoff: retry_delay(
                raw.queue.max_retry_backoff,
                Duration::from_secs(3600),
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
        let mapping = build_mapping(raw.mapping, &origin)?;
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
            mapping,
            log,
            metrics,
            warnings,
            notes,
        })
    }
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
        initial_backoff: duration(
            raw.retry.initial_backoff,
            defaults.retry.initial_backoff,
            origin,
            "operator.retry.initial_backoff",
        )?,
        max_backoff: duration(
            raw.retry.max_backoff,
            defaults.retry.max_backoff,
            origin,
            "operator.retry.max_backoff",
        )?,
        max_elapsed: duration(
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
            duration(
                raw.connect_timeout,
                defaults.connect_timeout,
                origin,
                "operator.connect_timeout",
            )?,
            origin,
            "operator.connect_timeout",
        )?,
        request_timeout: nonzero(
            duration(
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
            api_key: ConfiguredSecret {
                inline: raw.api_key,
                file: raw.api_key_file,
            },
            client_secret: ConfiguredSecret {
                inline: raw.client_secret,
                file: raw.client_secret_file,
            },
        },
        origin: origin.to_owned(),
    })
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
        overlap: duration(raw.overlap, Duration::ZERO, origin, "sync.overlap")?,
    })
}

fn build_database(
    raw: RawDatabase,
    origin: &str,
    options: &LoadOptions,
    env: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
    notes: &mut Vec<String>,
) -> Result<DatabaseSettings, ConfigError> {
    let busy_timeout = duration(
        raw.busy_timeout,
        Duration::from_secs(30),
        origin,
        "database.busy_timeout",
    )?;
    // `--db` and the environment override the file's choice, whichever
    // backend either names.
    let overridden = match (&options.db, env(DATABASE_ENV)) {
        (Some(db), _) => Some((db.to_string_lossy().into_owned(), "--db", "value")),
        (None, Some(db)) => Some((db, DATABASE_ENV, "value")),
        (None, None) => None,
    };
    let (url, url_origin, url_key) = match (overridden, raw.url, raw.path) {
        (Some((db, from, key)), _, _) if is_postgres_url(&db) => (db, from, key),
        (Some((db, from, _)), _, _) => return file_location(PathBuf::from(db), from, busy_timeout),
        (None, Some(_), Some(_)) => {
            return Err(ConfigError::invalid(
                origin,
                "database.url",
                "and database.path are both set: the state lives in one of them, \
                 remove the other",
            ));
        }
        (None, Some(url), None) => (url, origin, "database.url"),
        (None, None, path) => {
            if raw.password_file.is_some() {
                return Err(ConfigError::invalid(
                    origin,
                    "database.password_file",
                    "is set without database.url: only a PostgreSQL database has a password",
                ));
            }
            let path = path.unwrap_or_else(|| PathBuf::from(DEFAULT_DATABASE_PATH));
            return file_location(path, origin, busy_timeout);
        }
    };
    let target = postgres_target(
        &url,
        (url_origin, url_key),
        origin,
        raw.password_file,
        env,
        warnings,
        notes,
    )?;
    Ok(DatabaseSettings {
        location: DatabaseLocation::Postgres(Box::new(target)),
        busy_timeout,
    })
}

/// A PostgreSQL database from its URL (`url_source`: where the URL came
/// from, and under which key) and the password wherever it is: the URL,
/// `password_file` (a key of the file `origin`), `$PGPASSWORD` or the
/// systemd credential `db_password`. The one place a URL becomes a target.
pub(crate) fn postgres_target(
    url: &str,
    url_source: (&str, &str),
    origin: &str,
    password_file: Option<PathBuf>,
    env: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
    notes: &mut Vec<String>,
) -> Result<PostgresTarget, ConfigError> {
    let target = PostgresTarget::parse(url)
        .map_err(|reason| ConfigError::invalid(url_source.0, url_source.1, reason))?;
    let configured = secrets::ConfiguredSecret {
        inline: target.url_has_password().then(String::new),
        file: password_file,
    };
    Ok(
        match secrets::database_password(origin, &configured, env, warnings, notes)? {
            Some(password) => target.with_password(password),
            None => target,
        },
    )
}

fn is_postgres_url(text: &str) -> bool {
    text.starts_with("postgresql://") || text.starts_with("postgres://")
}

fn file_location(
    path: PathBuf,
    origin: &str,
    busy_timeout: Duration,
) -> Result<DatabaseSettings, ConfigError> {
    if path.as_os_str().is_empty() {
        return Err(ConfigError::invalid(origin, "database.path", "is empty"));
    }
    Ok(DatabaseSettings {
        location: DatabaseLocation::File(path),
        busy_timeout,
    })
}

fn build_mapping(raw: RawMapping, origin: &str) -> Result<MappingSettings, ConfigError> {
    const DAY: Duration = Duration::from_secs(24 * 3600);
    let api = match raw.api.as_deref() {
        None | Some("v3") => MapApi::V3,
        Some("v2") => MapApi::V2,
        Some(other) => {
            return Err(ConfigError::invalid(
                origin,
                "mapping.api",
                format!("{other:?} is not one of v3, v2"),
            ));
        }
    };
    let batch_size = raw.batch_size.unwrap_or(MAX_BATCH_SIZE);
    let concurrency = raw.concurrency.unwrap_or(4);
    let limits = MapLimits::new(batch_size, concurrency).map_err(|error| {
        let key = match error {
            crate::operator::MapLimitsError::BatchSize(_) => "mapping.batch_size",
            crate::operator::MapLimitsError::Concurrency(_) => "mapping.concurrency",
        };
        ConfigError::invalid(origin, key, error.to_string())
    })?;
    let interval = nonzero(
        duration(
            raw.interval,
            Duration::from_secs(300),
            origin,
            "mapping.interval",
        )?,
        origin,
        "mapping.interval",
    )?;
    if interval > DAY {
        return Err(ConfigError::invalid(
            origin,
            "mapping.interval",
            "is longer than a day; refresh times fall on every UTC midnight",
        ));
    }
    let spread_over = duration(
        raw.spread_over,
        Duration::from_secs(20 * 3600),
        origin,
        "mapping.spread_over",
    )?;
    if spread_over > DAY {
        return Err(ConfigError::invalid(
            origin,
            "mapping.spread_over",
            "is longer than a day: the next day's re-maps would start before these end",
        ));
    }
    let change_retention = nonzero(
        duration(
            raw.change_retention,
            Duration::from_secs(90 * 24 * 3600),
            origin,
            "mapping.change_retention",
        )?,
        origin,
        "mapping.change_retention",
    )?;
    Ok(MappingSettings {
        enabled: raw.enabled.unwrap_or(false),
        api,
        limits,
        interval,
        spread_over,
        change_retention,
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
    fn debug_output_of_the_settings_never_shows_an_inline_secret() {
        let settings = operator_settings(
            "[operator]\napi_key = \"inline-key-5c1d\"\n\
             client_secret = \"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTAwMDA=\"\n",
        )
        .unwrap();
        let debug = format!("{settings:?}");
        assert!(!debug.contains("inline-key-5c1d"), "{debug}");
        assert!(
            !debug.contains("c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTAwMDA="),
            "{debug}"
        );
        assert!(debug.contains("<redacted>"), "{debug}");
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
