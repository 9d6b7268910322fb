//! The configuration file as written: every key optional, unknown keys
//! refused. Values are checked and defaults applied when the settings are
//! built from it. No `Debug`: `[operator]` may hold a secret inline.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    #[serde(default)]
    pub(super) operator: RawOperator,
    #[serde(default)]
    pub(super) sync: RawSync,
    #[serde(default)]
    pub(super) database: RawDatabase,
    #[serde(default)]
    pub(super) queue: RawQueue,
    #[serde(default)]
    pub(super) mapping: RawMapping,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) metrics: RawMetrics,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOperator {
    pub(super) environment: Option<String>,
    pub(super) base_url: Option<String>,
    pub(super) api_key: Option<String>,
    pub(super) api_key_file: Option<PathBuf>,
    pub(super) client_secret: Option<String>,
    pub(super) client_secret_file: Option<PathBuf>,
    pub(super) connect_timeout: Option<String>,
    pub(super) request_timeout: Option<String>,
    pub(super) binary_body: Option<bool>,
    #[serde(default)]
    pub(super) retry: RawRetry,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetry {
    pub(super) max_attempts: Option<u32>,
    pub(super) initial_backoff: Option<String>,
    pub(super) max_backoff: Option<String>,
    pub(super) max_elapsed: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSync {
    pub(super) schedule: Option<String>,
    pub(super) interval: Option<String>,
    pub(super) initial_since: Option<String>,
    pub(super) overlap: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDatabase {
    pub(super) path: Option<PathBuf>,
    pub(super) url: Option<String>,
    pub(super) password_file: Option<PathBuf>,
    pub(super) busy_timeout: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawQueue {
    pub(super) max_attempts: Option<u32>,
    pub(super) done_retention: Option<String>,
    pub(super) retry_backoff: Option<String>,
    pub(super) max_retry_backoff: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMapping {
    pub(super) enabled: Option<bool>,
    pub(super) api: Option<String>,
    pub(super) batch_size: Option<usize>,
    pub(super) concurrency: Option<usize>,
    pub(super) interval: Option<String>,
    pub(super) spread_over: Option<String>,
    pub(super) change_retention: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) format: Option<String>,
    pub(super) level: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub(super) listen: Option<String>,
}

pub(super) fn parse_file(path: &Path, text: &str) -> Result<RawFile, ConfigError> {
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
