//! The command line, as specified in INTERFACE.md. Parsing only: each
//! command's behaviour lives in `commands/`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::queue;

#[derive(Debug, Parser)]
#[command(
    name = "uid2-bucket-sync",
    version = crate::build_info::VERSION_LINE,
    about,
    propagate_version = true
)]
pub struct Cli {
    /// Configuration file. Default: $UID2_BUCKET_SYNC_CONFIG, then
    /// /etc/uid2-bucket-sync/config.toml.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "UID2_BUCKET_SYNC_CONFIG"
    )]
    pub(crate) config: Option<PathBuf>,

    /// Database file; overrides `database.path` from the configuration.
    #[arg(long, global = true, value_name = "PATH")]
    pub(crate) db: Option<PathBuf>,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the daemon: poll on the schedule until SIGTERM or SIGINT.
    Run,
    /// Run one poll cycle now, print a summary line and exit.
    Sync,
    /// Show the high-water mark, the last attempt, success and error, and queue counts.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Consume the re-mapping queue.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Import, remove or export the identities the daemon keeps mapped.
    #[command(subcommand)]
    Identities(IdentitiesCommand),
    /// Map a few emails, phones or hashes once and print the operator's answers; nothing is stored.
    Map(MapArgs),
    /// One re-map pass now: map every identity that is new or due, print one summary line, exit.
    Remap {
        /// Send at most N identities (1 or more); the rest stay due for the next pass.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
    },
    /// The change feed: one record each time an identity's UID2 or status changed, in `seq` order.
    Changes {
        /// Only records after this `seq` (a consumer's saved position); 0: from the start.
        #[arg(long, value_name = "SEQ", default_value_t = 0,
              value_parser = clap::value_parser!(i64).range(0..))]
        after: i64,
        /// At most N records (1 or more).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Copy the configured SQLite database into an empty PostgreSQL database: the sync state,
    /// every rotation and the queue as it stands, leases included. Stop the daemon first.
    MigrateTo {
        /// postgresql://user@host:port/database, without a password: give that in $PGPASSWORD,
        /// --password-file or the systemd credential `db_password` (a command line is visible
        /// to every user of the machine).
        #[arg(value_name = "URL")]
        url: String,
        /// A file holding the PostgreSQL password.
        #[arg(long, value_name = "FILE")]
        password_file: Option<std::path::PathBuf>,
    },
    /// Serve a simulated UID2 operator (`POST /v2/identity/buckets`) for development and tests.
    DevOperator(DevOperatorArgs),
    /// The whole flow offline: a simulated operator, the daemon and a consumer in one process.
    Demo(DemoArgs),
}

