//! The connections to one `[[ldap]]` directory: a fixed number of slots,
//! each holding one connection (LDAP multiplexes, so many searches share
//! one), opened on first use and again after it broke. A search that
//! finds its connection closed (the server or a firewall ended an idle
//! one) is tried once more on a new one; a timeout or a useless answer
//! is the answer.
//!
//! A directory that cannot be connected or bound to is left alone for
//! [`DOWN_FOR`] ([`BIND_REFUSED_FOR`] when it refused the bind): searches
//! use a connection still open, or fail at once instead of queueing
//! behind connect timeouts, and only one search probes when the time is
//! up — so a wrong password is not tried again and again (Active
//! Directory locks an account after a few failed binds; a reload, with
//! the password fixed, starts afresh).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ldap3::{Ldap, Scope};
use tokio::sync::Mutex;

use super::conn::{self, Broken};
use super::entry::DirEntry;
use super::settings::LdapSettings;
use crate::keys::FailReason;

/// How long a directory that could not be connected to is left alone.
pub const DOWN_FOR: Duration = Duration::from_secs(10);

/// How long a directory that refused the bind is left alone.
pub const BIND_REFUSED_FOR: Duration = Duration::from_secs(300);

/// One slot: a live connection and its generation (so that a failure
/// seen on an old connection does not close its replacement).
type Slot = Mutex<Option<(u64, Ldap)>>;

/// The last failure to connect, and until when no new connection is
/// tried.
struct Down {
    until: Instant,
    why: FailReason,
}

/// The connections to one directory.
pub struct Pool {
    settings: Arc<LdapSettings>,
    slots: Vec<Slot>,
    next: AtomicUsize,
    generation: AtomicU64,
    down: std::sync::Mutex<Option<Down>>,
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
        let (slot, generation, ldap, reused) = self.handle(slot).await?;
        let first = conn::search(Arc::clone(&self.settings), ldap, filter.to_owned()).await;
        match first {
            Ok(entries) => Ok(entries),
            Err(Broken::Answer(why)) => Err(why),
            Err(Broken::Stuck(why)) => {
                self.discard(slot, generation).await;
                Err(why)
            }
            Err(Broken::Closed(why)) => {
                self.discard(slot, generation).await;
                if !reused {
                    return Err(why);
                }
                let (slot, generation, ldap, _) = self.handle(slot).await?;
                let again = conn::search(Arc::clone(&self.settings), ldap, filter.to_owned()).await;
                match again {
                    Ok(entries) => Ok(entries),
                    Err(Broken::Answer(why)) => Err(why),
                    Err(b) => {
                        self.discard(slot, generation).await;
                        Err(b.reason())
                    }
                }
            }
        }
    }

    /// A live connection — `slot`'s, or while the directory is down any
    /// other slot's — with its slot, generation and whether it was open
    /// already; connecting and binding when there is none. The slot stays
    /// locked while it connects, so concurrent searches wait for one
    /// connection instead of opening one each.
    async fn handle(&self, slot: usize) -> Result<(usize, u64, Ldap, bool), FailReason> {
        let Some(cell) = self.slots.get(slot) else {
            return Err(FailReason::Network("no connection slot".to_owned()));
        };
        let mut held = cell.lock().await;
        if let Some((generation, ldap)) = held.as_mut()
            && !ldap.is_closed()
        {
            return Ok((slot, *generation, ldap.clone(), true));
        }
        *held = None;
        if let Some(why) = self.still_down() {
            drop(held);
            return self.any_live().ok_or(why);
        }
        match conn::connect(Arc::clone(&self.settings)).await {
            Ok(ldap) => {
                self.set_down(None);
                let generation = self.generation.fetch_add(1, Ordering::Relaxed);
                *held = Some((generation, ldap.clone()));
                Ok((slot, generation, ldap, false))
            }
            Err(why) => {
                self.set_down(Some(why.clone()));
                drop(held);
                self.any_live().ok_or(why)
            }
        }
    }

    /// An open connection of any slot not busy connecting.
    fn any_live(&self) -> Option<(usize, u64, Ldap, bool)> {
        self.slots.iter().enumerate().find_map(|(i, cell)| {
            let mut held = cell.try_lock().ok()?;
            let (generation, ldap) = held.as_mut()?;
            (!ldap.is_closed()).then(|| (i, *generation, ldap.clone(), true))
        })
    }

    /// Why no connection is tried now. When the time is up, the caller
    /// is the one probe: the window is claimed again before it connects,
    /// so concurrent searches do not all connect (and bind) at once.
    fn still_down(&self) -> Option<FailReason> {
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        let d = down.as_mut()?;
        let now = Instant::now();
        if now >= d.until {
            d.until = now + self.settings.connect_timeout + self.settings.timeout;
            return None;
        }
        let note = format!(
            "(not retried for {} s after a failed connection)",
            hold_for(&d.why).as_secs()
        );
        Some(match &d.why {
            FailReason::Timeout => FailReason::Network(format!(
                "{}: timed out connecting {note}",
                self.settings.url
            )),
            FailReason::Network(s) => FailReason::Network(format!("{s} {note}")),
            FailReason::BadAnswer(s) => FailReason::BadAnswer(format!("{s} {note}")),
            other => other.clone(),
        })
    }

    fn set_down(&self, why: Option<FailReason>) {
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        *down = why.map(|why| Down {
            until: Instant::now() + hold_for(&why),
            why,
        });
    }

    async fn discard(&self, slot: usize, generation: u64) {
        if let Some(cell) = self.slots.get(slot) {
            let mut held = cell.lock().await;
            if held.as_ref().is_some_and(|(g, _)| *g == generation) {
                *held = None;
            }
        }
    }
}

/// How long a connection failure keeps the directory alone.
fn hold_for(why: &FailReason) -> Duration {
    if conn::is_refused_bind(why) {
        BIND_REFUSED_FOR
    } else {
        DOWN_FOR
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
