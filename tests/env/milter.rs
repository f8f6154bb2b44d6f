//! The milter in-process, for integration tests that talk to it over the
//! milter protocol or put it behind the Postfix test environment.
//!
//! Include it with `#[path = "env/milter.rs"] mod milter;`. A
//! [`InProcessMilter`] serves on a fresh loopback TCP port and stops when
//! dropped; [`trust_ad_config`] is the configuration most tests start from
//! (one policy file in a temporary directory, trust-ad mode against the
//! test environment's unbound); [`apply_actions`] turns what the milter
//! answered at end of message into the message an MTA would deliver.

#![allow(dead_code)]
#![allow(
    clippy::panic,
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test helper: failures must panic loudly"
)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use autoencrypt_milter::config::{Config, DnsMode};
use autoencrypt_milter::metrics::Metrics;
use autoencrypt_milter::milter::{Engine, Shared, TcpMilterListener, run_on};
use indymilter_test::{EomAction, EomActions};
use tempfile::TempDir;
use tokio::sync::oneshot;

/// A `Config` whose policy is `policy` (written as `10-test.toml` in the
/// returned directory, which must outlive the milter), asking `resolver` in
/// trust-ad mode with a 2 s timeout.
pub fn trust_ad_config(policy: &str, resolver: SocketAddr) -> (Config, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("10-test.toml"), policy).unwrap();
    let mut config = Config {
        policy_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    config.dns.mode = DnsMode::TrustAd;
    config.dns.resolvers = vec![resolver];
    config.dns.timeout_ms = 2000;
    (config, dir)
}

/// A running in-process milter; stops when dropped.
pub struct InProcessMilter {
    /// Where it listens (loopback TCP).
    pub addr: SocketAddr,
    /// The engine's metrics.
    pub metrics: Metrics,
    /// The state every connection shares.
    pub shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    _dirs: Option<TempDir>,
}

impl Drop for InProcessMilter {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn shared(config: Config, config_path: PathBuf) -> (Arc<Shared>, Metrics) {
    let metrics = Metrics::new();
    let engine = Engine::from_config(config, metrics.clone()).expect("engine");
    (Arc::new(Shared::new(engine, config_path)), metrics)
}

async fn serve(l: tokio::net::TcpListener, shared: Arc<Shared>, stop: oneshot::Receiver<()>) {
    let _ = run_on(TcpMilterListener(l), shared, async move {
        let _ = stop.await;
    })
    .await;
}

impl InProcessMilter {
    /// Starts the milter for `config` on the caller's tokio runtime (for
    /// `#[tokio::test]`s). `dirs` (the policy directory, say) is kept until
    /// the milter is dropped.
    pub async fn spawn(config: Config, dirs: Option<TempDir>) -> InProcessMilter {
        let (shared, metrics) = shared(config, "/nonexistent".into());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(serve(l, shared.clone(), rx));
        InProcessMilter {
            addr,
            metrics,
            shared,
            stop: Some(tx),
            _dirs: dirs,
        }
    }

    /// [`trust_ad_config`] for `policy`, changed by `tweak`, on the
    /// caller's runtime.
    pub async fn trust_ad(
        resolver: SocketAddr,
        policy: &str,
        tweak: impl FnOnce(&mut Config),
    ) -> InProcessMilter {
        let (mut config, dir) = trust_ad_config(policy, resolver);
        tweak(&mut config);
        InProcessMilter::spawn(config, Some(dir)).await
    }

    /// Starts the milter for `config` on its own thread with a two-worker
    /// runtime (for synchronous tests, e.g. behind Postfix).
    pub fn on_thread(config: Config, dirs: Option<TempDir>) -> InProcessMilter {
        Self::on_thread_reloading(config, "/nonexistent".into(), dirs)
    }

    /// [`InProcessMilter::on_thread`], whose `shared.reload()` reads
    /// `config_path`.
    pub fn on_thread_reloading(
        config: Config,
        config_path: PathBuf,
        dirs: Option<TempDir>,
    ) -> InProcessMilter {
        let (shared, metrics) = shared(config, config_path);
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (tx, rx) = oneshot::channel::<()>();
        let s = shared.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(l.local_addr().unwrap()).unwrap();
                serve(l, s, rx).await;
            });
        });
        InProcessMilter {
            addr: addr_rx.recv().unwrap(),
            metrics,
            shared,
            stop: Some(tx),
            _dirs: dirs,
        }
    }

    /// [`trust_ad_config`] for `policy`, changed by `tweak`, on its own
    /// thread.
    pub fn trust_ad_on_thread(
        resolver: SocketAddr,
        policy: &str,
        tweak: impl FnOnce(&mut Config),
    ) -> InProcessMilter {
        let (mut config, dir) = trust_ad_config(policy, resolver);
        tweak(&mut config);
        InProcessMilter::on_thread(config, Some(dir))
    }
}

/// The message an MTA delivers after applying the milter's end-of-message
/// `eom` actions to `headers` (name, raw value with its leading space) and
/// `body`: header fields as CRLF lines, then the (possibly replaced) body.
/// Any action other than adding, changing or deleting a header field or
/// replacing the body panics, as does changing a field that is not there.
pub fn apply_actions<N: AsRef<str>>(
    headers: &[(N, String)],
    body: &[u8],
    eom: &EomActions,
) -> Vec<u8> {
    let mut headers: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| (n.as_ref().to_owned(), v.clone()))
        .collect();
    let mut new_body: Option<Vec<u8>> = None;
    let nth = |h: &Vec<(String, String)>, name: &str, index: i32| {
        h.iter()
            .enumerate()
            .filter(|(_, (n, _))| n.eq_ignore_ascii_case(name))
            .nth(usize::try_from(index - 1).unwrap())
            .map(|(i, _)| i)
    };
    for a in &eom.actions {
        match a {
            EomAction::AddHeader { name, value } => headers.push((
                name.to_str().unwrap().to_owned(),
                value.to_str().unwrap().to_owned(),
            )),
            EomAction::ChangeHeader { name, index, value } => {
                let i =
                    nth(&headers, name.to_str().unwrap(), *index).expect("changed header exists");
                headers[i].1 = value.to_str().unwrap().to_owned();
            }
            EomAction::DeleteHeader { name, index } => {
                let i =
                    nth(&headers, name.to_str().unwrap(), *index).expect("deleted header exists");
                headers.remove(i);
            }
            EomAction::InsertHeader { index, name, value } => headers.insert(
                usize::try_from(*index).unwrap().min(headers.len()),
                (
                    name.to_str().unwrap().to_owned(),
                    value.to_str().unwrap().to_owned(),
                ),
            ),
            EomAction::ReplaceBody { chunk } => new_body
                .get_or_insert_with(Vec::new)
                .extend_from_slice(chunk),
            other => panic!("unexpected action {other:?}"),
        }
    }
    let mut v = Vec::new();
    for (n, val) in &headers {
        v.extend_from_slice(n.as_bytes());
        v.push(b':');
        v.extend_from_slice(val.replace("\r\n", "\n").replace('\n', "\r\n").as_bytes());
        v.extend_from_slice(b"\r\n");
    }
    v.extend_from_slice(b"\r\n");
    v.extend_from_slice(new_body.as_deref().unwrap_or(body));
    v
}

/// A loopback TCP port nothing listens on just now (for the real binary's
/// configuration file).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
