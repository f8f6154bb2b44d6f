//! One fetch: the host looked up, a connection to one of its addresses,
//! TLS with the name verified, `GET`, redirects followed (https only),
//! the body read up to its limit — all within `wkd.timeout_ms` — and how
//! long the answer may be reused.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

use super::url::HttpsUrl;
use super::{FAILURE_TTL, Fetched, HostAnswer, MAX_NEGATIVE_TTL, MAX_TTL, MIN_TTL, WebClient};
use crate::keys::FailReason;

/// Which host a fetch has a connection open to, and since when.
type Talking = std::sync::Mutex<Option<(String, u16, Instant)>>;

/// How a refused connection's denial begins (a redirect target refusing
/// is a failure, not a denial).
const REFUSED: &str = "connection refused";

/// What one request gave, before redirects are followed.
enum Hop {
    Done(Fetched, Duration),
    Redirect(String),
}

/// `url`'s answer and how long it may be cached.
pub(super) async fn fetch(client: &WebClient, url: &HttpsUrl) -> (Fetched, Duration) {
    let s = &client.settings;
    // The host a connection is open to and since when, for blame if time
    // runs out.
    let talking_to: Talking = std::sync::Mutex::new(None);
    let bounded = async {
        // The wait for a slot counts against the fetch's own time.
        let Ok(_permit) = client.in_flight.acquire().await else {
            return failed(FailReason::Network("HTTP client shut down".into()));
        };
        let mut at = url.clone();
        for hop in 0..=s.max_redirects {
            match request(client, &at, &talking_to).await {
                // Where a redirect points must exist and answer: only the
                // first URL's host may be absent (WKD's direct method) or
                // refuse (no key service there).
                Hop::Done(Fetched::NoSuchHost(h), _) if hop > 0 => {
                    return bad(format!(
                        "{} redirects to {h}, which does not exist",
                        url.text
                    ));
                }
                Hop::Done(Fetched::NotFound(why), _) if hop > 0 && why.starts_with(REFUSED) => {
                    return bad(format!("{} redirects to {}: {why}", url.text, at.text));
                }
                Hop::Done(f, ttl) => return (f, ttl),
                Hop::Redirect(location) => match at.join(&location) {
                    Ok(next) => at = next,
                    Err(why) => return bad(format!("{} redirects to {why}", at.text)),
                },
            }
        }
        bad(format!(
            "{}: more than {} redirects (wkd.max_redirects)",
            url.text, s.max_redirects
        ))
    };
    match tokio::time::timeout(s.timeout, bounded).await {
        Ok(answer) => answer,
        Err(_) => {
            // Connected and then silent for a while: the server is slow
            // for everyone. (Not when the time was mostly spent waiting
            // for a slot or for DNS, and the server had only a moment.)
            let blamed = match talking_to.lock() {
                Ok(t) => t.clone(),
                Err(poisoned) => poisoned.into_inner().clone(),
            };
            if let Some((host, port, since)) = blamed
                && since.elapsed() >= s.connect_timeout
            {
                client
                    .down
                    .mark(&host, port, "no answer within wkd.timeout_ms");
            }
            failed(FailReason::Timeout)
        }
    }
}

fn failed(why: FailReason) -> (Fetched, Duration) {
    (Fetched::Failed(why), FAILURE_TTL)
}

fn bad(why: String) -> (Fetched, Duration) {
    failed(FailReason::BadAnswer(why))
}

/// One GET of `url`, connection included; `talking_to` says to whom
/// while the connection is open.
async fn request(client: &WebClient, url: &HttpsUrl, talking_to: &Talking) -> Hop {
    let done = |(f, ttl)| Hop::Done(f, ttl);
    if let Some(why) = client.down.check(&url.host, url.port) {
        return done(failed(FailReason::Network(why)));
    }
    let addrs = match url.host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => match client.hosts.resolve(&url.host).await {
            HostAnswer::Addrs(a) => a,
            HostAnswer::NoSuchHost => {
                return Hop::Done(Fetched::NoSuchHost(url.host.clone()), MAX_NEGATIVE_TTL);
            }
            HostAnswer::Bogus(why) => return Hop::Done(Fetched::Bogus(why), FAILURE_TTL),
            HostAnswer::Failed(why) => {
                return done(failed(FailReason::Network(format!(
                    "looking up {}: {why}",
                    url.host
                ))));
            }
        },
    };
    let addrs = if client.settings.allow_private_addresses {
        addrs
    } else {
        let public: Vec<IpAddr> = addrs
            .iter()
            .copied()
            .filter(|a| super::public::is_public(*a))
            .collect();
        if public.is_empty() {
            return done(failed(FailReason::Network(format!(
                "{} has only non-public addresses ({}); not connected to \
                 (wkd.allow_private_addresses is off)",
                url.host,
                addrs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))));
        }
        public
    };
    let tls = match connect(client, url, &addrs).await {
        Ok(t) => t,
        Err(answer) => {
            if let (Fetched::Failed(why), _) = &answer {
                client.down.mark(&url.host, url.port, &why.to_string());
            }
            return done(answer);
        }
    };
    let set = |v: Option<(String, u16, Instant)>| match talking_to.lock() {
        Ok(mut t) => *t = v,
        Err(poisoned) => *poisoned.into_inner() = v,
    };
    set(Some((url.host.clone(), url.port, Instant::now())));
    let hop = match exchange(client, url, tls).await {
        Ok(hop) => hop,
        Err(why) => done(failed(FailReason::Network(format!("{}: {why}", url.text)))),
    };
    set(None);
    hop
}

