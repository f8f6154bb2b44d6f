//! The site of the harvesting and key-change tests: the DNSSEC test zone,
//! a SQLite key store of the test's own, the operator's key directory, the
//! milter in process behind a real Postfix ([`Mx`]), the `keys` command
//! against the same store, and the independent checks of what arrived
//! (`openssl cms -decrypt`, `gpg --decrypt`, byte for byte).
//!
//! Domains: `local.autoencrypt.test` is the site's own (`local_domains`),
//! `partner.autoencrypt.test` the correspondents'. Both lie inside the
//! signed test zone, so the DNS source answers "no key" with a validated
//! denial for every address the tests make up.

#![allow(dead_code)]

pub mod mail;
pub mod zone;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use autoencrypt_milter::config::{Config, DnsMode};
use tempfile::TempDir;

use crate::common::{Gpg, Scratch, SmimeId, expected_protected_entity, smime_decrypt};
use crate::env::DnsEnv;
use crate::milter::{InProcessMilter, trust_ad_config};
use crate::postfix::{PostfixEnv, header_and_body, lf, strip_delivery_headers};

/// The site's own domain.
pub const LOCAL: &str = "local.autoencrypt.test";
/// The correspondents' domain.
pub const REMOTE: &str = "partner.autoencrypt.test";
/// Longest wait for a delivery or for the harvester.
pub const WAIT: Duration = Duration::from_secs(30);
/// The store's staleness in these tests (`store.refresh_secs`).
pub const REFRESH_SECS: u64 = 1;

/// An address at the correspondents' domain.
pub fn remote(local: &str) -> String {
    format!("{local}@{REMOTE}")
}

/// An address at the site's own domain.
pub fn local(local: &str) -> String {
    format!("{local}@{LOCAL}")
}

/// What stays for the whole test: DNS, scratch space, the store file, the
/// key directory and the `keys` command's configuration.
pub struct Site {
    /// The DNSSEC test environment.
    pub dns: DnsEnv,
    /// Certificates, private keys, intermediate files; `keys` is the
    /// operator's key directory.
    pub scratch: Scratch,
    /// `sqlite:///…/keys.sqlite`.
    pub store_url: String,
    /// The configuration file the `keys` command reads (`[store] url`).
    pub config_file: PathBuf,
    _state: TempDir,
}

impl Site {
    /// Starts DNS and makes the store's directory (the store file is made
    /// by the milter).
    pub fn new() -> Site {
        capture_logs();
        let dns = DnsEnv::start();
        let scratch = Scratch::new();
        let state = crate::common::tempdir("aem-store");
        let store_url = format!("sqlite://{}", state.path().join("keys.sqlite").display());
        let config_file = state.path().join("config.toml");
        std::fs::write(
            &config_file,
            format!("[store]\nurl = \"{store_url}\"\nrefresh_secs = {REFRESH_SECS}\n"),
        )
        .unwrap();
        Site {
            dns,
            scratch,
            store_url,
            config_file,
            _state: state,
        }
    }

    /// The operator's key directory (`keys.directory`).
    pub fn key_dir(&self) -> &Path {
        &self.scratch.keys
    }

    /// What every milter of the site is configured with: its store, DNS
    /// and key directory.
    fn configure(&self, config: &mut Config) {
        config.dns.mode = DnsMode::Validate;
        config.dns.trust_anchor = Some(self.dns.trust_anchor_dnskeys());
        config.wkd.enabled = false;
        config.local_domains = vec![LOCAL.to_owned()];
        config.authserv_id = mail::AUTHSERV_ID.to_owned();
        // Harvesting alone: these tests compare inbound mail with what was
        // sent, and verification would add its Authentication-Results
        // (tests/milter_verify.rs and postfix_signing.rs cover it).
        config.verify.enabled = false;
        config.store.url = self.store_url.clone();
        config.store.refresh_secs = REFRESH_SECS;
        // Every message examined: the tests send several from one sender
        // (the update rule) and count each.
        config.harvest.recheck_secs = 0;
        config.harvest.max_per_second = 100_000;
        // The in-process milter listens on loopback TCP; no other user
        // runs on a test machine.
        config.harvest.allow_inet_socket = true;
        config.keys.directory = Some(self.scratch.keys.clone());
    }

