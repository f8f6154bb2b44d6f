//! The key service: the one way any caller — the milter at RCPT,
//! `policy explain`, `lookup`, `encrypt` — gets usable keys. It owns the
//! ordered key sources, the validation cache and the lookup metrics, and
//! turns "look the key up, then validate it" into one call,
//! [`KeyService::resolve`], whose answer is a value: validated recipients,
//! or why not.
//!
//! Each lookup says which sources it may ask and the lowest trust it
//! accepts ([`KeyChoice`], from the rule's `sources` and `min_trust`).
//! The chosen sources are asked highest trust first (the rule's order
//! decides among sources of one level); a source that cannot reach
//! `min_trust` is not asked, and a key below it is refused. A source
//! passes the question on when it has nothing to offer: a proof of
//! absence ([`Lookup::NotFound`]), an unsigned zone, or keys none of
//! which are for the address (that answer stands if no later source has
//! keys). Keys, bogus data or a failure are the answer — except a failure
//! of a source the rule tolerates (`tolerate_failures`), which is counted,
//! noted in the outcome and passes the question on. So a failure is never
//! "no key", and a lower source never overrides a higher one that has
//! keys (the operator's directory comes before DNS, DNS before WKD).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::address::Address;
use crate::backend::{Recipient, Registry};
use crate::config::Config;
use crate::keys::directory::DirectorySource;
use crate::keys::dns::{DnsSettings, DnsSetupError, DnsSource};
use crate::keys::history::KeyHistory;
use crate::keys::keyserver::KeyserverSource;
use crate::keys::ldap::{LdapSettings, LdapSetupError, LdapSource};
use crate::keys::learned::LearnedSource;
use crate::keys::pins::StorePins;
use crate::keys::validated::ValidationCache;
use crate::keys::web::{Hosts, WebClient, WebSettings, WebSetupError};
use crate::keys::wkd::WkdSource;
use crate::keys::{FailReason, KeySource, Lookup, SourceKind, Traced};
use crate::material::{KeyChoice, KeyMaterial, Method, Planned, RejectReason, Security};
use crate::metrics::Metrics;
use crate::policy::{KeyOutcome, MethodOutcome};
use crate::store::{Store, StoreError, StoreSettings};

/// The longest the sources together may take to answer one lookup (one
/// method of one recipient), whatever they do inside: past it the answer
/// is a timeout (a failure, never "no key"), and sources not yet asked get
/// no time. Each source bounds its own work first (DNS: `dns.timeout_ms`
/// per query; the web: `wkd.timeout_ms` per fetch); this backstop keeps
/// the sources asked one after another from holding the RCPT past
/// Postfix's `milter_command_timeout` (30 s by default), after which the
/// MTA would give up on the milter for the whole session.
pub const SOURCE_DEADLINE: Duration = Duration::from_secs(25);

/// The key sources `config` sets up, each with its trust, in the order
/// configured: the key directory when `keys.directory` is set, each
/// `[[ldap]]` directory (with its `trust`), DNS always, WKD unless
/// `wkd.enabled` is off, keyservers when `keyserver.urls` names any, and
/// the key store's learned keys always.
pub fn configured_sources(config: &Config) -> Vec<Planned> {
    let mut planned: Vec<Planned> = Vec::with_capacity(4 + config.ldap.len());
    if config.keys.directory.is_some() {
        planned.push(SourceKind::Directory.into());
    }
    planned.extend(config.ldap.iter().map(|l| Planned {
        kind: SourceKind::Ldap,
        trust: l.trust,
    }));
    planned.push(SourceKind::Dane.into());
    if config.wkd.enabled {
        planned.push(SourceKind::Wkd.into());
    }
    if !config.keyserver.urls.is_empty() {
        planned.push(SourceKind::Keyserver.into());
    }
    planned.push(SourceKind::Learned.into());
    planned
}

