//! Directory entries as the LDAP source reads them: a search result
//! entry's BER (RFC 4511 §4.5.2) read without trusting it (ldap3's own
//! reader panics on a malformed entry), and the key material and mail
//! addresses in its attributes. Attribute names compare without case and
//! without options (`userCertificate` is `userCertificate;binary`), as
//! servers differ in which they return. Only the attributes asked for
//! are kept, each (by name, however often the server repeats it) with at
//! most [`MAX_VALUES`] values: an entry with more is unreadable (a
//! failure), so that no entry can make a lookup work without end.

use ldap3::asn1::{PL, StructureTag};
use openssl::pkcs7::Pkcs7;
use openssl::x509::X509;

use crate::address::{Address, fold_case};
use crate::material::{KeyMaterial, Method, Provenance};

/// Most values of one attribute: more keys or addresses than any person
/// has, few enough to check each.
pub const MAX_VALUES: usize = 64;

/// Bytes counted for each value besides its own (the bookkeeping that
/// the size of an empty value would hide).
const VALUE_OVERHEAD: usize = 32;

/// One entry: its DN and every attribute value, as bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's DN.
    pub dn: String,
    /// Attribute descriptions and their values.
    pub attributes: Vec<(String, Vec<Vec<u8>>)>,
}

impl DirEntry {
    /// Bytes held (for the cache's budget and the search's bound).
    pub fn size(&self) -> usize {
        self.dn.len()
            + self
                .attributes
                .iter()
                .map(|(n, vs)| n.len() + vs.iter().map(|v| v.len() + VALUE_OVERHEAD).sum::<usize>())
                .sum::<usize>()
    }

    /// The DN for logs and `lookup`: control characters shown as `?`.
    pub fn shown_dn(&self) -> String {
        shown(&self.dn)
    }

    /// The values of the attributes named in `names`, each with the name
    /// it came under, in the order of `names`.
    pub fn values<'a>(&'a self, names: &'a [String]) -> impl Iterator<Item = (&'a str, &'a [u8])> {
        names.iter().flat_map(move |want| {
            self.attributes
                .iter()
                .filter(move |(have, _)| same_attribute(have, want))
                .flat_map(|(have, vs)| vs.iter().map(move |v| (have.as_str(), v.as_slice())))
        })
    }

    /// The mail addresses the entry lists in `names` (Active Directory's
    /// `smtp:`/`SMTP:` prefixes removed; other prefixed forms, such as
    /// `X500:`, are not mail addresses and are skipped).
    pub fn addresses(&self, names: &[String]) -> Vec<Address> {
        let mut out: Vec<Address> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (_, v) in self.values(names) {
            let Ok(text) = std::str::from_utf8(v) else {
                continue;
            };
            let text = text.trim();
            let bare = match text.split_once(':') {
                Some((prefix, rest)) if prefix.eq_ignore_ascii_case("smtp") => rest,
                Some((prefix, _)) if !prefix.contains('@') && !prefix.contains('"') => continue,
                _ => text,
            };
            if let Ok(a) = Address::parse(bare)
                && seen.insert((a.domain().to_owned(), fold_case(&a.local_unquoted())))
            {
                out.push(a);
            }
        }
        out
    }

    /// The key material of `method` in the attributes `names`, each
    /// marked with the entry and attribute it came from. A PKCS#7 bag
    /// (`userSMIMECertificate`) gives each certificate in it.
    pub fn keys(
        &self,
        method: Method,
        names: &[String],
        url: &str,
        provenance: Provenance,
    ) -> Vec<KeyMaterial> {
        let mut out = Vec::new();
        for (n, (attr, value)) in self.values(names).enumerate() {
            let dn = self.shown_dn();
            let attr = shown(attr);
            let origin = |k: Option<usize>| match k {
                Some(k) => format!("{url} {dn} {attr} #{} (certificate {k})", n + 1),
                None => format!("{url} {dn} {attr} #{}", n + 1),
            };
            let material = |data: Vec<u8>, origin: String| KeyMaterial {
                bound_addresses: Vec::new(),
                method,
                data,
                origin,
                provenance,
            };
            match method {
                Method::Smime => match certificates_in_bag(value) {
                    Some(certs) => {
                        for (k, der) in certs.into_iter().enumerate() {
                            out.push(material(der, origin(Some(k + 1))));
                        }
                    }
                    // A certificate (DER or PEM), or something the backend
                    // refuses with a reason `lookup` shows.
                    None => out.push(material(value.to_vec(), origin(None))),
                },
                Method::OpenPgp => out.push(material(value.to_vec(), origin(None))),
            }
        }
        out
    }
}