    /// A milter for `policy` (and `tweak`) with this site's store, DNS and
    /// key directory, behind a fresh Postfix.
    pub fn mx(&self, policy: &str, tweak: impl FnOnce(&mut Config)) -> Mx {
        let milter = InProcessMilter::trust_ad_on_thread(self.dns.nsd(), policy, |config| {
            self.configure(config);
            tweak(config);
        });
        let pf = PostfixEnv::start(Some(milter.addr));
        Mx { pf, milter }
    }

    /// [`Site::mx`] whose configuration is also a file, so that
    /// `mx.milter.shared.reload()` reads the same configuration again (as
    /// SIGHUP does).
    pub fn mx_reloadable(&self, policy: &str) -> Mx {
        let (mut config, dir) = trust_ad_config(policy, self.dns.nsd());
        self.configure(&mut config);
        // Not in the policy directory: every *.toml there is a policy file.
        let file = self._state.path().join("milter.toml");
        let text: String = config
            .to_lines()
            .into_iter()
            .map(|(k, v)| format!("{k} = {v}\n"))
            .collect();
        std::fs::write(&file, text).unwrap();
        let milter = InProcessMilter::on_thread_reloading(config, file, Some(dir));
        let pf = PostfixEnv::start(Some(milter.addr));
        Mx { pf, milter }
    }

    /// `autoencrypt-milter --config <site> keys ARGS…`.
    pub fn keys(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_autoencrypt-milter"))
            .arg("--config")
            .arg(&self.config_file)
            .arg("keys")
            .args(args)
            .env_remove("RUST_LOG")
            .output()
            .expect("running autoencrypt-milter keys")
    }

