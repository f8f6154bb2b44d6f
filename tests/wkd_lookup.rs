//! Keys from Web Key Directories and a keyserver, through the binary's
//! `policy explain` and `lookup`, against a real nginx (tests/env/web-up)
//! with a test CA, host names in the real DNSSEC test zone, and every
//! hostile server case the web environment serves.

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

use std::path::{Path, PathBuf};
use std::process::Command;

use env::DnsEnv;
use web::WebEnv;

const POLICY: &str = r#"
[[rule]]
name = "strict"
sender = ["strict@local.test"]
methods = ["openpgp"]
mode = "required"

[[rule]]
name = "strict but patient"
sender = ["patient@local.test"]
methods = ["openpgp"]
mode = "required"
on_missing_key = "tempfail"

[[rule]]
name = "web is enough"
sender = ["tls@local.test"]
methods = ["openpgp"]
mode = "required"
min_trust = "tls"

[[rule]]
name = "dns only"
sender = ["dnsonly@local.test"]
methods = ["openpgp"]
sources = ["dane"]

[[rule]]
name = "web failures defer"
sender = ["nervous@local.test"]
methods = ["openpgp"]
tolerate_failures = []

[[rule]]
name = "opportunistic"
methods = ["openpgp"]
"#;

/// A configuration for `dns` and `web` in `dir`, with `extra` appended.
fn config(dir: &Path, dns: &DnsEnv, web: &WebEnv, keyservers: &[String], extra: &str) -> PathBuf {
    let pol = dir.join("policies");
    std::fs::create_dir_all(&pol).unwrap();
    std::fs::write(pol.join("10-web.toml"), POLICY).unwrap();
    let path = dir.join("milter.toml");
    std::fs::write(
        &path,
        format!(
            "local_domains = [\"local.test\"]\npolicy_dir = {pol:?}\n\
             [dns]\nmode = \"validate\"\nresolvers = [\"{}\"]\ntrust_anchor = {:?}\ntimeout_ms = 2000\n\
             [wkd]\nca_file = {:?}\ntimeout_ms = 2500\nconnect_timeout_ms = 1000\n\
             allow_private_addresses = true\n\
             [keyserver]\nurls = {keyservers:?}\n{extra}",
            dns.nsd(),
            dns.trust_anchor_dnskeys(),
            web.ca_file(),
        ),
    )
    .unwrap();
    path
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_autoencrypt-milter"))
}

/// `policy explain --to to --from from`: exit code and stdout.
fn explain(cfg: &Path, to: &str, from: &str) -> (i32, String) {
    let out = bin()
        .arg("--config")
        .arg(cfg)
        .args(["policy", "explain", "--to", to, "--from", from])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (
        out.status.code().unwrap_or(-1),
        format!("{stdout}\n--- stderr ---\n{stderr}"),
    )
}

fn decision(out: &str) -> &str {
    out.lines()
        .find(|l| l.starts_with("decision: "))
        .unwrap_or_else(|| panic!("no decision in:\n{out}"))
}

fn opportunistic(cfg: &Path, to: &str) -> String {
    let (code, out) = explain(cfg, to, "someone@local.test");
    assert_eq!(code, 0, "{out}");
    out
}

