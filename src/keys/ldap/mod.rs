//! The `ldap` key source: one `[[ldap]]` directory (OpenLDAP, Active
//! Directory, any LDAPv3 server) searched for the recipient's entry, whose
//! certificate and OpenPGP key attributes are the keys.
//!
//! One search per address serves both methods: its answer — the entries
//! found, no entry, or a failure — is cached (entries for
//! `cache_ttl_secs`, no entry for `negative_ttl_secs`, a failure for
//! [`FAILURE_TTL`]) and shared by concurrent lookups. No entry, or an
//! entry without a key of the method, is a denial and the next source is
//! asked; a server that is down, slow, refuses the bind or answers with
//! an error is a failure, never "no key".
//!
//! The rooms: `settings` (the configuration made usable: password,
//! TLS), `filter` (the template and RFC 4515 escaping), `pool` (the
//! connections, reconnecting, leaving a down directory alone), `conn`
//! (connect, bind and one bounded search), `entry` (reading entries and
//! the keys and addresses in them).

mod conn;
pub(crate) mod entry;
mod filter;
mod pool;
mod settings;

pub use filter::{FilterTemplate, escape};
pub use settings::{LdapSettings, LdapSetupError};

use std::sync::Arc;

use sha2::Digest as _;
use std::time::{Duration, SystemTime};

use crate::address::Address;
use crate::keys::cache::SharedCache;
use crate::keys::{
    FailReason, KeySource, Lookup, LookupFuture, Provenance, Security, SourceKind, Traced,
    TracedFuture, TrustLevel,
};
use crate::material::{KeyMaterial, Method};
use entry::DirEntry;
use pool::Pool;

/// How long a failed search is remembered: long enough that a directory
/// that is down is not asked again by every RCPT, short enough that mail
/// flows soon after it is back.
pub const FAILURE_TTL: Duration = Duration::from_secs(15);

/// Most keys of one method one search may give (certificates in PKCS#7
/// bags included): more than any person or shared mailbox has, and a
/// bound on the work of reading an answer.
pub const MAX_KEYS: usize = 64;

/// Bytes of entries one directory's cache holds at most.
pub const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// One search's answer, as cached.
#[derive(Clone, Debug)]
enum Answer {
    /// The entries the filter matched (one or more), read.
    Entries(Arc<Read>),
    /// No entry matched.
    NoEntry,
    /// The search could not be made or answered.
    Failed(FailReason),
}

/// What the entries of one search hold, made once when the answer
/// arrives (not at every lookup that reads it from the cache).
#[derive(Debug)]
struct Read {
    /// Each entry, for `lookup` and `policy explain`.
    entries: Vec<Summary>,
    /// The S/MIME certificates of every entry, each once.
    smime: Vec<KeyMaterial>,
    /// The OpenPGP keys of every entry, each once.
    openpgp: Vec<KeyMaterial>,
}

/// One entry, as `lookup` shows it.
#[derive(Debug)]
struct Summary {
    dn: String,
    addresses: Vec<String>,
    listed: bool,
    smime: usize,
    openpgp: usize,
}

impl Read {
    fn keys(&self, method: Method) -> &[KeyMaterial] {
        match method {
            Method::Smime => &self.smime,
            Method::OpenPgp => &self.openpgp,
        }
    }
}

fn weigh(a: &Answer) -> usize {
    match a {
        Answer::Entries(r) => {
            let keys: usize = r
                .smime
                .iter()
                .chain(&r.openpgp)
                .map(|k| k.data.len() + k.origin.len() + 64)
                .sum();
            let shown: usize = r
                .entries
                .iter()
                .map(|e| e.dn.len() + e.addresses.iter().map(|a| a.len() + 24).sum::<usize>())
                .sum();
            keys + shown
        }
        Answer::NoEntry | Answer::Failed(_) => 64,
    }
}