/// Most characters of a DN or attribute name shown in an origin.
const SHOWN_CHARS: usize = 256;

/// `text` for logs and `lookup`: control characters shown as `?`, at
/// most [`SHOWN_CHARS`] of them.
fn shown(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(SHOWN_CHARS)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().nth(SHOWN_CHARS).is_some() {
        out.push('…');
    }
    out
}

/// Whether attribute description `have` (as the server wrote it) is the
/// attribute `want` (as configured): the same name, any case, options
/// aside.
pub fn same_attribute(have: &str, want: &str) -> bool {
    fn base(s: &str) -> &str {
        s.split(';').next().unwrap_or("")
    }
    base(have).eq_ignore_ascii_case(base(want))
}

/// The certificates of a PKCS#7 SignedData bag, DER-encoded; `None` when
/// `value` is no such bag (a certificate is not one).
fn certificates_in_bag(value: &[u8]) -> Option<Vec<Vec<u8>>> {
    if X509::from_der(value).is_ok() {
        return None;
    }
    let bag = Pkcs7::from_der(value).ok()?;
    let certs = bag.signed()?.certificates()?;
    // More than a person has is refused by the source; one past the bound
    // is enough to tell.
    Some(
        certs
            .iter()
            .take(MAX_VALUES + 1)
            .filter_map(|c| c.to_der().ok())
            .collect(),
    )
}

