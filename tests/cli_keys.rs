//! `autoencrypt-milter keys …`, run as the real binary against a SQLite
//! store (and, for the fleet case, a real PostgreSQL: two processes at
//! once on a new database).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed step is a failed test"
)]

mod common;
#[path = "env/pg.rs"]
mod pg;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use autoencrypt_milter::Method;
use autoencrypt_milter::store::{Observation, Store, StoreSettings};
use common::{CertSpec, Gpg, KeyKind, PgpKind, SmimeId};
use openssl::hash::MessageDigest;
use tempfile::TempDir;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_autoencrypt-milter"));
    // The binary reads AUTOENCRYPT_* and STATE_DIRECTORY from its
    // environment: start clean.
    for (k, _) in std::env::vars() {
        if k.starts_with("AUTOENCRYPT_") || k == "STATE_DIRECTORY" {
            c.env_remove(k);
        }
    }
    c
}

fn output(o: Output) -> (i32, String, String) {
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A configuration with `[store]` lines, in its own directory.
struct Setup {
    dir: TempDir,
    config: PathBuf,
}

impl Setup {
    fn new(store_lines: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("c.toml");
        std::fs::write(&config, format!("[store]\n{store_lines}\n")).unwrap();
        Setup { dir, config }
    }

    /// A SQLite store at `DIR/state/keys.sqlite`.
    fn sqlite() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("keys.sqlite");
        let config = dir.path().join("c.toml");
        std::fs::write(
            &config,
            format!("[store]\nurl = \"sqlite://{}\"\n", path.display()),
        )
        .unwrap();
        Setup { dir, config }
    }

    fn store_path(&self) -> PathBuf {
        self.dir.path().join("state").join("keys.sqlite")
    }

    /// The same store, through the library.
    fn store(&self) -> Store {
        Store::open(&StoreSettings {
            url: format!("sqlite://{}", self.store_path().display()),
            password_file: None,
            ca_file: None,
            connect_timeout: Duration::from_secs(3),
            timeout: Duration::from_secs(3),
        })
        .unwrap()
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = bin();
        c.arg("--config").arg(&self.config).arg("keys").args(args);
        c
    }

    fn keys(&self, args: &[&str]) -> (i32, String, String) {
        output(self.cmd(args).output().unwrap())
    }
}

/// `keys ARGS` must exit `code`; its stdout.
fn expect(s: &Setup, args: &[&str], code: i32) -> String {
    let (c, out, err) = s.keys(args);
    assert_eq!(
        c, code,
        "keys {args:?}: exit {c}\nstdout: {out}\nstderr: {err}"
    );
    out
}

fn fp(c: char) -> String {
    c.to_string().repeat(40)
}

#[test]
fn pin_unpin_and_show() {
    let s = Setup::sqlite();
    let written = "ab:cd ".repeat(10);
    let canonical = "ABCD".repeat(10);
    assert_eq!(
        expect(&s, &["pin", "Alice@Example.ORG", &written], 0),
        format!("pinned alice@example.org {canonical}\n")
    );
    let (c, out, err) = s.keys(&["pin", "Alice@example.org", &canonical]);
    assert_eq!((c, out.as_str()), (1, ""), "{err}");
    assert!(err.contains("already pinned"), "{err}");
    assert!(
        expect(
            &s,
            &["pin", "Alice@example.org", &canonical, "--note", "by phone"],
            0
        )
        .contains("note replaced")
    );
    expect(&s, &["pin", "Alice@example.org", &fp('E')], 0);
    let show = expect(&s, &["show", "Alice@example.org"], 0);
    let lines: Vec<&str> = show.lines().collect();
    assert_eq!(lines.len(), 2, "{show}");
    assert!(
        lines[0].starts_with(&format!("pin alice@example.org {canonical} created=20"))
            && lines[0].ends_with(" note=\"by phone\""),
        "{show}"
    );
    assert!(lines[1].ends_with("note=\"\""), "{show}");
    // The local part in any case is one address, as the milter looks
    // it up.
    assert_eq!(expect(&s, &["show", "ALICE@example.org"], 0), show);

    let (c, _, err) = s.keys(&["pin", "Alice@example.org", "0123"]);
    assert_eq!(c, 1);
    assert!(err.contains("is not a fingerprint"), "{err}");
    let (c, _, err) = s.keys(&["pin", "not an address", &canonical]);
    assert_eq!(c, 1, "{err}");

    assert_eq!(
        expect(&s, &["unpin", "Alice@example.org", &written], 0),
        "unpinned alice@example.org pins=1\n"
    );
    expect(&s, &["unpin", "Alice@example.org", &canonical], 1);
    expect(&s, &["unpin", "Alice@example.org"], 0);
    expect(&s, &["unpin", "Alice@example.org"], 1);
    expect(&s, &["show", "Alice@example.org"], 1);
}

