//! Keys and trust against a real slapd (tests/env/ldap.rs), with entries
//! added for each case: the same key twice in an entry, two directories
//! at different trust, an entry that claims other users' addresses, the
//! spellings of an address the directory compares, IDN domains. And a
//! directory below a rule's `min_trust`, which is never asked.

use autoencrypt_milter::keys::TrustLevel;
use autoencrypt_milter::policy::KeyOutcome;

use super::certs::{cert, sorted};
use super::ldap::{Bind, Endpoint, LdapEnv, b64};
use super::server::{self, Session};
use super::*;

/// The plain slapd with the milter's simple bind.
fn plain(env: &LdapEnv) -> LdapConfig {
    LdapConfig {
        url: env.ldap_url().to_owned(),
        domains: vec![env.domain().to_owned(), "xn--bcher-kva.test".to_owned()],
        base: env.people_base().to_owned(),
        bind_dn: env.bind_dn().to_owned(),
        bind_password_file: Some(env.password_file()),
        timeout_ms: 2_000,
        connect_timeout_ms: 1_000,
        ..LdapConfig::default()
    }
}

/// The Active Directory pattern: aliases in proxyAddresses.
fn ad(env: &LdapEnv) -> LdapConfig {
    LdapConfig {
        filter: "(|(mail={address})(proxyAddresses=smtp:{address}))".to_owned(),
        address_attributes: vec!["mail".to_owned(), "proxyAddresses".to_owned()],
        ..plain(env)
    }
}

fn upper(list: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| s.to_ascii_uppercase()).collect();
    v.sort();
    v
}

