//! What one `[[ldap]]` directory's source works with, made from its
//! configuration when the milter starts or reloads: the bind (with the
//! password read from its file), the TLS connector (with `ca_file`), the
//! filter template and the bounds. Files that cannot be read are a setup
//! error here, before any mail depends on them.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use ldap3::Scope;

use super::filter::FilterTemplate;
use crate::config::{LdapConfig, LdapScheme};
use crate::material::TrustLevel;

/// A password, kept out of every `Debug` and log line.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// The password itself, for the bind request only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// How the source binds.
#[derive(Clone, Debug)]
pub enum Bind {
    /// No bind: anonymous searches.
    Anonymous,
    /// A simple bind.
    Simple {
        /// The bind DN.
        dn: String,
        /// Its password.
        password: Secret,
    },
    /// SASL EXTERNAL over `ldapi://`.
    SaslExternal,
}

impl Bind {
    /// For logs: never the password.
    pub fn describe(&self) -> String {
        match self {
            Bind::Anonymous => "anonymous".to_owned(),
            Bind::Simple { dn, .. } => format!("as {dn}"),
            Bind::SaslExternal => "with SASL EXTERNAL".to_owned(),
        }
    }
}

/// A directory that cannot be set up.
#[derive(Debug, thiserror::Error)]
#[error("ldap {url}: {message}")]
pub struct LdapSetupError {
    /// The directory's URL.
    pub url: String,
    /// What is wrong (names the file, never its contents).
    pub message: String,
}

/// One directory's settings.
#[derive(Clone, Debug)]
pub struct LdapSettings {
    /// The URL as configured.
    pub url: String,
    /// StartTLS before binding.
    pub starttls: bool,
    /// TLS settings (`ldaps://`, StartTLS).
    pub tls: Option<native_tls::TlsConnector>,
    /// How to bind.
    pub bind: Bind,
    /// Search base.
    pub base: String,
    /// Search scope.
    pub scope: Scope,
    /// The filter template.
    pub filter: FilterTemplate,
    /// The attributes requested: addresses, then S/MIME, then OpenPGP.
    pub attributes: Vec<String>,
    /// Attributes listing the entry's addresses.
    pub address_attributes: Vec<String>,
    /// Attributes holding S/MIME certificates.
    pub smime_attributes: Vec<String>,
    /// Attributes holding OpenPGP keys.
    pub openpgp_attributes: Vec<String>,
    /// Recipient domains answered (canonical; `*.x`, `*`).
    pub domains: Vec<String>,
    /// How far its keys are trusted.
    pub trust: TrustLevel,
    /// Connect (and TLS) timeout.
    pub connect_timeout: Duration,
    /// Bind and search timeout.
    pub timeout: Duration,
    /// Most entries a search may match.
    pub size_limit: i32,
    /// Connections kept.
    pub connections: usize,
    /// Lifetime of an entry's keys in the cache.
    pub cache_ttl: Duration,
    /// Lifetime of "no entry" in the cache.
    pub negative_ttl: Duration,
}

impl LdapSettings {
    /// Reads the files `c` names and builds the TLS connector.
    pub fn from_config(c: &LdapConfig) -> Result<Self, LdapSetupError> {
        let url = c.url.trim().to_owned();
        let fail = |message: String| LdapSetupError {
            url: url.clone(),
            message,
        };
        let (scheme, _) = c.scheme().map_err(fail)?;
        let bind = match (&c.bind_password_file, c.sasl_external) {
            (Some(file), _) => Bind::Simple {
                dn: c.bind_dn.trim().to_owned(),
                password: read_password(file).map_err(fail)?,
            },
            (None, true) => Bind::SaslExternal,
            (None, false) => Bind::Anonymous,
        };
        let tls = if scheme == LdapScheme::Ldaps || c.starttls {
            Some(connector(c.ca_file.as_deref()).map_err(fail)?)
        } else {
            None
        };
        let filter = FilterTemplate::parse(&c.filter).map_err(fail)?;
        let mut attributes = c.address_attributes.clone();
        attributes.extend(c.smime_attributes.iter().cloned());
        attributes.extend(c.openpgp_attributes.iter().cloned());
        Ok(LdapSettings {
            url: url.clone(),
            starttls: c.starttls,
            tls,
            bind,
            base: c.base.trim().to_owned(),
            scope: super::pool::scope(&c.scope),
            filter,
            attributes,
            address_attributes: c.address_attributes.clone(),
            smime_attributes: c.smime_attributes.clone(),
            openpgp_attributes: c.openpgp_attributes.clone(),
            domains: c.domains.clone(),
            trust: c.trust,
            connect_timeout: Duration::from_millis(c.connect_timeout_ms),
            timeout: Duration::from_millis(c.timeout_ms),
            size_limit: c.size_limit,
            connections: c.connections.max(1),
            cache_ttl: Duration::from_secs(c.cache_ttl_secs),
            negative_ttl: Duration::from_secs(c.negative_ttl_secs),
        })
    }

