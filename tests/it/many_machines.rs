//! Many machines, simulated on one: three `run` instances and eight
//! consumer processes share one PostgreSQL database while the operator
//! rotates buckets and the polling instance is killed (SIGKILL) and
//! restarted, three times.
//!
//! Checked: each kill hands the poller lock to exactly one standby (one
//! "holding the poller lock" line per holder, in all the logs), polls go on
//! after each kill, no bucket was leased to two consumers at once, and at
//! the end every bucket's queue entry carries its latest rotation at the
//! operator, acked once per generation. And three `remap` workers on one
//! database send each due identity once.

use crate::common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::app::{TestApp, spawn_app};
use common::deliveries::{Held, assert_each_rotation_delivered_once, by_bucket_never_held_twice};
use common::process::{output_with_stdin, terminate, wait_at_most};
use uid2_bucket_sync::queue::{ListFilter, QueueOptions, RemapQueue};

const BUCKETS: u32 = 2000;
const INSTANCES: usize = 3;
const CONSUMERS: usize = 8;
const KILLS: usize = 3;

const HOLDING: &str = "holding the poller lock";

/// One `run` instance and the file its log goes to.
struct Instance {
    child: Child,
    log: PathBuf,
}

impl Instance {
    fn start(app: &TestApp, n: usize) -> Self {
        let log = app.dir.path().join(format!("run-{n}.log"));
        let child = app
            .command()
            .arg("run")
            .env("UID2_BUCKET_SYNC_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self { child, log }
    }

    fn holds(&self) -> bool {
        log_of(&self.log).contains(HOLDING)
    }
}

fn log_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn consume(app: &TestApp, worker: usize, stop: &AtomicBool) -> Vec<Held> {
    let mut held = Vec::new();
    let name = format!("consumer-{worker}");
    while !stop.load(Ordering::SeqCst) {
        let args = [
            "queue", "claim", "--limit", "50", "--lease", "10m", "--worker", &name, "--json",
        ];
        let claim = output_with_stdin(app.command().args(args), "");
        let claimed = Instant::now();
        assert!(claim.status.success(), "{claim:?}");
        let leases: Vec<serde_json::Value> = String::from_utf8(claim.stdout)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        if leases.is_empty() {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        let ids: String = leases
            .iter()
            .map(|lease| format!("{}\n", lease["lease_id"].as_str().unwrap()))
            .collect();
        let acking = Instant::now();
        let ack = output_with_stdin(app.command().args(["queue", "ack"]), &ids);
        assert!(ack.status.success(), "{ack:?}");
        held.extend(Held::from_claim(worker, &leases, claimed, acking));
    }
    held
}

/// Polls `status` until a poll started after `after`, at most 30 s.
fn wait_for_a_poll_after(app: &TestApp, after: chrono::DateTime<chrono::Utc>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let output = output_with_stdin(app.command().args(["status", "--json"]), "");
        if output.status.success() {
            let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
            let polled = status["last_success_at"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
            if polled.is_some_and(|t| t > after) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "no poll after {after}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn three_run_instances_and_eight_consumers_share_one_database_through_poller_kills() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let Some(app) = runtime.block_on(spawn_app(BUCKETS)).on_postgres() else {
        return;
    };
    std::fs::write(
        &app.config_path,
        app.config_text("")
            .replace("interval = \"1h\"", "interval = \"1s\""),
    )
    .unwrap();
    let app = Arc::new(app);
    let mut instances: Vec<Instance> = (0..INSTANCES).map(|n| Instance::start(&app, n)).collect();
    wait_for_a_poll_after(&app, chrono::DateTime::UNIX_EPOCH);

    let stop_consumers = Arc::new(AtomicBool::new(false));
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|worker| {
            let (app, stop) = (Arc::clone(&app), Arc::clone(&stop_consumers));
            std::thread::spawn(move || consume(&app, worker, &stop))
        })
        .collect();

    let mut started = INSTANCES;
    for _ in 0..KILLS {
        for _ in 0..5 {
            app.operator.rotate_random(40, chrono::Utc::now());
            std::thread::sleep(Duration::from_millis(300));
        }
        let holders: Vec<usize> = (0..instances.len())
            .filter(|&i| instances[i].holds())
            .collect();
        assert_eq!(holders.len(), 1, "holders: {holders:?}");
        let mut killed = instances.remove(holders[0]);
        killed.child.kill().unwrap();
        killed.child.wait().unwrap();
        let killed_at = chrono::Utc::now();
        // systemd's Restart= brings the instance back, as a standby.
        instances.push(Instance::start(&app, started));
        started += 1;
        app.operator.rotate_random(40, chrono::Utc::now());
        wait_for_a_poll_after(&app, killed_at);
    }
    // The last rotations, polled.
    app.operator.rotate_random(40, chrono::Utc::now());
    wait_for_a_poll_after(&app, chrono::Utc::now());

    // Consumers drain what is left, then stop.
    let store = app.store();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stats = store
            .queue(QueueOptions::default())
            .stats(chrono::Utc::now())
            .unwrap();
        if stats.pending == 0 && stats.leased == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "not drained: {stats:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    stop_consumers.store(true, Ordering::SeqCst);
    let held: Vec<Held> = consumers
        .into_iter()
        .flat_map(|consumer| consumer.join().unwrap())
        .collect();

    // Standbys first, so that none takes over from the holder as it stops.
    instances.sort_by_key(Instance::holds);
    let logs: Vec<String> = instances
        .into_iter()
        .map(|instance| {
            terminate(&instance.child);
            let (output, _) = wait_at_most(instance.child, Duration::from_secs(20));
            assert!(output.status.success(), "{}", log_of(&instance.log));
            log_of(&instance.log)
        })
        .collect();
    let all_logs = (0..started)
        .map(|n| log_of(&app.dir.path().join(format!("run-{n}.log"))))
        .collect::<Vec<_>>();
    assert_eq!(
        all_logs
            .iter()
            .map(|log| log.matches(HOLDING).count())
            .sum::<usize>(),
        KILLS + 1,
        "one holder at the start and one after each kill"
    );
    assert!(logs.iter().all(|log| !log.contains("lost the poller lock")));

    // No bucket held by two consumers at once; every rotation the operator
    // made is its entry's version, done, each generation acked once.
    let by_bucket = by_bucket_never_held_twice(&held);
    let latest: HashMap<String, chrono::DateTime<chrono::Utc>> = app
        .operator
        .snapshot()
        .into_iter()
        .map(|r| (r.bucket_id.to_string(), r.last_updated))
        .collect();
    let entries = store
        .queue(QueueOptions::default())
        .list(&ListFilter::default())
        .unwrap();
    assert_eq!(entries.len(), latest.len());
    assert_each_rotation_delivered_once(&entries, &by_bucket, |bucket| latest.get(bucket).copied());
    let workers: std::collections::HashSet<usize> = held.iter().map(|h| h.worker).collect();
    eprintln!(
        "{} deliveries of {} buckets by {} consumers, {} run instances in all",
        held.len(),
        latest.len(),
        workers.len(),
        started
    );
}

const WORKERS: usize = 3;
const IDENTITIES: usize = 30_000;

/// Runs `remap` in [`WORKERS`] processes at once on the app's database and
/// returns how many identities each says it sent.
fn remap_on_every_worker(app: &TestApp) -> Vec<usize> {
    let workers: Vec<Child> = (0..WORKERS)
        .map(|_| {
            app.command()
                .arg("remap")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    workers
        .into_iter()
        .map(|worker| {
            let (output, _) = wait_at_most(worker, Duration::from_secs(120));
            assert!(output.status.success(), "{output:?}");
            let line = String::from_utf8(output.stdout).unwrap();
            let sent = line
                .strip_prefix("remap: ")
                .and_then(|rest| rest.split(' ').next())
                .and_then(|n| n.parse().ok());
            sent.unwrap_or_else(|| panic!("no count in {line:?}"))
        })
        .collect()
}

/// Three re-map workers on one database split its identities between them:
/// together they send each due identity exactly once, in the first pass
/// (every identity new) and in a pass over the third whose refresh time
/// came. Small requests, two in flight per worker, so the workers' claims
/// interleave all along.
#[test]
fn three_remap_workers_send_each_due_identity_once() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let Some(app) = runtime.block_on(spawn_app(1024)).on_postgres() else {
        return;
    };
    app.write_config("[mapping]\nbatch_size = 250\nconcurrency = 2\n");
    app.import_emails(IDENTITIES);

    let sent = remap_on_every_worker(&app);
    assert_eq!(sent.iter().sum::<usize>(), IDENTITIES, "{sent:?}");
    assert!(
        sent.iter().all(|&n| n > 0),
        "a worker got nothing: {sent:?}"
    );
    assert_eq!(app.identities_sent(), IDENTITIES);
    assert_eq!(
        app.number("SELECT count(*) FROM identity WHERE status = 'mapped'"),
        IDENTITIES as i64
    );
    assert_eq!(
        app.number("SELECT count(DISTINCT id) FROM identity_change"),
        IDENTITIES as i64
    );
    assert_eq!(
        app.number("SELECT count(*) FROM identity WHERE lease_id IS NOT NULL"),
        0
    );

    // A third of them come due.
    let past = chrono::Utc::now().timestamp_millis() - 60_000;
    let due = app.execute(&format!(
        "UPDATE identity SET refresh_from_ms = {past}
         WHERE right(id, 1) IN ('0', '3', '6')"
    )) as usize;
    let before = app.identities_sent();
    let sent = remap_on_every_worker(&app);
    assert_eq!(sent.iter().sum::<usize>(), due, "{sent:?}");
    assert_eq!(app.identities_sent() - before, due);
    assert_eq!(
        app.number(&format!(
            "SELECT count(*) FROM identity WHERE refresh_from_ms <= {past}"
        )),
        0
    );
}
