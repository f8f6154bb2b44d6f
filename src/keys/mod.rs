//! Where keys come from: the [`KeySource`] trait and its outcome,
//! [`Lookup`], and the [`KeyService`] that asks the sources in order and
//! validates what they find. Sources only find key material; whether a
//! key may be used is the backend's decision
//! ([`crate::backend::EncryptionBackend::validate`]), applied by the
//! service.

pub(crate) mod directory;
pub mod dns;
pub mod keyserver;
pub mod ldap;
#[cfg(test)]
pub(crate) mod memory;
pub(crate) use dns::owner;
pub(crate) mod cache;
mod history;
pub mod learned;
mod pins;
mod service;
mod validated;
pub mod web;
pub mod wkd;

pub use service::{
    Explained, KeyService, SOURCE_DEADLINE, SourceSetupError, Step, configured_sources,
};

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use crate::address::Address;
pub use crate::material::{KeyChoice, OnKeyChange, Provenance, Security, SourceKind, TrustLevel};
use crate::material::{KeyMaterial, KeyRejected, Method};

/// Why a lookup could not be completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailReason {
    /// No answer in time (`dns.timeout_ms`, `wkd.timeout_ms`, or the
    /// key service's deadline for all sources).
    Timeout,
    /// The resolver answered SERVFAIL.
    ServFail,
    /// Network or I/O error (a DNS server refusing, a web server that
    /// failed TLS or reset the connection, an unreadable key file). A web
    /// server refusing the connection is a denial, not this.
    Network(String),
    /// An answer that cannot be used: an HTTP error status, a body that
    /// is too large or no key at all, a redirect to `http://`.
    BadAnswer(String),
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailReason::Timeout => f.write_str("timed out"),
            FailReason::ServFail => f.write_str("SERVFAIL"),
            FailReason::Network(s) | FailReason::BadAnswer(s) => write!(f, "{s}"),
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
    /// Proven absent: an authenticated denial, no file in the directory,
    /// a web server's 404/410, no WKD host, a refused connection.
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

/// A lookup with what the source did on the way.
#[derive(Clone, Debug)]
pub struct Traced {
    /// The outcome.
    pub lookup: Lookup,
    /// Answered from the source's cache, without asking anyone.
    pub cached: bool,
    /// What was asked on the way, one line each (DNS: the owner names and
    /// their answers); empty unless asked for, or for a source with
    /// nothing to add.
    pub asked: Vec<String>,
}

impl Traced {
    /// A lookup without detail.
    pub fn plain(lookup: Lookup) -> Self {
        Traced {
            lookup,
            cached: false,
            asked: Vec::new(),
        }
    }
}

/// A boxed future of a [`Traced`] lookup.
pub type TracedFuture<'a> = Pin<Box<dyn Future<Output = Traced> + Send + 'a>>;

/// A place to find recipients' keys: DNS, a local directory, later others.
/// Sources are held as `Arc<dyn KeySource>` by the [`KeyService`], which
/// asks them in order; a test can put an in-memory source beside the real
/// ones.
///
/// One call asks for one method's keys, because each method has its own
/// record type and its own outcome (a zone may prove SMIMEA absent while
/// the OPENPGPKEY query times out); the service runs them concurrently.
pub trait KeySource: Send + Sync {
    /// Which kind of source this is (metric label, provenance).
    fn kind(&self) -> SourceKind;

    /// A short description for logs and `policy explain`.
    fn describe(&self) -> String;

    /// The most this source can vouch for a key (a rule whose `min_trust`
    /// is above it does not ask it).
    fn trust(&self) -> TrustLevel {
        self.kind().trust()
    }

    /// Whether this source answers for `addr` at all (an `[[ldap]]`
    /// directory answers for its `domains` only); a source that does not
    /// is not asked, and no lookup of it is counted.
    fn answers_for(&self, addr: &Address) -> bool {
        let _ = addr;
        true
    }

    /// Whether this source can have keys for `method` at all (WKD and
    /// keyservers serve OpenPGP only); a source that cannot is not asked,
    /// and no lookup of it is counted.
    fn serves(&self, method: Method) -> bool {
        self.kind().serves(method)
    }

    /// Looks up `addr`'s keys for `method`.
    fn lookup<'a>(&'a self, addr: &'a Address, method: Method) -> LookupFuture<'a>;

    /// [`KeySource::lookup`], saying whether the source's cache answered
    /// and, with `detail`, what was asked on the way.
    fn lookup_traced<'a>(
        &'a self,
        addr: &'a Address,
        method: Method,
        detail: bool,
    ) -> TracedFuture<'a> {
        let _ = detail;
        Box::pin(async move { Traced::plain(self.lookup(addr, method).await) })
    }
}
