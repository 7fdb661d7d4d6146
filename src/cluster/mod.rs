//! Several rtsup hosts sharing sessions and cookies through Redis (fred), with no extra
//! daemon.
//!
//! - **Membership**: every 500 ms each host writes its [`HostRecord`] (its workers and their
//!   states) under `{rtsup:NAME}:host:ADDR` with a 1.5 s expiry, lists itself in
//!   `{rtsup:NAME}:hosts`, and publishes on `rtsup:NAME:members` whenever its workers change.
//!   Every host reads the others on each message and every 500 ms, so a worker that changes is
//!   seen at once and a host that dies within 2 s (its key expires). A host that stops deletes
//!   its key at once. The view feeds the balancer's backend sets as *remote* backends.
//! - **Sessions**: a sid learned here is written as `rtsup:NAME:sid:SID` → the worker's global
//!   name, with `session_ttl`; a host that gets a sid it has never seen asks Redis once and
//!   caches the answer in its sid table (so Redis is not on every request's path).
//! - **Degraded mode**: while Redis does not answer, each host keeps routing its own sessions
//!   and cookies (and the other hosts as last seen); lookups are skipped, the status and
//!   `rtsup_cluster_redis_up` say so. When it answers again the host's record and every
//!   session it owns are written again.

pub mod view;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use balancer::cluster::SessionDirectory;
use balancer::sid_table::SidTable;
use fred::prelude::{
    Builder, Client, ClientLike, Config, EventInterface, Expiration, KeysInterface,
    PubsubInterface, ReconnectPolicy, SetsInterface,
};
use serde::{Deserialize, Serialize};
use supervisor::Fleet;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::config::cluster::ClusterConfig;
pub use view::{HostRecord, View};

/// How often a host writes its record and reads the others'.
const HEARTBEAT: Duration = Duration::from_millis(500);
/// How long a record outlives its last write (a dead host is gone from the others' view
/// within this plus one [`HEARTBEAT`]).
const RECORD_TTL: Duration = Duration::from_millis(1500);
/// Bound of every Redis command.
const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);
/// Bound of a sid lookup on the request path.
const LOOKUP_TIMEOUT: Duration = Duration::from_millis(300);
/// Waits before each lookup of a sid this host has not seen: a miss is asked again twice (the
/// owner may still be writing it), so an unknown sid costs at most ~130 ms and 3 reads.
const MISS_RETRIES: [Duration; 3] = [
    Duration::ZERO,
    Duration::from_millis(30),
    Duration::from_millis(100),
];
/// Sid lookups in flight at once, at most.
const MAX_LOOKUPS: usize = 128;
/// Sessions learned and not yet written, at most (more are dropped and counted; the owner's
/// host still routes them, and a recovery writes them all).
const LEARNED_QUEUE: usize = 65_536;

/// This host in the cluster.
pub struct Cluster {
    config: ClusterConfig,
    client: Client,
    /// Redis answered the last command.
    up: AtomicBool,
    /// When Redis stopped answering (for the status).
    down_since: Mutex<Option<SystemTime>>,
    view: watch::Sender<View>,
    learned: mpsc::Sender<(String, String)>,
    /// The balancer's sid table (set once it runs): written again after an outage.
    sids: OnceLock<Arc<SidTable>>,
    /// Lookups by outcome.
    pub lookups: LookupCounters,
    /// Left the cluster (the daemon stops): nothing is written any more.
    left: AtomicBool,
    /// Why Redis did not answer, when it was asked (for the status).
    last_error: Mutex<Option<String>>,
    /// This process's id in its host record.
    instance: String,
    /// The Redis data set last seen (a random value this cluster keeps in Redis): when it
    /// changes, Redis lost its data (restarted empty, flushed, failed over to a lagging
    /// replica) and this host writes its record and sessions again.
    epoch: Mutex<Option<String>>,
    /// When another process was last warned about for advertising this host's address.
    clash_warned: Mutex<Option<std::time::Instant>>,
    /// Lookups in flight, bounded: a flood of made-up sids cannot turn into a flood of Redis
    /// reads (past the bound a sid this host never saw is simply unknown).
    lookup_slots: Arc<tokio::sync::Semaphore>,
}

/// Sid lookups by outcome.
#[derive(Debug, Default)]
pub struct LookupCounters {
    /// Found in Redis.
    pub hit: AtomicU64,
    /// Not in Redis.
    pub miss: AtomicU64,
    /// Redis failed or was too slow.
    pub error: AtomicU64,
    /// Not asked: Redis is down, or too many lookups are in flight.
    pub skipped: AtomicU64,
    /// Learned sessions dropped because the write queue was full.
    pub dropped: AtomicU64,
}

