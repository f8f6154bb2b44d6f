//! An in-memory key source for unit tests of the key service and of
//! session logic: answers are set by the test, lookups are counted.
//! Integration tests use the real sources (nsd/unbound, key files).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::address::Address;
use crate::keys::{KeySource, Lookup, LookupFuture, SourceKind, Traced, TracedFuture};
use crate::material::Method;

/// Answers by (address, method); anything not set is proven absent.
pub(crate) struct MemorySource {
    name: &'static str,
    kind: SourceKind,
    answers: Mutex<HashMap<(String, Method), Lookup>>,
    calls: AtomicUsize,
    cached: AtomicBool,
    silent: AtomicBool,
    delay: Mutex<Option<std::time::Duration>>,
}

impl MemorySource {
    pub(crate) fn new(name: &'static str) -> Self {
        Self::of_kind(name, SourceKind::Test)
    }

    /// A source that says it is of `kind` (for its trust and metrics).
    pub(crate) fn of_kind(name: &'static str, kind: SourceKind) -> Self {
        MemorySource {
            name,
            kind,
            answers: Mutex::new(HashMap::new()),
            calls: AtomicUsize::new(0),
            cached: AtomicBool::new(false),
            silent: AtomicBool::new(false),
            delay: Mutex::new(None),
        }
    }

    /// From now on lookups never complete (a server that never answers).
    pub(crate) fn go_silent(&self) {
        self.silent.store(true, Ordering::Relaxed);
    }

    /// From now on answers come after `d` (a slow server).
    pub(crate) fn set_delay(&self, d: std::time::Duration) {
        if let Ok(mut x) = self.delay.lock() {
            *x = Some(d);
        }
    }

    /// From now on answers say they came from the source's cache (or not).
    pub(crate) fn set_cached(&self, cached: bool) {
        self.cached.store(cached, Ordering::Relaxed);
    }

    /// From now on `addr`'s `method` lookup answers `lookup`.
    pub(crate) fn set(&self, addr: &str, method: Method, lookup: Lookup) {
        if let Ok(mut a) = self.answers.lock() {
            a.insert((addr.to_owned(), method), lookup);
        }
    }

    /// Lookups asked so far.
    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }
}

impl KeySource for MemorySource {
    fn kind(&self) -> SourceKind {
        self.kind
    }

    fn describe(&self) -> String {
        format!("memory source {}", self.name)
    }

    /// Whatever its kind: the tests give it S/MIME answers for any kind.
    fn serves(&self, _method: Method) -> bool {
        true
    }

    fn lookup<'a>(&'a self, addr: &'a Address, method: Method) -> LookupFuture<'a> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if self.silent.load(Ordering::Relaxed) {
            return Box::pin(std::future::pending());
        }
        let answer = self
            .answers
            .lock()
            .ok()
            .and_then(|a| a.get(&(addr.to_string(), method)).cloned())
            .unwrap_or(Lookup::NotFound);
        match self.delay.lock().ok().and_then(|d| *d) {
            Some(d) => Box::pin(async move {
                tokio::time::sleep(d).await;
                answer
            }),
            None => Box::pin(std::future::ready(answer)),
        }
    }

    fn lookup_traced<'a>(
        &'a self,
        addr: &'a Address,
        method: Method,
        _detail: bool,
    ) -> TracedFuture<'a> {
        let cached = self.cached.load(Ordering::Relaxed);
        Box::pin(async move {
            Traced {
                cached,
                ..Traced::plain(self.lookup(addr, method).await)
            }
        })
    }
}
