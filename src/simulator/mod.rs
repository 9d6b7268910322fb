//! A faithful local UID2 operator serving `POST /v2/identity/buckets`,
//! `POST /v2/identity/map` and `POST /v3/identity/map`.
//!
//! It speaks the real v2 envelope and reproduces the operator's routing,
//! authentication, envelope checks and error texts (see `server.rs`), over a
//! deterministic table of salt buckets that can be rotated on demand or on a
//! timer. Every bucket has a salt that changes when it rotates, so mapped
//! raw UID2s change with it (`salts.rs`, `identity_map.rs`). Faults can be
//! queued to exercise a client's error handling on the wire. Tests,
//! `dev-operator` and `demo` all run it in-process.

mod catalog;
mod faults;
mod identity_map;
mod salts;
mod server;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::credentials::{ApiKey, ClientSecret};
use crate::envelope::Nonce;
use crate::identity::IdentityHash;
use crate::rotation::BucketRotation;
use crate::timestamp::format_operator;

/// The salt-bucket route, the one the client calls; the identity-map routes
/// are in `identity_map.rs`.
pub use crate::operator::BUCKETS_PATH;
use catalog::Catalog;
pub use faults::Fault;
use faults::FaultQueue;
use identity_map::OptOuts;
pub use identity_map::{Endpoint, MAP_V2_PATH, MAP_V3_PATH, MapCounts};

/// The seed [`SimulatorConfig::new`] uses.
pub(crate) const DEFAULT_SEED: u64 = 0x5eed_0000_0002_b0c4;
/// The most buckets `dev-operator` serves: 16 times production; beyond
/// that the table alone needs gigabytes.
pub(crate) const MAX_BUCKETS: u32 = 1 << 24;
/// How many requests [`SimulatedOperator::requests`] remembers; older ones
/// are forgotten first, so a long-running `dev-operator` stays small.
pub(crate) const REQUEST_LOG_CAPACITY: usize = 100_000;

/// What the simulated operator serves and with which credentials.
#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    pub(crate) api_key: ApiKey,
    pub(crate) client_secret: ClientSecret,
    pub(crate) buckets: u32,
    /// Every this often, `rotate_count` random buckets are stamped with the
    /// current time. `None` (or a zero `rotate_count`) means no rotations.
    pub rotate_every: Option<Duration>,
    pub rotate_count: u32,
    /// Bucket ids, initial times (as offsets back from the start day's
    /// midnight, UTC) and the choice of randomly rotated buckets all follow
    /// from the seed.
    pub seed: u64,
}

impl SimulatorConfig {
    /// `buckets` buckets, no periodic rotations, [`DEFAULT_SEED`].
    pub fn new(api_key: ApiKey, client_secret: ClientSecret, buckets: u32) -> Self {
        Self {
            api_key,
            client_secret,
            buckets,
            rotate_every: None,
            rotate_count: 0,
            seed: DEFAULT_SEED,
        }
    }
}

/// One request as the simulated operator received and answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedRequest {
    /// The route asked for; `None` for a path the operator does not serve.
    pub endpoint: Option<Endpoint>,
    /// The envelope's request time, when the envelope could be opened.
    pub timestamp_ms: Option<i64>,
    /// The envelope's nonce, when the envelope could be opened.
    pub nonce: Option<Nonce>,
    /// The `since_timestamp` text as sent (a non-string value as its JSON text).
    pub since_timestamp: Option<String>,
    /// For the identity-map endpoints, how many identities each array held,
    /// once the payload opened as a JSON object.
    pub map_counts: Option<MapCounts>,
    /// The request's `Content-Type` was `application/octet-stream`.
    pub binary: bool,
    /// The status sent; 0 when the connection was closed without an answer.
    pub status: u16,
    /// The fault this request consumed, if any.
    pub fault: Option<Fault>,
}

/// A handle to a running simulated operator. Clones share the same server;
/// it stops at [`SimulatedOperator::shutdown`] or when the last clone drops.
#[derive(Clone)]
pub struct SimulatedOperator {
    handle: Arc<Handle>,
}

struct Handle {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    stop: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    _stop_when_dropped: DropGuard,
}