/// The cluster as `rtsup status --cluster` shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ClusterSummary {
    /// The cluster's name.
    pub name: String,
    /// This host.
    pub me: String,
    /// Redis answers.
    pub redis_up: bool,
    /// Since when it does not (RFC 3339), when down.
    pub redis_down_since: Option<String>,
    /// Why, when known (`WRONGPASS …`, a refused connection).
    #[serde(default)]
    pub redis_error: Option<String>,
    /// This host's record and the others', by address.
    pub hosts: Vec<HostRecord>,
}

impl Cluster {
    /// Connect (in the background: a Redis that is down now is retried) and return the
    /// cluster with the receiver of the other hosts' view.
    pub fn new(config: &ClusterConfig) -> anyhow::Result<(Arc<Self>, watch::Receiver<View>)> {
        let client = builder(&config.redis)?.build()?;
        client.connect();
        let (view, view_rx) = watch::channel(View::new());
        let (learned, learned_rx) = mpsc::channel(LEARNED_QUEUE);
        let cluster = Arc::new(Self {
            config: config.clone(),
            client,
            up: AtomicBool::new(true),
            down_since: Mutex::new(None),
            view,
            learned,
            sids: OnceLock::new(),
            lookups: LookupCounters::default(),
            left: AtomicBool::new(false),
            last_error: Mutex::new(None),
            instance: format!("{:016x}", rand_u64()),
            epoch: Mutex::new(None),
            clash_warned: Mutex::new(None),
            lookup_slots: Arc::new(tokio::sync::Semaphore::new(MAX_LOOKUPS)),
        });
        tokio::spawn(write_sessions(cluster.clone(), learned_rx));
        tokio::spawn(republish_on_reconnect(Arc::downgrade(&cluster)));
        Ok((cluster, view_rx))
    }

    /// This host's name in the cluster.
    pub fn me(&self) -> SocketAddr {
        self.config.advertise
    }

    /// The directory the balancer asks and tells.
    pub fn directory(self: &Arc<Self>) -> Arc<dyn SessionDirectory> {
        Arc::new(Directory(self.clone()))
    }

    /// The balancer's sid table, once it runs.
    pub fn attach_sids(&self, sids: Arc<SidTable>) {
        let _ = self.sids.set(sids);
    }

    /// Whether Redis answers.
    pub fn redis_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn host_key(&self, host: SocketAddr) -> String {
        format!("{{rtsup:{}}}:host:{host}", self.config.name)
    }

    fn hosts_key(&self) -> String {
        format!("{{rtsup:{}}}:hosts", self.config.name)
    }

    fn channel(&self) -> String {
        format!("rtsup:{}:members", self.config.name)
    }

    fn sid_key(&self, sid: &str) -> String {
        format!("rtsup:{}:sid:{sid}", self.config.name)
    }

    /// Note the outcome of a command: a change of Redis's state is logged once, and coming
    /// back writes every session this host owns again.
    fn answered(self: &Arc<Self>, result: Result<(), &fred::error::Error>) {
        let ok = result.is_ok();
        let was = self.up.swap(ok, Ordering::Relaxed);
        if was == ok {
            return;
        }
        let mut since = match self.down_since.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        if ok {
            *since = None;
            if let Ok(mut last) = self.last_error.lock() {
                *last = None;
            }
            info!("cluster: Redis answers again; writing this host's sessions again");
            tokio::spawn(republish(self.clone()));
        } else {
            *since = Some(SystemTime::now());
            let error = result.err().map(ToString::to_string).unwrap_or_default();
            warn!(
                redis = %redact(&self.config.redis),
                error,
                "cluster: Redis does not answer; routing this host's sessions only until it does"
            );
            // The shared client hides the first error behind its retries: ask once for it.
            let cluster = self.clone();
            tokio::spawn(async move {
                if let Some(why) = diagnose(&cluster.config.redis).await {
                    warn!(redis = %redact(&cluster.config.redis), error = why, "cluster: why Redis does not answer");
                    if let Ok(mut last) = cluster.last_error.lock() {
                        *last = Some(why);
                    }
                }
            });
        }
    }

