//! A scriptable LDAP server in the test process: it speaks just enough
//! LDAPv3 BER (RFC 4511) to read a client's requests (their id, their
//! operation and, for a search, the value of the filter's first equality
//! assertion) and to write whatever answer a case wants, right or wrong.
//! Each case is a function run on each accepted connection; the server
//! counts connections, binds and searches so that cases can say how often
//! the directory was bothered.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Operation tags (application class) of requests.
pub const BIND: u8 = 0x60;
pub const UNBIND: u8 = 0x42;
pub const SEARCH: u8 = 0x63;
pub const EXTENDED: u8 = 0x77;

// ---------------------------------------------------------------------------
// BER writing.

pub fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = body.len();
    if n < 128 {
        out.push(n as u8);
    } else {
        let bytes = n.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(body);
    out
}

pub fn int(tag: u8, v: u32) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let mut skip = bytes.iter().take_while(|b| **b == 0).count().min(3);
    if bytes[skip] & 0x80 != 0 {
        skip -= 1;
    }
    tlv(tag, &bytes[skip..])
}

/// An LDAPMessage: the id, then the operation.
pub fn message(id: u32, op: Vec<u8>) -> Vec<u8> {
    let mut body = int(0x02, id);
    body.extend(op);
    tlv(0x30, &body)
}

/// An LDAPResult of operation `app_tag` with `rc` and a diagnostic text.
pub fn result_with(app_tag: u8, rc: u32, text: &str, extra: &[u8]) -> Vec<u8> {
    let mut body = int(0x0a, rc);
    body.extend(tlv(0x04, b""));
    body.extend(tlv(0x04, text.as_bytes()));
    body.extend_from_slice(extra);
    tlv(app_tag, &body)
}

pub fn result(app_tag: u8, rc: u32) -> Vec<u8> {
    result_with(app_tag, rc, "", &[])
}

/// A BindResponse.
pub fn bind_response(id: u32, rc: u32) -> Vec<u8> {
    message(id, result(0x61, rc))
}

/// A SearchResultDone.
pub fn done(id: u32, rc: u32) -> Vec<u8> {
    message(id, result(0x65, rc))
}

/// A SearchResultDone with the referral result code and the URLs.
pub fn done_referral(id: u32, urls: &[&str]) -> Vec<u8> {
    let mut refs = Vec::new();
    for u in urls {
        refs.extend(tlv(0x04, u.as_bytes()));
    }
    message(id, result_with(0x65, 10, "go elsewhere", &tlv(0xa3, &refs)))
}

/// A SearchResultReference (continuation references).
pub fn reference(id: u32, urls: &[&str]) -> Vec<u8> {
    let mut body = Vec::new();
    for u in urls {
        body.extend(tlv(0x04, u.as_bytes()));
    }
    message(id, tlv(0x73, &body))
}

/// A SearchResultEntry's operation (put it in [`message`]).
pub fn entry(dn: &str, attrs: &[(&str, Vec<Vec<u8>>)]) -> Vec<u8> {
    let mut list = Vec::new();
    for (name, values) in attrs {
        let mut set = Vec::new();
        for v in values {
            set.extend(tlv(0x04, v));
        }
        let mut pair = tlv(0x04, name.as_bytes());
        pair.extend(tlv(0x31, &set));
        list.extend(tlv(0x30, &pair));
    }
    let mut body = tlv(0x04, dn.as_bytes());
    body.extend(tlv(0x30, &list));
    tlv(0x64, &body)
}

// ---------------------------------------------------------------------------
// BER reading.

/// One TLV at the start of `buf`: its tag, contents and what follows.
pub fn parse_tlv(buf: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *buf.first()?;
    let first = *buf.get(1)?;
    let (len, head) = if first & 0x80 == 0 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        let bytes = buf.get(2..2 + n)?;
        (
            bytes.iter().fold(0usize, |a, b| a << 8 | usize::from(*b)),
            2 + n,
        )
    };
    let body = buf.get(head..head + len)?;
    Some((tag, body, &buf[head + len..]))
}

/// One request as read.
#[derive(Clone, Debug)]
pub struct Request {
    pub id: u32,
    pub op: u8,
    /// The operation's contents.
    pub body: Vec<u8>,
}

impl Request {
    /// A search's filter (its BER).
    pub fn filter(&self) -> Option<&[u8]> {
        if self.op != SEARCH {
            return None;
        }
        // base, scope, deref, size, time, typesOnly, then the filter.
        let mut rest = self.body.as_slice();
        for _ in 0..6 {
            rest = parse_tlv(rest)?.2;
        }
        let (_, _, after) = parse_tlv(rest)?;
        Some(&rest[..rest.len() - after.len()])
    }

    /// The value of a search filter's first equality assertion.
    pub fn asserted(&self) -> Option<String> {
        let rest = self.filter()?;
        fn first_equality(t: &[u8]) -> Option<Vec<u8>> {
            let (tag, body, _) = parse_tlv(t)?;
            match tag {
                // and, or, not: the first child that has one.
                0xa0..=0xa2 => {
                    let mut r = body;
                    while !r.is_empty() {
                        if let Some(v) = first_equality(r) {
                            return Some(v);
                        }
                        r = parse_tlv(r)?.2;
                    }
                    None
                }
                0xa3 => {
                    let (_, _, after) = parse_tlv(body)?;
                    Some(parse_tlv(after)?.1.to_vec())
                }
                _ => None,
            }
        }
        let v = first_equality(rest)?;
        Some(String::from_utf8_lossy(&v).into_owned())
    }
}

