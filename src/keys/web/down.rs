//! Hosts that failed recently: a web server that timed out or failed TLS
//! is not asked again for [`FAILURE_TTL`], whichever address's key is
//! wanted, so that mail to many addresses of one broken domain costs one
//! timeout, not one per address, on the thread that answers the MTA.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use super::FAILURE_TTL;
use crate::keys::cache::CACHE_CAPACITY;

/// Recently failed hosts by name and port, with when and why.
pub(super) struct DownHosts {
    map: Mutex<HashMap<(String, u16), (Instant, String)>>,
}

impl DownHosts {
    pub(super) fn new() -> Self {
        DownHosts {
            map: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u16), (Instant, String)>> {
        match self.map.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Why `host:port` is not to be asked now, if it failed within
    /// [`FAILURE_TTL`].
    pub(super) fn check(&self, host: &str, port: u16) -> Option<String> {
        let map = self.lock();
        let (at, why) = map.get(&(host.to_owned(), port))?;
        let ago = at.elapsed();
        (ago < FAILURE_TTL).then(|| {
            format!(
                "{host}:{port} failed {} s ago ({why}); not asked again for {} s",
                ago.as_secs(),
                FAILURE_TTL.as_secs()
            )
        })
    }

    /// Records that `host:port` failed now.
    pub(super) fn mark(&self, host: &str, port: u16, why: &str) {
        let mut map = self.lock();
        if map.len() >= CACHE_CAPACITY {
            map.retain(|_, (at, _)| at.elapsed() < FAILURE_TTL);
            if map.len() >= CACHE_CAPACITY {
                map.clear();
            }
        }
        map.insert((host.to_owned(), port), (Instant::now(), why.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_host_is_down_for_the_failure_ttl_only() {
        let down = DownHosts::new();
        assert!(down.check("h.example", 443).is_none());
        down.mark("h.example", 443, "timed out");
        let why = down.check("h.example", 443).expect("down");
        assert!(
            why.contains("h.example:443 failed 0 s ago (timed out)"),
            "{why}"
        );
        assert!(down.check("h.example", 8443).is_none(), "per port");
        assert!(down.check("other.example", 443).is_none());
        let mut map = down.lock();
        let stale = Instant::now().checked_sub(FAILURE_TTL);
        if let (Some(entry), Some(stale)) = (map.get_mut(&("h.example".to_owned(), 443)), stale) {
            entry.0 = stale;
        }
        drop(map);
        assert!(down.check("h.example", 443).is_none());
    }
}
