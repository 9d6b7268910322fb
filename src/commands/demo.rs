//! `demo`: the whole flow on one machine, offline, with nothing to set up.
//!
//! Three actors share one timeline on stdout:
//! - `operator`: the simulated operator, on 127.0.0.1 with throwaway
//!   credentials, rotating a few buckets every `--rotate-every`;
//! - `sync`: the real daemon (scheduler, sync cycle, store) polling it;
//! - `consumer`: a batch job driving this same binary's `queue claim --json`
//!   and `queue ack` as separate processes, exactly as a data provider's
//!   job would;
//! - `worker`: the built-in re-map worker (v2, as buckets rotate in seconds
//!   here), keeping the demo's identities mapped: it maps them all once,
//!   then re-maps exactly those in the buckets that rotate;
//! - `feed`: a downstream job reading the change feed with `changes
//!   --after SEQ --json`, as a separate process, keeping its position.
//!
//! The identities are imported at the start with `identities import`, also
//! as a separate process.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::Utc;
use compact_str::CompactString;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, DemoArgs};
use crate::config::{MappingSettings, QueueSettings, Schedule};
use crate::credentials::{ApiKey, ClientSecret};
use crate::daemon::shutdown::cancel_on_signal;
use crate::daemon::{CycleObserver, Daemon, PassObserver};
use crate::operator::{ClientOptions, MAX_BATCH_SIZE, MapLimits, OperatorClient, RetryPolicy};
use crate::queue::QueueStats;
use crate::remap::Remapper;
use crate::rotation::BucketRotation;
use crate::simulator::{SimulatedOperator, SimulatorConfig};
use crate::store::{
    CREATED_BY_DAEMON, IngestSummary, MapApi, OpenMode, SharedStore, Store, StoreError,
    StoreOptions, with_store,
};
use crate::sync::{SyncCycle, SyncPlan};
use crate::timestamp::{format_utc, parse_iso_local};

const DEFAULT_DATABASE: &str = "demo.db";
/// Recorded in the databases the demo creates; only those are continued.
const CREATED_BY: &str = "demo";
/// Before every simulated bucket's initial time, so the first sync gets them all.
const INITIAL_SINCE: &str = "2000-01-01T00:00:00";
const CONSUMER_BATCH: u32 = 5_000;
const CONSUMER_LEASE: &str = "1m";
/// Only a download this large gets progress lines.
const PROGRESS_MIN_BYTES: u64 = 1 << 20;
/// A download gets a "downloading" line once it has taken this long, and
/// then at most one line this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// How long the daemon keeps done entries.
const DONE_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Identities the demo imports: enough that a rotation of a few dozen
/// buckets out of 65,536 touches some of them.
const DEMO_IDENTITIES: u64 = 20_000;