/// One `[[ldap]]` directory as a key source.
pub struct LdapSource {
    settings: Arc<LdapSettings>,
    pool: Pool,
    cache: SharedCache<String, Answer>,
}

impl LdapSource {
    /// A source for the directory `settings` describes; it connects at
    /// the first lookup.
    pub fn new(settings: LdapSettings) -> Self {
        let settings = Arc::new(settings);
        LdapSource {
            pool: Pool::new(Arc::clone(&settings)),
            settings,
            cache: SharedCache::with_budget(CACHE_BYTES, weigh),
        }
    }

    /// The cached or fresh answer for `addr`, whether the cache gave it,
    /// and the filter searched with.
    async fn answer(&self, addr: &Address) -> (Answer, bool, String) {
        // A directory may hold an internationalised domain in either
        // form: both are asked for.
        let mut forms = vec![addr.to_string()];
        forms.extend(addr.unicode());
        let filter = self.settings.filter.render_any(&forms);
        let (answer, cached, _) = self
            .cache
            .get_or_fetch(&filter, || async {
                match self.pool.search(&filter).await {
                    Ok(entries) if entries.is_empty() => {
                        (Answer::NoEntry, self.settings.negative_ttl)
                    }
                    Ok(entries) => {
                        // Parsing every key is CPU work: off the runtime.
                        let (s, a) = (Arc::clone(&self.settings), addr.clone());
                        match tokio::task::spawn_blocking(move || read(&s, &a, entries)).await {
                            // An entry without a key is "no key" like no
                            // entry, and kept as long.
                            Ok(Ok(r)) if r.smime.is_empty() && r.openpgp.is_empty() => {
                                (Answer::Entries(Arc::new(r)), self.settings.negative_ttl)
                            }
                            Ok(Ok(r)) => (Answer::Entries(Arc::new(r)), self.settings.cache_ttl),
                            Ok(Err(why)) => (Answer::Failed(why), FAILURE_TTL),
                            Err(e) => (
                                Answer::Failed(FailReason::BadAnswer(format!(
                                    "{}: reading the entries failed: {e}",
                                    self.settings.url
                                ))),
                                FAILURE_TTL,
                            ),
                        }
                    }
                    Err(why) => (Answer::Failed(why), FAILURE_TTL),
                }
            })
            .await;
        (answer, cached, filter)
    }

    async fn run(&self, addr: &Address, method: Method, detail: bool) -> Traced {
        let (answer, cached, filter) = self.answer(addr).await;
        let s = &self.settings;
        let mut asked = Vec::new();
        if detail {
            asked.push(format!(
                "{} search base {:?} filter {filter}{}",
                s.url,
                s.base,
                if cached { " (cached)" } else { "" }
            ));
        }
        let lookup = match answer {
            Answer::Failed(why) => {
                if detail {
                    asked.push(format!("  failed: {why}"));
                }
                Lookup::Failed(why)
            }
            Answer::NoEntry => {
                if detail {
                    asked.push("  no entry".to_owned());
                }
                Lookup::NotFound
            }
            Answer::Entries(read) => {
                if detail {
                    let names = match method {
                        Method::Smime => &s.smime_attributes,
                        Method::OpenPgp => &s.openpgp_attributes,
                    };
                    for e in &read.entries {
                        asked.push(format!(
                            "  entry {}: addresses [{}]{}; {} {method} key(s) in {}",
                            e.dn,
                            e.addresses.join(", "),
                            if e.listed || s.address_attributes.is_empty() {
                                ""
                            } else {
                                " (the address is not among them: keys must name it)"
                            },
                            match method {
                                Method::Smime => e.smime,
                                Method::OpenPgp => e.openpgp,
                            },
                            names.join(", ")
                        ));
                    }
                }
                let keys = read.keys(method);
                if keys.is_empty() {
                    // An entry without a key of this method: a denial,
                    // the next source is asked.
                    Lookup::NotFound
                } else {
                    Lookup::Found {
                        keys: keys.to_vec(),
                        unusable: Vec::new(),
                        security: Security::Directory,
                    }
                }
            }
        };
        Traced {
            lookup,
            cached,
            asked,
        }
    }
}

