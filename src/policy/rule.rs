//! Rules: their typed form, matching a recipient, and the "can never
//! match" (shadowing) check. Reading them from policy files is
//! `file.rs` (`load_dir`, `parse_file`).
//!
//! Invalid combinations are unrepresentable: a `required` rule has no way
//! to say "pass" (neither on a missing key nor on a lookup error), and an
//! opportunistic rule has no `on_missing_key` other than pass. Files that
//! try are rejected with file, line and rule name.

use std::fmt;

use serde::Deserialize;

use crate::config::Location;
use crate::material::{KeyChoice, Method, OnKeyChange, SmimeCipher, SourceKind, TrustLevel};
use crate::policy::glob::{AddressGlob, SenderGlob};
use crate::policy::{Direction, Query};

/// Which directions a rule applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DirectionMatch {
    /// Recipients in `local_domains`.
    Inbound,
    /// All other recipients.
    Outbound,
    /// Both.
    Any,
}

impl DirectionMatch {
    /// Whether `d` is included.
    pub fn matches(self, d: Direction) -> bool {
        matches!(
            (self, d),
            (DirectionMatch::Any, _)
                | (DirectionMatch::Inbound, Direction::Inbound)
                | (DirectionMatch::Outbound, Direction::Outbound)
        )
    }

    fn as_str(self) -> &'static str {
        match self {
            DirectionMatch::Inbound => "inbound",
            DirectionMatch::Outbound => "outbound",
            DirectionMatch::Any => "any",
        }
    }

    fn covers(self, other: DirectionMatch) -> bool {
        self == DirectionMatch::Any || self == other
    }
}

/// What a `required` rule does when no usable key exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnMissingKey {
    /// `550 5.7.1`.
    Reject,
    /// `450 4.7.1`: perhaps the key is published before the retry.
    TempFail,
}

/// What an opportunistic rule does when a lookup fails and no other method
/// found a usable key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnLookupError {
    /// `451 4.7.1`: the queue retries; the default.
    TempFail,
    /// Deliver unencrypted.
    Pass,
}

/// Encryption mode of a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Encrypt when a usable key exists, else pass.
    Opportunistic {
        /// Lookup errors: tempfail (default) or pass.
        on_lookup_error: OnLookupError,
    },
    /// Never deliver unencrypted: no key rejects or tempfails; lookup
    /// errors always tempfail.
    Required {
        /// No usable key: reject (default) or tempfail.
        on_missing_key: OnMissingKey,
    },
}

impl Mode {
    /// Whether this is `required`.
    pub fn is_required(self) -> bool {
        matches!(self, Mode::Required { .. })
    }
}

/// What a rule does with a matching recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Treatment {
    /// `methods = []`: never encrypt.
    NeverEncrypt,
    /// Encrypt with one of `methods`.
    Encrypt {
        /// Preference order; non-empty, no duplicates.
        methods: Vec<Method>,
        /// Opportunistic or required.
        mode: Mode,
        /// Overrides `smime.cipher`.
        smime_cipher: Option<SmimeCipher>,
        /// `sources`: which key sources, in which order; `None` = every
        /// configured source.
        sources: Option<Vec<SourceKind>>,
        /// `min_trust`; `None` = the mode's default
        /// ([`Treatment::key_choice`]).
        min_trust: Option<TrustLevel>,
        /// `tolerate_failures`: sources whose failure lets the next source
        /// decide; `None` = the mode's default ([`Treatment::key_choice`]).
        tolerate_failures: Option<Vec<SourceKind>>,
        /// `pin`: the only fingerprints used (canonical upper-case hex);
        /// empty = no pin.
        pin: Vec<String>,
        /// `on_key_change`.
        on_key_change: OnKeyChange,
        /// `protect_headers`; `None` = the direction's default
        /// ([`protects_headers_by_default`]).
        protect_headers: Option<bool>,
    },
}

