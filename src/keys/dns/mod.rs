//! Keys from DNSSEC-signed DNS: SMIMEA (RFC 8162) and OPENPGPKEY
//! (RFC 7929), believed only when DNSSEC vouches for them.
//!
//! This module owns the source itself ([`DnsSource`], its settings and
//! set-up) and the lookup flow: the owner name, the query through the
//! cache, the RFC 7929 §3 lower-case fallback, and the reading of the
//! answer as a [`Lookup`]. Every answer becomes a `Lookup` value; `Bogus`
//! and `Failed` are never "no key". The rooms:
//!
//! * `owner`: owner names (hashed local part, service label, A-label).
//! * `cache`: the answer cache (TTL rules, capacity, one query shared by
//!   concurrent lookups of the same name).
//! * `validate`: `dns.mode = "validate"`, in-process DNSSEC validation
//!   from a trust anchor.
//! * `trust_ad`: `dns.mode = "trust-ad"`, the Postfix way: a trusted
//!   local resolver's AD bit, asked through the wire client in `wire`
//!   (UDP, TCP when truncated).
//! * `records`: SMIMEA / OPENPGPKEY rdata as key material, and
//!   [`lookup_from_response`] for fuzzing.
//! * `hosts`: A/AAAA lookups for the web sources' host names, through
//!   the same resolvers and cache.

mod cache;
mod hosts;
pub(crate) mod owner;
mod records;
mod trust_ad;
mod validate;
mod wire;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use hickory_resolver::Resolver;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name, Record, RecordType};

use crate::address::Address;
use crate::backend::pkix::PkixTrust;
use crate::config::{DnsConfig, DnsMode};
use crate::keys::{FailReason, KeySource, Lookup, LookupFuture, SourceKind, Traced, TracedFuture};
use crate::material::Method;

use cache::AnswerCache;
pub use cache::{CACHE_CAPACITY, FAILURE_TTL, MAX_NEGATIVE_TTL, MAX_POSITIVE_TTL};
use owner::{lowercase_owner_name, owner_name};
use records::to_lookup;
pub use records::{lookup_from_response, record_type};

/// Settings of the DNS key source (from `[dns]`).
#[derive(Clone, Debug)]
pub struct DnsSettings {
    /// How DNSSEC is checked.
    pub mode: DnsMode,
    /// Resolvers to ask; empty means those of /etc/resolv.conf.
    pub resolvers: Vec<SocketAddr>,
    /// DNSKEY/DS file for `validate`; `None` means the built-in root.
    pub trust_anchor: Option<PathBuf>,
    /// Time allowed for one lookup.
    pub timeout: Duration,
    /// Use keys from unsigned zones.
    pub allow_insecure: bool,
    /// Retry with the local part lower-cased (RFC 7929 §3).
    pub lowercase_fallback: bool,
}

impl DnsSettings {
    /// Settings from the configuration.
    pub fn from_config(c: &DnsConfig) -> Self {
        DnsSettings {
            mode: c.mode,
            resolvers: c.resolvers.clone(),
            trust_anchor: c.trust_anchor.clone(),
            timeout: Duration::from_millis(c.timeout_ms),
            allow_insecure: c.allow_insecure,
            lowercase_fallback: c.lowercase_fallback,
        }
    }
}

/// The DNS key source cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum DnsSetupError {
    /// The trust anchor file is unreadable or malformed.
    #[error("{}: trust anchor: {reason}", path.display())]
    TrustAnchor {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No resolver configured and none in /etc/resolv.conf.
    #[error("no DNS resolver: dns.resolvers is empty and /etc/resolv.conf names none")]
    NoResolvers,
    /// The resolver library refused the configuration.
    #[error("DNS resolver set-up: {0}")]
    Resolver(String),
}

/// Whether DNSSEC vouched for an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validation {
    /// Validated (or AD=1 from a trusted resolver).
    Secure,
    /// Provably unsigned, or not validated.
    Insecure,
}

/// The outcome of one query, before it is read as keys.
#[derive(Clone, Debug)]
pub enum Answer {
    /// Records of the type asked for.
    Records {
        /// The records.
        records: Vec<Record>,
        /// DNSSEC status.
        validation: Validation,
    },
    /// No such records (NXDOMAIN or NODATA).
    Empty {
        /// DNSSEC status of the denial.
        validation: Validation,
        /// How long the denial may be cached (SOA minimum and TTL), when
        /// the answer said.
        negative_ttl: Option<u32>,
    },
    /// DNSSEC validation failed.
    Bogus(String),
    /// No answer.
    Failed(FailReason),
}

/// One owner name asked and what came back (for `lookup` and logs).
#[derive(Clone, Debug)]
pub struct Asked {
    /// The owner name.
    pub name: Name,
    /// The answer.
    pub answer: Answer,
    /// Whether it came from the cache.
    pub cached: bool,
}

/// A lookup with its details.
#[derive(Clone, Debug)]
pub struct Detailed {
    /// The owner names asked, in order (the lower-case fallback second).
    pub asked: Vec<Asked>,
    /// The outcome.
    pub lookup: Lookup,
}

/// How queries reach the network, by `dns.mode`.
enum Transport {
    /// hickory validates in-process.
    Validate(Box<Resolver<TokioRuntimeProvider>>),
    /// The resolvers' AD bit is believed.
    TrustAd(Vec<SocketAddr>),
}

/// The SMIMEA / OPENPGPKEY key source.
pub struct DnsSource {
    settings: DnsSettings,
    transport: Transport,
    cache: AnswerCache,
    queries: AtomicU64,
    /// The system trust store for SMIMEA usage 1, loaded once here (at
    /// start and on reload, off the connection threads) and shared by
    /// every lookup.
    pkix: PkixTrust,
}