#[test]
fn every_web_case_through_policy_explain() {
    let dns = DnsEnv::start();
    let web = WebEnv::start(&dns);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &dns, &web, &[web.keyserver_url()], "");
    let fpr = |id: &str| web.user(id).fpr.clone().unwrap();
    let encrypts_to = |out: &str, fpr: &str, source: &str| {
        assert!(
            decision(out).starts_with("decision: encrypt with openpgp to 1 key(s)"),
            "{out}"
        );
        assert!(out.contains(fpr), "key {fpr} not named:\n{out}");
        assert!(
            out.contains(&format!("source {source}, vouched for by")),
            "not from {source}:\n{out}"
        );
    };
    let passes = |out: &str| {
        assert!(
            decision(out).starts_with("decision: pass unencrypted"),
            "{out}"
        );
    };

    // Advanced method; the plan names WKD's trust and the tolerated failures.
    let out = opportunistic(&cfg, "alice@wkd.autoencrypt.test");
    encrypts_to(&out, &fpr("alice"), "wkd");
    assert!(out.contains("vouched for by the web PKI (TLS)"), "{out}");
    assert!(
        out.contains(&format!("GET {}  200", web.user("alice").url)),
        "the advanced URL is asked:\n{out}"
    );
    assert!(out.contains("Web Key Directory [tls]"), "{out}");
    assert!(out.contains("failures tolerated: wkd, keyserver"), "{out}");
    assert!(
        !out.contains("keyserver: found"),
        "WKD decided first:\n{out}"
    );

    // Direct method, only because openpgpkey.direct… does not exist.
    let out = opportunistic(&cfg, "bob@direct.autoencrypt.test");
    encrypts_to(&out, &fpr("bob"), "wkd");
    assert!(
        out.contains("no such host openpgpkey.direct.autoencrypt.test"),
        "{out}"
    );
    assert!(
        out.contains("GET https://direct.autoencrypt.test/.well-known/openpgpkey/hu/"),
        "{out}"
    );

    // Two keys in one file: only the one with multi's user ID.
    let out = opportunistic(&cfg, "multi@wkd.autoencrypt.test");
    encrypts_to(&out, &fpr("multi"), "wkd");
    assert!(
        !out.contains(&fpr("other")) || out.contains("for other addresses"),
        "{out}"
    );
    assert!(
        out.contains("1 key(s) for multi@wkd.autoencrypt.test, 1 for other addresses"),
        "{out}"
    );

    // The local part's case: hashed lower-cased, matched loosely.
    let out = opportunistic(&cfg, "Upper.Case@wkd.autoencrypt.test");
    encrypts_to(&out, &fpr("upper"), "wkd");

    // An https redirect is followed.
    let out = opportunistic(&cfg, "moved@wkd.autoencrypt.test");
    encrypts_to(&out, &fpr("moved"), "wkd");

    // An unsigned zone passes the question on to WKD.
    let out = opportunistic(&cfg, "y@unsigned.autoencrypt.test");
    encrypts_to(&out, &fpr("y"), "wkd");
    assert!(
        out.contains("openpgp: DNS (validate mode): insecure"),
        "{out}"
    );

    // Keyserver only.
    let out = opportunistic(&cfg, "ks@nowkd.autoencrypt.test");
    encrypts_to(&out, &fpr("ks"), "keyserver");
    assert!(
        out.contains(
            "GET https://keys.autoencrypt.test/vks/v1/by-email/ks%40nowkd.autoencrypt.test  200"
        ),
        "{out}"
    );

    // A DNSSEC key beside a different WKD key: the DNSSEC one, and WKD
    // is not even asked.
    let dns_fpr = dns.user("pgp").pgp_fpr.clone().unwrap();
    assert_ne!(dns_fpr, fpr("pgpwkd"));
    let out = opportunistic(&cfg, "pgp@autoencrypt.test");
    encrypts_to(&out, &dns_fpr, "dane");
    assert!(!out.contains(&fpr("pgpwkd")), "{out}");
    assert!(!out.contains("Web Key Directory: "), "{out}");

    // No usable key: pass, each with its reason.
    for (id, why) in [
        ("nouid", "refused"),
        ("expired", "expired"),
        ("missing", "openpgp: Web Key Directory: not found"),
        (
            "ksmissing",
            "keyserver https://keys.autoencrypt.test: not found",
        ),
        ("refused", "refused"),
    ] {
        let out = opportunistic(&cfg, &web.user(id).address);
        passes(&out);
        assert!(out.contains(why), "{id}: no {why:?} in:\n{out}");
        assert!(
            !out.contains("tolerated by the rule"),
            "{id}: not a failure:\n{out}"
        );
    }

    // Failures: tolerated by the opportunistic default (the mail passes,
    // with the failure named), never "no key published" silently.
    for (id, why) in [
        ("error", "HTTP 500"),
        ("slow", "timed out"),
        ("html", "not an OpenPGP key"),
        ("huge", "exceeds wkd.max_response_bytes"),
        ("redirect", "redirects to"),
        ("badtls", "certificate not trusted"),
        ("hang", "within 1000 ms (wkd.connect_timeout_ms)"),
    ] {
        let out = opportunistic(&cfg, &web.user(id).address);
        passes(&out);
        assert!(out.contains("wkd failed: "), "{id}:\n{out}");
        assert!(out.contains(why), "{id}: no {why:?} in:\n{out}");
        assert!(out.contains("tolerated by the rule"), "{id}:\n{out}");
        // The keyserver still had its say.
        assert!(
            out.contains("keyserver https://keys.autoencrypt.test:"),
            "{id}:\n{out}"
        );
    }
    // The redirect to http:// is refused, not followed (port 80 serves a key).
    let out = opportunistic(&cfg, &web.user("redirect").address);
    assert!(out.contains("only https is allowed"), "{out}");

    // A rule that tolerates nothing defers on a web failure.
    let (code, out) = explain(&cfg, &web.user("error").address, "nervous@local.test");
    assert_eq!(code, 0, "{out}");
    assert!(
        decision(&out).starts_with("decision: tempfail: 451 4.7.1"),
        "{out}"
    );

    // Required rules: by default a WKD key is below min_trust; WKD is
    // not asked, and the rule rejects.
    let (code, out) = explain(&cfg, "alice@wkd.autoencrypt.test", "strict@local.test");
    assert_eq!(code, 0, "{out}");
    assert!(
        decision(&out).starts_with("decision: reject: 550 5.7.1"),
        "{out}"
    );
    assert!(
        out.contains("Web Key Directory [tls] (below min_trust)"),
        "{out}"
    );
    // The same with on_missing_key = "tempfail": deferred, not rejected.
    let (_, out) = explain(&cfg, "alice@wkd.autoencrypt.test", "patient@local.test");
    assert!(
        decision(&out).starts_with("decision: tempfail: 450 4.7.1"),
        "{out}"
    );
    // min_trust = "tls": the WKD key is used; a WKD failure defers.
    let (_, out) = explain(&cfg, "alice@wkd.autoencrypt.test", "tls@local.test");
    encrypts_to(&out, &fpr("alice"), "wkd");
    let (_, out) = explain(&cfg, &web.user("slow").address, "tls@local.test");
    assert!(
        decision(&out).starts_with("decision: tempfail: 451 4.7.1"),
        "{out}"
    );
    // sources = ["dane"]: WKD is not asked at all.
    let (_, out) = explain(&cfg, "alice@wkd.autoencrypt.test", "dnsonly@local.test");
    passes(&out);
    assert!(
        out.contains("Web Key Directory [tls] (not in the rule's sources)"),
        "{out}"
    );
}