/// A search result entry (application tag 4: the DN, then a sequence of
/// attribute type and value set), with the attributes in `wanted` only,
/// or what is wrong with it.
pub fn parse_entry(tag: StructureTag, wanted: &[String]) -> Result<DirEntry, &'static str> {
    if tag.id != 4 {
        return Err("not a search result entry");
    }
    let PL::C(mut parts) = tag.payload else {
        return Err("entry is not constructed");
    };
    if parts.len() != 2 {
        return Err("entry has not two parts");
    }
    let attrs = parts.pop().ok_or("no attributes")?;
    let dn = parts.pop().ok_or("no DN")?;
    let PL::P(dn) = dn.payload else {
        return Err("DN is not a string");
    };
    let dn = String::from_utf8(dn).map_err(|_| "DN is not UTF-8")?;
    let PL::C(list) = attrs.payload else {
        return Err("attributes are not a sequence");
    };
    let mut attributes: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
    for a in list {
        let PL::C(mut pair) = a.payload else {
            return Err("attribute is not a sequence");
        };
        if pair.len() != 2 {
            return Err("attribute has not two parts");
        }
        let vals = pair.pop().ok_or("no values")?;
        let name = pair.pop().ok_or("no attribute type")?;
        let PL::P(name) = name.payload else {
            return Err("attribute type is not a string");
        };
        let name = String::from_utf8(name).map_err(|_| "attribute type is not UTF-8")?;
        if !wanted.iter().any(|w| same_attribute(&name, w)) {
            continue;
        }
        let PL::C(vals) = vals.payload else {
            return Err("values are not a set");
        };
        // One element per attribute, however often the server repeats it
        // (in any case, with other options): the list stays as short as
        // `wanted`, and the values are counted together.
        let at = match attributes
            .iter()
            .position(|(n, _)| same_attribute(n, &name))
        {
            Some(i) => i,
            None => {
                attributes.push((name, Vec::new()));
                attributes.len() - 1
            }
        };
        let Some((_, values)) = attributes.get_mut(at) else {
            return Err("attribute lost");
        };
        if values.len() + vals.len() > MAX_VALUES {
            return Err("an attribute has more values than a person has keys or addresses");
        }
        for v in vals {
            match v.payload {
                PL::P(bytes) => values.push(bytes),
                PL::C(_) => return Err("value is not a string"),
            }
        }
    }
    Ok(DirEntry { dn, attributes })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use ldap3::asn1::TagClass;

    fn prim(id: u64, class: TagClass, v: &[u8]) -> StructureTag {
        StructureTag {
            class,
            id,
            payload: PL::P(v.to_vec()),
        }
    }

    fn cons(id: u64, class: TagClass, v: Vec<StructureTag>) -> StructureTag {
        StructureTag {
            class,
            id,
            payload: PL::C(v),
        }
    }

    fn entry(dn: &str, attrs: &[(&str, &[&[u8]])]) -> StructureTag {
        let u = TagClass::Universal;
        let list = attrs
            .iter()
            .map(|(n, vs)| {
                cons(
                    16,
                    u,
                    vec![
                        prim(4, u, n.as_bytes()),
                        cons(17, u, vs.iter().map(|v| prim(4, u, v)).collect()),
                    ],
                )
            })
            .collect();
        cons(
            4,
            TagClass::Application,
            vec![prim(4, u, dn.as_bytes()), cons(16, u, list)],
        )
    }

    fn all() -> Vec<String> {
        ["mail", "proxyAddresses", "userCertificate"]
            .map(str::to_owned)
            .to_vec()
    }

    #[test]
    fn entries_are_read_as_bytes() {
        let e = parse_entry(
            entry(
                "cn=a,dc=x",
                &[
                    ("mail", &[b"a@x.test"]),
                    ("userCertificate;binary", &[b"\x30\x82\xff", b"ascii"]),
                    ("jpegPhoto", &[b"not asked for"]),
                ],
            ),
            &all(),
        )
        .unwrap();
        assert_eq!(e.attributes.len(), 2);
        assert_eq!(e.dn, "cn=a,dc=x");
        let names = vec!["usercertificate".to_owned()];
        let v: Vec<_> = e.values(&names).collect();
        assert_eq!(
            v,
            [
                ("userCertificate;binary", &b"\x30\x82\xff"[..]),
                ("userCertificate;binary", &b"ascii"[..])
            ]
        );
    }

    #[test]
    fn malformed_entries_are_errors_not_panics() {
        let u = TagClass::Universal;
        for bad in [
            prim(4, TagClass::Application, b"x"),
            cons(4, TagClass::Application, vec![]),
            cons(5, TagClass::Application, vec![]),
            cons(
                4,
                TagClass::Application,
                vec![prim(4, u, b"dn"), prim(4, u, b"x")],
            ),
            cons(
                4,
                TagClass::Application,
                vec![prim(4, u, b"\xff"), cons(16, u, vec![])],
            ),
            cons(
                4,
                TagClass::Application,
                vec![prim(4, u, b"dn"), cons(16, u, vec![prim(4, u, b"x")])],
            ),
            cons(
                4,
                TagClass::Application,
                vec![
                    prim(4, u, b"dn"),
                    cons(16, u, vec![cons(16, u, vec![prim(4, u, b"mail")])]),
                ],
            ),
        ] {
            assert!(parse_entry(bad, &all()).is_err());
        }
    }

    #[test]
    fn too_many_values_are_refused() {
        let many: Vec<&[u8]> = vec![b"a@x.test"; MAX_VALUES + 1];
        let e = parse_entry(entry("cn=a", &[("mail", &many)]), &all());
        assert!(e.is_err());
        let fine = parse_entry(entry("cn=a", &[("mail", &many[..MAX_VALUES])]), &all()).unwrap();
        assert_eq!(fine.addresses(&all()).len(), 1);
        // The same attribute sent twice counts once, as one attribute.
        let half: Vec<&[u8]> = vec![b"a@x.test"; MAX_VALUES / 2 + 1];
        let twice = entry("cn=a", &[("mail", &half), ("MAIL", &half)]);
        assert!(parse_entry(twice, &all()).is_err());
        // Repeated without values: one attribute, not a list to search.
        let empty: &[&[u8]] = &[];
        let repeated: Vec<(&str, &[&[u8]])> = vec![("mail", empty); 10_000];
        let e = parse_entry(entry("cn=a", &repeated), &all()).unwrap();
        assert_eq!(e.attributes.len(), 1);
        // Not asked for: not even counted.
        parse_entry(entry("cn=a", &[("member", &many)]), &all()).unwrap();
    }

    #[test]
    fn active_directory_addresses() {
        let e = parse_entry(
            entry(
                "cn=p",
                &[
                    ("mail", &[b"Primary@x.test"]),
                    (
                        "proxyAddresses",
                        &[
                            b"SMTP:primary@x.test",
                            b"smtp:alias@x.test",
                            b"X500:/o=Org/cn=p",
                            b"sip:p@x.test",
                            b"smtp:PRIMARY@x.test",
                        ],
                    ),
                ],
            ),
            &all(),
        )
        .unwrap();
        let names = vec!["mail".to_owned(), "proxyaddresses".to_owned()];
        let got: Vec<String> = e.addresses(&names).iter().map(|a| a.to_string()).collect();
        assert_eq!(got, ["Primary@x.test", "alias@x.test"]);
    }
}
