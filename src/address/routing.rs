//! Routing operators in the local part (`site!user`, `user%site`, a
//! quoted `"user@site"`): whether an address carries one, and where the
//! MTA may send it instead. Mail to such a recipient can go to a site the
//! policy never saw, so the milter refuses it at RCPT.

use super::{Address, Domain};

impl Address {
    /// Whether the local part holds a routing operator the MTA may act on:
    /// `site!user` (Postfix `swap_bangpath`), `user%site` (with a local
    /// domain, `allow_percent_hack`), a quoted `"user@site"`
    /// (`resolve_dequoted_address`). Mail to such a recipient goes to
    /// `site`, which the policy never saw; so it is refused at RCPT.
    pub fn routes_in_local_part(&self) -> bool {
        self.kind != Domain::Unparseable
            && self
                .local_unquoted()
                .chars()
                .any(|c| matches!(c, '!' | '%' | '@'))
    }

    /// Where the MTA may route this address instead, for its routing
    /// operators (see [`Address::routes_in_local_part`]): the quoted
    /// `"user@site"` and `user%site` (rightmost operator) and `site!user`
    /// (leftmost) each read as `user@site`, repeatedly (at most 4 steps).
    /// Readings that do not parse are left out.
    pub fn routed_readings(&self) -> Vec<Address> {
        let mut out: Vec<Address> = Vec::new();
        let mut todo = vec![self.clone()];
        for _ in 0..4 {
            let mut next = Vec::new();
            for a in todo.iter().filter(|a| a.routes_in_local_part()) {
                let l = a.local_unquoted();
                let mut forms = Vec::new();
                if let Some((user, site)) = l.rsplit_once('@') {
                    forms.push((user.to_owned(), site.to_owned()));
                }
                if let Some((user, site)) = l.rsplit_once('%') {
                    forms.push((user.to_owned(), site.to_owned()));
                }
                if let Some((site, user)) = l.split_once('!') {
                    forms.push((user.to_owned(), site.to_owned()));
                }
                for (user, site) in forms {
                    let quoted = format!("\"{}\"", user.replace('\\', "\\\\").replace('"', "\\\""));
                    if let Ok(r) = Address::parse(&format!("{quoted}@{site}"))
                        && !out.contains(&r)
                        && r != *self
                    {
                        out.push(r.clone());
                        next.push(r);
                    }
                }
            }
            if next.is_empty() {
                break;
            }
            todo = next;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_operators_in_the_local_part() {
        for s in [
            "site.test!user",
            "user%site.test@local.test",
            "\"user@site.test\"",
            "\"user@site.test\"@local.test",
            "\"user\\@site.test\"@local.test",
            "<@relay.test:a!b@local.test>",
        ] {
            assert!(Address::parse(s).unwrap().routes_in_local_part(), "{s}");
        }
        for s in [
            "user@site.test",
            "postmaster",
            "\"john doe\"@x.test",
            "a+b@x.test",
        ] {
            assert!(!Address::parse(s).unwrap().routes_in_local_part(), "{s}");
        }
    }

    #[test]
    fn routed_readings_follow_the_mta() {
        let r = |s: &str| -> Vec<String> {
            Address::parse(s)
                .unwrap()
                .routed_readings()
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        assert_eq!(r("site.test!bob"), ["bob@site.test"]);
        assert_eq!(r("bob%site.test@local.test"), ["bob@site.test"]);
        assert_eq!(r("\"bob@site.test\"@local.test"), ["bob@site.test"]);
        let mut chain = r("a.test!b%c.test");
        chain.sort();
        assert_eq!(
            chain,
            ["a.test!b@c.test", "b%c.test@a.test", "b@a.test", "b@c.test"]
        );
        assert!(r("bob@site.test").is_empty());
        assert!(r("bob%@x.test").is_empty(), "empty site: no reading");
        // Bounded however long the chain.
        let long = format!("{}u", "s.test!".repeat(200));
        assert!(Address::parse(&long).unwrap().routed_readings().len() < 64);
    }
}