fn read(p: &std::path::Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

#[test]
fn the_same_certificate_in_both_attributes_is_one_recipient() {
    let env = LdapEnv::start();
    let rt = runtime();
    let one = env.user("one");
    let der = read(&one.certs_der[0]);
    env.modify(&format!(
        "dn: {}\nchangetype: modify\nadd: userSMIMECertificate\nuserSMIMECertificate:: {}\n",
        one.dn,
        b64(&super::certs::bag(&[&der]))
    ));
    let o = resolve(&rt, &service(vec![plain(&env)]), &one.address);
    assert_eq!(usable(&o), upper(&one.valid_cert_sha256()));
}

#[test]
fn the_same_certificate_as_der_and_pem_is_one_recipient() {
    let env = LdapEnv::start();
    let rt = runtime();
    let one = env.user("one");
    env.modify(&format!(
        "dn: {}\nchangetype: modify\nadd: userSMIMECertificate\nuserSMIMECertificate:: {}\n",
        one.dn,
        b64(&read(&one.certs[0]))
    ));
    let o = resolve(&rt, &service(vec![plain(&env)]), &one.address);
    assert_eq!(usable(&o), upper(&one.valid_cert_sha256()));
}

#[test]
fn the_same_openpgp_key_binary_and_armored_is_one_recipient() {
    let env = LdapEnv::start();
    let rt = runtime();
    let pgp = env.user("pgp");
    env.modify(&format!(
        "dn: {}\nchangetype: modify\nadd: pgpKey\npgpKey:: {}\n",
        pgp.dn,
        b64(&read(pgp.openpgp_public_asc.as_ref().unwrap()))
    ));
    let keys = service(vec![plain(&env)]);
    let o = resolve_with(&rt, &keys, &pgp.address, Method::OpenPgp, &only_ldap());
    assert_eq!(usable(&o), [pgp.openpgp_fpr.clone().unwrap()]);
}

#[test]
fn two_directories_at_different_trust_are_asked_by_trust_and_min_trust() {
    let env = LdapEnv::start();
    let rt = runtime();
    let one = env.user("one");
    let want = upper(&one.valid_cert_sha256());
    // Marked filters, to tell the two apart in slapd's log.
    let tls_filter = "(&(objectClass=inetOrgPerson)(mail={address}))";
    let tls_dir = LdapConfig {
        trust: TrustLevel::Tls,
        filter: tls_filter.to_owned(),
        ..plain(&env)
    };
    let tls_searches = || {
        env.plain_log()
            .matches("filter=\"(&(objectClass=inetOrgPerson)(mail=")
            .count()
    };
    let trust_of = |o: &KeyOutcome<Recipient>| match o {
        KeyOutcome::Found { usable, .. } => usable
            .iter()
            .map(|r| r.provenance.trust)
            .collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };

    // Both have the entry; the lower one is configured first. The
    // operator's decides, and the other is not even asked.
    let keys = service(vec![tls_dir.clone(), plain(&env)]);
    let o = resolve(&rt, &keys, &one.address);
    assert_eq!(usable(&o), want);
    assert_eq!(trust_of(&o), [TrustLevel::Operator]);
    assert_eq!(tls_searches(), 0);

    // The operator's has no entry: the lower one's key, at its trust —
    // unless the rule asks for more than it can give.
    let blind = LdapConfig {
        filter: "(&(mail={address})(uid=nobody))".to_owned(),
        ..plain(&env)
    };
    let keys = service(vec![tls_dir.clone(), blind.clone()]);
    let o = resolve(&rt, &keys, &one.address);
    assert_eq!(usable(&o), want);
    assert_eq!(trust_of(&o), [TrustLevel::Tls]);
    assert_eq!(tls_searches(), 1);
    for min in [TrustLevel::Dnssec, TrustLevel::Operator] {
        let choice = KeyChoice {
            min_trust: min,
            ..only_ldap()
        };
        let keys = service(vec![tls_dir.clone(), blind.clone()]);
        not_found(&resolve_with(
            &rt,
            &keys,
            &one.address,
            Method::Smime,
            &choice,
        ));
    }
    assert_eq!(tls_searches(), 1, "never asked below min_trust");
}

#[test]
fn a_directory_below_the_rules_min_trust_is_never_asked() {
    let rt = runtime();
    let h = server::start(|s: &mut Session| while s.next().is_some() {});
    let keys = service(vec![LdapConfig {
        trust: TrustLevel::Tls,
        ..dir(h.port())
    }]);
    let choice = KeyChoice {
        min_trust: TrustLevel::Dnssec,
        ..only_ldap()
    };
    not_found(&resolve_with(
        &rt,
        &keys,
        "a@example.org",
        Method::Smime,
        &choice,
    ));
    assert_eq!(h.connections(), 0);
}

#[test]
fn an_entry_claiming_other_users_addresses_does_not_get_their_mail() {
    let env = LdapEnv::start();
    let rt = runtime();
    let domain = env.domain().to_owned();
    let thief = cert(&format!("thief@{domain}"));
    env.add(&format!(
        "dn: uid=thief,{}\nobjectClass: inetOrgPerson\nobjectClass: autoencryptProxyAddresses\n\
         uid: thief\ncn: thief\nsn: thief\nmail: thief@{domain}\n\
         proxyAddresses: smtp:one@{domain}\nproxyAddresses: smtp:nokey@{domain}\n\
         proxyAddresses: smtp:ghost@{domain}\nuserCertificate;binary:: {}\n",
        env.people_base(),
        b64(&thief.der)
    ));
    let keys = service(vec![ad(&env)]);
    // A user with a key: only that user's key; the claimer's is refused.
    let one = env.user("one");
    let o = resolve(&rt, &keys, &one.address);
    assert_eq!(usable(&o), upper(&one.valid_cert_sha256()));
    assert!(
        matches!(rejected(&o)[..], [RejectReason::AddressMismatch(_)]),
        "{o:?}"
    );
    // A user without a key: still no key (not the claimer's).
    let o = resolve(&rt, &keys, &env.user("nokey").address);
    assert!(usable(&o).is_empty(), "{o:?}");
    assert!(
        matches!(rejected(&o)[..], [RejectReason::AddressMismatch(_)]),
        "{o:?}"
    );
    // An address nobody else's entry lists: the one entry that lists it
    // binds it to its key — the alias rule, as designed. The directory's
    // ACLs must keep users from writing their own address attributes.
    let o = resolve(&rt, &keys, &format!("ghost@{domain}"));
    assert_eq!(usable(&o), sorted(&[&thief]));
}

#[test]
fn spellings_the_directory_compares_and_ones_it_cannot_hold() {
    let env = LdapEnv::start();
    let rt = runtime();
    let domain = env.domain().to_owned();
    let idn = cert("idn@xn--bcher-kva.test");
    env.add(&format!(
        "dn: uid=idn,{}\nobjectClass: inetOrgPerson\nuid: idn\ncn: idn\nsn: idn\n\
         mail: idn@xn--bcher-kva.test\nuserCertificate;binary:: {}\n",
        env.people_base(),
        b64(&idn.der)
    ));
    let keys = service(vec![plain(&env)]);
    let one = env.user("one");
    let want = upper(&one.valid_cert_sha256());
    for a in [
        format!("ONE@{}.", domain.to_uppercase()),
        format!("\"one\"@{domain}"),
        format!("<one@{domain}>"),
        format!("<@relay.test:One@{domain}>"),
    ] {
        assert_eq!(usable(&resolve(&rt, &keys, &a)), want, "{a}");
    }
    // The IDN user, asked for in U-labels, is found by its A-label mail.
    let o = resolve(&rt, &keys, "idn@bücher.test");
    assert_eq!(usable(&o), sorted(&[&idn]));
    // What `mail` (IA5) cannot hold finds nothing, and is no failure.
    for a in [
        format!("ünï@{domain}"),
        format!("{}@{domain}", "x".repeat(1_500)),
        format!("\"a*)(mail=*\"@{domain}"),
        format!("\"\\\\2a\"@{domain}"),
    ] {
        not_found(&resolve(&rt, &keys, &a));
    }
}

#[test]
fn an_address_stored_with_u_labels_is_found() {
    let env = LdapEnv::start();
    let rt = runtime();
    let c = cert("idn2@xn--bcher-kva.test");
    env.add(&format!(
        "dn: uid=idn2,{}\nobjectClass: inetOrgPerson\nobjectClass: autoencryptProxyAddresses\n\
         uid: idn2\ncn: idn2\nsn: idn2\nproxyAddresses:: {}\nuserCertificate;binary:: {}\n",
        env.people_base(),
        b64("smtp:idn2@bücher.test".as_bytes()),
        b64(&c.der)
    ));
    // The directory holds it, under the spelling it was given.
    let found = env.ldapsearch(
        Endpoint::Plain,
        Bind::Milter,
        env.people_base(),
        "(proxyAddresses=smtp:idn2@bücher.test)",
        &["uid"],
    );
    assert_eq!(found.entries.len(), 1, "{found:?}");
    let o = resolve(&rt, &service(vec![ad(&env)]), "idn2@bücher.test");
    assert_eq!(usable(&o), sorted(&[&c]));
}
