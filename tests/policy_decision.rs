//! The decision function, table-driven: every mode × lookup outcome ×
//! direction, multi-method cases, first-match order, glob edge cases and
//! the grouping of several recipients.
#![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

use std::path::Path;

use autoencrypt_milter::Address;
use autoencrypt_milter::backend::{KeyRejected, Method, RejectReason, SmimeCipher};
use autoencrypt_milter::keys::{FailReason, Security};
use autoencrypt_milter::policy::{self as decision, group, parse_file};
use autoencrypt_milter::policy::{
    Action, Admission, ConnectionFacts, Direction, KeyOutcome, MethodOutcome, PassReason, Policy,
    Query, RecipientDecision, Settings,
};

fn addr(s: &str) -> Address {
    Address::parse(s).unwrap()
}

fn rules(text: &str) -> Vec<autoencrypt_milter::policy::Rule> {
    parse_file(Path::new("test.toml"), text).unwrap()
}

/// The outcome kinds of the table.
#[derive(Clone, Copy, Debug)]
enum Out {
    FoundSecure,
    FoundLocal,
    FoundFromUnsignedZone,
    FoundButRefused,
    NotFound,
    Insecure,
    Bogus,
    Timeout,
    ServFail,
    Network,
}

fn outcome(o: Out) -> KeyOutcome<&'static str> {
    let found = |security| KeyOutcome::Found {
        security,
        usable: vec!["key"],
        rejected: Vec::new(),
    };
    match o {
        Out::FoundSecure => found(Security::Secure),
        Out::FoundLocal => found(Security::Local),
        Out::FoundFromUnsignedZone => found(Security::Insecure),
        Out::FoundButRefused => KeyOutcome::Found {
            security: Security::Secure,
            usable: Vec::new(),
            rejected: vec![KeyRejected {
                origin: "SMIMEA x".into(),
                reason: RejectReason::Expired("2020-01-01".into()),
            }],
        },
        Out::NotFound => KeyOutcome::NotFound,
        Out::Insecure => KeyOutcome::Insecure,
        Out::Bogus => KeyOutcome::Bogus("RRSIG expired".into()),
        Out::Timeout => KeyOutcome::Failed(FailReason::Timeout),
        Out::ServFail => KeyOutcome::Failed(FailReason::ServFail),
        Out::Network => KeyOutcome::Failed(FailReason::Network("connection refused".into())),
    }
}

/// Compact rendering of an action: "encrypt", "pass", or the reply codes.
fn kind<K>(d: &RecipientDecision<K>) -> String {
    match &d.action {
        Action::Encrypt { .. } => "encrypt".into(),
        Action::Pass(_) => "pass".into(),
        Action::Reject(r) | Action::TempFail(r) => format!("{} {}", r.code(), r.enhanced()),
    }
}

const MODES: [(&str, &str); 5] = [
    (
        "opp/tempfail",
        "mode = \"opportunistic\"\non_lookup_error = \"tempfail\"",
    ),
    (
        "opp/pass",
        "mode = \"opportunistic\"\non_lookup_error = \"pass\"",
    ),
    (
        "req/reject",
        "mode = \"required\"\non_missing_key = \"reject\"",
    ),
    (
        "req/tempfail",
        "mode = \"required\"\non_missing_key = \"tempfail\"",
    ),
    ("never", "methods = []"),
];

/// Expected result per outcome, one column per entry of MODES.
const TABLE: [(Out, [&str; 5]); 10] = [
    (
        Out::FoundSecure,
        ["encrypt", "encrypt", "encrypt", "encrypt", "pass"],
    ),
    (
        Out::FoundLocal,
        ["encrypt", "encrypt", "encrypt", "encrypt", "pass"],
    ),
    (
        Out::FoundFromUnsignedZone,
        ["pass", "pass", "550 5.7.1", "450 4.7.1", "pass"],
    ),
    (
        Out::FoundButRefused,
        ["pass", "pass", "550 5.7.1", "450 4.7.1", "pass"],
    ),
    (
        Out::NotFound,
        ["pass", "pass", "550 5.7.1", "450 4.7.1", "pass"],
    ),
    (
        Out::Insecure,
        ["pass", "pass", "550 5.7.1", "450 4.7.1", "pass"],
    ),
    (
        Out::Bogus,
        ["451 4.7.1", "pass", "451 4.7.1", "451 4.7.1", "pass"],
    ),
    (
        Out::Timeout,
        ["451 4.7.1", "pass", "451 4.7.1", "451 4.7.1", "pass"],
    ),
    (
        Out::ServFail,
        ["451 4.7.1", "pass", "451 4.7.1", "451 4.7.1", "pass"],
    ),
    (
        Out::Network,
        ["451 4.7.1", "pass", "451 4.7.1", "451 4.7.1", "pass"],
    ),
];

