//! The harvesting queue: messages whose headers say they may teach a key
//! ([`super::screen`]) wait here, after their own reply, for one worker
//! that verifies them ([`super::examine`], on the blocking pool) and
//! records what they teach in the key store. Its cost is bounded three
//! ways, none of which delays a message:
//!
//! * a sender whose key was confirmed within `harvest.recheck_secs` is not
//!   examined again (`recent`): examining a signed message costs some
//!   hundred microseconds of CPU, several times all else the milter does
//!   with it, and a stream of mail comes mostly from known senders;
//! * at most `harvest.max_per_second` messages are examined
//!   (`rate_limited` beyond), so a flood of signed mail from new senders
//!   takes a bounded share of the CPU;
//! * the queue is bounded (`queue_full` beyond).
//!
//! When the store fails, harvesting pauses for [`PAUSE`] (the
//! `harvest_paused` gauge says so) and messages offered meanwhile are
//! counted `store_failed`; the next message after the pause tries again.

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

use super::{Candidate, examine};
use crate::address::Address;
use crate::backend::Registry;
use crate::keys::learned::LearnedSource;
use crate::material::Method;
use crate::message::HeaderField;
use crate::metrics::Metrics;
use crate::spool::Spool;
use crate::store::{Learned, Store, store_key};

/// How long harvesting rests after the key store failed.
pub const PAUSE: Duration = Duration::from_secs(5);

/// Senders remembered as recently confirmed, at most (beyond it the
/// memory starts afresh: it only saves work).
const RECENT_CAPACITY: usize = 50_000;

/// Bytes the queued messages may hold in memory together (header fields,
/// and bodies not spooled to disk): besides the queue's length, so that
/// 256 messages with a megabyte of header fields each cannot take 256 MiB.
pub const MAX_QUEUED_BYTES: usize = 32 * 1_048_576;

/// A "queue full" line at most this often (the metric counts each).
const LOG_EVERY: Duration = Duration::from_secs(10);

/// When each sender's key was last confirmed, by address, per method
/// (S/MIME, OpenPGP).
type Confirmed = HashMap<String, [Option<Instant>; 2]>;

/// Senders whose key was confirmed lately.
struct Recent {
    ttl: Duration,
    seen: Mutex<Confirmed>,
}

fn slot(method: Method) -> usize {
    match method {
        Method::Smime => 0,
        Method::OpenPgp => 1,
    }
}

