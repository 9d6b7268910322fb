//! Configuration: what is accepted, what is refused, and how each refusal
//! names the file, the key and the reason.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use uid2_bucket_sync::config::{
    ConfigError, CronSchedule, LoadOptions, LogFormat, Schedule, Settings,
};
use uid2_bucket_sync::credentials::CredentialSource;

const SECRET: &str = "ioG3wKxAokmp+rERx6A4kM/13qhyolUXIu14WN16Spo=";

struct Fixture {
    dir: tempfile::TempDir,
    env: HashMap<String, String>,
}

impl Fixture {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            env: HashMap::new(),
        }
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    fn set_env(&mut self, name: &str, value: &str) {
        self.env.insert(name.to_owned(), value.to_owned());
    }

    fn load(&self, config: &Path) -> Result<Settings, ConfigError> {
        let options = LoadOptions {
            config: Some(config.to_path_buf()),
            db: None,
        };
        Settings::load_with_env(&options, &|name| self.env.get(name).cloned())
    }

    fn load_text(&self, text: &str) -> Result<Settings, ConfigError> {
        self.load(&self.file("config.toml", text))
    }

    fn connection_error(&self, text: &str) -> String {
        let settings = self.load_text(text).expect("file itself is valid");
        settings
            .operator_connection_with_env(&|name| self.env.get(name).cloned())
            .expect_err("connection should be refused")
            .to_string()
    }
}

fn error_text(result: Result<Settings, ConfigError>) -> String {
    result.expect_err("should be refused").to_string()
}

#[test]
fn the_shipped_example_is_valid_and_complete() {
    let fixture = Fixture::new();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
    let settings = fixture.load(&example).expect("config.example.toml loads");
    assert_eq!(
        settings.operator.base_url.as_deref(),
        Some("https://prod.uidapi.com")
    );
    assert_eq!(
        settings.sync.schedule,
        Schedule::Cron(CronSchedule::parse("0 5 * * * *").unwrap())
    );
    assert_eq!(settings.queue.max_attempts, 5);
    assert_eq!(
        settings.queue.done_retention,
        Duration::from_secs(7 * 86400)
    );
    assert_eq!(settings.database.busy_timeout, Duration::from_secs(30));
    assert_eq!(settings.log.format, LogFormat::Text);
    let mapping = &settings.mapping;
    assert!(!mapping.enabled);
    assert_eq!(mapping.api, uid2_bucket_sync::store::MapApi::V3);
    assert_eq!(
        mapping.limits,
        uid2_bucket_sync::operator::MapLimits::new(5000, 4).unwrap()
    );
    assert_eq!(mapping.interval, Duration::from_secs(300));
    assert_eq!(mapping.spread_over, Duration::from_secs(20 * 3600));
    assert_eq!(mapping.change_retention, Duration::from_secs(90 * 86400));
}

/// Both units (`uid2-bucket-sync.service` and `uid2-bucket-sync-poll.service`)
/// hand over `api_key` and `client_secret` with `LoadCredential=`, each in its
/// own `/run/credentials/UNIT/`: the example must find them through
/// `$CREDENTIALS_DIRECTORY`, not a path naming one unit.
#[test]
fn the_shipped_example_reads_its_secrets_from_whichever_unit_runs_it() {
    let mut fixture = Fixture::new();
    let credentials = fixture.dir.path().join("uid2-bucket-sync-poll.service");
    std::fs::create_dir(&credentials).unwrap();
    std::fs::write(credentials.join("api_key"), "key-from-systemd\n").unwrap();
    std::fs::write(credentials.join("client_secret"), format!("{SECRET}\n")).unwrap();
    fixture.set_env("CREDENTIALS_DIRECTORY", credentials.to_str().unwrap());
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
    let settings = fixture.load(&example).unwrap();
    let (connection, _) = settings
        .operator_connection_with_env(&|name| fixture.env.get(name).cloned())
        .expect("the example finds both credentials");
    assert_eq!(
        connection.api_key.bearer_header(),
        "Bearer key-from-systemd"
    );
    assert!(
        matches!(
            connection.credentials.client_secret,
            Some(CredentialSource::SystemdCredential { .. })
        ),
        "{:?}",
        connection.credentials
    );
}

