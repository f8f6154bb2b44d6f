//! The connections to one `[[ldap]]` directory: a fixed number of slots,
//! each holding one connection (LDAP multiplexes, so many searches share
//! one), opened on first use and again after it broke, and the search
//! itself with its bounds — connect and operation timeouts, the server's
//! size and time limits, and the same limits enforced here, since a
//! server may not keep them. A search that fails on a connection that
//! sat idle (the server may have closed it) is tried once more on a new
//! one; any other failure is the answer. A directory that cannot be
//! connected or bound to is not tried again for [`DOWN_FOR`]: searches
//! fail at once instead of queueing behind connect timeouts, and a wrong
//! password is not tried again and again (Active Directory locks the
//! account after a few failed binds).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchOptions};
use tokio::sync::Mutex;

use super::entry::{DirEntry, parse_entry};
use super::settings::{Bind, LdapSettings};
use crate::keys::FailReason;

/// Most bytes of entries one search may return: far more than any
/// person's certificates, little enough that a runaway directory cannot
/// fill the memory.
pub const MAX_SEARCH_BYTES: usize = 4 * 1024 * 1024;

/// How long a directory that could not be connected or bound to is left
/// alone.
pub const DOWN_FOR: Duration = Duration::from_secs(10);

/// One slot: a live connection and its generation (so that a failure
/// seen on an old connection does not close its replacement).
type Slot = Mutex<Option<(u64, Ldap)>>;

/// The connections to one directory.
pub struct Pool {
    settings: Arc<LdapSettings>,
    slots: Vec<Slot>,
    next: AtomicUsize,
    generation: AtomicU64,
    /// Until when connecting is not tried, and why.
    down: std::sync::Mutex<Option<(Instant, FailReason)>>,
}

/// A search's entries, or why there are none.
pub type Searched = Result<Vec<DirEntry>, FailReason>;

impl Pool {
    /// No connection yet: the first search opens one.
    pub fn new(settings: Arc<LdapSettings>) -> Self {
        let slots = (0..settings.connections)
            .map(|_| Mutex::new(None))
            .collect();
        Pool {
            settings,
            slots,
            next: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            down: std::sync::Mutex::new(None),
        }
    }

    /// The entries `filter` matches under the configured base.
    pub async fn search(&self, filter: &str) -> Searched {
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let (generation, ldap, reused) = self.handle(slot).await?;
        match self.search_on(ldap, filter).await {
            Err(Broken::Connection(why)) => {
                self.discard(slot, generation).await;
                if !reused {
                    return Err(why);
                }
                // An idle connection the server (or a firewall) closed:
                // one more try on a fresh one.
                let (generation, ldap, _) = self.handle(slot).await?;
                match self.search_on(ldap, filter).await {
                    Err(Broken::Connection(why)) => {
                        self.discard(slot, generation).await;
                        Err(why)
                    }
                    Err(Broken::Answer(why)) => Err(why),
                    Ok(entries) => Ok(entries),
                }
            }
            Err(Broken::Answer(why)) => Err(why),
            Ok(entries) => Ok(entries),
        }
    }

    /// A live connection of `slot` (and whether it was open already),
    /// connecting and binding when there is none. The slot stays locked
    /// while it connects, so concurrent searches wait for one connection
    /// instead of opening one each.
    async fn handle(&self, slot: usize) -> Result<(u64, Ldap, bool), FailReason> {
        let Some(cell) = self.slots.get(slot) else {
            return Err(FailReason::Network("no connection slot".to_owned()));
        };
        let mut held = cell.lock().await;
        if let Some((generation, ldap)) = held.as_mut()
            && !ldap.is_closed()
        {
            return Ok((*generation, ldap.clone(), true));
        }
        *held = None;
        if let Some(why) = self.still_down() {
            return Err(why);
        }
        let ldap = match self.connect().await {
            Ok(l) => {
                self.set_down(None);
                l
            }
            Err(why) => {
                self.set_down(Some(why.clone()));
                return Err(why);
            }
        };
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        *held = Some((generation, ldap.clone()));
        Ok((generation, ldap, false))
    }