/// Reads one LDAPMessage; `None` at EOF or on garbage.
pub fn read_request(s: &mut TcpStream) -> Option<Request> {
    let mut head = [0u8; 2];
    s.read_exact(&mut head).ok()?;
    let len = if head[1] & 0x80 == 0 {
        usize::from(head[1])
    } else {
        let mut n = vec![0u8; usize::from(head[1] & 0x7f)];
        s.read_exact(&mut n).ok()?;
        n.iter().fold(0usize, |a, b| a << 8 | usize::from(*b))
    };
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    let (_, id, rest) = parse_tlv(&body)?;
    let id = id.iter().fold(0u32, |a, b| a << 8 | u32::from(*b));
    let (op, contents, _) = parse_tlv(rest)?;
    Some(Request {
        id,
        op,
        body: contents.to_vec(),
    })
}

// ---------------------------------------------------------------------------
// The server.

/// What the server counted.
#[derive(Default)]
pub struct Counts {
    pub connections: AtomicUsize,
    pub binds: AtomicUsize,
    pub searches: AtomicUsize,
    /// Searches being answered now, and the most at once.
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
}

/// One accepted connection, as a case sees it.
pub struct Session {
    pub stream: TcpStream,
    /// 0 for the first connection the server accepted, 1 for the next…
    pub number: usize,
    pub counts: Arc<Counts>,
    writer: Arc<Mutex<TcpStream>>,
}

impl Session {
    /// The next request (binds and searches counted); `None` at EOF or
    /// unbind.
    pub fn next(&mut self) -> Option<Request> {
        let r = read_request(&mut self.stream)?;
        match r.op {
            UNBIND => return None,
            BIND => {
                self.counts.binds.fetch_add(1, Ordering::SeqCst);
            }
            SEARCH => {
                self.counts.searches.fetch_add(1, Ordering::SeqCst);
            }
            _ => {}
        }
        Some(r)
    }

    /// Writes `bytes`; false once the client is gone.
    pub fn send(&self, bytes: &[u8]) -> bool {
        self.writer.lock().unwrap().write_all(bytes).is_ok()
    }

    /// A handle that writes on this connection from another thread
    /// (answers to multiplexed searches).
    pub fn writer(&self) -> Arc<Mutex<TcpStream>> {
        Arc::clone(&self.writer)
    }
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    pub counts: Arc<Counts>,
}

impl Server {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
    pub fn connections(&self) -> usize {
        self.counts.connections.load(Ordering::SeqCst)
    }
    pub fn binds(&self) -> usize {
        self.counts.binds.load(Ordering::SeqCst)
    }
    pub fn searches(&self) -> usize {
        self.counts.searches.load(Ordering::SeqCst)
    }
}

/// Listens on 127.0.0.1 and runs `case` on every connection, each in a
/// thread of its own.
pub fn start(case: impl Fn(&mut Session) + Send + Sync + 'static) -> Server {
    start_on("127.0.0.1".parse().unwrap(), case)
}

pub fn start_on(ip: IpAddr, case: impl Fn(&mut Session) + Send + Sync + 'static) -> Server {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let counts = Arc::new(Counts::default());
    let c2 = Arc::clone(&counts);
    let case = Arc::new(case);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(stream) = conn else { return };
            let number = c2.connections.fetch_add(1, Ordering::SeqCst);
            let writer = Arc::new(Mutex::new(stream.try_clone().unwrap()));
            let mut s = Session {
                stream,
                number,
                counts: Arc::clone(&c2),
                writer,
            };
            let case = Arc::clone(&case);
            std::thread::spawn(move || case(&mut s));
        }
    });
    Server { addr, counts }
}

/// The usual case: binds succeed, and each search is answered by
/// `answer(session, request)`.
pub fn answering(
    answer: impl Fn(&Session, &Request) + Send + Sync + 'static,
) -> impl Fn(&mut Session) + Send + Sync + 'static {
    move |s: &mut Session| {
        while let Some(r) = s.next() {
            match r.op {
                BIND => {
                    s.send(&bind_response(r.id, 0));
                }
                SEARCH => answer(s, &r),
                _ => {}
            }
        }
    }
}

/// Ends `stream` with a TCP reset (SO_LINGER 0) instead of a FIN.
pub fn reset(stream: TcpStream) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let _in_rt = rt.enter();
    stream.set_nonblocking(true).unwrap();
    let t = tokio::net::TcpStream::from_std(stream).unwrap();
    t.set_zero_linger().unwrap();
    drop(t);
}

/// Copies bytes between every connection accepted on `ip` and `to`: the
/// same server, reached at another address.
pub fn forward(ip: IpAddr, to: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(a) = conn else { return };
            let Ok(b) = TcpStream::connect_timeout(&to, Duration::from_secs(2)) else {
                continue;
            };
            for (mut from, mut into) in [(a.try_clone().unwrap(), b.try_clone().unwrap()), (b, a)] {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut into);
                    let _ = into.shutdown(std::net::Shutdown::Both);
                });
            }
        }
    });
    addr
}
