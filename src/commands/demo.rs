//! `demo`: the whole flow on one machine, offline, with nothing to set up.
//!
//! Three actors share one timeline on stdout:
//! - `operator`: the simulated operator, on 127.0.0.1 with throwaway
//!   credentials, rotating a few buckets every `--rotate-every`;
//! - `sync`: the real daemon (scheduler, sync cycle, store) polling it;
//! - `consumer`: a batch job driving this same binary's `queue claim --json`
//!   and `queue ack` as separate processes, exactly as a data provider's
//!   job would.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::Utc;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, DemoArgs};
use crate::config::{QueueSettings, Schedule};
use crate::credentials::{ApiKey, ClientSecret};
use crate::daemon::shutdown::cancel_on_signal;
use crate::daemon::{CycleObserver, Daemon};
use crate::operator::{ClientOptions, OperatorClient, RetryPolicy};
use crate::queue::QueueStats;
use crate::simulator::{SimulatedOperator, SimulatorConfig};
use crate::store::{CREATED_BY_DAEMON, OpenMode, Store, StoreError, StoreOptions};
use crate::sync::{SharedStore, SyncCycle, SyncPlan, with_store};
use crate::timestamp::{format_utc, parse_iso_local, truncate_to_millis};

const DEFAULT_DATABASE: &str = "demo.db";
/// Recorded in the databases the demo creates; only those are continued.
const CREATED_BY: &str = "demo";
/// Before every simulated bucket's initial time, so the first sync gets them all.
const INITIAL_SINCE: &str = "2000-01-01T00:00:00";
const CONSUMER_BATCH: u32 = 5_000;
const CONSUMER_LEASE: &str = "1m";
/// Only a download this large gets progress lines.
const PROGRESS_MIN_BYTES: u64 = 1 << 20;

