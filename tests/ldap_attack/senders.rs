//! A hostile sender chooses the recipient address: filter metacharacters,
//! quoted local parts with backslashes, Unicode, great length, and every
//! spelling of a domain. What the directory receives is read back from
//! the wire: each address is one value of one equality assertion per
//! place in the template, byte for byte the canonical address — never a
//! wildcard, a second assertion or an RFC 4515 escape of the sender's.
//! Which addresses a directory is asked about at all follows `domains`,
//! canonicalised as the configuration loader does it.

use std::sync::{Arc, Mutex};

use autoencrypt_milter::Address;
use autoencrypt_milter::config::{Config, FileRequirement};
use autoencrypt_milter::keys::KeySource;
use autoencrypt_milter::keys::ldap::{LdapSettings, LdapSource};

use super::server::{self, answering, done, parse_tlv};
use super::*;

/// The equality assertions (attribute, value) of a filter, and how many
/// assertions of any other kind (substrings, presence, …) it has.
fn assertions(filter: &[u8]) -> (Vec<(String, Vec<u8>)>, usize) {
    fn walk(t: &[u8], eq: &mut Vec<(String, Vec<u8>)>, other: &mut usize) {
        let (tag, body, _) = parse_tlv(t).unwrap();
        match tag {
            0xa0..=0xa2 => {
                let mut r = body;
                while !r.is_empty() {
                    walk(r, eq, other);
                    r = parse_tlv(r).unwrap().2;
                }
            }
            0xa3 => {
                let (_, attr, after) = parse_tlv(body).unwrap();
                let (_, value, _) = parse_tlv(after).unwrap();
                eq.push((String::from_utf8_lossy(attr).into_owned(), value.to_vec()));
            }
            _ => *other += 1,
        }
    }
    let (mut eq, mut other) = (Vec::new(), 0);
    walk(filter, &mut eq, &mut other);
    (eq, other)
}

/// A directory that records each search's filter and finds nothing.
fn recording() -> (server::Server, Arc<Mutex<Vec<Vec<u8>>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = Arc::clone(&seen);
    let h = server::start(answering(move |s, r| {
        s2.lock().unwrap().push(r.filter().unwrap().to_vec());
        s.send(&done(r.id, 0));
    }));
    (h, seen)
}

const HOSTILE: &[&str] = &[
    "\"a*)(uid=*\"@example.org",
    "*@example.org",
    "\"*\"@example.org",
    "\"(*\"@example.org",
    "\"a)(|(mail=*\"@example.org",
    "\"a\\\\\"@example.org",
    "\"\\\\2a\"@example.org",
    "\"\\\\00x\"@example.org",
    "\"a\\)\"@example.org",
    "\"a b\"@example.org",
    "{address}@example.org",
    "\"{address})(mail=*\"@example.org",
    "ünïcödé@example.org",
    "用户@example.org",
    "a@EXAMPLE.ORG.",
    "=x@example.org",
    "~=*@example.org",
    "\">=x\"@example.org",
    "\"a\\\"(\"@example.org",
];

