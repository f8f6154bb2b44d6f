//! The answer cache of the DNS key source: how long an answer may be
//! reused (positive for the record TTL, negative for the SOA minimum, both
//! capped; failures briefly). Keeping the answers, the capacity and the
//! sharing of one query among concurrent lookups are the shared
//! [`crate::keys::cache`]'s.

use std::future::Future;
use std::time::{Duration, SystemTime};

use hickory_resolver::proto::rr::{Name, RecordType};

use super::Answer;
pub use crate::keys::cache::CACHE_CAPACITY;
use crate::keys::cache::SharedCache;

/// Longest a positive answer is cached, whatever its TTL.
pub const MAX_POSITIVE_TTL: Duration = Duration::from_secs(3600);
/// Longest a negative answer is cached, whatever the SOA says.
pub const MAX_NEGATIVE_TTL: Duration = Duration::from_secs(900);
/// How long a failed or bogus answer is cached: long enough to spare the
/// resolver a burst of retries, short enough to recover quickly.
pub const FAILURE_TTL: Duration = Duration::from_secs(30);

/// Answers by owner name and record type.
pub(super) struct AnswerCache {
    inner: SharedCache<(Name, RecordType), Answer>,
}

impl AnswerCache {
    /// An empty cache.
    pub(super) fn new() -> Self {
        AnswerCache {
            inner: SharedCache::new(),
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
        self.inner
            .get_or_fetch(&(name.clone(), rtype), || async {
                let answer = fetch().await;
                let ttl = answer_ttl(&answer);
                (answer, ttl)
            })
            .await
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
        self.inner.insert((name, rtype), answer, ttl, fetched);
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