/// `lookup`: every published source on its own, with what it was asked.
fn lookup(cfg: &Path, addr: &str) -> (i32, String) {
    let out = bin()
        .arg("--config")
        .arg(cfg)
        .arg("lookup")
        .arg(addr)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn lookup_prints_each_sources_answer() {
    let dns = DnsEnv::start();
    let web = WebEnv::start(&dns);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &dns, &web, &[web.keyserver_url()], "");
    // alice@ is in WKD and on the keyserver: both are shown, each asked
    // on its own (the milter would stop at WKD).
    let (code, out) = lookup(&cfg, "alice@wkd.autoencrypt.test");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("openpgp  DNS (validate mode): not found"),
        "{out}"
    );
    assert!(out.contains("openpgp  Web Key Directory: found"), "{out}");
    assert!(
        out.contains("openpgp  keyserver https://keys.autoencrypt.test: found"),
        "{out}"
    );
    assert!(
        out.contains(&format!("GET {}  200", web.user("alice").url)),
        "{out}"
    );
    let fpr = web.user("alice").fpr.clone().unwrap();
    assert!(
        out.contains(&format!("usable: wkd {}", web.user("alice").url)),
        "{out}"
    );
    assert!(out.contains(&format!("[{fpr}]")), "{out}");
    assert!(
        !out.contains("smime    Web Key Directory"),
        "WKD has no S/MIME: {out}"
    );
    // Nothing anywhere: 1. Nothing, and WKD failed: 2.
    let (code, out) = lookup(&cfg, "missing@wkd.autoencrypt.test");
    assert_eq!(code, 1, "{out}");
    let (code, out) = lookup(&cfg, "error@wkd.autoencrypt.test");
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("failed: https://openpgpkey.wkd.autoencrypt.test/"),
        "{out}"
    );
    assert!(out.contains("HTTP 500"), "{out}");
}

