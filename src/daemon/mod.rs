//! The long-running service: scheduler, signals, systemd notify,
//! housekeeping, and the re-map worker's passes.

pub(crate) mod instance_lock;
pub(crate) mod notify;
mod remapping;
pub(crate) mod schedule;
mod service;
pub(crate) mod shutdown;

pub(crate) use remapping::PassObserver;
pub(crate) use service::CycleObserver;
pub use service::{Daemon, DaemonError};
