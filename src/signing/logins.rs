//! Who may sign as whom (`signing.login_map`): a file of
//! `login: address, address` lines, in the spirit of Postfix's
//! `smtpd_sender_login_maps` read the other way round. `@domain` stands
//! for every address at that domain (for a service account); `#` starts a
//! comment; a login may have several lines. Logins compare
//! case-insensitively, as Postfix's table lookups do; addresses as mail
//! systems do (local part case-insensitive).
//!
//! Without a map, a login may sign only as the address it is spelled as
//! (`alice@example.org` as `alice@example.org`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::address::{Address, fold_case};

/// Why the login map could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoginMapError {
    /// Reading the file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A line is malformed.
    #[error("{}:{line}: {reason}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// What one login may sign as.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Allowed {
    addresses: Vec<String>,
    domains: Vec<String>,
}

/// The login map; `None` inside means "no file: a login is its address".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoginMap {
    map: Option<HashMap<String, Allowed>>,
}

fn address_key(addr: &Address) -> String {
    format!("{}@{}", fold_case(&addr.local_unquoted()), addr.domain())
}

impl LoginMap {
    /// The map without a file.
    pub fn identity() -> LoginMap {
        LoginMap { map: None }
    }

    /// Reads the map from `path`.
    pub fn load(path: &Path) -> Result<LoginMap, LoginMapError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoginMapError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|(line, reason)| LoginMapError::Line {
            path: path.to_owned(),
            line,
            reason,
        })
    }

    /// Parses the text of a map: `Err((line, reason))` on the first bad
    /// line.
    pub fn parse(text: &str) -> Result<LoginMap, (usize, String)> {
        let mut map: HashMap<String, Allowed> = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let Some((login, list)) = line.split_once(':') else {
                return Err((n, "expected `login: address, address`".into()));
            };
            let login = login.trim();
            if login.is_empty() || login.chars().any(char::is_whitespace) {
                return Err((n, format!("{login:?} is not a login")));
            }
            let entry = map.entry(login.to_lowercase()).or_default();
            let mut any = false;
            for item in list.split([',', ' ', '\t']).filter(|s| !s.is_empty()) {
                any = true;
                if let Some(domain) = item.strip_prefix('@') {
                    let d = crate::address::domain::canonical_name(domain)
                        .map_err(|e| (n, format!("{item:?}: {e}")))?;
                    entry.domains.push(d);
                } else {
                    let a = Address::parse(item)
                        .ok()
                        .filter(Address::has_dns_domain)
                        .ok_or_else(|| (n, format!("{item:?} is not an address or @domain")))?;
                    entry.addresses.push(address_key(&a));
                }
            }
            if !any {
                return Err((n, format!("login {login:?} has no address")));
            }
        }
        Ok(LoginMap { map: Some(map) })
    }

    /// Whether `login` may sign as `from`.
    pub fn allows(&self, login: &str, from: &Address) -> bool {
        if !from.has_dns_domain() {
            return false;
        }
        match &self.map {
            None => Address::parse(login).is_ok_and(|l| l.matches_loosely(from)),
            Some(map) => map.get(&login.to_lowercase()).is_some_and(|a| {
                a.domains.iter().any(|d| d == from.domain())
                    || a.addresses.contains(&address_key(from))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn a(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    #[test]
    fn a_login_signs_as_its_listed_addresses_and_domains_only() {
        let m = LoginMap::parse(
            "# comment\nalice: alice@example.org, Alice.Smith@Example.ORG\n\
             svc : @lists.example.org # service\nALICE: a2@example.org\n",
        )
        .unwrap();
        assert!(m.allows("alice", &a("alice@example.org")));
        assert!(m.allows("Alice", &a("ALICE.smith@example.org")));
        assert!(m.allows("alice", &a("a2@example.org")));
        assert!(!m.allows("alice", &a("bob@example.org")));
        assert!(m.allows("svc", &a("any@lists.example.org")));
        assert!(!m.allows("svc", &a("any@sub.lists.example.org")));
        assert!(!m.allows("mallory", &a("alice@example.org")));
        assert!(!m.allows("", &a("alice@example.org")));
    }

    #[test]
    fn without_a_map_a_login_is_its_own_address() {
        let m = LoginMap::identity();
        assert!(m.allows("alice@example.org", &a("Alice@EXAMPLE.org")));
        assert!(!m.allows("alice", &a("alice@example.org")));
        assert!(!m.allows("alice@example.org", &a("bob@example.org")));
    }

    #[test]
    fn bad_lines_are_named() {
        assert_eq!(
            LoginMap::parse("ok: a@b.example\nno colon here\n")
                .unwrap_err()
                .0,
            2
        );
        assert_eq!(LoginMap::parse("x:\n").unwrap_err().0, 1);
        assert!(
            LoginMap::parse("x: not-an-address\n")
                .unwrap_err()
                .1
                .contains("not-an-address")
        );
        assert!(LoginMap::parse("x: @\n").is_err());
        assert!(LoginMap::parse("two words: a@b.example\n").is_err());
    }
}
