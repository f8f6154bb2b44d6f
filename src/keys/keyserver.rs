//! Keys from verifying keyservers by address: the VKS API of
//! keys.openpgp.org (`GET <base>/vks/v1/by-email/<address>`), each
//! configured base URL asked in order (`[keyserver] urls`). Such a server
//! publishes a user ID only after its owner confirmed the address by
//! mail, so what it returns is vouched for by the web PKI and that check:
//! trust `tls`.
//!
//! A 404 from every server is "no key"; the first server with keys for
//! the address decides; when none has and one failed, the lookup failed
//! (even if another returned keys for other addresses only).

use std::sync::Arc;

use crate::address::Address;
use crate::keys::web::url::{HttpsUrl, percent_encode};
use crate::keys::web::{Fetched, WebClient, answer};
use crate::keys::{FailReason, KeySource, Lookup, LookupFuture, SourceKind, Traced, TracedFuture};
use crate::material::Method;

/// The keyserver key source.
pub struct KeyserverSource {
    client: Arc<WebClient>,
    bases: Vec<String>,
}

impl KeyserverSource {
    /// A source asking the servers at `bases` (checked base URLs, no
    /// trailing slash) through `client`.
    pub fn new(client: Arc<WebClient>, bases: Vec<String>) -> Self {
        KeyserverSource { client, bases }
    }

    async fn run(&self, addr: &Address, method: Method, detail: bool) -> Traced {
        let mut traced = Traced::plain(Lookup::NotFound);
        if method != Method::OpenPgp || !addr.has_dns_domain() {
            return traced;
        }
        let mut all_cached = true;
        let mut failure: Option<Lookup> = None;
        for base in &self.bases {
            let text = format!(
                "{base}/vks/v1/by-email/{}",
                percent_encode(&addr.to_string())
            );
            let url = match HttpsUrl::parse(&text) {
                Ok(u) => u,
                Err(why) => {
                    failure.get_or_insert(Lookup::Failed(FailReason::BadAnswer(why)));
                    continue;
                }
            };
            let (fetched, cached, at) = self.client.get(&url, addr).await;
            all_cached &= cached;
            // A keyserver whose host does not exist is misconfigured,
            // not a denial.
            let fetched = match fetched {
                Fetched::NoSuchHost(h) => {
                    Fetched::Failed(FailReason::Network(format!("no such host {h}")))
                }
                other => other,
            };
            let (lookup, note) = answer::to_lookup(&fetched, addr, SourceKind::Keyserver, at);
            if detail {
                traced.asked.push(answer::trace_line(&url, &fetched, note));
            }
            match lookup {
                Lookup::NotFound => {}
                Lookup::Found { ref keys, .. } if keys.is_empty() => {
                    traced.lookup = lookup;
                }
                Lookup::Found { .. } => {
                    traced.lookup = lookup;
                    traced.cached = all_cached;
                    return traced;
                }
                failed => {
                    failure.get_or_insert(failed);
                }
            }
        }
        // No server had keys for the address: if one failed, it might
        // have had them, so the lookup failed (whatever the others said).
        if let Some(f) = failure {
            traced.lookup = f;
        }
        traced.cached = all_cached;
        traced
    }
}

impl KeySource for KeyserverSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Keyserver
    }

    fn describe(&self) -> String {
        format!("keyserver {}", self.bases.join(", "))
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
