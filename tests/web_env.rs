//! Smoke test of the web test environment (tests/env/web-up): every WKD and
//! keyserver case answers as tests/env/README.md says, fetched with `curl`
//! against the test CA at the address the DNS environment's resolver gives
//! for the host (`dig +dnssec`: AD in the signed zone, none in the unsigned
//! one), and the keys served are the users' keys (`gpg --show-keys`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

#[path = "env/mod.rs"]
mod env;
#[path = "env/web.rs"]
mod web;

use std::io::ErrorKind;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use env::DnsEnv;
use web::{WEB_USER_IDS, WebEnv};

/// What `dig +dnssec … A` said about a name.
struct Dig {
    status: String,
    ad: bool,
    a: Vec<String>,
    text: String,
}

fn dig(dns: &DnsEnv, name: &str) -> Dig {
    let r = dns.resolver();
    let out = Command::new("dig")
        .arg(format!("@{}", r.ip()))
        .args(["-p", &r.port().to_string()])
        .args(["+dnssec", "+time=5", "+tries=1", name, "A"])
        .output()
        .expect("dig (bind9-dnsutils) must be installed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or_else(|| panic!("no status in dig output:\n{text}"))
        .to_string();
    let ad = text
        .lines()
        .find(|l| l.starts_with(";; flags:"))
        .and_then(|l| l.split(';').nth(2))
        .is_some_and(|f| f.split_whitespace().any(|x| x == "ad"));
    let a = text
        .lines()
        .filter(|l| !l.starts_with(';'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 5 && f[3] == "A").then(|| f[4].to_string())
        })
        .collect();
    Dig {
        status,
        ad,
        a,
        text,
    }
}

/// The one address of a host in the signed zone, checked to be AD.
fn secure_a(dns: &DnsEnv, name: &str) -> String {
    let d = dig(dns, name);
    assert_eq!(d.status, "NOERROR", "{name}:\n{}", d.text);
    assert!(d.ad, "{name}: no AD flag:\n{}", d.text);
    assert_eq!(d.a.len(), 1, "{name}:\n{}", d.text);
    d.a[0].clone()
}

fn secure_nxdomain(dns: &DnsEnv, name: &str) {
    let d = dig(dns, name);
    assert_eq!(d.status, "NXDOMAIN", "{name}:\n{}", d.text);
    assert!(d.ad, "{name}: NXDOMAIN without AD:\n{}", d.text);
}

/// One `curl` run.
#[derive(Debug)]
struct Fetch {
    /// curl's exit code: 0, 7 (refused), 28 (timeout), 60 (certificate).
    exit: i32,
    status: u16,
    headers: String,
    body: Vec<u8>,
    /// Seconds until the TLS handshake was done (0: never).
    appconnect: f64,
    total: f64,
}

impl Fetch {
    /// The last value of a response header (lower-cased name).
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .next_back()
    }
}

