//! Configuration loading: defaults, file, environment overrides (passed
//! explicitly, so tests never race on the process environment), unknown
//! keys, bad values with their line, and every shipped policy file.
#![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

use std::path::{Path, PathBuf};

use autoencrypt_milter::backend::SmimeCipher;
use autoencrypt_milter::config::{
    Config, ConfigError, DnsMode, FileRequirement, KEYS, Location, Socket,
};
use autoencrypt_milter::policy::Policy;
use autoencrypt_milter::policy::{load_dir, parse_file};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn load(path: &Path, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::load_with_env(path, FileRequirement::Required, env(vars)).map(|l| l.config)
}

#[test]
fn absent_default_file_gives_the_contract_defaults() {
    let d = tempfile::tempdir().unwrap();
    let l = Config::load_with_env(
        &d.path().join("none.toml"),
        FileRequirement::Optional,
        env(&[]),
    )
    .unwrap();
    assert!(l.file.is_none());
    let c = l.config;
    assert_eq!(c, Config::default());
    assert_eq!(c.socket.to_string(), "inet:127.0.0.1:10040");
    assert_eq!(c.metrics_listen, Some("127.0.0.1:9184".parse().unwrap()));
    assert_eq!(
        c.policy_dir,
        PathBuf::from("/etc/autoencrypt-milter/policies")
    );
    assert_eq!(c.dns.mode, DnsMode::Validate);
    assert_eq!(c.dns.timeout_ms, 3000);
    assert!(!c.dns.allow_insecure);
    assert!(c.dns.lowercase_fallback);
    assert_eq!(c.smime.cipher, SmimeCipher::Aes256Cbc);
    assert_eq!(c.limits.max_message_bytes, 52_428_800);
    assert_eq!(c.limits.spool_threshold_bytes, 4_194_304);
    assert!(l.origins.values().all(|o| *o == Location::Default));
    assert_eq!(l.origins.len(), KEYS.len());
}

#[test]
fn explicit_missing_file_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    let e = load(&d.path().join("typo.toml"), &[]).unwrap_err();
    assert!(matches!(e, ConfigError::NotFound { .. }), "{e}");
}

#[test]
fn every_key_from_a_file() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "c.toml",
        r#"
socket = "inet6:[::1]:11000"
metrics_listen = ""
local_domains = ["Example.ORG.", "example.net"]
policy_dir = "pol"
dry_run = true
log_level = "debug"

[dns]
mode = "trust-ad"
resolvers = ["127.0.0.1", "[::1]:5353"]
trust_anchor = "/etc/anchor.keys"
timeout_ms = 500
allow_insecure = true
lowercase_fallback = false

[keys]
directory = "keys"

[smime]
cipher = "aes-256-gcm"

[limits]
max_message_bytes = 1000
spool_threshold_bytes = 10
"#,
    );
    let l = Config::load_with_env(&p, FileRequirement::Required, env(&[])).unwrap();
    let c = &l.config;
    assert_eq!(
        c.socket,
        Socket::Inet6 {
            addr: "::1".parse().unwrap(),
            port: 11000
        }
    );
    assert_eq!(c.metrics_listen, None);
    assert_eq!(c.local_domains, vec!["example.org", "example.net"]);
    // Relative paths in the file are relative to the file.
    assert_eq!(c.policy_dir, d.path().join("pol"));
    assert_eq!(c.keys.directory, Some(d.path().join("keys")));
    assert!(c.dry_run);
    assert_eq!(c.dns.mode, DnsMode::TrustAd);
    assert_eq!(
        c.dns.resolvers,
        vec![
            "127.0.0.1:53".parse().unwrap(),
            "[::1]:5353".parse().unwrap()
        ]
    );
    assert_eq!(c.dns.trust_anchor, Some(PathBuf::from("/etc/anchor.keys")));
    assert_eq!(c.dns.timeout_ms, 500);
    assert!(c.dns.allow_insecure);
    assert!(!c.dns.lowercase_fallback);
    assert_eq!(c.smime.cipher, SmimeCipher::Aes256Gcm);
    assert_eq!(c.limits.max_message_bytes, 1000);
    assert_eq!(
        l.origins["dns.timeout_ms"],
        Location::File {
            path: p.clone(),
            line: Some(13)
        }
    );
}

