//! Property: for any rule set, any recipient whose matching rule says
//! `required` never yields "pass", whatever the lookups return; and a
//! Bogus or Failed lookup is never read as "no key" (never a 5xx).
#![allow(clippy::unwrap_used, reason = "tests")]

use autoencrypt_milter::Address;
use autoencrypt_milter::backend::{Method, SmimeCipher};
use autoencrypt_milter::config::Location;
use autoencrypt_milter::keys::{FailReason, Security};
use autoencrypt_milter::policy::{
    Action, ConnectionFacts, DirectionMatch, KeyOutcome, MethodOutcome, Mode, OnLookupError,
    OnMissingKey, Policy, Query, Rule, Settings, Treatment,
};
use autoencrypt_milter::policy::{AddressGlob, SenderGlob};
use proptest::prelude::*;

const GLOBS: &[&str] = &[
    "*@*",
    "*@partner.example",
    "*@*.partner.example",
    "ceo@*",
    "postmaster@*",
    "\"odd one\"@example.org",
    "a*@example.org",
];
const RCPTS: &[&str] = &[
    "ceo@partner.example",
    "CEO@Mail.Partner.Example",
    "postmaster@example.org",
    "\"odd one\"@example.org",
    "alice@example.org",
    "bob@elsewhere.example",
];

fn arb_treatment() -> impl Strategy<Value = Treatment> {
    let methods = prop_oneof![
        Just(vec![Method::Smime]),
        Just(vec![Method::OpenPgp]),
        Just(vec![Method::Smime, Method::OpenPgp]),
        Just(vec![Method::OpenPgp, Method::Smime]),
    ];
    let mode = prop_oneof![
        Just(Mode::Opportunistic {
            on_lookup_error: OnLookupError::TempFail
        }),
        Just(Mode::Opportunistic {
            on_lookup_error: OnLookupError::Pass
        }),
        Just(Mode::Required {
            on_missing_key: OnMissingKey::Reject
        }),
        Just(Mode::Required {
            on_missing_key: OnMissingKey::TempFail
        }),
    ];
    prop_oneof![
        1 => Just(Treatment::NeverEncrypt),
        4 => (methods, mode).prop_map(|(methods, mode)| Treatment::Encrypt { methods, mode, smime_cipher: None, sources: None, min_trust: None, tolerate_failures: None, pin: Vec::new(), on_key_change: autoencrypt_milter::keys::OnKeyChange::Accept, protect_headers: None }),
    ]
}

fn arb_rule() -> impl Strategy<Value = Rule> {
    (
        prop_oneof![
            Just(DirectionMatch::Any),
            Just(DirectionMatch::Inbound),
            Just(DirectionMatch::Outbound)
        ],
        proptest::sample::subsequence(GLOBS, 0..3),
        proptest::option::of(any::<bool>()),
        any::<bool>(),
        arb_treatment(),
        any::<u32>(),
    )
        .prop_map(
            |(direction, globs, authenticated, null_sender_only, treatment, n)| Rule {
                name: format!("r{n}"),
                origin: Location::Default,
                direction,
                recipient: globs
                    .iter()
                    .map(|g| AddressGlob::parse(g).unwrap())
                    .collect(),
                sender: if null_sender_only {
                    vec![SenderGlob::Null]
                } else {
                    vec![]
                },
                daemon_name: None,
                authenticated,
                treatment,
                signing: Default::default(),
            },
        )
}

fn arb_outcome() -> impl Strategy<Value = KeyOutcome<u8>> {
    prop_oneof![
        Just(KeyOutcome::Found {
            security: Security::Secure,
            usable: vec![1],
            rejected: vec![]
        }),
        Just(KeyOutcome::Found {
            security: Security::Insecure,
            usable: vec![1],
            rejected: vec![]
        }),
        Just(KeyOutcome::Found {
            security: Security::Local,
            usable: vec![],
            rejected: vec![]
        }),
        Just(KeyOutcome::NotFound),
        Just(KeyOutcome::Insecure),
        Just(KeyOutcome::Bogus("x".into())),
        Just(KeyOutcome::Failed(FailReason::Timeout)),
        Just(KeyOutcome::Failed(FailReason::ServFail)),
    ]
}

