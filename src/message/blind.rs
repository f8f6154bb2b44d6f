//! Blind recipients: an envelope recipient that no `To:` or `Cc:` field
//! names was sent a blind copy (`Bcc`), and the other recipients must
//! not learn of it from the ciphertext (issue 14). Pure: the header as
//! received and the envelope recipients in, one flag per recipient out.

use std::collections::HashSet;

use super::HeaderField;
use crate::address::{Address, fold_case};
use crate::harvest::from::address_list;

/// The fields whose addresses every recipient sees.
const VISIBLE: [&str; 2] = ["To", "Cc"];

/// For each of `recipients`, whether it is blind: named in no `To:` or
/// `Cc:` field. Local parts compare case-insensitively, as key lookups
/// do; an address the header spells so that it cannot be read counts as
/// not named (blind), which only hides more. Linear in the header and
/// the recipients.
pub fn blind<'a>(
    headers: &[HeaderField],
    recipients: impl IntoIterator<Item = &'a Address>,
) -> Vec<bool> {
    let named: HashSet<(String, String)> = headers
        .iter()
        .filter(|h| VISIBLE.iter().any(|v| h.is(v)))
        .flat_map(|h| address_list(&h.value))
        .map(|a| key(&a))
        .collect();
    recipients
        .into_iter()
        .map(|r| !named.contains(&key(r)))
        .collect()
}

fn key(a: &Address) -> (String, String) {
    (fold_case(&a.local_unquoted()), a.domain().to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn addrs(list: &[&str]) -> Vec<Address> {
        list.iter().map(|a| Address::parse(a).unwrap()).collect()
    }

    #[test]
    fn named_recipients_are_not_blind() {
        let headers = [
            HeaderField::new("From", " s@example.net"),
            HeaderField::new("To", " Alice <Alice@Example.ORG>, group: bob@example.org;"),
            HeaderField::new("cc", " \"carol\"@example.org"),
            HeaderField::new("Bcc", " dave@example.org"),
            HeaderField::new("Resent-To", " erin@example.org"),
        ];
        let rcpts = addrs(&[
            "alice@example.org",
            "bob@example.org",
            "carol@example.org",
            "dave@example.org",
            "erin@example.org",
            "s@example.net",
        ]);
        assert_eq!(
            blind(&headers, &rcpts),
            [false, false, false, true, true, true]
        );
    }

    #[test]
    fn an_unreadable_header_makes_everyone_blind() {
        let headers = [
            HeaderField::new("To", " \"unterminated <a@example.org>"),
            HeaderField::new("To", " undisclosed-recipients:;"),
        ];
        assert_eq!(blind(&headers, &addrs(&["a@example.org"])), [true]);
        assert_eq!(blind(&[], &addrs(&["a@example.org"])), [true]);
    }

    #[test]
    fn internationalised_domains_compare_in_one_form() {
        let headers = [HeaderField::new("To", " jörg@bücher.example")];
        let rcpts = addrs(&["jörg@xn--bcher-kva.example"]);
        assert_eq!(blind(&headers, &rcpts), [false]);
    }
}