pub(crate) async fn run(cli: &Cli, args: &DemoArgs) -> anyhow::Result<ExitCode> {
    check(args)?;
    let database = cli
        .db
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATABASE));
    let existed = earlier_demo_database(&database)?;
    let store = Store::open(
        &database,
        OpenMode::CreateIfMissing,
        &StoreOptions {
            created_by: CREATED_BY,
            ..StoreOptions::default()
        },
    )?;
    let store: SharedStore = Arc::new(Mutex::new(store));

    let (api_key, client_secret) = throwaway_credentials()?;
    let operator = SimulatedOperator::start(
        SimulatorConfig::new(api_key.clone(), client_secret.clone(), args.buckets),
        "127.0.0.1:0".parse().expect("a valid socket address"),
    )
    .await
    .context("cannot start the simulated operator on 127.0.0.1")?;
    let operator = Arc::new(operator);

    let narrator = Narrator::new();
    narrator.banner(args, &operator, &database, existed);

    let binary = std::env::current_exe().context("cannot find this program's own path")?;
    import_identities(&binary, &database, &store, &narrator).await?;

    let client = Arc::new(
        demo_client(&operator.base_url(), api_key, client_secret)?
            .with_progress(download_progress(narrator.clone())),
    );
    let limits = MapLimits::new(MAX_BATCH_SIZE, 4).expect("documented limits");
    let remapper = Remapper::new(Arc::clone(&client), store.clone(), MapApi::V2, limits);
    let cycle = SyncCycle::new(
        client,
        store.clone(),
        SyncPlan {
            initial_since: Some(parse_iso_local(INITIAL_SINCE).expect("a valid timestamp")),
            overlap: Duration::ZERO,
        },
    );
    let daemon = Daemon::new(
        cycle,
        Schedule::Interval(args.sync_every),
        QueueSettings {
            max_attempts: 5,
            done_retention: DONE_RETENTION,
            retry_backoff: Duration::from_secs(30),
            max_retry_backoff: Duration::from_secs(3600),
        },
    )
    .on_cycle(narrate_cycle(narrator.clone()))
    .with_mapping(
        remapper,
        MappingSettings {
            enabled: true,
            api: MapApi::V2,
            limits,
            interval: args.sync_every,
            spread_over: Duration::ZERO,
            change_retention: DONE_RETENTION,
        },
    )
    .on_pass(narrate_pass(narrator.clone()));

    let shutdown = CancellationToken::new();
    let signals = tokio::spawn(cancel_on_signal(shutdown.clone()));
    if let Some(duration) = args.duration {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            shutdown.cancel();
        });
    }
    let rotations = tokio::spawn({
        let (operator, narrator, shutdown) = (operator.clone(), narrator.clone(), shutdown.clone());
        let (every, count) = (args.rotate_every, args.rotate_count);
        async move {
            operator
                .rotate_periodically(every, count, shutdown, |rotated| {
                    narrate_rotation(&narrator, rotated)
                })
                .await
        }
    });
    let feed = tokio::spawn(follow_feed(
        binary.clone(),
        database.clone(),
        narrator.clone(),
        args.sync_every,
        shutdown.clone(),
    ));
    let consumer = tokio::spawn(consume(
        binary.clone(),
        database.clone(),
        store.clone(),
        narrator.clone(),
        shutdown.clone(),
    ));

    let outcome = daemon.run(shutdown.clone()).await;
    shutdown.cancel();
    let rotated = rotations.await.unwrap_or_default();
    let consumed = consumer.await.context("the consumer task failed")??;
    let followed = feed.await.context("the change-feed task failed")??;
    let _ = signals.await;
    if let Some(operator) = Arc::into_inner(operator) {
        operator.shutdown().await;
    }
    outcome?;

    let stats = with_store(&store, |store| store.status(Utc::now())).await?;
    narrator.line(
        "demo",
        &format!(
            "stopped. This run: the operator rotated {} buckets; the consumer acked {} leases \
             covering {} distinct buckets ({} re-acks of buckets rotated again after their ack)",
            grouped(rotated),
            grouped(consumed.acks),
            grouped(consumed.buckets.len() as u64),
            grouped(consumed.acks - consumed.buckets.len() as u64),
        ),
    );
    narrator.line(
        "demo",
        &format!(
            "queue now, one entry per bucket ever queued: {} (done entries are purged after {}h)",
            queue_line(&stats.queue),
            DONE_RETENTION.as_secs() / 3600
        ),
    );
    narrator.line(
        "demo",
        &format!(
            "the change feed gave {} records this run; the next read starts after seq {}",
            grouped(followed.records),
            followed.position
        ),
    );
    let database = shell_word(&database);
    narrator.line(
        "demo",
        &format!(
            "look inside: {command} --db {database} status   (or: {command} --db {database} \
             changes --limit 5; sqlite3 {database} 'SELECT * FROM remap_queue LIMIT 5')",
            command = command_for(&binary),
        ),
    );
    Ok(ExitCode::SUCCESS)
}

fn check(args: &DemoArgs) -> anyhow::Result<()> {
    if args.rotate_count > args.buckets {
        bail!(
            "--rotate-count {} is more than the {} buckets",
            args.rotate_count,
            args.buckets
        );
    }
    if args.rotate_every.is_zero() {
        bail!("--rotate-every must be longer than zero");
    }
    crate::config::validate_interval(args.sync_every)
        .map_err(|reason| anyhow::anyhow!("--sync-every: {reason}"))?;
    Ok(())
}