/// In `dns.mode = "trust-ad"` the web hosts are resolved through the
/// trusted resolver (unbound) as the records are.
#[test]
fn web_hosts_resolve_in_trust_ad_mode_too() {
    let dns = DnsEnv::start();
    let web = WebEnv::start(&dns);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &dns, &web, &[], "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("mode = \"validate\"", "mode = \"trust-ad\"")
        .replace(&dns.nsd().to_string(), &dns.resolver().to_string());
    std::fs::write(&cfg, text).unwrap();
    let out = opportunistic(&cfg, "alice@wkd.autoencrypt.test");
    assert!(out.contains("DNS (trust-ad mode)"), "{out}");
    assert!(
        decision(&out).starts_with("decision: encrypt with openpgp to 1 key(s)"),
        "{out}"
    );
    assert!(
        out.contains("source wkd, vouched for by the web PKI (TLS)"),
        "{out}"
    );
    let out = opportunistic(&cfg, "bob@direct.autoencrypt.test");
    assert!(
        out.contains("no such host openpgpkey.direct.autoencrypt.test"),
        "{out}"
    );
    assert!(
        decision(&out).starts_with("decision: encrypt with openpgp to 1 key(s)"),
        "{out}"
    );
}

#[test]
fn keyservers_are_asked_in_order_and_off_unless_configured() {
    let dns = DnsEnv::start();
    let web = WebEnv::start(&dns);
    let dir = tempfile::tempdir().unwrap();
    // The first keyserver fails (500); the second has the key.
    let both = [web.failing_keyserver_url(), web.keyserver_url()];
    let cfg = config(dir.path(), &dns, &web, &both, "");
    let out = opportunistic(&cfg, "ks@nowkd.autoencrypt.test");
    assert!(
        decision(&out).starts_with("decision: encrypt with openpgp to 1 key(s)"),
        "{out}"
    );
    // check-config: POLICY's "web failures defer" says tolerate_failures
    // = [] (nothing to warn of); a rule naming a configured source it
    // does not ask is warned of.
    let check = |cfg: &Path| {
        let out = bin()
            .arg("--config")
            .arg(cfg)
            .arg("check-config")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(!check(&cfg).contains("tolerate_failures"));
    let idle = dir.path().join("policies/05-idle.toml");
    std::fs::write(
        &idle,
        "[[rule]]\nname = \"idle\"\nrecipient = \"*@idle.example\"\nsources = [\"dane\"]\n\
         tolerate_failures = [\"wkd\"]\n",
    )
    .unwrap();
    let warn = check(&cfg);
    assert!(
        warn.contains("rule \"idle\": tolerate_failures names wkd, which the rule does not ask"),
        "{warn}"
    );
    std::fs::remove_file(&idle).unwrap();
    assert!(
        out.contains("keys2.autoencrypt.test/vks/v1/by-email/ks%40nowkd.autoencrypt.test  failed"),
        "{out}"
    );
    // Nobody has it and one failed: a failure (tolerated here), not "no key".
    let out = opportunistic(&cfg, "ksmissing@nowkd.autoencrypt.test");
    assert!(out.contains("keyserver failed: "), "{out}");
    // No urls: no keyserver source at all; WKD off: none either.
    let cfg = dir.path().join("plain.toml");
    std::fs::write(
        &cfg,
        format!(
            "policy_dir = {:?}\n[dns]\nresolvers = [\"{}\"]\ntrust_anchor = {:?}\n[wkd]\nenabled = false\n",
            dir.path().join("policies"),
            dns.nsd(),
            dns.trust_anchor_dnskeys()
        ),
    )
    .unwrap();
    let out = opportunistic(&cfg, "ks@nowkd.autoencrypt.test");
    assert!(!out.contains("keyserver"), "{out}");
    assert!(!out.contains("Web Key Directory"), "{out}");
    let check = bin()
        .arg("--config")
        .arg(&cfg)
        .arg("check-config")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(text.contains("wkd.enabled = false"), "{text}");
    assert!(
        text.contains("   keys: dane [dnssec]; accepts trust learned"),
        "{text}"
    );
}

/// By default the web sources connect to public addresses only: a
/// recipient domain whose hosts resolve to loopback (all of the test
/// zone's) is not connected to — a failure, tolerated by the default.
#[test]
fn non_public_addresses_are_not_connected_to_by_default() {
    let dns = DnsEnv::start();
    let web = WebEnv::start(&dns);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &dns, &web, &[web.keyserver_url()], "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("allow_private_addresses = true\n", "");
    std::fs::write(&cfg, text).unwrap();
    let before = web.access_log().lines().count();
    let out = opportunistic(&cfg, "alice@wkd.autoencrypt.test");
    assert!(
        decision(&out).starts_with("decision: pass unencrypted"),
        "{out}"
    );
    assert!(
        out.contains("openpgpkey.wkd.autoencrypt.test has only non-public addresses (127."),
        "{out}"
    );
    assert!(out.contains("wkd.allow_private_addresses is off"), "{out}");
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(web.access_log().lines().count(), before, "nginx was asked");
}

#[test]
fn bad_web_settings_are_configuration_errors() {
    let dir = tempfile::tempdir().unwrap();
    let pol = dir.path().join("p");
    std::fs::create_dir(&pol).unwrap();
    for (extra, key) in [
        ("[wkd]\ntimeout_ms = 0\n", "wkd.timeout_ms"),
        ("[wkd]\nmax_response_bytes = 10\n", "wkd.max_response_bytes"),
        ("[wkd]\nmax_redirects = 11\n", "wkd.max_redirects"),
        (
            "[keyserver]\nurls = [\"http://keys.openpgp.org\"]\n",
            "keyserver.urls",
        ),
        (
            "[keyserver]\nurls = [\"https://user@keys.example\"]\n",
            "keyserver.urls",
        ),
        (
            "[keyserver]\nurls = [\"https://keys.example/?q=1\"]\n",
            "keyserver.urls",
        ),
        ("[wkd]\nca_fiel = \"x\"\n", "ca_fiel"),
    ] {
        let cfg = dir.path().join("c.toml");
        std::fs::write(&cfg, format!("policy_dir = {pol:?}\n{extra}")).unwrap();
        let out = bin()
            .arg("--config")
            .arg(&cfg)
            .arg("check-config")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{extra}: {err}");
        assert!(err.contains(key), "{extra}: {err}");
    }
    // A CA file that is not one: the key sources cannot be set up.
    std::fs::write(dir.path().join("ca.pem"), "not a certificate\n").unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!("policy_dir = {pol:?}\n[dns]\nresolvers = [\"127.0.0.1:9\"]\n[wkd]\nca_file = \"ca.pem\"\n"),
    )
    .unwrap();
    for args in [
        &["policy", "explain", "--to", "a@example.org"][..],
        &["check-config"][..],
    ] {
        let out = bin().arg("--config").arg(&cfg).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("ca.pem: wkd.ca_file"), "{args:?}: {err}");
    }
}

