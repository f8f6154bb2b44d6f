//! Connection slots (issue 9 item 5) through a real Postfix and the real
//! binary: 600 idle TCP connections to the milter do not stop mail (it is
//! delivered encrypted and decrypts), connections that never negotiate
//! are closed (at once to make room, the rest at the negotiation
//! deadline), a milter whose slots are all held by negotiated connections
//! closes new ones at once (Postfix applies `milter_default_action`) and
//! `/healthz` says `503 saturated`; `max_connections` and
//! `negotiation_timeout_ms` are reloaded on SIGHUP, `idle_timeout_secs`
//! needs a restart and the reload says so.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod common;
#[path = "env/mod.rs"]
mod env;
#[path = "env/milter.rs"]
mod milter;
#[path = "env/postfix.rs"]
mod postfix;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use autoencrypt_milter::config::Config;
use autoencrypt_milter::metrics::{self, Metrics};
use autoencrypt_milter::milter::{Engine, Shared, TcpMilterListener, UnixMilterListener, run_on};
use common::{Scratch, SmimeId, expected_protected_entity, smime_decrypt};
use env::DnsEnv;
use milter::{free_port, trust_ad_config};
use postfix::{PostfixEnv, header_and_body, strip_delivery_headers};

const WAIT: Duration = Duration::from_secs(30);

/// The milter as `serve` runs it (one current-thread runtime), with its
/// metrics endpoint; stops when dropped.
struct Milter {
    addr: SocketAddr,
    http: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _policy: tempfile::TempDir,
}

impl Drop for Milter {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn milter(env: &DnsEnv, tweak: impl FnOnce(&mut Config)) -> Milter {
    milter_on(env, None, tweak)
}

/// As [`milter`], on the unix socket `unix` (mode 0666) when given.
fn milter_on(
    env: &DnsEnv,
    unix: Option<std::path::PathBuf>,
    tweak: impl FnOnce(&mut Config),
) -> Milter {
    let (mut config, policy) = trust_ad_config(
        "[[rule]]\nname = \"required\"\nrecipient = [\"smime@autoencrypt.test\"]\nmode = \"required\"\n",
        env.resolver(),
    );
    tweak(&mut config);
    let metrics = Metrics::new();
    let engine = Engine::from_config(config, metrics.clone()).expect("engine");
    let shared = Arc::new(Shared::new(engine, "/nonexistent".into()));
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let h = metrics::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
            let unix = unix.map(|path| {
                let u = tokio::net::UnixListener::bind(&path).unwrap();
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
                u
            });
            addr_tx
                .send((l.local_addr().unwrap(), h.local_addr().unwrap()))
                .unwrap();
            let (http_stop, http_stopped) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(metrics::serve(h, metrics, || true, async move {
                let _ = http_stopped.await;
            }));
            let stop = async move {
                let _ = stop_rx.await;
            };
            let _ = match unix {
                Some(u) => run_on(UnixMilterListener(u), shared, stop).await,
                None => run_on(TcpMilterListener(l), shared, stop).await,
            };
            let _ = http_stop.send(());
        });
    });
    let (addr, http) = addr_rx.recv().unwrap();
    Milter {
        addr,
        http,
        stop: Some(stop_tx),
        _policy: policy,
    }
}

/// Status and body of `GET path`.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