/// A policy with one rule per direction, both with the same mode, so that
/// the direction is proven to select the rule.
fn policy_for(mode: &str, allow_insecure: bool) -> Policy {
    let methods = if mode.contains("methods") {
        ""
    } else {
        "methods = [\"smime\"]\n"
    };
    let text = format!(
        "[[rule]]\nname = \"in\"\ndirection = \"inbound\"\n{methods}{mode}\n\n\
         [[rule]]\nname = \"out\"\ndirection = \"outbound\"\n{methods}{mode}\n"
    );
    Policy::new(
        rules(&text),
        vec!["Example.ORG".into()],
        Settings {
            allow_insecure,
            smime_cipher: SmimeCipher::default(),
        },
    )
}

#[test]
fn every_mode_times_outcome_times_direction() {
    let conn = ConnectionFacts::default();
    let mut checked = 0;
    for (col, (mode_name, mode)) in MODES.iter().enumerate() {
        let policy = policy_for(mode, false);
        for (out, expected) in TABLE {
            for (rcpt, dir, rule) in [
                ("alice@EXAMPLE.org", Direction::Inbound, "in"),
                ("bob@elsewhere.example", Direction::Outbound, "out"),
            ] {
                let rcpt = addr(rcpt);
                assert_eq!(policy.direction_of(&rcpt), dir);
                let q = Query {
                    recipient: &rcpt,
                    sender: None,
                    direction: dir,
                    conn: &conn,
                };
                let d = policy.decide(&q, vec![MethodOutcome::new(Method::Smime, outcome(out))]);
                assert_eq!(d.rule, rule);
                assert_eq!(
                    kind(&d),
                    expected[col],
                    "{mode_name} {out:?} {dir}: {:?}",
                    d.notes
                );
                if mode_name.starts_with("req") {
                    assert!(
                        !matches!(d.action, Action::Pass(_)),
                        "required passed: {out:?}"
                    );
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 5 * 10 * 2);
}

#[test]
fn allow_insecure_makes_unsigned_zone_keys_usable() {
    for (_, mode) in &MODES[..4] {
        let policy = policy_for(mode, true);
        let rcpt = addr("bob@elsewhere.example");
        let conn = ConnectionFacts::default();
        let q = Query {
            recipient: &rcpt,
            sender: None,
            direction: Direction::Outbound,
            conn: &conn,
        };
        let found = policy.decide(
            &q,
            vec![MethodOutcome::new(
                Method::Smime,
                outcome(Out::FoundFromUnsignedZone),
            )],
        );
        assert_eq!(kind(&found), "encrypt");
        // Lookup::Insecure carries no key at all: still no key.
        let none = policy.decide(
            &q,
            vec![MethodOutcome::new(Method::Smime, outcome(Out::Insecure))],
        );
        assert_ne!(kind(&none), "encrypt");
    }
}

fn two_methods(rule_mode: &str, smime: Out, openpgp: Out) -> RecipientDecision<&'static str> {
    let r = rules(&format!(
        "[[rule]]\nname = \"r\"\nmethods = [\"smime\", \"openpgp\"]\n{rule_mode}\n"
    ));
    decision::decide(
        &r[0],
        &addr("bob@partner.example"),
        Direction::Outbound,
        vec![
            MethodOutcome::new(Method::OpenPgp, outcome(openpgp)),
            MethodOutcome::new(Method::Smime, outcome(smime)),
        ],
        &Settings::default(),
    )
}

#[test]
fn lookup_error_on_one_method_while_the_other_has_a_key_encrypts() {
    for (_, mode) in &MODES[..4] {
        for err in [Out::Bogus, Out::Timeout, Out::ServFail] {
            let d = two_methods(mode, err, Out::FoundSecure);
            assert_eq!(d.methods(), vec![Method::OpenPgp], "{mode} {err:?}");
            let d = two_methods(mode, Out::FoundSecure, err);
            assert_eq!(d.methods(), vec![Method::Smime], "{mode} {err:?}");
        }
    }
}

#[test]
fn bogus_or_failed_beside_no_key_is_never_no_key() {
    let required = "mode = \"required\"\non_missing_key = \"reject\"";
    for err in [Out::Bogus, Out::Timeout, Out::Network] {
        assert_eq!(
            kind(&two_methods(required, Out::NotFound, err)),
            "451 4.7.1"
        );
        assert_eq!(
            kind(&two_methods(required, err, Out::NotFound)),
            "451 4.7.1"
        );
        assert_eq!(kind(&two_methods("", err, Out::NotFound)), "451 4.7.1");
    }
    assert_eq!(
        kind(&two_methods(required, Out::NotFound, Out::Insecure)),
        "550 5.7.1"
    );
}

#[test]
fn every_usable_method_is_offered_in_preference_order() {
    let d = two_methods("", Out::FoundSecure, Out::FoundLocal);
    assert_eq!(d.methods(), vec![Method::Smime, Method::OpenPgp]);
    assert_eq!(d.keys_for(Method::OpenPgp), Some(&["key"][..]));
    let r = rules("[[rule]]\nname = \"r\"\nmethods = [\"openpgp\", \"smime\"]\n");
    let d = decision::decide(
        &r[0],
        &addr("a@b.example"),
        Direction::Outbound,
        vec![
            MethodOutcome::new(Method::Smime, outcome(Out::FoundSecure)),
            MethodOutcome::new(Method::OpenPgp, outcome(Out::FoundSecure)),
        ],
        &Settings::default(),
    );
    assert_eq!(d.methods(), vec![Method::OpenPgp, Method::Smime]);
}

#[test]
fn refused_key_reason_is_carried_in_the_notes() {
    let d = two_methods("mode = \"required\"", Out::FoundButRefused, Out::NotFound);
    assert_eq!(kind(&d), "550 5.7.1");
    assert!(d.notes[0].contains("expired"), "{:?}", d.notes);
}

#[test]
fn a_missing_outcome_is_an_internal_error_not_a_pass() {
    let r = rules(
        "[[rule]]\nname = \"r\"\nmethods = [\"smime\", \"openpgp\"]\non_lookup_error = \"pass\"\n",
    );
    let d = decision::decide::<()>(
        &r[0],
        &addr("a@b.example"),
        Direction::Outbound,
        vec![MethodOutcome::new(Method::Smime, KeyOutcome::NotFound)],
        &Settings::default(),
    );
    assert_eq!(kind(&d), "451 4.3.0");
}

#[test]
fn rule_and_default_cipher() {
    let r =
        rules("[[rule]]\nname = \"g\"\nsmime_cipher = \"aes-256-gcm\"\n[[rule]]\nname = \"d\"\n");
    let settings = Settings {
        allow_insecure: false,
        smime_cipher: SmimeCipher::Aes128Cbc,
    };
    let found = || {
        vec![
            MethodOutcome::new(Method::Smime, outcome(Out::FoundSecure)),
            MethodOutcome::new(Method::OpenPgp, outcome(Out::NotFound)),
        ]
    };
    let rcpt = addr("a@b.example");
    for (rule, want) in [
        (&r[0], SmimeCipher::Aes256Gcm),
        (&r[1], SmimeCipher::Aes128Cbc),
    ] {
        match decision::decide(rule, &rcpt, Direction::Outbound, found(), &settings).action {
            Action::Encrypt { smime_cipher, .. } => assert_eq!(smime_cipher, want),
            other => panic!("{other:?}"),
        }
    }
}

// ---------------------------------------------------------------------
// Rule selection.

fn select<'p>(
    policy: &'p Policy,
    rcpt: &str,
    sender: Option<&str>,
    conn: &ConnectionFacts,
) -> &'p str {
    let rcpt = addr(rcpt);
    let sender = sender.map(addr);
    let q = Query {
        recipient: &rcpt,
        sender: sender.as_ref(),
        direction: policy.direction_of(&rcpt),
        conn,
    };
    &policy.select(&q).rule.name
}

