//! In-process hostile HTTPS servers for the web key sources' tests: what
//! nginx cannot be made to do (endless or dripping bodies, lying
//! `Content-Length`, header floods, garbage instead of HTTP, TLS alerts,
//! listeners that never speak), on a random free loopback address so that
//! WKD's port-less URLs reach port 443.
//!
//! Include it with `#[path = "env/hostile.rs"] mod hostile;`. It offers:
//!
//! * [`Pki`]: a test CA (its PEM in a temporary file, for
//!   `WebSettings.ca_file`) issuing server certificates for any names and
//!   validity, and self-signed ones it does not vouch for;
//! * [`Server::https`]: accepts TLS with one certificate, reads one
//!   request head, records it ([`Seen`]) and hands the stream to the
//!   test's responder; [`Server::tcp`]: hands the raw TCP stream over;
//! * [`MapHosts`]: the client's name resolution, a fixed map (no DNS);
//! * [`free_ip`], [`full_backlog`]: loopback addresses with nothing on
//!   them, or a listener whose accept queue is full.
//!
//! Setup failures panic: the tests fail loudly, they never skip.

#![allow(dead_code)]
#![allow(
    clippy::panic,
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test helper: failures must panic loudly"
)]

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use autoencrypt_milter::keys::web::{HostAnswer, HostFuture, Hosts};
use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{NameType, Ssl, SslAcceptor, SslMethod};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509, X509NameBuilder};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_openssl::SslStream;

/// A server certificate and its key.
#[derive(Clone)]
pub struct Identity {
    pub cert: X509,
    pub key: PKey<Private>,
}

/// Validity of an issued certificate, in days from now.
#[derive(Clone, Copy)]
pub struct Days {
    pub from: i64,
    pub until: i64,
}

/// Valid now, for a year.
pub const VALID: Days = Days {
    from: -1,
    until: 365,
};
/// Expired yesterday.
pub const EXPIRED: Days = Days {
    from: -30,
    until: -1,
};

/// The test CA.
pub struct Pki {
    ca: Identity,
    dir: TempDir,
    ca_file: PathBuf,
}

fn ec_key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

fn asn1_days(days: i64) -> Asn1Time {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    Asn1Time::from_unix(now + days * 86_400).unwrap()
}

fn serial() -> Asn1Integer {
    let n = RandomState::new().hash_one(SystemTime::now()) >> 1;
    BigNum::from_dec_str(&n.to_string())
        .unwrap()
        .to_asn1_integer()
        .unwrap()
}

/// A certificate for `names` (the first also its CN), signed by `issuer`
/// or, without one, by itself; a CA when `ca`.
fn certificate(names: &[&str], days: Days, issuer: Option<&Identity>, ca: bool) -> Identity {
    let key = ec_key();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, names[0]).unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&serial()).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(issuer.map_or(&name, |i| i.cert.subject_name()))
        .unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&asn1_days(days.from)).unwrap();
    b.set_not_after(&asn1_days(days.until)).unwrap();
    let mut bc = BasicConstraints::new();
    if ca {
        bc.ca();
    }
    b.append_extension(bc.critical().build().unwrap()).unwrap();
    let ku = if ca {
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()
    } else {
        KeyUsage::new().critical().digital_signature().build()
    };
    b.append_extension(ku.unwrap()).unwrap();
    let ski = SubjectKeyIdentifier::new()
        .build(&b.x509v3_context(issuer.map(|i| i.cert.as_ref()), None))
        .unwrap();
    b.append_extension(ski).unwrap();
    if let Some(i) = issuer {
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&b.x509v3_context(Some(&i.cert), None))
            .unwrap();
        b.append_extension(aki).unwrap();
    }
    if !ca {
        let mut san = SubjectAlternativeName::new();
        for n in names {
            match n.parse::<IpAddr>() {
                Ok(_) => san.ip(n),
                Err(_) => san.dns(n),
            };
        }
        let san = san
            .build(&b.x509v3_context(issuer.map(|i| i.cert.as_ref()), None))
            .unwrap();
        b.append_extension(san).unwrap();
    }
    let signer = issuer.map_or(&key, |i| &i.key);
    b.sign(signer, MessageDigest::sha256()).unwrap();
    Identity {
        cert: b.build(),
        key,
    }
}

