//! `check-config` and `policy explain`, run as the real binary.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed step is a failed test"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{CertSpec, KeyKind, Scratch, SmimeId};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_autoencrypt-milter"));
    // The binary reads AUTOENCRYPT_* from its environment: start clean.
    for (k, _) in std::env::vars() {
        if k.starts_with("AUTOENCRYPT_") {
            c.env_remove(k);
        }
    }
    c
}

fn run(c: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = c.output().unwrap();
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
}

/// Configuration lines for a key directory `keys`, with DNS at a port
/// nobody listens on (asked, it fails).
fn key_dir_lines(keys: &Path) -> String {
    format!(
        "[keys]\ndirectory = {:?}\n[dns]\nresolvers = [\"127.0.0.1:9\"]\ntimeout_ms = 300\n",
        keys.display().to_string()
    )
}

/// A config file using `policy_dir` and extra lines.
fn config(dir: &Path, policy_dir: &Path, extra: &str) -> PathBuf {
    let p = dir.join("c.toml");
    std::fs::write(
        &p,
        format!(
            "policy_dir = {:?}\nlocal_domains = [\"example.org\"]\n{extra}",
            policy_dir.display().to_string()
        ),
    )
    .unwrap();
    p
}

#[test]
fn check_config_accepts_the_shipped_policies() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), &shipped(), "");
    let (code, out, err) = run(bin().arg("check-config").arg("--config").arg(&cfg));
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning"), "{err}");
    assert!(out.contains("socket = \"inet:127.0.0.1:10040\""), "{out}");
    assert!(out.contains("built-in default"), "{out}");
    assert!(
        out.contains(&format!("{}:2", cfg.display())),
        "local_domains origin: {out}"
    );
    // Rules in file order, the built-in default last.
    let pos = |s: &str| {
        out.find(s)
            .unwrap_or_else(|| panic!("{s} missing in {out}"))
    };
    assert!(pos("local users: encrypt at rest") < pos("role accounts"));
    assert!(pos("role accounts") < pos("partner bank"));
    assert!(pos("partner bank") < pos("\"built-in default\""));
    assert!(out.contains("reject (550 5.7.1)"), "{out}");
    assert!(out.contains("configuration OK"), "{out}");
}

#[test]
fn check_config_reports_file_and_line() {
    let d = tempfile::tempdir().unwrap();
    let pol = d.path().join("pol");
    std::fs::create_dir(&pol).unwrap();
    std::fs::write(
        pol.join("10-x.toml"),
        "[[rule]]\nname = \"bad\"\nmode = \"required\"\non_lookup_error = \"pass\"\n",
    )
    .unwrap();
    let cfg = config(d.path(), &pol, "");
    let (code, out, err) = run(bin().arg("check-config").arg("--config").arg(&cfg));
    assert_eq!(code, 1, "{out}");
    assert!(
        err.contains(&format!(
            "{}:4: rule \"bad\": key `on_lookup_error`",
            pol.join("10-x.toml").display()
        )),
        "{err}"
    );

    // An error in the configuration file itself.
    std::fs::write(&cfg, "socket = \"unix:/x\"\n[dns]\ntimeout_ms = \"fast\"\n").unwrap();
    let (code, _, err) = run(bin().arg("check-config").arg("--config").arg(&cfg));
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("{}:3: key `dns.timeout_ms`", cfg.display())),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one-line reason: {err}");

    // A --config that does not exist.
    let (code, _, err) = run(bin()
        .arg("check-config")
        .arg("--config")
        .arg(d.path().join("nope.toml")));
    assert_eq!(code, 1);
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn check_config_warns_on_shadowed_rules_and_allow_insecure() {
    let d = tempfile::tempdir().unwrap();
    let pol = d.path().join("pol");
    std::fs::create_dir(&pol).unwrap();
    std::fs::write(
        pol.join("a.toml"),
        "[[rule]]\nname = \"everything\"\nrecipient = \"*@*\"\n\n[[rule]]\nname = \"partner\"\ndirection = \"outbound\"\nrecipient = \"*@partner.example\"\nmode = \"required\"\n",
    )
    .unwrap();
    let cfg = config(d.path(), &pol, "[dns]\nallow_insecure = true\n");
    let (code, _, err) = run(bin().arg("check-config").arg("--config").arg(&cfg));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!(
            "{}:5: rule \"partner\" can never match",
            pol.join("a.toml").display()
        )),
        "{err}"
    );
    assert!(err.contains("\"everything\""), "{err}");
    assert!(err.contains("dns.allow_insecure = true"), "{err}");

    // The environment can switch it on too, and is named as the origin.
    let cfg = config(d.path(), &shipped(), "");
    let (code, out, err) = run(bin()
        .arg("check-config")
        .arg("--config")
        .arg(&cfg)
        .env("AUTOENCRYPT_DNS__ALLOW_INSECURE", "true"));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("environment variable AUTOENCRYPT_DNS__ALLOW_INSECURE"),
        "{err}"
    );
    assert!(out.contains("dns.allow_insecure = true"), "{out}");
}