#[test]
fn the_interface_minimal_config_loads_with_inline_credentials() {
    let fixture = Fixture::new();
    let settings = fixture
        .load_text(&format!(
            r#"
[operator]
environment = "euid-integ"
api_key = "key-123"
client_secret = "{SECRET}"
[sync]
interval = "15m"
initial_since = "2025-01-01T00:00:00"
[database]
path = "/tmp/x.db"
"#
        ))
        .unwrap();
    assert_eq!(
        settings.operator.base_url.as_deref(),
        Some("https://integ.euid.eu")
    );
    assert_eq!(
        settings.sync.schedule,
        Schedule::Interval(Duration::from_secs(900))
    );
    assert_eq!(settings.database.file(), Some(Path::new("/tmp/x.db")));
    let connection = settings.operator_connection_with_env(&|_| None).unwrap().0;
    assert_eq!(connection.api_key.bearer_header(), "Bearer key-123");
}

#[test]
fn an_unknown_key_is_refused_with_file_line_and_key() {
    let fixture = Fixture::new();
    let message =
        error_text(fixture.load_text("[operator]\nenvironment = \"uid2-prod\"\napi_kye = \"x\"\n"));
    assert!(message.contains("config.toml:3"), "{message}");
    assert!(message.contains("operator"), "{message}");
    assert!(message.contains("unknown field `api_kye`"), "{message}");
}

#[test]
fn a_wrong_type_is_refused_with_the_key() {
    let fixture = Fixture::new();
    let message = error_text(fixture.load_text("[queue]\nmax_attempts = \"five\"\n"));
    assert!(message.contains("queue.max_attempts"), "{message}");
    assert!(message.contains("config.toml:2"), "{message}");
}

#[test]
fn a_bad_duration_is_refused() {
    let fixture = Fixture::new();
    let message = error_text(fixture.load_text("[sync]\ninterval = \"an hour\"\n"));
    assert!(message.contains("sync.interval"), "{message}");
    assert!(message.contains("not a duration"), "{message}");
}

#[test]
fn an_interval_that_is_not_whole_seconds_is_refused() {
    let fixture = Fixture::new();
    for interval in ["0s", "500ms", "1500ms"] {
        let text = format!("[sync]\ninterval = \"{interval}\"\n");
        let message = error_text(fixture.load_text(&text));
        assert!(
            message.contains("sync.interval: ")
                && message.contains("is not a whole number of seconds of at least 1s"),
            "{interval}: {message}"
        );
    }
    assert!(fixture.load_text("[sync]\ninterval = \"90s\"\n").is_ok());
}

#[test]
fn an_interval_longer_than_366_days_is_refused_not_a_crash() {
    let fixture = Fixture::new();
    for interval in ["600000000y", "367d"] {
        let text = format!("[sync]\ninterval = \"{interval}\"\n");
        let message = error_text(fixture.load_text(&text));
        assert!(
            message.contains("sync.interval: ") && message.contains("longest interval, 366 days"),
            "{interval}: {message}"
        );
    }
    let settings = fixture.load_text("[sync]\ninterval = \"366d\"\n").unwrap();
    assert_eq!(
        settings.sync.schedule,
        Schedule::Interval(Duration::from_secs(366 * 86400))
    );
}

#[test]
fn a_cron_schedule_that_never_fires_is_refused() {
    let fixture = Fixture::new();
    let message = error_text(fixture.load_text("[sync]\nschedule = \"0 0 0 30 2 *\"\n"));
    assert!(message.contains("sync.schedule: "), "{message}");
    assert!(
        message.contains("\"0 0 0 30 2 *\" never fires"),
        "{message}"
    );
    // Rare is fine: once a year, on the 29th of February.
    assert!(
        fixture
            .load_text("[sync]\nschedule = \"0 0 0 29 2 *\"\n")
            .is_ok()
    );
}

#[test]
fn an_initial_since_in_the_future_is_refused() {
    let fixture = Fixture::new();
    let message =
        error_text(fixture.load_text("[sync]\ninitial_since = \"2999-01-01T00:00:00\"\n"));
    assert!(
        message.contains("config.toml: sync.initial_since: "),
        "{message}"
    );
    assert!(message.contains("is in the future"), "{message}");
    assert!(
        fixture
            .load_text("[sync]\ninitial_since = \"2025-01-01T00:00:00\"\n")
            .is_ok()
    );
}