/// A verified TLS connection to one of `addrs`, tried in order, each
/// within `wkd.connect_timeout_ms`. Every address refusing is a denial
/// (nothing serves keys there); anything else failing is a failure.
async fn connect(
    client: &WebClient,
    url: &HttpsUrl,
    addrs: &[IpAddr],
) -> Result<SslStream<TcpStream>, (Fetched, Duration)> {
    let mut last: Option<FailReason> = None;
    let mut refused = 0;
    for ip in addrs {
        let at = SocketAddr::new(*ip, url.port);
        let attempt = tokio::time::timeout(client.settings.connect_timeout, async {
            let tcp = TcpStream::connect(at).await.map_err(Step::Tcp)?;
            let ssl = client
                .tls
                .configure()
                .and_then(|c| c.into_ssl(&url.host))
                .map_err(|e| Step::Tls(e.to_string()))?;
            let mut tls = SslStream::new(ssl, tcp).map_err(|e| Step::Tls(e.to_string()))?;
            match Pin::new(&mut tls).connect().await {
                Ok(()) => Ok(tls),
                Err(e) => {
                    let verify = tls.ssl().verify_result();
                    Err(Step::Tls(if verify.as_raw() == 0 {
                        e.to_string()
                    } else {
                        format!("certificate not trusted: {}", verify.error_string())
                    }))
                }
            }
        })
        .await;
        match attempt {
            Ok(Ok(tls)) => return Ok(tls),
            Ok(Err(Step::Tcp(e))) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                refused += 1;
            }
            Ok(Err(Step::Tcp(e))) => {
                last = Some(FailReason::Network(format!("connecting to {at}: {e}")));
            }
            Ok(Err(Step::Tls(e))) => {
                last = Some(FailReason::Network(format!(
                    "TLS with {} ({at}): {e}",
                    url.host
                )));
            }
            Err(_) => {
                last = Some(FailReason::Network(format!(
                    "no connection to {at} within {} ms (wkd.connect_timeout_ms)",
                    client.settings.connect_timeout.as_millis()
                )));
            }
        }
    }
    Err(match last {
        Some(why) => failed(why),
        None if refused > 0 => (
            Fetched::NotFound(format!("{REFUSED} by {}:{}", url.host, url.port)),
            FAILURE_TTL,
        ),
        None => failed(FailReason::Network(format!("{} has no address", url.host))),
    })
}

enum Step {
    Tcp(std::io::Error),
    Tls(String),
}

/// Kills the connection task when the fetch ends or is dropped (timeout).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The request on an open connection, and its response read as a [`Hop`].
async fn exchange(
    client: &WebClient,
    url: &HttpsUrl,
    tls: SslStream<TcpStream>,
) -> Result<Hop, String> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    let _conn = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));
    // An IPv6 literal goes in brackets.
    let name = if url.host.contains(':') {
        format!("[{}]", url.host)
    } else {
        url.host.clone()
    };
    let host = if url.port == 443 {
        name
    } else {
        format!("{name}:{}", url.port)
    };
    let req = Request::get(url.target.as_str())
        .header(header::HOST, host)
        .header(
            header::USER_AGENT,
            concat!("autoencrypt-milter/", env!("CARGO_PKG_VERSION")),
        )
        .header(
            header::ACCEPT,
            "application/octet-stream, application/pgp-keys",
        )
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let ttl_hint = max_age(resp.headers());
    match status {
        StatusCode::OK => {}
        StatusCode::NOT_FOUND | StatusCode::GONE => {
            let ttl = denial_ttl(ttl_hint);
            return Ok(Hop::Done(
                Fetched::NotFound(format!("HTTP {}", status.as_u16())),
                ttl,
            ));
        }
        s if s.is_redirection() && s != StatusCode::NOT_MODIFIED => {
            return match resp
                .headers()
                .get(header::LOCATION)
                .map(HeaderValue::to_str)
            {
                Some(Ok(loc)) => Ok(Hop::Redirect(loc.to_owned())),
                _ => Ok(Hop::Done(
                    Fetched::Failed(FailReason::BadAnswer(format!(
                        "{}: HTTP {} without a usable Location",
                        url.text,
                        s.as_u16()
                    ))),
                    FAILURE_TTL,
                )),
            };
        }
        s => {
            return Ok(Hop::Done(
                Fetched::Failed(FailReason::BadAnswer(format!(
                    "{}: HTTP {}",
                    url.text,
                    s.as_u16()
                ))),
                FAILURE_TTL,
            ));
        }
    }
    let limit = client.settings.max_response_bytes;
    let too_big = |what: String| {
        Hop::Done(
            Fetched::Failed(FailReason::BadAnswer(format!(
                "{}: {what} exceeds wkd.max_response_bytes ({limit})",
                url.text
            ))),
            FAILURE_TTL,
        )
    };
    let declared = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| *n > limit) {
        return Ok(too_big(format!("a body of {n} bytes")));
    }
    // A body ending where the connection does cannot be told from one cut
    // by a forged TCP FIN (a missing close_notify reads as its end), which
    // can drop a revocation: it must say its length or come in chunks.
    // Framed as hyper reads it: the last Transfer-Encoding, if any,
    // decides (chunked only when its last coding is), else Content-Length.
    let framed = match resp
        .headers()
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .next_back()
    {
        Some(te) => te
            .to_str()
            .ok()
            .and_then(|s| s.rsplit(',').next())
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked")),
        None => declared.is_some(),
    };
    if !framed {
        let why = format!("{}: neither Content-Length nor chunked", url.text);
        return Ok(Hop::Done(
            Fetched::Failed(FailReason::BadAnswer(why)),
            FAILURE_TTL,
        ));
    }
    let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
    let body = match Limited::new(resp.into_body(), limit_usize).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Ok(too_big("the body".into()));
        }
        Err(e) => return Err(format!("reading the body: {e}")),
    };
    let ttl = body_ttl(ttl_hint);
    Ok(Hop::Done(
        Fetched::Body {
            bytes: body,
            url: url.text.clone(),
        },
        ttl,
    ))
}