#[test]
fn first_match_wins_in_file_order() {
    let a = "[[rule]]\nname = \"specific\"\nrecipient = \"ceo@partner.example\"\nmethods = []\n";
    let b = "[[rule]]\nname = \"domain\"\nrecipient = \"*@partner.example\"\nmode = \"required\"\n";
    let conn = ConnectionFacts::default();
    let p = Policy::new(rules(&format!("{a}{b}")), vec![], Settings::default());
    assert_eq!(select(&p, "ceo@partner.example", None, &conn), "specific");
    assert_eq!(select(&p, "cfo@partner.example", None, &conn), "domain");
    let p = Policy::new(rules(&format!("{b}{a}")), vec![], Settings::default());
    assert_eq!(select(&p, "ceo@partner.example", None, &conn), "domain");
    assert_eq!(
        select(&p, "x@other.example", None, &conn),
        "built-in default"
    );
}

#[test]
fn glob_edge_cases_in_selection() {
    let text = r#"
[[rule]]
name = "quoted"
recipient = ['"john doe"@example.org']
[[rule]]
name = "sub"
recipient = "*@*.partner.example"
[[rule]]
name = "apex"
recipient = "*@partner.example"
[[rule]]
name = "role"
recipient = "postmaster@*"
"#;
    let p = Policy::new(rules(text), vec![], Settings::default());
    let c = ConnectionFacts::default();
    assert_eq!(select(&p, "X@PARTNER.EXAMPLE", None, &c), "apex");
    assert_eq!(select(&p, "x@Mail.Partner.Example", None, &c), "sub");
    assert_eq!(select(&p, "x@deep.mail.partner.example", None, &c), "sub");
    assert_eq!(
        select(&p, "x@notpartner.example", None, &c),
        "built-in default"
    );
    assert_eq!(select(&p, "\"John Doe\"@example.org", None, &c), "quoted");
    assert_eq!(
        select(&p, "john.doe@example.org", None, &c),
        "built-in default"
    );
    assert_eq!(select(&p, "PostMaster@anything.example", None, &c), "role");
}