/// A sample of the metrics, 0 when absent.
fn sample(http: SocketAddr, name: &str) -> u64 {
    let (_, text) = get(http, "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0, |v| v.parse().unwrap())
}

fn dropped(http: SocketAddr, reason: &str) -> u64 {
    sample(
        http,
        &format!("autoencrypt_connections_dropped_total{{reason=\"{reason}\"}}"),
    )
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// 600 client sockets plus the milter's 600 in one process need more than
/// the usual 1024 descriptors.
fn raise_nofile(want: u64) {
    let soft = || -> u64 {
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap();
        line.split_whitespace().nth(3).unwrap().parse().unwrap()
    };
    if soft() < want {
        let ok = Command::new("prlimit")
            .arg(format!("--pid={}", std::process::id()))
            .arg(format!("--nofile={want}:{want}"))
            .status()
            .expect("prlimit (util-linux) is needed to raise RLIMIT_NOFILE");
        assert!(ok.success(), "prlimit failed");
    }
    assert!(soft() >= want, "RLIMIT_NOFILE stays below {want}");
}

fn message(body: &str) -> Vec<u8> {
    format!(
        "From: sender@example.net\r\nTo: smime@autoencrypt.test\r\nSubject: idle connections\r\nMessage-ID: <{}@example.net>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n",
        body.len()
    )
    .into_bytes()
}

/// The newest delivery to smime@ decrypts to the inner entity of `sent`.
fn assert_delivered_encrypted(env: &DnsEnv, pf: &PostfixEnv, n: usize, sent: &[u8]) {
    let mail = pf.expect_mail("smime@autoencrypt.test", n, WAIT);
    let secret = String::from_utf8_lossy(header_and_body(sent).1).into_owned();
    let delivered = mail
        .iter()
        .find(|m| {
            let (h, _) = header_and_body(strip_delivery_headers(m));
            let h = String::from_utf8_lossy(h);
            h.contains(&format!("<{}@example.net>", secret.len() - 2))
        })
        .expect("the message was delivered");
    let (header, body) = header_and_body(strip_delivery_headers(delivered));
    assert!(
        String::from_utf8_lossy(header)
            .to_ascii_lowercase()
            .contains("application/pkcs7-mime"),
        "not S/MIME:\n{}",
        String::from_utf8_lossy(delivered)
    );
    assert!(!String::from_utf8_lossy(delivered).contains(secret.trim()));
    let b64: String = String::from_utf8_lossy(body)
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = openssl::base64::decode_block(&b64).unwrap();
    let u = env.user("smime");
    let id = SmimeId::from_files(u.cert.as_ref().unwrap(), u.key.as_ref().unwrap());
    let plain = smime_decrypt(&Scratch::new(), &der, "DER", &id).unwrap();
    assert_eq!(plain, expected_protected_entity(sent));
}

/// Whether the peer closed `s` (EOF or reset) within `within`.
fn closed_by_peer(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut b = [0u8; 16];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

#[test]
fn six_hundred_idle_connections_do_not_stop_mail() {
    raise_nofile(4096);
    let env = DnsEnv::start();
    // max_connections stays at its default, 256.
    let m = milter(&env, |c| c.limits.negotiation_timeout_ms = 3000);
    let pf = PostfixEnv::start(Some(m.addr));

    let mut idle: Vec<TcpStream> = (0..600)
        .map(|_| TcpStream::connect(m.addr).unwrap())
        .collect();
    wait_until("600 connections accepted", || {
        dropped(m.http, "evicted") >= 600 - 256
    });
    let (status, body) = get(m.http, "/healthz");
    assert_eq!(
        (status, body.as_str()),
        (200, "ok: 256/256 milter connections, 256 not negotiated\n")
    );

    // Every slot is held by an idle connection: Postfix's takes the place
    // of the oldest, and the message goes out encrypted.
    let sent = message("secret behind six hundred idle connections");
    let out = pf.send("sender@example.net", &["smime@autoencrypt.test"], &sent);
    assert!(out.accepted(), "{out}");
    assert_delivered_encrypted(&env, &pf, 1, &sent);

    // None of the idle connections is left open: the oldest were closed to
    // make room, the others when their negotiation deadline passed.
    for s in &mut idle {
        assert!(closed_by_peer(s, WAIT), "an idle connection stayed open");
    }
    let evicted = dropped(m.http, "evicted");
    let timed_out = dropped(m.http, "negotiation_timeout");
    // The 344 beyond the limit, and one more for Postfix.
    assert!(evicted > 600 - 256, "{evicted}");
    assert!(timed_out >= 1, "{timed_out}");
    assert_eq!(dropped(m.http, "limit"), 0);
    wait_until("the slots are free", || {
        get(m.http, "/healthz").1.starts_with("ok: 0/256 ")
    });
}

#[test]
fn negotiated_connections_on_every_slot_refuse_at_once_and_saturate_healthz() {
    let env = DnsEnv::start();
    let m = milter(&env, |c| c.limits.max_connections = 3);
    let pf = PostfixEnv::start(Some(m.addr));
    let rt = tokio::runtime::Runtime::new().unwrap();

    // Three clients that negotiate and then sit idle (as a hostile local
    // client could): they keep their slots.
    let held: Vec<indymilter_test::TestConnection> = rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(indymilter_test::TestConnection::open(m.addr).await.unwrap());
        }
        v
    });
    wait_until("three negotiated connections", || {
        get(m.http, "/healthz").0 == 503
    });
    assert_eq!(
        get(m.http, "/healthz"),
        (
            503,
            "saturated: 3/3 milter connections, 0 not negotiated\n".to_owned()
        )
    );

    // Postfix's connection is closed at once: milter_default_action
    // (tempfail) applies and nothing is delivered.
    let out = pf.send(
        "sender@example.net",
        &["smime@autoencrypt.test"],
        &message("refused"),
    );
    assert!(!out.accepted(), "{out}");
    assert!(out.last().is_transient(), "{out}");
    assert!(dropped(m.http, "limit") >= 1);
    assert_eq!(pf.maildir_count("smime@autoencrypt.test"), 0);
    assert!(
        pf.maillog().contains("milter inet:"),
        "Postfix logged no milter failure:\n{}",
        pf.maillog()
    );

    // A slot frees up: mail flows again, encrypted.
    let mut held = held;
    rt.block_on(held.pop().unwrap().close()).unwrap();
    wait_until("a free slot", || get(m.http, "/healthz").0 == 200);
    let sent = message("secret once a slot is free");
    let out = pf.send("sender@example.net", &["smime@autoencrypt.test"], &sent);
    assert!(out.accepted(), "{out}");
    assert_delivered_encrypted(&env, &pf, 1, &sent);
    drop(held);
}

