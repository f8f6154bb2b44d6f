//! `[[ldap]]`: the operator's LDAP directories and Active Directories as
//! key sources, one table each, and the checks their values need before
//! any connection is made (URL forms, how to bind, the filter template,
//! ranges). Reading the password file and connecting are the source's
//! business (`keys::ldap`), at start and on reload.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::ConfigError;
use super::forms::{opt_path, string_list, via_str};
use crate::material::TrustLevel;

/// One `[[ldap]]` table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LdapConfig {
    /// `ldap://host[:port]`, `ldaps://host[:port]` or
    /// `ldapi://%2Fpath%2Fto%2Fsocket`; nothing after the host.
    pub url: String,
    /// Recipient domains this directory answers for (`example.org`,
    /// `*.example.org` for its subdomains, `*` for every domain); it is
    /// asked about no other address.
    #[serde(deserialize_with = "string_list")]
    pub domains: Vec<String>,
    /// How far its keys are trusted: `operator` (the default: the
    /// organisation's own directory), or lower for a directory that
    /// mirrors partners' certificates from elsewhere.
    #[serde(with = "via_str")]
    pub trust: TrustLevel,
    /// Upgrade an `ldap://` connection with StartTLS before binding.
    pub starttls: bool,
    /// DN of a simple bind; `""` = no simple bind.
    pub bind_dn: String,
    /// File holding the simple bind's password (one line); the password
    /// is never written in this file or logged.
    #[serde(with = "opt_path")]
    pub bind_password_file: Option<PathBuf>,
    /// Bind with SASL EXTERNAL (`ldapi://` only: the directory knows the
    /// milter by its user id).
    pub sasl_external: bool,
    /// PEM file of the CAs that may vouch for the directory's TLS
    /// certificate (a private PKI); `""` = the system roots.
    #[serde(with = "opt_path")]
    pub ca_file: Option<PathBuf>,
    /// Search base DN.
    pub base: String,
    /// `sub` (the default), `one` or `base`.
    pub scope: String,
    /// Search filter; `{address}` is replaced with the recipient address,
    /// escaped per RFC 4515.
    pub filter: String,
    /// Attributes listing an entry's mail addresses (`smtp:` prefixes, as
    /// in Active Directory's `proxyAddresses`, are removed): a key naming
    /// any of them is used for every one of them.
    #[serde(deserialize_with = "string_list")]
    pub address_attributes: Vec<String>,
    /// Attributes holding S/MIME certificates (DER or PEM, or a PKCS#7
    /// bag of certificates as `userSMIMECertificate` holds).
    #[serde(deserialize_with = "string_list")]
    pub smime_attributes: Vec<String>,
    /// Attributes holding OpenPGP keys (binary or ASCII-armored).
    #[serde(deserialize_with = "string_list")]
    pub openpgp_attributes: Vec<String>,
    /// Time to connect (and finish TLS) in milliseconds (1 to 60000).
    pub connect_timeout_ms: u64,
    /// Time for one bind or search in milliseconds (1 to 60000); also sent
    /// to the server as the search's time limit.
    pub timeout_ms: u64,
    /// Most entries one search may match (1 to 1000); a search that
    /// matches more is a failure, never a partial answer.
    pub size_limit: i32,
    /// Connections kept open to this directory (1 to 64); searches on
    /// one connection run concurrently.
    pub connections: usize,
    /// How long an entry's keys are reused, in seconds (0 to 86400).
    pub cache_ttl_secs: u64,
    /// How long "no entry" (or no key in it) is reused, in seconds (0 to
    /// 86400).
    pub negative_ttl_secs: u64,
}

impl Default for LdapConfig {
    fn default() -> Self {
        LdapConfig {
            url: String::new(),
            domains: Vec::new(),
            trust: TrustLevel::Operator,
            starttls: false,
            bind_dn: String::new(),
            bind_password_file: None,
            sasl_external: false,
            ca_file: None,
            base: String::new(),
            scope: "sub".to_owned(),
            filter: "(mail={address})".to_owned(),
            address_attributes: vec!["mail".to_owned()],
            smime_attributes: vec![
                "userCertificate;binary".to_owned(),
                "userSMIMECertificate".to_owned(),
            ],
            openpgp_attributes: vec!["pgpKey".to_owned()],
            connect_timeout_ms: 3_000,
            timeout_ms: 5_000,
            size_limit: 16,
            connections: 4,
            cache_ttl_secs: 300,
            negative_ttl_secs: 60,
        }
    }
}