    /// [`Site::keys`], which must succeed; its standard output.
    pub fn keys_ok(&self, args: &[&str]) -> String {
        let out = self.keys(args);
        assert!(
            out.status.success(),
            "keys {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("keys output is UTF-8")
    }

    /// The learned keys in the store now, as `keys list` shows them in
    /// another process: (address, method, fingerprint).
    pub fn learned(&self) -> Vec<(String, String, String)> {
        let out = self.keys(&["list"]);
        let text = String::from_utf8(out.stdout).expect("keys list output is UTF-8");
        assert!(
            out.status.success() || (out.status.code() == Some(1) && text.is_empty()),
            "keys list failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        text.lines()
            .map(|l| {
                let mut w = l.split(' ');
                let mut next = || w.next().unwrap_or_else(|| panic!("keys list: {l:?}"));
                (next().to_owned(), next().to_owned(), next().to_owned())
            })
            .collect()
    }

    /// The fingerprints learned for `address`.
    pub fn learned_for(&self, address: &str) -> Vec<String> {
        self.learned()
            .into_iter()
            .filter(|(a, _, _)| a.eq_ignore_ascii_case(address))
            .map(|(_, _, fp)| fp)
            .collect()
    }
}

/// One milter and the Postfix in front of it. Dropped before the [`Site`].
pub struct Mx {
    /// The Postfix instance (stopped first).
    pub pf: PostfixEnv,
    /// The milter in process.
    pub milter: InProcessMilter,
}

impl Mx {
    /// Sends `msg` from `from` to `to`, which must be accepted, and
    /// returns the copy delivered to `to`.
    pub fn deliver(&self, from: &str, to: &str, msg: &[u8]) -> Vec<u8> {
        let before = self.pf.maildir_count(to);
        let out = self.pf.send(from, &[to], msg);
        assert!(out.accepted(), "{from} → {to}: {out}");
        let mut got = self.pf.expect_mail(to, before + 1, WAIT);
        got.pop().unwrap()
    }

    /// The value of one metric series (`name{labels}` exactly as
    /// rendered); 0 when it is not there.
    pub fn metric(&self, series: &str) -> f64 {
        let text = self.milter.metrics.render();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    }

    /// Waits (bounded) until `series` reaches `at_least`; panics with the
    /// metrics and the log otherwise.
    pub fn wait_metric(&self, series: &str, at_least: f64) {
        let deadline = Instant::now() + WAIT;
        while self.metric(series) < at_least {
            assert!(
                Instant::now() < deadline,
                "{series} did not reach {at_least} within {WAIT:?}\n--- metrics ---\n{}\n--- log ---\n{}",
                self.milter.metrics.render(),
                logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (bounded) until `done` holds for the metrics' value of
    /// `series`; panics with `what` otherwise.
    pub fn wait_metric_until(&self, series: &str, what: &str, done: impl Fn(f64) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done(self.metric(series)) {
            assert!(
                Instant::now() < deadline,
                "{series}: {what} did not happen within {WAIT:?}\n--- metrics ---\n{}",
                self.milter.metrics.render()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `autoencrypt_harvest_messages_total{result="…"}`.
    pub fn harvested(&self, result: &str) -> f64 {
        self.metric(&harvest_series(result))
    }
}

/// The harvest counter's series for `result`.
pub fn harvest_series(result: &str) -> String {
    format!("autoencrypt_harvest_messages_total{{result=\"{result}\"}}")
}

/// The S/MIME entity of a delivered copy, decrypted with `id` by
/// `openssl cms -decrypt`.
pub fn open_smime(scratch: &Scratch, delivered: &[u8], id: &SmimeId) -> Result<Vec<u8>, String> {
    let msg = strip_delivery_headers(delivered);
    let (header, _) = header_and_body(msg);
    let header = String::from_utf8_lossy(header).to_ascii_lowercase();
    assert!(
        header.contains("application/pkcs7-mime"),
        "not S/MIME:\n{}",
        String::from_utf8_lossy(delivered)
    );
    smime_decrypt(scratch, msg, "SMIME", id)
}

/// Asserts that `delivered` is `sent` encrypted to `id`: its decryption
/// is byte for byte the inner entity; `not` cannot open it.
pub fn assert_smime_to(
    scratch: &Scratch,
    delivered: &[u8],
    sent: &[u8],
    id: &SmimeId,
    not: &[&SmimeId],
) {
    let plain = open_smime(scratch, delivered, id)
        .unwrap_or_else(|e| panic!("{}: {e}", id.cert_path.display()));
    crate::common::assert_bytes_eq(&plain, &expected_protected_entity(sent), "S/MIME");
    for other in not {
        assert!(
            open_smime(scratch, delivered, other).is_err(),
            "{} opens a message it must not",
            other.cert_path.display()
        );
    }
}

/// The PGP/MIME entity of a delivered copy, decrypted by `gpg` with the
/// secret keys in `gpg`'s home.
pub fn open_pgp(gpg: &Gpg, delivered: &[u8]) -> Result<Vec<u8>, String> {
    let (header, body) = header_and_body(strip_delivery_headers(delivered));
    assert!(
        String::from_utf8_lossy(header)
            .to_ascii_lowercase()
            .contains("multipart/encrypted"),
        "not PGP/MIME:\n{}",
        String::from_utf8_lossy(delivered)
    );
    let text = String::from_utf8_lossy(body);
    let start = text.find("-----BEGIN PGP MESSAGE-----").expect("armor");
    let end = text.find("-----END PGP MESSAGE-----").expect("armor end") + 25;
    gpg.decrypt(text[start..end].as_bytes())
}

/// Asserts that `delivered` is `sent` as it was (plaintext: nothing
/// encrypted it).
pub fn assert_plain(delivered: &[u8], sent: &[u8], why: &str) {
    assert_eq!(
        lf(strip_delivery_headers(delivered)),
        lf(sent),
        "{why}: expected the message as sent, unencrypted"
    );
}

/// A certificate (and key) for `address`, files named after `label`.
pub fn smime_id(scratch: &Scratch, label: &str, address: &str) -> SmimeId {
    SmimeId::generate(
        &scratch.work,
        label,
        &crate::common::CertSpec::good(address, crate::common::KeyKind::Rsa),
    )
}

/// The upper-case hex fingerprint the milter gives `id`'s certificate.
pub fn smime_fp(id: &SmimeId) -> String {
    autoencrypt_milter::backend::key_fingerprint(
        autoencrypt_milter::Method::Smime,
        &id.cert.to_der().unwrap(),
    )
    .unwrap()
}

// ---------------------------------------------------------------------------
// What the milter logs (one subscriber per test binary).

static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the log capture (once per process).
pub fn capture_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(|| LogWriter)
            .init();
    });
}

/// Everything logged so far, by every test of the binary.
pub fn logs() -> String {
    String::from_utf8_lossy(&LOG.lock().unwrap()).into_owned()
}

/// The log lines containing every one of `needles`.
pub fn log_lines(needles: &[&str]) -> Vec<String> {
    logs()
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .map(str::to_owned)
        .collect()
}

/// Writes `bytes` to `path` so that a reader sees the old file or the new
/// one, never half of one (the operator's `mv` of a new certificate).
pub fn replace_file(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp-new");
    let mut f = std::fs::File::create(&tmp).unwrap();
    f.write_all(bytes).unwrap();
    f.sync_all().unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