/// Opens `n` connections to the unix socket `path` as user `nobody`, each
/// negotiating (OPTNEG) and then sitting idle, as a hostile local user
/// could; they stay open until the child is killed. `None` when not all
/// of them were answered.
fn hostile_local_user(path: &Path, n: usize) -> Option<Child> {
    const SCRIPT: &str = r#"
        use strict; use IO::Socket::UNIX; use Socket;
        my @held;
        for (1..$ARGV[1]) {
            my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM, Peer => $ARGV[0])
                or die "connect: $!";
            syswrite($s, pack("NCNNN", 13, ord("O"), 6, 0x1ff, 0x1fffff)) == 17 or die "write";
            sysread($s, my $len, 4) == 4 or die "no OPTNEG reply";
            sysread($s, my $reply, unpack("N", $len)) > 0 or die "short OPTNEG reply";
            push @held, $s;
        }
        $| = 1; print "ok
"; <STDIN>;
    "#;
    let mut child = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "perl",
            "-e",
            SCRIPT,
        ])
        .arg(path)
        .arg(n.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("setpriv and perl (util-linux, perl-base) are required");
    let mut line = [0u8; 3];
    match child.stdout.as_mut().unwrap().read_exact(&mut line) {
        Ok(()) if &line == b"ok\n" => Some(child),
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            None
        }
    }
}