#[test]
fn environment_overrides_file_and_defaults() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "c.toml",
        "socket = \"unix:/run/a.sock\"\n[dns]\ntimeout_ms = 500\n",
    );
    let l = Config::load_with_env(
        &p,
        FileRequirement::Required,
        env(&[
            ("AUTOENCRYPT_DNS__TIMEOUT_MS", "750"),
            ("AUTOENCRYPT_SOCKET", "inet:0.0.0.0:2000"),
            ("AUTOENCRYPT_LOCAL_DOMAINS", "example.org, example.net"),
            ("AUTOENCRYPT_DNS__ALLOW_INSECURE", "true"),
            ("AUTOENCRYPT_SMIME__CIPHER", "aes-128-cbc"),
            ("AUTOENCRYPT_METRICS_LISTEN", ""),
            ("UNRELATED", "x"),
        ]),
    )
    .unwrap();
    let c = &l.config;
    assert_eq!(c.dns.timeout_ms, 750);
    assert_eq!(c.socket.to_string(), "inet:0.0.0.0:2000");
    assert_eq!(c.local_domains, vec!["example.org", "example.net"]);
    assert!(c.dns.allow_insecure);
    assert_eq!(c.smime.cipher, SmimeCipher::Aes128Cbc);
    assert_eq!(c.metrics_listen, None);
    assert_eq!(
        l.origins["dns.timeout_ms"],
        Location::Env {
            var: "AUTOENCRYPT_DNS__TIMEOUT_MS".into()
        }
    );
    assert_eq!(l.origins["dns.mode"], Location::Default);
}

#[test]
fn environment_errors_name_the_variable() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), "c.toml", "");
    let e = load(&p, &[("AUTOENCRYPT_DNS__TIMEOUT_MS", "soon")])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("AUTOENCRYPT_DNS__TIMEOUT_MS") && e.contains("dns.timeout_ms"),
        "{e}"
    );
    let e = load(&p, &[("AUTOENCRYPT_DNS__COLOUR", "red")])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("AUTOENCRYPT_DNS__COLOUR") && e.contains("colour"),
        "{e}"
    );
    let e = load(&p, &[("AUTOENCRYPT_SOCKET", "tcp:1")])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("AUTOENCRYPT_SOCKET") && e.contains("invalid socket"),
        "{e}"
    );
    let e = load(&p, &[("AUTOENCRYPT_DNS__TIMEOUT_MS", "0")])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("AUTOENCRYPT_DNS__TIMEOUT_MS") && e.contains("out of range"),
        "{e}"
    );
}

#[test]
fn unknown_keys_are_errors_with_file_line_and_key() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "c.toml",
        "socket = \"unix:/x\"\n\n[dns]\ntimeout_ms = 1\ntimout = 2\n",
    );
    let e = load(&p, &[]).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}:5:", p.display())), "{e}");
    assert!(e.contains("timout"), "{e}");
    let p = write(d.path(), "d.toml", "sockets = \"unix:/x\"\n");
    let e = load(&p, &[]).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}:1:", p.display())) && e.contains("sockets"),
        "{e}"
    );
    let p = write(d.path(), "e.toml", "[dnss]\nmode = \"validate\"\n");
    let e = load(&p, &[]).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}:1:", p.display())) && e.contains("dnss"),
        "{e}"
    );
}

#[test]
fn bad_values_name_line_and_key() {
    let d = tempfile::tempdir().unwrap();
    let cases = [
        ("\n\n[dns]\ntimeout_ms = \"3s\"\n", 4, "dns.timeout_ms"),
        ("socket = \"inet:localhost\"\n", 1, "socket"),
        ("log_level = \"verbose\"\n", 1, "log_level"),
        ("[smime]\ncipher = \"des3\"\n", 2, "smime.cipher"),
        ("[dns]\nmode = \"trust\"\n", 2, "dns.mode"),
        ("metrics_listen = \"localhost\"\n", 1, "metrics_listen"),
        (
            "\n[dns]\nresolvers = [\"dns.example\"]\n",
            3,
            "dns.resolvers",
        ),
        ("dry_run = \"yes\"\n", 1, "dry_run"),
        ("[dns]\ntimeout_ms = 0\n", 2, "dns.timeout_ms"),
        (
            "dry_run = false\nsocket_mode = \"0999\"\n",
            2,
            "socket_mode",
        ),
        ("local_domains = [\"*.example.org\"]\n", 1, "local_domains"),
        ("socket = \n", 1, ""),
    ];
    for (i, (text, line, key)) in cases.iter().enumerate() {
        let p = write(d.path(), &format!("c{i}.toml"), text);
        let e = load(&p, &[]).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}:{line}:", p.display())),
            "{text:?}: {e}"
        );
        assert!(
            e.contains(&format!("`{key}`")) || key.is_empty(),
            "{text:?}: {e}"
        );
    }
}

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
}

