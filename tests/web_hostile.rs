//! The web key sources (WKD, keyserver) against hostile HTTPS servers
//! running in the test itself (tests/env/hostile.rs): what nginx cannot
//! be made to do. Each case has one defined outcome — found, not found,
//! failed with a reason that says why, bogus — and the failures end
//! within the configured bounds. Names are resolved by a fixed map, so no
//! DNS is involved; WKD's port-less URLs reach a random loopback address's
//! port 443 (the tests run as root).
//!
//! This file holds the set-up; the cases are in `tests/web_hostile/`:
//! `bodies` (framing, floods, not HTTP), `redirects` (and server
//! certificates), `keys` (what a body holds, how an address becomes a
//! URL), `bounds` (shared fetches, the cache, in-flight and connection
//! bounds, the direct method).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

#[path = "env/hostile.rs"]
mod hostile;

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use autoencrypt_milter::backend::RejectReason;
use autoencrypt_milter::keys::keyserver::KeyserverSource;
use autoencrypt_milter::keys::web::{HostAnswer, Hosts, WebClient, WebSettings};
use autoencrypt_milter::keys::wkd::WkdSource;
use autoencrypt_milter::keys::{FailReason, KeyChoice, KeyService, KeySource, Lookup};
use autoencrypt_milter::policy::KeyOutcome;
use autoencrypt_milter::{Address, Method, Registry};
use hostile::{EXPIRED, Identity, MapHosts, Pki, Request, Server, Stream, VALID, raw, reply};
use sequoia_openpgp::Cert;
use sequoia_openpgp::cert::CertBuilder;
use sequoia_openpgp::packet::{Packet, UserID};
use sequoia_openpgp::serialize::SerializeInto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ALICE: &str = "alice@example.org";
const HOST: &str = "openpgpkey.example.org";
const LIMIT: u64 = 65_536;
const TIMEOUT: Duration = Duration::from_millis(1_200);
const CONNECT: Duration = Duration::from_millis(400);

// ---------------------------------------------------------------------------
// Set-up.

fn settings(pki: &Pki) -> WebSettings {
    WebSettings {
        ca_file: Some(pki.ca_file()),
        connect_timeout: CONNECT,
        timeout: TIMEOUT,
        max_response_bytes: LIMIT,
        max_redirects: 3,
        max_in_flight: 8,
        // The hostile servers are on loopback.
        allow_private_addresses: true,
    }
}

/// A client (with `settings`) and the name map it resolves with.
struct Rig {
    client: Arc<WebClient>,
    hosts: Arc<MapHosts>,
}

impl Rig {
    fn new(settings: WebSettings, hosts: MapHosts) -> Rig {
        let hosts = Arc::new(hosts);
        let client = WebClient::new(settings, Arc::clone(&hosts) as Arc<dyn Hosts>).unwrap();
        Rig {
            client: Arc::new(client),
            hosts,
        }
    }

    /// The usual rig: `HOST` at `ip`, default settings.
    fn wkd_at(pki: &Pki, ip: IpAddr) -> Rig {
        Rig::new(settings(pki), MapHosts::new().with(HOST, ip))
    }

    fn wkd(&self) -> WkdSource {
        WkdSource::new(Arc::clone(&self.client))
    }

    async fn lookup(&self, addr: &str) -> Lookup {
        self.wkd().lookup(&addr_of(addr), Method::OpenPgp).await
    }

    /// The WKD lookup validated by the key service (any trust).
    async fn resolve(&self, addr: &str) -> KeyOutcome<autoencrypt_milter::backend::Recipient> {
        let service = KeyService::new(
            vec![Arc::new(self.wkd()) as Arc<dyn KeySource>],
            Arc::new(Registry::new()),
            None,
        );
        service
            .resolve(&addr_of(addr), Method::OpenPgp, &KeyChoice::any())
            .await
            .outcome
    }
}

fn addr_of(s: &str) -> Address {
    Address::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// The usual certificate: for the advanced and the direct host.
fn identity(pki: &Pki) -> Identity {
    pki.issue(&[HOST, "example.org"], VALID)
}

/// A server answering every request with `status`, `headers` and `body`.
fn serving(
    id: &Identity,
    status: &'static str,
    headers: &'static [(&'static str, &'static str)],
    body: Vec<u8>,
) -> Server {
    let body = Arc::new(body);
    Server::https(id, 443, move |_, s| {
        let body = Arc::clone(&body);
        async move { reply(s, status, headers, &body).await }
    })
}

/// A server writing `bytes` as they are, whatever it was asked.
fn raw_server(id: &Identity, bytes: Vec<u8>) -> Server {
    let bytes = Arc::new(bytes);
    Server::https(id, 443, move |_, s| {
        let bytes = Arc::clone(&bytes);
        async move { raw(s, &bytes).await }
    })
}

async fn timed<T>(f: impl Future<Output = T>) -> (T, Duration) {
    let start = Instant::now();
    let out = f.await;
    (out, start.elapsed())
}

/// `lookup` is a failure whose reason says each of `words`.
#[track_caller]
fn assert_failed(lookup: &Lookup, words: &[&str]) -> String {
    let Lookup::Failed(why) = lookup else {
        panic!("expected a failure saying {words:?}, got {lookup:?}");
    };
    let text = why.to_string();
    for w in words {
        assert!(text.contains(w), "failure {text:?} does not say {w:?}");
    }
    text
}

/// `lookup` found keys: how many for the address, how many for others.
#[track_caller]
fn assert_found(lookup: &Lookup) -> (usize, usize) {
    match lookup {
        Lookup::Found { keys, unusable, .. } => (keys.len(), unusable.len()),
        other => panic!("expected keys, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// OpenPGP keys (Sequoia, in process: fast).

/// A certificate with `uid` and an encryption subkey.
fn cert(uid: &str) -> Cert {
    CertBuilder::new()
        .add_userid(uid)
        .add_transport_encryption_subkey()
        .generate()
        .unwrap()
        .0
}

fn binary(c: &Cert) -> Vec<u8> {
    c.to_vec().unwrap()
}

fn alice_key() -> Vec<u8> {
    binary(&cert(ALICE))
}

#[path = "web_hostile/bodies.rs"]
mod bodies;
#[path = "web_hostile/bounds.rs"]
mod bounds;
#[path = "web_hostile/keys.rs"]
mod keys;
#[path = "web_hostile/redirects.rs"]
mod redirects;
