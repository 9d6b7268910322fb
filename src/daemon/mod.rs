//! The long-running service: scheduler, signals, systemd notify, housekeeping.

pub mod notify;
pub mod schedule;
pub mod shutdown;