#[test]
fn a_timestamp_with_a_zone_is_refused() {
    let fixture = Fixture::new();
    let message =
        error_text(fixture.load_text("[sync]\ninitial_since = \"2025-01-01T00:00:00Z\"\n"));
    assert!(message.contains("sync.initial_since"), "{message}");
    assert!(message.contains("no zone"), "{message}");
}

#[test]
fn a_bad_cron_expression_is_refused() {
    let fixture = Fixture::new();
    let message = error_text(fixture.load_text("[sync]\nschedule = \"5 * * * *\"\n"));
    assert!(message.contains("sync.schedule"), "{message}");
    assert!(message.contains("six fields"), "{message}");
}

#[test]
fn schedule_and_interval_together_are_refused() {
    let fixture = Fixture::new();
    let message =
        error_text(fixture.load_text("[sync]\nschedule = \"0 5 * * * *\"\ninterval = \"1h\"\n"));
    assert!(message.contains("not both"), "{message}");
}

#[test]
fn an_unknown_environment_is_refused_with_the_choices() {
    let fixture = Fixture::new();
    let message = error_text(fixture.load_text("[operator]\nenvironment = \"uid2-mars\"\n"));
    assert!(message.contains("operator.environment"), "{message}");
    assert!(message.contains("uid2-integ"), "{message}");
}

#[test]
fn plain_http_is_refused_except_to_loopback() {
    let fixture = Fixture::new();
    let message =
        error_text(fixture.load_text("[operator]\nbase_url = \"http://operator.example.com\"\n"));
    assert!(message.contains("operator.base_url"), "{message}");
    assert!(message.contains("non-loopback"), "{message}");
    for url in [
        "http://127.0.0.1:8080",
        "http://localhost:1",
        "http://[::1]:9",
    ] {
        let settings = fixture
            .load_text(&format!("[operator]\nbase_url = \"{url}\"\n"))
            .unwrap();
        assert_eq!(settings.operator.base_url.as_deref(), Some(url));
    }
    let message = error_text(fixture.load_text("[operator]\nbase_url = \"ftp://x\"\n"));
    assert!(message.contains("unsupported scheme"), "{message}");
}