impl Recent {
    fn lock(&self) -> std::sync::MutexGuard<'_, Confirmed> {
        match self.seen.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Whether `who` (the store's form) confirmed each method lately.
    fn fresh(&self, who: &str) -> [bool; 2] {
        if self.ttl.is_zero() {
            return [false; 2];
        }
        let seen = self.lock();
        let Some(at) = seen.get(who) else {
            return [false; 2];
        };
        at.map(|t| t.is_some_and(|t| t.elapsed() < self.ttl))
    }

    fn confirm(&self, who: &str, method: Method) {
        if self.ttl.is_zero() {
            return;
        }
        let mut seen = self.lock();
        if seen.len() >= RECENT_CAPACITY && !seen.contains_key(who) {
            let ttl = self.ttl;
            seen.retain(|_, at| at.iter().flatten().any(|t| t.elapsed() < ttl));
            if seen.len() >= RECENT_CAPACITY {
                seen.clear();
            }
        }
        seen.entry(who.to_owned()).or_default()[slot(method)] = Some(Instant::now());
    }
}

/// A token bucket: `rate` examinations a second, as many in a burst.
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u32) -> Bucket {
        let rate = f64::from(rate.max(1));
        Bucket {
            rate,
            tokens: rate,
            at: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.rate);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// One message waiting to be examined.
pub struct Job {
    /// What it holds in memory, counted against [`MAX_QUEUED_BYTES`].
    pub(crate) held: usize,
    /// The queue id, for the log.
    pub qid: String,
    /// What its header promised.
    pub candidate: Candidate,
    /// Its header fields.
    pub headers: Vec<HeaderField>,
    /// Its body, when a signature is to be verified.
    pub body: Option<Spool>,
}

/// What the worker needs.
struct Worker {
    store: Store,
    registry: Arc<Registry>,
    metrics: Metrics,
    learned: Option<Arc<LearnedSource>>,
    paused_until: Option<Instant>,
    recent: Arc<Recent>,
    bucket: Bucket,
    queued_bytes: Arc<AtomicUsize>,
}

/// The queue of one engine; its worker starts with the first message and
/// ends when the engine is gone and the queue is empty.
pub struct Harvester {
    sender: mpsc::Sender<Job>,
    waiting: Mutex<Option<(mpsc::Receiver<Job>, Worker)>>,
    metrics: Metrics,
    max_message_bytes: u64,
    recent: Arc<Recent>,
    logged_full: Mutex<Option<Instant>>,
    queued_bytes: Arc<AtomicUsize>,
}

impl Harvester {
    /// A queue as `[harvest]` says, recording into `store`.
    pub fn new(
        settings: &crate::config::HarvestConfig,
        store: Store,
        registry: Arc<Registry>,
        metrics: Metrics,
        learned: Option<Arc<LearnedSource>>,
    ) -> Self {
        let (sender, receiver) = mpsc::channel(settings.queue.max(1));
        let recent = Arc::new(Recent {
            ttl: Duration::from_secs(settings.recheck_secs),
            seen: Mutex::new(HashMap::new()),
        });
        let worker = Worker {
            store,
            registry,
            metrics: metrics.clone(),
            learned,
            paused_until: None,
            recent: Arc::clone(&recent),
            bucket: Bucket::new(settings.max_per_second),
            queued_bytes: Arc::new(AtomicUsize::new(0)),
        };
        let queued_bytes = Arc::clone(&worker.queued_bytes);
        Harvester {
            sender,
            waiting: Mutex::new(Some((receiver, worker))),
            metrics,
            max_message_bytes: settings.max_message_bytes,
            recent,
            logged_full: Mutex::new(None),
            queued_bytes,
        }
    }

    /// Leaves out what `from` confirmed lately (counted `recent`): whether
    /// anything of `smime` and `autocrypt` is left to examine.
    pub fn still_to_examine(&self, from: &Address, smime: &mut bool, autocrypt: &mut bool) -> bool {
        if self.recent.ttl.is_zero() {
            return *smime || *autocrypt;
        }
        let fresh = self.recent.fresh(&store_key(from));
        for (wanted, method) in [
            (&mut *smime, Method::Smime),
            (&mut *autocrypt, Method::OpenPgp),
        ] {
            if *wanted && fresh[slot(method)] {
                *wanted = false;
                self.metrics.harvested("recent");
            }
        }
        *smime || *autocrypt
    }

    /// The most body bytes a message may have to be examined.
    pub fn max_message_bytes(&self) -> u64 {
        self.max_message_bytes
    }

    /// Counts a message harvesting will not look at (`too_large`,
    /// `not_authenticated`).
    pub fn skipped(&self, result: &'static str) {
        self.metrics.harvested(result);
    }

    /// Queues `job` without waiting; a full queue drops it (counted).
    /// Must run on the tokio runtime (the worker starts here).
    pub fn offer(&self, mut job: Job) {
        let waiting = match self.waiting.lock() {
            Ok(mut w) => w.take(),
            Err(p) => p.into_inner().take(),
        };
        if let Some((receiver, worker)) = waiting {
            tokio::spawn(worker.run(receiver));
        }
        job.held = job
            .headers
            .iter()
            .map(|h| h.name.len() + h.value.len())
            .sum::<usize>()
            + job
                .body
                .as_ref()
                .filter(|b| !b.is_on_disk())
                .map_or(0, |b| usize::try_from(b.len()).unwrap_or(usize::MAX));
        let held = job.held;
        let room = self
            .queued_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
                q.checked_add(held).filter(|n| *n <= MAX_QUEUED_BYTES)
            })
            .is_ok();
        let sent = if room {
            self.sender.try_send(job).map_err(|e| {
                self.queued_bytes.fetch_sub(held, Ordering::Relaxed);
                match e {
                    mpsc::error::TrySendError::Full(j) | mpsc::error::TrySendError::Closed(j) => j,
                }
            })
        } else {
            Err(job)
        };
        if let Err(job) = sent {
            self.metrics.harvested("queue_full");
            let mut last = match self.logged_full.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            if last.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                *last = Some(Instant::now());
                tracing::info!(
                    "{}: harvest queue full; the message is not examined (the next ones for \
                     {} s are counted, not logged)",
                    job.qid,
                    LOG_EVERY.as_secs()
                );
            }
        }
    }
}

impl Worker {
    async fn run(mut self, mut receiver: mpsc::Receiver<Job>) {
        while let Some(job) = receiver.recv().await {
            self.one(job).await;
        }
    }

