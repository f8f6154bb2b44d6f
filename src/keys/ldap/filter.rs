//! The search filter of an `[[ldap]]` directory: the operator's template
//! with `{address}` in it, and the escaping of the address per RFC 4515
//! §3 so that no address can change the filter's shape. An address like
//! `"a*)(uid=*"@example.org` is a value to compare, never a wildcard or a
//! second assertion: the search cannot be widened.

/// The placeholder the template must contain.
pub const PLACEHOLDER: &str = "{address}";

/// A checked filter template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterTemplate {
    text: String,
}

impl FilterTemplate {
    /// `text` as a template: it must contain `{address}` and, with an
    /// address put in, be a filter that parses (RFC 4515).
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = FilterTemplate {
            text: text.trim().to_owned(),
        };
        if !t.text.contains(PLACEHOLDER) {
            return Err(format!(
                "{text:?} does not contain {PLACEHOLDER} (write \"(mail={{address}})\")"
            ));
        }
        let sample = t.render("user@example.org");
        if ldap3::parse_filter(&sample).is_err() {
            return Err(format!(
                "{text:?} is not an LDAP filter (RFC 4515) once the address is put in: {sample}"
            ));
        }
        Ok(t)
    }

    /// The filter for `address`, escaped.
    pub fn render(&self, address: &str) -> String {
        self.text.replace(PLACEHOLDER, &escape(address))
    }

    /// The filter matching any of `forms` (spellings of one address):
    /// the template's filter for each, joined by `|`.
    pub fn render_any(&self, forms: &[String]) -> String {
        match forms {
            [one] => self.render(one),
            many => {
                let mut f = String::from("(|");
                for a in many {
                    f.push_str(&self.render(a));
                }
                f.push(')');
                f
            }
        }
    }
}

/// `value` as an RFC 4515 assertion value: `*`, `(`, `)`, `\` and NUL
/// are written `\2a`, `\28`, `\29`, `\5c`, `\00`, and so is every byte
/// outside printable ASCII (legal either way; escaped, nothing between
/// here and the server can misread a UTF-8 local part).
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'*' | b'(' | b')' | b'\\' | 0 => push_hex(&mut out, b),
            0x21..=0x7e => out.push(char::from(b)),
            _ => push_hex(&mut out, b),
        }
    }
    out
}

fn push_hex(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('\\');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 0xf)]));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use ldap3::asn1::{ASNTag, PL, StructureTag};
    use proptest::prelude::*;

    /// The assertion values of an equality filter's parse tree, and how
    /// many assertions (of any kind) it has.
    fn shape(filter: &str) -> (usize, Vec<Vec<u8>>) {
        fn walk(t: &StructureTag, n: &mut usize, values: &mut Vec<Vec<u8>>) {
            // Context tags 0-2 are and/or/not; 3 is equalityMatch.
            match (&t.payload, t.id) {
                (PL::C(children), 0..=2) => {
                    for c in children {
                        walk(c, n, values);
                    }
                }
                (PL::C(children), 3) => {
                    *n += 1;
                    if let Some(StructureTag {
                        payload: PL::P(v), ..
                    }) = children.get(1)
                    {
                        values.push(v.clone());
                    }
                }
                _ => *n += 1,
            }
        }
        let tag = ldap3::parse_filter(filter).unwrap();
        let structure = tag.into_structure();
        let mut n = 0;
        let mut values = Vec::new();
        walk(&structure, &mut n, &mut values);
        (n, values)
    }

    #[test]
    fn an_injection_stays_one_value() {
        let t = FilterTemplate::parse("(mail={address})").unwrap();
        let hostile = "\"a*)(uid=*\"@example.org";
        let f = t.render(hostile);
        assert_eq!(f, "(mail=\"a\\2a\\29\\28uid=\\2a\"@example.org)");
        assert_eq!(shape(&f), (1, vec![hostile.as_bytes().to_vec()]));
    }

    #[test]
    fn the_active_directory_pattern() {
        let t = FilterTemplate::parse(
            "(&(objectClass=user)(|(mail={address})(proxyAddresses=smtp:{address})))",
        )
        .unwrap();
        let (n, values) = shape(&t.render("a\\b@x.org"));
        assert_eq!(n, 3);
        assert_eq!(values[1], b"a\\b@x.org");
        assert_eq!(values[2], b"smtp:a\\b@x.org");
    }

    #[test]
    fn both_spellings_of_an_idn_are_asked() {
        let t = FilterTemplate::parse("(mail={address})").unwrap();
        let f = t.render_any(&[
            "a@xn--bcher-kva.test".to_owned(),
            "a@bücher.test".to_owned(),
        ]);
        assert_eq!(
            f,
            "(|(mail=a@xn--bcher-kva.test)(mail=a@b\\c3\\bccher.test))"
        );
        assert_eq!(shape(&f).0, 2);
    }

    #[test]
    fn templates_are_checked() {
        assert!(FilterTemplate::parse("(mail=x)").is_err());
        assert!(FilterTemplate::parse("(mail={address}").is_err());
        assert!(FilterTemplate::parse("mail={address})(").is_err());
        assert!(FilterTemplate::parse(" (mail={address}) ").is_ok());
    }

    proptest! {
        /// Whatever the address, the filter keeps its one assertion and
        /// compares the address byte for byte.
        #[test]
        fn no_address_changes_the_shape(addr in "\\PC{0,40}") {
            let t = FilterTemplate::parse("(mail={address})").unwrap();
            let f = t.render(&addr);
            prop_assert_eq!(shape(&f), (1, vec![addr.as_bytes().to_vec()]));
        }
    }
}