fn sha256_upper(cert: &openssl::x509::X509) -> String {
    cert.digest(MessageDigest::sha256())
        .unwrap()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}

#[test]
fn import_list_show_forget() {
    let s = Setup::sqlite();
    let work = s.dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let addr = "carol@example.org";
    let smime = SmimeId::generate(&work, "carol", &CertSpec::good(addr, KeyKind::Ec));
    let smime_fp = sha256_upper(&smime.cert);
    let der = smime.cert.to_der().unwrap();
    let der_path = work.join("carol.der");
    std::fs::write(&der_path, &der).unwrap();
    let gpg = Gpg::new();
    let pgp_fp = gpg.generate(addr, PgpKind::Cv25519, "0", None);
    let armored = work.join("carol.asc");
    std::fs::write(&armored, gpg.export(&pgp_fp, true)).unwrap();

    let pem = smime.cert_path.to_str().unwrap();
    assert_eq!(
        expect(&s, &["import", pem, "--address", addr], 0),
        format!("imported {addr} smime {smime_fp} new\n")
    );
    // The same certificate as DER: the same key, refreshed.
    assert_eq!(
        expect(
            &s,
            &["import", der_path.to_str().unwrap(), "--address", addr],
            0
        ),
        format!("imported {addr} smime {smime_fp} refreshed\n")
    );
    assert_eq!(
        expect(
            &s,
            &[
                "import",
                armored.to_str().unwrap(),
                "--address",
                addr,
                "--method",
                "openpgp"
            ],
            0
        ),
        format!("imported {addr} openpgp {pgp_fp} new\n")
    );
    // Stored in its one encoding (DER, binary OpenPGP).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let learned = rt.block_on(s.store().list_learned(Some(addr))).unwrap();
    assert_eq!(learned.len(), 2);
    assert_eq!(learned[1].key, der);
    let binary =
        autoencrypt_milter::backend::identify(Method::OpenPgp, &gpg.export(&pgp_fp, false))
            .unwrap()
            .canonical;
    assert_eq!(learned[0].key, binary);

    // Keys that would not be used are not imported.
    let (c, _, err) = s.keys(&["import", pem, "--address", "dave@example.org"]);
    assert_eq!(c, 1);
    assert!(
        err.contains("not imported") && err.contains("not issued for"),
        "{err}"
    );
    let junk = work.join("junk");
    std::fs::write(&junk, "hello").unwrap();
    let (c, _, err) = s.keys(&["import", junk.to_str().unwrap(), "--address", addr]);
    assert_eq!(c, 1);
    assert!(err.contains("is not a certificate or OpenPGP key"), "{err}");
    let (c, _, err) = s.keys(&["import", pem, "--address", addr, "--method", "openpgp"]);
    assert_eq!(c, 1);
    assert!(err.contains("is not an OpenPGP key"), "{err}");

    let list = expect(&s, &["list"], 0);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 2, "{list}");
    assert!(
        lines[0].starts_with(&format!(
            "{addr} openpgp {pgp_fp} how=import prefer-encrypt=- effective=20"
        )),
        "{list}"
    );
    assert!(
        lines[1].starts_with(&format!("{addr} smime {smime_fp} how=import")),
        "{list}"
    );
    // No key material on the terminal.
    let b64 = openssl::base64::encode_block(&der[..48]);
    assert!(!list.contains(&b64[..40]), "{list}");
    assert_eq!(expect(&s, &["list", addr], 0), list);
    expect(&s, &["list", "nobody@example.org"], 1);
    let show = expect(&s, &["show", addr], 0);
    assert_eq!(
        show,
        lines
            .iter()
            .map(|l| format!("learned {l}\n"))
            .collect::<String>()
    );

    assert_eq!(
        expect(&s, &["forget", addr, "--method", "smime"], 0),
        format!("forgot {addr} rows=1\n")
    );
    assert_eq!(expect(&s, &["list"], 0).lines().count(), 1);
    expect(&s, &["forget", addr], 0);
    expect(&s, &["forget", addr], 1);
    expect(&s, &["list"], 1);
}

