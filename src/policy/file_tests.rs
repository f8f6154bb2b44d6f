//! Tests of policy file loading: defaults, downgrades refused, typed
//! errors with file, line, rule and key.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]
use super::*;
use crate::material::OnKeyChange;

fn parse(text: &str) -> Result<Vec<Rule>, PolicyError> {
    parse_file(Path::new("t.toml"), text)
}

#[test]
fn defaults_of_a_minimal_rule() {
    let r = parse("[[rule]]\nname = \"x\"\n").unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].direction, DirectionMatch::Any);
    assert_eq!(r[0].treatment, Rule::builtin_default().treatment);
    assert_eq!(
        r[0].origin,
        Location::File {
            path: "t.toml".into(),
            line: Some(1)
        }
    );
}

#[test]
fn required_defaults_to_reject() {
    let r =
        parse("[[rule]]\nname = \"x\"\nmode = \"required\"\nmethods = [\"openpgp\"]\n").unwrap();
    assert_eq!(
        r[0].treatment,
        Treatment::Encrypt {
            methods: vec![Method::OpenPgp],
            mode: Mode::Required {
                on_missing_key: OnMissingKey::Reject
            },
            smime_cipher: None,
            sources: None,
            min_trust: None,
            tolerate_failures: None,
            pin: Vec::new(),
            on_key_change: OnKeyChange::Accept,
            protect_headers: None,
        }
    );
}