#[test]
fn sender_daemon_and_authentication_conditions() {
    let text = r#"
[[rule]]
name = "bounces"
sender = "<>"
methods = []
[[rule]]
name = "submission by authenticated users"
daemon_name = "submission"
authenticated = true
mode = "required"
[[rule]]
name = "from partner"
sender = ["*@partner.example"]
"#;
    let p = Policy::new(rules(text), vec![], Settings::default());
    let plain = ConnectionFacts::default();
    let submission = ConnectionFacts {
        daemon_name: Some("submission".into()),
        authenticated: true,
    };
    let unauth_submission = ConnectionFacts {
        daemon_name: Some("submission".into()),
        authenticated: false,
    };
    assert_eq!(select(&p, "a@b.example", None, &submission), "bounces");
    assert_eq!(
        select(&p, "a@b.example", Some("u@x.example"), &submission),
        "submission by authenticated users"
    );
    assert_eq!(
        select(&p, "a@b.example", Some("u@x.example"), &unauth_submission),
        "built-in default"
    );
    assert_eq!(
        select(&p, "a@b.example", Some("u@PARTNER.example"), &plain),
        "from partner"
    );
    assert_eq!(
        select(&p, "a@b.example", Some("u@x.example"), &plain),
        "built-in default"
    );
}

/// A domain-less MAIL FROM (`<legal>`) is qualified by the MTA with
/// `$myorigin`, like a domain-less recipient: a sender rule for
/// `*@<local domain>` must apply to it, or `MAIL FROM:<alice>` dodges a
/// required rule for mail from that domain.
#[test]
fn domain_less_sender_meets_the_rules_for_local_domains() {
    let text = r#"
[[rule]]
name = "from legal required"
sender = ["*@legal.example"]
mode = "required"
[[rule]]
name = "rest"
methods = []
"#;
    let p = Policy::new(
        rules(text),
        vec!["legal.example".into()],
        Settings::default(),
    );
    let c = ConnectionFacts::default();
    for from in ["alice@legal.example", "alice", "<Alice>"] {
        assert_eq!(
            select(&p, "x@partner.example", Some(from), &c),
            "from legal required",
            "{from}"
        );
    }
    assert_eq!(
        select(&p, "x@partner.example", Some("alice@other.example"), &c),
        "rest"
    );
    // Routing in the sender's local part: Postfix rewrites these to
    // alice@legal.example (swap_bangpath, resolve_dequoted_address,
    // allow_percent_hack).
    for from in [
        "legal.example!alice",
        "\"alice@legal.example\"",
        "\"alice@legal.example\"@other.example",
        "alice%legal.example",
        "alice%legal.example@other.example",
    ] {
        assert_eq!(
            select(&p, "x@partner.example", Some(from), &c),
            "from legal required",
            "{from}"
        );
    }
}