#[test]
fn every_shipped_policy_file_is_accepted() {
    let mut names = Vec::new();
    for e in std::fs::read_dir(shipped()).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            // policies/optional/: examples that need configuration first
            // (below, and the tests that configure it).
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        parse_file(&p, &text).unwrap_or_else(|e| panic!("{e}"));
        names.push(p.file_name().unwrap().to_string_lossy().into_owned());
    }
    let mut optional = Vec::new();
    for e in std::fs::read_dir(shipped().join("optional")).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap();
        parse_file(&p, &text).unwrap_or_else(|e| panic!("{e}"));
        optional.push(p.file_name().unwrap().to_string_lossy().into_owned());
    }
    optional.sort();
    assert_eq!(
        optional,
        [
            "ldap-at-rest.toml",
            "learned-partners.toml",
            "sign-users.toml"
        ]
    );
    names.sort();
    assert_eq!(
        names,
        [
            "00-default.toml",
            "inbound-at-rest.toml",
            "skip-lists.toml",
            "strict-partners.toml",
            "web-keys.toml"
        ]
    );
    let rules = load_dir(&shipped()).unwrap();
    assert!(rules.len() >= 5);
    let d = tempfile::tempdir().unwrap();
    let cfg = write(
        d.path(),
        "c.toml",
        &format!(
            "policy_dir = {:?}\nlocal_domains = [\"example.org\"]\n",
            shipped().display().to_string()
        ),
    );
    let l = Config::load_with_env(&cfg, FileRequirement::Required, env(&[])).unwrap();
    let (policy, note) = Policy::load(&l.config).unwrap();
    assert!(note.is_none());
    assert!(policy.shadowed().is_empty(), "{:?}", policy.shadowed());
}

#[test]
fn a_named_policy_dir_must_exist_but_the_default_may_be_absent() {
    let d = tempfile::tempdir().unwrap();
    let cfg = Config {
        policy_dir: d.path().join("nope"),
        ..Config::default()
    };
    assert!(Policy::load(&cfg).is_err());
    if !Path::new(autoencrypt_milter::config::DEFAULT_POLICY_DIR).exists() {
        let (p, note) = Policy::load(&Config::default()).unwrap();
        assert!(p.rules().is_empty());
        assert!(note.is_some());
    }
}

#[test]
fn duplicate_rule_names_across_files_are_errors() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "a.toml", "[[rule]]\nname = \"x\"\n");
    write(d.path(), "b.toml", "# two\n[[rule]]\nname = \"x\"\n");
    write(d.path(), "c.toml~", "garbage");
    let e = load_dir(d.path()).unwrap_err().to_string();
    assert!(e.contains("b.toml:2") && e.contains("a.toml:1"), "{e}");
}

#[test]
fn policy_files_are_read_in_name_order() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "20-b.toml", "[[rule]]\nname = \"b\"\n");
    write(d.path(), "10-a.toml", "[[rule]]\nname = \"a\"\n");
    write(d.path(), "30-c.toml", "[[rule]]\nname = \"c\"\n");
    let names: Vec<String> = load_dir(d.path())
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["a", "b", "c"]);
}

#[test]
fn the_man_page_documents_every_key() {
    let man = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("man/autoencrypt-milter.toml.5"),
    )
    .unwrap();
    for key in KEYS {
        let (section, name) = key.rsplit_once('.').unwrap_or(("", key));
        assert!(man.contains(&format!(".BR {name} ")), "{key} undocumented");
        if !section.is_empty() {
            assert!(
                man.contains(&format!(".SS [{section}]")),
                "[{section}] undocumented"
            );
        }
    }
    for rule_key in [
        "name",
        "direction",
        "recipient",
        "sender",
        "daemon_name",
        "authenticated",
        "methods",
        "mode",
        "on_missing_key",
        "on_lookup_error",
        "smime_cipher",
        "tolerate_failures",
    ] {
        assert!(
            man.contains(&format!(".BR {rule_key} ")),
            "rule key {rule_key} undocumented"
        );
    }
}