/// A key source cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum SourceSetupError {
    /// The DNS source (trust anchor, resolvers).
    #[error(transparent)]
    Dns(#[from] DnsSetupError),
    /// The HTTP client of the web sources (`wkd.ca_file`, TLS).
    #[error(transparent)]
    Web(#[from] WebSetupError),
    /// An `[[ldap]]` directory (its password or CA file, TLS).
    #[error(transparent)]
    Ldap(#[from] LdapSetupError),
    /// The key store (`[store]`).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Recipients' keys, found and validated.
pub struct KeyService {
    sources: Vec<Arc<dyn KeySource>>,
    registry: Arc<Registry>,
    validated: ValidationCache,
    metrics: Option<Metrics>,
    deadline: Duration,
    /// The key store, its pins and key history (none in unit tests of
    /// the chain).
    store: Option<StoreParts>,
}

/// What one source said during a [`KeyService::explain`].
#[derive(Clone, Debug)]
pub struct Step {
    /// The source, described ("local key directory /etc/…").
    pub source: String,
    /// Its answer's kind ([`Lookup::kind`]).
    pub answer: &'static str,
    /// What it asked on the way (DNS: each owner name and its answer).
    pub asked: Vec<String>,
}

/// A resolution with its trace, for `policy explain` and `lookup`.
pub struct Explained {
    /// The outcome, as [`KeyService::resolve`] gives it.
    pub outcome: MethodOutcome<Recipient>,
    /// Every source asked, in order.
    pub steps: Vec<Step>,
    /// The key material the deciding source returned (to describe keys).
    pub found: Vec<KeyMaterial>,
}

impl KeyService {
    /// A service asking `sources` in order.
    pub fn new(
        sources: Vec<Arc<dyn KeySource>>,
        registry: Arc<Registry>,
        metrics: Option<Metrics>,
    ) -> Self {
        KeyService {
            sources,
            registry,
            validated: ValidationCache::new(),
            metrics,
            deadline: SOURCE_DEADLINE,
            store: None,
        }
    }

    /// The same, with `deadline` instead of [`SOURCE_DEADLINE`] (tests).
    #[cfg(test)]
    pub(crate) fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The sources the configuration names, in trust order
    /// ([`configured_sources`]).
    pub fn from_config(
        config: &Config,
        registry: Arc<Registry>,
        metrics: Option<Metrics>,
    ) -> Result<Self, SourceSetupError> {
        Self::from_config_only(config, &SourceKind::CHOOSABLE, registry, metrics)
    }

    /// Like [`KeyService::from_config`], restricted to the kinds in
    /// `only` (the `lookup` command leaves the key directory and the key
    /// store out). The web sources
    /// share one HTTP client, which resolves host names through the DNS
    /// source's resolvers.
    pub fn from_config_only(
        config: &Config,
        only: &[SourceKind],
        registry: Arc<Registry>,
        metrics: Option<Metrics>,
    ) -> Result<Self, SourceSetupError> {
        // One entry per kind: the `[[ldap]]` directories are set up together.
        let kinds = SourceKind::distinct(
            configured_sources(config)
                .into_iter()
                .map(|p| p.kind)
                .filter(|k| only.contains(k)),
        );
        let needs_web = kinds
            .iter()
            .any(|k| matches!(k, SourceKind::Wkd | SourceKind::Keyserver));
        let dns = if kinds.contains(&SourceKind::Dane) || needs_web {
            Some(Arc::new(DnsSource::new(DnsSettings::from_config(
                &config.dns,
            ))?))
        } else {
            None
        };
        let web = match (&dns, needs_web) {
            (Some(dns), true) => Some(Arc::new(WebClient::new(
                WebSettings::from_config(&config.wkd),
                Arc::clone(dns) as Arc<dyn Hosts>,
            )?)),
            _ => None,
        };
        // The store (learned keys, pins, key history) only for a service
        // that asks it: `lookup` shows each published source on its own
        // and needs no store (nor the right to create one).
        let store = if only.contains(&SourceKind::Learned) {
            Some(Store::open(&StoreSettings::from_config(&config.store))?)
        } else {
            None
        };
        let refresh = Duration::from_secs(config.store.refresh_secs);
        let mut learned = None;
        let mut sources: Vec<Arc<dyn KeySource>> = Vec::new();
        for kind in kinds {
            match (kind, &config.keys.directory, &dns, &web) {
                (SourceKind::Directory, Some(dir), _, _) => {
                    sources.push(Arc::new(DirectorySource::new(dir)));
                }
                (SourceKind::Ldap, _, _, _) => {
                    for dir in &config.ldap {
                        sources.push(Arc::new(LdapSource::new(LdapSettings::from_config(dir)?)));
                    }
                }
                (SourceKind::Dane, _, Some(dns), _) => sources.push(Arc::clone(dns) as _),
                (SourceKind::Wkd, _, _, Some(web)) => {
                    sources.push(Arc::new(WkdSource::new(Arc::clone(web))));
                }
                (SourceKind::Keyserver, _, _, Some(web)) => {
                    sources.push(Arc::new(KeyserverSource::new(
                        Arc::clone(web),
                        config.keyserver.urls.clone(),
                    )));
                }
                (SourceKind::Learned, _, _, _) => {
                    if let Some(store) = &store {
                        let source = LearnedSource::new(store.clone(), refresh);
                        sources.push(Arc::clone(&source) as Arc<dyn KeySource>);
                        learned = Some(source);
                    }
                }
                _ => {}
            }
        }
        let parts = store.map(|store| StoreParts {
            pins: StorePins::new(store.clone(), refresh, metrics.clone()),
            history: KeyHistory::new(store.clone(), refresh, metrics.clone()),
            store,
            learned,
        });
        let mut service = Self::new(sources, registry, metrics);
        service.store = parts;
        Ok(service)
    }

    /// The backends keys are validated (and messages encrypted) with.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// `addr`'s usable keys for `method` from the sources `choice` allows,
    /// or why there are none. Runs on a tokio runtime with the timer
    /// enabled (each source is held to [`SOURCE_DEADLINE`]).
    pub async fn resolve(
        &self,
        addr: &Address,
        method: Method,
        choice: &KeyChoice,
    ) -> MethodOutcome<Recipient> {
        self.run(addr, method, choice, false).await.outcome
    }

    /// [`KeyService::resolve`] for each of `methods`, concurrently, in the
    /// order given.
    pub async fn resolve_all(
        &self,
        addr: &Address,
        methods: &[Method],
        choice: &KeyChoice,
    ) -> Vec<MethodOutcome<Recipient>> {
        match methods {
            [] => Vec::new(),
            [a] => vec![self.resolve(addr, *a, choice).await],
            [a, b] => {
                let (x, y) = tokio::join!(
                    self.resolve(addr, *a, choice),
                    self.resolve(addr, *b, choice)
                );
                vec![x, y]
            }
            more => {
                let mut v = Vec::with_capacity(more.len());
                for m in more {
                    v.push(self.resolve(addr, *m, choice).await);
                }
                v
            }
        }
    }

    /// [`KeyService::resolve`] with what every source said on the way.
    pub async fn explain(&self, addr: &Address, method: Method, choice: &KeyChoice) -> Explained {
        self.run(addr, method, choice, true).await
    }

    /// The sources `choice` asks, in the order asked: the chosen ones
    /// that can reach its `min_trust`, highest trust first (stable, so the
    /// rule's order decides within a level).
    pub fn plan(&self, choice: &KeyChoice) -> Vec<&dyn KeySource> {
        choice
            .order(&self.sources, |s| s.kind(), |s| s.trust())
            .into_iter()
            .map(|s| s.as_ref())
            .collect()
    }

    /// `source`'s answer, held to `until` (what is left of the lookup's
    /// deadline). The timer is armed only when the answer is not ready at
    /// once: the key directory and cached answers are, and with a timer
    /// per lookup one A/B run measured ~6 % more milter CPU per S/MIME
    /// message (BENCHMARKS.md). A source asked when no time is left gets
    /// no time: a timeout, never "no key".
    async fn bounded(
        &self,
        source: &dyn KeySource,
        addr: &Address,
        method: Method,
        trace: bool,
        until: Instant,
    ) -> Traced {
        use std::task::Poll;
        let mut pending = source.lookup_traced(addr, method, trace);
        let first = std::future::poll_fn(|cx| Poll::Ready(pending.as_mut().poll(cx))).await;
        if let Poll::Ready(traced) = first {
            return traced;
        }
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, pending).await {
            Ok(t) => t,
            // Reported by the caller with the queue id (the outcome).
            Err(_) => Traced::plain(Lookup::Failed(FailReason::Timeout)),
        }
    }

    async fn run(
        &self,
        addr: &Address,
        method: Method,
        choice: &KeyChoice,
        trace: bool,
    ) -> Explained {
        let mut steps = Vec::new();
        // One deadline for all of it — the store's pins, the sources one
        // after the other, the key history — so the RCPT is answered
        // within it however many there are.
        let until = Instant::now() + self.deadline;
        // Pins set with `keys pin` join the rule's: either kind beats
        // every source. Unknown pins (the store never read) fail the
        // lookup rather than risk an unpinned key.
        let merged = match self
            .with_store_pins(addr, choice, until, trace, &mut steps)
            .await
        {
            Ok(merged) => merged,
            Err(why) => {
                return Explained {
                    outcome: MethodOutcome::new(method, KeyOutcome::Failed(why)),
                    steps,
                    found: Vec::new(),
                };
            }
        };
        let choice = merged.as_ref().unwrap_or(choice);
        let mut decided = None;
        let mut decided_by = None;
        // What stands if no source decides: the first "nothing usable
        // here" answer (an unsigned zone, keys none of which are for this
        // address), else a proof of absence.
        let mut fallback = None;
        let mut skipped = Vec::new();
        for source in self.plan(choice) {
            if !source.serves(method) || !source.answers_for(addr) {
                continue;
            }
            let started = Instant::now();
            let Traced {
                lookup,
                cached,
                asked,
            } = self.bounded(source, addr, method, trace, until).await;
            if let Some(m) = &self.metrics {
                m.source_lookup(source.kind(), method, &lookup, cached, started.elapsed());
            }
            if trace {
                steps.push(Step {
                    source: source.describe(),
                    answer: lookup.kind(),
                    asked,
                });
            }
            match lookup {
                Lookup::NotFound => {}
                // Nothing usable here: an unsigned zone, keys none of which
                // are for the address, or keys from an unsigned zone
                // (`dns.allow_insecure`), which nobody vouched for — so a
                // later source with keys its transport vouches for (WKD over
                // TLS) wins. Each stands only if no later source has keys.
                Lookup::Insecure => {
                    fallback.get_or_insert(lookup);
                }
                Lookup::Found {
                    ref keys, security, ..
                } if keys.is_empty() || security == Security::Insecure => {
                    fallback.get_or_insert(lookup);
                }
                // The rule pins fingerprints and none of these keys has
                // one: a pinned key beats every source, so a later source
                // may still have it (these keys are refused if none has).
                Lookup::Found { ref keys, .. }
                    if !choice.pins.is_empty()
                        && !keys.iter().any(|k| {
                            crate::backend::key_fingerprint(method, &k.data)
                                .is_some_and(|f| choice.pins.contains(&f))
                        }) =>
                {
                    fallback.get_or_insert(lookup);
                }
                Lookup::Failed(ref why) if choice.tolerate.contains(&source.kind()) => {
                    skipped.push(format!("{} failed: {why}", source.kind()));
                }
                Lookup::Bogus(ref why) if choice.tolerate.contains(&source.kind()) => {
                    skipped.push(format!("{} answer bogus: {why}", source.kind()));
                }
                _ => {
                    decided = Some(lookup);
                    decided_by = Some(source.kind());
                    break;
                }
            }
        }
        let answer = decided.or(fallback).unwrap_or(Lookup::NotFound);
        let found = match (&answer, trace) {
            (Lookup::Found { keys, .. }, true) => keys.clone(),
            _ => Vec::new(),
        };
        let now = SystemTime::now();
        let backend = self.registry.get(method);
        // The keys as found, by fingerprint, for the key history.
        let mut as_found: Vec<(String, Vec<u8>)> = Vec::new();
        let mut outcome = MethodOutcome::new(
            method,
            KeyOutcome::from_lookup(answer, |k| {
                let trust = k.provenance.trust();
                if trust < choice.min_trust {
                    // Not validated at all: the rule does not accept it.
                    return Err(k.reject(RejectReason::BelowMinTrust {
                        trust,
                        min: choice.min_trust,
                    }));
                }
                let checked = match self.validated.validate(backend, k, addr, now) {
                    // The key names another address of the directory entry
                    // the address was found in: the entry binds them.
                    Err(e)
                        if matches!(e.reason, RejectReason::AddressMismatch(_))
                            && !k.bound_addresses.is_empty() =>
                    {
                        k.bound_addresses
                            .iter()
                            .find_map(|other| self.validated.validate(backend, k, other, now).ok())
                            .map(|r| Recipient {
                                address: addr.clone(),
                                ..r
                            })
                            .ok_or(e)
                    }
                    other => other,
                };
                // A pinned fingerprint beats every source: any other key
                // is refused, however well it validates.
                match checked {
                    Ok(r) if !choice.pins.is_empty() && !choice.pins.contains(&r.fingerprint) => {
                        Err(k.reject(RejectReason::NotPinned(r.fingerprint)))
                    }
                    Ok(r) => {
                        as_found.push((r.fingerprint.clone(), k.data.clone()));
                        Ok(r)
                    }
                    other => other,
                }
            }),
        );
        outcome.skipped = skipped;
        if let (Some(parts), Some(kind)) = (&self.store, decided_by)
            && !as_found.is_empty()
        {
            let vetting = self.vet(parts, kind, addr, &mut outcome, &as_found, choice, now);
            if tokio::time::timeout_at(until.into(), vetting)
                .await
                .is_err()
            {
                // The history could not be read in time: under review the
                // keys cannot be vetted (a timeout, never "no key"); under
                // accept they are used as found.
                if choice.on_key_change == crate::material::OnKeyChange::Review
                    && choice.pins.is_empty()
                {
                    outcome.outcome = KeyOutcome::Failed(FailReason::Timeout);
                }
            }
        }
        Explained {
            outcome,
            steps,
            found,
        }
    }
}

#[path = "service_store.rs"]
mod store_steps;
use store_steps::StoreParts;

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
#[cfg(test)]
use tests as tests_support;
#[cfg(test)]
#[path = "service_fallthrough_tests.rs"]
mod fallthrough_tests;
#[cfg(test)]
#[path = "service_store_tests.rs"]
mod store_tests;