fn err_text(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

#[test]
fn downgrades_are_config_errors() {
    let e = err_text("[[rule]]\nname = \"p\"\nmode = \"required\"\non_lookup_error = \"pass\"\n");
    assert!(
        e.starts_with("t.toml:4: rule \"p\": key `on_lookup_error`"),
        "{e}"
    );
    let e = err_text("[[rule]]\nname = \"p\"\nmode = \"required\"\non_missing_key = \"pass\"\n");
    assert!(
        e.starts_with("t.toml:4: rule \"p\": key `on_missing_key`"),
        "{e}"
    );
    let e = err_text("[[rule]]\nname = \"p\"\non_missing_key = \"reject\"\n");
    assert!(e.contains("opportunistic"), "{e}");
    let e = err_text("[[rule]]\nname = \"p\"\nmethods = []\nmode = \"required\"\n");
    assert!(e.contains("cannot be required"), "{e}");
}

#[test]
fn typed_errors_carry_line_rule_and_key() {
    let e = err_text(
        "# c\n[[rule]]\nname = \"a\"\n\n[[rule]]\nname = \"b\"\nmethods = [\"smime\", \"pgp\"]\n",
    );
    assert!(e.starts_with("t.toml:7: rule \"b\": key `methods`"), "{e}");
    assert!(e.contains("pgp"), "{e}");
    let e = err_text("[[rule]]\nname = \"a\"\ncolour = \"red\"\n");
    assert!(e.starts_with("t.toml:3: rule \"a\""), "{e}");
    assert!(e.contains("colour"), "{e}");
    let e = err_text("[[rule]]\nname = \"a\"\nrecipient = [\"example.org\"]\n");
    assert!(
        e.starts_with("t.toml:3: rule \"a\": key `recipient`"),
        "{e}"
    );
    let e = err_text("[[rule]]\nname = \"a\"\ndirection = \"sideways\"\n");
    assert!(
        e.starts_with("t.toml:3: rule \"a\": key `direction`"),
        "{e}"
    );
    let e = err_text("[[rule]]\nname = \"a\"\nmethods = [\"smime\", \"smime\"]\n");
    assert!(e.contains("twice"), "{e}");
    let e = err_text(
        "[[rule]]\nname = \"a\"\nmethods = [\"openpgp\"]\nsmime_cipher = \"aes-256-gcm\"\n",
    );
    assert!(e.starts_with("t.toml:4:"), "{e}");
    let e = err_text("[[rule]\nname = \"a\"\n");
    assert!(e.starts_with("t.toml:1:"), "{e}");
    let e = err_text("[rules]\n");
    assert!(e.starts_with("t.toml:1:"), "{e}");
}

#[test]
fn sources_and_min_trust_are_read_with_defaults_by_mode() {
    use crate::material::{SourceKind, TrustLevel};
    let r = parse(
        "[[rule]]\nname = \"a\"\nmethods = [\"openpgp\"]\nsources = [\"dane\", \"directory\"]\n\
         min_trust = \"operator\"\n",
    )
    .unwrap();
    let c = r[0].treatment.key_choice().unwrap();
    assert_eq!(
        c.sources,
        Some(vec![SourceKind::Dane, SourceKind::Directory])
    );
    assert_eq!(c.min_trust, TrustLevel::Operator);
    // Defaults: every source; required accepts dnssec and above,
    // opportunistic any trust.
    let r = parse(
        "[[rule]]\nname = \"r\"\nmode = \"required\"\n[[rule]]\nname = \"o\"\nrecipient = \"*@x\"\n",
    )
    .unwrap();
    let (req, opp) = (
        r[0].treatment.key_choice().unwrap(),
        r[1].treatment.key_choice().unwrap(),
    );
    assert_eq!((req.sources, req.min_trust), (None, TrustLevel::Dnssec));
    assert_eq!((opp.sources, opp.min_trust), (None, TrustLevel::Learned));
    assert!(
        r[0].treatment_summary()
            .contains("; keys from every configured source, trust dnssec and above;")
    );
    // A rule that never encrypts asks nothing.
    let r = parse("[[rule]]\nname = \"n\"\nmethods = []\n").unwrap();
    assert_eq!(r[0].treatment.key_choice(), None);
    // Learned keys for a required rule that says so; review of key changes.
    let r = parse(
        "[[rule]]\nname = \"l\"\nmode = \"required\"\nmin_trust = \"learned\"\n\
         sources = [\"dane\", \"learned\"]\non_key_change = \"review\"\n",
    )
    .unwrap();
    let c = r[0].treatment.key_choice().unwrap();
    assert_eq!(
        (c.sources, c.min_trust, c.on_key_change),
        (
            Some(vec![SourceKind::Dane, SourceKind::Learned]),
            TrustLevel::Learned,
            OnKeyChange::Review
        )
    );
    assert_eq!(opp.on_key_change, OnKeyChange::Accept);
}

#[test]
fn bad_sources_and_min_trust_are_errors_with_line_and_key() {
    let e = err_text("[[rule]]\nname = \"a\"\nsources = [\"dane\",\n  \"dns\"]\n");
    assert!(
        e.starts_with("t.toml:4: rule \"a\": key `sources`: unknown source \"dns\""),
        "{e}"
    );
    // A string where a list belongs, another case, a space: not guessed at.
    let e = err_text("[[rule]]\nname = \"a\"\nsources = \"dane\"\n");
    assert!(e.starts_with("t.toml:3: rule \"a\""), "{e}");
    assert!(e.contains("sources"), "{e}");
    for odd in ["DANE", " dane", "Directory"] {
        let e = err_text(&format!("[[rule]]\nname = \"a\"\nsources = [\"{odd}\"]\n"));
        assert!(e.contains("key `sources`: unknown source"), "{odd}: {e}");
    }
    let e = err_text("[[rule]]\nname = \"a\"\nmin_trust = \"DNSSEC\"\n");
    assert!(e.contains("key `min_trust`: unknown trust level"), "{e}");
    // Learned keys under a rule whose trust floor is above them.
    let e = err_text("[[rule]]\nname = \"a\"\nmode = \"required\"\nsources = [\"learned\"]\n");
    assert!(
        e.contains("key `sources`: learned keys are below this rule's min_trust (dnssec, the default of a required rule)"),
        "{e}"
    );
    let e =
        err_text("[[rule]]\nname = \"a\"\nmin_trust = \"tls\"\nsources = [\"wkd\", \"learned\"]\n");
    assert!(e.contains("below this rule's min_trust (tls)"), "{e}");
    let e = err_text("[[rule]]\nname = \"a\"\non_key_change = \"Review\"\n");
    assert!(
        e.contains("key `on_key_change`: unknown value \"Review\""),
        "{e}"
    );
    let e = err_text("[[rule]]\nname = \"a\"\nmethods = []\non_key_change = \"review\"\n");
    assert!(
        e.contains("key `on_key_change`: has no effect with methods = []"),
        "{e}"
    );
    let e = err_text("[[rule]]\nname = \"a\"\nsources = [\"dane\", \"dane\"]\n");
    assert!(e.contains("key `sources`: dane is listed twice"), "{e}");
    let e = err_text("[[rule]]\nname = \"a\"\nsources = []\n");
    assert!(
        e.starts_with("t.toml:3:") && e.contains("asks no source"),
        "{e}"
    );
    let e = err_text("[[rule]]\nname = \"a\"\nmin_trust = \"high\"\n");
    assert!(
        e.starts_with("t.toml:3: rule \"a\": key `min_trust`: unknown trust level \"high\""),
        "{e}"
    );
    let e = err_text("[[rule]]\nname = \"a\"\nmethods = []\nmin_trust = \"dnssec\"\n");
    assert!(
        e.contains("key `min_trust`: has no effect with methods = []"),
        "{e}"
    );
    let e = err_text("[[rule]]\nname = \"a\"\nmethods = []\nsources = [\"dane\"]\n");
    assert!(
        e.contains("key `sources`: has no effect with methods = []"),
        "{e}"
    );
}

#[test]
fn tolerate_failures_defaults_by_mode_and_is_refused_on_required_rules() {
    use crate::material::{SourceKind, TrustLevel};
    // Opportunistic: the web sources' failures are tolerated by default.
    let r = parse("[[rule]]\nname = \"o\"\n").unwrap();
    let choice = r[0].treatment.key_choice().unwrap();
    assert_eq!(choice.tolerate, [SourceKind::Wkd, SourceKind::Keyserver]);
    assert_eq!(choice.min_trust, TrustLevel::Learned);
    // Said explicitly: exactly that list, also empty.
    let r = parse("[[rule]]\nname = \"o\"\ntolerate_failures = [\"dane\", \"wkd\"]\n").unwrap();
    let choice = r[0].treatment.key_choice().unwrap();
    assert_eq!(choice.tolerate, [SourceKind::Dane, SourceKind::Wkd]);
    let r = parse("[[rule]]\nname = \"o\"\ntolerate_failures = []\n").unwrap();
    assert!(r[0].treatment.key_choice().unwrap().tolerate.is_empty());
    // Required: none by default, and asking for any is an error.
    let r = parse("[[rule]]\nname = \"r\"\nmode = \"required\"\nmin_trust = \"tls\"\n").unwrap();
    assert!(r[0].treatment.key_choice().unwrap().tolerate.is_empty());
    let e = err_text(
        "[[rule]]\nname = \"r\"\nmode = \"required\"\nmin_trust = \"tls\"\ntolerate_failures = [\"wkd\"]\n",
    );
    assert!(
        e.starts_with("t.toml:5: rule \"r\": key `tolerate_failures`: a required rule defers"),
        "{e}"
    );
    let e = err_text("[[rule]]\nname = \"o\"\ntolerate_failures = [\"wkd\", \"wkd\"]\n");
    assert!(
        e.contains("key `tolerate_failures`: wkd is listed twice"),
        "{e}"
    );
    let e = err_text("[[rule]]\nname = \"o\"\ntolerate_failures = [\"WKD\"]\n");
    assert!(e.contains("key `tolerate_failures`: unknown source"), "{e}");
    let e = err_text("[[rule]]\nname = \"n\"\nmethods = []\ntolerate_failures = [\"wkd\"]\n");
    assert!(e.contains("has no effect with methods = []"), "{e}");
}

#[test]
fn pins_are_fingerprints_in_one_form() {
    let r = parse(
        "[[rule]]\nname = \"p\"\npin = [\"ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01\", \"00112233445566778899AABBCCDDEEFF 00112233445566778899AABBCCDDEEFF\"]\n",
    )
    .unwrap();
    let c = r[0].treatment.key_choice().unwrap();
    assert_eq!(
        c.pins,
        [
            "ABCDEF0123456789ABCDEF0123456789ABCDEF01",
            "00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF"
        ]
    );
    assert!(
        r[0].treatment_summary()
            .contains("only the pinned key(s) ABCDEF01")
    );
    let e = err_text("[[rule]]\nname = \"p\"\npin = [\n  \"abc\"]\n");
    assert!(
        e.starts_with("t.toml:4: rule \"p\": key `pin`: \"abc\" is not a fingerprint"),
        "{e}"
    );
    let e = err_text("[[rule]]\nname = \"p\"\npin = [\"zz\"]\n");
    assert!(e.contains("is not a fingerprint"), "{e}");
    let twice = "ABCDEF0123456789ABCDEF0123456789ABCDEF01";
    let e = err_text(&format!(
        "[[rule]]\nname = \"p\"\npin = [\"{twice}\", \"{}\"]\n",
        twice.to_lowercase()
    ));
    assert!(e.contains("is listed twice"), "{e}");
    let e = err_text("[[rule]]\nname = \"p\"\npin = []\n");
    assert!(e.contains("key `pin`: an empty list pins nothing"), "{e}");
    let e = err_text(&format!(
        "[[rule]]\nname = \"p\"\nmethods = [\"smime\"]\npin = [\"{twice}\"]\n"
    ));
    assert!(
        e.contains("is an OpenPGP v4 fingerprint, but methods do not include openpgp"),
        "{e}"
    );
    let e = err_text(&format!(
        "[[rule]]\nname = \"n\"\nmethods = []\npin = [\"{twice}\"]\n"
    ));
    assert!(
        e.contains("key `pin`: has no effect with methods = []"),
        "{e}"
    );
}

#[test]
fn protect_headers_is_read_and_refused_where_it_means_nothing() {
    let r = parse(
        "[[rule]]\nname = \"on\"\nprotect_headers = true\n[[rule]]\nname = \"off\"\n\
         recipient = \"*@x\"\nprotect_headers = false\n[[rule]]\nname = \"unset\"\n\
         recipient = \"*@y\"\n",
    )
    .unwrap();
    let got: Vec<Option<bool>> = r.iter().map(|r| r.treatment.protect_headers()).collect();
    assert_eq!(got, [Some(true), Some(false), None]);
    assert!(
        r[0].treatment_summary()
            .ends_with("; headers protected (RFC 9788)")
    );
    assert!(
        r[1].treatment_summary()
            .ends_with("; headers not protected")
    );
    assert!(
        r[2].treatment_summary()
            .contains("headers protected outbound, not inbound")
    );
    let e = parse("[[rule]]\nname = \"n\"\nmethods = []\nprotect_headers = true\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("key `protect_headers`: has no effect with methods = []"),
        "{e}"
    );
    let e = parse("[[rule]]\nname = \"s\"\nprotect_headers = \"yes\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("protect_headers"), "{e}");
}

#[test]
fn sign_and_sign_required_are_read_with_or_without_encryption() {
    let r = parse(
        "[[rule]]\nname = \"both\"\nsender = \"*@x.example\"\nsign = [\"openpgp\", \"smime\"]\n\
         sign_required = true\n[[rule]]\nname = \"only\"\nrecipient = \"*@y\"\nmethods = []\n\
         sign = [\"smime\"]\n[[rule]]\nname = \"unset\"\nrecipient = \"*@z\"\n",
    )
    .unwrap();
    assert_eq!(
        r[0].signing,
        Signing {
            methods: vec![Method::OpenPgp, Method::Smime],
            required: true
        }
    );
    assert_eq!(
        r[1].signing,
        Signing {
            methods: vec![Method::Smime],
            required: false
        }
    );
    assert_eq!(r[1].treatment, Treatment::NeverEncrypt);
    assert_eq!(r[2].signing, Signing::default());
    assert!(
        r[0].signing_summary()
            .contains("required: refused (550 5.7.1)")
    );
    assert!(r[2].signing_summary().starts_with("not asked"));
}

#[test]
fn bad_sign_keys_are_refused_with_their_line() {
    for (text, want) in [
        (
            "[[rule]]\nname = \"e\"\nsign = []\n",
            "key `sign`: an empty list signs nothing",
        ),
        (
            "[[rule]]\nname = \"t\"\nsign = [\"smime\", \"smime\"]\n",
            "key `sign`: smime is listed twice",
        ),
        (
            "[[rule]]\nname = \"r\"\n\nsign_required = true\n",
            "t.toml:4: rule \"r\": key `sign_required`: needs `sign`",
        ),
        ("[[rule]]\nname = \"u\"\nsign = [\"pgp\"]\n", "pgp"),
    ] {
        let e = parse(text).unwrap_err().to_string();
        assert!(e.contains(want), "{text:?}: {e}");
    }
    // `sign_required = false` alone says nothing and is allowed.
    assert!(parse("[[rule]]\nname = \"f\"\nsign_required = false\n").is_ok());
}
