//! Property: for any rule set, any recipient whose matching rule says
//! `required` never yields "pass", whatever the lookups return; and a
//! Bogus or Failed lookup is never read as "no key" (never a 5xx).
#![allow(clippy::unwrap_used, reason = "tests")]

use autoencrypt_milter::Address;
use autoencrypt_milter::backend::{Method, SmimeCipher};
use autoencrypt_milter::config::Location;
use autoencrypt_milter::keys::{FailReason, Security};
use autoencrypt_milter::policy::glob::{AddressGlob, SenderGlob};
use autoencrypt_milter::policy::{
    Action, ConnectionFacts, DirectionMatch, KeyOutcome, MethodOutcome, Mode, OnLookupError,
    OnMissingKey, Policy, Query, Rule, Settings, Treatment,
};
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
        4 => (methods, mode).prop_map(|(methods, mode)| Treatment::Encrypt { methods, mode, smime_cipher: None }),
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
            MethodOutcome { method: Method::Smime, outcome: smime.clone() },
            MethodOutcome { method: Method::OpenPgp, outcome: openpgp.clone() },
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