#[test]
fn a_base_url_carrying_credentials_is_refused_without_echoing_them() {
    let mut fixture = Fixture::new();
    for url in [
        "http://alice:hunter2@127.0.0.1:8080",
        "https://alice:hunter2@prod.uidapi.com",
        "http://alice@localhost:1",
    ] {
        let message = error_text(fixture.load_text(&format!("[operator]\nbase_url = \"{url}\"\n")));
        assert!(
            message.contains("config.toml: operator.base_url: "),
            "{message}"
        );
        assert!(
            message.contains("carries a user name or password"),
            "{message}"
        );
        assert!(!message.contains("alice"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
        assert!(!message.contains("non-loopback"), "{message}");
    }

    // Nor when the URL does not even parse, nor from the environment.
    fixture.set_env("UID2_BUCKET_SYNC_BASE_URL", "http://alice:hunter2@[::1");
    let message = error_text(fixture.load_text("[sync]\ninterval = \"1h\"\n"));
    assert!(
        message.starts_with("UID2_BUCKET_SYNC_BASE_URL: "),
        "{message}"
    );
    assert!(
        !message.contains("alice") && !message.contains("hunter2"),
        "{message}"
    );
}

#[test]
fn a_base_url_with_a_query_is_refused_without_echoing_it() {
    let fixture = Fixture::new();
    let message = error_text(
        fixture.load_text("[operator]\nbase_url = \"https://prod.uidapi.com/?token=abc\"\n"),
    );
    assert!(message.contains("operator.base_url: "), "{message}");
    assert!(
        message.contains("a query or fragment is not allowed"),
        "{message}"
    );
    assert!(!message.contains("token"), "{message}");
}

#[test]
fn a_secret_that_is_not_32_bytes_is_refused_without_showing_it() {
    let fixture = Fixture::new();
    let short = "c2hvcnQtc2VjcmV0LXZhbHVl";
    let message = error_text(fixture.load_text(&format!(
        "[operator]\nenvironment = \"uid2-integ\"\nclient_secret = \"{short}\"\n"
    )));
    assert!(message.contains("config.toml"), "{message}");
    assert!(message.contains("operator.client_secret"), "{message}");
    assert!(message.contains("must be 32 bytes"), "{message}");
    assert!(!message.contains(short), "{message}");
}

#[test]
fn a_secret_given_twice_is_refused() {
    let fixture = Fixture::new();
    let message =
        error_text(fixture.load_text(
            "[operator]\napi_key = \"a\"\napi_key_file = \"/run/credentials/x/api_key\"\n",
        ));
    assert!(message.contains("operator.api_key_file"), "{message}");
    assert!(message.contains("not both"), "{message}");
}

#[test]
fn a_missing_secret_says_every_way_to_provide_it() {
    let fixture = Fixture::new();
    let message = fixture.connection_error("[operator]\nenvironment = \"uid2-integ\"\n");
    assert!(message.contains("operator.api_key"), "{message}");
    assert!(message.contains("UID2_API_KEY"), "{message}");
    assert!(message.contains("systemd credential"), "{message}");
}

#[test]
fn an_unreadable_secret_file_is_named() {
    let fixture = Fixture::new();
    let message = fixture.connection_error(
        "[operator]\nenvironment = \"uid2-integ\"\napi_key_file = \"/nonexistent/api_key\"\n",
    );
    assert!(message.contains("operator.api_key_file"), "{message}");
    assert!(message.contains("/nonexistent/api_key"), "{message}");
}

#[test]
fn a_secret_file_with_a_bad_secret_is_named_without_its_content() {
    let fixture = Fixture::new();
    let secret_file = fixture.file("client_secret", "dG9vLXNob3J0\n");
    fixture.file("api_key", "key\n");
    let message = fixture.connection_error(&format!(
        "[operator]\nenvironment = \"uid2-integ\"\napi_key = \"k\"\nclient_secret_file = \"{}\"\n",
        secret_file.display()
    ));
    assert!(message.contains("operator.client_secret_file"), "{message}");
    assert!(message.contains("must be 32 bytes"), "{message}");
    assert!(!message.contains("dG9vLXNob3J0"), "{message}");
}

#[test]
fn no_endpoint_is_refused_when_connecting() {
    let mut fixture = Fixture::new();
    fixture.set_env("UID2_API_KEY", "k");
    fixture.set_env("UID2_CLIENT_SECRET", SECRET);
    let message = fixture.connection_error("[sync]\ninterval = \"1h\"\n");
    assert!(message.contains("operator.environment"), "{message}");
}

#[test]
fn the_environment_overrides_the_file_and_systemd_credentials_fill_in() {
    let mut fixture = Fixture::new();
    let credentials = fixture.dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    std::fs::write(credentials.join("client_secret"), format!("{SECRET}\n")).unwrap();
    std::fs::write(credentials.join("api_key"), "from-systemd\n").unwrap();
    fixture.set_env("CREDENTIALS_DIRECTORY", credentials.to_str().unwrap());
    fixture.set_env("UID2_API_KEY", "from-env");
    fixture.set_env("UID2_BUCKET_SYNC_BASE_URL", "http://127.0.0.1:9999");
    let settings = fixture
        .load_text("[operator]\nenvironment = \"uid2-prod\"\napi_key = \"from-file\"\n")
        .unwrap();
    assert_eq!(
        settings.operator.base_url.as_deref(),
        Some("http://127.0.0.1:9999")
    );
    let (connection, _) = settings
        .operator_connection_with_env(&|name| fixture.env.get(name).cloned())
        .unwrap();
    assert_eq!(connection.api_key.bearer_header(), "Bearer from-env");

    fixture.env.remove("UID2_API_KEY");
    let settings = fixture
        .load_text("[operator]\nenvironment = \"uid2-prod\"\n")
        .unwrap();
    let (connection, _) = settings
        .operator_connection_with_env(&|name| fixture.env.get(name).cloned())
        .unwrap();
    assert_eq!(connection.api_key.bearer_header(), "Bearer from-systemd");
}

#[test]
fn the_credential_in_use_and_the_ones_ignored_are_named_never_their_values() {
    let mut fixture = Fixture::new();
    let credentials = fixture.dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    std::fs::write(credentials.join("api_key"), "key-from-systemd\n").unwrap();
    std::fs::write(credentials.join("client_secret"), format!("{SECRET}\n")).unwrap();
    fixture.set_env("CREDENTIALS_DIRECTORY", credentials.to_str().unwrap());
    fixture.set_env("UID2_API_KEY", "key-from-env");
    let settings = fixture
        .load_text("[operator]\nenvironment = \"uid2-prod\"\napi_key = \"key-from-file\"\n")
        .unwrap();
    let (connection, _) = settings
        .operator_connection_with_env(&|name| fixture.env.get(name).cloned())
        .unwrap();
    assert_eq!(
        connection.credentials.api_key,
        Some(CredentialSource::Environment("UID2_API_KEY"))
    );
    assert_eq!(
        connection.credentials.client_secret,
        Some(CredentialSource::SystemdCredential {
            name: "client_secret",
            path: credentials.join("client_secret"),
        })
    );
    let config = fixture.dir.path().join("config.toml");
    assert_eq!(
        connection.credential_notes,
        vec![format!(
            "API key: using the environment variable UID2_API_KEY; ignoring operator.api_key in \
             {}, the systemd credential api_key ({})",
            config.display(),
            credentials.join("api_key").display()
        )],
        "one note, for the API key only: the secret has one source"
    );
    let shown = format!("{:?}", connection.credential_notes);
    for value in ["key-from-env", "key-from-file", "key-from-systemd", SECRET] {
        assert!(!shown.contains(value), "{shown}");
    }
}

#[test]
fn a_world_readable_secret_file_is_warned_about() {
    let fixture = Fixture::new();
    let api_key = fixture.file("api_key", "key\n");
    std::fs::set_permissions(&api_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let settings = fixture
        .load_text(&format!(
            "[operator]\nenvironment = \"uid2-integ\"\napi_key_file = \"{}\"\nclient_secret = \"{SECRET}\"\n",
            api_key.display()
        ))
        .unwrap();
    let (_, warnings) = settings.operator_connection_with_env(&|_| None).unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("readable by every user"),
        "{warnings:?}"
    );

    let config = fixture.file(
        "inline.toml",
        &format!("[operator]\nenvironment = \"uid2-integ\"\nclient_secret = \"{SECRET}\"\n"),
    );
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let settings = fixture.load(&config).unwrap();
    assert!(
        settings
            .warnings
            .iter()
            .any(|w| w.contains("holds a secret")),
        "{:?}",
        settings.warnings
    );
}

#[test]
fn without_a_file_the_db_flag_is_enough_for_consumers() {
    let options = LoadOptions {
        config: None,
        db: Some(PathBuf::from("/tmp/consumer.db")),
    };
    if Path::new(uid2_bucket_sync::config::DEFAULT_CONFIG_PATH).exists() {
        return; // a machine with a system-wide config uses that file instead
    }
    let settings = Settings::load_with_env(&options, &|_| None).unwrap();
    assert_eq!(
        settings.database.file(),
        Some(Path::new("/tmp/consumer.db"))
    );
    assert_eq!(settings.queue.max_attempts, 5);
    let missing = Settings::load_with_env(&LoadOptions::default(), &|_| None).unwrap_err();
    assert!(matches!(missing, ConfigError::NoConfigFile));
}

#[test]
fn a_missing_config_file_is_named() {
    let fixture = Fixture::new();
    let message = error_text(fixture.load(&fixture.dir.path().join("absent.toml")));
    assert!(message.contains("absent.toml: cannot read"), "{message}");
}

#[test]
fn a_bad_log_setting_is_refused() {
    let fixture = Fixture::new();
    let message = error_text(fixture.load_text("[log]\nformat = \"xml\"\n"));
    assert!(message.contains("log.format"), "{message}");
    let message = error_text(fixture.load_text("[metrics]\nlisten = \"everywhere\"\n"));
    assert!(message.contains("metrics.listen"), "{message}");
}
