//! systemd's notify protocol: READY, STATUS, WATCHDOG and STOPPING. Every
//! call is a no-op when not started by systemd (no `$NOTIFY_SOCKET`).

use std::time::Duration;

use sd_notify::NotifyState;

pub(crate) fn ready() {
    send(&[NotifyState::Ready]);
}

pub(crate) fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

pub(crate) fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

pub(crate) fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// How often to ping the watchdog: half the period systemd expects
/// (`WatchdogSec=`), or `None` when the watchdog is off.
pub(crate) fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|period| period / 2)
}

fn send(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, "cannot notify systemd");
    }
}