#[test]
fn changes_and_approve() {
    let s = Setup::sqlite();
    let a = "erin@example.org";
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // What the milter's key service records: DANE returned A, then B
    // under a rule with on_key_change = "review".
    let store = s.store();
    let first = rt
        .block_on(store.observe(
            "dane",
            a,
            Method::Smime,
            &[(fp('A'), b"a".to_vec())],
            true,
            1_700_000_000,
        ))
        .unwrap();
    assert_eq!(first, Observation::First);
    rt.block_on(store.observe(
        "dane",
        a,
        Method::Smime,
        &[(fp('B'), b"b".to_vec())],
        true,
        1_700_000_060,
    ))
    .unwrap();
    drop(store);

    let b = fp('B');
    let a_fp = fp('A');
    assert_eq!(
        expect(&s, &["changes"], 0),
        format!("{a} smime dane new={b} old={a_fp} detected=2023-11-14T22:14:20Z pending\n")
    );
    let show = expect(&s, &["show", a], 0);
    assert_eq!(
        show,
        format!(
            "history {a} smime dane {a_fp} first-seen=2023-11-14T22:13:20Z \
             last-seen=2023-11-14T22:13:20Z approved\n\
             history {a} smime dane {b} first-seen=2023-11-14T22:14:20Z \
             last-seen=2023-11-14T22:14:20Z pending\n\
             change {a} smime dane new={b} old={a_fp} detected=2023-11-14T22:14:20Z pending\n"
        )
    );
    // Another fingerprint: nothing to approve.
    expect(&s, &["approve", a, &fp('C')], 1);
    let lower = b.to_lowercase();
    assert_eq!(
        expect(&s, &["approve", a, &lower], 0),
        format!("approved {a} {b} changes=1\n")
    );
    expect(&s, &["approve", a, &b], 1);
    let (c, out, err) = s.keys(&["changes"]);
    assert_eq!((c, out.as_str()), (1, ""));
    assert!(err.contains("no key changes waiting for review"), "{err}");
    let all = expect(&s, &["changes", "--all"], 0);
    assert!(
        all.trim_end().ends_with("Z") && all.contains(" approved=20"),
        "{all}"
    );
    assert!(expect(&s, &["show", a], 0).contains(&format!(
        "{b} first-seen=2023-11-14T22:14:20Z last-seen=2023-11-14T22:14:20Z approved"
    )));
}

