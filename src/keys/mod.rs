//! Where keys come from: the [`KeySource`] trait and its outcome,
//! [`Lookup`]. Sources only find key material; whether a key may be used
//! is the backend's decision ([`crate::backend::EncryptionBackend::validate`]).

pub mod directory;
pub mod dns;
pub mod owner;
pub mod validated;

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use crate::address::Address;
use crate::material::{KeyMaterial, KeyRejected, Method};

/// How far a found key is vouched for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    /// DNSSEC validated the answer.
    Secure,
    /// The administrator put the key there (local key directory).
    Local,
    /// From an unsigned zone, used only because `dns.allow_insecure` is on.
    Insecure,
}

/// Why a lookup could not be completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailReason {
    /// No answer within `dns.timeout_ms`.
    Timeout,
    /// The resolver answered SERVFAIL.
    ServFail,
    /// Network or I/O error (connection refused, unreadable key file).
    Network(String),
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailReason::Timeout => f.write_str("timed out"),
            FailReason::ServFail => f.write_str("SERVFAIL"),
            FailReason::Network(s) => write!(f, "{s}"),
        }
    }
}

/// The outcome of looking up one method's keys for one address. A value,
/// not an error: `Bogus` and `Failed` are never "no key".
#[derive(Clone, Debug)]
pub enum Lookup {
    /// One or more records (keys not yet validated).
    Found {
        /// The key material found.
        keys: Vec<KeyMaterial>,
        /// Records the source could already tell are unusable (an SMIMEA
        /// with only a hash, or a CA usage), with the reason.
        unusable: Vec<KeyRejected>,
        /// How it is vouched for.
        security: Security,
    },
    /// Proven absent (authenticated denial, or no file in the directory).
    NotFound,
    /// The zone is unsigned: whatever it holds is not trusted.
    Insecure,
    /// DNSSEC validation failed.
    Bogus(String),
    /// The lookup could not be completed.
    Failed(FailReason),
}

impl Lookup {
    /// Short name used in logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Lookup::Found { .. } => "found",
            Lookup::NotFound => "not_found",
            Lookup::Insecure => "insecure",
            Lookup::Bogus(_) => "bogus",
            Lookup::Failed(_) => "failed",
        }
    }
}

/// A boxed future, so that [`KeySource`] stays object-safe.
pub type LookupFuture<'a> = Pin<Box<dyn Future<Output = Lookup> + Send + 'a>>;

/// A place to find recipients' keys: DNS, a local directory, later others.
///
/// One call asks for one method's keys, because each method has its own
/// record type and its own outcome (a zone may prove SMIMEA absent while
/// the OPENPGPKEY query times out); callers run them concurrently.
pub trait KeySource: Send + Sync {
    /// Looks up `addr`'s keys for `method`.
    fn lookup<'a>(&'a self, addr: &'a Address, method: Method) -> LookupFuture<'a>;
}

/// The key sources in use, asked in order: the local key directory (the
/// administrator's word) first, then DNS. Only a directory that proves
/// absence (no file) passes the question on; a directory failure is the
/// answer, never "no key".
#[derive(Default)]
pub struct Sources {
    /// `keys.directory`.
    pub directory: Option<directory::DirectorySource>,
    /// SMIMEA / OPENPGPKEY.
    pub dns: Option<dns::DnsSource>,
}

impl Sources {
    /// A short description for logs and `policy explain`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(d) = &self.directory {
            parts.push(format!("local key directory {}", d.dir().display()));
        }
        if let Some(dns) = &self.dns {
            parts.push(format!(
                "DNS ({} mode)",
                match dns.settings().mode {
                    crate::config::DnsMode::Validate => "validate",
                    crate::config::DnsMode::TrustAd => "trust-ad",
                }
            ));
        }
        if parts.is_empty() {
            "no key source".to_owned()
        } else {
            parts.join(", then ")
        }
    }
}

impl KeySource for Sources {
    fn lookup<'a>(&'a self, addr: &'a Address, method: Method) -> LookupFuture<'a> {
        Box::pin(async move {
            if let Some(d) = &self.directory {
                match d.lookup_sync(addr, method) {
                    Lookup::NotFound => {}
                    answer => return answer,
                }
            }
            match &self.dns {
                Some(dns) => dns.lookup(addr, method).await,
                None => Lookup::NotFound,
            }
        })
    }
}
