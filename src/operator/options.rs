//! What an operator client is built from besides its credentials: where it
//! points, its time limits, the body encoding and how persistently it
//! retries. The configuration file maps onto exactly these types (see
//! [`crate::config::OperatorConnection::client`]), so every default lives
//! here once.

use std::time::Duration;

use reqwest::Url;

use crate::operator::body::BodyEncoding;

/// How persistently to retry transient failures. The defaults are the
/// documented defaults of the `operator.retry` configuration keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included; 1 disables retries.
    pub max_attempts: u32,
    /// Backoff before the first retry; it doubles each time, with jitter.
    pub initial_backoff: Duration,
    /// Cap on the computed backoff (a `Retry-After` may ask for longer).
    pub max_backoff: Duration,
    /// No retry is started that would wait past this much time since the
    /// first attempt began.
    pub max_elapsed: Duration,
}

impl RetryPolicy {
    /// One attempt, no retries.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            max_elapsed: Duration::from_secs(10 * 60),
        }
    }
}

/// Everything about the client except where it points and its credentials.
/// The defaults are the documented defaults of the `operator` keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    pub connect_timeout: Duration,
    /// Whole exchange, body included: a first sync downloads ~91 MiB.
    pub request_timeout: Duration,
    pub encoding: BodyEncoding,
    pub retry: RetryPolicy,
    /// A body larger than this is refused rather than buffered.
    pub max_body_bytes: u64,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(5 * 60),
            encoding: BodyEncoding::Base64,
            retry: RetryPolicy::default(),
            max_body_bytes: 1 << 30,
        }
    }
}

/// Why a client could not be built. Never carries a credential: every
/// `url` is the base URL as [`shown_url`] prints it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientSetupError {
    #[error("operator base URL {url:?} is not a valid URL: {reason}")]
    InvalidBaseUrl { url: String, reason: String },
    #[error(
        "operator base URL {url:?} carries a user name or password; credentials never go in the \
         URL (the API key is sent in the Authorization header): remove the part ending in @"
    )]
    CredentialsInUrl { url: String },
    #[error(
        "operator base URL {url:?} uses plain http to a non-loopback host; use https (plain http \
         is accepted for loopback addresses only)"
    )]
    PlainHttpNotLoopback { url: String },
    #[error("operator base URL {url:?} has an unsupported scheme; use https")]
    UnsupportedScheme { url: String },
    #[error("the API key contains characters that cannot be sent in an HTTP header")]
    ApiKeyNotHeaderSafe,
    #[error("cannot initialise the HTTP client: {0}")]
    Http(String),
}

/// Checks an operator base URL: https, or plain http to a loopback address
/// (local simulators and tests), so credentials and rotations never cross a
/// network in clear; no user name, password, query or fragment.
pub(crate) fn check_base_url(base_url: &str) -> Result<Url, ClientSetupError> {
    let url = shown_url(base_url);
    let invalid = |reason: String| ClientSetupError::InvalidBaseUrl {
        url: url.clone(),
        reason,
    };
    let base = Url::parse(base_url.trim()).map_err(|error| invalid(error.to_string()))?;
    if !base.username().is_empty() || base.password().is_some() {
        return Err(ClientSetupError::CredentialsInUrl { url });
    }
    if base.query().is_some() || base.fragment().is_some() {
        return Err(invalid("a query or fragment is not allowed".to_owned()));
    }
    match base.scheme() {
        "https" => Ok(base),
        "http" if is_loopback(&base) => Ok(base),
        "http" => Err(ClientSetupError::PlainHttpNotLoopback { url }),
        _ => Err(ClientSetupError::UnsupportedScheme { url }),
    }
}

/// A base URL as it may appear in a message: without anything up to an `@`
/// (a user name or password) and without a query or fragment (tokens).
/// Works on text that is not a valid URL too.
pub(crate) fn shown_url(text: &str) -> String {
    let text = text.trim();
    let text = &text[..text.find(['?', '#']).unwrap_or(text.len())];
    let (scheme, rest) = match text.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), text),
    };
    let rest = rest.rsplit_once('@').map_or(rest, |(_, after)| after);
    format!("{scheme}{rest}")
}

fn is_loopback(url: &Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    let unbracketed = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || unbracketed
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_documented_configuration_defaults() {
        let options = ClientOptions::default();
        assert_eq!(options.connect_timeout, Duration::from_secs(10));
        assert_eq!(options.request_timeout, Duration::from_secs(300));
        assert_eq!(options.encoding, BodyEncoding::Base64);
        assert_eq!(
            options.retry,
            RetryPolicy {
                max_attempts: 6,
                initial_backoff: Duration::from_secs(1),
                max_backoff: Duration::from_secs(60),
                max_elapsed: Duration::from_secs(600),
            }
        );
        assert_eq!(RetryPolicy::none().max_attempts, 1);
    }

    #[test]
    fn base_urls_that_would_leak_or_mislead_are_refused() {
        for accepted in [
            "https://prod.uidapi.com",
            "https://proxy.example/uid2/",
            "http://127.0.0.1:8080",
            "http://[::1]:9",
            "http://localhost:9",
        ] {
            assert!(check_base_url(accepted).is_ok(), "{accepted}");
        }
        assert!(matches!(
            check_base_url("http://prod.uidapi.com"),
            Err(ClientSetupError::PlainHttpNotLoopback { .. })
        ));
        assert!(matches!(
            check_base_url("ftp://127.0.0.1"),
            Err(ClientSetupError::UnsupportedScheme { .. })
        ));
        for bad in ["not a url", "https://prod.uidapi.com/?x=1"] {
            assert!(
                matches!(
                    check_base_url(bad),
                    Err(ClientSetupError::InvalidBaseUrl { .. })
                ),
                "{bad}"
            );
        }
        for with_credentials in [
            "https://user:pw@prod.uidapi.com",
            "http://user:pw@127.0.0.1:8080",
            "http://user@localhost",
        ] {
            assert!(
                matches!(
                    check_base_url(with_credentials),
                    Err(ClientSetupError::CredentialsInUrl { .. })
                ),
                "{with_credentials}"
            );
        }
    }

    #[test]
    fn a_url_in_a_message_never_shows_credentials_or_a_query() {
        for (text, shown) in [
            (
                "https://user:pw@prod.uidapi.com/x",
                "https://prod.uidapi.com/x",
            ),
            ("http://us@er:p/w@127.0.0.1", "http://127.0.0.1"),
            ("user:pw@[::1", "[::1"),
            (
                "https://prod.uidapi.com/?token=abc#frag",
                "https://prod.uidapi.com/",
            ),
            (" https://prod.uidapi.com ", "https://prod.uidapi.com"),
        ] {
            assert_eq!(shown_url(text), shown, "{text}");
        }
    }
}