/// The transport an `[[ldap]]` URL asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LdapScheme {
    /// `ldap://`: TCP, plain unless `starttls`.
    Ldap,
    /// `ldaps://`: TLS from the first byte.
    Ldaps,
    /// `ldapi://`: a unix socket.
    Ldapi,
}

impl LdapConfig {
    /// The URL's scheme and what follows it (host and port, or the
    /// percent-encoded socket path), or why the URL is not one this
    /// source takes.
    pub fn scheme(&self) -> Result<(LdapScheme, &str), String> {
        let url = self.url.trim();
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("{url:?} is not an LDAP URL (write ldap://host:389)"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "ldap" => LdapScheme::Ldap,
            "ldaps" => LdapScheme::Ldaps,
            "ldapi" => LdapScheme::Ldapi,
            other => {
                return Err(format!(
                    "{url:?}: scheme {other:?} is not ldap, ldaps or ldapi"
                ));
            }
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err(format!(
                "{url:?}: the URL names the server only (base and filter are keys of their own)"
            ));
        }
        if rest.is_empty() {
            return Err(match scheme {
                LdapScheme::Ldapi => {
                    format!("{url:?} names no socket (write ldapi://%2Frun%2Fslapd%2Fldapi)")
                }
                _ => format!("{url:?} names no host"),
            });
        }
        if rest.contains('@') {
            // User information: the host is after it, and a password in
            // it would be printed wherever the URL is.
            return Err(format!(
                "{url:?}: no user information in the URL (bind_dn and bind_password_file say how to bind)"
            ));
        }
        if scheme != LdapScheme::Ldapi {
            let (host, port) =
                split_host_port(rest).ok_or_else(|| format!("{url:?}: not host or host:port"))?;
            if host.is_empty() || port.is_some_and(|p| p == 0) {
                return Err(format!("{url:?}: not host or host:port"));
            }
        }
        Ok((scheme, rest))
    }

    /// Whether the URL's host is a loopback address, where a password
    /// crosses no network.
    fn is_loopback(host_port: &str) -> bool {
        let host = split_host_port(host_port).map_or("", |(h, _)| h);
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

/// `host[:port]` or `[v6]:port` as host and port; `None` when the port
/// is not a number.
fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = match s.strip_prefix('[') {
        Some(v6) => {
            let (h, after) = v6.split_once(']')?;
            match after {
                "" => (h, None),
                p => (h, Some(p.strip_prefix(':')?)),
            }
        }
        None => match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        },
    };
    match port {
        None => Some((host, None)),
        Some(p) => Some((host, Some(p.parse::<u16>().ok()?))),
    }
}

