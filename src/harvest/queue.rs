//! The harvesting queue: messages whose headers say they may teach a key
//! ([`super::screen`]) wait here, after their own reply, for one worker
//! that verifies them ([`super::examine`], on the blocking pool) and
//! records what they teach in the key store. The queue is bounded: when
//! it is full a message is not examined (counted `queue_full`), never
//! delayed. When the store fails, harvesting pauses for [`PAUSE`] (the
//! `harvest_paused` gauge says so) and messages offered meanwhile are
//! counted `store_failed`; the next message after the pause tries again.

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

use super::{Candidate, examine};
use crate::backend::Registry;
use crate::keys::learned::LearnedSource;
use crate::message::HeaderField;
use crate::metrics::Metrics;
use crate::spool::Spool;
use crate::store::{Learned, Store};

/// How long harvesting rests after the key store failed.
pub const PAUSE: Duration = Duration::from_secs(5);

/// One message waiting to be examined.
pub struct Job {
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
}

/// The queue of one engine; its worker starts with the first message and
/// ends when the engine is gone and the queue is empty.
pub struct Harvester {
    sender: mpsc::Sender<Job>,
    waiting: Mutex<Option<(mpsc::Receiver<Job>, Worker)>>,
    metrics: Metrics,
    max_message_bytes: u64,
}

impl Harvester {
    /// A queue of `capacity` messages, recording into `store`.
    pub fn new(
        capacity: usize,
        max_message_bytes: u64,
        store: Store,
        registry: Arc<Registry>,
        metrics: Metrics,
        learned: Option<Arc<LearnedSource>>,
    ) -> Self {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        let worker = Worker {
            store,
            registry,
            metrics: metrics.clone(),
            learned,
            paused_until: None,
        };
        Harvester {
            sender,
            waiting: Mutex::new(Some((receiver, worker))),
            metrics,
            max_message_bytes,
        }
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
    pub fn offer(&self, job: Job) {
        let waiting = match self.waiting.lock() {
            Ok(mut w) => w.take(),
            Err(p) => p.into_inner().take(),
        };
        if let Some((receiver, worker)) = waiting {
            tokio::spawn(worker.run(receiver));
        }
        if let Err(e) = self.sender.try_send(job) {
            let job = match e {
                mpsc::error::TrySendError::Full(j) | mpsc::error::TrySendError::Closed(j) => j,
            };
            tracing::info!(
                "{}: harvest queue full; the message is not examined",
                job.qid
            );
            self.metrics.harvested("queue_full");
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
        let qid = job.qid.clone();
        if self.paused_until.is_some_and(|t| Instant::now() < t) {
            self.metrics.harvested("store_failed");
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