#[test]
fn reading_creates_no_store_and_failures_exit_2() {
    let s = Setup::sqlite();
    for args in [
        &["list"][..],
        &["show", "a@example.org"],
        &["changes", "--all"],
    ] {
        let (c, _, err) = s.keys(args);
        assert_eq!(c, 1, "{args:?}: {err}");
        assert!(err.contains("no key store at"), "{err}");
    }
    assert!(!s.store_path().exists());
    assert!(!s.store_path().parent().unwrap().exists());

    // A store that cannot be opened: exit 2, the path named.
    let blocker = Setup::sqlite();
    std::fs::write(blocker.dir.path().join("state"), "a file, not a directory").unwrap();
    let (c, _, err) = blocker.keys(&["pin", "a@example.org", &fp('A')]);
    assert_eq!(c, 2, "{err}");
    assert!(err.contains("state"), "{err}");

    // A PostgreSQL server that is not there: exit 2, at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let pg = Setup::new(&format!(
        "url = \"postgres://aem@127.0.0.1:{port}/aem?sslmode=disable\"\nconnect_timeout_ms = 1000"
    ));
    let started = Instant::now();
    let (c, _, err) = pg.keys(&["list"]);
    assert_eq!(c, 2, "{err}");
    assert!(
        err.contains(&format!("postgres 127.0.0.1:{port}/aem")),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    // A configuration error is an input error.
    let bad = Setup::new("url = \"mysql://h/db\"");
    let (c, _, err) = bad.keys(&["list"]);
    assert_eq!(c, 1, "{err}");
    assert!(err.contains("store.url"), "{err}");
}

/// Two hosts' `keys` commands at once on a new PostgreSQL database: both
/// migrate, both pins land; a third process sees them; a wrong password
/// is refused without being shown.
#[test]
fn two_processes_at_once_on_postgresql() {
    let env = pg::PgEnv::start();
    env.create_database("fleet");
    let lines = format!(
        "url = \"{}\"\npassword_file = \"{}\"",
        env.url("fleet"),
        env.password_file().display()
    );
    let s = Setup::new(&lines);
    let (fa, fb) = (fp('A'), fp('B'));
    let spawn = |f: &str| {
        s.cmd(&["pin", "f@example.org", f])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (one, two) = (spawn(&fa), spawn(&fb));
    for child in [one, two] {
        let (c, out, err) = output(child.wait_with_output().unwrap());
        assert_eq!(c, 0, "{out}{err}");
    }
    let show = expect(&s, &["show", "f@example.org"], 0);
    assert_eq!(show.lines().count(), 2, "{show}");
    assert!(show.contains(&fa) && show.contains(&fb), "{show}");
    assert_eq!(
        env.psql("fleet", "SELECT count(*) FROM schema_migrations"),
        "1"
    );

    let wrong = Setup::new(&format!(
        "url = \"{}\"\npassword_file = \"{}\"",
        env.url("fleet"),
        env.wrong_password_file().display()
    ));
    let (c, _, err) = wrong.keys(&["list"]);
    assert_eq!(c, 2, "{err}");
    assert!(err.contains("password authentication failed"), "{err}");
    let pw = std::fs::read_to_string(env.wrong_password_file()).unwrap();
    assert!(!err.contains(pw.trim()), "{err}");
}

/// `lookup` shows the published sources and needs no key store (nor the
/// right to create one); `check-config` sets the store up as `serve` would,
/// so an unusable one is its error.
#[test]
fn lookup_needs_no_store_and_check_config_opens_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "policy_dir = {:?}\n[dns]\nresolvers = [\"127.0.0.1:9\"]\ntimeout_ms = 200\n\
             [wkd]\nenabled = false\n[store]\nurl = \"sqlite:///proc/autoencrypt-none/keys.sqlite\"\n",
            dir.path().join("policies").display()
        ),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    let (code, out, err) = output(
        bin()
            .arg("--config")
            .arg(&config)
            .args(["lookup", "x@example.org"])
            .output()
            .unwrap(),
    );
    assert_ne!(code, 0);
    assert!(
        !format!("{out}{err}").contains("/proc/autoencrypt-none"),
        "lookup touched the store: {out}{err}"
    );
    assert!(out.contains("x@example.org"), "{out}{err}");
    let (code, out, err) = output(
        bin()
            .arg("--config")
            .arg(&config)
            .arg("check-config")
            .output()
            .unwrap(),
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("/proc/autoencrypt-none"), "{err}");
}