    /// Publish this host's workers (of `apps`) on every fleet change and every heartbeat;
    /// read the other hosts on every message and heartbeat. Runs until the fleet is gone.
    pub async fn run(self: Arc<Self>, mut fleet: watch::Receiver<Fleet>, apps: Vec<String>) {
        let subscriber =
            match builder(&self.config.redis).and_then(|b| Ok(b.build_subscriber_client()?)) {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "cluster: cannot build the Redis subscriber");
                    return;
                }
            };
        subscriber.connect();
        // Re-subscribes after every reconnect.
        let _resubscribe = subscriber.manage_subscriptions();
        let mut messages = subscriber.message_rx();
        {
            let subscriber = subscriber.clone();
            let channel = self.channel();
            tokio::spawn(async move {
                // Retried until it takes (Redis may be down at start).
                while let Err(e) = subscriber.subscribe(channel.clone()).await {
                    debug!(error = %e, "cluster: subscribe failed; retrying");
                    tokio::time::sleep(HEARTBEAT).await;
                }
            });
        }
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut record =
            view::local_record(self.me(), &self.instance, &fleet.borrow_and_update(), &apps);
        loop {
            tokio::select! {
                changed = fleet.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let fresh = view::local_record(self.me(), &self.instance, &fleet.borrow_and_update(), &apps);
                    if fresh != record {
                        record = fresh;
                        self.publish(&record, true).await;
                    }
                }
                _ = tick.tick() => {
                    self.publish(&record, false).await;
                    self.read_view().await;
                }
                msg = messages.recv() => {
                    match msg {
                        Ok(m) if m.value.as_str().is_some_and(|h| h != self.me().to_string()) => {
                            self.read_view().await;
                        }
                        Ok(_) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            self.read_view().await;
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                            messages = subscriber.message_rx();
                        }
                    }
                }
            }
        }
        let _ = subscriber.quit().await;
    }

    /// Write this host's record (and tell the others when `announce`).
    async fn publish(self: &Arc<Self>, record: &HostRecord, announce: bool) {
        if self.left.load(Ordering::Relaxed) {
            return;
        }
        let Ok(json) = serde_json::to_string(record) else {
            return;
        };
        let me = self.me().to_string();
        let result: Result<(), fred::error::Error> = async {
            // The previous value comes back: another process writing this address is seen.
            let previous: Option<String> = self
                .client
                .set(
                    self.host_key(self.me()),
                    json,
                    Some(Expiration::PX(RECORD_TTL.as_millis() as i64)),
                    None,
                    true,
                )
                .await?;
            self.check_clash(previous.as_deref());
            self.client
                .sadd::<(), _, _>(self.hosts_key(), me.clone())
                .await?;
            self.check_epoch().await?;
            if announce {
                self.client
                    .publish::<(), _, _>(self.channel(), me.clone())
                    .await?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = &result {
            debug!(error = %e, "cluster: cannot write this host's record");
        }
        self.answered(result.as_ref().map(|_| ()));
    }

    /// Warn (once a minute) when the record this host just replaced was another process's:
    /// two rtsup advertise the same address, and their sessions would be mixed up.
    fn check_clash(&self, previous: Option<&str>) {
        let Some(other) = previous
            .and_then(|p| serde_json::from_str::<HostRecord>(p).ok())
            .filter(|r| !r.instance.is_empty() && r.instance != self.instance)
        else {
            return;
        };
        let mut warned = match self.clash_warned.lock() {
            Ok(w) => w,
            Err(p) => p.into_inner(),
        };
        if warned.is_some_and(|t| t.elapsed() < Duration::from_secs(60)) {
            return;
        }
        *warned = Some(std::time::Instant::now());
        tracing::error!(
            advertise = %self.me(),
            other = other.instance,
            "cluster: another rtsup advertises this host's address: give each host its own `advertise`"
        );
    }

    /// Compare the data set's epoch with the one last seen (creating it when missing); a
    /// different one means Redis lost its data: write this host's sessions again.
    async fn check_epoch(self: &Arc<Self>) -> Result<(), fred::error::Error> {
        let key = format!("{{rtsup:{}}}:epoch", self.config.name);
        let _: Option<String> = self
            .client
            .set(
                &key,
                format!("{:016x}", rand_u64()),
                None,
                Some(fred::types::SetOptions::NX),
                false,
            )
            .await?;
        let now: Option<String> = self.client.get(&key).await?;
        let changed = {
            let mut epoch = match self.epoch.lock() {
                Ok(e) => e,
                Err(p) => p.into_inner(),
            };
            let changed = epoch.is_some() && *epoch != now;
            *epoch = now;
            changed
        };
        if changed {
            warn!(
                "cluster: Redis lost its data (restarted empty, flushed or failed over); writing this host's sessions again"
            );
            tokio::spawn(republish(self.clone()));
        }
        Ok(())
    }

    /// Read every other host's record into the view (kept as it was when Redis fails).
    async fn read_view(self: &Arc<Self>) {
        let members: Vec<String> = match self.client.smembers(self.hosts_key()).await {
            Ok(m) => m,
            Err(e) => {
                debug!(error = %e, "cluster: cannot list the hosts");
                self.answered(Err(&e));
                return;
            }
        };
        let me = self.me().to_string();
        let others: Vec<SocketAddr> = members
            .iter()
            .filter(|m| **m != me)
            .filter_map(|m| m.parse().ok())
            .collect();
        let mut fresh = View::new();
        if !others.is_empty() {
            let keys: Vec<String> = others.iter().map(|h| self.host_key(*h)).collect();
            let records: Vec<Option<String>> = match self.client.mget(keys).await {
                Ok(r) => r,
                Err(e) => {
                    debug!(error = %e, "cluster: cannot read the hosts");
                    self.answered(Err(&e));
                    return;
                }
            };
            for (host, record) in others.iter().zip(records) {
                match record.and_then(|r| serde_json::from_str::<HostRecord>(&r).ok()) {
                    Some(r) if r.host == *host => {
                        fresh.insert(*host, r);
                    }
                    // Expired: the host is gone (it adds itself again if it comes back).
                    _ => {
                        let _ = self
                            .client
                            .srem::<(), _, _>(self.hosts_key(), host.to_string())
                            .await;
                    }
                }
            }
        }
        self.answered(Ok(()));
        self.view.send_if_modified(|old| {
            let changed = *old != fresh;
            if changed {
                let gone: Vec<_> = old.keys().filter(|h| !fresh.contains_key(h)).collect();
                let new: Vec<_> = fresh.keys().filter(|h| !old.contains_key(h)).collect();
                if !gone.is_empty() || !new.is_empty() {
                    info!(?new, ?gone, hosts = fresh.len(), "cluster: hosts changed");
                }
                *old = fresh;
            }
            changed
        });
    }

    /// Leave the cluster now (the daemon stops): the others drop this host at once.
    pub async fn leave(&self) {
        self.left.store(true, Ordering::Relaxed);
        let me = self.me().to_string();
        let _ = tokio::time::timeout(COMMAND_TIMEOUT, async {
            // Only this process's record (another one may advertise the same address).
            let current: Option<String> = self
                .client
                .get(self.host_key(self.me()))
                .await
                .ok()
                .flatten();
            let ours = current
                .and_then(|c| serde_json::from_str::<HostRecord>(&c).ok())
                .is_some_and(|r| r.instance == self.instance);
            if !ours {
                return;
            }
            let _ = self.client.del::<(), _>(self.host_key(self.me())).await;
            let _ = self
                .client
                .srem::<(), _, _>(self.hosts_key(), me.clone())
                .await;
            let _ = self.client.publish::<(), _, _>(self.channel(), me).await;
        })
        .await;
    }

    /// The status: this host and the others as last seen.
    pub fn summary(&self, fleet: &Fleet, apps: &[String]) -> ClusterSummary {
        let mut hosts = vec![view::local_record(self.me(), &self.instance, fleet, apps)];
        hosts.extend(self.view.borrow().values().cloned());
        let down_since = match self.down_since.lock() {
            Ok(s) => *s,
            Err(p) => *p.into_inner(),
        };
        ClusterSummary {
            name: self.config.name.clone(),
            me: self.me().to_string(),
            redis_up: self.redis_up(),
            redis_error: self.last_error.lock().ok().and_then(|e| e.clone()),
            redis_down_since: down_since.map(|t| {
                chrono::DateTime::<chrono::Utc>::from(t)
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            }),
            hosts,
        }
    }
}

/// A random number (a process id is not unique across hosts).
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS's randomness.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// A fred builder for `url` with a reconnect policy and bounded commands; a Redis that does
/// not answer at start is retried like one that went away.
pub fn builder(url: &str) -> anyhow::Result<Builder> {
    let mut config = Config::from_url(url)?;
    config.fail_fast = false;
    let mut b = Builder::from_config(config);
    b.with_performance_config(|p| p.default_command_timeout = COMMAND_TIMEOUT)
        .with_connection_config(|c| c.connection_timeout = COMMAND_TIMEOUT)
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2));
    Ok(b)
}

