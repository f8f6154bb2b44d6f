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
//! TLS), `filter` (the template and RFC 4515 escaping), `pool`
//! (connections, bind, the bounded search), `entry` (reading entries and
//! the keys and addresses in them).

pub(crate) mod entry;
mod filter;
mod pool;
mod settings;

pub use filter::{FilterTemplate, escape};
pub use settings::{LdapSettings, LdapSetupError};

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::address::Address;
use crate::keys::cache::SharedCache;
use crate::keys::{
    FailReason, KeySource, Lookup, LookupFuture, Provenance, Security, SourceKind, Traced,
    TracedFuture, TrustLevel,
};
use crate::material::Method;
use entry::DirEntry;
use pool::Pool;

/// How long a failed search is remembered: long enough that a directory
/// that is down is not asked again by every RCPT, short enough that mail
/// flows soon after it is back.
pub const FAILURE_TTL: Duration = Duration::from_secs(15);

/// Bytes of entries one directory's cache holds at most.
pub const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// One search's answer, as cached.
#[derive(Clone, Debug)]
enum Answer {
    /// The entries the filter matched (one or more).
    Entries(Arc<Vec<DirEntry>>),
    /// No entry matched.
    NoEntry,
    /// The search could not be made or answered.
    Failed(FailReason),
}

fn weigh(a: &Answer) -> usize {
    match a {
        Answer::Entries(e) => e.iter().map(DirEntry::size).sum(),
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
    /// and when it arrived.
    async fn answer(&self, addr: &Address) -> (Answer, bool, SystemTime, String) {
        let filter = self.settings.filter.render(&addr.to_string());
        let (answer, cached, at) = self
            .cache
            .get_or_fetch(&filter, || async {
                match self.pool.search(&filter).await {
                    Ok(entries) if entries.is_empty() => {
                        (Answer::NoEntry, self.settings.negative_ttl)
                    }
                    Ok(entries) => (Answer::Entries(Arc::new(entries)), self.settings.cache_ttl),
                    Err(why) => (Answer::Failed(why), FAILURE_TTL),
                }
            })
            .await;
        (answer, cached, at, filter)
    }

    async fn run(&self, addr: &Address, method: Method, detail: bool) -> Traced {
        let (answer, cached, at, filter) = self.answer(addr).await;
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
            Answer::Entries(entries) => {
                self.keys_of(addr, method, &entries, at, &mut asked, detail)
            }
        };
        Traced {
            lookup,
            cached,
            asked,
        }
    }

    /// The keys of `method` in `entries`, each bound to the entry's other
    /// addresses when the entry lists `addr` among them.
    fn keys_of(
        &self,
        addr: &Address,
        method: Method,
        entries: &[DirEntry],
        at: SystemTime,
        asked: &mut Vec<String>,
        detail: bool,
    ) -> Lookup {
        let s = &self.settings;
        let names = match method {
            Method::Smime => &s.smime_attributes,
            Method::OpenPgp => &s.openpgp_attributes,
        };
        let provenance = Provenance {
            source: SourceKind::Ldap,
            security: Security::Directory,
            trust: s.trust,
            fetched: at,
        };
        let mut keys = Vec::new();
        for e in entries {
            let addresses = e.addresses(&s.address_attributes);
            let listed = addresses.iter().any(|a| a.matches_loosely(addr));
            let mut found = e.keys(method, names, &s.url, provenance);
            if listed {
                let others: Vec<Address> = addresses
                    .iter()
                    .filter(|a| !a.matches_loosely(addr))
                    .cloned()
                    .collect();
                for k in &mut found {
                    k.bound_addresses.clone_from(&others);
                }
            }
            if detail {
                let listed_as: Vec<String> = addresses.iter().map(Address::to_string).collect();
                asked.push(format!(
                    "  entry {}: addresses [{}]{}; {} {} value(s) in {}",
                    e.dn,
                    listed_as.join(", "),
                    if listed || s.address_attributes.is_empty() {
                        ""
                    } else {
                        " (the address is not among them: keys must name it)"
                    },
                    found.len(),
                    method,
                    names.join(", ")
                ));
            }
            keys.extend(found);
        }
        if keys.is_empty() {
            // An entry without a key of this method: a denial, the next
            // source is asked.
            return Lookup::NotFound;
        }
        Lookup::Found {
            keys,
            unusable: Vec::new(),
            security: Security::Directory,
        }
    }
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