impl SimulatedOperator {
    /// Builds the bucket table, binds `listen` and starts serving (and
    /// rotating, if configured).
    pub async fn start(config: SimulatorConfig, listen: SocketAddr) -> std::io::Result<Self> {
        if config.rotate_every == Some(Duration::ZERO) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the rotation period must be longer than zero",
            ));
        }
        let listener = TcpListener::bind(listen).await?;
        let local_addr = listener.local_addr()?;

        let started = Instant::now();
        let (count, seed) = (config.buckets as usize, config.seed);
        let catalog =
            tokio::task::spawn_blocking(move || Catalog::generate(count, seed, Utc::now()))
                .await
                .map_err(std::io::Error::other)?;
        tracing::info!(
            buckets = count,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "simulated bucket table ready"
        );

        let shared = Arc::new(Shared::new(&config, catalog));
        let stop = CancellationToken::new();
        let mut tasks = vec![tokio::spawn(server::serve(
            listener,
            Arc::clone(&shared),
            stop.clone(),
        ))];
        if let Some(period) = config.rotate_every
            && config.rotate_count > 0
        {
            let rotations = rotate_periodically(
                Arc::clone(&shared),
                period,
                config.rotate_count,
                stop.clone(),
                |_| {},
            );
            tasks.push(tokio::spawn(async move {
                rotations.await;
            }));
        }
        Ok(Self {
            handle: Arc::new(Handle {
                shared,
                local_addr,
                _stop_when_dropped: stop.clone().drop_guard(),
                stop,
                tasks: Mutex::new(tasks),
            }),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.handle.local_addr
    }

    /// `http://ADDR:PORT`, the base URL a client is configured with.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.handle.local_addr)
    }

    pub fn bucket_count(&self) -> usize {
        self.shared().catalog().len()
    }

    /// The current table, in the order the operator serves it.
    pub fn snapshot(&self) -> Vec<BucketRotation> {
        self.shared().catalog().snapshot()
    }

    /// Stamps the named buckets with `at` (truncated to milliseconds) and
    /// gives them a new salt, so their identities map to new raw UID2s (the
    /// old one served as `p`). Unknown ids are ignored. Returns the new rows
    /// in serving order.
    pub fn rotate(&self, bucket_ids: &[&str], at: DateTime<Utc>) -> Vec<BucketRotation> {
        self.shared().rotate(bucket_ids, at)
    }

    /// Stamps `count` distinct random buckets (all, if `count` is larger)
    /// with `at`. Returns the new rows in serving order.
    pub fn rotate_random(&self, count: u32, at: DateTime<Utc>) -> Vec<BucketRotation> {
        self.shared().rotate_random(count, at)
    }

    /// Rotates `count` random buckets every `period`, the first time one
    /// period from now, until `stop` is cancelled; `observe` gets each
    /// batch's new rows. Returns how many rows were rotated in all. This is
    /// what [`SimulatorConfig::rotate_every`] runs, for a caller that wants
    /// to see each batch.
    ///
    /// # Panics
    ///
    /// If `period` is zero, as [`tokio::time::interval`] does.
    pub(crate) async fn rotate_periodically(
        &self,
        period: Duration,
        count: u32,
        stop: CancellationToken,
        observe: impl FnMut(&[BucketRotation]) + Send,
    ) -> u64 {
        rotate_periodically(
            Arc::clone(&self.handle.shared),
            period,
            count,
            stop,
            observe,
        )
        .await
    }

    /// Makes the named buckets answer refresh-from `at` (to the second) in
    /// v3 map answers, until they next rotate; an instant already past is
    /// served as the next UTC midnight, as the operator does. Unknown ids are
    /// ignored; returns how many buckets were found.
    pub fn set_refresh_from(&self, bucket_ids: &[&str], at: DateTime<Utc>) -> usize {
        self.shared().catalog_mut().set_refresh_from(bucket_ids, at)
    }

    /// The bucket an identity maps into (what v2 reports as `bucket_id`);
    /// `None` when the table is empty.
    pub fn bucket_of(&self, identity: &IdentityHash) -> Option<String> {
        self.shared()
            .catalog()
            .bucket_of(identity)
            .map(|id| id.to_string())
    }

    /// Records opt-outs for these identities: both map endpoints answer
    /// `optout` for them from now on. `validate@example.com` and
    /// `+12345678901` stay mapped whatever is recorded, as on the real operator.
    pub fn opt_out(&self, identities: &[IdentityHash]) {
        lock(&self.shared().opt_outs).add(identities);
    }

    /// Queues a fault for one request; requests consume queued faults in order.
    pub fn inject(&self, fault: Fault) {
        lock(&self.shared().faults).push(fault);
    }

    /// Applies `fault` to every request (after any queued ones) until
    /// [`SimulatedOperator::clear_faults`].
    pub fn inject_always(&self, fault: Fault) {
        lock(&self.shared().faults).set_always(fault);
    }

    /// Forgets queued faults and the standing one.
    pub fn clear_faults(&self) {
        lock(&self.shared().faults).clear();
    }

    /// How many queued one-shot faults no request has consumed yet.
    pub fn pending_faults(&self) -> usize {
        lock(&self.shared().faults).pending()
    }

    /// Every request received so far (up to [`REQUEST_LOG_CAPACITY`]), oldest first.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        lock(&self.shared().requests).iter().cloned().collect()
    }

    /// The requests to either identity-map endpoint, oldest first.
    pub fn map_requests(&self) -> Vec<ReceivedRequest> {
        lock(&self.shared().requests)
            .iter()
            .filter(|request| matches!(request.endpoint, Some(Endpoint::MapV2 | Endpoint::MapV3)))
            .cloned()
            .collect()
    }

    /// Stops accepting connections and ends the periodic rotator. Open
    /// connections finish their current answer (for up to a few seconds).
    pub async fn shutdown(self) {
        self.handle.stop.cancel();
        let tasks = std::mem::take(&mut *lock(&self.handle.tasks));
        for task in tasks {
            if let Err(error) = task.await {
                tracing::warn!(%error, "simulated operator task failed");
            }
        }
    }

    fn shared(&self) -> &Shared {
        &self.handle.shared
    }
}

