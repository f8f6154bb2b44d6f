//! The `ldap` key source against a real OpenLDAP `slapd` (tests/env/
//! ldap-up): every way to reach and bind to it (plain on loopback with a
//! simple bind, ldapi with SASL EXTERNAL, StartTLS and LDAPS with the
//! test CA), what each test user's entry gives through the key service
//! (found and validated, refused with a reason, not found), and each
//! failure (down, hanging, refused bind, wrong CA, ACLs) — never "no key".
//! `lookup`'s report is checked through the binary.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

#[path = "env/ldap.rs"]
mod ldap;

use std::path::Path;
use std::sync::Arc;

use autoencrypt_milter::backend::{Recipient, RejectReason};
use autoencrypt_milter::config::{Config, LdapConfig};
use autoencrypt_milter::keys::{KeyChoice, KeyService, SourceKind};
use autoencrypt_milter::policy::KeyOutcome;
use autoencrypt_milter::{Address, Method, Registry};
use ldap::LdapEnv;

/// A configuration with `dirs` as its only key sources besides DNS
/// (which no lookup here asks).
fn config(dirs: Vec<LdapConfig>) -> Config {
    let mut c = Config::default();
    c.wkd.enabled = false;
    c.dns.resolvers = vec!["127.0.0.1:9".parse().unwrap()];
    c.ldap = dirs;
    c
}

/// The plain instance with the milter's simple bind.
fn plain(env: &LdapEnv) -> LdapConfig {
    LdapConfig {
        url: env.ldap_url().to_owned(),
        domains: vec![env.domain().to_owned(), env.local_domain().to_owned()],
        base: env.people_base().to_owned(),
        bind_dn: env.bind_dn().to_owned(),
        bind_password_file: Some(env.password_file()),
        timeout_ms: 2_000,
        connect_timeout_ms: 1_000,
        ..LdapConfig::default()
    }
}

fn service(dirs: Vec<LdapConfig>) -> KeyService {
    KeyService::from_config(&config(dirs), Arc::new(Registry::new()), None).unwrap()
}