/// Postfix delivers `user@[its own address]` locally (a literal of
/// `inet_interfaces` is a local domain), so a required inbound rule for
/// `ceo@<local domain>` must not be dodged by `RCPT TO:<ceo@[192.0.2.1]>`.
/// Which literals are the MTA's is unknown here: a literal meets the
/// stricter of its outbound reading and the inbound `local@D` readings.
#[test]
fn address_literal_cannot_dodge_a_required_local_rule() {
    let text = r#"
[[rule]]
name = "ceo required"
direction = "inbound"
recipient = ["ceo@local.example"]
mode = "required"
[[rule]]
name = "inbound opportunistic"
direction = "inbound"
[[rule]]
name = "outbound opportunistic"
direction = "outbound"
"#;
    let p = Policy::new(
        rules(text),
        vec!["local.example".into()],
        Settings::default(),
    );
    let c = ConnectionFacts::default();
    for rcpt in ["ceo@[192.0.2.1]", "CEO@[IPv6:2001:db8::1]"] {
        assert_eq!(select(&p, rcpt, None, &c), "ceo required", "{rcpt}");
    }
    // Not required in either reading: the literal's own (outbound) rule.
    assert_eq!(
        select(&p, "alice@[192.0.2.1]", None, &c),
        "outbound opportunistic"
    );
}

#[test]
fn local_domains_decide_direction_exactly() {
    let p = Policy::new(vec![], vec!["example.org.".into()], Settings::default());
    assert_eq!(p.direction_of(&addr("a@EXAMPLE.ORG")), Direction::Inbound);
    assert_eq!(
        p.direction_of(&addr("a@sub.example.org")),
        Direction::Outbound
    );
}

// ---------------------------------------------------------------------
// Grouping of several recipients.

fn enc(methods: &[Method], required: bool, cipher: SmimeCipher) -> RecipientDecision<()> {
    RecipientDecision {
        recipient: addr("r@x.example"),
        rule: "r".into(),
        action: Action::Encrypt {
            choices: methods.iter().map(|m| (*m, vec![()])).collect(),
            smime_cipher: cipher,
            required,
            protect_headers: false,
        },
        notes: vec![],
    }
}

fn opp(methods: &[Method]) -> RecipientDecision<()> {
    enc(methods, false, SmimeCipher::default())
}

fn pass() -> RecipientDecision<()> {
    RecipientDecision {
        recipient: addr("p@x.example"),
        rule: "r".into(),
        action: Action::Pass(PassReason::NoKey),
        notes: vec![],
    }
}

const S: Method = Method::Smime;
const P: Method = Method::OpenPgp;

fn defer() -> Admission {
    Admission::Defer(autoencrypt_milter::policy::Reply::too_many_recipients())
}

#[test]
fn one_common_method() {
    let (adm, m) = group(&[opp(&[S]), opp(&[S, P])]);
    assert_eq!(adm, vec![Admission::Accept, Admission::Accept]);
    assert_eq!(m, Some(S));
    let (adm, m) = group(&[opp(&[S, P]), opp(&[P])]);
    assert_eq!(adm, vec![Admission::Accept, Admission::Accept]);
    assert_eq!(m, Some(P));
}

#[test]
fn mixed_methods_split_with_452() {
    let (adm, m) = group(&[opp(&[S]), opp(&[P]), opp(&[S])]);
    assert_eq!(adm, vec![Admission::Accept, defer(), Admission::Accept]);
    assert_eq!(m, Some(S));
    assert_eq!(
        autoencrypt_milter::policy::Reply::too_many_recipients().to_string(),
        "452 4.5.3 Too many recipients"
    );
}

#[test]
fn plaintext_and_encrypted_never_share_a_body() {
    let (adm, m) = group(&[pass(), opp(&[S]), pass()]);
    assert_eq!(adm, vec![Admission::Accept, defer(), Admission::Accept]);
    assert_eq!(m, None);
    let (adm, m) = group(&[opp(&[S]), pass()]);
    assert_eq!(adm, vec![Admission::Accept, defer()]);
    assert_eq!(m, Some(S));
}

