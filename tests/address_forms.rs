//! Issue 9 items 2 and 3 through the binary: every spelling of one domain
//! selects the same rule in `policy explain`, a glob that has no canonical
//! form is a configuration error with file and line, and recipients
//! Postfix accepts (domain-less, source-routed, literals) are handled.
#![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_autoencrypt-milter"));
    for (k, _) in std::env::vars() {
        if k.starts_with("AUTOENCRYPT_") {
            c.env_remove(k);
        }
    }
    c
}

const POLICY: &str = r#"
[[rule]]
name = "postmaster exempt"
recipient = ["postmaster"]
methods = []

[[rule]]
name = "buecher required"
recipient = ["*@xn--bcher-kva.test"]
methods = ["openpgp"]
mode = "required"

[[rule]]
name = "mueller required"
recipient = ["*@müller.test"]
methods = ["smime"]
mode = "required"

[[rule]]
name = "local strict"
direction = "inbound"
recipient = ["*@local.test"]
methods = ["openpgp"]
mode = "required"
"#;

/// A config with `policy` as the only policy file.
fn setup(policy: &str) -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let pol = d.path().join("pol");
    std::fs::create_dir(&pol).unwrap();
    std::fs::write(pol.join("10-x.toml"), policy).unwrap();
    let cfg = d.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "policy_dir = {:?}\nlocal_domains = [\"LOCAL.test.\"]\n",
            pol.display().to_string()
        ),
    )
    .unwrap();
    (d, cfg)
}

fn explain(cfg: &Path, to: &str) -> String {
    let out = bin()
        .arg("--config")
        .arg(cfg)
        .args(["policy", "explain", "--no-lookup", "--to", to])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{to}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn matched(out: &str) -> &str {
    out.lines()
        .find(|l| l.starts_with("matched rule "))
        .unwrap_or_else(|| panic!("no matched rule in {out}"))
}

#[test]
fn every_spelling_selects_the_same_rule() {
    let (_d, cfg) = setup(POLICY);
    let file = cfg.parent().unwrap().join("pol/10-x.toml");
    for (spellings, rule, line, both) in [
        (
            &[
                "x@bücher.test",
                "x@BÜCHER.TEST.",
                "x@xn--bcher-kva.test",
                "x@XN--BCHER-KVA.test",
                "x@b\u{fc}cher\u{3002}test",
                "<@relay.example:x@bücher.test>",
            ][..],
            "buecher required",
            7,
            "recipient: x@xn--bcher-kva.test (x@bücher.test)",
        ),
        (
            &[
                "x@xn--mller-kva.test",
                "x@müller.test",
                "x@M\u{dc}LLER.test",
                "x@\u{ff4d}\u{fc}ller\u{ff0e}test",
            ][..],
            "mueller required",
            13,
            "recipient: x@xn--mller-kva.test (x@müller.test)",
        ),
    ] {
        for s in spellings {
            let out = explain(&cfg, s);
            let want = format!("matched rule {rule:?} ({}:{line})", file.display());
            assert_eq!(matched(&out), want, "{s}: {out}");
            assert!(out.contains(both), "{s}: {out}");
            assert!(
                out.contains("if no key for any method: reject: 550 5.7.1"),
                "{s}: {out}"
            );
        }
    }
}

#[test]
fn domain_less_recipients_are_inbound_and_go_through_policy() {
    let (_d, cfg) = setup(POLICY);
    for p in ["postmaster", "<Postmaster>", "POSTMASTER"] {
        let out = explain(&cfg, p);
        assert!(out.contains("direction: inbound"), "{p}: {out}");
        assert!(
            matched(&out).contains("\"postmaster exempt\""),
            "{p}: {out}"
        );
        assert!(
            out.contains("pass unencrypted: the rule never encrypts"),
            "{p}: {out}"
        );
    }
    // `<alice>` is delivered under a local domain: the local domain's
    // required rule applies, not a silent plaintext default.
    let out = explain(&cfg, "<alice>");
    assert!(matched(&out).contains("\"local strict\""), "{out}");
    assert!(
        out.contains("domain-less recipient alice taken as alice@local.test (local_domains)"),
        "{out}"
    );
    // Source route: reduced to the final address.
    let out = explain(&cfg, "<@a.example,@b.example:alice@Local.TEST>");
    assert!(out.contains("recipient: alice@local.test"), "{out}");
    assert!(matched(&out).contains("\"local strict\""), "{out}");
}

#[test]
fn unparseable_spellings_are_refused_not_guessed() {
    let (_d, cfg) = setup(POLICY);
    for bad in ["x@xn--zz.test", "x@bü*cher.test", "x@[192.0.2.300]"] {
        let out = bin()
            .arg("--config")
            .arg(&cfg)
            .args(["policy", "explain", "--no-lookup", "--to", bad])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--to"), "{bad}: {err}");
    }
}

#[test]
fn glob_without_canonical_form_is_a_config_error_with_file_and_line() {
    for (glob, line) in [
        ("*@bü*cher.test", 4),
        ("*@*bücher.test", 4),
        ("*@xn--zz.test", 4),
        (&*format!("*@{}.test", "a".repeat(64)), 4),
        ("*@a..test", 4),
    ] {
        let (d, cfg) = setup(&format!(
            "[[rule]]\nname = \"g\"\n\nrecipient = [{glob:?}]\n"
        ));
        let out = bin()
            .arg("check-config")
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{glob} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        let file = d.path().join("pol/10-x.toml");
        assert!(
            err.contains(&format!(
                "{}:{line}: rule \"g\": key `recipient`",
                file.display()
            )),
            "{glob}: {err}"
        );
    }
}