/// Fetches `url` with the test CA, sending the host to `ip` (port 443 and
/// 80), never following redirects unless `extra` says `-L`.
fn curl(web: &WebEnv, url: &str, ip: &str, extra: &[&str]) -> Fetch {
    let host = url
        .split("://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap();
    let d = tempfile::tempdir().unwrap();
    let (body, headers) = (d.path().join("body"), d.path().join("headers"));
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(web.ca_file())
        .args(["--resolve", &format!("{host}:443:{ip}")])
        .args(["--resolve", &format!("{host}:80:{ip}")])
        .arg("-o")
        .arg(&body)
        .arg("-D")
        .arg(&headers)
        .args(["-w", "%{http_code} %{time_appconnect} %{time_total}"])
        .args(extra)
        .arg(url)
        .output()
        .expect("curl must be installed (tests/env/install-deps)");
    let w = String::from_utf8_lossy(&out.stdout).into_owned();
    let f: Vec<&str> = w.split_whitespace().collect();
    assert_eq!(f.len(), 3, "curl -w printed {w:?}");
    Fetch {
        exit: out.status.code().unwrap_or(-1),
        status: f[0].parse().unwrap(),
        appconnect: f[1].parse().unwrap(),
        total: f[2].parse().unwrap(),
        headers: std::fs::read_to_string(&headers).unwrap_or_default(),
        body: std::fs::read(&body).unwrap_or_default(),
    }
}

fn ok(f: &Fetch, what: &str) {
    assert_eq!(f.exit, 0, "{what}: {f:?}");
    assert_eq!(f.status, 200, "{what}: {}", f.headers);
}

/// `gpg --show-keys --with-colons` of `data`: (primary fingerprints,
/// user IDs, validity field of each `pub` line).
fn show_keys(data: &[u8]) -> (Vec<String>, Vec<String>, Vec<String>) {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("k");
    std::fs::write(&file, data).unwrap();
    let out = Command::new("gpg")
        .arg("--homedir")
        .arg(d.path())
        .args(["--batch", "--with-colons", "--show-keys"])
        .arg(&file)
        .output()
        .expect("gpg must be installed");
    assert!(
        out.status.success(),
        "gpg --show-keys: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (mut fprs, mut uids, mut validity) = (Vec::new(), Vec::new(), Vec::new());
    let mut after_pub = false;
    for l in text.lines() {
        let f: Vec<&str> = l.split(':').collect();
        match f[0] {
            "pub" => {
                validity.push(f[1].to_string());
                after_pub = true;
            }
            "fpr" if after_pub => {
                fprs.push(f[9].to_string());
                after_pub = false;
            }
            "sub" => after_pub = false,
            "uid" => uids.push(f[9].to_string()),
            _ => {}
        }
    }
    (fprs, uids, validity)
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

fn served_key(web: &WebEnv, id: &str) -> Vec<u8> {
    read(web.user(id).public.as_deref().unwrap())
}

/// The process is gone (or a zombie waiting for PID 1).
fn gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit(") ")
            .next()
            .is_some_and(|r| r.starts_with('Z') || r.starts_with('X')),
    }
}

#[test]
fn every_case_answers_as_documented() {
    let t0 = Instant::now();
    let dns = DnsEnv::start();
    let t_dns = t0.elapsed();
    let web = WebEnv::start(&dns);
    let t_web = t0.elapsed() - t_dns;
    let user = |id: &str| web.user(id);
    for id in WEB_USER_IDS {
        assert_eq!(user(id).id, *id);
    }

    // The DNS side: the IPs are DnsEnv's too, and the A records point there.
    let web_ip = web.var("WEB_IP").to_string();
    let hang_ip = web.var("HANG_IP").to_string();
    let refused_ip = web.var("REFUSED_IP").to_string();
    assert_eq!(dns.var("WEB_IP"), web_ip);
    assert_eq!(dns.var("HANG_IP"), hang_ip);
    assert_eq!(dns.var("REFUSED_IP"), refused_ip);
    let mut ips = vec![web_ip.clone(), hang_ip.clone(), refused_ip.clone()];
    ips.dedup();
    assert_eq!(ips.len(), 3);
    assert!(
        ips.iter()
            .all(|ip| ip.starts_with("127.") && ip != "127.0.0.1")
    );
    for host in [
        "openpgpkey.wkd.autoencrypt.test",
        "direct.autoencrypt.test",
        "openpgpkey.badtls.autoencrypt.test",
        "openpgpkey.autoencrypt.test",
        "keys.autoencrypt.test",
        "keys2.autoencrypt.test",
        "openpgpkey.built.autoencrypt.test",
        "built.autoencrypt.test",
    ] {
        assert_eq!(secure_a(&dns, host), web_ip, "{host}");
    }
    assert_eq!(secure_a(&dns, "openpgpkey.hang.autoencrypt.test"), hang_ip);
    assert_eq!(
        secure_a(&dns, "openpgpkey.refused.autoencrypt.test"),
        refused_ip
    );
    // The direct method's trigger: no openpgpkey host, provably.
    secure_nxdomain(&dns, "openpgpkey.direct.autoencrypt.test");
    secure_nxdomain(&dns, "openpgpkey.nowkd.autoencrypt.test");
    secure_nxdomain(&dns, "nowkd.autoencrypt.test");
    // wkd.autoencrypt.test itself has no address (an empty non-terminal).
    let d = dig(&dns, "wkd.autoencrypt.test");
    assert!(
        d.status == "NOERROR" && d.ad && d.a.is_empty(),
        "{}",
        d.text
    );
    // The unsigned child: an answer, insecure.
    let d = dig(&dns, "openpgpkey.unsigned.autoencrypt.test");
    assert_eq!(d.status, "NOERROR", "{}", d.text);
    assert!(!d.ad, "the unsigned zone must not validate:\n{}", d.text);
    assert_eq!(d.a, std::slice::from_ref(&web_ip));

    // The two that never answer run alongside the rest.
    let (hang, slow) = thread::scope(|s| {
        let hang = s.spawn(|| {
            tcp_accepted_silent(&hang_ip);
            curl(&web, &user("hang").url, &hang_ip, &["--max-time", "3"])
        });
        let slow = s.spawn(|| curl(&web, &user("slow").url, &web_ip, &["--max-time", "3"]));

        // alice: advanced, binary, cacheable.
        let f = curl(&web, &user("alice").url, &web_ip, &[]);
        ok(&f, "alice");
        assert_eq!(
            f.header("content-type").as_deref(),
            Some("application/octet-stream")
        );
        assert_eq!(f.header("cache-control").as_deref(), Some("max-age=600"));
        assert_eq!(f.body, served_key(&web, "alice"));
        let (fprs, uids, _) = show_keys(&f.body);
        assert_eq!(fprs, [user("alice").fpr.clone().unwrap()]);
        assert_eq!(uids, ["alice <alice@wkd.autoencrypt.test>"]);
        assert!(
            user("alice").url.starts_with(
                "https://openpgpkey.wkd.autoencrypt.test/.well-known/openpgpkey/wkd.autoencrypt.test/hu/"
            ) && user("alice").url.ends_with("?l=alice")
        );
        let policy = curl(
            &web,
            "https://openpgpkey.wkd.autoencrypt.test/.well-known/openpgpkey/wkd.autoencrypt.test/policy",
            &web_ip,
            &[],
        );
        ok(&policy, "advanced policy");
        assert!(policy.body.is_empty());

        // bob: direct only.
        let bob = user("bob");
        assert!(
            bob.url
                .starts_with("https://direct.autoencrypt.test/.well-known/openpgpkey/hu/")
        );
        let f = curl(&web, &bob.url, &web_ip, &[]);
        ok(&f, "bob");
        assert_eq!(f.body, served_key(&web, "bob"));
        let policy = curl(
            &web,
            "https://direct.autoencrypt.test/.well-known/openpgpkey/policy",
            &web_ip,
            &[],
        );
        ok(&policy, "direct policy");

        // multi: two certificates in one file.
        let f = curl(&web, &user("multi").url, &web_ip, &[]);
        ok(&f, "multi");
        let (fprs, uids, _) = show_keys(&f.body);
        assert_eq!(
            fprs,
            [
                user("multi").fpr.clone().unwrap(),
                user("other").fpr.clone().unwrap()
            ]
        );
        assert_eq!(
            uids,
            [
                "multi <multi@wkd.autoencrypt.test>",
                "other <other@wkd.autoencrypt.test>"
            ]
        );

        // nouid: a key without the address.
        let f = curl(&web, &user("nouid").url, &web_ip, &[]);
        ok(&f, "nouid");
        let (fprs, uids, _) = show_keys(&f.body);
        assert_eq!(fprs, [user("nouid").fpr.clone().unwrap()]);
        assert_eq!(uids, ["someone <someone@else.example>"]);

        // expired: gpg says so.
        let f = curl(&web, &user("expired").url, &web_ip, &[]);
        ok(&f, "expired");
        let (fprs, _, validity) = show_keys(&f.body);
        assert_eq!(fprs, [user("expired").fpr.clone().unwrap()]);
        assert_eq!(validity, ["e"], "expired@'s key must be expired");

        // missing, error.
        let f = curl(&web, &user("missing").url, &web_ip, &[]);
        assert_eq!((f.exit, f.status), (0, 404), "missing: {f:?}");
        let f = curl(&web, &user("error").url, &web_ip, &[]);
        assert_eq!((f.exit, f.status), (0, 500), "error: {f:?}");

        // html: 200 and a web page.
        let f = curl(&web, &user("html").url, &web_ip, &[]);
        ok(&f, "html");
        assert_eq!(f.header("content-type").as_deref(), Some("text/html"));
        assert!(f.body.starts_with(b"<!DOCTYPE html>"));

        // huge: 3 MiB.
        let f = curl(&web, &user("huge").url, &web_ip, &[]);
        ok(&f, "huge");
        assert_eq!(f.body.len(), 3 * 1024 * 1024);
        assert_eq!(f.header("content-length").as_deref(), Some("3145728"));

        // redirect: 302 to http://, where redirect@'s key really is (a
        // client that follows it would find a key).
        let f = curl(&web, &user("redirect").url, &web_ip, &[]);
        assert_eq!((f.exit, f.status), (0, 302), "redirect: {f:?}");
        let location = f.header("location").unwrap();
        assert_eq!(
            location,
            user("redirect").url.replacen("https:", "http:", 1)
        );
        let f = curl(&web, &location, &web_ip, &[]);
        ok(&f, "redirect's http target");
        assert_eq!(f.body, served_key(&web, "redirect"));

        // moved: 301 to https on the same host, which serves the key.
        let f = curl(&web, &user("moved").url, &web_ip, &[]);
        assert_eq!((f.exit, f.status), (0, 301), "moved: {f:?}");
        let location = f.header("location").unwrap();
        assert!(
            location.starts_with("https://openpgpkey.wkd.autoencrypt.test/moved/"),
            "{location}"
        );
        let f = curl(&web, &user("moved").url, &web_ip, &["-L"]);
        ok(&f, "moved, followed");
        assert_eq!(f.body, served_key(&web, "moved"));

        // upper: at the hash of the lower-cased local part.
        let up = user("upper");
        assert_eq!(up.address, "Upper.Case@wkd.autoencrypt.test");
        assert_eq!(
            web.var("WEB_USER_UPPER_HASH"),
            wkd_hash_by_sha1sum("upper.case")
        );
        let f = curl(&web, &up.url, &web_ip, &[]);
        ok(&f, "upper");
        let (_, uids, _) = show_keys(&f.body);
        assert_eq!(uids, ["Upper.Case <Upper.Case@wkd.autoencrypt.test>"]);

        // pgpwkd: pgp@autoencrypt.test's other key, beside its OPENPGPKEY.
        let pw = user("pgpwkd");
        assert_eq!(pw.address, "pgp@autoencrypt.test");
        assert_ne!(pw.fpr, dns.user("pgp").pgp_fpr);
        let f = curl(&web, &pw.url, &web_ip, &[]);
        ok(&f, "pgpwkd");
        assert_eq!(show_keys(&f.body).0, [pw.fpr.clone().unwrap()]);
        let both = pw.url.replace(
            web.var("WEB_USER_PGPWKD_HASH"),
            &wkd_hash_by_sha1sum("both"),
        );
        let f = curl(&web, &both, &web_ip, &[]);
        assert_eq!(
            f.status, 404,
            "anything else on openpgpkey.autoencrypt.test"
        );

        // y: the unsigned zone's user, its DNS key over WKD.
        let f = curl(&web, &user("y").url, &web_ip, &[]);
        ok(&f, "y");
        assert_eq!(f.body, read(dns.user("y").pgp_public.as_deref().unwrap()));

        // The keyserver: %40 and @, armored, application/pgp-keys.
        let ks = user("ks");
        assert_eq!(
            ks.url,
            "https://keys.autoencrypt.test/vks/v1/by-email/ks%40nowkd.autoencrypt.test"
        );
        for url in [ks.url.clone(), ks.url.replace("%40", "@")] {
            let f = curl(&web, &url, &web_ip, &[]);
            ok(&f, &url);
            assert_eq!(
                f.header("content-type").as_deref(),
                Some("application/pgp-keys")
            );
            assert!(f.body.starts_with(b"-----BEGIN PGP PUBLIC KEY BLOCK-----"));
            assert_eq!(show_keys(&f.body).0, [ks.fpr.clone().unwrap()]);
        }
        let f = curl(
            &web,
            &format!(
                "{}/vks/v1/by-email/alice%40wkd.autoencrypt.test",
                web.keyserver_url()
            ),
            &web_ip,
            &[],
        );
        ok(&f, "alice on the keyserver");
        assert_eq!(show_keys(&f.body).0, [user("alice").fpr.clone().unwrap()]);
        let f = curl(&web, &user("ksmissing").url, &web_ip, &[]);
        assert_eq!((f.exit, f.status), (0, 404), "ksmissing: {f:?}");
        let f = curl(
            &web,
            &ks.url
                .replace(&web.keyserver_url(), &web.failing_keyserver_url()),
            &web_ip,
            &[],
        );
        assert_eq!((f.exit, f.status), (0, 500), "keys2: {f:?}");

        // badtls: the certificate names wrongname.invalid; ignoring that
        // would give badtls@'s key.
        let bad = user("badtls");
        let f = curl(&web, &bad.url, &web_ip, &[]);
        assert_eq!(f.exit, 60, "badtls must fail verification: {f:?}");
        let f = curl(&web, &bad.url, &web_ip, &["-k"]);
        ok(&f, "badtls with -k");
        assert_eq!(f.body, served_key(&web, "badtls"));

        // refused: at once.
        let f = curl(&web, &user("refused").url, &refused_ip, &[]);
        assert_eq!(f.exit, 7, "refused: {f:?}");
        assert!(f.total < 1.0, "{f:?}");

        (hang.join().unwrap(), slow.join().unwrap())
    });
    never_answer(&hang, &slow);

    // built: nothing until `wkd build` writes the directory, then both
    // layouts are served.
    let built = user("built");
    let f = curl(&web, &built.url, &web_ip, &[]);
    assert_eq!(f.status, 404, "built before wkd build: {f:?}");
    let d = tempfile::tempdir().unwrap();
    let keys = d.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    std::fs::copy(
        built.public.as_deref().unwrap(),
        keys.join("built@built.autoencrypt.test.pgp"),
    )
    .unwrap();
    let cfg = d.path().join("c.toml");
    std::fs::write(&cfg, "local_domains = [\"built.autoencrypt.test\"]\n").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_autoencrypt-milter"))
        .arg("--config")
        .arg(&cfg)
        .args(["wkd", "build", "--key-dir"])
        .arg(&keys)
        .arg("--out")
        .arg(web.built_dir())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let hash = web.var("WEB_USER_BUILT_HASH");
    for url in [
        built.url.clone(),
        format!("https://built.autoencrypt.test/.well-known/openpgpkey/hu/{hash}?l=built"),
        "https://openpgpkey.built.autoencrypt.test/.well-known/openpgpkey/built.autoencrypt.test/policy".into(),
        "https://built.autoencrypt.test/.well-known/openpgpkey/policy".into(),
    ] {
        let f = curl(&web, &url, &web_ip, &[]);
        ok(&f, &url);
        if !url.ends_with("policy") {
            assert_eq!(show_keys(&f.body).0, [built.fpr.clone().unwrap()], "{url}");
        }
    }

    // The secret keys are all in one GNUPGHOME.
    let o = Command::new("gpg")
        .arg("--homedir")
        .arg(web.gnupghome())
        .args(["--batch", "--with-colons", "--list-secret-keys"])
        .output()
        .unwrap();
    let secrets = String::from_utf8_lossy(&o.stdout);
    for u in web.users() {
        assert_eq!(u.gnupghome, web.gnupghome());
        if let Some(fpr) = &u.fpr {
            assert!(secrets.contains(fpr.as_str()), "{}'s secret key", u.id);
            assert!(u.public.as_ref().unwrap().is_file());
        }
    }

    // Every request is in the access log.
    let log = web.access_log();
    let alice_hash = web.var("WEB_USER_ALICE_HASH");
    assert_eq!(
        log.lines()
            .filter(|l| l.contains(alice_hash) && l.contains("https://openpgpkey.wkd"))
            .count(),
        1,
        "{log}"
    );
    assert!(
        log.contains("http://openpgpkey.wkd.autoencrypt.test:80 "),
        "{log}"
    );

    let t_cases = t0.elapsed() - t_dns - t_web;
    let (nginx, hang) = (
        web.var("NGINX_PID").to_string(),
        web.var("HANG_PID").to_string(),
    );
    let mut web = web;
    let t1 = Instant::now();
    web.stop();
    let t_down = t1.elapsed();
    assert!(
        gone(&nginx) && gone(&hang),
        "web-down left nginx or hang.py running"
    );
    eprintln!(
        "timings: dns-up {t_dns:?}, web-up {t_web:?}, cases {t_cases:?}, web-down {t_down:?}"
    );
}

/// `ip:443` accepts a TCP connection and sends nothing back in a second.
fn tcp_accepted_silent(ip: &str) {
    use std::io::{Read as _, Write as _};
    let addr = format!("{ip}:443").parse().unwrap();
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("{addr} must accept: {e}"));
    c.write_all(b"\x16\x03\x01\x00\x05hello").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut buf = [0u8; 16];
    match c.read(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("{addr} must stay silent, got {other:?}"),
    }
}