    /// Why connecting is not tried now, while the directory is down.
    fn still_down(&self) -> Option<FailReason> {
        let down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        match &*down {
            Some((until, why)) if Instant::now() < *until => {
                let note = format!(
                    "(not retried for {} s after a failed connection)",
                    DOWN_FOR.as_secs()
                );
                Some(match why {
                    FailReason::Timeout => FailReason::Network(format!(
                        "{}: timed out connecting {note}",
                        self.settings.url
                    )),
                    FailReason::Network(s) => FailReason::Network(format!("{s} {note}")),
                    FailReason::BadAnswer(s) => FailReason::BadAnswer(format!("{s} {note}")),
                    other => other.clone(),
                })
            }
            _ => None,
        }
    }

    fn set_down(&self, why: Option<FailReason>) {
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        *down = why.map(|w| (Instant::now() + DOWN_FOR, w));
    }

    async fn discard(&self, slot: usize, generation: u64) {
        if let Some(cell) = self.slots.get(slot) {
            let mut held = cell.lock().await;
            if held.as_ref().is_some_and(|(g, _)| *g == generation) {
                *held = None;
            }
        }
    }

    /// Opens, secures and binds one connection, all within the connect
    /// and operation timeouts.
    async fn connect(&self) -> Result<Ldap, FailReason> {
        let s = &self.settings;
        let mut conn_settings = LdapConnSettings::new()
            .set_conn_timeout(s.connect_timeout)
            .set_starttls(s.starttls);
        if let Some(tls) = &s.tls {
            conn_settings = conn_settings.set_connector(tls.clone());
        }
        let opened = tokio::time::timeout(
            s.connect_timeout,
            LdapConnAsync::with_settings(conn_settings, &s.url),
        )
        .await;
        let (conn, mut ldap) = match opened {
            Err(_) => return Err(FailReason::Timeout),
            Ok(Err(e)) => return Err(connect_failure(&s.url, &e)),
            Ok(Ok(pair)) => pair,
        };
        let url = s.url.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!("ldap {url}: connection ended: {e}");
            }
        });
        let bound = match &s.bind {
            Bind::Anonymous => return Ok(ldap),
            Bind::Simple { dn, password } => {
                tokio::time::timeout(
                    s.timeout,
                    ldap.with_timeout(s.timeout)
                        .simple_bind(dn, password.expose()),
                )
                .await
            }
            Bind::SaslExternal => {
                tokio::time::timeout(s.timeout, ldap.with_timeout(s.timeout).sasl_external_bind())
                    .await
            }
        };
        match bound {
            Err(_) | Ok(Err(LdapError::Timeout { .. })) => Err(FailReason::Timeout),
            Ok(Err(e)) => Err(connect_failure(&s.url, &e)),
            Ok(Ok(result)) if result.rc == 0 => Ok(ldap),
            Ok(Ok(result)) => Err(FailReason::BadAnswer(format!(
                "{}: bind {} refused: {}",
                s.url,
                s.bind.describe(),
                result_text(result.rc, &result.text)
            ))),
        }
    }

    /// One search on `ldap`, bounded in time, entries and bytes.
    async fn search_on(&self, mut ldap: Ldap, filter: &str) -> Result<Vec<DirEntry>, Broken> {
        let s = &self.settings;
        let opts = SearchOptions::new()
            .sizelimit(s.size_limit)
            .timelimit(i32::try_from(s.timeout.as_secs().max(1)).unwrap_or(60));
        let run = async {
            let mut stream = ldap
                .with_search_options(opts)
                .with_timeout(s.timeout)
                .streaming_search(&s.base, s.scope, filter, s.attributes.clone())
                .await
                .map_err(|e| Broken::from_error(&s.url, e))?;
            let mut entries = Vec::new();
            let mut bytes = 0usize;
            loop {
                let item = stream
                    .next()
                    .await
                    .map_err(|e| Broken::from_error(&s.url, e))?;
                let Some(item) = item else { break };
                if item.is_ref() || item.is_intermediate() {
                    // Referrals are not chased: this directory answers.
                    continue;
                }
                let entry = parse_entry(item.0).map_err(|why| {
                    Broken::Connection(FailReason::BadAnswer(format!(
                        "{}: unreadable entry: {why}",
                        s.url
                    )))
                })?;
                bytes = bytes.saturating_add(entry.size());
                entries.push(entry);
                if entries.len() > usize::try_from(s.size_limit).unwrap_or(usize::MAX) {
                    // The server ignored the size limit. The connection
                    // is dropped rather than left streaming.
                    return Err(Broken::Connection(too_many(&s.url, s.size_limit)));
                }
                if bytes > MAX_SEARCH_BYTES {
                    return Err(Broken::Connection(FailReason::BadAnswer(format!(
                        "{}: entries larger than {MAX_SEARCH_BYTES} bytes",
                        s.url
                    ))));
                }
            }
            let result = stream.finish().await;
            match result.rc {
                0 => Ok(entries),
                4 => Err(Broken::Answer(too_many(&s.url, s.size_limit))),
                _ => Err(Broken::Answer(FailReason::BadAnswer(format!(
                    "{}: search failed: {}",
                    s.url,
                    result_text(result.rc, &result.text)
                )))),
            }
        };
        match tokio::time::timeout(s.timeout, run).await {
            Ok(r) => r,
            // The connection may be stuck mid-answer: not reused.
            Err(_) => Err(Broken::Connection(FailReason::Timeout)),
        }
    }
}