/// Whether a rule without `protect_headers` protects the header of mail
/// to a recipient in `direction` (RFC 9788): outbound, yes — the Subject
/// is otherwise readable on every server on the way; inbound (encryption
/// at rest), no — IMAP clients list mailboxes by the stored Subject, and
/// mail already arrived through the servers it would have been hidden
/// from, so `[...]` in every inbox line buys little and costs much.
pub fn protects_headers_by_default(direction: Direction) -> bool {
    matches!(direction, Direction::Outbound)
}

impl Treatment {
    /// The rule's `protect_headers`, as written (`None`: not set, or the
    /// rule never encrypts).
    pub fn protect_headers(&self) -> Option<bool> {
        match self {
            Treatment::Encrypt {
                protect_headers, ..
            } => *protect_headers,
            Treatment::NeverEncrypt => None,
        }
    }

    /// What a lookup for this rule may ask and accept, defaults applied:
    /// every configured source; a required rule accepts `dnssec` and
    /// above, an opportunistic one any trust; an opportunistic rule
    /// tolerates failures of the web sources (they can only upgrade its
    /// mail), a required one none (it defers when a source it relies on
    /// fails). `None` when it never encrypts (nothing is looked up).
    pub fn key_choice(&self) -> Option<KeyChoice> {
        match self {
            Treatment::NeverEncrypt => None,
            Treatment::Encrypt {
                mode,
                sources,
                min_trust,
                tolerate_failures,
                pin,
                on_key_change,
                ..
            } => Some(KeyChoice {
                sources: sources.clone(),
                min_trust: min_trust.unwrap_or(if mode.is_required() {
                    TrustLevel::Dnssec
                } else {
                    TrustLevel::Learned
                }),
                tolerate: match (tolerate_failures, mode.is_required()) {
                    (Some(t), _) => t.clone(),
                    (None, true) => Vec::new(),
                    (None, false) => SourceKind::tolerated_by_default(),
                },
                pins: pin.clone(),
                on_key_change: *on_key_change,
            }),
        }
    }
}

/// A rule, parsed and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Name, unique among all policy files.
    pub name: String,
    /// Where it is written; `Location::Default` for the built-in rule.
    pub origin: Location,
    /// Directions it applies to.
    pub direction: DirectionMatch,
    /// Recipient globs; empty = any recipient.
    pub recipient: Vec<AddressGlob>,
    /// Sender globs; empty = any sender, including the null sender.
    pub sender: Vec<SenderGlob>,
    /// The MTA's `{daemon_name}` must equal this.
    pub daemon_name: Option<String>,
    /// The sender must (true) or must not (false) have authenticated.
    pub authenticated: Option<bool>,
    /// What to do.
    pub treatment: Treatment,
    /// `sign` and `sign_required`.
    pub signing: super::Signing,
}

/// Name of the built-in rule applied when no rule matches.
pub const DEFAULT_RULE_NAME: &str = "built-in default";

impl Rule {
    /// The built-in rule: both directions, opportunistic, S/MIME then
    /// OpenPGP, lookup errors tempfail.
    pub fn builtin_default() -> Rule {
        Rule {
            name: DEFAULT_RULE_NAME.to_owned(),
            origin: Location::Default,
            direction: DirectionMatch::Any,
            recipient: Vec::new(),
            sender: Vec::new(),
            daemon_name: None,
            authenticated: None,
            treatment: Treatment::Encrypt {
                methods: Method::ALL.to_vec(),
                mode: Mode::Opportunistic {
                    on_lookup_error: OnLookupError::TempFail,
                },
                smime_cipher: None,
                sources: None,
                min_trust: None,
                tolerate_failures: None,
                pin: Vec::new(),
                on_key_change: OnKeyChange::Accept,
                protect_headers: None,
            },
            signing: super::Signing::default(),
        }
    }

