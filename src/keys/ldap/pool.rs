//! The connections to one `[[ldap]]` directory: a fixed number of slots,
//! each holding one connection (LDAP multiplexes, so many searches share
//! one), opened on first use and again after it broke. A search that
//! finds its connection closed (the server or a firewall ended an idle
//! one) is tried once more on a new one; a timeout or a useless answer
//! is the answer.
//!
//! A directory that cannot be connected to is left alone for
//! [`DOWN_FOR`] ([`BIND_REFUSED_FOR`] when it refused the bind's
//! credentials): searches use a connection still open, or fail at once
//! instead of queueing behind connect timeouts, and only one search
//! probes when the time is up — so a wrong password is not tried again
//! and again (Active Directory locks an account after a few failed
//! binds; a reload, with the password fixed, starts afresh).
//!
//! Connecting and searching run as tasks that record their own outcome
//! (the connection in its slot, the directory down, a stuck connection
//! dropped): the lookup that started them may be gone by then — the SMTP
//! client left, the key service's deadline passed — and what they learnt
//! must not be lost with it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ldap3::{Ldap, Scope};

use super::conn::{self, Broken, ConnectFailure};
use super::entry::DirEntry;
use super::settings::LdapSettings;
use crate::keys::FailReason;

/// How long a directory that could not be connected to is left alone.
pub const DOWN_FOR: Duration = Duration::from_secs(10);

/// How long a directory that refused the bind's credentials is left
/// alone.
pub const BIND_REFUSED_FOR: Duration = Duration::from_secs(300);

/// The last failure to connect, and until when no new connection is
/// tried.
struct Down {
    until: Instant,
    why: FailReason,
    refused_bind: bool,
}

/// What the tasks share: the live connections and the down state.
struct Shared {
    settings: Arc<LdapSettings>,
    /// Each slot's live connection and its generation (so that a failure
    /// seen on an old connection does not drop its replacement).
    live: std::sync::Mutex<Vec<Option<(u64, Ldap)>>>,
    generation: AtomicU64,
    down: std::sync::Mutex<Option<Down>>,
}

/// The connections to one directory.
pub struct Pool {
    shared: Arc<Shared>,
    /// Held while any slot connects, by the task that connects (so that it
    /// stays held if the lookup that started it is dropped): one
    /// connection attempt at a time, so concurrent searches wait for it
    /// instead of opening one each — and a wrong password is sent once,
    /// not once per slot.
    connecting: Arc<tokio::sync::Mutex<()>>,
    slots: usize,
    next: AtomicUsize,
}

/// A search's entries, or why there are none.
pub type Searched = Result<Vec<DirEntry>, FailReason>;

/// A connection to search on: its slot, generation, handle, and whether
/// it was open before this search.
type Handle = (usize, u64, Ldap, bool);

impl Pool {
    /// No connection yet: the first search opens one.
    pub fn new(settings: Arc<LdapSettings>) -> Self {
        let n = settings.connections.max(1);
        Pool {
            shared: Arc::new(Shared {
                settings,
                live: std::sync::Mutex::new(vec![None; n]),
                generation: AtomicU64::new(0),
                down: std::sync::Mutex::new(None),
            }),
            connecting: Arc::new(tokio::sync::Mutex::new(())),
            slots: n,
            next: AtomicUsize::new(0),
        }
    }

    /// The entries `filter` matches under the configured base.
    pub async fn search(&self, filter: &str) -> Searched {
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.slots;
        let (slot, generation, ldap, reused) = self.handle(slot).await?;
        match self.search_on(slot, generation, ldap, filter).await {
            Err(Broken::Closed(_)) if reused => {
                // An idle connection the server (or a firewall) closed:
                // one more try on a fresh one.
                let (slot, generation, ldap, _) = self.handle(slot).await?;
                self.search_on(slot, generation, ldap, filter)
                    .await
                    .map_err(Broken::reason)
            }
            other => other.map_err(Broken::reason),
        }
    }

