//! Keys from DNSSEC-signed DNS: SMIMEA (RFC 8162) and OPENPGPKEY
//! (RFC 7929), believed only when DNSSEC vouches for them.
//!
//! Two ways to know that (`dns.mode`):
//!
//! * `validate`: hickory-resolver validates in-process from a trust anchor
//!   (built-in root, or `dns.trust_anchor`), through whatever recursive
//!   resolvers are configured.
//! * `trust-ad`: the Postfix way. A local validating resolver is asked
//!   with DO=1 and its AD bit is believed; the path to it must be trusted
//!   (loopback). Truncated answers are retried over TCP.
//!
//! Every answer becomes a [`Lookup`] value; `Bogus` and `Failed` are never
//! "no key". Answers are cached (positive for the record TTL, negative for
//! the SOA minimum, both capped; failures briefly), and concurrent lookups
//! of the same name share one query.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_resolver::Resolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as HickoryDnsError, NetError};
use hickory_resolver::proto::dnssec::{Proof, TrustAnchors};
use hickory_resolver::proto::op::{Edns, Message, Query, ResponseCode};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::OnceCell;

use crate::address::Address;
use crate::config::{DnsConfig, DnsMode};
use crate::keys::owner::{lowercase_owner_name, owner_name};
use crate::keys::{
    FailReason, KeySource, Lookup, LookupFuture, Provenance, Security, SourceKind, Traced,
    TracedFuture,
};
use crate::material::{KeyMaterial, KeyRejected, Method, RejectReason};

/// Longest a positive answer is cached, whatever its TTL.
pub const MAX_POSITIVE_TTL: Duration = Duration::from_secs(3600);
/// Longest a negative answer is cached, whatever the SOA says.
pub const MAX_NEGATIVE_TTL: Duration = Duration::from_secs(900);
/// How long a failed or bogus answer is cached: long enough to spare the
/// resolver a burst of retries, short enough to recover quickly.
pub const FAILURE_TTL: Duration = Duration::from_secs(30);
/// Most answers kept in the cache.
pub const CACHE_CAPACITY: usize = 10_000;

/// EDNS payload size advertised over UDP (the DNS flag day 2020 value).
const UDP_PAYLOAD: u16 = 1232;

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

enum Transport {
    Validate(Box<Resolver<TokioRuntimeProvider>>),
    TrustAd(Vec<SocketAddr>),
}

type CacheKey = (Name, RecordType);
type Slot = Arc<OnceCell<(Answer, Instant)>>;

/// The SMIMEA / OPENPGPKEY key source.
pub struct DnsSource {
    settings: DnsSettings,
    transport: Transport,
    cache: Mutex<HashMap<CacheKey, Slot>>,
    queries: AtomicU64,
}

impl DnsSource {
    /// A source with these settings; reads the trust anchor and, when no
    /// resolver is configured, /etc/resolv.conf.
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
            DnsMode::Validate => {
                Transport::Validate(Box::new(validating_resolver(&settings, &resolvers)?))
            }
        };
        Ok(DnsSource {
            settings,
            transport,
            cache: Mutex::new(HashMap::new()),
            queries: AtomicU64::new(0),
        })
    }

    /// Queries sent to the network so far (cache hits and shared
    /// in-flight lookups send none).
    pub fn queries_sent(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    /// The settings.
    pub fn settings(&self) -> &DnsSettings {
        &self.settings
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
        let (answer, cached) = self.query(&name, rtype).await;
        let mut asked = vec![Asked {
            name,
            answer: answer.clone(),
            cached,
        }];
        let mut answer = answer;
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
            let (second, cached) = self.query(&lower, rtype).await;
            asked.push(Asked {
                name: lower,
                answer: second.clone(),
                cached,
            });
            answer = second;
        }
        let lookup = to_lookup(
            &answer,
            method,
            self.settings.allow_insecure,
            asked.last().map(|a| &a.name),
        );
        Detailed { asked, lookup }
    }

    /// One query through the cache; concurrent callers share it.
    async fn query(&self, name: &Name, rtype: RecordType) -> (Answer, bool) {
        let key = (name.clone(), rtype);
        let slot = {
            let mut cache = match self.cache.lock() {
                Ok(c) => c,
                Err(poisoned) => poisoned.into_inner(),
            };
            let now = Instant::now();
            let fresh = cache
                .get(&key)
                .filter(|s| s.get().is_none_or(|(_, expires)| *expires > now))
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
        };
        let mut ran = false;
        let (answer, _) = slot
            .get_or_init(|| async {
                ran = true;
                self.queries.fetch_add(1, Ordering::Relaxed);
                let answer = match tokio::time::timeout(
                    self.settings.timeout,
                    self.query_network(name, rtype),
                )
                .await
                {
                    Ok(a) => a,
                    Err(_) => Answer::Failed(FailReason::Timeout),
                };
                let ttl = answer_ttl(&answer);
                (answer, Instant::now() + ttl)
            })
            .await;
        (answer.clone(), !ran)
    }

    async fn query_network(&self, name: &Name, rtype: RecordType) -> Answer {
        match &self.transport {
            Transport::Validate(resolver) => validated_query(resolver, name, rtype).await,
            Transport::TrustAd(servers) => {
                let mut last = Answer::Failed(FailReason::Network("no resolver answered".into()));
                for server in servers {
                    match trust_ad_query(*server, name, rtype).await {
                        // Another resolver may answer where this one failed.
                        Answer::Failed(reason) => last = Answer::Failed(reason),
                        other => return other,
                    }
                }
                last
            }
        }
    }
}