    /// Whether the rule applies: `Ok(why)` with one line per condition, or
    /// `Err(why not)` naming the first condition that failed.
    pub fn check(&self, q: &Query<'_>) -> Result<Vec<String>, String> {
        let mut why = Vec::new();
        if !self.direction.matches(q.direction) {
            return Err(format!(
                "direction is {}, rule wants {}",
                q.direction,
                self.direction.as_str()
            ));
        }
        why.push(format!(
            "direction {} (rule: {})",
            q.direction,
            self.direction.as_str()
        ));
        if self.recipient.is_empty() {
            why.push("recipient: any".to_owned());
        } else {
            match self.recipient.iter().find(|g| g.matches(q.recipient)) {
                Some(g) => why.push(format!("recipient {} matches {g}", q.recipient)),
                None => {
                    return Err(format!(
                        "recipient {} matches none of {}",
                        q.recipient,
                        list(&self.recipient)
                    ));
                }
            }
        }
        let sender_text = q
            .sender
            .map_or_else(|| "<>".to_owned(), ToString::to_string);
        if self.sender.is_empty() {
            why.push("sender: any".to_owned());
        } else {
            match self.sender.iter().find(|g| g.matches(q.sender)) {
                Some(g) => why.push(format!("sender {sender_text} matches {g}")),
                None => {
                    return Err(format!(
                        "sender {sender_text} matches none of {}",
                        list(&self.sender)
                    ));
                }
            }
        }
        if let Some(want) = &self.daemon_name {
            match &q.conn.daemon_name {
                Some(d) if d == want => why.push(format!("daemon_name {d}")),
                Some(d) => return Err(format!("daemon_name is {d}, rule wants {want}")),
                None => return Err(format!("daemon_name unknown, rule wants {want}")),
            }
        }
        if let Some(want) = self.authenticated {
            if q.conn.authenticated != want {
                return Err(format!(
                    "sender {} authenticated, rule wants authenticated = {want}",
                    if q.conn.authenticated { "is" } else { "is not" }
                ));
            }
            why.push(format!("authenticated = {want}"));
        }
        Ok(why)
    }

    /// Whether the rule applies.
    pub fn matches(&self, q: &Query<'_>) -> bool {
        self.check(q).is_ok()
    }

    /// Whether every recipient this rule matches is matched by `earlier`
    /// too, so that this rule, coming later, can never apply. Sufficient,
    /// not necessary: some unreachable rules are not detected.
    pub fn is_shadowed_by(&self, earlier: &Rule) -> bool {
        let recipients = earlier.recipient.is_empty()
            || earlier.recipient.iter().any(AddressGlob::is_any)
            || (!self.recipient.is_empty()
                && self
                    .recipient
                    .iter()
                    .all(|mine| earlier.recipient.iter().any(|e| e.covers(mine))));
        let earlier_any_sender = earlier.sender.is_empty()
            || (earlier.sender.contains(&SenderGlob::Null)
                && earlier
                    .sender
                    .iter()
                    .any(|g| matches!(g, SenderGlob::Addr(a) if a.is_any())));
        let senders = earlier_any_sender
            || (!self.sender.is_empty()
                && self
                    .sender
                    .iter()
                    .all(|mine| earlier.sender.iter().any(|e| e.covers(mine))));
        let daemon = earlier.daemon_name.is_none() || earlier.daemon_name == self.daemon_name;
        let auth = earlier.authenticated.is_none() || earlier.authenticated == self.authenticated;
        earlier.direction.covers(self.direction) && recipients && senders && daemon && auth
    }