impl Pki {
    /// A fresh CA, its certificate in a temporary PEM file.
    pub fn new() -> Pki {
        let ca = certificate(&["hostile test CA"], VALID, None, true);
        let dir = tempfile::Builder::new()
            .prefix("web-hostile-")
            .tempdir()
            .unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.cert.to_pem().unwrap()).unwrap();
        Pki { ca, dir, ca_file }
    }

    /// The CA certificate's PEM file.
    pub fn ca_file(&self) -> PathBuf {
        self.ca_file.clone()
    }

    /// A certificate from this CA for `names`, valid `days`.
    pub fn issue(&self, names: &[&str], days: Days) -> Identity {
        certificate(names, days, Some(&self.ca), false)
    }

    /// A self-signed certificate for `names` (no CA vouches for it).
    pub fn self_signed(names: &[&str]) -> Identity {
        certificate(names, VALID, None, false)
    }
}

/// One request as the server read it.
#[derive(Clone, Debug)]
pub struct Request {
    /// `GET /path?query HTTP/1.1`.
    pub line: String,
    /// The request target (path and query).
    pub target: String,
    /// The `Host` header.
    pub host: Option<String>,
    /// The TLS server name the client sent.
    pub sni: Option<String>,
}

/// What a server saw.
#[derive(Default)]
pub struct Seen {
    requests: Mutex<Vec<Request>>,
    accepted: AtomicUsize,
}

impl Seen {
    /// The requests read so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// TCP connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// The TLS stream a responder writes to.
pub type Stream = SslStream<TcpStream>;
type Task = Pin<Box<dyn Future<Output = ()> + Send>>;
type Responder = Arc<dyn Fn(Request, Stream) -> Task + Send + Sync>;

/// A running server; stops when dropped.
pub struct Server {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A random 127.x.y.z (x ≥ 100, well away from 127.0.0.1 and from what
/// other tests pick) where `port` is free, with a listener bound there.
fn bind_random(port: u16) -> std::net::TcpListener {
    let seed = RandomState::new();
    for attempt in 0u64..200 {
        let r = seed.hash_one((attempt, std::process::id(), SystemTime::now()));
        let ip = Ipv4Addr::new(
            127,
            100 + (r % 150) as u8,
            (r >> 8) as u8,
            1 + (r >> 16) as u8 % 254,
        );
        if let Ok(l) = std::net::TcpListener::bind((ip, port)) {
            l.set_nonblocking(true).unwrap();
            return l;
        }
    }
    panic!("no free loopback address for port {port} (tests run as root to bind 443)");
}

/// A loopback address where nothing listens on `port` (connections are
/// refused).
pub fn free_ip(port: u16) -> Ipv4Addr {
    match bind_random(port).local_addr().unwrap().ip() {
        IpAddr::V4(ip) => ip,
        IpAddr::V6(_) => unreachable!("bound an IPv4 address"),
    }
}

/// A listener on a random loopback address's `port` that never accepts,
/// its queue filled (further connection attempts go unanswered). Keep the
/// returned value alive as long as the address is used.
pub struct FullBacklog {
    pub addr: SocketAddr,
    _listener: TcpListener,
    _fillers: Vec<TcpStream>,
}

/// See [`FullBacklog`].
pub async fn full_backlog(port: u16) -> FullBacklog {
    let ip = free_ip(port);
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(IpAddr::V4(ip), port)).unwrap();
    let listener = sock.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..16 {
        match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => fillers.push(s),
            _ => break,
        }
    }
    assert!(
        !fillers.is_empty() && fillers.len() < 16,
        "the backlog of {addr} did not fill as expected ({} connections)",
        fillers.len()
    );
    FullBacklog {
        addr,
        _listener: listener,
        _fillers: fillers,
    }
}

impl Server {
    /// An HTTPS server on `port` of a random loopback address (0: any port)
    /// with `id`'s certificate: each connection's request head is read
    /// and recorded, then `respond` gets it and the stream. The stream is
    /// shut down cleanly when `respond` returns.
    pub fn https<F, Fut>(id: &Identity, port: u16, respond: F) -> Server
    where
        F: Fn(Request, Stream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).unwrap();
        b.set_private_key(&id.key).unwrap();
        b.set_certificate(&id.cert).unwrap();
        let acceptor = Arc::new(b.build());
        let respond: Responder = Arc::new(move |r, s| Box::pin(respond(r, s)));
        let listener = TcpListener::from_std(bind_random(port)).unwrap();
        Self::run(listener, move |tcp, seen| {
            let (acceptor, respond) = (Arc::clone(&acceptor), Arc::clone(&respond));
            Box::pin(async move {
                let Ok(ssl) = Ssl::new(acceptor.context()) else {
                    return;
                };
                let Ok(mut tls) = SslStream::new(ssl, tcp) else {
                    return;
                };
                if Pin::new(&mut tls).accept().await.is_err() {
                    return;
                }
                let Some(req) = read_head(&mut tls).await else {
                    return;
                };
                seen.requests.lock().unwrap().push(req.clone());
                respond(req, tls).await;
            })
        })
    }