/// The keys of both methods in `entries`, found for `addr`.
///
/// When exactly one entry matched and it lists `addr` among its
/// addresses, a key naming another of that entry's addresses is bound to
/// it (`bound_addresses`): the directory says the addresses are one
/// person's (an alias in Active Directory's `proxyAddresses`). With
/// several entries no key is bound so: an entry that merely claims the
/// address (a user adding it to their own entry) must not make its
/// owner's key a recipient of mail to it.
fn read(s: &LdapSettings, addr: &Address, entries: Vec<DirEntry>) -> Result<Read, FailReason> {
    let provenance = Provenance {
        source: SourceKind::Ldap,
        security: Security::Directory,
        trust: s.trust,
        fetched: SystemTime::now(),
    };
    let single = entries.len() == 1;
    let mut seen = std::collections::HashSet::new();
    let mut out = Read {
        entries: Vec::with_capacity(entries.len()),
        smime: Vec::new(),
        openpgp: Vec::new(),
    };
    for e in &entries {
        let addresses = e.addresses(&s.address_attributes);
        let listed = addresses.iter().any(|a| a.matches_loosely(addr));
        let mut counts = [0usize; 2];
        for (i, method) in Method::ALL.into_iter().enumerate() {
            let names = match method {
                Method::Smime => &s.smime_attributes,
                Method::OpenPgp => &s.openpgp_attributes,
            };
            let list = match method {
                Method::Smime => &mut out.smime,
                Method::OpenPgp => &mut out.openpgp,
            };
            for mut k in e.keys(method, names, &s.url, provenance) {
                // Read once: its one encoding (PEM or DER, armored or
                // binary: one key, one recipient) and the addresses it names.
                let identity = crate::backend::identify(method, &k.data);
                let named = match identity {
                    Some(id) => {
                        k.data = id.canonical;
                        id.addresses
                    }
                    None => Vec::new(),
                };
                let digest: [u8; 32] = sha2::Sha256::digest(&k.data).into();
                if !seen.insert((method, digest)) {
                    // The same key in two attributes (userCertificate and
                    // userSMIMECertificate) or two entries: one recipient.
                    continue;
                }
                counts[i] += 1;
                if list.len() >= MAX_KEYS {
                    return Err(FailReason::BadAnswer(format!(
                        "{}: more than {MAX_KEYS} {method} keys for {addr}",
                        s.url
                    )));
                }
                if single
                    && listed
                    && !named.iter().any(|n| n.matches_loosely(addr))
                    && let Some(other) = named
                        .iter()
                        .find(|n| addresses.iter().any(|a| a.matches_loosely(n)))
                {
                    k.bound_addresses = vec![other.clone()];
                }
                list.push(k);
            }
        }
        out.entries.push(Summary {
            dn: e.shown_dn(),
            addresses: addresses.iter().map(Address::to_string).collect(),
            listed,
            smime: counts[0],
            openpgp: counts[1],
        });
    }
    Ok(out)
}

impl KeySource for LdapSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Ldap
    }

    fn describe(&self) -> String {
        format!(
            "LDAP directory {} (base {})",
            self.settings.url, self.settings.base
        )
    }

    fn trust(&self) -> TrustLevel {
        self.settings.trust
    }

    fn answers_for(&self, addr: &Address) -> bool {
        addr.has_dns_domain() && self.settings.covers(addr.domain())
    }

    fn lookup<'a>(&'a self, addr: &'a Address, method: Method) -> LookupFuture<'a> {
        Box::pin(async move { self.run(addr, method, false).await.lookup })
    }

    fn lookup_traced<'a>(
        &'a self,
        addr: &'a Address,
        method: Method,
        detail: bool,
    ) -> TracedFuture<'a> {
        Box::pin(self.run(addr, method, detail))
    }
}
