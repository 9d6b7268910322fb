//! The timer's one-shot unit runs the same binary with the same
//! configuration as the daemon's unit: it must receive the same credentials
//! and be confined the same way.

use std::collections::BTreeSet;
use std::path::Path;

/// `[Service]` settings that differ by design: how the process is started,
/// supervised and stopped.
const LIFECYCLE: &[&str] = &[
    "Type",
    "NotifyAccess",
    "ExecStart",
    "WatchdogSec",
    "Restart",
    "RestartSec",
    "TimeoutStartSec",
    "TimeoutStopSec",
];

/// Every `Key=value` line of the unit's `[Service]` section outside
/// [`LIFECYCLE`].
fn service_settings(unit: &str) -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("systemd")
        .join(unit);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut section = "";
    let mut settings = BTreeSet::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            section = line;
            continue;
        }
        let key = line.split('=').next().unwrap_or_default();
        if section == "[Service]" && !LIFECYCLE.contains(&key) {
            settings.insert(line.to_owned());
        }
    }
    settings
}

#[test]
fn the_poll_unit_gets_the_daemons_credentials_user_and_hardening() {
    let daemon = service_settings("uid2-bucket-sync.service");
    let poll = service_settings("uid2-bucket-sync-poll.service");
    assert!(
        daemon.contains("LoadCredential=api_key:/etc/uid2-bucket-sync/credentials/api_key")
            && daemon.contains(
                "LoadCredential=client_secret:/etc/uid2-bucket-sync/credentials/client_secret"
            ),
        "{daemon:#?}"
    );
    assert!(daemon.contains("ProtectSystem=strict"), "{daemon:#?}");
    let only_daemon: Vec<_> = daemon.difference(&poll).collect();
    let only_poll: Vec<_> = poll.difference(&daemon).collect();
    assert!(
        only_daemon.is_empty() && only_poll.is_empty(),
        "only in uid2-bucket-sync.service: {only_daemon:?}; only in the poll unit: {only_poll:?}"
    );
}
