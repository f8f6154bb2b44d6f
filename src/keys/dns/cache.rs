//! The answer cache of the DNS key source: how long an answer may be
//! reused (positive for the record TTL, negative for the SOA minimum, both
//! capped; failures briefly), how many are kept, and the sharing of one
//! query among concurrent lookups of the same name (one `OnceCell` per
//! name and type).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use hickory_resolver::proto::rr::{Name, RecordType};
use tokio::sync::OnceCell;

use super::Answer;

/// Longest a positive answer is cached, whatever its TTL.
pub const MAX_POSITIVE_TTL: Duration = Duration::from_secs(3600);
/// Longest a negative answer is cached, whatever the SOA says.
pub const MAX_NEGATIVE_TTL: Duration = Duration::from_secs(900);
/// How long a failed or bogus answer is cached: long enough to spare the
/// resolver a burst of retries, short enough to recover quickly.
pub const FAILURE_TTL: Duration = Duration::from_secs(30);
/// Most answers kept in the cache.
pub const CACHE_CAPACITY: usize = 10_000;

type CacheKey = (Name, RecordType);
/// One name's answer, when it expires and when it arrived (the
/// provenance of keys read from it); empty while its query runs.
type Slot = Arc<OnceCell<(Answer, Instant, SystemTime)>>;

/// Answers by owner name and record type.
pub(super) struct AnswerCache {
    slots: Mutex<HashMap<CacheKey, Slot>>,
}

impl AnswerCache {
    /// An empty cache.
    pub(super) fn new() -> Self {
        AnswerCache {
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The answer for `name`'s `rtype`: a fresh cached one, or the one
    /// `fetch` produces, which concurrent callers of the same name share.
    /// The flag says whether this caller's `fetch` did not run (a cache
    /// hit or a shared in-flight query); the time is when the answer
    /// arrived.
    pub(super) async fn get_or_fetch<F, Fut>(
        &self,
        name: &Name,
        rtype: RecordType,
        fetch: F,
    ) -> (Answer, bool, SystemTime)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Answer>,
    {
        let slot = self.slot((name.clone(), rtype));
        let mut ran = false;
        let (answer, _, fetched) = slot
            .get_or_init(|| async {
                ran = true;
                let answer = fetch().await;
                let ttl = answer_ttl(&answer);
                (answer, Instant::now() + ttl, SystemTime::now())
            })
            .await;
        (answer.clone(), !ran, *fetched)
    }

    /// The live slot for `key`, or a new empty one in its place.
    fn slot(&self, key: CacheKey) -> Slot {
        // A panic elsewhere while holding the lock leaves the map itself
        // intact: keep using it.
        let mut cache = match self.slots.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        let now = Instant::now();
        let fresh = cache
            .get(&key)
            .filter(|s| s.get().is_none_or(|(_, expires, _)| *expires > now))
            .cloned();
        match fresh {
            Some(s) => s,
            None => {
                if cache.len() >= CACHE_CAPACITY {
                    evict(&mut cache, now);
                }
                let s: Slot = Arc::new(OnceCell::new());
                cache.insert(key, s.clone());
                s
            }
        }
    }

    /// Puts `answer`, arrived at `fetched`, in the cache for `ttl` (tests
    /// of the lookup path without a network).
    #[cfg(test)]
    pub(super) fn insert(
        &self,
        name: Name,
        rtype: RecordType,
        answer: Answer,
        ttl: Duration,
        fetched: SystemTime,
    ) {
        let slot: Slot = Arc::new(OnceCell::new_with(Some((
            answer,
            Instant::now() + ttl,
            fetched,
        ))));
        let mut cache = match self.slots.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        cache.insert((name, rtype), slot);
    }
}

fn evict(cache: &mut HashMap<CacheKey, Slot>, now: Instant) {
    cache.retain(|_, s| s.get().is_none_or(|(_, expires, _)| *expires > now));
    if cache.len() >= CACHE_CAPACITY {
        // Still full of live answers: start afresh rather than track
        // recency; the cache only saves queries.
        cache.retain(|_, s| s.get().is_none());
    }
}

/// How long an answer may be reused.
fn answer_ttl(answer: &Answer) -> Duration {
    match answer {
        Answer::Records { records, .. } => {
            let ttl = records.iter().map(|r| r.ttl).min().unwrap_or(0);
            Duration::from_secs(u64::from(ttl)).min(MAX_POSITIVE_TTL)
        }
        Answer::Empty { negative_ttl, .. } => match negative_ttl {
            Some(t) => Duration::from_secs(u64::from(*t)).min(MAX_NEGATIVE_TTL),
            // No SOA to go by: treat like a failure, reuse briefly.
            None => FAILURE_TTL,
        },
        Answer::Bogus(_) | Answer::Failed(_) => FAILURE_TTL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::FailReason;
    use crate::keys::dns::Validation;

    #[test]
    fn failure_answers_are_cached_briefly() {
        assert_eq!(
            answer_ttl(&Answer::Failed(FailReason::Timeout)),
            FAILURE_TTL
        );
        let denial = |t| Answer::Empty {
            validation: Validation::Secure,
            negative_ttl: Some(t),
        };
        assert_eq!(answer_ttl(&denial(120)), Duration::from_secs(120));
        assert_eq!(answer_ttl(&denial(86_400)), MAX_NEGATIVE_TTL);
        assert!(
            answer_ttl(&Answer::Records {
                records: Vec::new(),
                validation: Validation::Secure
            }) <= MAX_POSITIVE_TTL
        );
    }
}
