use super::*;
use crate::message::Message;

fn fixture(name: &str) -> Vec<HeaderField> {
    let path = format!(
        "{}/tests/fixtures/harvest/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    Message::parse(&raw).headers
}

fn field(value: &str) -> Vec<HeaderField> {
    vec![HeaderField::new(
        "Authentication-Results",
        format!(" {value}"),
    )]
}

fn by(value: &str) -> Option<AuthBy> {
    authenticated_by(&field(value), "mx.example.org", "example.org")
}

fn by_for(value: &str, from_domain: &str) -> Option<AuthBy> {
    authenticated_by(&field(value), "mx.example.org", from_domain)
}

#[test]
fn the_topmost_field_that_reports_a_method_decides_it() {
    let fields =
        |values: &[&str]| -> Vec<HeaderField> { values.iter().flat_map(|v| field(v)).collect() };
    // The MTA's own verdict above, a pass the sender wrote below.
    for top in [
        "mx.example.org; dkim=fail header.d=example.org",
        "mx.example.org; dkim=none",
        "mx.example.org; dkim=neutral header.d=example.org",
        "mx.example.org; none",
    ] {
        let h = fields(&[top, "mx.example.org; dkim=pass header.d=example.org"]);
        assert_eq!(
            authenticated_by(&h, "mx.example.org", "example.org"),
            None,
            "{top}"
        );
    }
    // Two verifiers of the site, each reporting its own method.
    let h = fields(&[
        "mx.example.org; dmarc=pass header.from=example.org",
        "mx.example.org; dkim=pass header.d=example.org",
    ]);
    assert_eq!(
        authenticated_by(&h, "mx.example.org", "example.org"),
        Some(AuthBy::Dkim)
    );
    // A field under another id above changes nothing.
    let h = fields(&[
        "mx.elsewhere.test; dkim=fail header.d=example.org",
        "mx.example.org; dkim=pass header.d=example.org",
    ]);
    assert_eq!(
        authenticated_by(&h, "mx.example.org", "example.org"),
        Some(AuthBy::Dkim)
    );
}

fn results(headers: &[HeaderField]) -> Vec<AuthResults> {
    headers
        .iter()
        .filter(|h| h.is("Authentication-Results"))
        .map(|h| parse(&h.value).unwrap())
        .collect()
}

#[test]
fn rfc8601_b1_no_field_authenticates_nothing() {
    let h = fixture("rfc8601-b1.eml");
    assert!(results(&h).is_empty());
    assert_eq!(authenticated_by(&h, "example.org", "example.com"), None);
}

#[test]
fn rfc8601_b2_none_with_a_version() {
    let h = fixture("rfc8601-b2.eml");
    let ar = results(&h);
    assert_eq!(ar.len(), 1);
    assert_eq!(ar[0].authserv_id, "example.org");
    assert!(ar[0].none);
    assert!(ar[0].results.is_empty());
    assert_eq!(authenticated_by(&h, "example.org", "example.com"), None);
}

#[test]
fn rfc8601_b3_spf_is_not_dkim_or_dmarc() {
    let h = fixture("rfc8601-b3.eml");
    let ar = results(&h);
    assert_eq!(ar[0].results[0].method, "spf");
    assert_eq!(ar[0].results[0].result, "pass");
    assert_eq!(
        ar[0].results[0].prop("smtp", "mailfrom"),
        Some("example.net")
    );
    assert_eq!(authenticated_by(&h, "example.com", "example.net"), None);
}

#[test]
fn rfc8601_b4_auth_spf_iprev() {
    let h = fixture("rfc8601-b4.eml");
    let ar = results(&h);
    assert_eq!(ar.len(), 2);
    let methods: Vec<&str> = ar[0].results.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(methods, ["auth", "spf"]);
    assert_eq!(
        ar[0].results[0].prop("smtp", "auth"),
        Some("sender@example.net")
    );
    assert_eq!(
        ar[1].results[0].prop("policy", "iprev"),
        Some("192.0.2.200")
    );
    assert_eq!(authenticated_by(&h, "example.com", "example.net"), None);
}

#[test]
fn rfc8601_b5_dkim_pass_for_the_from_domain() {
    let h = fixture("rfc8601-b5.eml");
    assert_eq!(results(&h).len(), 2);
    assert_eq!(
        authenticated_by(&h, "example.com", "example.com"),
        Some(AuthBy::Dkim)
    );
    // The same fields under another authserv-id are not ours.
    assert_eq!(authenticated_by(&h, "example.net", "example.com"), None);
}

#[test]
fn rfc8601_b6_multi_tiered() {
    let h = fixture("rfc8601-b6.eml");
    let ar = results(&h);
    assert_eq!(ar[0].results[0].reason.as_deref(), Some("good signature"));
    assert_eq!(
        ar[0].results[0].prop("header", "i"),
        Some("@mail-router.example.net")
    );
    assert_eq!(ar[0].results[1].result, "fail");
    // Under example.com the From: domain's signature failed; the passing
    // one is the list server's.
    assert_eq!(
        authenticated_by(&h, "example.com", "newyork.example.com"),
        None
    );
    // example.net (the list server) saw it pass, by header.i's domain.
    assert_eq!(
        authenticated_by(&h, "example.net", "newyork.example.com"),
        Some(AuthBy::Dkim)
    );
}

#[test]
fn rfc8601_b7_comment_heavy() {
    let h = fixture("rfc8601-b7.eml");
    let ar = results(&h);
    assert_eq!(ar[0].authserv_id, "foo.example.net");
    let r = &ar[0].results[0];
    assert_eq!(
        (r.method.as_str(), r.method_version, r.result.as_str()),
        ("dkim", Some(1), "fail")
    );
    assert_eq!(r.prop("policy", "expired"), Some("1362471462"));
}

#[test]
fn a_pass_inside_a_comment_or_a_reason_does_not_count() {
    assert_eq!(
        by("mx.example.org; dkim=fail (dkim=pass header.d=example.org)"),
        None
    );
    assert_eq!(
        by("mx.example.org; dkim=fail reason=\"dkim=pass header.d=example.org\""),
        None
    );
    assert_eq!(by("mx.example.org; dkim=fail reason=dkim=pass"), None);
    assert_eq!(
        by("mx.example.org (dkim=pass header.d=example.org); none"),
        None
    );
    // A comment where the domain should be: no value.
    assert_eq!(by("mx.example.org; dkim=pass header.d=(example.org)"), None);
}

#[test]
fn a_semicolon_inside_a_quoted_value_does_not_start_a_result() {
    assert_eq!(
        by("mx.example.org; spf=pass smtp.mailfrom=\"x;dkim=pass header.d=example.org\"@evil.test"),
        None
    );
}

#[test]
fn quoted_values_upper_case_spacing_and_folds() {
    assert_eq!(
        by("mx.example.org; dkim=pass header.d=\"example.org\""),
        Some(AuthBy::Dkim)
    );
    assert_eq!(
        by("mx.example.org; dkim=pass header.d=\"exa\\mple.org\""),
        Some(AuthBy::Dkim)
    );
    assert_eq!(
        by("MX.Example.ORG; DKIM=PASS HEADER.D=EXAMPLE.ORG."),
        Some(AuthBy::Dkim)
    );
    assert_eq!(
        by("\"mx.example.org\"\r\n\t;\r\n dkim \r\n = pass\r\n header . d =\r\n example.org ;"),
        Some(AuthBy::Dkim)
    );
    assert_eq!(
        by("mx.example.org;dkim=pass header.d=example.org;dmarc=pass header.from=example.org"),
        Some(AuthBy::Dkim)
    );
}

#[test]
fn dkim_by_header_i_and_dmarc_by_header_from() {
    assert_eq!(
        by("mx.example.org; dkim=pass header.i=@example.org"),
        Some(AuthBy::Dkim)
    );
    assert_eq!(
        by("mx.example.org; dkim=pass header.i=alice@Example.Org"),
        Some(AuthBy::Dkim)
    );
    assert_eq!(by("mx.example.org; dkim=pass header.i=example.org"), None);
    // DMARC only with an aligned DKIM pass (a parent domain's signature
    // aligns): a pass resting on SPF alone vouches for no header or body.
    assert_eq!(
        by("mx.example.org; dmarc=pass (p=none dis=none) header.from=example.org"),
        None
    );
    assert_eq!(
        by(
            "mx.example.org; spf=pass smtp.mailfrom=example.org; dmarc=pass header.from=example.org"
        ),
        None
    );
    assert_eq!(
        by("mx.example.org; dkim=none; dmarc=pass header.from=example.org"),
        None
    );
    assert_eq!(
        by_for(
            "mx.example.org; dkim=pass header.d=example.org; dmarc=pass header.from=mail.example.org",
            "mail.example.org"
        ),
        Some(AuthBy::Dmarc)
    );
    assert_eq!(
        by_for(
            "mx.example.org; dkim=pass header.d=ample.org; dmarc=pass header.from=example.org",
            "example.org"
        ),
        None
    );
    // Both: DKIM is named (the stronger statement about the key's origin).
    assert_eq!(
        by("mx.example.org; dmarc=pass header.from=example.org; dkim=pass header.d=example.org"),
        Some(AuthBy::Dkim)
    );
}

#[test]
fn only_a_pass_for_exactly_the_from_domain_counts() {
    for v in [
        "mx.example.org; dkim=fail header.d=example.org",
        "mx.example.org; dkim=neutral header.d=example.org",
        "mx.example.org; dkim=pass",
        "mx.example.org; dkim=pass header.d=mail.example.org",
        "mx.example.org; dkim=pass header.d=org",
        "mx.example.org; dkim=pass header.d=example.org.evil.test",
        "mx.example.org; dkim=pass header.s=example.org",
        "mx.example.org; dkim=pass smtp.d=example.org",
        "mx.example.org; dmarc=pass header.d=example.org",
        "mx.example.org; dmarc=fail header.from=example.org",
        "mx.example.org; spf=pass smtp.mailfrom=example.org",
        "mx.example.org; arc=pass header.d=example.org",
        "mx.example.org; none",
    ] {
        assert_eq!(by(v), None, "{v}");
    }
}

#[test]
fn unknown_methods_are_skipped_not_fatal() {
    assert_eq!(
        by("mx.example.org; x-foo=pass header.d=example.org; dkim=pass header.d=example.org"),
        Some(AuthBy::Dkim)
    );
}

#[test]
fn idna_forms_of_the_domain_are_one() {
    let h = field("mx.example.org; dkim=pass header.d=bücher.example");
    assert_eq!(
        authenticated_by(&h, "mx.example.org", "xn--bcher-kva.example"),
        Some(AuthBy::Dkim)
    );
    let h = field(
        "mx.bücher.example; dkim=pass header.d=bücher.example; dmarc=pass header.from=xn--bcher-kva.example",
    );
    assert_eq!(
        authenticated_by(&h, "mx.xn--bcher-kva.example", "xn--bcher-kva.example"),
        Some(AuthBy::Dkim)
    );
}

#[test]
fn fields_under_other_authserv_ids_are_ignored() {
    let mut h = field("evil.test; dkim=pass header.d=example.org");
    assert_eq!(authenticated_by(&h, "mx.example.org", "example.org"), None);
    h.extend(field("mx.example.org; dkim=fail header.d=example.org"));
    assert_eq!(authenticated_by(&h, "mx.example.org", "example.org"), None);
    // A prefix or suffix of ours is another id.
    assert_eq!(
        by("mx.example.org.evil.test; dkim=pass header.d=example.org"),
        None
    );
    assert_eq!(by("x.mx.example.org; dkim=pass header.d=example.org"), None);
    // Nothing is trusted without a configured id.
    let h = field("mx.example.org; dkim=pass header.d=example.org");
    assert_eq!(authenticated_by(&h, "", "example.org"), None);
    // A passing field among others of ours counts.
    let mut h = field("mx.example.org; spf=pass smtp.mailfrom=example.org");
    h.extend(field("mx.example.org; dkim=pass header.d=example.org"));
    assert_eq!(
        authenticated_by(&h, "mx.example.org", "example.org"),
        Some(AuthBy::Dkim)
    );
}

#[test]
fn versions_other_than_one_are_not_read() {
    assert!(matches!(
        parse(b" mx.example.org 2; dkim=pass header.d=example.org"),
        Err(AuthResultsError::Version(v)) if v == "2"
    ));
    assert_eq!(by("mx.example.org 2; dkim=pass header.d=example.org"), None);
    assert_eq!(
        by("mx.example.org 1; dkim=pass header.d=example.org"),
        Some(AuthBy::Dkim)
    );
    assert_eq!(by("mx.example.org; dkim/2=pass header.d=example.org"), None);
    assert_eq!(
        by("mx.example.org; dkim/1=pass header.d=example.org"),
        Some(AuthBy::Dkim)
    );
    assert_eq!(
        by("mx.example.org; dkim/99999999999999=pass header.d=example.org"),
        None
    );
}

#[test]
fn garbage_ignores_the_whole_field() {
    for v in [
        "",
        ";",
        "mx.example.org",
        "mx.example.org;",
        "mx.example.org; ;",
        "mx.example.org dkim=pass header.d=example.org",
        "mx.example.org; dkim=pass header.d=example.org garbage",
        "mx.example.org; dkim=pass header.d=example.org; dkim",
        "mx.example.org; dkim=pass header.d=example.org action=none",
        "mx.example.org; dkim=pass header.d=example.org (unterminated",
        "mx.example.org; dkim=pass header.d=\"example.org",
        "mx.example.org; dkim=pass header.d=",
        "mx.example.org; dkim=pass header.=example.org",
        "mx.example.org; =pass header.d=example.org",
        "mx.example.org; dkim-=pass header.d=example.org",
        "mx.example.org; none; dkim=pass header.d=example.org",
        "mx.example.org; dkim/=pass header.d=example.org",
        "mx.example.org; dkim=pass reason=x reason=y header.d=example.org",
        "mx.example.org; dkim=pass header.d=example.org reason=late",
        "\"mx.example.org; dkim=pass header.d=example.org",
        "mx.example.org; dkim=pass header.d=example.org\u{0};",
    ] {
        assert!(parse(format!(" {v}").as_bytes()).is_err(), "{v:?} parsed");
        assert_eq!(by(v), None, "{v:?}");
    }
}

#[test]
fn a_trailing_semicolon_is_tolerated() {
    assert_eq!(
        by("mx.example.org; dkim=pass header.d=example.org;"),
        Some(AuthBy::Dkim)
    );
    assert_eq!(
        by("mx.example.org; dkim=pass header.d=example.org; (c)\r\n "),
        Some(AuthBy::Dkim)
    );
}

#[test]
fn real_world_producers() {
    // OpenDKIM and OpenDMARC.
    let h = [
        HeaderField::new(
            "Authentication-Results",
            " mx.example.org;\r\n\tdkim=pass (2048-bit key; unprotected) header.d=example.org header.i=@example.org header.a=rsa-sha256 header.s=mail header.b=k+2/Xy9Q",
        ),
        HeaderField::new(
            "Authentication-Results",
            " mx.example.org; dmarc=pass (p=reject dis=none) header.from=example.org",
        ),
    ];
    assert_eq!(
        authenticated_by(&h, "mx.example.org", "example.org"),
        Some(AuthBy::Dkim)
    );
    // rspamd.
    assert_eq!(
        by(
            "mx.example.org;\r\n\tdkim=pass header.d=example.org header.s=dkim header.b=\"AbC/dE+f\";\r\n\tspf=pass (mx.example.org: domain of alice@example.org designates 192.0.2.1 as permitted sender) smtp.mailfrom=alice@example.org;\r\n\tdmarc=pass (policy=reject) header.from=example.org"
        ),
        Some(AuthBy::Dkim)
    );
}

#[test]
fn authserv_ids_compare_case_insensitively() {
    assert!(same_authserv_id("MX.EXAMPLE.ORG", "mx.example.org"));
    assert!(same_authserv_id("mx.example.org.", "mx.example.org"));
    assert!(same_authserv_id("example-auth", "EXAMPLE-AUTH"));
    assert!(!same_authserv_id("mx.example.org", ""));
    assert!(!same_authserv_id("", ""));
    assert!(!same_authserv_id("mx2.example.org", "mx.example.org"));
}
