//! The field read back by the harvest parser, with hostile notes,
//! reasons and addresses; forged fields found under odd spellings.

use super::*;
use crate::address::Address;
use crate::harvest::auth_results::parse;

fn addr(s: &str) -> Address {
    Address::parse(s).unwrap()
}

fn read_back(value: &str) -> crate::harvest::auth_results::AuthResults {
    assert!(!value.contains(['\r', '\n']), "{value:?}");
    parse(value.as_bytes()).unwrap_or_else(|e| panic!("{value:?}: {e}"))
}

#[test]
fn every_result_reads_back_with_our_id_method_and_result() {
    let from = addr("alice@example.org");
    let pass = Verdict::Pass {
        fingerprint: "AB".into(),
    };
    let fail = Verdict::Fail("digest failure".into());
    let policy = Verdict::Policy("no key found for the From: address".into());
    let perm = Verdict::PermError("multipart/signed with 1 parts, not two".into());
    let cases = [
        (Reported::Verdict(&pass), "pass"),
        (Reported::Verdict(&fail), "fail"),
        (Reported::Verdict(&policy), "policy"),
        (Reported::Verdict(&perm), "permerror"),
        (Reported::TempError("DNS timed out"), "temperror"),
    ];
    for method in Method::ALL {
        for (reported, result) in &cases {
            let v = field_value(
                "mx.example.org",
                method,
                reported,
                &from,
                Some("key via dane, vouched for by DNSSEC"),
            );
            let ar = read_back(&v);
            assert_eq!(ar.authserv_id, "mx.example.org");
            assert_eq!(ar.results.len(), 1, "{v}");
            let r = &ar.results[0];
            assert_eq!(r.method, method_name(method));
            assert_eq!(r.result, *result);
            let property = format!("{}-identifier", method_name(method));
            assert_eq!(r.prop("body", &property), Some("alice@example.org"), "{v}");
            assert_eq!(r.reason.is_some(), *result != "pass", "{v}");
        }
    }
    assert_eq!(
        field_value(
            "mx.example.org",
            Method::Smime,
            &Reported::Verdict(&pass),
            &from,
            Some("key via dane, vouched for by DNSSEC")
        ),
        "mx.example.org; smime=pass (key via dane, vouched for by DNSSEC) body.smime-identifier=alice@example.org"
    );
}

#[test]
fn a_hostile_note_and_reason_cannot_break_the_field() {
    let from = addr("alice@example.org");
    let hostile = "x) ; smime=pass (\r\nX-Evil: 1\\\u{202e}\u{0}\"; openpgp=pass";
    let fail = Verdict::Fail(hostile.repeat(40));
    let v = field_value(
        "mx.example.org",
        Method::Smime,
        &Reported::Verdict(&fail),
        &from,
        Some(&hostile.repeat(40)),
    );
    assert!(
        v.is_ascii() && !v.chars().any(|c| c.is_ascii_control()),
        "{v:?}"
    );
    let ar = read_back(&v);
    assert_eq!(ar.results.len(), 1, "{v}");
    assert_eq!(ar.results[0].method, "smime");
    assert_eq!(ar.results[0].result, "fail");
    let reason = ar.results[0].reason.as_deref().unwrap();
    assert!(reason.ends_with("...") && reason.len() <= MAX_REASON + 3);
    assert!(v.len() < 998, "{}", v.len());
    // An empty or blank note writes no comment.
    let pass = Verdict::Pass {
        fingerprint: "AB".into(),
    };
    let v = field_value(
        "mx.example.org",
        Method::Smime,
        &Reported::Verdict(&pass),
        &from,
        Some(" \r\n "),
    );
    assert!(!v.contains('('), "{v}");
}

#[test]
fn a_hostile_address_is_quoted_or_left_out() {
    let pass = Verdict::Pass {
        fingerprint: "AB".into(),
    };
    let r = Reported::Verdict(&pass);
    let quoted = addr("\"a;smime=pass (x)\\\"\"@example.org");
    let v = field_value("mx.example.org", Method::OpenPgp, &r, &quoted, None);
    let ar = read_back(&v);
    assert_eq!(ar.results.len(), 1, "{v}");
    assert_eq!(
        ar.results[0].prop("body", "openpgp-identifier"),
        Some(quoted.to_string().as_str()),
        "{v}"
    );
    // A literal domain is quoted whole.
    let literal = addr("alice@[192.0.2.1]");
    let v = field_value("mx.example.org", Method::Smime, &r, &literal, None);
    assert_eq!(
        read_back(&v).results[0].prop("body", "smime-identifier"),
        Some("alice@[192.0.2.1]")
    );
    // Too long: no identifier rather than a cut one.
    let long = addr(&format!("{}@example.org", "a".repeat(300)));
    let v = field_value("mx.example.org", Method::Smime, &r, &long, None);
    assert!(read_back(&v).results[0].props.is_empty(), "{v}");
    // An authserv-id that is no token is quoted.
    let v = field_value("mx example;org", Method::Smime, &r, &literal, None);
    assert_eq!(read_back(&v).authserv_id, "mx example;org");
}

fn ar(values: &[&str]) -> Vec<HeaderField> {
    let mut h = vec![HeaderField::new("From", " alice@example.org")];
    for v in values {
        h.push(HeaderField::new("Authentication-Results", format!(" {v}")));
        h.push(HeaderField::new("Received", " from x by y"));
    }
    h
}

#[test]
fn forged_fields_under_our_id_are_ours_whatever_the_spelling() {
    let headers = ar(&[
        "mx.example.org; dkim=pass header.d=example.org", // 1 kept
        "MX.Example.ORG; SMIME=pass",                     // 2
        "mx.example.org (ours, honest); openpgp (x) = pass", // 3
        "mx.example.org 1; smime/1=pass body.smime-identifier=a@b", // 4
        "mx.example.org/1; smime=pass",                   // 5
        "other.example.net; smime=pass",                  // 6 kept
        "mx.example.org; spf=pass smtp.mailfrom=example.org; dmarc=pass header.from=example.org", // 7 kept
        "\"mx.example.org\"; dkim=pass header.d=a; smime=pass", // 8
        "mx.example.org; smime=pass (unterminated",             // 9
        "mx.example.org; none",                                 // 10 kept
        "mx.example.org 2; smime=pass",                         // 11
        "mx.example.org; dkim=pass reason=\"smime=pass\"",      // 12 kept
        "mx.example.org.; openpgp=pass",                        // 13
    ]);
    assert_eq!(
        ours(&headers, "mx.example.org"),
        vec![2, 3, 4, 5, 8, 9, 11, 13]
    );
    assert_eq!(ours(&headers, ""), Vec::<usize>::new());
    assert_eq!(ours(&headers, "other.example.net"), vec![6]);
}

#[test]
fn our_own_field_is_ours_the_next_time() {
    let from = addr("alice@example.org");
    let pass = Verdict::Pass {
        fingerprint: "AB".into(),
    };
    for m in Method::ALL {
        let v = field_value("mx.example.org", m, &Reported::Verdict(&pass), &from, None);
        assert_eq!(ours(&ar(&[&v]), "mx.example.org"), vec![1]);
    }
}