/// Both never-answering cases: hang's TLS handshake never completes (curl
/// counts it as connecting: time_connect stays 0 too), slow's does and no
/// HTTP answer follows; both time out.
fn never_answer(hang: &Fetch, slow: &Fetch) {
    assert_eq!(hang.exit, 28, "hang must time out: {hang:?}");
    assert_eq!(hang.appconnect, 0.0, "hang: no TLS handshake: {hang:?}");
    assert_eq!(slow.exit, 28, "slow must time out: {slow:?}");
    assert!(slow.appconnect > 0.0, "slow: TLS must succeed: {slow:?}");
    assert_eq!(slow.status, 0, "slow: no HTTP answer: {slow:?}");
}

/// The WKD hash computed with the `sha1sum` tool and z-base-32 by hand,
/// independently of web-up's.
fn wkd_hash_by_sha1sum(local: &str) -> String {
    use std::io::Write as _;
    let mut child = Command::new("sha1sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(local.to_ascii_lowercase().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let hex = String::from_utf8_lossy(&out.stdout)[..40].to_string();
    let bits: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
        .collect();
    const ALPHABET: &[u8] = b"ybndrfg8ejkmcpqxot1uwisza345h769";
    bits.chunks(5)
        .map(|c| char::from(ALPHABET[c.iter().fold(0, |a, b| (a << 1) | usize::from(*b))]))
        .collect()
}

#[test]
fn the_drafts_hash() {
    assert_eq!(
        wkd_hash_by_sha1sum("Joe.Doe"),
        "iy9q119eutrkn8s1mk4r39qejnbu3n5q"
    );
}

#[test]
fn two_environments_run_at_once() {
    let (dns1, dns2) = thread::scope(|s| {
        let a = s.spawn(DnsEnv::start);
        let b = s.spawn(DnsEnv::start);
        (a.join().unwrap(), b.join().unwrap())
    });
    let (mut web1, web2) = thread::scope(|s| {
        let a = s.spawn(|| WebEnv::start(&dns1));
        let b = s.spawn(|| WebEnv::start(&dns2));
        (a.join().unwrap(), b.join().unwrap())
    });
    for key in ["WEB_IP", "HANG_IP", "REFUSED_IP"] {
        assert_ne!(web1.var(key), web2.var(key), "{key}");
    }
    let ip1 = web1.var("WEB_IP").to_string();
    let ip2 = web2.var("WEB_IP").to_string();
    assert_eq!(secure_a(&dns1, "keys.autoencrypt.test"), ip1);
    assert_eq!(secure_a(&dns2, "keys.autoencrypt.test"), ip2);
    for (web, ip) in [(&web1, &ip1), (&web2, &ip2)] {
        let f = curl(web, &web.user("alice").url, ip, &[]);
        ok(&f, "alice");
        assert_eq!(f.body, served_key(web, "alice"));
    }
    // One stops, the other goes on.
    web1.stop();
    let f = curl(&web1, &web1.user("alice").url, &ip1, &[]);
    assert_eq!(f.exit, 7, "stopped nginx must refuse: {f:?}");
    let f = curl(&web2, &web2.user("alice").url, &ip2, &[]);
    ok(&f, "the other environment, still running");
    assert_eq!(web2.access_log().lines().count(), 2);
}