#[derive(Debug, Subcommand)]
pub(crate) enum IdentitiesCommand {
    /// Add or update identities from a CSV (with a header) or JSON-lines file, or stdin.
    /// Each record: `id` and exactly one of `email`, `phone`, `email_hash`, `phone_hash`.
    Import {
        /// The file; `-` or none reads stdin.
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
        /// Default: from the file's extension (`.csv`, `.jsonl`); required for stdin.
        #[arg(long, value_enum)]
        format: Option<RecordFormat>,
    },
    /// Forget identities. With no ids, or `-`, reads them from stdin, one per line.
    Remove {
        #[arg(value_name = "ID")]
        ids: Vec<String>,
    },
    /// Print the current mapping, one record per identity.
    Export {
        #[arg(long, value_enum, default_value = "jsonl")]
        format: RecordFormat,
        #[arg(long, value_enum, value_name = "S")]
        status: Option<crate::store::IdentityStatus>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum RecordFormat {
    Csv,
    Jsonl,
}

#[derive(Debug, Subcommand)]
pub(crate) enum QueueCommand {
    /// Lease up to N pending items that are due to the caller.
    Claim {
        /// At most this many items, 1 to 100000.
        #[arg(
            long,
            value_name = "N",
            value_parser = clap::value_parser!(u32).range(1..=i64::from(queue::MAX_CLAIM_LIMIT))
        )]
        limit: u32,
        /// How long the lease lasts, e.g. 10m (1 ms to 10 years).
        #[arg(long, value_name = "DUR", value_parser = parse_lease)]
        lease: Duration,
        /// A name for the consumer, recorded with the lease (at most 128 bytes, no control characters).
        #[arg(long, value_name = "NAME", value_parser = parse_worker)]
        worker: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Mark leased items done. With no ids, or `-`, reads them from stdin, one per line.
    Ack {
        #[arg(value_name = "LEASE_ID")]
        lease_ids: Vec<String>,
    },
    /// Return leased items for a retry after a backoff; dead after `queue.max_attempts`.
    /// With no ids, or `-`, reads them from stdin, one per line.
    Fail {
        #[arg(value_name = "LEASE_ID")]
        lease_ids: Vec<String>,
        /// Why, stored with the item; beyond 4096 bytes it is cut, with a marker.
        #[arg(long, value_name = "TEXT")]
        error: String,
        /// Claimable again after DUR instead of the configured backoff (0s: at once).
        #[arg(long, value_name = "DUR", value_parser = parse_retry_delay)]
        retry_after: Option<Duration>,
    },
    /// List queue entries.
    List {
        #[arg(long, value_enum)]
        state: Option<QueueStateArg>,
        /// At most this many entries.
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// Counts per state.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Make dead items pending again, with their attempts reset.
    Retry {
        #[arg(long, required = true)]
        dead: bool,
    },
    /// Delete done items older than the retention period (default: `queue.done_retention`).
    Purge {
        #[arg(long, value_name = "DUR", value_parser = parse_duration)]
        older_than: Option<Duration>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Validate the configuration and credentials the way `run` does, without
    /// contacting the operator or creating anything; print a summary.
    Check,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum QueueStateArg {
    Pending,
    Leased,
    Done,
    Dead,
}

/// `map`'s arguments. Its `Debug` leaves the identifiers out: they are
/// personal data.
#[derive(Args)]
pub(crate) struct MapArgs {
    /// Emails, phones (+ and 10 to 15 digits) or, with --hashed, their hashes. None, or `-`: one
    /// per line on stdin, which keeps them out of the process list.
    #[arg(value_name = "IDENTIFIER")]
    pub(crate) identifiers: Vec<String>,
    /// Which identity-map endpoint to call.
    #[arg(long, value_enum, default_value = "v3")]
    pub(crate) api: MapApiArg,
    /// The identifiers are SHA-256 hashes (base64 or hex) of this type, not raw values.
    #[arg(long, value_enum, value_name = "TYPE")]
    pub(crate) hashed: Option<HashedArg>,
    /// One JSON object per identifier, in input order.
    #[arg(long)]
    pub(crate) json: bool,
}

impl std::fmt::Debug for MapArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapArgs")
            .field(
                "identifiers",
                &format_args!("<{} redacted>", self.identifiers.len()),
            )
            .field("api", &self.api)
            .field("hashed", &self.hashed)
            .field("json", &self.json)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum MapApiArg {
    /// POST /v3/identity/map: UID2, previous UID2, refresh time.
    V3,
    /// POST /v2/identity/map (deprecated): UID2 and salt bucket.
    V2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum HashedArg {
    Email,
    Phone,
}

#[derive(Debug, Args)]
pub(crate) struct DevOperatorArgs {
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub(crate) listen: std::net::SocketAddr,
    /// The API key clients must present. Prefer the environment variable: arguments are visible to other users.
    #[arg(long, value_name = "K", env = "UID2_API_KEY", hide_env_values = true)]
    pub(crate) api_key: String,
    /// Base64 of 32 bytes. Prefer the environment variable: arguments are visible to other users.
    #[arg(
        long,
        value_name = "S",
        env = "UID2_CLIENT_SECRET",
        hide_env_values = true
    )]
    pub(crate) client_secret: String,
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1 << 16,
        value_parser = bucket_count(crate::simulator::MAX_BUCKETS),
        help = bucket_count_help("Number of salt buckets to serve", crate::simulator::MAX_BUCKETS)
    )]
    pub(crate) buckets: u32,
    /// Rotate some buckets this often, e.g. 30s.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, requires = "rotate_count")]
    pub(crate) rotate_every: Option<Duration>,
    /// How many buckets each rotation touches.
    #[arg(long, value_name = "K", requires = "rotate_every")]
    pub(crate) rotate_count: Option<u32>,
    /// Seed for the bucket ids, their initial times and which buckets rotate.
    #[arg(long, value_name = "N", default_value_t = crate::simulator::DEFAULT_SEED)]
    pub(crate) seed: u64,
    /// Before listening, write the table to FILE: one `bucket_id<TAB>last_updated` line per bucket.
    #[arg(long, value_name = "FILE")]
    pub(crate) dump: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Stop by itself after this long, e.g. 20s. Without it, runs until Ctrl-C.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub(crate) duration: Option<Duration>,
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1 << 16,
        value_parser = bucket_count(DEMO_MAX_BUCKETS),
        help = bucket_count_help("Number of simulated salt buckets", DEMO_MAX_BUCKETS)
    )]
    pub(crate) buckets: u32,
    /// How often the simulated operator rotates buckets.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "4s")]
    pub(crate) rotate_every: Duration,
    /// How many buckets each simulated rotation touches.
    #[arg(long, value_name = "K", default_value_t = 25)]
    pub(crate) rotate_count: u32,
    /// How often the daemon polls the simulated operator.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "2s")]
    pub(crate) sync_every: Duration,
}

/// The most buckets the demo simulates: the production table's size.
const DEMO_MAX_BUCKETS: u32 = 1 << 20;

/// `--buckets`: the range is checked here and nowhere else, so the help,
/// the error and the check cannot disagree.
fn bucket_count(max: u32) -> clap::builder::RangedI64ValueParser<u32> {
    clap::value_parser!(u32).range(1..=i64::from(max))
}

fn bucket_count_help(what: &str, max: u32) -> String {
    format!("{what}, 1..={max}")
}

/// Durations as people write them: `30s`, `10m`, `1h`, `1h 30m`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration like 30s, 10m or 1h: {e}"))
}

/// A duration a lease may last; clap reports anything else as a usage error.
fn parse_lease(text: &str) -> Result<Duration, String> {
    queue::check_lease(parse_duration(text)?).map_err(|error| error.to_string())
}

fn parse_retry_delay(text: &str) -> Result<Duration, String> {
    queue::check_retry_delay(parse_duration(text)?).map_err(|error| error.to_string())
}

fn parse_worker(text: &str) -> Result<String, String> {
    queue::check_worker(text)
        .map(str::to_owned)
        .map_err(|error| error.to_string())
}

pub use crate::commands::execute;