/// A failed search: its connection is broken (not reused), or the
/// server gave an answer that is no use (the connection is fine).
enum Broken {
    Connection(FailReason),
    Answer(FailReason),
}

impl Broken {
    fn from_error(url: &str, e: LdapError) -> Broken {
        match e {
            LdapError::Timeout { .. } => Broken::Connection(FailReason::Timeout),
            LdapError::LdapResult { result } => Broken::Answer(FailReason::BadAnswer(format!(
                "{url}: {}",
                result_text(result.rc, &result.text)
            ))),
            other => Broken::Connection(FailReason::Network(format!("{url}: {other}"))),
        }
    }
}

fn too_many(url: &str, limit: i32) -> FailReason {
    FailReason::BadAnswer(format!(
        "{url}: the search matched more than {limit} entries (size_limit)"
    ))
}

fn connect_failure(url: &str, e: &LdapError) -> FailReason {
    match e {
        LdapError::Timeout { .. } => FailReason::Timeout,
        other => FailReason::Network(format!("{url}: {other}")),
    }
}

/// An LDAP result code with its name (RFC 4511 §4.1.9) and the server's
/// diagnostic message.
pub fn result_text(rc: u32, text: &str) -> String {
    let name = match rc {
        1 => "operationsError",
        2 => "protocolError",
        3 => "timeLimitExceeded",
        4 => "sizeLimitExceeded",
        8 => "strongerAuthRequired",
        10 => "referral",
        11 => "adminLimitExceeded",
        13 => "confidentialityRequired",
        32 => "noSuchObject",
        34 => "invalidDNSyntax",
        48 => "inappropriateAuthentication",
        49 => "invalidCredentials",
        50 => "insufficientAccessRights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwillingToPerform",
        80 => "other",
        _ => "error",
    };
    let text = text.trim();
    if text.is_empty() {
        format!("{name} ({rc})")
    } else {
        // The server's words, bounded and on one line.
        let one_line: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(200)
            .collect();
        format!("{name} ({rc}): {one_line}")
    }
}

/// The scope of a `scope` setting (checked when the configuration loads).
pub fn scope(name: &str) -> Scope {
    match name {
        "base" => Scope::Base,
        "one" => Scope::OneLevel,
        _ => Scope::Subtree,
    }
}
