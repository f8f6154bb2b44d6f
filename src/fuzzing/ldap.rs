//! The LDAP source's parsers: a search result entry as the server sends
//! it (BER, read by lber, then by our reader, which must never panic),
//! the keys and addresses in it, and the filter escaping, which must keep
//! any address one value of one assertion.

use ldap3::asn1::{ASNTag, PL, StructureTag, parse_tag};

use crate::keys::ldap::entry::parse_entry;
use crate::keys::ldap::{FilterTemplate, escape};
use crate::material::{Method, Provenance, Security, SourceKind};

/// Byte 0 chooses: even → the rest is an entry's BER; odd → the rest is
/// an address for the filter.
pub fn ldap(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    if sel % 2 == 0 {
        entry(rest);
    } else {
        filter(rest);
    }
}

fn entry(ber: &[u8]) {
    let Ok((_, tag)) = parse_tag(ber) else {
        return;
    };
    let wanted: Vec<String> = [
        "mail",
        "proxyAddresses",
        "userCertificate",
        "userSMIMECertificate",
        "pgpKey",
    ]
    .map(str::to_owned)
    .to_vec();
    let Ok(e) = parse_entry(tag, &wanted) else {
        return;
    };
    assert!(e.attributes.iter().all(|(n, _)| {
        wanted
            .iter()
            .any(|w| crate::keys::ldap::entry::same_attribute(n, w))
    }));
    let names = ["mail".to_owned(), "proxyAddresses".to_owned()];
    for a in e.addresses(&names) {
        assert!(!a.to_string().is_empty());
    }
    let attrs = [
        "userCertificate".to_owned(),
        "userSMIMECertificate".to_owned(),
    ];
    let p = Provenance::now(SourceKind::Ldap, Security::Directory);
    for method in Method::ALL {
        for k in e.keys(method, &attrs, "ldap://x", p) {
            assert_eq!(k.method, method);
            assert!(k.origin.contains(&e.shown_dn()));
            assert!(!k.origin.contains(|c: char| c.is_control()));
        }
    }
    let bytes: usize = e
        .attributes
        .iter()
        .map(|(n, v)| n.len() + v.iter().map(Vec::len).sum::<usize>())
        .sum();
    assert!(e.size() >= e.dn.len() + bytes);
    assert!(
        e.attributes
            .iter()
            .all(|(_, v)| v.len() <= crate::keys::ldap::entry::MAX_VALUES)
    );
}

fn filter(raw: &[u8]) {
    let addr = String::from_utf8_lossy(raw);
    let escaped = escape(&addr);
    assert!(!escaped.contains(['*', '(', ')', '\0']));
    let Ok(t) = FilterTemplate::parse("(mail={address})") else {
        panic!("the default template parses");
    };
    let f = t.render(&addr);
    let Ok(tag) = ldap3::parse_filter(&f) else {
        panic!("an escaped address broke the filter: {f:?}");
    };
    // One equality assertion (context tag 3) comparing exactly the address.
    let st: StructureTag = tag.into_structure();
    assert_eq!(st.id, 3, "{f:?}");
    let PL::C(parts) = st.payload else {
        panic!("equality match is constructed");
    };
    assert_eq!(parts.len(), 2);
    match &parts[1].payload {
        PL::P(v) => assert_eq!(v.as_slice(), addr.as_bytes(), "{f:?}"),
        PL::C(_) => panic!("assertion value is a string"),
    }
}
