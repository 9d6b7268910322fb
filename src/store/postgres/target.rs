//! Which PostgreSQL database to use and how to reach it: the URL, the
//! password (never shown), TLS.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use postgres::config::Host;
use secrecy::{ExposeSecret, SecretString};

use crate::store::StoreError;

/// How long a connection attempt may take when the URL does not say
/// (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A PostgreSQL database: a `postgresql://` URL and, from wherever the
/// configuration found it, the password. Shown (`Display`, `Debug`) as the
/// URL without its password.
#[derive(Clone)]
pub struct PostgresTarget {
    /// The URL's settings, its password included.
    config: postgres::Config,
    /// A password found elsewhere, which wins over the URL's.
    password: Option<SecretString>,
    shown: String,
}

impl PostgresTarget {
    /// Parses a `postgresql://` (or `postgres://`) URL. A password in it is
    /// kept like any other; the refusal never repeats the URL.
    pub fn parse(url: &str) -> Result<Self, String> {
        if !(url.starts_with("postgresql://") || url.starts_with("postgres://")) {
            return Err("must be a postgresql:// URL".to_owned());
        }
        let mut config = postgres::Config::from_str(url)
            .map_err(|error| format!("is not a valid PostgreSQL URL ({error})"))?;
        if config.get_hosts().is_empty() {
            return Err("names no host".to_owned());
        }
        if config.get_dbname().is_none() {
            return Err("names no database (postgresql://user@host/DATABASE)".to_owned());
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("uid2-bucket-sync");
        }
        let shown = show(&config);
        Ok(Self {
            config,
            password: None,
            shown,
        })
    }

    /// Whether the URL itself carries a password.
    pub fn url_has_password(&self) -> bool {
        self.config.get_password().is_some()
    }

    /// Uses `password` instead of the URL's.
    pub fn with_password(mut self, password: SecretString) -> Self {
        self.password = Some(password);
        self
    }

    /// The database name.
    pub fn database(&self) -> &str {
        self.config.get_dbname().unwrap_or_default()
    }

    /// Opens a connection: TLS as `sslmode` says (`prefer` by default,
    /// certificates checked against the system's roots), the password if
    /// one was found.
    pub(crate) fn connect(&self) -> Result<postgres::Client, StoreError> {
        let mut config = self.config.clone();
        if let Some(password) = &self.password {
            config.password(password.expose_secret());
        }
        config
            .connect(tls()?)
            .map_err(|source| StoreError::Connect {
                target: self.shown.clone(),
                source: super::PostgresError(source),
            })
    }
}

impl PostgresTarget {
    /// Connects and disconnects, changing nothing: whether the server
    /// accepts this role, password and TLS setting.
    pub fn probe(&self) -> Result<(), StoreError> {
        self.connect()?
            .simple_query("SELECT 1")
            .map(drop)
            .map_err(|source| StoreError::Connect {
                target: self.shown.clone(),
                source: super::PostgresError(source),
            })
    }
}

/// The URL without its password (or any query parameter).
fn show(config: &postgres::Config) -> String {
    let user = config
        .get_user()
        .map(|user| format!("{user}@"))
        .unwrap_or_default();
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(index, host)| {
            let name = match host {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            };
            match ports.get(index).or(ports.first()) {
                Some(port) => format!("{name}:{port}"),
                None => name,
            }
        })
        .collect();
    format!(
        "postgresql://{user}{}/{}",
        hosts.join(","),
        config.get_dbname().unwrap_or_default()
    )
}

fn tls() -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_platform_verifier())
        .map_err(|error| StoreError::Tls(error.to_string()))?
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

impl std::fmt::Display for PostgresTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::fmt::Debug for PostgresTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresTarget")
            .field("url", &self.shown)
            .field(
                "password",
                &(self.password.is_some() || self.url_has_password()).then_some("<redacted>"),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_of_a_url_is_kept_but_never_shown() {
        let target =
            PostgresTarget::parse("postgresql://sync:hunter2secret@db.internal:5433/uid2").unwrap();
        assert!(target.url_has_password());
        assert_eq!(
            target.to_string(),
            "postgresql://sync@db.internal:5433/uid2"
        );
        let debug = format!("{target:?}");
        assert!(!debug.contains("hunter2secret"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
    }

    #[test]
    fn a_url_without_a_database_or_of_another_scheme_is_refused() {
        assert_eq!(
            PostgresTarget::parse("postgresql://sync@db.internal").unwrap_err(),
            "names no database (postgresql://user@host/DATABASE)"
        );
        assert_eq!(
            PostgresTarget::parse("mysql://sync:pw@db/x").unwrap_err(),
            "must be a postgresql:// URL"
        );
        let refusal = PostgresTarget::parse("postgresql://sync:pw@db/x?sslmode=maybe").unwrap_err();
        assert!(
            refusal.starts_with("is not a valid PostgreSQL URL"),
            "{refusal}"
        );
        assert!(!refusal.contains("pw"), "{refusal}");
    }
}