impl std::fmt::Debug for SimulatedOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatedOperator")
            .field("local_addr", &self.handle.local_addr)
            .finish_non_exhaustive()
    }
}

/// State the server tasks and the handle share.
struct Shared {
    api_key: ApiKey,
    client_secret: ClientSecret,
    catalog: RwLock<Catalog>,
    rotation_rng: Mutex<StdRng>,
    faults: Mutex<FaultQueue>,
    opt_outs: Mutex<OptOuts>,
    requests: Mutex<VecDeque<ReceivedRequest>>,
}

impl Shared {
    fn new(config: &SimulatorConfig, catalog: Catalog) -> Self {
        Self {
            api_key: config.api_key.clone(),
            client_secret: config.client_secret.clone(),
            catalog: RwLock::new(catalog),
            // Independent of the stream that generated the table.
            rotation_rng: Mutex::new(StdRng::seed_from_u64(config.seed ^ 0x9e37_79b9_7f4a_7c15)),
            faults: Mutex::new(FaultQueue::default()),
            opt_outs: Mutex::new(OptOuts::default()),
            requests: Mutex::new(VecDeque::new()),
        }
    }

    fn catalog(&self) -> RwLockReadGuard<'_, Catalog> {
        self.catalog.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn catalog_mut(&self) -> RwLockWriteGuard<'_, Catalog> {
        self.catalog.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn rotate(&self, bucket_ids: &[&str], at: DateTime<Utc>) -> Vec<BucketRotation> {
        let rotated = self.catalog_mut().rotate_ids(bucket_ids, at);
        log_rotation(&rotated, at);
        rotated
    }

    fn rotate_random(&self, count: u32, at: DateTime<Utc>) -> Vec<BucketRotation> {
        let mut rng = lock(&self.rotation_rng);
        let rotated = self
            .catalog_mut()
            .rotate_random(&mut rng, count as usize, at);
        drop(rng);
        log_rotation(&rotated, at);
        rotated
    }

    fn opt_outs(&self) -> MutexGuard<'_, OptOuts> {
        lock(&self.opt_outs)
    }

    fn next_fault(&self) -> Option<Fault> {
        lock(&self.faults).next()
    }

    fn record(&self, request: ReceivedRequest) {
        let mut requests = lock(&self.requests);
        if requests.len() == REQUEST_LOG_CAPACITY {
            requests.pop_front();
        }
        requests.push_back(request);
    }
}

fn log_rotation(rotated: &[BucketRotation], at: DateTime<Utc>) {
    if rotated.is_empty() {
        return;
    }
    let at = rotated.first().map_or_else(
        || format_operator(at),
        |row| format_operator(row.last_updated),
    );
    tracing::info!(count = rotated.len(), %at, "rotated buckets");
    if tracing::enabled!(tracing::Level::DEBUG) {
        let ids: Vec<&str> = rotated.iter().map(|row| row.bucket_id.as_str()).collect();
        tracing::debug!(%at, bucket_ids = %ids.join(","), "rotated bucket ids");
    }
}

/// Rotates `count` random buckets every `period` until `stop`, handing
/// each batch to `observe`; returns how many rows were rotated in all.
async fn rotate_periodically(
    shared: Arc<Shared>,
    period: Duration,
    count: u32,
    stop: CancellationToken,
    mut observe: impl FnMut(&[BucketRotation]) + Send,
) -> u64 {
    let mut total = 0;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return total,
            _ = ticker.tick() => {}
        }
        // A tick due at the very moment of the stop would rotate buckets
        // nobody will read any more.
        if stop.is_cancelled() {
            return total;
        }
        let shared = Arc::clone(&shared);
        // Waits for the table lock, which an answer being encrypted holds.
        let rotation =
            tokio::task::spawn_blocking(move || shared.rotate_random(count, Utc::now())).await;
        match rotation {
            Ok(rotated) => {
                total += rotated.len() as u64;
                observe(&rotated);
            }
            Err(error) => tracing::warn!(%error, "periodic rotation failed"),
        }
    }
}

/// Locks a mutex, carrying on after a panic elsewhere: every guarded value
/// here stays consistent between statements.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