    /// A one-line summary of what the rule does, with the replies.
    pub fn treatment_summary(&self) -> String {
        match &self.treatment {
            Treatment::NeverEncrypt => "never encrypt (methods = [])".to_owned(),
            Treatment::Encrypt {
                methods,
                mode,
                smime_cipher,
                ..
            } => {
                let m: Vec<&str> = methods.iter().map(|m| m.as_str()).collect();
                let cipher = smime_cipher
                    .map(|c| format!(", smime_cipher {c}"))
                    .unwrap_or_default();
                let mode = match mode {
                    Mode::Opportunistic { on_lookup_error } => format!(
                        "opportunistic; no key: pass; lookup error: {}",
                        match on_lookup_error {
                            OnLookupError::TempFail => "tempfail (451 4.7.1)",
                            OnLookupError::Pass => "pass",
                        }
                    ),
                    Mode::Required { on_missing_key } => format!(
                        "required; no key: {}; lookup error: tempfail (451 4.7.1)",
                        match on_missing_key {
                            OnMissingKey::Reject => "reject (550 5.7.1)",
                            OnMissingKey::TempFail => "tempfail (450 4.7.1)",
                        }
                    ),
                };
                let keys = self.treatment.key_choice().map_or_else(String::new, |c| {
                    let from = c.sources.as_ref().map_or_else(
                        || "every configured source".to_owned(),
                        |s| {
                            let names: Vec<&str> = s.iter().map(|k| k.as_str()).collect();
                            names.join(", ")
                        },
                    );
                    let pins = if c.pins.is_empty() {
                        String::new()
                    } else {
                        format!("; only the pinned key(s) {}", c.pins.join(", "))
                    };
                    let review = match c.on_key_change {
                        OnKeyChange::Accept => "",
                        OnKeyChange::Review => {
                            "; a new key is held for review (keys approve), the previous one used \
                             while valid"
                        }
                    };
                    format!(
                        "; keys from {from}, trust {} and above{pins}{review}",
                        c.min_trust
                    )
                });
                let headers = match self.treatment.protect_headers() {
                    Some(true) => "; headers protected (RFC 9788)",
                    Some(false) => "; headers not protected",
                    None => "; headers protected outbound, not inbound (protect_headers not set)",
                };
                format!(
                    "encrypt with [{}]{cipher}; {mode}{keys}{headers}",
                    m.join(", ")
                )
            }
        }
    }

    /// What the rule asks of signing, as one line.
    pub fn signing_summary(&self) -> String {
        if self.signing.methods.is_empty() {
            return "not asked (no `sign`)".to_owned();
        }
        let m: Vec<&str> = self.signing.methods.iter().map(|m| m.as_str()).collect();
        format!(
            "sign with [{}] (the encryption's method first when the sender has its key) if \
             the SMTP session authenticated as a login that may use the From: address and \
             signing.key_dir has its key; {}",
            m.join(", "),
            if self.signing.required {
                "required: refused (550 5.7.1) when it cannot be signed"
            } else {
                "sent unsigned when it cannot be"
            }
        )
    }

    /// The conditions as one line.
    pub fn conditions_summary(&self) -> String {
        let mut parts = vec![format!("direction {}", self.direction.as_str())];
        parts.push(if self.recipient.is_empty() {
            "recipient any".to_owned()
        } else {
            format!("recipient {}", list(&self.recipient))
        });
        if !self.sender.is_empty() {
            parts.push(format!("sender {}", list(&self.sender)));
        }
        if let Some(d) = &self.daemon_name {
            parts.push(format!("daemon_name {d}"));
        }
        if let Some(a) = self.authenticated {
            parts.push(format!("authenticated {a}"));
        }
        parts.join(", ")
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} ({})", self.name, self.origin)
    }
}

fn list<T: fmt::Display>(items: &[T]) -> String {
    let v: Vec<String> = items.iter().map(ToString::to_string).collect();
    format!("[{}]", v.join(", "))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]
    use std::path::Path;

    use crate::policy::parse_file;

    #[test]
    fn shadowing() {
        let rules = parse_file(
            Path::new("t.toml"),
            r#"
[[rule]]
name = "all partner"
recipient = "*@partner.example"
[[rule]]
name = "ceo at partner"
direction = "outbound"
recipient = ["ceo@partner.example"]
[[rule]]
name = "inbound subdomain"
recipient = ["*@*.partner.example"]
[[rule]]
name = "authenticated only"
authenticated = true
[[rule]]
name = "after everything"
recipient = ["x@y.example"]
authenticated = true
"#,
        )
        .unwrap();
        assert!(rules[1].is_shadowed_by(&rules[0]));
        assert!(!rules[2].is_shadowed_by(&rules[0]));
        assert!(!rules[0].is_shadowed_by(&rules[1]));
        assert!(!rules[4].is_shadowed_by(&rules[0]));
        assert!(rules[4].is_shadowed_by(&rules[3]));
        assert!(!rules[3].is_shadowed_by(&rules[2]));
    }
}