impl KeySource for DnsSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Dane
    }

    fn describe(&self) -> String {
        match self.settings.mode {
            crate::config::DnsMode::Validate => "DNS (validate mode)".to_owned(),
            crate::config::DnsMode::TrustAd => "DNS (trust-ad mode)".to_owned(),
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

/// The record type holding `method`'s keys.
pub fn record_type(method: Method) -> RecordType {
    match method {
        Method::Smime => RecordType::SMIMEA,
        Method::OpenPgp => RecordType::OPENPGPKEY,
    }
}

fn evict(cache: &mut HashMap<CacheKey, Slot>, now: Instant) {
    cache.retain(|_, s| s.get().is_none_or(|(_, expires)| *expires > now));
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

/// Reads an answer as keys for `method`.
fn to_lookup(answer: &Answer, method: Method, allow_insecure: bool, name: Option<&Name>) -> Lookup {
    let origin_name = name.map(Name::to_ascii).unwrap_or_default();
    match answer {
        Answer::Records {
            records,
            validation,
        } => {
            let security = match validation {
                Validation::Secure => Security::Secure,
                Validation::Insecure if allow_insecure => Security::Insecure,
                Validation::Insecure => return Lookup::Insecure,
            };
            let mut keys = Vec::new();
            let mut unusable = Vec::new();
            for r in records {
                match record_key(&r.data, method, &origin_name) {
                    Some(Ok(mut k)) => {
                        k.provenance.security = security;
                        keys.push(k);
                    }
                    Some(Err(e)) => unusable.push(e),
                    None => {}
                }
            }
            if keys.is_empty() && unusable.is_empty() {
                return Lookup::NotFound;
            }
            Lookup::Found {
                keys,
                unusable,
                security,
            }
        }
        Answer::Empty {
            validation: Validation::Secure,
            ..
        } => Lookup::NotFound,
        Answer::Empty {
            validation: Validation::Insecure,
            ..
        } => Lookup::Insecure,
        Answer::Bogus(why) => Lookup::Bogus(why.clone()),
        Answer::Failed(why) => Lookup::Failed(why.clone()),
    }
}

/// The key material of one record, or why it has none. `None` for a
/// record of another type (a CNAME on the way).
fn record_key(
    data: &RData,
    method: Method,
    name: &str,
) -> Option<Result<KeyMaterial, KeyRejected>> {
    match (data, method) {
        (RData::SMIMEA(s), Method::Smime) => {
            let t = &s.0;
            let (usage, selector, matching) = (
                u8::from(t.cert_usage),
                u8::from(t.selector),
                u8::from(t.matching),
            );
            let origin = format!("SMIMEA {usage} {selector} {matching} at {name}");
            let reject = |reason| {
                Some(Err(KeyRejected {
                    origin: origin.clone(),
                    reason,
                }))
            };
            if selector != 0 || matching != 0 {
                return reject(RejectReason::UnusableRecord(format!(
                    "selector {selector} matching {matching} carries no full certificate"
                )));
            }
            match usage {
                3 => {}
                1 => {
                    if let Err(why) = verify_pkix(&t.cert_data) {
                        return reject(RejectReason::Untrusted(why));
                    }
                }
                other => {
                    return reject(RejectReason::UnusableRecord(format!(
                        "usage {other} names a CA, not the recipient's certificate"
                    )));
                }
            }
            Some(Ok(KeyMaterial {
                method,
                data: t.cert_data.clone(),
                origin,
                provenance: Provenance::now(SourceKind::Dane, Security::Secure),
            }))
        }
        (RData::OPENPGPKEY(k), Method::OpenPgp) => Some(Ok(KeyMaterial {
            method,
            data: k.public_key.clone(),
            origin: format!("OPENPGPKEY at {name}"),
            provenance: Provenance::now(SourceKind::Dane, Security::Secure),
        })),
        _ => None,
    }
}

/// SMIMEA usage 1 (PKIX-EE): the certificate must verify against the
/// system trust store as well.
fn verify_pkix(der: &[u8]) -> Result<(), String> {
    use openssl::stack::Stack;
    use openssl::x509::store::X509StoreBuilder;
    use openssl::x509::{X509, X509StoreContext};
    let cert = X509::from_der(der).map_err(|e| e.to_string())?;
    let mut builder = X509StoreBuilder::new().map_err(|e| e.to_string())?;
    builder.set_default_paths().map_err(|e| e.to_string())?;
    let store = builder.build();
    let chain = Stack::new().map_err(|e| e.to_string())?;
    let mut ctx = X509StoreContext::new().map_err(|e| e.to_string())?;
    let ok = ctx
        .init(&store, &cert, &chain, |c| {
            let ok = c.verify_cert()?;
            Ok(if ok {
                None
            } else {
                Some(c.error().to_string())
            })
        })
        .map_err(|e| e.to_string())?;
    match ok {
        None => Ok(()),
        Some(why) => Err(why),
    }
}

fn validating_resolver(
    settings: &DnsSettings,
    resolvers: &[SocketAddr],
) -> Result<Resolver<TokioRuntimeProvider>, DnsSetupError> {
    let name_servers = resolvers
        .iter()
        .map(|addr| {
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
        })
        .collect();
    let mut opts = ResolverOpts::default();
    opts.timeout = settings.timeout;
    opts.attempts = 2;
    opts.validate = true;
    // Our own cache keeps the outcomes; hickory's keeps DNSKEY/DS chains.
    opts.cache_size = 1024;
    opts.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
    let anchors = match &settings.trust_anchor {
        Some(path) => {
            let bad = |reason: String| DnsSetupError::TrustAnchor {
                path: path.clone(),
                reason,
            };
            let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
            // hickory reads DNSKEY records only (no DS), and an anchor file
            // without any would silently validate nothing.
            if !text.lines().any(|l| {
                !l.trim_start().starts_with(';') && l.to_ascii_uppercase().contains("DNSKEY")
            }) {
                return Err(bad(
                    "no DNSKEY records in it (DS records are not supported here)".into(),
                ));
            }
            text.parse::<TrustAnchors>()
                .map_err(|e| bad(e.to_string()))?
        }
        None => TrustAnchors::default(),
    };
    Resolver::builder_with_config(
        ResolverConfig::from_name_servers(name_servers),
        TokioRuntimeProvider::default(),
    )
    .with_options(opts)
    .with_trust_anchor(Arc::new(anchors))
    .build()
    .map_err(|e| DnsSetupError::Resolver(e.to_string()))
}

/// `validate` mode: hickory validates; the proof on each record (or on
/// the denial) says how far.
async fn validated_query(
    resolver: &Resolver<TokioRuntimeProvider>,
    name: &Name,
    rtype: RecordType,
) -> Answer {
    match resolver.lookup(name.clone(), rtype).await {
        Ok(lookup) => {
            let records: Vec<Record> = lookup
                .answers()
                .iter()
                .filter(|r| r.record_type() == rtype)
                .cloned()
                .collect();
            if records.is_empty() {
                return Answer::Empty {
                    validation: Validation::Insecure,
                    negative_ttl: None,
                };
            }
            let weakest = records
                .iter()
                .map(|r| r.proof)
                .min_by_key(|p| proof_rank(*p));
            match weakest {
                Some(Proof::Secure) => Answer::Records {
                    records,
                    validation: Validation::Secure,
                },
                Some(Proof::Insecure) => Answer::Records {
                    records,
                    validation: Validation::Insecure,
                },
                Some(p) => Answer::Bogus(format!("records at {name} are {p}")),
                None => Answer::Empty {
                    validation: Validation::Insecure,
                    negative_ttl: None,
                },
            }
        }
        Err(e) => {
            tracing::debug!("{name} {rtype}: {e:?}");
            net_error_answer(&e, name)
        }
    }
}

fn proof_rank(p: Proof) -> u8 {
    match p {
        Proof::Secure => 3,
        Proof::Insecure => 2,
        Proof::Bogus => 1,
        _ => 0,
    }
}

fn net_error_answer(e: &NetError, name: &Name) -> Answer {
    match e {
        NetError::Dns(HickoryDnsError::Nsec {
            proof, response, ..
        }) => {
            let negative_ttl = soa_negative_ttl(&response.authorities);
            match proof {
                Proof::Secure => Answer::Empty {
                    validation: Validation::Secure,
                    negative_ttl,
                },
                Proof::Insecure => Answer::Empty {
                    validation: Validation::Insecure,
                    negative_ttl,
                },
                other => Answer::Bogus(format!("denial of {name} is {other}")),
            }
        }
        // hickory validates the denial's SOA and NSEC/NSEC3 records and
        // marks each with its proof: the weakest one decides.
        NetError::Dns(HickoryDnsError::NoRecordsFound(nr)) => {
            let weakest = nr
                .authorities
                .iter()
                .flat_map(|a| a.iter())
                .map(|r| r.proof)
                .min_by_key(|p| proof_rank(*p));
            match weakest {
                Some(Proof::Secure) => Answer::Empty {
                    validation: Validation::Secure,
                    negative_ttl: nr.negative_ttl,
                },
                Some(Proof::Insecure) => Answer::Empty {
                    validation: Validation::Insecure,
                    negative_ttl: nr.negative_ttl,
                },
                // Bogus, indeterminate, or no records at all to prove the
                // denial: not a provable "no key".
                _ => Answer::Bogus(format!("denial of {name} cannot be validated")),
            }
        }
        NetError::Dns(HickoryDnsError::DnssecBogus) => {
            Answer::Bogus(format!("validation of {name} failed"))
        }
        NetError::Dns(HickoryDnsError::ResponseCode(ResponseCode::ServFail)) => {
            Answer::Failed(FailReason::ServFail)
        }
        NetError::Dns(HickoryDnsError::ResponseCode(code)) => {
            Answer::Failed(FailReason::Network(format!("resolver answered {code}")))
        }
        NetError::Timeout => Answer::Failed(FailReason::Timeout),
        other => {
            let text = other.to_string();
            // hickory reports validation failures in several shapes.
            if text.contains("DNSSEC") || text.contains("bogus") || text.contains("RRSIG") {
                Answer::Bogus(text)
            } else {
                Answer::Failed(FailReason::Network(text))
            }
        }
    }
}

/// `trust-ad` mode: one query with DO=1 and AD=1 to a validating
/// resolver; UDP first, TCP when truncated.
async fn trust_ad_query(server: SocketAddr, name: &Name, rtype: RecordType) -> Answer {
    let id: u16 = rand_id();
    let mut msg = Message::query();
    msg.metadata.id = id;
    msg.metadata.recursion_desired = true;
    // RFC 6840 §5.7: AD=1 in a query asks for the AD bit in the answer.
    msg.metadata.authentic_data = true;
    msg.add_query(Query::query(name.clone(), rtype));
    let mut edns = Edns::new();
    edns.set_dnssec_ok(true);
    edns.set_max_payload(UDP_PAYLOAD);
    msg.set_edns(edns);
    let bytes = match msg.to_vec() {
        Ok(b) => b,
        Err(e) => return Answer::Failed(FailReason::Network(format!("encoding query: {e}"))),
    };
    let response = match udp_exchange(server, &bytes, id).await {
        Ok(r) if r.metadata.truncation => tcp_exchange(server, &bytes, id).await,
        other => other,
    };
    match response {
        Ok(r) => read_ad_response(&r, name, rtype),
        Err(reason) => Answer::Failed(reason),
    }
}

fn rand_id() -> u16 {
    let mut b = [0u8; 2];
    // A predictable id only weakens spoofing protection on the loopback
    // path trust-ad already requires to be trusted.
    let _ = openssl::rand::rand_bytes(&mut b);
    u16::from_be_bytes(b)
}

fn io_fail(e: &std::io::Error) -> FailReason {
    FailReason::Network(e.to_string())
}

async fn udp_exchange(server: SocketAddr, query: &[u8], id: u16) -> Result<Message, FailReason> {
    let bind: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let sock = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|e| io_fail(&e))?;
    sock.connect(server).await.map_err(|e| io_fail(&e))?;
    sock.send(query).await.map_err(|e| io_fail(&e))?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = sock.recv(&mut buf).await.map_err(|e| io_fail(&e))?;
        match Message::from_vec(&buf[..n]) {
            // Ignore stray datagrams with another id.
            Ok(m) if m.metadata.id == id => return Ok(m),
            Ok(_) | Err(_) => continue,
        }
    }
}

async fn tcp_exchange(server: SocketAddr, query: &[u8], id: u16) -> Result<Message, FailReason> {
    let mut stream = tokio::net::TcpStream::connect(server)
        .await
        .map_err(|e| io_fail(&e))?;
    let len =
        u16::try_from(query.len()).map_err(|_| FailReason::Network("query too long".into()))?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await.map_err(|e| io_fail(&e))?;
    let n = stream.read_u16().await.map_err(|e| io_fail(&e))?;
    let mut buf = vec![0u8; usize::from(n)];
    stream.read_exact(&mut buf).await.map_err(|e| io_fail(&e))?;
    let m = Message::from_vec(&buf)
        .map_err(|e| FailReason::Network(format!("malformed answer: {e}")))?;
    if m.metadata.id != id {
        return Err(FailReason::Network("answer with a foreign id".into()));
    }
    Ok(m)
}

/// What one `trust-ad` resolver response (its wire bytes) yields for
/// `name`'s `method` record: the path every answer from the network takes
/// after the transport. `None` when the bytes are no DNS message (the
/// transport drops those). For fuzzing and tests.
#[doc(hidden)]
pub fn lookup_from_response(
    wire: &[u8],
    name: &Name,
    method: Method,
    allow_insecure: bool,
) -> Option<Lookup> {
    let m = Message::from_vec(wire).ok()?;
    let answer = read_ad_response(&m, name, record_type(method));
    Some(to_lookup(&answer, method, allow_insecure, Some(name)))
}

fn read_ad_response(r: &Message, name: &Name, rtype: RecordType) -> Answer {
    let validation = if r.metadata.authentic_data {
        Validation::Secure
    } else {
        Validation::Insecure
    };
    match r.metadata.response_code {
        ResponseCode::NoError => {
            let records: Vec<Record> = r
                .answers
                .iter()
                .filter(|a| a.record_type() == rtype)
                .cloned()
                .collect();
            if records.is_empty() {
                Answer::Empty {
                    validation,
                    negative_ttl: soa_negative_ttl(&r.authorities),
                }
            } else {
                Answer::Records {
                    records,
                    validation,
                }
            }
        }
        ResponseCode::NXDomain => Answer::Empty {
            validation,
            negative_ttl: soa_negative_ttl(&r.authorities),
        },
        // A validating resolver answers SERVFAIL for bogus data too; the
        // two cannot be told apart here, and neither is "no key".
        ResponseCode::ServFail => Answer::Failed(FailReason::ServFail),
        other => Answer::Failed(FailReason::Network(format!(
            "resolver answered {other} for {name}"
        ))),
    }
}

/// RFC 2308 §5: a denial may be cached for the lesser of the SOA's TTL
/// and its minimum field.
fn soa_negative_ttl(authorities: &[Record]) -> Option<u32> {
    authorities.iter().find_map(|r| match &r.data {
        RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
        _ => None,
    })
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
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_parsing() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("resolv.conf");
        std::fs::write(&p, "# x\nsearch example.org\nnameserver 127.0.0.53\nnameserver ::1\nnameserver fe80::1%eth0\noptions edns0\n").unwrap();
        let s = resolv_conf_servers(&p);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0], "127.0.0.53:53".parse().unwrap());
        assert!(resolv_conf_servers(&d.path().join("missing")).is_empty());
    }

    #[test]
    fn failures_and_bogus_are_never_no_key() {
        for a in [
            Answer::Bogus("x".into()),
            Answer::Failed(FailReason::Timeout),
            Answer::Failed(FailReason::ServFail),
        ] {
            let l = to_lookup(&a, Method::Smime, true, None);
            assert!(matches!(l, Lookup::Bogus(_) | Lookup::Failed(_)), "{l:?}");
        }
        let insecure_denial = Answer::Empty {
            validation: Validation::Insecure,
            negative_ttl: Some(60),
        };
        assert!(matches!(
            to_lookup(&insecure_denial, Method::Smime, false, None),
            Lookup::Insecure
        ));
        let secure_denial = Answer::Empty {
            validation: Validation::Secure,
            negative_ttl: Some(60),
        };
        assert!(matches!(
            to_lookup(&secure_denial, Method::Smime, false, None),
            Lookup::NotFound
        ));
    }

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
