//! The two credentials the operator issues: an API key (bearer token) and a
//! client secret (the AES-256 key of the v2 envelope).
//!
//! Both live in `secrecy` boxes so they are zeroed on drop and print as
//! `[REDACTED]` in `Debug`. Nothing in this module ever puts the secret's
//! text into an error message. [`CredentialSource`] records where each one
//! was read from, so logs and hints can name the place, never the value.

use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretBox, SecretString};

/// Length in bytes of a decoded client secret (AES-256 key).
pub(crate) const CLIENT_SECRET_LEN: usize = 32;

/// Why a client secret was refused. Never carries the secret itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("client secret is not valid base64")]
    SecretNotBase64,
    #[error("client secret decodes to {0} bytes; it must be {CLIENT_SECRET_LEN} bytes of base64")]
    SecretWrongLength(usize),
    #[error("API key is empty")]
    EmptyApiKey,
}

/// The bearer token sent as `Authorization: Bearer …`.
#[derive(Clone)]
pub struct ApiKey(SecretString);

impl ApiKey {
    pub fn new(text: &str) -> Result<Self, CredentialError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(CredentialError::EmptyApiKey);
        }
        Ok(Self(SecretString::from(trimmed.to_owned())))
    }

    /// The header value; the only place the key's text leaves this type.
    pub fn bearer_header(&self) -> String {
        format!("Bearer {}", self.0.expose_secret())
    }

    /// Constant-time comparison, used by the simulated operator.
    pub(crate) fn matches(&self, presented: &str) -> bool {
        let expected = self.0.expose_secret().as_bytes();
        let presented = presented.as_bytes();
        expected.len() == presented.len()
            && expected
                .iter()
                .zip(presented)
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey([REDACTED])")
    }
}

/// The 32-byte AES-256-GCM key, given by the operator as base64.
pub struct ClientSecret(SecretBox<[u8; CLIENT_SECRET_LEN]>);

impl ClientSecret {
    /// Decodes the base64 text the operator's portal shows.
    pub fn from_base64(text: &str) -> Result<Self, CredentialError> {
        let decoded = zeroizing_decode(text.trim())?;
        let key: [u8; CLIENT_SECRET_LEN] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| CredentialError::SecretWrongLength(decoded.len()))?;
        Ok(Self(SecretBox::new(Box::new(key))))
    }

    pub fn from_bytes(key: [u8; CLIENT_SECRET_LEN]) -> Self {
        Self(SecretBox::new(Box::new(key)))
    }

    pub(crate) fn key_bytes(&self) -> &[u8; CLIENT_SECRET_LEN] {
        self.0.expose_secret()
    }
}

impl Clone for ClientSecret {
    fn clone(&self) -> Self {
        Self::from_bytes(*self.key_bytes())
    }
}

impl std::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientSecret([REDACTED])")
    }
}

/// Where a credential was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// An environment variable such as `UID2_API_KEY`.
    Environment(&'static str),
    /// A value written in the configuration file, e.g. `operator.api_key`.
    ConfigValue { file: String, key: String },
    /// A file named in the configuration, e.g. by `operator.api_key_file`.
    ConfigFile {
        file: String,
        key: String,
        path: PathBuf,
    },
    /// A systemd credential (`LoadCredential=`) in `$CREDENTIALS_DIRECTORY`.
    SystemdCredential { name: &'static str, path: PathBuf },
}

impl std::fmt::Display for CredentialSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CredentialSource::Environment(name) => write!(f, "the environment variable {name}"),
            CredentialSource::ConfigValue { file, key } => write!(f, "{key} in {file}"),
            CredentialSource::ConfigFile { file, key, path } => {
                write!(f, "the file {} ({key} in {file})", path.display())
            }
            CredentialSource::SystemdCredential { name, path } => {
                write!(f, "the systemd credential {name} ({})", path.display())
            }
        }
    }
}

/// Where the API key and the client secret in use came from; unknown for
/// credentials handed over in code (tests, `demo`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredentialOrigins {
    pub api_key: Option<CredentialSource>,
    pub client_secret: Option<CredentialSource>,
}

impl CredentialOrigins {
    /// "the API key (from …)", for hints.
    pub(crate) fn api_key_phrase(&self) -> String {
        phrase("the API key", self.api_key.as_ref())
    }

    /// "the client_secret (from …)", for hints.
    pub(crate) fn client_secret_phrase(&self) -> String {
        phrase("the client_secret", self.client_secret.as_ref())
    }
}

fn phrase(what: &str, source: Option<&CredentialSource>) -> String {
    match source {
        Some(source) => format!("{what} (from {source})"),
        None => what.to_owned(),
    }
}

fn zeroizing_decode(text: &str) -> Result<secrecy::zeroize::Zeroizing<Vec<u8>>, CredentialError> {
    STANDARD
        .decode(text)
        .map(secrecy::zeroize::Zeroizing::new)
        .map_err(|_| CredentialError::SecretNotBase64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "ioG3wKxAokmp+rERx6A4kM/13qhyolUXIu14WN16Spo=";

    #[test]
    fn a_secret_must_be_32_bytes_of_base64() {
        assert!(ClientSecret::from_base64(SECRET).is_ok());
        assert_eq!(
            ClientSecret::from_base64("not base64!").unwrap_err(),
            CredentialError::SecretNotBase64
        );
        assert_eq!(
            ClientSecret::from_base64("AAAA").unwrap_err(),
            CredentialError::SecretWrongLength(3)
        );
    }

    #[test]
    fn debug_output_never_shows_credentials() {
        let secret = ClientSecret::from_base64(SECRET).unwrap();
        let key = ApiKey::new("my-api-key-value").unwrap();
        let shown = format!("{secret:?} {key:?}");
        assert!(!shown.contains("ioG3"));
        assert!(!shown.contains("my-api-key-value"));
        assert!(shown.contains("REDACTED"));
    }

    #[test]
    fn hints_name_where_a_credential_came_from() {
        let origins = CredentialOrigins {
            api_key: Some(CredentialSource::Environment("UID2_API_KEY")),
            client_secret: Some(CredentialSource::SystemdCredential {
                name: "client_secret",
                path: "/run/credentials/x.service/client_secret".into(),
            }),
        };
        assert_eq!(
            origins.api_key_phrase(),
            "the API key (from the environment variable UID2_API_KEY)"
        );
        assert_eq!(
            origins.client_secret_phrase(),
            "the client_secret (from the systemd credential client_secret \
             (/run/credentials/x.service/client_secret))"
        );
        assert_eq!(CredentialOrigins::default().api_key_phrase(), "the API key");
    }

    #[test]
    fn api_key_comparison_is_exact() {
        let key = ApiKey::new("abc").unwrap();
        assert!(key.matches("abc"));
        assert!(!key.matches("abd"));
        assert!(!key.matches("abcd"));
        assert_eq!(ApiKey::new("  ").unwrap_err(), CredentialError::EmptyApiKey);
    }
}