    /// One search as a task of its own, which drops a broken or stuck
    /// connection from its slot whether or not anyone still waits.
    async fn search_on(
        &self,
        slot: usize,
        generation: u64,
        ldap: Ldap,
        filter: &str,
    ) -> Result<Vec<DirEntry>, Broken> {
        let shared = Arc::clone(&self.shared);
        let filter = filter.to_owned();
        let task = tokio::spawn(async move {
            let r = conn::search(Arc::clone(&shared.settings), ldap, filter).await;
            if matches!(r, Err(Broken::Closed(_) | Broken::Stuck(_))) {
                shared.discard(slot, generation);
            }
            r
        });
        match task.await {
            Ok(r) => r,
            Err(e) => Err(Broken::Stuck(FailReason::BadAnswer(format!(
                "{}: the search ended: {e}",
                self.shared.settings.url
            )))),
        }
    }

    /// A live connection — `slot`'s, or while the directory is down any
    /// other slot's — connecting and binding when there is none.
    async fn handle(&self, slot: usize) -> Result<Handle, FailReason> {
        if let Some(h) = self.shared.live_at(slot) {
            return Ok(h);
        }
        let gate = Arc::clone(&self.connecting).lock_owned().await;
        // Another search may have connected it while this one waited.
        if let Some(h) = self.shared.live_at(slot) {
            return Ok(h);
        }
        if let Some(why) = self.shared.still_down() {
            return self.shared.any_live().ok_or(why);
        }
        let shared = Arc::clone(&self.shared);
        let task = tokio::spawn(async move {
            let r = conn::connect(Arc::clone(&shared.settings)).await;
            let handle = shared.connected(slot, r);
            drop(gate);
            handle
        });
        match task.await {
            Ok(Ok(h)) => Ok(h),
            Ok(Err(why)) => self.shared.any_live().ok_or(why),
            Err(e) => Err(FailReason::BadAnswer(format!(
                "{}: connecting ended: {e}",
                self.shared.settings.url
            ))),
        }
    }
}

impl Shared {
    fn live(&self) -> std::sync::MutexGuard<'_, Vec<Option<(u64, Ldap)>>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `slot`'s connection, when it is open.
    fn live_at(&self, slot: usize) -> Option<Handle> {
        let mut live = self.live();
        let (generation, ldap) = live.get_mut(slot)?.as_mut()?;
        (!ldap.is_closed()).then(|| (slot, *generation, ldap.clone(), true))
    }

    /// An open connection of any slot.
    fn any_live(&self) -> Option<Handle> {
        let mut live = self.live();
        live.iter_mut().enumerate().find_map(|(i, held)| {
            let (generation, ldap) = held.as_mut()?;
            (!ldap.is_closed()).then(|| (i, *generation, ldap.clone(), true))
        })
    }

    /// Records a connection attempt's outcome: the new connection in
    /// `slot`, or the directory down.
    fn connected(
        &self,
        slot: usize,
        r: Result<Ldap, ConnectFailure>,
    ) -> Result<Handle, FailReason> {
        match r {
            Ok(ldap) => {
                *self.down.lock().unwrap_or_else(|p| p.into_inner()) = None;
                let generation = self.generation.fetch_add(1, Ordering::Relaxed);
                if let Some(held) = self.live().get_mut(slot) {
                    *held = Some((generation, ldap.clone()));
                }
                Ok((slot, generation, ldap, false))
            }
            Err(f) => {
                let hold = if f.refused_bind {
                    BIND_REFUSED_FOR
                } else {
                    DOWN_FOR
                };
                *self.down.lock().unwrap_or_else(|p| p.into_inner()) = Some(Down {
                    until: Instant::now() + hold,
                    why: f.reason.clone(),
                    refused_bind: f.refused_bind,
                });
                Err(f.reason)
            }
        }
    }

    fn discard(&self, slot: usize, generation: u64) {
        if let Some(held) = self.live().get_mut(slot)
            && held.as_ref().is_some_and(|(g, _)| *g == generation)
        {
            *held = None;
        }
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
        let hold = if d.refused_bind {
            BIND_REFUSED_FOR
        } else {
            DOWN_FOR
        };
        let note = format!(
            "(not retried for {} s after a failed connection)",
            hold.as_secs()
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
}

/// The scope of a `scope` setting (checked when the configuration loads).
pub fn scope(name: &str) -> Scope {
    match name {
        "base" => Scope::Base,
        "one" => Scope::OneLevel,
        _ => Scope::Subtree,
    }
}