proptest! {
    #[test]
    fn required_never_passes(
        rules in proptest::collection::vec(arb_rule(), 0..6),
        rcpt in proptest::sample::select(RCPTS),
        null_sender in any::<bool>(),
        authenticated in any::<bool>(),
        allow_insecure in any::<bool>(),
        smime in arb_outcome(),
        openpgp in arb_outcome(),
    ) {
        let policy = Policy::new(rules, vec!["example.org".into()], Settings { allow_insecure, smime_cipher: SmimeCipher::default() });
        let rcpt = Address::parse(rcpt).unwrap();
        let sender = Address::parse("s@x.example").unwrap();
        let conn = ConnectionFacts { daemon_name: None, authenticated };
        let q = Query {
            recipient: &rcpt,
            sender: if null_sender { None } else { Some(&sender) },
            direction: policy.direction_of(&rcpt),
            conn: &conn,
        };
        let is_error = |o: &KeyOutcome<u8>| matches!(o, KeyOutcome::Bogus(_) | KeyOutcome::Failed(_));
        let outcome_of = |m: &Method| if *m == Method::Smime { smime.clone() } else { openpgp.clone() };
        let rule = policy.select(&q).rule.clone();
        let d = policy.decide(&q, vec![
            MethodOutcome::new(Method::Smime, smime.clone()),
            MethodOutcome::new(Method::OpenPgp, openpgp.clone()),
        ]);
        if let Treatment::Encrypt { mode, methods, .. } = &rule.treatment {
            if mode.is_required() {
                prop_assert!(!matches!(d.action, Action::Pass(_)), "required rule {rule:?} passed: {d:?}");
            }
            // A lookup error on one of the rule's methods is "unknown",
            // never "no key": never a permanent rejection.
            if methods.iter().any(|m| is_error(&outcome_of(m))) {
                prop_assert!(!matches!(d.action, Action::Reject(_)), "bogus/failed read as no key: {d:?}");
            }
        }
    }
}

/// Globs written in every spelling: U-label, A-label, upper case, with a
/// trailing dot, domain-less.
const IDN_GLOBS: &[&str] = &[
    "*@xn--bcher-kva.test",
    "*@bücher.test",
    "*@BÜCHER.test.",
    "*@*.müller.test",
    "*@XN--MLLER-KVA.test",
    "x*@müller.test",
    "*@*.test",
    "*@local.test",
    "postmaster",
    "postmaster@*",
    "*@*",
];
const LOCALS: &[&str] = &["x", "postmaster", "ceo"];
/// `None`: domain-less.
const DOMAINS: &[Option<&str>] = &[
    Some("bücher.test"),
    Some("müller.test"),
    Some("mail.müller.test"),
    Some("local.test"),
    Some("example.org"),
    None,
];

fn arb_idn_rule() -> impl Strategy<Value = Rule> {
    (
        prop_oneof![
            Just(DirectionMatch::Any),
            Just(DirectionMatch::Inbound),
            Just(DirectionMatch::Outbound)
        ],
        proptest::sample::subsequence(IDN_GLOBS, 0..3),
        arb_treatment(),
        any::<u32>(),
    )
        .prop_map(|(direction, globs, treatment, n)| Rule {
            name: format!("r{n}"),
            origin: Location::Default,
            direction,
            recipient: globs
                .iter()
                .map(|g| AddressGlob::parse(g).unwrap())
                .collect(),
            sender: vec![],
            daemon_name: None,
            authenticated: None,
            treatment,
            signing: Default::default(),
        })
}

/// How one spelling is written: A- or U-label, the case of each
/// character, full-width letters, which dot, a trailing dot, and the
/// envelope wrapping.
#[derive(Clone, Debug)]
struct Spelling {
    a_label: bool,
    upper: Vec<bool>,
    full_width: Vec<bool>,
    dots: Vec<usize>,
    trailing_dot: bool,
    wrap: usize,
}