#[test]
fn a_local_user_negotiating_on_every_slot_does_not_keep_postfix_out() {
    let env = DnsEnv::start();
    let dir = tempfile::tempdir().unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let socket = dir.path().join("milter.sock");
    let m = milter_on(&env, Some(socket.clone()), |c| c.limits.max_connections = 4);
    let pf = PostfixEnv::start_with(&format!("unix:{}", socket.display()));

    // Another user (not Postfix's) negotiates on every slot and sits idle.
    let mut hostile = hostile_local_user(&socket, 4).expect("four slots were free");
    wait_until("four negotiated connections", || {
        get(m.http, "/healthz").0 == 503
    });

    // Postfix (user postfix) still gets a slot: one of the hostile user's
    // connections is closed to make room, and the mail goes out encrypted.
    for i in 0..3 {
        // (`message` derives the Message-ID from the length.)
        let sent = message(&format!(
            "secret{} while a local user holds every slot",
            "!".repeat(i)
        ));
        let out = pf.send("sender@example.net", &["smime@autoencrypt.test"], &sent);
        assert!(out.accepted(), "{out}\n{}", pf.maillog());
        assert_delivered_encrypted(&env, &pf, i + 1, &sent);
    }
    assert!(dropped(m.http, "over_share") >= 1);
    assert_eq!(dropped(m.http, "limit"), 0);

    // The hostile user still cannot get more slots than there are: with
    // three held and one free, the second of two more is refused.
    assert!(hostile_local_user(&socket, 2).is_none());
    assert!(dropped(m.http, "limit") >= 1);
    let _ = hostile.kill();
    let _ = hostile.wait();
}

/// Only an option negotiation ends the negotiation deadline: a client
/// that sends a zero-length packet, or a macro definition, and then sits
/// idle is closed at the deadline like one that sends nothing (both used
/// to count as negotiated and keep their slots).
#[test]
fn packets_other_than_optneg_do_not_count_as_negotiating() {
    let env = DnsEnv::start();
    let m = milter(&env, |c| c.limits.negotiation_timeout_ms = 500);
    let zero = [0u8, 0, 0, 0].to_vec();
    let mut macro_packet = 7u32.to_be_bytes().to_vec();
    macro_packet.extend_from_slice(b"DCi\0x\0\0");
    for first in [zero, macro_packet] {
        let mut s = TcpStream::connect(m.addr).unwrap();
        s.write_all(&first).unwrap();
        assert!(
            closed_by_peer(&mut s, Duration::from_secs(10)),
            "{first:?}: not closed at the negotiation deadline"
        );
    }
    assert!(dropped(m.http, "negotiation_timeout") >= 2);
}