#[test]
fn check_config_env_error_names_the_variable() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), &shipped(), "");
    let (code, _, err) = run(bin()
        .arg("check-config")
        .arg("--config")
        .arg(&cfg)
        .env("AUTOENCRYPT_LIMITS__MAX_MESSAGE_BYTES", "big"));
    assert_eq!(code, 1);
    assert!(
        err.contains("AUTOENCRYPT_LIMITS__MAX_MESSAGE_BYTES"),
        "{err}"
    );
}

fn explain(args: &[&str]) -> (i32, String, String) {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), &shipped(), "");
    run(bin()
        .arg("--config")
        .arg(&cfg)
        .arg("policy")
        .arg("explain")
        .args(args))
}

#[test]
fn explain_required_partner_without_lookup() {
    let (code, out, err) = explain(&["--to", "Alice@Partner-Bank.Example", "--no-lookup"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("direction: outbound (from local_domains)"),
        "{out}"
    );
    assert!(
        out.contains("matched rule \"partner bank: S/MIME first, reject without key\""),
        "{out}"
    );
    assert!(out.contains("strict-partners.toml:"), "{out}");
    assert!(out.contains("matches *@partner-bank.example"), "{out}");
    assert!(
        out.contains("skipped rule \"local users: encrypt at rest, OpenPGP first\""),
        "{out}"
    );
    assert!(
        out.contains("if a usable key for every method: encrypt with smime (aes-256-gcm)"),
        "{out}"
    );
    assert!(
        out.contains("if no key for any method: reject: 550 5.7.1 Encryption to <Alice@partner-bank.example> is required"),
        "{out}"
    );
    assert!(
        out.contains("if every lookup times out: tempfail: 451 4.7.1"),
        "{out}"
    );
    assert!(!out.contains(": pass"), "required never passes: {out}");
}

#[test]
fn explain_inbound_skip_list_and_default() {
    let (code, out, _) = explain(&["--to", "bob@example.org", "--no-lookup"]);
    assert_eq!(code, 0);
    assert!(out.contains("direction: inbound"), "{out}");
    assert!(out.contains("local users: encrypt at rest"), "{out}");
    assert!(
        out.contains("if no key for any method: pass unencrypted"),
        "{out}"
    );

    let (_, out, _) = explain(&[
        "--to",
        "abuse@partner-bank.example",
        "--direction",
        "outbound",
    ]);
    assert!(out.contains("matched rule \"role accounts\""), "{out}");
    assert!(
        out.contains("decision: pass unencrypted: the rule never encrypts"),
        "{out}"
    );

    let (_, out, _) = explain(&[
        "--to",
        "x@elsewhere.example",
        "--from",
        "me@example.org",
        "--no-lookup",
    ]);
    assert!(out.contains("matched rule \"built-in default\""), "{out}");
    assert!(out.contains("no rule matched"), "{out}");
}

#[test]
fn explain_performs_the_lookup() {
    // No keys.directory, and no resolver listening: DNS is really asked,
    // and a failed lookup defers the recipient (it is never "no key").
    let d = tempfile::tempdir().unwrap();
    let dead = config(
        d.path(),
        &shipped(),
        "[dns]\nresolvers = [\"127.0.0.1:9\"]\ntimeout_ms = 300\n",
    );
    let (code, out, err) = run(bin().arg("--config").arg(&dead).args([
        "policy",
        "explain",
        "--to",
        "carol@lawfirm.example",
    ]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("key lookup: DNS (validate mode)"), "{out}");
    assert!(out.contains("decision: tempfail: 451 4.7.1"), "{out}");

    // A key directory with an unreadable "key": refused, so no usable key;
    // DNS is not asked once the directory has an answer.
    let keys = d.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    std::fs::write(keys.join("carol@lawfirm.example.asc"), "not a key").unwrap();
    let cfg = config(
        d.path(),
        &shipped(),
        &format!("[keys]\ndirectory = {:?}\n", keys.display().to_string()),
    );
    let (code, out, err) = run(bin().arg("--config").arg(&cfg).args([
        "policy",
        "explain",
        "--to",
        "carol@lawfirm.example",
    ]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("key lookup: local key directory"), "{out}");
    assert!(
        out.contains("openpgp: key found but not usable; refused: file"),
        "{out}"
    );
    assert!(out.contains("decision: tempfail: 450 4.7.1"), "{out}");

    // A file where the key should be is unreadable: a lookup failure.
    std::fs::remove_file(keys.join("carol@lawfirm.example.asc")).unwrap();
    std::fs::create_dir(keys.join("carol@lawfirm.example.asc")).unwrap();
    let (_, out, _) = run(bin().arg("--config").arg(&cfg).args([
        "policy",
        "explain",
        "--to",
        "carol@lawfirm.example",
    ]));
    assert!(out.contains("decision: tempfail: 451 4.7.1"), "{out}");
}

/// Every source asked is listed with its answer, and a usable key with
/// its provenance: a directory key is the operator's word, and DNS is not
/// asked once the directory has answered; a directory without the file
/// passes the question on to DNS.
#[test]
fn explain_names_each_source_and_the_keys_provenance() {
    let d = tempfile::tempdir().unwrap();
    let scratch = Scratch::new();
    let keys = d.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let id = SmimeId::generate(
        &scratch.work,
        "carol",
        &CertSpec::good("carol@partner-bank.example", KeyKind::Rsa),
    );
    std::fs::copy(&id.cert_path, keys.join("carol@partner-bank.example.pem")).unwrap();
    let cfg = config(d.path(), &shipped(), &key_dir_lines(&keys));
    let explain_to = |to: &str| {
        let (code, out, err) = run(bin()
            .arg("--config")
            .arg(&cfg)
            .args(["policy", "explain", "--to", to]));
        assert_eq!(code, 0, "{err}");
        out
    };
    let out = explain_to("carol@partner-bank.example");
    let dir_line = format!("smime: local key directory {}: found", keys.display());
    assert!(out.contains(&dir_line), "{out}");
    assert!(
        !out.contains("smime: DNS"),
        "DNS asked after the directory answered: {out}"
    );
    let key_line = out
        .lines()
        .find(|l| l.trim_start().starts_with("smime key "))
        .unwrap_or_else(|| panic!("no key line: {out}"));
    assert!(
        key_line.contains("carol@partner-bank.example.pem"),
        "{key_line}"
    );
    assert!(
        key_line.contains("source directory, vouched for by the operator, fetched 0 s ago"),
        "{key_line}"
    );

    // No file for dave: the directory proves absence, DNS is asked (and
    // fails: nothing listens), which is the answer, never "no key".
    let out = explain_to("dave@partner-bank.example");
    assert!(out.contains("smime: local key directory"), "{out}");
    assert!(out.contains(": not found"), "{out}");
    assert!(out.contains("smime: DNS (validate mode): failed"), "{out}");
    assert!(out.contains("decision: tempfail: 451 4.7.1"), "{out}");
}

/// A rule's `sources` and `min_trust` decide which sources are asked;
/// `check-config` and `policy explain` show it.
#[test]
fn rules_choose_their_sources_and_minimum_trust() {
    let d = tempfile::tempdir().unwrap();
    let scratch = Scratch::new();
    let keys = d.path().join("keys");
    let pol = d.path().join("policies");
    std::fs::create_dir(&keys).unwrap();
    std::fs::create_dir(&pol).unwrap();
    std::fs::write(
        pol.join("10-keys.toml"),
        r#"
[[rule]]
name = "dns only"
recipient = "*@dane.example"
methods = ["smime"]
sources = ["dane"]

[[rule]]
name = "operator only"
recipient = "*@op.example"
methods = ["smime"]
mode = "required"
min_trust = "operator"
"#,
    )
    .unwrap();
    for addr in ["x@dane.example", "x@op.example"] {
        let id = SmimeId::generate(&scratch.work, addr, &CertSpec::good(addr, KeyKind::Rsa));
        std::fs::copy(&id.cert_path, keys.join(format!("{addr}.pem"))).unwrap();
    }
    let cfg = config(d.path(), &pol, &key_dir_lines(&keys));
    let (code, out, err) = run(bin().arg("--config").arg(&cfg).arg("check-config"));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("keys from dane, trust learned and above"),
        "{out}"
    );
    assert!(
        out.contains("keys from every configured source, trust operator and above"),
        "{out}"
    );
    // What each rule asks with this configuration, in the order asked.
    assert!(
        out.contains("   keys: dane [dnssec]; accepts trust learned and above"),
        "{out}"
    );
    assert!(
        out.contains("   keys: directory [operator]; accepts trust operator and above"),
        "{out}"
    );
    assert!(
        out.contains(
            "   keys: directory [operator], then dane [dnssec], then wkd [tls], then learned \
             [learned]; accepts trust learned and above; failures tolerated: wkd (others decide: \
             lookup error)"
        ),
        "the built-in default asks all four, the directory first: {out}"
    );

    let explain_to = |to: &str| {
        let (code, out, err) = run(bin()
            .arg("--config")
            .arg(&cfg)
            .args(["policy", "explain", "--to", to]));
        assert_eq!(code, 0, "{err}");
        out
    };
    // DNS only: the key file is there, but the directory is not asked;
    // DNS fails (nothing listens), which defers, never "no key".
    let out = explain_to("x@dane.example");
    let plan = format!(
        "key lookup: DNS (validate mode) [dnssec]; accepts trust learned and above; a failing \
         source decides (lookup error); not asked: local key directory {} [operator] (not in \
         the rule's sources), Web Key Directory [tls] (not in the rule's sources)",
        keys.display()
    );
    assert!(out.contains(&plan), "{out}");
    assert!(!out.contains("smime: local key directory"), "{out}");
    assert!(out.contains("smime: DNS (validate mode): failed"), "{out}");
    assert!(out.contains("decision: tempfail: 451 4.7.1"), "{out}");
    // min_trust operator: DNS cannot reach it and is not asked at all.
    let out = explain_to("x@op.example");
    let plan = format!(
        "key lookup: local key directory {} [operator]; accepts trust operator and above; a \
         failing source decides (lookup error); not asked: DNS (validate mode) [dnssec] (below \
         min_trust), Web Key Directory [tls] (below min_trust)",
        keys.display()
    );
    assert!(out.contains(&plan), "{out}");
    assert!(!out.contains("smime: DNS"), "{out}");
    assert!(out.contains("decision: encrypt with smime"), "{out}");
    // Not in the directory: no key from a source it accepts, so the
    // required rule rejects (DNS would not do).
    let out = explain_to("y@op.example");
    assert!(!out.contains("smime: DNS"), "{out}");
    assert!(out.contains("decision: reject: 550 5.7.1"), "{out}");
}

/// A rule that can ask no configured source could never find a key (a
/// required rule would bounce everything as "no key"): the policy does not
/// load, and the error names the rule's file and line.
#[test]
fn a_rule_that_asks_no_configured_source_is_a_configuration_error() {
    let d = tempfile::tempdir().unwrap();
    let pol = d.path().join("policies");
    std::fs::create_dir(&pol).unwrap();
    let keys = d.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let with_dir = format!("[keys]\ndirectory = {:?}\n", keys.display().to_string());
    for (rule, extra, why) in [
        // No keys.directory: nothing to ask.
        ("sources = [\"directory\"]", "", "no directory configured"),
        ("min_trust = \"operator\"", "", "DNS cannot reach operator"),
        // Contradictory whatever is configured.
        (
            "sources = [\"dane\"]\nmin_trust = \"operator\"",
            with_dir.as_str(),
            "the only source named cannot reach min_trust",
        ),
        // WKD and keyservers hold no S/MIME certificates.
        (
            "methods = [\"smime\"]\nsources = [\"wkd\", \"keyserver\"]",
            "[keyserver]\nurls = [\"https://keys.example\"]\n",
            "web sources for an S/MIME-only rule",
        ),
    ] {
        std::fs::write(
            pol.join("10.toml"),
            format!("\n[[rule]]\nname = \"x\"\nrecipient = \"*@x.example\"\n{rule}\n"),
        )
        .unwrap();
        let cfg = config(d.path(), &pol, extra);
        let (code, _, err) = run(bin().arg("--config").arg(&cfg).arg("check-config"));
        assert_eq!(code, 1, "{why}: {err}");
        let at = format!(
            "{}:2: rule \"x\": asks no configured key source",
            pol.join("10.toml").display()
        );
        assert!(err.contains(&at), "{why}: {err}");
    }
}

#[test]
fn explain_usage_errors_exit_1() {
    // (a bare "not-an-address" is a valid domain-less recipient now)
    let (code, _, err) = explain(&["--to", "not an address"]);
    assert_eq!(code, 1);
    assert!(err.contains("--to"), "{err}");
    let (code, _, _) = explain(&["--to", "a@b.example", "--direction", "sideways"]);
    assert_ne!(code, 0);
    let (code, _, err) = run(bin().args([
        "--config",
        "/nonexistent/x.toml",
        "policy",
        "explain",
        "--to",
        "a@b.example",
    ]));
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/x.toml"), "{err}");
}

/// In `trust-ad` mode the AD bit is believed; from a resolver off this
/// host it crossed the network unprotected, and check-config says so.
#[test]
fn check_config_warns_on_trust_ad_resolvers_off_loopback() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(
        d.path(),
        &shipped(),
        "[dns]\nmode = \"trust-ad\"\nresolvers = [\"127.0.0.1:53\", \"192.0.2.7:53\", \"[2001:db8::5]:53\", \"[::1]:5353\"]\n",
    );
    let (code, _, err) = run(bin().arg("check-config").arg("--config").arg(&cfg));
    assert_eq!(code, 0, "a warning, not an error: {err}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("loopback")).collect();
    assert_eq!(warnings.len(), 2, "one warning per remote resolver: {err}");
    assert!(warnings[0].contains("192.0.2.7:53"), "{err}");
    assert!(warnings[1].contains("[2001:db8::5]:53"), "{err}");
    assert!(
        warnings[0].contains(&format!("{}:5", cfg.display())),
        "names where the resolvers were set: {err}"
    );

    // Loopback only: nothing to warn about; validate mode never warns.
    let cfg = config(
        d.path(),
        &shipped(),
        "[dns]\nmode = \"trust-ad\"\nresolvers = [\"127.0.0.1:53\", \"[::1]:53\"]\n",
    );
    let (code, out, err) = run(bin().arg("check-config").arg("--config").arg(&cfg));
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning"), "{err}");
    assert!(out.contains("0 warning(s)"), "{out}");
    let cfg = config(
        d.path(),
        &shipped(),
        "[dns]\nmode = \"validate\"\nresolvers = [\"192.0.2.7:53\"]\n",
    );
    let (code, _, err) = run(bin().arg("check-config").arg("--config").arg(&cfg));
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning"), "{err}");
}

/// A rule's `pin`: `policy explain` names the pins, uses a pinned key and
/// says why any other is refused.
#[test]
fn explain_shows_pins_and_refuses_an_unpinned_key() {
    let d = tempfile::tempdir().unwrap();
    let scratch = Scratch::new();
    let keys = d.path().join("keys");
    let pol = d.path().join("policies");
    std::fs::create_dir(&keys).unwrap();
    std::fs::create_dir(&pol).unwrap();
    let fpr_of = |id: &SmimeId| {
        autoencrypt_milter::backend::key_fingerprint(
            autoencrypt_milter::Method::Smime,
            &id.cert.to_der().unwrap(),
        )
        .unwrap()
    };
    let mut fprs = Vec::new();
    for who in ["erin", "grace"] {
        let addr = format!("{who}@partner.example");
        let id = SmimeId::generate(&scratch.work, who, &CertSpec::good(&addr, KeyKind::Rsa));
        std::fs::copy(&id.cert_path, keys.join(format!("{addr}.pem"))).unwrap();
        fprs.push(fpr_of(&id));
    }
    let (erin, grace) = (&fprs[0], &fprs[1]);
    // erin@ is pinned to grace's key (erin's changed, say); grace@ to her own.
    std::fs::write(
        pol.join("10-pins.toml"),
        format!(
            "[[rule]]\nname = \"pinned, key changed\"\nrecipient = [\"erin@partner.example\"]\nmethods = [\"smime\"]\nmode = \"required\"\nsources = [\"directory\"]\npin = [\"{grace}\"]\n\n\
             [[rule]]\nname = \"pinned\"\nrecipient = [\"*@partner.example\"]\nmethods = [\"smime\"]\nmode = \"required\"\nsources = [\"directory\"]\npin = [\"{grace}\"]\n"
        ),
    )
    .unwrap();
    let cfg = config(d.path(), &pol, &key_dir_lines(&keys));
    let explain = |to: &str| {
        let (code, out, err) = run(bin()
            .arg("--config")
            .arg(&cfg)
            .args(["policy", "explain", "--to", to]));
        assert_eq!(code, 0, "{err}");
        out
    };
    let out = explain("grace@partner.example");
    assert!(
        out.contains(&format!("only the pinned key(s) {grace}")),
        "{out}"
    );
    assert!(out.contains(&format!("smime key {grace}")), "{out}");
    // erin's own key is found, valid, and refused: not the pinned one.
    let out = explain("erin@partner.example");
    assert!(
        out.contains(&format!("fingerprint {erin} is not one the rule pins")),
        "{out}"
    );
    assert!(out.contains("550 5.7.1"), "{out}");
}

#[test]
fn explain_says_whether_the_header_is_protected() {
    let (code, out, err) = explain(&["--to", "bob@elsewhere.example", "--no-lookup"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("direction: outbound"), "{out}");
    assert!(
        out.contains("if a usable key for every method: encrypt with smime")
            && out.contains("header protected (RFC 9788"),
        "{out}"
    );
    // At rest (the shipped inbound rule says protect_headers = false).
    let (_, out, _) = explain(&["--to", "bob@example.org", "--no-lookup"]);
    assert!(out.contains("direction: inbound"), "{out}");
    assert!(out.contains("headers not protected"), "{out}");
    assert!(
        out.contains("header not protected (the Subject stays readable)"),
        "{out}"
    );
}

/// `policy explain` on the shipped `sign-users.toml`: the rule's signing
/// line, and whether the sender has a signing key (or why the key
/// directory cannot be loaded).
#[test]
fn explain_shows_signing_and_the_senders_signing_keys() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let policies = d.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::copy(
        shipped().join("optional/sign-users.toml"),
        policies.join("05-sign-users.toml"),
    )
    .unwrap();
    let keys = d.path().join("signing");
    signing_key(&keys, "alice@example.org");
    let key = keys.join("alice@example.org.key");
    let cfg = config(
        d.path(),
        &policies,
        &format!("[signing]\nkey_dir = {:?}\n", keys.display().to_string()),
    );
    let explain = |from: &str| {
        run(bin()
            .arg("--config")
            .arg(&cfg)
            .args(["policy", "explain", "--no-lookup", "--authenticated"])
            .args(["--from", from, "--to", "bob@partner.example"]))
    };
    let (code, out, err) = explain("alice@example.org");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("matched rule \"partner wants signed mail\""),
        "{out}"
    );
    assert!(
        out.contains("  sign: sign with [smime]")
            && out.contains("required: refused (550 5.7.1) when it cannot be signed"),
        "{out}"
    );
    assert!(
        out.contains("signing keys of alice@example.org: [smime]"),
        "{out}"
    );
    let (_, out, _) = explain("carol@example.org");
    assert!(
        out.contains("signing keys of carol@example.org: none in signing.key_dir: not signed"),
        "{out}"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (_, out, _) = explain("alice@example.org");
    assert!(
        out.contains("signing keys: cannot be loaded:") && out.contains("alice@example.org.key"),
        "{out}"
    );
}

/// `check-config` reads the signing keys as a start would: a private key
/// the group may read is an error naming the file (exit 1); a rule that
/// asks to sign without `signing.key_dir` is a warning.
#[test]
fn check_config_refuses_readable_signing_keys_and_warns_on_unconfigured_signing() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let policies = d.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::copy(
        shipped().join("optional/sign-users.toml"),
        policies.join("05-sign-users.toml"),
    )
    .unwrap();
    let cfg = config(d.path(), &policies, "");
    let (code, out, err) = run(bin().arg("--config").arg(&cfg).arg("check-config"));
    assert_eq!(code, 0, "{err}");
    assert!(
        (out.clone() + &err).contains(
            "asks to sign, but signing.key_dir is not set: nothing is signed, and its \
             sign_required refuses the mail"
        ),
        "{out}{err}"
    );
    let keys = d.path().join("signing");
    signing_key(&keys, "a@example.org");
    let key = keys.join("a@example.org.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let cfg = config(
        d.path(),
        &policies,
        &format!("[signing]\nkey_dir = {:?}\n", keys.display().to_string()),
    );
    let (code, _, err) = run(bin().arg("--config").arg(&cfg).arg("check-config"));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("a@example.org.key") && err.contains("mode 0640"),
        "{err}"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, out, err) = run(bin().arg("--config").arg(&cfg).arg("check-config"));
    assert_eq!(code, 0, "{err}");
    assert!(!(out + &err).contains("asks to sign"));
}

/// An EC P-256 self-signed certificate and its key for `addr` in the new
/// directory `keys`, as `<addr>.pem` and `<addr>.key` (mode 0600).
fn signing_key(keys: &Path, addr: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir(keys).unwrap();
    let key = keys.join(format!("{addr}.key"));
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-noenc",
            "-days",
            "30",
            "-subj",
            &format!("/CN={addr}"),
            "-addext",
            &format!("subjectAltName=email:{addr}"),
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(keys.join(format!("{addr}.pem")))
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
}