    async fn one(&mut self, job: Job) {
        self.queued_bytes.fetch_sub(job.held, Ordering::Relaxed);
        let qid = job.qid.clone();
        if self.paused_until.is_some_and(|t| Instant::now() < t) {
            self.metrics.harvested("store_failed");
            return;
        }
        if !self.bucket.take() {
            self.metrics.harvested("rate_limited");
            return;
        }
        let registry = Arc::clone(&self.registry);
        let examined = tokio::task::spawn_blocking(move || {
            let mut body = Vec::new();
            if let Some(spool) = &job.body
                && let Err(e) = spool.reader().read_to_end(&mut body)
            {
                return Err(format!("reading the spooled body: {e}"));
            }
            Ok(examine(
                &job.candidate,
                &job.headers,
                &body,
                &registry,
                SystemTime::now(),
            ))
        })
        .await;
        let results = match examined {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::warn!("{qid}: harvest: {e}");
                self.metrics.harvested("malformed");
                return;
            }
            Err(e) => {
                tracing::error!("{qid}: harvest task failed: {e}");
                self.metrics.harvested("malformed");
                return;
            }
        };
        for result in results {
            let key = match result {
                Ok(k) => k,
                Err(refusal) => {
                    tracing::info!("{qid}: harvest: nothing learned: {refusal}");
                    self.metrics.harvested(refusal.as_str());
                    continue;
                }
            };
            match self.store.learn(&key).await {
                Ok(outcome) => {
                    self.resume();
                    let (result, what) = match &outcome {
                        Learned::New => ("learned", "new".to_owned()),
                        Learned::Replaced { previous } => {
                            ("learned", format!("replacing {previous}"))
                        }
                        Learned::Refreshed => ("known", "already known".to_owned()),
                        Learned::Older => ("older", "older than the one known".to_owned()),
                    };
                    self.recent.confirm(&key.address, key.method);
                    if result == "learned" {
                        self.metrics.key_learned(key.method);
                        if let Some(l) = &self.learned {
                            l.forget(&key.address, key.method);
                        }
                    }
                    tracing::info!(
                        "{qid}: harvest: {} key {} for {} from {}: {what}",
                        key.method,
                        key.fingerprint,
                        key.address,
                        key.how.as_str()
                    );
                    self.metrics.harvested(result);
                }
                Err(e) => {
                    tracing::warn!(
                        "{qid}: harvest: key store failed ({e}); harvesting pauses for {} s",
                        PAUSE.as_secs()
                    );
                    self.metrics.harvested("store_failed");
                    self.metrics.harvest_paused(true);
                    self.paused_until = Some(Instant::now() + PAUSE);
                    return;
                }
            }
        }
    }

    fn resume(&mut self) {
        if self.paused_until.take().is_some() {
            self.metrics.harvest_paused(false);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use crate::address::Address;
    use crate::store::StoreSettings;

    fn job(qid: usize, header_bytes: usize) -> Job {
        Job {
            held: 0,
            qid: format!("Q{qid}"),
            candidate: Candidate {
                from: Address::parse("alice@example.org").unwrap(),
                by: super::super::AuthBy::Dkim,
                smime: false,
                autocrypt: true,
                autocrypt_signed: true,
                effective: 0,
            },
            headers: vec![HeaderField::new("X-Big", vec![b'x'; header_bytes])],
            body: None,
        }
    }

    /// The queue holds at most [`MAX_QUEUED_BYTES`] of header fields, however
    /// many messages its length allows.
    #[tokio::test(flavor = "current_thread")]
    async fn the_queue_is_bounded_by_bytes_too() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreSettings {
            url: format!("sqlite://{}", dir.path().join("k.sqlite").display()),
            password_file: None,
            ca_file: None,
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
        })
        .unwrap();
        let metrics = Metrics::new();
        let settings = crate::config::HarvestConfig {
            queue: 1_000,
            ..crate::config::HarvestConfig::default()
        };
        let h = Harvester::new(
            &settings,
            store,
            Arc::new(Registry::new()),
            metrics.clone(),
            None,
        );
        // The worker has not run yet (this runtime has one thread and the
        // test does not yield): everything offered waits.
        let mib = 1_048_576;
        for i in 0..40 {
            h.offer(job(i, mib));
        }
        let dropped = metrics
            .render()
            .lines()
            .find(|l| l.starts_with("autoencrypt_harvest_messages_total{result=\"queue_full\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap();
        let fit = MAX_QUEUED_BYTES / (mib + "X-Big".len());
        assert_eq!(dropped as usize, 40 - fit);
        assert!(h.queued_bytes.load(Ordering::Relaxed) <= MAX_QUEUED_BYTES);
    }
}
