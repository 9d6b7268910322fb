//! The long-running service: scheduler, signals, systemd notify, housekeeping.

pub(crate) mod instance_lock;
pub(crate) mod notify;
pub(crate) mod schedule;
mod service;
pub(crate) mod shutdown;

pub(crate) use service::CycleObserver;
pub use service::{Daemon, DaemonError};
