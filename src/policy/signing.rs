//! Signing in the policy: a rule's `sign` (methods, preferred first) and
//! `sign_required`; how the rules of a transaction's accepted recipients
//! combine into one wish for the message ([`SignWish`]: the message is one
//! body, signed once); and the end-of-message choice of the method
//! ([`SignWish::choose`]). Pure: who may sign and which keys exist are
//! the milter's facts, given as arguments.

use std::fmt;

use crate::material::Method;

/// A rule's signing settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Signing {
    /// `sign`: the methods to sign with, preferred first; empty = the rule
    /// does not ask for a signature.
    pub methods: Vec<Method>,
    /// `sign_required`: a message this rule applies to that cannot be
    /// signed is refused (`550 5.7.1`), never sent unsigned.
    pub required: bool,
}

/// What the accepted recipients' rules ask of the message: the first
/// rule that asks for a signature sets the order, unless a later one
/// requires it and the first did not (the strictest order wins, as for
/// the encryption method); any required rule makes it required.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SignWish {
    /// Methods, preferred first; empty = no signature asked for.
    pub methods: Vec<Method>,
    /// Whether some rule requires the signature.
    pub required: bool,
    /// The rule that set the order (for the log).
    pub rule: Option<String>,
}

/// Why a message that a rule asked to sign is not signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsigned {
    /// The SMTP session did not authenticate.
    NotAuthenticated,
    /// Not exactly one `From:` field with one mailbox.
    NoAuthor,
    /// The login may not sign as the `From:` address.
    LoginNotAllowed,
    /// No signing key for the `From:` address and the rule's methods.
    NoKey,
    /// The chosen key is expired or not yet valid (a signature by it
    /// would not verify).
    KeyExpired,
    /// Larger than `signing.max_message_bytes`.
    TooLarge,
    /// The sender's client signed or encrypted it already.
    AlreadyProtected,
    /// It cannot be put in a transport-safe form.
    Unsafe,
    /// Signing is not configured (`signing.key_dir` unset).
    NotConfigured,
}

impl Unsigned {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Unsigned::NotAuthenticated => "not_authenticated",
            Unsigned::NoAuthor => "no_author",
            Unsigned::LoginNotAllowed => "login_not_allowed",
            Unsigned::NoKey => "no_key",
            Unsigned::KeyExpired => "key_expired",
            Unsigned::TooLarge => "too_large",
            Unsigned::AlreadyProtected => "already_protected",
            Unsigned::Unsafe => "unsafe_content",
            Unsigned::NotConfigured => "not_configured",
        }
    }

    /// Every reason, for the metric's zero series.
    pub const ALL: [Unsigned; 9] = [
        Unsigned::NotAuthenticated,
        Unsigned::NoAuthor,
        Unsigned::LoginNotAllowed,
        Unsigned::NoKey,
        Unsigned::KeyExpired,
        Unsigned::TooLarge,
        Unsigned::AlreadyProtected,
        Unsigned::Unsafe,
        Unsigned::NotConfigured,
    ];
}

impl fmt::Display for Unsigned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unsigned::NotAuthenticated => "the SMTP session did not authenticate",
            Unsigned::NoAuthor => "not exactly one From: address",
            Unsigned::LoginNotAllowed => "the login may not send as the From: address",
            Unsigned::NoKey => "no signing key for the From: address",
            Unsigned::KeyExpired => "the From: address's signing key is expired or not yet valid",
            Unsigned::TooLarge => "larger than signing.max_message_bytes",
            Unsigned::AlreadyProtected => "signed or encrypted by the sender already",
            Unsigned::Unsafe => "cannot be made safe for transport",
            Unsigned::NotConfigured => "signing.key_dir is not set",
        })
    }
}

impl SignWish {
    /// Adds the signing settings of an accepted recipient's rule.
    pub fn add(&mut self, rule: &str, s: &Signing) {
        if s.methods.is_empty() {
            return;
        }
        if self.methods.is_empty() || (s.required && !self.required) {
            self.methods = s.methods.clone();
            self.rule = Some(rule.to_owned());
        }
        self.required |= s.required;
    }

    /// Whether any rule asks for a signature.
    pub fn wanted(&self) -> bool {
        !self.methods.is_empty()
    }

    /// The method to sign with, given the encryption method (if the
    /// message is encrypted) and the methods the sender has keys for: the
    /// encryption's own method when the rule allows it and the sender has
    /// a key for it (RFC 8551 / RFC 3156 combined form, one client
    /// engine for both layers), else the first of the rule's methods the
    /// sender has a key for.
    pub fn choose(&self, encryption: Option<Method>, available: &[Method]) -> Option<Method> {
        if let Some(m) = encryption
            && self.methods.contains(&m)
            && available.contains(&m)
        {
            return Some(m);
        }
        self.methods.iter().copied().find(|m| available.contains(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(methods: &[Method], required: bool) -> Signing {
        Signing {
            methods: methods.to_vec(),
            required,
        }
    }

    #[test]
    fn the_first_asking_rule_orders_unless_a_required_one_comes() {
        let mut w = SignWish::default();
        w.add("none", &s(&[], true));
        assert!(!w.wanted() && !w.required);
        w.add("a", &s(&[Method::OpenPgp, Method::Smime], false));
        w.add("b", &s(&[Method::Smime], false));
        assert_eq!(w.methods, [Method::OpenPgp, Method::Smime]);
        w.add("c", &s(&[Method::Smime], true));
        assert_eq!(w.methods, [Method::Smime]);
        assert_eq!(w.rule.as_deref(), Some("c"));
        w.add("d", &s(&[Method::OpenPgp], true));
        assert_eq!(w.methods, [Method::Smime]);
        assert!(w.required);
    }

    #[test]
    fn the_encryption_method_wins_when_the_sender_has_its_key() {
        let mut w = SignWish::default();
        w.add("r", &s(&[Method::Smime, Method::OpenPgp], false));
        let both = [Method::Smime, Method::OpenPgp];
        assert_eq!(
            w.choose(Some(Method::OpenPgp), &both),
            Some(Method::OpenPgp)
        );
        assert_eq!(w.choose(None, &both), Some(Method::Smime));
        assert_eq!(
            w.choose(Some(Method::OpenPgp), &[Method::Smime]),
            Some(Method::Smime)
        );
        assert_eq!(w.choose(Some(Method::Smime), &[]), None);
        let mut only = SignWish::default();
        only.add("r", &s(&[Method::Smime], false));
        assert_eq!(
            only.choose(Some(Method::OpenPgp), &both),
            Some(Method::Smime)
        );
    }
}
