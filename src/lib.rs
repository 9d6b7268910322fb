//! uid2-bucket-sync: keeps a durable re-mapping queue of rotated UID2/EUID
//! salt buckets, fed by polling the operator's `POST /v2/identity/buckets`,
//! and keeps the user's own identities mapped (`POST /v3/identity/map`, or
//! the deprecated v2 one) with a change feed of their UID2s.
//!
//! # Layout
//!
//! Pure building blocks (no IO):
//! - [`timestamp`]: the operator's date-time dialect (parse and print).
//! - [`credentials`]: API key and client secret, redacted everywhere.
//! - [`envelope`]: the v2 AES-256-GCM request and response envelopes.
//! - [`rotation`]: one reported bucket rotation.
//! - [`identity`]: emails and phones: the operator's normalization, SHA-256
//!   hashes and the accepted spellings of a hash.
//!
//! Talking to the operator:
//! - [`operator`]: the client: one transport for every operator endpoint
//!   (envelope per attempt, HTTP, error kinds, retries), the options the
//!   configuration maps onto, and one module per endpoint:
//!   `/v2/identity/buckets`, `/v3/identity/map` and the deprecated
//!   `/v2/identity/map` (hashes only, every answer checked against its
//!   request), plus batching of identity-map runs (size and body limits,
//!   bounded concurrency, results in input order).
//! - [`simulator`]: a faithful in-process operator with fault injection,
//!   used by tests, `dev-operator` and `demo`.
//!
//! Keeping state:
//! - [`store`]: one narrow interface ([`store::Store`], [`store::Queue`])
//!   over two backends, which the sync cycle, the worker and the commands
//!   use without knowing which one they write:
//!   - what both backends share, free of IO: the identities' records and
//!     the import in progress (`store::identities`); the re-map worker's
//!     due sets, their queries, the cursor a pass reads them with and the
//!     rule an answer is written by (`store::remap`); reading a row of
//!     either backend into those records (`store::columns`);
//!   - `store::sqlite`, the embedded default: the file, its migrations, the
//!     sync state, the atomic ingest of one response and the queue; who may
//!     open the file (modes, groups, what to say when access is wrong) in
//!     `access`; the user's identities (import, export) in `identities`;
//!     what the re-map worker reads and writes (due sets, batch commits,
//!     change feed) in `remap`;
//!   - `store::postgres`: the same state on a PostgreSQL server shared by
//!     many machines (the URL and password in `target`, migrations in
//!     `schema`, `COPY` ingest in `ingest`, `SKIP LOCKED` claims in
//!     `queue`, the one-poller lock in `poller_lock`, the identities in
//!     `identities`, the worker's leased claims and fenced commits in
//!     `remap`);
//!   - `store::migrate`: copying a SQLite database into PostgreSQL.
//! - [`queue`]: the contract of the lease-based re-mapping queue batch jobs
//!   consume (its promises, types and limits), free of IO.
//!
//! Running:
//! - [`config`]: layered settings (file, environment, credentials).
//! - [`sync`]: one poll cycle: fetch, validate, ingest, record.
//! - [`remap`]: the built-in re-map worker: one pass maps every identity
//!   that is new or due on v3 or v2, a bounded number of requests in
//!   flight, each answer committed in one transaction; how `run` spreads a
//!   day's re-maps in `remap::pace`.
//! - [`daemon`]: scheduler, signals, systemd notify, housekeeping, and the
//!   lock that keeps one daemon per database.
//! - `metrics`, `telemetry`: Prometheus listener and logging.
//! - [`build_info`]: the version and git commit this binary was built from.
//! - [`cli`], `commands`: the command line and one handler per command.

pub mod build_info;
pub mod cli;
mod commands;
pub mod config;
pub mod credentials;
pub mod daemon;
pub mod envelope;
pub mod identity;
pub(crate) mod metrics;
pub mod operator;
pub mod queue;
pub mod remap;
pub mod rotation;
pub mod simulator;
pub mod store;
pub mod sync;
pub(crate) mod telemetry;
pub mod timestamp;