/// A packet declaring 4 GiB or 100 MiB after negotiating is refused
/// before anything is allocated (indymilter takes at most 1 MiB): the
/// connection is closed and its slot freed; the milter goes on.
#[test]
fn a_huge_declared_packet_length_closes_the_connection() {
    let env = DnsEnv::start();
    let m = milter(&env, |_| {});
    for len in [u32::MAX, 100 * 1024 * 1024] {
        let mut s = TcpStream::connect(m.addr).unwrap();
        let mut optneg = 13u32.to_be_bytes().to_vec();
        optneg.push(b'O');
        for word in [6u32, 0x1ff, 0x1f_ffff] {
            optneg.extend_from_slice(&word.to_be_bytes());
        }
        s.write_all(&optneg).unwrap();
        let mut reply = [0u8; 5];
        s.read_exact(&mut reply).unwrap();
        assert_eq!(reply[4], b'O', "{reply:?}");
        let mut rest = vec![0u8; u32::from_be_bytes(reply[..4].try_into().unwrap()) as usize - 1];
        s.read_exact(&mut rest).unwrap();
        let mut huge = len.to_be_bytes().to_vec();
        huge.push(b'B');
        s.write_all(&huge).unwrap();
        assert!(closed_by_peer(&mut s, Duration::from_secs(10)), "{len}");
    }
    wait_until("the slots are free", || {
        get(m.http, "/healthz").1.starts_with("ok: 0/256 ")
    });
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn write_config(path: &Path, policies: &Path, port: u16, http: u16, limits: &str) {
    std::fs::write(
        path,
        format!(
            "policy_dir = {:?}\nsocket = \"inet:127.0.0.1:{port}\"\nlog_level = \"info\"\nmetrics_listen = \"127.0.0.1:{http}\"\n[dns]\nmode = \"trust-ad\"\nresolvers = [\"127.0.0.1:9\"]\ntimeout_ms = 300\n[limits]\n{limits}",
            policies.display().to_string()
        ),
    )
    .unwrap();
}

#[test]
fn sighup_reloads_the_connection_limit_and_says_the_idle_timeout_needs_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    let config = dir.path().join("c.toml");
    let (port, http_port) = (free_port(), free_port());
    let http: SocketAddr = ([127, 0, 0, 1], http_port).into();
    write_config(
        &config,
        &policies,
        port,
        http_port,
        "max_connections = 2\nnegotiation_timeout_ms = 60000\n",
    );
    let log = dir.path().join("stderr");
    let child = Command::new(env!("CARGO_BIN_EXE_autoencrypt-milter"))
        .arg("--config")
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let m = Running(child);
    wait_until("the endpoint", || TcpStream::connect(http).is_ok());
    wait_until("the milter socket", || {
        sample(http, "autoencrypt_connections_limit") == 2
    });
    // Two idle connections fill both slots (their deadline is a minute).
    let mut idle: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    wait_until("two connections", || {
        get(http, "/healthz").1 == "ok: 2/2 milter connections, 2 not negotiated\n"
    });

    write_config(
        &config,
        &policies,
        port,
        http_port,
        "max_connections = 5\nnegotiation_timeout_ms = 200\nidle_timeout_secs = 10\n",
    );
    let ok = Command::new("kill")
        .args(["-s", "HUP", &m.0.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    wait_until("the reloaded limit", || {
        sample(http, "autoencrypt_connections_limit") == 5
    });
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(
            "limits.idle_timeout_secs changed to 10; it takes effect at the next restart"
        ),
        "{text}"
    );
    // Three more fit now, without evicting the first two; the new
    // deadline applies to the new connections only.
    idle.extend((0..3).map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap()));
    wait_until("five connections", || {
        get(http, "/healthz").1.starts_with("ok: 5/5 ") || dropped(http, "negotiation_timeout") >= 3
    });
    assert_eq!(dropped(http, "evicted"), 0);
    for s in &mut idle[2..] {
        assert!(closed_by_peer(s, WAIT), "closed at the reloaded deadline");
    }
    assert_eq!(dropped(http, "negotiation_timeout"), 3);
    // The first two keep the deadline they were accepted with.
    assert!(get(http, "/healthz").1.starts_with("ok: 2/5 "));
    drop(m);
}

#[test]
fn the_connection_keys_come_from_file_and_environment_and_are_range_checked() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    let config = dir.path().join("c.toml");
    let check = |limits: &str| {
        write_config(&config, &policies, 1, 2, limits);
        Command::new(env!("CARGO_BIN_EXE_autoencrypt-milter"))
            .arg("--config")
            .arg(&config)
            .arg("check-config")
            .env("AUTOENCRYPT_LIMITS__NEGOTIATION_TIMEOUT_MS", "700")
            .output()
            .unwrap()
    };
    let out = check("max_connections = 9\n");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "limits.max_connections = 9 ",
        "limits.negotiation_timeout_ms = 700 ",
        "limits.idle_timeout_secs = 300 ",
    ] {
        assert!(text.contains(line), "{line} missing in\n{text}");
    }
    for (bad, key) in [
        ("max_connections = 0\n", "limits.max_connections"),
        ("idle_timeout_secs = 0\n", "limits.idle_timeout_secs"),
    ] {
        let out = check(bad);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("key `{key}`")), "{err}");
        assert!(err.contains("out of range"), "{err}");
    }
    write_config(&config, &policies, 1, 2, "");
    let out = Command::new(env!("CARGO_BIN_EXE_autoencrypt-milter"))
        .arg("--config")
        .arg(&config)
        .arg("check-config")
        .env("AUTOENCRYPT_LIMITS__NEGOTIATION_TIMEOUT_MS", "99")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("AUTOENCRYPT_LIMITS__NEGOTIATION_TIMEOUT_MS")
            || err.contains("limits.negotiation_timeout_ms"),
        "{err}"
    );
}