    /// A TCP server on `port` of a random loopback address: `on_accept`
    /// gets each connection.
    pub fn tcp<F, Fut>(port: u16, on_accept: F) -> Server
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let on_accept = Arc::new(on_accept);
        let listener = TcpListener::from_std(bind_random(port)).unwrap();
        Self::run(listener, move |tcp, _| {
            let f = Arc::clone(&on_accept);
            Box::pin(async move { f(tcp).await })
        })
    }

    fn run<F>(listener: TcpListener, serve: F) -> Server
    where
        F: Fn(TcpStream, Arc<Seen>) -> Task + Send + Sync + 'static,
    {
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let s = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((tcp, _)) = listener.accept().await {
                s.accepted.fetch_add(1, Ordering::SeqCst);
                conns.spawn(serve(tcp, Arc::clone(&s)));
            }
        });
        Server { addr, seen, task }
    }

    /// The server's IP address.
    pub fn ip(&self) -> IpAddr {
        self.addr.ip()
    }
}

/// The request head (up to 64 KiB), or `None` when the client sent none.
async fn read_head(tls: &mut Stream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > 65_536 {
            return None;
        }
        let n = tls.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = head.split("\r\n");
    let line = lines.next()?.to_owned();
    let target = line.split(' ').nth(1).unwrap_or("").to_owned();
    let host = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.eq_ignore_ascii_case("host"))
        .map(|(_, v)| v.trim().to_owned());
    let sni = tls.ssl().servername(NameType::HOST_NAME).map(str::to_owned);
    Some(Request {
        line,
        target,
        host,
        sni,
    })
}

/// Writes `status` (`200 OK`), `headers`, `Content-Length` and `body`,
/// then shuts the TLS stream down cleanly. Errors are ignored: the
/// client may rightly have hung up.
pub async fn reply(mut s: Stream, status: &str, headers: &[(&str, &str)], body: &[u8]) {
    let mut head = format!("HTTP/1.1 {status}\r\n");
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let _ = s.write_all(head.as_bytes()).await;
    let _ = s.write_all(body).await;
    let _ = s.shutdown().await;
}

/// Writes `bytes` as they are, then shuts the TLS stream down cleanly.
pub async fn raw(mut s: Stream, bytes: &[u8]) {
    let _ = s.write_all(bytes).await;
    let _ = s.shutdown().await;
}

/// Names resolved from a fixed map; any other name does not exist. Every
/// name asked is recorded.
#[derive(Default)]
pub struct MapHosts {
    map: HashMap<String, HostAnswer>,
    asked: Mutex<Vec<String>>,
}

impl MapHosts {
    /// No names at all.
    pub fn new() -> Self {
        Self::default()
    }

    /// `name` resolving to `ip`.
    pub fn with(mut self, name: &str, ip: IpAddr) -> Self {
        self.map
            .insert(name.to_owned(), HostAnswer::Addrs(vec![ip]));
        self
    }

    /// `name` answering `answer`.
    pub fn answer(mut self, name: &str, answer: HostAnswer) -> Self {
        self.map.insert(name.to_owned(), answer);
        self
    }

    /// The names asked so far, in order.
    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

impl Hosts for MapHosts {
    fn resolve<'a>(&'a self, host: &'a str) -> HostFuture<'a> {
        self.asked.lock().unwrap().push(host.to_owned());
        let answer = self
            .map
            .get(host)
            .cloned()
            .unwrap_or(HostAnswer::NoSuchHost);
        Box::pin(async move { answer })
    }
}