/// `url` without its password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://…@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// Write learned sessions, many at once, until the cluster is gone.
async fn write_sessions(cluster: Arc<Cluster>, mut rx: mpsc::Receiver<(String, String)>) {
    let mut batch = Vec::with_capacity(256);
    while rx.recv_many(&mut batch, 256).await > 0 {
        if !cluster.redis_up() {
            // Written again, all of them, when Redis is back.
            batch.clear();
            continue;
        }
        let ttl = cluster.config.session_ttl.as_secs().max(1) as i64;
        let writes = batch.drain(..).map(|(sid, owner)| {
            let key = cluster.sid_key(&sid);
            let client = cluster.client.clone();
            async move {
                client
                    .set::<(), _, _>(key, owner, Some(Expiration::EX(ttl)), None, false)
                    .await
            }
        });
        let results = futures::future::join_all(writes).await;
        if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
            cluster.answered(Err(e));
        }
    }
}

/// After every reconnection, write this host's sessions again: a Redis that restarted from an
/// older snapshot (or a replica that lagged) keeps the epoch but lost the newest sessions.
async fn republish_on_reconnect(cluster: std::sync::Weak<Cluster>) {
    let Some(mut reconnects) = cluster.upgrade().map(|c| c.client.reconnect_rx()) else {
        return;
    };
    while reconnects.recv().await.is_ok() {
        let Some(c) = cluster.upgrade() else { return };
        if c.left.load(Ordering::Relaxed) {
            return;
        }
        info!("cluster: reconnected to Redis; writing this host's sessions again");
        tokio::spawn(republish(c));
    }
}

