//! The long-running service: scheduler, signals, systemd notify, housekeeping.

pub mod instance_lock;
pub mod notify;
pub mod schedule;
mod service;
pub mod shutdown;

pub use service::{CycleObserver, Daemon, DaemonError};