pub async fn run(cli: &Cli, args: &DemoArgs) -> anyhow::Result<ExitCode> {
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

    let client = demo_client(&operator.base_url(), api_key, client_secret)?
        .with_progress(download_progress(narrator.clone()));
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
            done_retention: Duration::from_secs(24 * 3600),
        },
        true,
    )
    .on_cycle(narrate_cycle(narrator.clone()));

    let shutdown = CancellationToken::new();
    let signals = tokio::spawn(cancel_on_signal(shutdown.clone()));
    if let Some(duration) = args.duration {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            shutdown.cancel();
        });
    }
    let rotations = tokio::spawn(rotate_periodically(
        operator.clone(),
        args.rotate_every,
        args.rotate_count,
        narrator.clone(),
        shutdown.clone(),
    ));
    let consumer = tokio::spawn(consume(
        std::env::current_exe().context("cannot find this program's own path")?,
        database.clone(),
        store.clone(),
        narrator.clone(),
        shutdown.clone(),
    ));

    let outcome = daemon.run(shutdown.clone()).await;
    shutdown.cancel();
    let rotated = rotations.await.unwrap_or_default();
    let acked = consumer.await.context("the consumer task failed")??;
    let _ = signals.await;
    if let Some(operator) = Arc::into_inner(operator) {
        operator.shutdown().await;
    }
    outcome?;

    let stats = with_store(&store, |store| store.status(Utc::now())).await?;
    narrator.line(
        "demo",
        &format!(
            "stopped: the operator rotated {} buckets, the consumer acked {}; queue now {}",
            grouped(rotated),
            grouped(acked),
            queue_line(&stats.queue)
        ),
    );
    narrator.line(
        "demo",
        &format!(
            "look inside: uid2-bucket-sync --db {} status   (or: sqlite3 {} 'SELECT * FROM remap_queue LIMIT 5')",
            database.display(),
            database.display()
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
                max_total: Duration::from_secs(10),
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
             \x20 consumer  a batch job: `queue claim --limit {CONSUMER_BATCH} --lease {CONSUMER_LEASE} --json`, re-map, `queue ack`\n",
            grouped(args.buckets.into()),
            operator.base_url(),
            args.rotate_count,
            humantime::format_duration(args.rotate_every),
            humantime::format_duration(args.sync_every),
            database.display(),
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

/// Narrates a large download in quarters; small ones stay quiet.
fn download_progress(narrator: Narrator) -> impl Fn(u64, Option<u64>) + Send + Sync + 'static {
    let last_quarter = Mutex::new(0u64);
    move |received, total| {
        let Some(total) = total.filter(|&t| t >= PROGRESS_MIN_BYTES) else {
            return;
        };
        let quarter = received.saturating_mul(4) / total;
        let mut last = last_quarter.lock().unwrap_or_else(PoisonError::into_inner);
        if quarter < *last {
            *last = 0; // a new attempt or a new cycle
        }
        if quarter > *last {
            *last = quarter;
            let what = if quarter >= 4 {
                format!(
                    "downloaded {}; decrypting, validating and ingesting in one transaction",
                    megabytes(total)
                )
            } else {
                format!(
                    "downloading {} of {}",
                    megabytes(received),
                    megabytes(total)
                )
            };
            narrator.line("sync", &what);
        }
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
                    "{} new rotations of {} rows received, {} newly queued; mark {}; {:.2}s; queue {queue}",
                    grouped(report.ingest.new_rotations),
                    grouped(report.ingest.received),
                    grouped(report.ingest.newly_queued),
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

/// Rotates `count` random buckets every `every`; returns how many in all.
async fn rotate_periodically(
    operator: Arc<SimulatedOperator>,
    every: Duration,
    count: u32,
    narrator: Narrator,
    shutdown: CancellationToken,
) -> u64 {
    let mut total = 0u64;
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return total,
            _ = ticks.tick() => {}
        }
        // A tick due at the very moment of the stop would rotate buckets
        // nobody will sync any more.
        if shutdown.is_cancelled() {
            return total;
        }
        let rotated = operator.rotate_random(count, truncate_to_millis(Utc::now()));
        total += rotated.len() as u64;
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
}

/// The batch job: claim a batch through the CLI, "re-map" it, ack it
/// through the CLI; wait a little when nothing is pending. Returns how many
/// it acked.
async fn consume(
    binary: PathBuf,
    database: PathBuf,
    store: SharedStore,
    narrator: Narrator,
    shutdown: CancellationToken,
) -> anyhow::Result<u64> {
    let mut acked_total = 0u64;
    loop {
        let pause = tokio::select! {
            claimed = claim_and_ack(&binary, &database) => {
                let (claimed, acked) = claimed?;
                acked_total += acked;
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
            () = shutdown.cancelled() => return Ok(acked_total),
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = shutdown.cancelled() => return Ok(acked_total),
        }
    }
}

/// One `queue claim --json` and one `queue ack` (ids on stdin).
async fn claim_and_ack(binary: &Path, database: &Path) -> anyhow::Result<(u64, u64)> {
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
    let mut claimed = 0u64;
    for line in String::from_utf8_lossy(&claim.stdout).lines() {
        let lease: serde_json::Value = serde_json::from_str(line)
            .context("`queue claim --json` printed a line that is not JSON")?;
        let id = lease["lease_id"]
            .as_str()
            .context("`queue claim --json` printed a line without lease_id")?;
        lease_ids.push_str(id);
        lease_ids.push('\n');
        claimed += 1;
    }
    if claimed == 0 {
        return Ok((0, 0));
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
    match acked.status.code() {
        Some(0) => Ok((claimed, claimed)),
        // Leases that expired meanwhile: their buckets come round again.
        Some(code) if code == i32::from(super::queue::EXIT_LEASES_REFUSED) => {
            let refused = stderr.lines().filter(|l| l.starts_with("lease ")).count() as u64;
            Ok((claimed, claimed.saturating_sub(refused)))
        }
        _ => bail!("`queue ack` failed: {}", stderr.trim()),
    }
}

fn queue_line(stats: &QueueStats) -> String {
    format!(
        "{} pending, {} leased, {} done",
        grouped(stats.pending),
        grouped(stats.leased),
        grouped(stats.done)
    )
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
    use super::grouped;

    #[test]
    fn numbers_are_grouped_in_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(65536), "65,536");
        assert_eq!(grouped(1048576), "1,048,576");
    }
}