fn only_ldap() -> KeyChoice {
    KeyChoice {
        sources: Some(vec![SourceKind::Ldap]),
        ..KeyChoice::any()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn resolve(
    rt: &tokio::runtime::Runtime,
    keys: &KeyService,
    addr: &str,
    method: Method,
) -> KeyOutcome<Recipient> {
    let a = Address::parse(addr).unwrap();
    rt.block_on(keys.resolve(&a, method, &only_ldap())).outcome
}

/// Upper-case SHA-256 fingerprints of the usable keys, sorted; panics
/// on an outcome without keys.
fn usable(o: &KeyOutcome<Recipient>) -> Vec<String> {
    match o {
        KeyOutcome::Found { usable, .. } => {
            let mut f: Vec<String> = usable.iter().map(|r| r.fingerprint.clone()).collect();
            f.sort();
            f
        }
        other => panic!("no keys: {other:?}"),
    }
}

fn rejected(o: &KeyOutcome<Recipient>) -> Vec<RejectReason> {
    match o {
        KeyOutcome::Found { rejected, .. } => rejected.iter().map(|r| r.reason.clone()).collect(),
        other => panic!("no keys: {other:?}"),
    }
}

fn fprs(list: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| s.to_ascii_uppercase()).collect();
    v.sort();
    v
}

fn failed(o: &KeyOutcome<Recipient>) -> String {
    match o {
        KeyOutcome::Failed(why) => why.to_string(),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn each_user_gets_what_the_directory_holds() {
    let env = LdapEnv::start();
    let rt = runtime();
    let keys = service(vec![plain(&env)]);
    let u = |id: &str| env.user(id);
    let smime = |a: &str| resolve(&rt, &keys, a, Method::Smime);
    let pgp = |a: &str| resolve(&rt, &keys, a, Method::OpenPgp);

    // One certificate; two (both used: each decrypts alone); an expired
    // one beside a valid one (only the valid one); only an expired one.
    for id in ["one", "two", "expired", "pkcs7", "both", "local"] {
        let o = smime(&u(id).address);
        assert!(matches!(o, KeyOutcome::Found { .. }), "{id}: {o:?}");
        assert_eq!(usable(&o), fprs(&u(id).valid_cert_sha256()), "{id}");
    }
    assert_eq!(usable(&smime(&u("two").address)).len(), 2);
    let exp = smime(&u("expired").address);
    assert!(
        matches!(rejected(&exp)[..], [RejectReason::Expired(_)]),
        "{exp:?}"
    );
    let only = smime(&u("onlyexpired").address);
    assert!(usable(&only).is_empty());
    assert!(matches!(rejected(&only)[..], [RejectReason::Expired(_)]));

    // OpenPGP keys, binary and armored; none for an S/MIME-only user.
    for id in ["pgp", "pgparmored", "both"] {
        let o = pgp(&u(id).address);
        assert_eq!(usable(&o), [u(id).openpgp_fpr.clone().unwrap()], "{id}");
    }
    assert!(matches!(pgp(&u("one").address), KeyOutcome::NotFound));

    // No key attribute, no entry: denials.
    assert!(matches!(smime(&u("nokey").address), KeyOutcome::NotFound));
    assert!(matches!(
        smime("nobody@ldap.autoencrypt.test"),
        KeyOutcome::NotFound
    ));

    // The alias of the Active Directory pattern: found by proxyAddresses,
    // encrypted to the entry's certificate, which names the primary
    // address only.
    // The default filter (mail=…) does not look there.
    assert!(matches!(
        smime("alias@ldap.autoencrypt.test"),
        KeyOutcome::NotFound
    ));
    let ad = service(vec![LdapConfig {
        filter: "(|(mail={address})(proxyAddresses=smtp:{address}))".to_owned(),
        address_attributes: vec!["mail".to_owned(), "proxyAddresses".to_owned()],
        ..plain(&env)
    }]);
    let alias = resolve(&rt, &ad, "alias@ldap.autoencrypt.test", Method::Smime);
    assert_eq!(usable(&alias), fprs(&u("primary").valid_cert_sha256()));
    if let KeyOutcome::Found { usable, .. } = &alias {
        assert_eq!(usable[0].address.to_string(), "alias@ldap.autoencrypt.test");
    }
    // A certificate naming an address the entry does not list: refused.
    let wrong = smime(&u("wrongaddr").address);
    assert!(usable(&wrong).is_empty());
    assert!(matches!(
        rejected(&wrong)[..],
        [RejectReason::AddressMismatch(_)]
    ));

    // Two entries with one address: each one's certificate.
    let dup = smime("dup@ldap.autoencrypt.test");
    let mut both: Vec<&str> = u("dup1").valid_cert_sha256();
    both.extend(u("dup2").valid_cert_sha256());
    assert_eq!(usable(&dup), fprs(&both));

    // The directory compares mail without case; the certificate names the
    // address as the entry spells it.
    let upper = smime("mixed.case@ldap.autoencrypt.test");
    assert_eq!(usable(&upper), fprs(&u("upper").valid_cert_sha256()));
}

#[test]
fn a_hostile_address_does_not_widen_the_search() {
    let env = LdapEnv::start();
    let rt = runtime();
    let keys = service(vec![plain(&env)]);
    for hostile in [
        "\"a*)(uid=*\"@ldap.autoencrypt.test",
        "*@ldap.autoencrypt.test",
        "\"*\"@ldap.autoencrypt.test",
        "\"one@ldap.autoencrypt.test)(mail=*\"@ldap.autoencrypt.test",
    ] {
        let o = resolve(&rt, &keys, hostile, Method::Smime);
        assert!(matches!(o, KeyOutcome::NotFound), "{hostile}: {o:?}");
    }
    // slapd saw one equality assertion with the characters escaped.
    let log = env.plain_log();
    assert!(
        log.contains("(mail=\"a\\2A\\29\\28uid=\\2A\"@ldap.autoencrypt.test)"),
        "{log}"
    );
}

#[test]
fn every_transport_and_bind_reaches_the_directory() {
    let env = LdapEnv::start();
    let rt = runtime();
    let one = env.user("one").address.clone();
    let want = fprs(&env.user("one").valid_cert_sha256());
    let ldapi = LdapConfig {
        url: env.ldapi_url().to_owned(),
        sasl_external: true,
        bind_dn: String::new(),
        bind_password_file: None,
        ..plain(&env)
    };
    let starttls = LdapConfig {
        url: env.starttls_url().to_owned(),
        starttls: true,
        ca_file: Some(env.ca_file()),
        ..plain(&env)
    };
    let ldaps = LdapConfig {
        url: env.ldaps_url().to_owned(),
        ca_file: Some(env.ca_file()),
        ..plain(&env)
    };
    for (name, dir) in [
        ("ldapi", ldapi),
        ("starttls", starttls.clone()),
        ("ldaps", ldaps.clone()),
    ] {
        let keys = service(vec![dir]);
        let o = resolve(&rt, &keys, &one, Method::Smime);
        assert_eq!(usable(&o), want, "{name}");
    }
    // A certificate from another CA: a failure, never "no key".
    for (name, dir) in [("starttls", starttls), ("ldaps", ldaps)] {
        let keys = service(vec![LdapConfig {
            ca_file: Some(env.wrong_ca_file()),
            ..dir
        }]);
        let why = failed(&resolve(&rt, &keys, &one, Method::Smime));
        assert!(why.contains("127.0.0.1"), "{name}: {why}");
    }
    // The TLS instance's StartTLS port without StartTLS: it wants TLS.
    let keys = service(vec![LdapConfig {
        url: env.starttls_url().to_owned(),
        ..plain(&env)
    }]);
    let why = failed(&resolve(&rt, &keys, &one, Method::Smime));
    assert!(why.contains("confidentialityRequired (13)"), "{why}");
}

#[test]
fn failures_are_failures_and_say_why() {
    let env = LdapEnv::start();
    let rt = runtime();
    let one = env.user("one").address.clone();
    // A wrong password: refused, and the password is not in the reason.
    let wrong = service(vec![LdapConfig {
        bind_password_file: Some(env.wrong_password_file()),
        ..plain(&env)
    }]);
    let why = failed(&resolve(&rt, &wrong, &one, Method::Smime));
    assert!(why.contains("invalidCredentials (49)"), "{why}");
    let bad_pw = std::fs::read_to_string(env.wrong_password_file()).unwrap();
    assert!(!why.contains(bad_pw.trim()), "{why}");
    assert!(!why.contains(&env.password()), "{why}");

    // Anonymous: the ACLs hide even the base, which is noSuchObject — a
    // failure (the directory is misconfigured for us), not "no key".
    let anonymous = service(vec![LdapConfig {
        bind_dn: String::new(),
        bind_password_file: None,
        ..plain(&env)
    }]);
    let why = failed(&resolve(&rt, &anonymous, &one, Method::Smime));
    assert!(why.contains("noSuchObject (32)"), "{why}");

    // A server that never answers, and a port nobody listens on.
    for (url, expect) in [
        (env.hang_url(), "timed out"),
        (env.refused_url(), "127.0.0.1"),
    ] {
        let keys = service(vec![LdapConfig {
            url: url.to_owned(),
            timeout_ms: 700,
            connect_timeout_ms: 500,
            ..plain(&env)
        }]);
        let t = std::time::Instant::now();
        let why = failed(&resolve(&rt, &keys, &one, Method::Smime));
        assert!(why.contains(expect), "{url}: {why}");
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
    }

    // The directory goes down under a running source, and comes back.
    let keys = service(vec![LdapConfig {
        cache_ttl_secs: 0,
        negative_ttl_secs: 0,
        ..plain(&env)
    }]);
    assert_eq!(usable(&resolve(&rt, &keys, &one, Method::Smime)).len(), 1);
    env.stop_plain();
    // A failure (the failure is cached 15 s: each address once).
    let why = failed(&resolve(
        &rt,
        &keys,
        &env.user("two").address,
        Method::Smime,
    ));
    assert!(why.contains("127.0.0.1"), "{why}");
    env.start_plain();
    // Left alone for DOWN_FOR (10 s) after the failed connection, then
    // reconnected without a reload.
    std::thread::sleep(std::time::Duration::from_millis(10_500));
    let o = resolve(&rt, &keys, &env.user("both").address, Method::Smime);
    assert_eq!(usable(&o).len(), 1, "{o:?}");
}

#[test]
fn trust_orders_directories_and_min_trust_filters_them() {
    let env = LdapEnv::start();
    let rt = runtime();
    let mirror = LdapConfig {
        trust: "tls".parse().unwrap(),
        ..plain(&env)
    };
    let keys = service(vec![mirror.clone()]);
    let a = Address::parse(&env.user("one").address).unwrap();
    // A rule accepting dnssec and above does not ask a tls directory.
    let strict = KeyChoice {
        min_trust: "dnssec".parse().unwrap(),
        ..only_ldap()
    };
    assert!(keys.plan(&strict).is_empty());
    let o = rt.block_on(keys.resolve(&a, Method::Smime, &only_ldap()));
    match &o.outcome {
        KeyOutcome::Found { usable, .. } => {
            assert_eq!(usable[0].provenance.trust.to_string(), "tls");
        }
        other => panic!("{other:?}"),
    }
    // An operator directory is asked before the tls one, whatever the
    // configured order.
    let both = service(vec![mirror, plain(&env)]);
    let trusts: Vec<String> = both
        .plan(&only_ldap())
        .iter()
        .map(|s| s.trust().to_string())
        .collect();
    assert_eq!(trusts, ["operator", "tls"]);
}

/// `autoencrypt-milter lookup` with `dirs` configured, its exit status and
/// output.
fn lookup_cli(dir: &Path, dirs: &[LdapConfig], addr: &str) -> (i32, String) {
    cli(dir, dirs, &["lookup", addr])
}

/// The binary with `dirs` configured and `args`: exit status, output.
fn cli(dir: &Path, dirs: &[LdapConfig], args: &[&str]) -> (i32, String) {
    let pol = dir.join("policies");
    std::fs::create_dir_all(&pol).unwrap();
    let mut text = format!("policy_dir = {:?}\n", pol.display().to_string());
    text.push_str(
        "[wkd]\nenabled = false\n[dns]\nresolvers = [\"127.0.0.1:9\"]\ntimeout_ms = 300\n",
    );
    for d in dirs {
        text.push_str(&format!(
            "[[ldap]]\nurl = {:?}\ndomains = {:?}\nbase = {:?}\nbind_dn = {:?}\nbind_password_file = {:?}\n",
            d.url,
            d.domains,
            d.base,
            d.bind_dn,
            d.bind_password_file.as_ref().unwrap().display().to_string()
        ));
    }
    let cfg = dir.join("c.toml");
    std::fs::write(&cfg, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_autoencrypt-milter"))
        .arg("--config")
        .arg(&cfg)
        .args(args)
        .output()
        .unwrap();
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), s)
}

#[test]
fn lookup_reports_what_the_directory_returned_and_why_each_key_was_used_or_not() {
    let env = LdapEnv::start();
    let tmp = tempfile::tempdir().unwrap();
    let dirs = [plain(&env)];
    let (code, out) = lookup_cli(tmp.path(), &dirs, &env.user("expired").address);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("filter (mail=expired@ldap.autoencrypt.test)"),
        "{out}"
    );
    assert!(
        out.contains("entry uid=expired,ou=people,dc=autoencrypt,dc=test: addresses [expired@ldap.autoencrypt.test]"),
        "{out}"
    );
    assert!(
        out.contains("2 smime key(s) in userCertificate;binary"),
        "{out}"
    );
    assert!(out.contains("usable: ldap://"), "{out}");
    assert!(
        out.contains("not usable: ldap://") && out.contains("expired (notAfter"),
        "{out}"
    );

    // No key here (the DNS this test has is unreachable: exit 2, not 1).
    let (code, out) = lookup_cli(tmp.path(), &dirs, &env.user("nokey").address);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("0 smime key(s)"), "{out}");

    let wrong = [LdapConfig {
        bind_password_file: Some(env.wrong_password_file()),
        ..plain(&env)
    }];
    // policy explain: the same trace, and what the rule makes of it.
    let (code, out) = cli(
        tmp.path(),
        &dirs,
        &["policy", "explain", "--to", &env.user("expired").address],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("entry uid=expired,ou=people,dc=autoencrypt,dc=test"),
        "{out}"
    );
    assert!(
        out.contains("vouched for by the operator's LDAP directory"),
        "{out}"
    );
    assert!(
        out.contains("refused: ldap://") && out.contains("expired (notAfter"),
        "{out}"
    );

    let (code, out) = lookup_cli(tmp.path(), &wrong, &env.user("one").address);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("invalidCredentials (49)"), "{out}");
    let bad_pw = std::fs::read_to_string(env.wrong_password_file()).unwrap();
    assert!(!out.contains(bad_pw.trim()), "{out}");
}

#[test]
fn check_config_shows_each_directory_and_warns_of_a_world_readable_password() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let pw = tmp.path().join("ldap.pw");
    std::fs::write(&pw, "s3cret-for-check-config\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let dir = LdapConfig {
        url: "ldap://127.0.0.1:1".to_owned(),
        domains: vec!["example.org".to_owned()],
        base: "dc=example,dc=org".to_owned(),
        bind_dn: "cn=milter,dc=example,dc=org".to_owned(),
        bind_password_file: Some(pw.clone()),
        ..LdapConfig::default()
    };
    let (code, out) = cli(tmp.path(), std::slice::from_ref(&dir), &["check-config"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("ldap[0] = ldap://127.0.0.1:1 for [example.org], trust operator, simple bind as \"cn=milter,dc=example,dc=org\""),
        "{out}"
    );
    assert!(!out.contains("warning:"), "{out}");
    assert!(!out.contains("s3cret"), "{out}");
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out) = cli(tmp.path(), &[dir], &["check-config"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("warning: ldap[0].bind_password_file")
            && out.contains("readable by every user"),
        "{out}"
    );
}