/// The checks of each `[[ldap]]` table; `invalid(key, message)` makes the
/// error (keys written `ldap[0].url`).
pub(super) fn validate(
    dirs: &mut [LdapConfig],
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<(), ConfigError> {
    for (i, dir) in dirs.iter_mut().enumerate() {
        let key = |k: &str| format!("ldap[{i}].{k}");
        let bad = |k: &str, m: String| invalid(&key(k), m);
        let (scheme, host) = dir.scheme().map_err(|m| bad("url", m))?;
        let host = host.to_owned();
        let range = |k: &str, v: u64, lo: u64, hi: u64| {
            super::forms::in_range(v, lo, hi).map_err(|m| bad(k, m))
        };
        range("connect_timeout_ms", dir.connect_timeout_ms, 1, 60_000)?;
        range("timeout_ms", dir.timeout_ms, 1, 60_000)?;
        range(
            "size_limit",
            u64::try_from(dir.size_limit).unwrap_or(0),
            1,
            1_000,
        )?;
        range("connections", dir.connections as u64, 1, 64)?;
        range("cache_ttl_secs", dir.cache_ttl_secs, 0, 86_400)?;
        // One connection attempt (connect, bind, search) must fit in the
        // key service's deadline for the whole chain, or a slow directory
        // could only ever time out there.
        let attempt = dir.connect_timeout_ms + 2 * dir.timeout_ms;
        let deadline = crate::keys::SOURCE_DEADLINE.as_millis();
        if u128::from(attempt) > deadline {
            return Err(bad(
                "timeout_ms",
                format!(
                    "connect_timeout_ms + 2 × timeout_ms is {attempt} ms, more than the {deadline} ms \
                     a lookup may take"
                ),
            ));
        }
        range("negative_ttl_secs", dir.negative_ttl_secs, 0, 86_400)?;
        if dir.domains.is_empty() {
            return Err(bad(
                "domains",
                "names no domain: list the recipient domains this directory answers for \
                 (\"*\" for all)"
                    .to_owned(),
            ));
        }
        for d in &mut dir.domains {
            *d = canonical_pattern(d).map_err(|m| bad("domains", m))?;
        }
        if dir.base.trim().is_empty() {
            return Err(bad("base", "must name the search base DN".to_owned()));
        }
        if !matches!(dir.scope.as_str(), "sub" | "one" | "base") {
            return Err(bad(
                "scope",
                format!("{:?} is not \"sub\", \"one\" or \"base\"", dir.scope),
            ));
        }
        crate::keys::ldap::FilterTemplate::parse(&dir.filter).map_err(|m| bad("filter", m))?;
        for (k, list) in [
            ("address_attributes", &dir.address_attributes),
            ("smime_attributes", &dir.smime_attributes),
            ("openpgp_attributes", &dir.openpgp_attributes),
        ] {
            if let Some(a) = list.iter().find(|a| !is_attribute_description(a)) {
                return Err(bad(k, format!("{a:?} is not an attribute name")));
            }
        }
        if dir.smime_attributes.is_empty() && dir.openpgp_attributes.is_empty() {
            return Err(bad(
                "smime_attributes",
                "no key attribute: set smime_attributes or openpgp_attributes".to_owned(),
            ));
        }
        let tls = scheme == LdapScheme::Ldaps || dir.starttls;
        if tls && host.starts_with('[') {
            // ldap3 hands the TLS library the host with its brackets, which
            // no certificate names: it could never verify.
            return Err(bad(
                "url",
                format!(
                    "{}: TLS to an IPv6 literal cannot be verified here; use a host name",
                    dir.url
                ),
            ));
        }
        if dir.starttls && scheme != LdapScheme::Ldap {
            return Err(bad(
                "starttls",
                "StartTLS upgrades an ldap:// connection only".to_owned(),
            ));
        }
        if dir.ca_file.is_some() && !tls {
            return Err(bad(
                "ca_file",
                "set, but the connection uses no TLS (ldaps:// or starttls = true)".to_owned(),
            ));
        }
        let simple = !dir.bind_dn.trim().is_empty();
        match (simple, dir.bind_password_file.is_some(), dir.sasl_external) {
            (true, false, _) => {
                return Err(bad(
                    "bind_password_file",
                    "bind_dn is set: name the file that holds its password".to_owned(),
                ));
            }
            (false, true, _) => {
                return Err(bad(
                    "bind_dn",
                    "bind_password_file is set, but no bind_dn".to_owned(),
                ));
            }
            (true, true, true) => {
                return Err(bad(
                    "sasl_external",
                    "choose one way to bind: bind_dn or sasl_external".to_owned(),
                ));
            }
            _ => {}
        }
        if dir.sasl_external && scheme != LdapScheme::Ldapi {
            return Err(bad(
                "sasl_external",
                "SASL EXTERNAL is supported over ldapi:// only".to_owned(),
            ));
        }
        if scheme == LdapScheme::Ldap && !tls && !LdapConfig::is_loopback(&host) {
            // Whoever is on the path could answer with a certificate of
            // their own (used at the directory's trust), and read a
            // password.
            return Err(bad(
                "starttls",
                format!(
                    "{} is neither TLS nor loopback: anyone on the path could answer with \
                     keys of their own{}; use starttls = true, ldaps:// or ldapi://",
                    dir.url,
                    if simple { " and read the password" } else { "" }
                ),
            ));
        }
    }
    Ok(())
}

/// A `domains` entry in canonical form: `*`, or a domain name with an
/// optional `*.` in front.
fn canonical_pattern(d: &str) -> Result<String, String> {
    let t = d.trim();
    if t == "*" {
        return Ok(t.to_owned());
    }
    let (prefix, name) = match t.strip_prefix("*.") {
        Some(rest) => ("*.", rest),
        None => ("", t),
    };
    match crate::address::domain::canonical_name(name) {
        Ok(n) if !name.contains('*') => Ok(format!("{prefix}{n}")),
        _ => Err(format!(
            "{d:?} is not a domain name (write \"example.org\", \"*.example.org\" or \"*\")"
        )),
    }
}

/// An attribute description of RFC 4512 §2.5: a name (or OID) and
/// `;options`.
fn is_attribute_description(a: &str) -> bool {
    !a.is_empty()
        && a.split(';').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn check(d: LdapConfig) -> Result<(), String> {
        let mut v = [d];
        validate(&mut v, &|k, m| ConfigError::Invalid {
            location: super::super::error::Location::Default,
            key: Some(k.to_owned()),
            message: m,
        })
        .map_err(|e| e.to_string())
    }

    fn good() -> LdapConfig {
        LdapConfig {
            url: "ldap://127.0.0.1:3890".to_owned(),
            domains: vec!["Example.ORG.".to_owned()],
            base: "dc=example,dc=org".to_owned(),
            ..LdapConfig::default()
        }
    }

    #[test]
    fn a_plain_directory_on_loopback_is_fine() {
        check(good()).unwrap();
        let mut v = [good()];
        validate(&mut v, &|_, m| ConfigError::Invalid {
            location: super::super::error::Location::Default,
            key: None,
            message: m,
        })
        .unwrap();
        assert_eq!(v[0].domains, ["example.org"]);
    }

    #[test]
    fn a_password_never_crosses_a_network_in_clear() {
        let d = LdapConfig {
            url: "ldap://ldap.example.org".to_owned(),
            bind_dn: "cn=milter".to_owned(),
            bind_password_file: Some("/x".into()),
            ..good()
        };
        assert!(check(d.clone()).unwrap_err().contains("read the password"));
        let anonymous = LdapConfig {
            bind_dn: String::new(),
            bind_password_file: None,
            ..d.clone()
        };
        assert!(check(anonymous).unwrap_err().contains("keys of their own"));
        check(LdapConfig {
            starttls: true,
            ..d.clone()
        })
        .unwrap();
        check(LdapConfig {
            url: "ldaps://ldap.example.org".to_owned(),
            ..d.clone()
        })
        .unwrap();
        check(LdapConfig {
            url: "ldap://[::1]:389".to_owned(),
            ..d
        })
        .unwrap();
    }

    #[test]
    fn odd_settings_are_refused_with_the_key() {
        for (d, key) in [
            (
                LdapConfig {
                    url: "http://x".into(),
                    ..good()
                },
                "url",
            ),
            (
                LdapConfig {
                    url: "ldap://x/dc=org?mail".into(),
                    ..good()
                },
                "url",
            ),
            (
                LdapConfig {
                    domains: vec![],
                    ..good()
                },
                "domains",
            ),
            (
                LdapConfig {
                    url: "ldap://localhost:@evil.example".into(),
                    ..good()
                },
                "url",
            ),
            (
                LdapConfig {
                    url: "ldap://host:99999".into(),
                    ..good()
                },
                "url",
            ),
            (
                LdapConfig {
                    url: "ldapi://".into(),
                    ..good()
                },
                "url",
            ),
            (
                LdapConfig {
                    url: "ldaps://[2001:db8::1]:636".into(),
                    ..good()
                },
                "url",
            ),
            (
                LdapConfig {
                    connect_timeout_ms: 10_000,
                    timeout_ms: 8_000,
                    ..good()
                },
                "timeout_ms",
            ),
            (
                LdapConfig {
                    domains: vec!["a*.org".into()],
                    ..good()
                },
                "domains",
            ),
            (
                LdapConfig {
                    filter: "(mail=x)".into(),
                    ..good()
                },
                "filter",
            ),
            (
                LdapConfig {
                    filter: "(mail={address}".into(),
                    ..good()
                },
                "filter",
            ),
            (
                LdapConfig {
                    starttls: true,
                    url: "ldaps://x".into(),
                    ..good()
                },
                "starttls",
            ),
            (
                LdapConfig {
                    ca_file: Some("/ca".into()),
                    ..good()
                },
                "ca_file",
            ),
            (
                LdapConfig {
                    sasl_external: true,
                    ..good()
                },
                "sasl_external",
            ),
            (
                LdapConfig {
                    bind_dn: "cn=x".into(),
                    ..good()
                },
                "bind_password_file",
            ),
            (
                LdapConfig {
                    size_limit: 0,
                    ..good()
                },
                "size_limit",
            ),
            (
                LdapConfig {
                    smime_attributes: vec!["user Certificate".into()],
                    ..good()
                },
                "smime_attributes",
            ),
            (
                LdapConfig {
                    scope: "subtree".into(),
                    ..good()
                },
                "scope",
            ),
        ] {
            let e = check(d).unwrap_err();
            assert!(e.contains(&format!("ldap[0].{key}")), "{key}: {e}");
        }
    }

    #[test]
    fn domain_patterns() {
        assert_eq!(canonical_pattern("*").unwrap(), "*");
        assert_eq!(
            canonical_pattern("*.Bücher.test").unwrap(),
            "*.xn--bcher-kva.test"
        );
        assert!(canonical_pattern("*.*.test").is_err());
    }
}