#[test]
fn every_hostile_spelling_is_one_exact_value_on_the_wire() {
    let rt = runtime();
    let long = format!("{}@example.org", "x".repeat(1_500));
    let long_utf8 = format!("{}@example.org", "ü".repeat(500));
    let mut all: Vec<&str> = HOSTILE.to_vec();
    all.push(&long);
    all.push(&long_utf8);
    for (template, attrs) in [
        ("(mail={address})", vec!["mail"]),
        (
            "(&(objectClass=user)(|(mail={address})(proxyAddresses=smtp:{address})))",
            vec!["objectClass", "mail", "proxyAddresses"],
        ),
    ] {
        let (h, seen) = recording();
        let keys = service(vec![LdapConfig {
            filter: template.to_owned(),
            ..dir(h.port())
        }]);
        for a in &all {
            not_found(&resolve(&rt, &keys, a));
        }
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), all.len(), "{template}: one search per address");
        for (a, f) in all.iter().zip(seen.iter()) {
            let want = Address::parse(a).unwrap().to_string().into_bytes();
            let (eq, other) = assertions(f);
            assert_eq!(other, 0, "{template} {a}: only equality assertions");
            let got_attrs: Vec<&str> = eq.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(got_attrs, attrs, "{template} {a}");
            let values: Vec<&[u8]> = eq.iter().map(|(_, v)| v.as_slice()).collect();
            if template.starts_with("(mail") {
                assert_eq!(values, [want.as_slice()], "{a}");
            } else {
                let mut smtp = b"smtp:".to_vec();
                smtp.extend_from_slice(&want);
                assert_eq!(values, [&b"user"[..], &want, &smtp], "{a}");
            }
        }
    }
}

#[test]
fn the_domain_is_sent_canonical_and_the_local_part_as_written() {
    let rt = runtime();
    let (h, seen) = recording();
    let keys = service(vec![LdapConfig {
        domains: vec!["example.org".to_owned(), "xn--bcher-kva.test".to_owned()],
        ..dir(h.port())
    }]);
    for a in [
        "Alice@EXAMPLE.ORG.",
        "<Alice@example.org>",
        "\"Alice\"@example.org",
        "<@relay.test:Alice@example.org>",
        "Alice@bücher.test",
        "Alice@XN--BCHER-KVA.TEST",
    ] {
        not_found(&resolve(&rt, &keys, a));
    }
    let values: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|f| String::from_utf8(assertions(f).0[0].1.clone()).unwrap())
        .collect();
    assert_eq!(
        values,
        [
            "Alice@example.org",
            "Alice@example.org",
            "Alice@example.org",
            "Alice@example.org",
            "Alice@xn--bcher-kva.test",
            "Alice@xn--bcher-kva.test"
        ]
    );
}

#[test]
fn domains_are_canonical_and_a_wildcard_is_subdomains_only() {
    let (h, seen) = recording();
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("milter.toml");
    std::fs::write(
        &path,
        format!(
            "[wkd]\nenabled = false\n\n[[ldap]]\nurl = \"ldap://127.0.0.1:{}\"\n\
             domains = [\"BÜCHER.test.\", \"*.Example.ORG\"]\nbase = \"dc=test\"\n",
            h.port()
        ),
    )
    .unwrap();
    let loaded = Config::load_with_env(&path, FileRequirement::Required, Vec::new()).unwrap();
    let src = LdapSource::new(LdapSettings::from_config(&loaded.config.ldap[0]).unwrap());
    let asked = |a: &str| src.answers_for(&Address::parse(a).unwrap());
    for a in [
        "x@bücher.test",
        "X@XN--BCHER-KVA.TEST",
        "x@xn--bcher-kva.test.",
        "x@ｂüｃｈｅｒ。test",
        "x@a.example.org",
        "x@A.B.EXAMPLE.ORG.",
    ] {
        assert!(asked(a), "{a} is covered");
    }
    for a in [
        "x@example.org",
        "x@aexample.org",
        "x@example.org.evil.test",
        "x@bücher.test.evil.test",
        "x@xbücher.test",
        "x@[127.0.0.1]",
        "postmaster",
    ] {
        assert!(!asked(a), "{a} is not covered");
    }
    // Through the key service: an address outside is never searched.
    let rt = runtime();
    let keys = KeyService::from_config(
        &Config {
            dns: config(vec![]).dns,
            ..loaded.config
        },
        Arc::new(autoencrypt_milter::Registry::new()),
        None,
    )
    .unwrap();
    not_found(&resolve(&rt, &keys, "x@example.org"));
    not_found(&resolve(&rt, &keys, "x@sub.example.org"));
    assert_eq!(seen.lock().unwrap().len(), 1);
}
