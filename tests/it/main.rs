//! Every integration test in one binary: each module was once its own test
//! binary, and each of those linked the whole crate. Modules share the
//! helpers in `common`.

mod common;

mod cli_map;
mod cli_operations;
mod cli_postgres;
mod cli_queue;
mod cli_run;
mod config;
mod crash_consistency;
mod daemon_behaviour;
mod decode_fuzz;
mod demo;
mod dev_operator;
mod envelope_properties;
mod examples;
mod faults;
mod identities;
mod identity_map_client;
mod install;
mod many_machines;
mod multi_user;
mod operator_client;
mod postgres_backend;
mod queue;
mod queue_concurrency;
mod readme;
mod remap;
mod simulator;
mod store;
mod sync_command;
mod systemd_notify;
mod systemd_units;