/// Why Redis does not answer, asked on a connection of its own that reports its first error
/// (the shared client retries quietly): a refused password, a refused connection, a timeout.
async fn diagnose(url: &str) -> Option<String> {
    let mut config = Config::from_url(url).ok()?;
    config.fail_fast = true;
    let mut b = Builder::from_config(config);
    b.with_connection_config(|c| c.connection_timeout = Duration::from_secs(2));
    let client = b.build().ok()?;
    let result = tokio::time::timeout(Duration::from_secs(3), client.init()).await;
    let _ = client.quit().await;
    match result {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("no answer within 3 s".into()),
    }
}

/// Write every session this host owns again (after an outage).
async fn republish(cluster: Arc<Cluster>) {
    let Some(sids) = cluster.sids.get() else {
        return;
    };
    let me = cluster.me().to_string();
    let mut n = 0usize;
    for (sid, owner) in sids.sessions() {
        if balancer::cluster::is_remote(&owner) {
            continue;
        }
        if cluster
            .learned
            .send((sid, format!("{me}/{owner}")))
            .await
            .is_err()
        {
            return;
        }
        n += 1;
    }
    info!(sessions = n, "cluster: this host's sessions written again");
}

/// The balancer's view of the cluster's session directory.
struct Directory(Arc<Cluster>);

impl SessionDirectory for Directory {
    fn learned(&self, sid: &str, global: &str) {
        if self
            .0
            .learned
            .try_send((sid.to_string(), global.to_string()))
            .is_err()
        {
            self.0.lookups.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn lookup(&self, sid: &str) -> Pin<Box<dyn Future<Output = Option<String>> + Send + 'static>> {
        let cluster = self.0.clone();
        let key = cluster.sid_key(sid);
        Box::pin(async move {
            let slot = cluster.lookup_slots.clone().try_acquire_owned();
            let (true, Ok(_slot)) = (cluster.redis_up(), slot) else {
                cluster.lookups.skipped.fetch_add(1, Ordering::Relaxed);
                return None;
            };
            // The owner writes a sid just after its handshake answer left: a client quick
            // enough to reach this host first is told again shortly, not "unknown".
            for wait in MISS_RETRIES {
                tokio::time::sleep(wait).await;
                let got: Result<Result<Option<String>, _>, _> =
                    tokio::time::timeout(LOOKUP_TIMEOUT, cluster.client.get(key.clone())).await;
                match got {
                    Ok(Ok(Some(owner))) => {
                        cluster.lookups.hit.fetch_add(1, Ordering::Relaxed);
                        return Some(owner);
                    }
                    Ok(Ok(None)) => continue,
                    _ => {
                        cluster.lookups.error.fetch_add(1, Ordering::Relaxed);
                        return None;
                    }
                }
            }
            cluster.lookups.miss.fetch_add(1, Ordering::Relaxed);
            None
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            redact("redis://:secret@10.0.0.5:6379"),
            "redis://…@10.0.0.5:6379"
        );
        assert_eq!(redact("redis://10.0.0.5:6379"), "redis://10.0.0.5:6379");
    }
}