    /// Whether this directory answers for `domain` (canonical form).
    pub fn covers(&self, domain: &str) -> bool {
        self.domains.iter().any(|d| {
            d == "*"
                || d == domain
                || d.strip_prefix("*.").is_some_and(|parent| {
                    domain
                        .strip_suffix(parent)
                        .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.'))
                })
        })
    }
}

/// The password in `file`: its first line, without the line end. An
/// empty password is refused (an empty simple bind is an anonymous bind
/// by another name, RFC 4513 §5.1.2).
fn read_password(file: &Path) -> Result<Secret, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("bind_password_file {}: {e}", file.display()))?;
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        return Err(format!(
            "bind_password_file {}: the first line is empty",
            file.display()
        ));
    }
    Ok(Secret(line.to_owned()))
}

/// The TLS connector: host names verified; with `ca_file`, only those
/// CAs vouch for the directory (as OpenLDAP's `TLS_CACERT` means), else
/// the system roots.
fn connector(ca_file: Option<&Path>) -> Result<native_tls::TlsConnector, String> {
    let mut b = native_tls::TlsConnector::builder();
    b.min_protocol_version(Some(native_tls::Protocol::Tlsv12));
    if let Some(file) = ca_file {
        let pem = std::fs::read(file).map_err(|e| format!("ca_file {}: {e}", file.display()))?;
        // As the web client reads `wkd.ca_file`.
        let certs = openssl::x509::X509::stack_from_pem(&pem)
            .map_err(|e| format!("ca_file {}: {e}", file.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "ca_file {}: no PEM certificate in it",
                file.display()
            ));
        }
        b.disable_built_in_roots(true);
        for cert in certs {
            let bad = |e: &dyn std::fmt::Display| format!("ca_file {}: {e}", file.display());
            let der = cert.to_der().map_err(|e| bad(&e))?;
            b.add_root_certificate(native_tls::Certificate::from_der(&der).map_err(|e| bad(&e))?);
        }
    }
    b.build().map_err(|e| format!("TLS setup: {e}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn with_domains(d: &[&str]) -> LdapSettings {
        let c = LdapConfig {
            url: "ldap://127.0.0.1".into(),
            domains: d.iter().map(|s| (*s).to_owned()).collect(),
            base: "dc=x".into(),
            ..LdapConfig::default()
        };
        LdapSettings::from_config(&c).unwrap()
    }

    #[test]
    fn domains_cover_exactly() {
        let s = with_domains(&["example.org", "*.corp.test"]);
        assert!(s.covers("example.org"));
        assert!(!s.covers("sub.example.org"));
        assert!(!s.covers("badexample.org"));
        assert!(s.covers("a.corp.test"));
        assert!(s.covers("a.b.corp.test"));
        assert!(!s.covers("corp.test"));
        assert!(!s.covers("xcorp.test"));
        assert!(with_domains(&["*"]).covers("anything.test"));
    }

    #[test]
    fn passwords_are_read_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "s3cret\n").unwrap();
        let c = LdapConfig {
            url: "ldap://127.0.0.1".into(),
            domains: vec!["x.test".into()],
            base: "dc=x".into(),
            bind_dn: "cn=m".into(),
            bind_password_file: Some(f.clone()),
            ..LdapConfig::default()
        };
        let s = LdapSettings::from_config(&c).unwrap();
        let Bind::Simple { password, .. } = &s.bind else {
            unreachable!("a simple bind")
        };
        assert_eq!(password.expose(), "s3cret");
        assert!(!format!("{s:?}").contains("s3cret"));
        std::fs::write(&f, "\n").unwrap();
        let e = LdapSettings::from_config(&c).unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
        let missing = LdapConfig {
            bind_password_file: Some(dir.path().join("none")),
            ..c
        };
        let e = LdapSettings::from_config(&missing).unwrap_err().to_string();
        assert!(
            e.contains("bind_password_file") && e.contains("none"),
            "{e}"
        );
    }

    #[test]
    fn a_ca_file_without_certificates_is_a_setup_error() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ca.pem");
        std::fs::write(&f, "not a certificate\n").unwrap();
        let c = LdapConfig {
            url: "ldaps://ldap.example.org".into(),
            domains: vec!["x.test".into()],
            base: "dc=x".into(),
            ca_file: Some(f),
            ..LdapConfig::default()
        };
        let e = LdapSettings::from_config(&c).unwrap_err().to_string();
        assert!(
            e.contains("ca_file") && e.contains("no PEM certificate"),
            "{e}"
        );
    }
}