/// How long a 200 is kept: its `max-age` within [`MIN_TTL`]…[`MAX_TTL`],
/// [`MAX_TTL`] without one.
fn body_ttl(hint: Option<Duration>) -> Duration {
    hint.map_or(MAX_TTL, |t| t.clamp(MIN_TTL, MAX_TTL))
}

/// How long a 404/410 is kept: its `max-age` within
/// [`MIN_TTL`]…[`MAX_NEGATIVE_TTL`], [`MAX_NEGATIVE_TTL`] without one.
fn denial_ttl(hint: Option<Duration>) -> Duration {
    hint.map_or(MAX_NEGATIVE_TTL, |t| t.clamp(MIN_TTL, MAX_NEGATIVE_TTL))
}

/// How long the response may be reused by its `Cache-Control` fields
/// ([`cache_control_max_age`] of them joined).
fn max_age(headers: &HeaderMap) -> Option<Duration> {
    let joined: Vec<&str> = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    cache_control_max_age(&joined.join(","))
}

/// How long a response may be reused by a `Cache-Control` value:
/// `max-age=N` (`s-maxage` wins, as for a shared cache), zero for
/// `no-store` / `no-cache`; `None` when it does not say.
pub fn cache_control_max_age(value: &str) -> Option<Duration> {
    let mut age = None;
    let mut shared = None;
    {
        let v = value;
        for directive in v.split(',') {
            let (name, value) = match directive.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (directive.trim(), None),
            };
            let secs = || {
                value
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_secs)
            };
            match name.to_ascii_lowercase().as_str() {
                "no-store" | "no-cache" => return Some(Duration::ZERO),
                "max-age" => age = secs().or(age),
                "s-maxage" => shared = secs().or(shared),
                _ => {}
            }
        }
    }
    shared.or(age)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                header::CACHE_CONTROL,
                HeaderValue::from_str(v).expect("header"),
            );
        }
        h
    }

    #[test]
    fn cache_control_gives_the_lifetime() {
        assert_eq!(max_age(&headers(&[])), None);
        assert_eq!(
            max_age(&headers(&["max-age=600"])),
            Some(Duration::from_secs(600))
        );
        assert_eq!(
            max_age(&headers(&["public, MAX-AGE=\"120\""])),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            max_age(&headers(&["max-age=600", "s-maxage=60"])),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            max_age(&headers(&["max-age=600, no-cache"])),
            Some(Duration::ZERO)
        );
        assert_eq!(max_age(&headers(&["max-age=banana"])), None);
        // Whatever it says, the bounds hold.
        let secs = Duration::from_secs;
        assert_eq!(body_ttl(None), MAX_TTL);
        assert_eq!(body_ttl(Some(secs(600))), secs(600));
        assert_eq!(body_ttl(Some(Duration::ZERO)), MIN_TTL);
        assert_eq!(body_ttl(Some(secs(99_999_999_999))), MAX_TTL);
        assert_eq!(denial_ttl(None), MAX_NEGATIVE_TTL);
        assert_eq!(denial_ttl(Some(secs(120))), secs(120));
        assert_eq!(denial_ttl(Some(secs(1))), MIN_TTL);
        assert_eq!(denial_ttl(Some(secs(86_400))), MAX_NEGATIVE_TTL);
    }
}