/// True when `database` is an earlier demo's, to be continued; false when
/// there is no file yet. Any other file is refused before anything is
/// written: the demo acks every pending item and moves the high-water mark
/// with simulated data, which would wreck a real database.
fn earlier_demo_database(database: &Path) -> anyhow::Result<bool> {
    let creator = match Store::created_by(database) {
        Ok(Some(creator)) if creator == CREATED_BY => return Ok(true),
        Ok(Some(creator)) if creator == CREATED_BY_DAEMON => {
            "`uid2-bucket-sync sync` or `run`".to_owned()
        }
        Ok(Some(creator)) => format!("`{creator}`"),
        Ok(None) => "a uid2-bucket-sync from before databases recorded their creator".to_owned(),
        Err(StoreError::Missing { .. }) => return Ok(false),
        Err(error) => return Err(error.into()),
    };
    bail!(
        "refusing to run the demo on {}: it was created by {creator}, not by the demo, and may \
         hold real data (the demo acks every pending item and moves the high-water mark with \
         simulated data); nothing was written: choose another --db or delete the demo file",
        database.display()
    )
}

/// A key and secret made up for this run: the simulated operator and the
/// daemon share them in memory and they die with the process.
fn throwaway_credentials() -> anyhow::Result<(ApiKey, ClientSecret)> {
    let mut secret = [0u8; 32];
    let mut key = [0u8; 16];
    getrandom::fill(&mut secret).context("no operating system randomness")?;
    getrandom::fill(&mut key).context("no operating system randomness")?;
    let key_text: String = key.iter().map(|b| format!("{b:02x}")).collect();
    Ok((
        ApiKey::new(&format!("demo-{key_text}"))?,
        ClientSecret::from_bytes(secret),
    ))
}

fn demo_client(
    base_url: &str,
    api_key: ApiKey,
    client_secret: ClientSecret,
) -> anyhow::Result<OperatorClient> {
    Ok(OperatorClient::new(
        base_url,
        api_key,
        client_secret,
        ClientOptions {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(120),
            retry: RetryPolicy {
                max_attempts: 3,
                initial_backoff: Duration::from_millis(200),
                max_backoff: Duration::from_secs(1),
                max_elapsed: Duration::from_secs(10),
            },
            ..ClientOptions::default()
        },
    )?)
}

/// Lines of the shared timeline: seconds since start, who, what.
#[derive(Clone)]
struct Narrator {
    started: Instant,
    out: Arc<Mutex<std::io::Stdout>>,
}

impl Narrator {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            out: Arc::new(Mutex::new(std::io::stdout())),
        }
    }

    fn banner(
        &self,
        args: &DemoArgs,
        operator: &SimulatedOperator,
        database: &Path,
        existed: bool,
    ) {
        let stop = match args.duration {
            Some(duration) => format!("stops after {}", humantime::format_duration(duration)),
            None => "Ctrl-C stops it".to_owned(),
        };
        let database_note = if existed {
            " (exists: continuing from its high-water mark; delete it to start over)"
        } else {
            ""
        };
        self.raw(&format!(
            "uid2-bucket-sync demo: everything offline, on this machine; {stop}\n\
             \x20 operator  simulated, {} salt buckets at {}, rotating {} every {}\n\
             \x20 sync      the daemon, polling every {} into {}{database_note}\n\
             \x20 consumer  a batch job: `queue claim --limit {CONSUMER_BATCH} --lease {CONSUMER_LEASE} --json`, re-map, `queue ack`\n\
             \x20 provider  imports {} customers' emails with `identities import`\n\
             \x20 worker    the daemon's re-map worker (v2): maps them, then re-maps those in rotated buckets\n\
             \x20 feed      a downstream job: `changes --after SEQ --json`, keeping its position\n",
            grouped(args.buckets.into()),
            operator.base_url(),
            args.rotate_count,
            humantime::format_duration(args.rotate_every),
            humantime::format_duration(args.sync_every),
            database.display(),
            grouped(DEMO_IDENTITIES),
        ));
    }

    fn line(&self, who: &str, what: &str) {
        let elapsed = self.started.elapsed().as_secs_f64();
        self.raw(&format!("{:>7.1}s  {who:<8}  {what}\n", elapsed));
    }

    fn raw(&self, text: &str) {
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        // A closed stdout (the reader went away) must not stop the demo.
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }
}