#[test]
fn refused_recipients_do_not_shape_the_group() {
    let rejected = RecipientDecision::<()> {
        recipient: addr("a@b.example"),
        rule: "r".into(),
        action: Action::Reject(autoencrypt_milter::policy::Reply::required_no_key(&addr(
            "a@b.example",
        ))),
        notes: vec![],
    };
    let (adm, m) = group(&[rejected, opp(&[P])]);
    assert!(matches!(&adm[0], Admission::Refuse(r) if r.code() == 550));
    assert_eq!(adm[1], Admission::Accept);
    assert_eq!(m, Some(P));
}

#[test]
fn strictest_preference_order_wins() {
    // Opportunistic first recipient prefers S/MIME; a required one prefers
    // OpenPGP: the required recipient's order decides.
    let (_, m) = group(&[opp(&[S, P]), enc(&[P, S], true, SmimeCipher::default())]);
    assert_eq!(m, Some(P));
    // Without a required recipient the first recipient's order decides.
    let (_, m) = group(&[opp(&[S, P]), opp(&[P, S])]);
    assert_eq!(m, Some(S));
    // The first required recipient fixes the order; later ones only narrow.
    let (_, m) = group(&[
        enc(&[S, P], true, SmimeCipher::default()),
        enc(&[P, S], true, SmimeCipher::default()),
    ]);
    assert_eq!(m, Some(S));
}

#[test]
fn different_smime_ciphers_cannot_share_smime() {
    let gcm = SmimeCipher::Aes256Gcm;
    let cbc = SmimeCipher::Aes256Cbc;
    let (adm, m) = group(&[
        enc(&[S, P], false, gcm),
        enc(&[S, P], false, cbc),
        enc(&[S], false, cbc),
    ]);
    assert_eq!(adm, vec![Admission::Accept, Admission::Accept, defer()]);
    assert_eq!(m, Some(P));
}

#[test]
fn header_protection_defaults_by_direction_and_the_rule_overrides() {
    let r = rules(
        "[[rule]]\nname = \"on\"\nrecipient = \"on@x.example\"\nprotect_headers = true\n\
         [[rule]]\nname = \"off\"\nrecipient = \"off@x.example\"\nprotect_headers = false\n\
         [[rule]]\nname = \"unset\"\n",
    );
    let found = || {
        vec![
            MethodOutcome::new(Method::Smime, outcome(Out::FoundSecure)),
            MethodOutcome::new(Method::OpenPgp, outcome(Out::NotFound)),
        ]
    };
    let protects = |rule, direction| match decision::decide(
        rule,
        &addr("a@x.example"),
        direction,
        found(),
        &Settings::default(),
    )
    .action
    {
        Action::Encrypt {
            protect_headers, ..
        } => protect_headers,
        other => panic!("{other:?}"),
    };
    for d in [Direction::Inbound, Direction::Outbound] {
        assert!(protects(&r[0], d));
        assert!(!protects(&r[1], d));
    }
    // Not set: outbound protected, at rest (inbound) not.
    assert!(protects(&r[2], Direction::Outbound));
    assert!(!protects(&r[2], Direction::Inbound));
}

#[test]
fn one_protecting_recipient_protects_the_message_and_defers_nobody() {
    let with = |protect: bool| {
        let mut d = enc(&[S], false, SmimeCipher::default());
        if let Action::Encrypt {
            protect_headers, ..
        } = &mut d.action
        {
            *protect_headers = protect;
        }
        d
    };
    for order in [[false, true], [true, false]] {
        let mut t = autoencrypt_milter::policy::Transaction::new();
        for p in order {
            assert_eq!(t.admit(&with(p)), Admission::Accept);
        }
        assert!(t.protect_headers(), "{order:?}");
    }
    let mut t = autoencrypt_milter::policy::Transaction::new();
    t.admit(&with(false));
    t.admit(&with(false));
    assert!(!t.protect_headers());
    // A recipient deferred for its method does not protect the others.
    let mut t = autoencrypt_milter::policy::Transaction::new();
    t.admit(&with(false));
    let mut pgp = enc(&[P], false, SmimeCipher::default());
    if let Action::Encrypt {
        protect_headers, ..
    } = &mut pgp.action
    {
        *protect_headers = true;
    }
    assert_eq!(t.admit(&pgp), defer());
    assert!(!t.protect_headers());
}
