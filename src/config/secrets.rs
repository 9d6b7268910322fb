//! The operator credentials: where each may come from, which source wins,
//! and refusals that name the source, never the value.

use std::path::{Path, PathBuf};

use crate::credentials::{ApiKey, ClientSecret, CredentialOrigins, CredentialSource};

use super::{ConfigError, OperatorConnection, Settings};

// `credential_name`: the systemd credential (`LoadCredential=`) looked up
// in `$CREDENTIALS_DIRECTORY` when nothing else provides the value.
const API_KEY: SecretSpec = SecretSpec {
    what: "API key",
    key: "operator.api_key",
    env_name: "UID2_API_KEY",
    credential_name: "api_key",
};
const CLIENT_SECRET: SecretSpec = SecretSpec {
    what: "client secret",
    key: "operator.client_secret",
    env_name: "UID2_CLIENT_SECRET",
    credential_name: "client_secret",
};

// The URL's own password counts as the inline value of `database.password`.
const DATABASE_PASSWORD: SecretSpec = SecretSpec {
    what: "database password",
    key: "database.password",
    env_name: "PGPASSWORD",
    credential_name: "db_password",
};

/// What the configuration file says about the two credentials.
#[derive(Debug, Clone, Default)]
pub(super) struct CredentialSources {
    pub(super) api_key: ConfiguredSecret,
    pub(super) client_secret: ConfiguredSecret,
}

/// One credential as the file gives it: the value itself (`api_key`), or
/// the path of a file holding it (`api_key_file`).
#[derive(Clone, Default)]
pub(super) struct ConfiguredSecret {
    pub(super) inline: Option<String>,
    pub(super) file: Option<PathBuf>,
}

/// Shows whether a value is set, never the value.
impl std::fmt::Debug for ConfiguredSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfiguredSecret")
            .field("inline", &self.inline.as_ref().map(|_| "<redacted>"))
            .field("file", &self.file)
            .finish()
    }
}

impl Settings {
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
        let mut findings = Findings::default();
        let api_key_text = resolve_secret(
            &API_KEY,
            &op.origin,
            &op.credentials.api_key,
            env,
            &mut findings,
        )?;
        let api_key =
            ApiKey::new(&api_key_text.text).map_err(|e| api_key_text.invalid(e.to_string()))?;
        let secret_text = resolve_secret(
            &CLIENT_SECRET,
            &op.origin,
            &op.credentials.client_secret,
            env,
            &mut findings,
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
                credential_notes: findings.notes,
            },
            findings.warnings,
        ))
    }
}

/// One credential and the names it goes by.
struct SecretSpec {
    what: &'static str,
    key: &'static str,
    env_name: &'static str,
    credential_name: &'static str,
}

/// What resolving the credentials has to tell besides the values: how
/// secrets are stored (`warnings`), and which source won (`notes`).
#[derive(Default)]
struct Findings {
    warnings: Vec<String>,
    notes: Vec<String>,
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

/// [`find_secret`] of a credential that must be set.
fn resolve_secret(
    spec: &SecretSpec,
    origin: &str,
    configured: &ConfiguredSecret,
    env: &dyn Fn(&str) -> Option<String>,
    findings: &mut Findings,
) -> Result<ResolvedSecret, ConfigError> {
    find_secret(spec, origin, configured, env, findings)?.ok_or_else(|| {
        let SecretSpec {
            key,
            env_name,
            credential_name,
            ..
        } = spec;
        ConfigError::invalid(
            origin,
            key,
            format!(
                "not set: set {key}_file (or {key}), the environment variable {env_name}, \
                 or a systemd credential named {credential_name}"
            ),
        )
    })
}

/// The database password: PostgreSQL may need none (peer, certificate or
/// trust authentication), else as [`find_secret`] finds it, where the URL's
/// own password is the configuration's inline value (its text is not
/// needed: `None` then says "keep the URL's"). Findings go to `warnings`
/// and `notes`.
pub(super) fn database_password(
    origin: &str,
    configured: &ConfiguredSecret,
    env: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
    notes: &mut Vec<String>,
) -> Result<Option<secrecy::SecretString>, ConfigError> {
    let mut findings = Findings::default();
    let found = find_secret(&DATABASE_PASSWORD, origin, configured, env, &mut findings)?;
    warnings.append(&mut findings.warnings);
    notes.append(&mut findings.notes);
    Ok(found.and_then(|secret| match secret.source {
        // The URL keeps its own password.
        CredentialSource::ConfigValue { .. } => None,
        CredentialSource::Environment(_) => Some(secrecy::SecretString::from(secret.text)),
        // A password file's trailing newline is not part of the password.
        CredentialSource::ConfigFile { .. } | CredentialSource::SystemdCredential { .. } => Some(
            secrecy::SecretString::from(secret.text.trim_end_matches(['\n', '\r']).to_owned()),
        ),
    }))
}

/// Precedence: environment variable, then the configuration (inline value
/// or `*_file`), then the systemd credential of the conventional name.
/// When several are present, says in the notes which one won. `None` when
/// none is present.
fn find_secret(
    spec: &SecretSpec,
    origin: &str,
    configured: &ConfiguredSecret,
    env: &dyn Fn(&str) -> Option<String>,
    findings: &mut Findings,
) -> Result<Option<ResolvedSecret>, ConfigError> {
    let &SecretSpec {
        what,
        key,
        env_name,
        credential_name,
    } = spec;
    let inline = configured.inline.as_deref();
    let file = configured.file.as_deref();
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
        return Ok(None);
    };
    let ignored: Vec<String> = present.map(|source| source.to_string()).collect();
    if !ignored.is_empty() {
        findings.notes.push(format!(
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
            warn_if_world_readable(path, "this file holds a secret and", &mut findings.warnings);
            text
        }
    };
    Ok(Some(ResolvedSecret { text, source }))
}

pub(super) fn warn_if_world_readable(path: &Path, what: &str, warnings: &mut Vec<String>) {
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
