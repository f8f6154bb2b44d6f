//! The /metrics and /healthz endpoint over real TCP: status codes, content
//! types, bodies, shutdown; `promtool check metrics` on the Prometheus text
//! output and Prometheus' OpenMetrics parser on the OpenMetrics output.
//!
//! promtool comes from the Debian package `prometheus`; this test fails
//! (it does not skip) when promtool is missing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use autoencrypt_milter::Method;
use autoencrypt_milter::keys::{FailReason, Lookup, SourceKind};
use autoencrypt_milter::metrics::{self, Metrics, Outcome};
use autoencrypt_milter::policy::Direction;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const INSTALL: &str =
    "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus";

struct Server {
    addr: SocketAddr,
    healthy: Arc<AtomicBool>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

async fn start(metrics: Metrics) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let healthy = Arc::new(AtomicBool::new(true));
    let (stop, stopped) = oneshot::channel::<()>();
    let h = Arc::clone(&healthy);
    let task = tokio::spawn(metrics::serve(
        listener,
        metrics,
        move || h.load(Ordering::SeqCst),
        async move {
            let _ = stopped.await;
        },
    ));
    Server {
        addr,
        healthy,
        stop: Some(stop),
        task,
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on a fresh connection, read to EOF.
async fn request(addr: SocketAddr, method: &str, path: &str, extra: &str) -> Reply {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("response within 10 s")
        .unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("header end");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    let reply = Reply {
        status,
        headers,
        body: body.to_owned(),
    };
    if method != "HEAD" {
        let len: usize = reply
            .header("content-length")
            .expect("content-length")
            .parse()
            .unwrap();
        assert_eq!(len, reply.body.len(), "{reply:?}");
    }
    reply
}

/// Metrics with something in every family, histograms included.
fn busy_metrics() -> Metrics {
    let m = Metrics::new();
    m.message(Direction::Outbound, Outcome::Encrypted);
    m.message(Direction::Inbound, Outcome::AlreadyEncrypted);
    m.encrypted(Method::Smime);
    m.lookup(
        SourceKind::Dane,
        Method::Smime,
        &Lookup::NotFound,
        Duration::from_millis(4),
    );
    m.lookup(
        SourceKind::Dane,
        Method::OpenPgp,
        &Lookup::Failed(FailReason::Timeout),
        Duration::from_secs(3),
    );
    m.cache_hit(SourceKind::Dane, Method::Smime);
    m.encryption(Method::Smime, Duration::from_millis(2));
    m.message_size(12_345);
    m
}

#[tokio::test]
async fn metrics_in_openmetrics_when_asked() {
    let m = busy_metrics();
    let _conn = m.connection_opened();
    let srv = start(m).await;
    let r = request(
        srv.addr,
        "GET",
        "/metrics",
        "Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(r.body.ends_with("# EOF\n"), "{}", r.body);
    for line in [
        "# TYPE autoencrypt_messages counter",
        "autoencrypt_messages_total{direction=\"outbound\",outcome=\"encrypted\"} 1",
        "autoencrypt_messages_total{direction=\"inbound\",outcome=\"already_encrypted\"} 1",
        "autoencrypt_encrypted_total{method=\"smime\"} 1",
        "autoencrypt_key_lookups_total{source=\"dane\",record=\"openpgpkey\",result=\"failed\"} 1",
        "autoencrypt_key_lookups_total{source=\"dane\",record=\"smimea\",result=\"cache_hit\"} 1",
        "# TYPE autoencrypt_key_lookup_duration_seconds histogram",
        "# UNIT autoencrypt_key_lookup_duration_seconds seconds",
        "autoencrypt_encryption_duration_seconds_count{method=\"smime\"} 1",
        "autoencrypt_message_size_bytes_count 1",
        "# TYPE autoencrypt_connections_active gauge",
        "autoencrypt_connections_active 1",
    ] {
        assert!(
            r.body.lines().any(|l| l == line),
            "missing {line:?} in\n{}",
            r.body
        );
    }
}

#[tokio::test]
async fn metrics_in_prometheus_text_by_default() {
    let srv = start(busy_metrics()).await;
    let r = request(srv.addr, "GET", "/metrics", "").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(
        r.body
            .contains("# TYPE autoencrypt_messages_total counter\n")
    );
    assert!(
        r.body
            .contains("autoencrypt_encrypted_total{method=\"smime\"} 1\n")
    );
    assert!(!r.body.contains("# EOF"));
}

#[tokio::test]
async fn promtool_accepts_the_metrics() {
    let srv = start(busy_metrics()).await;
    // What an operator runs: curl -s http://HOST:PORT/metrics | promtool check metrics
    let r = request(srv.addr, "GET", "/metrics", "Accept: */*\r\n").await;
    assert_eq!(r.status, 200, "{r:?}");
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!("promtool not runnable ({e}); install it with: {INSTALL}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(r.body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.trim().is_empty() && stderr.trim().is_empty(),
        "promtool check metrics: {}\nstdout: {stdout}\nstderr: {stderr}\nbody:\n{}",
        out.status,
        r.body
    );
}

/// promtool 2.42 has no OpenMetrics linter, but its backfiller reads
/// OpenMetrics with Prometheus' own parser (and insists on `# EOF`). It
/// wants a timestamp on every sample: add one, change nothing else.
#[tokio::test]
async fn prometheus_parses_the_openmetrics_output() {
    let srv = start(busy_metrics()).await;
    let r = request(
        srv.addr,
        "GET",
        "/metrics",
        "Accept: application/openmetrics-text; version=1.0.0\r\n",
    )
    .await;
    assert_eq!(
        r.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let mut stamped = String::new();
    let mut samples = 0;
    for line in r.body.lines() {
        stamped.push_str(line);
        if !line.starts_with('#') {
            stamped.push_str(" 1700000000");
            samples += 1;
        }
        stamped.push('\n');
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("metrics.om");
    std::fs::write(&input, stamped).unwrap();
    let out = match Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&input)
        .arg(dir.path().join("blocks"))
        .output()
    {
        Ok(o) => o,
        Err(e) => panic!("promtool not runnable ({e}); install it with: {INSTALL}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "promtool: {}\nstdout: {stdout}\nstderr: {stderr}\nbody:\n{}",
        out.status,
        r.body
    );
    // BLOCK ULID | MIN TIME | MAX TIME | DURATION | NUM SAMPLES | ...
    let read: usize = stdout
        .lines()
        .nth(1)
        .and_then(|row| row.split_whitespace().nth(4))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected promtool output: {stdout}"));
    assert_eq!(read, samples, "promtool read {read} of {samples} samples");
}

#[tokio::test]
async fn healthz_follows_the_health_check() {
    let srv = start(Metrics::new()).await;
    let r = request(srv.addr, "GET", "/healthz", "").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"), "{r:?}");
    srv.healthy.store(false, Ordering::SeqCst);
    let r = request(srv.addr, "GET", "/healthz", "").await;
    assert_eq!((r.status, r.body.as_str()), (503, "unhealthy\n"), "{r:?}");
    srv.healthy.store(true, Ordering::SeqCst);
    let r = request(srv.addr, "HEAD", "/healthz", "").await;
    assert_eq!((r.status, r.body.as_str()), (200, ""), "{r:?}");
}

#[tokio::test]
async fn head_other_paths_and_methods() {
    let srv = start(Metrics::new()).await;
    let r = request(srv.addr, "HEAD", "/metrics", "").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.is_empty(), "{r:?}");
    assert!(
        r.header("content-length")
            .unwrap()
            .parse::<usize>()
            .unwrap()
            > 1000
    );
    for path in ["/", "/metricsx", "/metrics/", "/health"] {
        let r = request(srv.addr, "GET", path, "").await;
        assert_eq!(r.status, 404, "{path}: {r:?}");
    }
    let r = request(srv.addr, "POST", "/metrics", "Content-Length: 0\r\n").await;
    assert_eq!(r.status, 405, "{r:?}");
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
}

#[tokio::test]
async fn stops_accepting_on_shutdown() {
    let mut srv = start(Metrics::new()).await;
    assert_eq!(request(srv.addr, "GET", "/healthz", "").await.status, 200);
    srv.stop.take().unwrap().send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), &mut srv.task)
        .await
        .expect("serve returns after shutdown")
        .unwrap();
    assert!(
        TcpStream::connect(srv.addr).await.is_err(),
        "still accepting"
    );
}

/// Idle connections to the endpoint cannot use up the process's file
/// descriptors: the real binary, limited to 256 descriptors, with 600
/// idle endpoint connections open still negotiates with an MTA on the
/// milter socket (it used to fail every accept with EMFILE, so the MTA's
/// connection sat unanswered). The endpoint serves again once they go.
#[tokio::test]
async fn idle_endpoint_connections_do_not_starve_the_milter_socket() {
    let dir = tempfile::tempdir().unwrap();
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (milter_port, http_port) = (free(), free());
    let policies = dir.path().join("policy.d");
    std::fs::create_dir(&policies).unwrap();
    let config = dir.path().join("milter.toml");
    std::fs::write(
        &config,
        format!(
            "socket = \"inet:127.0.0.1:{milter_port}\"\nmetrics_listen = \"127.0.0.1:{http_port}\"\npolicy_dir = \"{}\"\n",
            policies.display()
        ),
    )
    .unwrap();
    let mut child = Command::new("prlimit")
        .arg("--nofile=256:256")
        .arg(env!("CARGO_BIN_EXE_autoencrypt-milter"))
        .arg("--config")
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prlimit (util-linux) is required");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", http_port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the milter did not start"
            );
            if let Ok(Some(s)) = child.try_wait() {
                panic!("the milter exited: {s}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Kill(child)
    };
    let http: SocketAddr = ([127, 0, 0, 1], http_port).into();
    let mut idle = Vec::new();
    for _ in 0..600 {
        idle.push(TcpStream::connect(http).await.unwrap());
    }
    // Time to accept them (without the bound it then holds all 256).
    tokio::time::sleep(Duration::from_millis(2000)).await;

    let pid = _guard.0.id();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    eprintln!("the milter has {fds} descriptors open (limit 256)");
    let milter: SocketAddr = ([127, 0, 0, 1], milter_port).into();
    let negotiated = tokio::time::timeout(
        Duration::from_secs(5),
        indymilter_test::TestConnection::open(milter),
    )
    .await;
    match negotiated {
        Ok(Ok(c)) => c.close().await.unwrap(),
        Ok(Err(e)) => panic!("the milter socket did not negotiate: {e}"),
        Err(_) => panic!("the milter socket did not negotiate within 5 s"),
    }
    drop(idle);
    let healthz = || async {
        let mut s = TcpStream::connect(http).await.ok()?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut raw))
            .await
            .ok()?
            .ok()?;
        Some(raw.starts_with(b"HTTP/1.1 200"))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while healthz().await != Some(true) {
        assert!(
            std::time::Instant::now() < deadline,
            "/healthz not served again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