fn arb_spelling() -> impl Strategy<Value = Spelling> {
    (
        any::<bool>(),
        proptest::collection::vec(any::<bool>(), 32),
        proptest::collection::vec(any::<bool>(), 32),
        proptest::collection::vec(0..4usize, 8),
        any::<bool>(),
        0..3usize,
    )
        .prop_map(
            |(a_label, upper, full_width, dots, trailing_dot, wrap)| Spelling {
                a_label,
                upper,
                full_width,
                dots,
                trailing_dot,
                wrap,
            },
        )
}

fn spell(local: &str, domain: Option<&str>, sp: &Spelling) -> String {
    const DOTS: [char; 4] = ['.', '\u{3002}', '\u{ff0e}', '\u{ff61}'];
    let mut i = 0;
    let mut vary = |s: &str, out: &mut String, dot_ok: bool| {
        let mut d = 0;
        for c in s.chars() {
            i += 1;
            let c = if sp.upper[i % 32] {
                c.to_uppercase().next().unwrap()
            } else {
                c
            };
            if c == '.' && dot_ok {
                out.push(DOTS[sp.dots[d % 8]]);
                d += 1;
            } else if c.is_ascii_alphabetic() && dot_ok && sp.full_width[i % 32] {
                // U+FF21.. / U+FF41..: full-width Latin letters.
                out.push(char::from_u32(c as u32 + 0xfee0).unwrap());
            } else {
                out.push(c);
            }
        }
    };
    let mut out = String::new();
    vary(local, &mut out, false);
    if let Some(d) = domain {
        let d = if sp.a_label {
            idna::domain_to_ascii(d).unwrap()
        } else {
            d.to_owned()
        };
        out.push('@');
        vary(&d, &mut out, true);
        if sp.trailing_dot {
            out.push('.');
        }
    }
    match sp.wrap {
        0 => out,
        1 => format!("<{out}>"),
        _ if domain.is_some() => format!("<@relay.example,@b.example:{out}>"),
        _ => format!("<{out}>"),
    }
}

proptest! {
    /// Issue 9 item 2: for any rule set, no two spellings of one address
    /// reach different rules (or directions).
    #[test]
    fn spellings_of_one_address_reach_one_rule(
        rules in proptest::collection::vec(arb_idn_rule(), 0..6),
        local in proptest::sample::select(LOCALS),
        domain in proptest::sample::select(DOMAINS),
        a in arb_spelling(),
        b in arb_spelling(),
    ) {
        let policy = Policy::new(rules, vec!["local.test".into()], Settings { allow_insecure: false, smime_cipher: SmimeCipher::default() });
        let conn = ConnectionFacts::default();
        let (sa, sb) = (spell(local, domain, &a), spell(local, domain, &b));
        let (ra, rb) = (Address::parse(&sa).unwrap(), Address::parse(&sb).unwrap());
        let pick = |r: &Address| {
            let q = Query { recipient: r, sender: None, direction: policy.direction_of(r), conn: &conn };
            let m = policy.select(&q);
            (q.direction, m.index, m.rule.name.clone())
        };
        prop_assert_eq!(ra.domain(), rb.domain(), "{} vs {}", sa, sb);
        prop_assert_eq!(pick(&ra), pick(&rb), "{} vs {}", sa, sb);
    }
}

proptest! {
    /// Hostile text never panics the parsers, and what parses has one
    /// canonical form: printing and parsing again gives the same address.
    #[test]
    fn parsers_total_and_canonical_form_is_a_fixed_point(
        s in "[a-zA-Z0-9@<>\".:,;\\[\\]\\\\ü。．*_ -]{0,40}",
    ) {
        let _ = AddressGlob::parse(&s);
        let _ = SenderGlob::parse(&s);
        if let Ok(a) = Address::parse(&s) {
            let again = Address::parse(&a.to_string());
            prop_assert_eq!(again.as_ref(), Ok(&a), "{:?} printed as {}", s, a);
        }
    }
}