/// Narrates large downloads (see [`DownloadProgress`]); small ones stay quiet.
fn download_progress(narrator: Narrator) -> impl Fn(u64, Option<u64>) + Send + Sync + 'static {
    let progress = Mutex::new(DownloadProgress::new(Instant::now()));
    move |received, total| {
        let line = progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .observe(received, total, Instant::now());
        if let Some(line) = line {
            narrator.line("sync", &line);
        }
    }
}

/// Which moments of a download get a line: its end, and while it runs at
/// most one line every [`PROGRESS_EVERY`] once it has taken that long. A
/// fast download is one line, a slow one shows it is moving, and every
/// line says how long it has taken so far.
#[derive(Debug)]
struct DownloadProgress {
    started: Instant,
    last_line: Option<Instant>,
}

impl DownloadProgress {
    fn new(now: Instant) -> Self {
        Self {
            started: now,
            last_line: None,
        }
    }

    /// `received` bytes of `total` at `now`; the client reports 0 when an
    /// attempt starts.
    fn observe(&mut self, received: u64, total: Option<u64>, now: Instant) -> Option<String> {
        if received == 0 {
            *self = Self::new(now);
            return None;
        }
        let total = total.filter(|&t| t >= PROGRESS_MIN_BYTES)?;
        let elapsed = now.saturating_duration_since(self.started).as_secs_f64();
        if received >= total {
            return Some(format!(
                "downloaded {} in {elapsed:.1}s; decrypting, validating and ingesting in one transaction",
                megabytes(total)
            ));
        }
        let quiet_since = self.last_line.unwrap_or(self.started);
        if now.saturating_duration_since(quiet_since) < PROGRESS_EVERY {
            return None;
        }
        self.last_line = Some(now);
        Some(format!(
            "downloading: {} of {} after {elapsed:.1}s",
            megabytes(received),
            megabytes(total)
        ))
    }
}

fn narrate_cycle(narrator: Narrator) -> CycleObserver {
    Arc::new(move |outcome, stats| {
        let queue = stats.map(queue_line).unwrap_or_default();
        match outcome {
            Ok(report) if report.ingest.new_rotations == 0 => {}
            Ok(report) => narrator.line(
                "sync",
                &format!(
                    "{}; mark {}; {:.2}s; queue {queue}",
                    ingest_line(&report.ingest),
                    report
                        .ingest
                        .mark_after
                        .map_or_else(|| "none".to_owned(), format_utc),
                    report.duration.as_secs_f64(),
                ),
            ),
            Err(error) => narrator.line(
                "sync",
                &format!("cycle failed ({}): {}", error.kind(), error),
            ),
        }
    })
}

/// Where each new rotation went. A rotation of a bucket whose entry is
/// done re-opens that entry (so done drops by as many); one of a bucket
/// already pending or leased adds no entry.
fn ingest_line(ingest: &IngestSummary) -> String {
    format!(
        "{} new rotations of {} rows received: {} queued ({} new, {} re-opened done entries), \
         {} merged into pending, {} deferred behind a lease",
        grouped(ingest.new_rotations),
        grouped(ingest.received),
        grouped(ingest.newly_queued),
        grouped(ingest.newly_queued - ingest.reopened),
        grouped(ingest.reopened),
        grouped(ingest.coalesced),
        grouped(ingest.requeued_after_lease),
    )
}

/// The operator's line for one batch of rotations.
fn narrate_rotation(narrator: &Narrator, rotated: &[BucketRotation]) {
    let sample: Vec<&str> = rotated
        .iter()
        .take(3)
        .map(|r| r.bucket_id.as_str())
        .collect();
    let more = if rotated.len() > sample.len() {
        ", …"
    } else {
        ""
    };
    narrator.line(
        "operator",
        &format!(
            "rotated {} buckets ({}{more})",
            rotated.len(),
            sample.join(", ")
        ),
    );
}