impl DnsSource {
    /// A source with these settings; reads the trust anchor, the system
    /// trust store (for SMIMEA usage 1) and, when no resolver is
    /// configured, /etc/resolv.conf.
    pub fn new(settings: DnsSettings) -> Result<Self, DnsSetupError> {
        let resolvers = if settings.resolvers.is_empty() {
            resolv_conf_servers(Path::new("/etc/resolv.conf"))
        } else {
            settings.resolvers.clone()
        };
        if resolvers.is_empty() {
            return Err(DnsSetupError::NoResolvers);
        }
        let transport = match settings.mode {
            DnsMode::TrustAd => Transport::TrustAd(resolvers),
            DnsMode::Validate => Transport::Validate(Box::new(validate::validating_resolver(
                &settings, &resolvers,
            )?)),
        };
        Ok(DnsSource {
            settings,
            transport,
            cache: AnswerCache::new(),
            queries: AtomicU64::new(0),
            pkix: PkixTrust::system(),
        })
    }

    /// Queries sent to the network so far (cache hits and shared
    /// in-flight lookups send none).
    pub fn queries_sent(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    /// Looks up `addr`'s `method` records, with the details of every
    /// owner name asked.
    pub async fn lookup_detailed(&self, addr: &Address, method: Method) -> Detailed {
        let rtype = record_type(method);
        let name = match owner_name(addr, method) {
            Ok(n) => n,
            // No record can live at a name that cannot exist.
            Err(e) => {
                tracing::info!("{e}");
                return Detailed {
                    asked: Vec::new(),
                    lookup: Lookup::NotFound,
                };
            }
        };
        let (answer, cached, fetched) = self.query(&name, rtype).await;
        let mut asked = vec![Asked {
            name,
            answer: answer.clone(),
            cached,
        }];
        let (mut answer, mut fetched) = (answer, fetched);
        // RFC 7929 §3: only when the exact name is proven absent.
        if self.settings.lowercase_fallback
            && matches!(
                answer,
                Answer::Empty {
                    validation: Validation::Secure,
                    ..
                }
            )
            && let Some(Ok(lower)) = lowercase_owner_name(addr, method)
        {
            let (second, cached, at) = self.query(&lower, rtype).await;
            asked.push(Asked {
                name: lower,
                answer: second.clone(),
                cached,
            });
            (answer, fetched) = (second, at);
        }
        let lookup = to_lookup(
            &answer,
            method,
            self.settings.allow_insecure,
            asked.last().map(|a| &a.name),
            &self.pkix,
            fetched,
        );
        Detailed { asked, lookup }
    }

    /// One query through the cache; concurrent callers share it. The
    /// flag says whether the answer came from the cache, the time when it
    /// arrived.
    async fn query(&self, name: &Name, rtype: RecordType) -> (Answer, bool, SystemTime) {
        self.cache
            .get_or_fetch(name, rtype, || async {
                self.queries.fetch_add(1, Ordering::Relaxed);
                match tokio::time::timeout(self.settings.timeout, self.query_network(name, rtype))
                    .await
                {
                    Ok(a) => a,
                    Err(_) => Answer::Failed(FailReason::Timeout),
                }
            })
            .await
    }

    async fn query_network(&self, name: &Name, rtype: RecordType) -> Answer {
        match &self.transport {
            Transport::Validate(resolver) => validate::query(resolver, name, rtype).await,
            Transport::TrustAd(servers) => trust_ad::query(servers, name, rtype).await,
        }
    }
}

impl KeySource for DnsSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Dane
    }

    fn describe(&self) -> String {
        match self.settings.mode {
            DnsMode::Validate => "DNS (validate mode)".to_owned(),
            DnsMode::TrustAd => "DNS (trust-ad mode)".to_owned(),
        }
    }

    fn lookup<'a>(&'a self, addr: &'a Address, method: Method) -> LookupFuture<'a> {
        Box::pin(async move { self.lookup_detailed(addr, method).await.lookup })
    }

    fn lookup_traced<'a>(
        &'a self,
        addr: &'a Address,
        method: Method,
        detail: bool,
    ) -> TracedFuture<'a> {
        Box::pin(async move {
            let Detailed { asked, lookup } = self.lookup_detailed(addr, method).await;
            Traced {
                cached: !asked.is_empty() && asked.iter().all(|a| a.cached),
                asked: if detail {
                    asked
                        .iter()
                        .map(|a| format!("{}  {}", a.name, describe_answer(&a.answer)))
                        .collect()
                } else {
                    Vec::new()
                },
                lookup,
            }
        })
    }
}

/// One answer in words, for `lookup` and `policy explain`.
pub fn describe_answer(a: &Answer) -> String {
    let v = |v: &Validation| match v {
        Validation::Secure => "DNSSEC secure",
        Validation::Insecure => "DNSSEC insecure",
    };
    match a {
        Answer::Records {
            records,
            validation,
        } => format!("{} record(s), {}", records.len(), v(validation)),
        Answer::Empty {
            validation: Validation::Secure,
            ..
        } => "no record (authenticated denial)".into(),
        Answer::Empty { .. } => "no record (denial not authenticated)".into(),
        Answer::Bogus(why) => format!("DNSSEC bogus: {why}"),
        Answer::Failed(why) => format!("lookup failed: {why}"),
    }
}

/// `nameserver` lines of a resolv.conf (port 53).
pub fn resolv_conf_servers(path: &Path) -> Vec<SocketAddr> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
                .and_then(|ip| ip.split('%').next())
                .and_then(|ip| ip.parse::<std::net::IpAddr>().ok())
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .collect()
}

#[cfg(test)]
mod tests;