/// What `wkd build` writes, served as it is, is what the WKD source finds.
#[test]
fn wkd_build_output_is_found_by_lookup() {
    let dns = DnsEnv::start();
    let web = WebEnv::start(&dns);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &dns, &web, &[], "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("[\"local.test\"]", "[\"built.autoencrypt.test\"]");
    std::fs::write(&cfg, text).unwrap();
    let built = web.user("built");
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    std::fs::copy(
        built.public.as_ref().unwrap(),
        keys.join(format!("{}.pgp", built.address)),
    )
    .unwrap();
    // Before: nothing is served.
    let (code, out) = lookup(&cfg, &built.address);
    assert_eq!(code, 1, "{out}");
    let o = bin()
        .arg("--config")
        .arg(&cfg)
        .args(["wkd", "build", "--key-dir"])
        .arg(&keys)
        .arg("--out")
        .arg(web.built_dir())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (code, out) = lookup(&cfg, &built.address);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("openpgp  Web Key Directory: found"), "{out}");
    assert!(
        out.contains("GET https://openpgpkey.built.autoencrypt.test/.well-known/openpgpkey/built.autoencrypt.test/hu/"),
        "{out}"
    );
    assert!(out.contains(built.fpr.as_ref().unwrap().as_str()), "{out}");
}