/// Imports the demo's identities through `identities import`, as a data
/// provider would, unless an earlier run did.
async fn import_identities(
    binary: &Path,
    database: &Path,
    store: &SharedStore,
    narrator: &Narrator,
) -> anyhow::Result<()> {
    let now = Utc::now();
    let counts = with_store(store, move |store| store.identity_counts(MapApi::V2, now)).await?;
    if counts.total > 0 {
        narrator.line(
            "provider",
            &format!(
                "{} identities from an earlier run: {} mapped",
                grouped(counts.total),
                grouped(counts.mapped)
            ),
        );
        return Ok(());
    }
    let mut csv = String::from("id,email\n");
    for n in 0..DEMO_IDENTITIES {
        csv.push_str(&format!("customer-{n},person{n}@example.com\n"));
    }
    let mut import = tokio::process::Command::new(binary)
        .arg("--db")
        .arg(database)
        .args(["identities", "import", "-", "--format", "csv"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("cannot run `identities import`")?;
    let mut stdin = import
        .stdin
        .take()
        .context("`identities import` has no stdin")?;
    stdin.write_all(csv.as_bytes()).await?;
    drop(stdin);
    let imported = import.wait_with_output().await?;
    if !imported.status.success() {
        bail!(
            "`identities import` failed: {}",
            String::from_utf8_lossy(&imported.stderr).trim()
        );
    }
    narrator.line(
        "provider",
        &format!(
            "imported {} customers' emails (person0@example.com …): {}; only their SHA-256 \
             hashes are stored",
            grouped(DEMO_IDENTITIES),
            String::from_utf8_lossy(&imported.stdout).trim()
        ),
    );
    Ok(())
}

/// The worker's line for a pass that sent something.
fn narrate_pass(narrator: Narrator) -> PassObserver {
    Arc::new(move |outcome| match outcome {
        Ok(report) if report.counts.sent == 0 => {}
        Ok(report) => narrator.line("worker", &format!("re-map pass: {}", report.summary_line())),
        Err(error) => narrator.line(
            "worker",
            &format!("re-map pass failed ({}): {error}", error.kind()),
        ),
    })
}

/// What the change-feed reader saw in this run.
#[derive(Debug, Default)]
struct Followed {
    records: u64,
    position: i64,
}

/// The downstream job: reads the change feed after its saved position
/// every `every`, through the CLI, and shows one record of each read.
async fn follow_feed(
    binary: PathBuf,
    database: PathBuf,
    narrator: Narrator,
    every: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<Followed> {
    let mut followed = Followed::default();
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => return Ok(followed),
        }
        let read = tokio::process::Command::new(&binary)
            .arg("--db")
            .arg(&database)
            .args([
                "changes",
                "--json",
                "--after",
                &followed.position.to_string(),
            ])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .context("cannot run `changes`")?;
        if !read.status.success() {
            bail!(
                "`changes` failed: {}",
                String::from_utf8_lossy(&read.stderr).trim()
            );
        }
        let records: Vec<serde_json::Value> = String::from_utf8_lossy(&read.stdout)
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()
            .context("`changes --json` printed a line that is not JSON")?;
        let (Some(first), Some(last)) = (records.first(), records.last()) else {
            continue;
        };
        let seq = |record: &serde_json::Value| record["seq"].as_i64().unwrap_or_default();
        let short = |value: &serde_json::Value| match value.as_str() {
            Some(uid2) => format!("{}…", &uid2[..uid2.len().min(10)]),
            None => "none".to_owned(),
        };
        narrator.line(
            "feed",
            &format!(
                "{} new change records (seq {}..{}), e.g. {}: {} {} (was {})",
                grouped(records.len() as u64),
                seq(first),
                seq(last),
                last["id"].as_str().unwrap_or("?"),
                last["status"].as_str().unwrap_or("?"),
                short(&last["uid2"]),
                short(&last["previous_uid2"]),
            ),
        );
        followed.records += records.len() as u64;
        followed.position = seq(last);
    }
}

/// What the consumer did in this run.
#[derive(Debug, Default)]
struct Consumed {
    /// Every accepted ack; a bucket rotated again after its ack is acked again.
    acks: u64,
    /// The distinct buckets acked.
    buckets: HashSet<CompactString>,
}

/// The batch job: claim a batch through the CLI, "re-map" it, ack it
/// through the CLI; wait a little when nothing is pending.
async fn consume(
    binary: PathBuf,
    database: PathBuf,
    store: SharedStore,
    narrator: Narrator,
    shutdown: CancellationToken,
) -> anyhow::Result<Consumed> {
    let mut consumed = Consumed::default();
    loop {
        let pause = tokio::select! {
            batch = claim_and_ack(&binary, &database) => {
                let (claimed, acked_buckets) = batch?;
                let acked = acked_buckets.len() as u64;
                consumed.acks += acked;
                consumed.buckets.extend(acked_buckets);
                if claimed == 0 {
                    Duration::from_secs(1)
                } else {
                    let stats = with_store(&store, |store| store.status(Utc::now())).await?;
                    narrator.line(
                        "consumer",
                        &format!(
                            "claimed {}, re-mapped and acked {}; queue {}",
                            grouped(claimed),
                            grouped(acked),
                            queue_line(&stats.queue)
                        ),
                    );
                    Duration::from_millis(500)
                }
            }
            () = shutdown.cancelled() => return Ok(consumed),
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = shutdown.cancelled() => return Ok(consumed),
        }
    }
}

/// One `queue claim --json` and one `queue ack` (ids on stdin): how many
/// were claimed, and the buckets whose ack was accepted.
async fn claim_and_ack(
    binary: &Path,
    database: &Path,
) -> anyhow::Result<(u64, Vec<CompactString>)> {
    let claim = tokio::process::Command::new(binary)
        .arg("--db")
        .arg(database)
        .args(["queue", "claim", "--limit", &CONSUMER_BATCH.to_string()])
        .args([
            "--lease",
            CONSUMER_LEASE,
            "--worker",
            "demo-consumer",
            "--json",
        ])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .context("cannot run `queue claim`")?;
    if !claim.status.success() {
        bail!(
            "`queue claim` failed: {}",
            String::from_utf8_lossy(&claim.stderr).trim()
        );
    }
    let mut lease_ids = String::new();
    let mut leases: Vec<(String, CompactString)> = Vec::new();
    for line in String::from_utf8_lossy(&claim.stdout).lines() {
        let lease: serde_json::Value = serde_json::from_str(line)
            .context("`queue claim --json` printed a line that is not JSON")?;
        let field = |name: &str| {
            lease[name]
                .as_str()
                .with_context(|| format!("`queue claim --json` printed a line without {name}"))
        };
        let (id, bucket) = (field("lease_id")?, field("bucket_id")?);
        lease_ids.push_str(id);
        lease_ids.push('\n');
        leases.push((id.to_owned(), bucket.into()));
    }
    let claimed = leases.len() as u64;
    if claimed == 0 {
        return Ok((0, Vec::new()));
    }
    // Re-mapping happens here in a real job: POST /v2/identity/map for
    // every identifier stored with these buckets.
    let mut ack = tokio::process::Command::new(binary)
        .arg("--db")
        .arg(database)
        .args(["queue", "ack"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("cannot run `queue ack`")?;
    let mut stdin = ack.stdin.take().context("`queue ack` has no stdin")?;
    stdin.write_all(lease_ids.as_bytes()).await?;
    drop(stdin);
    let acked = ack.wait_with_output().await?;
    let stderr = String::from_utf8_lossy(&acked.stderr);
    let refused: HashSet<&str> = match acked.status.code() {
        Some(0) => HashSet::new(),
        // Leases that expired meanwhile (`lease ID: REASON`): their buckets
        // come round again.
        Some(code) if code == i32::from(super::queue::EXIT_LEASES_REFUSED) => stderr
            .lines()
            .filter_map(|l| l.strip_prefix("lease ")?.split_once(':'))
            .map(|(id, _)| id)
            .collect(),
        _ => bail!("`queue ack` failed: {}", stderr.trim()),
    };
    let acked_buckets = leases
        .into_iter()
        .filter(|(id, _)| !refused.contains(id.as_str()))
        .map(|(_, bucket)| bucket)
        .collect();
    Ok((claimed, acked_buckets))
}

fn queue_line(stats: &QueueStats) -> String {
    format!(
        "{} pending, {} leased, {} done",
        grouped(stats.pending),
        grouped(stats.leased),
        grouped(stats.done)
    )
}

/// How to run `binary` from the hint: its name when that is what PATH
/// finds, otherwise its path (relative to here when it is below here, as
/// after `cargo run`), so the hint can be pasted as it is.
fn command_for(binary: &Path) -> String {
    let Some(name) = binary.file_name() else {
        return shell_word(binary);
    };
    let same_file = |found: &Path| {
        matches!(
            (found.canonicalize(), binary.canonicalize()),
            (Ok(found), Ok(binary)) if found == binary
        )
    };
    if first_on_path(Path::new(name)).is_some_and(|found| same_file(&found)) {
        return name.to_string_lossy().into_owned();
    }
    let here = std::env::current_dir().ok();
    match here
        .as_deref()
        .and_then(|here| binary.strip_prefix(here).ok())
    {
        Some(relative) if relative.parent().is_some_and(|p| !p.as_os_str().is_empty()) => {
            shell_word(relative)
        }
        _ => shell_word(binary),
    }
}

/// The file the shell runs for `name`: the first executable one on PATH.
fn first_on_path(name: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// `path` as one shell word, quoted when it needs to be.
fn shell_word(path: &Path) -> String {
    let text = path.to_string_lossy();
    shlex::try_quote(&text).map_or_else(|_| text.to_string(), |quoted| quoted.into_owned())
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_000_000.0)
}

/// `65536` as `65,536`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{DownloadProgress, PROGRESS_MIN_BYTES, grouped};

    const TOTAL: u64 = 6 * PROGRESS_MIN_BYTES;

    /// The lines a download gets when `chunks` bytes arrive `every` apart.
    fn narrate(
        progress: &mut DownloadProgress,
        start: Instant,
        every: Duration,
        chunks: u64,
    ) -> Vec<String> {
        let mut lines = Vec::new();
        let _ = progress.observe(0, Some(TOTAL), start);
        for chunk in 1..=chunks {
            let now = start + every * chunk as u32;
            lines.extend(progress.observe(TOTAL * chunk / chunks, Some(TOTAL), now));
        }
        lines
    }

    #[test]
    fn a_fast_download_gets_one_line_with_its_real_duration() {
        let start = Instant::now();
        let mut progress = DownloadProgress::new(start);
        let lines = narrate(&mut progress, start, Duration::from_millis(10), 40);
        assert_eq!(
            lines,
            ["downloaded 6.3 MB in 0.4s; decrypting, validating and ingesting in one transaction"]
        );
    }

    #[test]
    fn a_slow_download_gets_at_most_a_line_a_second_each_with_its_elapsed_time() {
        let start = Instant::now();
        let mut progress = DownloadProgress::new(start);
        let lines = narrate(&mut progress, start, Duration::from_millis(150), 24);
        assert_eq!(
            lines,
            [
                // Chunks at 1.05 s, 2.1 s and 3.15 s are the first a second
                // or more after the start and after each line.
                "downloading: 1.8 MB of 6.3 MB after 1.1s",
                "downloading: 3.7 MB of 6.3 MB after 2.1s",
                "downloading: 5.5 MB of 6.3 MB after 3.1s",
                "downloaded 6.3 MB in 3.6s; decrypting, validating and ingesting in one transaction",
            ]
        );
    }

    #[test]
    fn a_new_attempt_starts_its_own_clock() {
        let start = Instant::now();
        let mut progress = DownloadProgress::new(start);
        // The first attempt stalls half way for 5 s, then the retry is fast.
        assert_eq!(progress.observe(0, Some(TOTAL), start), None);
        assert_eq!(progress.observe(TOTAL / 2, Some(TOTAL), start), None);
        let retry = start + Duration::from_secs(5);
        let lines = narrate(&mut progress, retry, Duration::from_millis(10), 10);
        assert_eq!(
            lines,
            ["downloaded 6.3 MB in 0.1s; decrypting, validating and ingesting in one transaction"]
        );
    }

    #[test]
    fn a_small_download_gets_no_line() {
        let start = Instant::now();
        let mut progress = DownloadProgress::new(start);
        let _ = progress.observe(0, Some(1000), start);
        let late = start + Duration::from_secs(3);
        assert_eq!(progress.observe(500, Some(1000), late), None);
        assert_eq!(progress.observe(1000, Some(1000), late), None);
        assert_eq!(progress.observe(1000, None, late), None);
    }

    #[test]
    fn numbers_are_grouped_in_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(65536), "65,536");
        assert_eq!(grouped(1048576), "1,048,576");
    }
}
