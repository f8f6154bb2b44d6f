//! Decisions as values: what to do with one recipient given its rule and
//! the per-method key outcomes ([`decide`]), and how the recipients of one
//! transaction are grouped so that one message body serves them all
//! ([`Transaction`]).
//!
//! Both are pure. Keys are generic (`K`): the milter passes validated
//! [`crate::backend::Recipient`]s, tests pass anything.

use std::fmt;

use crate::address::Address;
use crate::keys::{FailReason, Lookup, Security};
use crate::material::{KeyMaterial, KeyRejected, Method, SmimeCipher};
use crate::policy::Direction;
use crate::policy::reply::{LookupFailure, Reply};
use crate::policy::rule::{
    Mode, OnLookupError, OnMissingKey, Rule, Treatment, protects_headers_by_default,
};

/// One method's lookup outcome after key validation.
#[derive(Clone, Debug)]
pub enum KeyOutcome<K> {
    /// Keys were found; each was validated.
    Found {
        /// How the keys are vouched for.
        security: Security,
        /// Keys that passed validation.
        usable: Vec<K>,
        /// Keys that did not, with the reason.
        rejected: Vec<KeyRejected>,
    },
    /// Proven absent.
    NotFound,
    /// Unsigned zone: no trusted answer.
    Insecure,
    /// DNSSEC validation failed.
    Bogus(String),
    /// The lookup could not be completed.
    Failed(FailReason),
    /// The source returned a new key that the rule's `on_key_change =
    /// "review"` holds until an operator approves it, and no key approved
    /// before is still valid: deferred whatever the rule's mode.
    Held(String),
}

impl<K> KeyOutcome<K> {
    /// Validates the keys of a [`Lookup`] with `validate` (normally
    /// [`crate::backend::EncryptionBackend::validate`]).
    pub fn from_lookup(
        lookup: Lookup,
        mut validate: impl FnMut(&KeyMaterial) -> Result<K, KeyRejected>,
    ) -> Self {
        match lookup {
            Lookup::Found {
                keys,
                unusable,
                security,
            } => {
                let mut usable = Vec::new();
                let mut rejected = unusable;
                for k in &keys {
                    match validate(k) {
                        Ok(r) => usable.push(r),
                        Err(e) => rejected.push(e),
                    }
                }
                KeyOutcome::Found {
                    security,
                    usable,
                    rejected,
                }
            }
            Lookup::NotFound => KeyOutcome::NotFound,
            Lookup::Insecure => KeyOutcome::Insecure,
            Lookup::Bogus(s) => KeyOutcome::Bogus(s),
            Lookup::Failed(f) => KeyOutcome::Failed(f),
        }
    }
}

/// The outcome for one method.
#[derive(Clone, Debug)]
pub struct MethodOutcome<K> {
    /// The method looked up.
    pub method: Method,
    /// What was found.
    pub outcome: KeyOutcome<K>,
    /// Sources whose failure the rule tolerated (`tolerate_failures`),
    /// each as `source: why`: they did not decide, and are noted.
    pub skipped: Vec<String>,
    /// What else the lookup has to say (a key change held for review).
    pub notes: Vec<String>,
}

impl<K> MethodOutcome<K> {
    /// `method`'s outcome, no source skipped.
    pub fn new(method: Method, outcome: KeyOutcome<K>) -> Self {
        MethodOutcome {
            method,
            outcome,
            skipped: Vec::new(),
            notes: Vec::new(),
        }
    }
}

/// Settings of the decision that are not part of a rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// `dns.allow_insecure`: keys from unsigned zones may be used.
    pub allow_insecure: bool,
    /// `smime.cipher`, unless the rule names its own.
    pub smime_cipher: SmimeCipher,
}

/// Why a recipient is passed unencrypted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PassReason {
    /// The rule has `methods = []`.
    NeverEncrypt,
    /// Opportunistic rule, no usable key for any method.
    NoKey,
    /// Opportunistic rule with `on_lookup_error = "pass"`, a lookup failed
    /// and no other method had a usable key.
    LookupError,
}

impl fmt::Display for PassReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PassReason::NeverEncrypt => "the rule never encrypts",
            PassReason::NoKey => "no usable key (opportunistic)",
            PassReason::LookupError => "key lookup failed and the rule says on_lookup_error = pass",
        })
    }
}

/// What happens to one recipient.
#[derive(Clone, Debug)]
pub enum Action<K> {
    /// Encrypt. `choices` holds every method with usable keys, in the
    /// rule's preference order (never empty); the transaction picks one.
    Encrypt {
        /// Usable methods and their keys, preferred first.
        choices: Vec<(Method, Vec<K>)>,
        /// The S/MIME content cipher.
        smime_cipher: SmimeCipher,
        /// Whether the rule is `required` (a later failure to encrypt must
        /// then never pass the message).
        required: bool,
        /// Whether the header is protected (RFC 9788): the rule's
        /// `protect_headers`, or the recipient direction's default.
        protect_headers: bool,
    },
    /// Deliver unencrypted.
    Pass(PassReason),
    /// Refuse the recipient permanently (5xx).
    Reject(Reply),
    /// Refuse the recipient temporarily (4xx).
    TempFail(Reply),
}

/// The decision for one recipient: the rule that applied, the action, and
/// one note per method explaining its outcome (for logs and `explain`).
#[derive(Clone, Debug)]
pub struct RecipientDecision<K> {
    /// The recipient.
    pub recipient: Address,
    /// Name of the rule that applied.
    pub rule: String,
    /// What to do.
    pub action: Action<K>,
    /// Per-method notes, in preference order.
    pub notes: Vec<String>,
}

impl<K> RecipientDecision<K> {
    /// The methods this recipient can be encrypted with, preferred first;
    /// empty unless the action is `Encrypt`.
    pub fn methods(&self) -> Vec<Method> {
        match &self.action {
            Action::Encrypt { choices, .. } => choices.iter().map(|(m, _)| *m).collect(),
            _ => Vec::new(),
        }
    }

    /// The keys for `method`, if the recipient is encrypted and has them.
    pub fn keys_for(&self, method: Method) -> Option<&[K]> {
        match &self.action {
            Action::Encrypt { choices, .. } => choices
                .iter()
                .find(|(m, _)| *m == method)
                .map(|(_, k)| k.as_slice()),
            _ => None,
        }
    }

    /// The SMTP reply, for refusals.
    pub fn reply(&self) -> Option<&Reply> {
        match &self.action {
            Action::Reject(r) | Action::TempFail(r) => Some(r),
            _ => None,
        }
    }
}

/// How one method's outcome counts.
enum Class<K> {
    Usable(Vec<K>),
    NoKey,
    Error(LookupFailure),
    Held,
}

/// Decides for one recipient under `rule`. `outcomes` must hold one entry
/// for each method of the rule (others are ignored); a missing one is an
/// internal error (`451 4.3.0`), never a pass.
///
/// Semantics: the first method in preference order with a usable key wins,
/// even if a more preferred method's lookup failed (the mail is encrypted
/// either way). Without a usable key, any lookup error (Bogus, Failed)
/// means "unknown", never "no key": it tempfails, or passes only for an
/// opportunistic rule with `on_lookup_error = "pass"`. Only when every
/// method proved "no usable key" does `on_missing_key` apply. A key from an
/// unsigned zone counts as no key unless `allow_insecure`.
pub fn decide<K>(
    rule: &Rule,
    recipient: &Address,
    direction: Direction,
    outcomes: Vec<MethodOutcome<K>>,
    settings: &Settings,
) -> RecipientDecision<K> {
    let mut outcomes: Vec<Option<MethodOutcome<K>>> = outcomes.into_iter().map(Some).collect();
    let mut notes = Vec::new();
    let decision = |action, notes| RecipientDecision {
        recipient: recipient.clone(),
        rule: rule.name.clone(),
        action,
        notes,
    };
    let (methods, mode, smime_cipher, protect_headers) = match &rule.treatment {
        Treatment::NeverEncrypt => return decision(Action::Pass(PassReason::NeverEncrypt), notes),
        Treatment::Encrypt {
            methods,
            mode,
            smime_cipher,
            protect_headers,
            ..
        } => (
            methods,
            *mode,
            smime_cipher.unwrap_or(settings.smime_cipher),
            protect_headers.unwrap_or_else(|| protects_headers_by_default(direction)),
        ),
    };

    let mut usable = Vec::new();
    let mut first_error: Option<LookupFailure> = None;
    let mut held = false;
    for &m in methods {
        let slot = outcomes
            .iter_mut()
            .find(|o| o.as_ref().is_some_and(|o| o.method == m));
        let Some(outcome) = slot.and_then(Option::take) else {
            notes.push(format!("{m}: no lookup was performed (internal error)"));
            return decision(Action::TempFail(Reply::internal_error()), notes);
        };
        for skipped in &outcome.skipped {
            notes.push(format!(
                "{m}: {skipped} (tolerated by the rule: the next source decided)"
            ));
        }
        for note in &outcome.notes {
            notes.push(format!("{m}: {note}"));
        }
        let (class, note) = classify(outcome.outcome, settings);
        notes.push(format!("{m}: {note}"));
        match class {
            Class::Usable(keys) => usable.push((m, keys)),
            Class::NoKey => {}
            Class::Held => held = true,
            Class::Error(f) => {
                first_error.get_or_insert(f);
            }
        }
    }

    let action = if !usable.is_empty() {
        Action::Encrypt {
            choices: usable,
            smime_cipher,
            required: mode.is_required(),
            protect_headers,
        }
    } else if held {
        // Neither plaintext nor the new key until an operator decides.
        Action::TempFail(Reply::key_change_held(recipient))
    } else if let Some(failure) = first_error {
        match mode {
            Mode::Opportunistic {
                on_lookup_error: OnLookupError::Pass,
            } => Action::Pass(PassReason::LookupError),
            Mode::Opportunistic {
                on_lookup_error: OnLookupError::TempFail,
            }
            | Mode::Required { .. } => Action::TempFail(Reply::lookup_failed(recipient, failure)),
        }
    } else {
        match mode {
            Mode::Opportunistic { .. } => Action::Pass(PassReason::NoKey),
            Mode::Required {
                on_missing_key: OnMissingKey::Reject,
            } => Action::Reject(Reply::required_no_key(recipient)),
            Mode::Required {
                on_missing_key: OnMissingKey::TempFail,
            } => Action::TempFail(Reply::required_no_key_tempfail(recipient)),
        }
    };
    decision(action, notes)
}

fn classify<K>(o: KeyOutcome<K>, settings: &Settings) -> (Class<K>, String) {
    match o {
        KeyOutcome::Found {
            security,
            usable,
            rejected,
        } => {
            let refused: Vec<String> = rejected.iter().map(ToString::to_string).collect();
            let refused = if refused.is_empty() {
                String::new()
            } else {
                format!("; refused: {}", refused.join("; "))
            };
            if security == Security::Insecure && !settings.allow_insecure {
                (
                    Class::NoKey,
                    "key from an unsigned zone ignored (dns.allow_insecure is off)".to_owned(),
                )
            } else if usable.is_empty() {
                (Class::NoKey, format!("key found but not usable{refused}"))
            } else {
                let n = usable.len();
                (
                    Class::Usable(usable),
                    format!(
                        "{n} usable key(s), vouched for by {}{refused}",
                        security.vouched_by()
                    ),
                )
            }
        }
        KeyOutcome::NotFound => (Class::NoKey, "no key published".to_owned()),
        KeyOutcome::Insecure => (
            Class::NoKey,
            "zone is not DNSSEC-signed: no trusted key".to_owned(),
        ),
        KeyOutcome::Bogus(d) => (
            Class::Error(LookupFailure::Bogus),
            format!("DNSSEC validation failed (bogus): {d}"),
        ),
        KeyOutcome::Failed(f) => {
            let class = if f == FailReason::Timeout {
                LookupFailure::Timeout
            } else {
                LookupFailure::Failed
            };
            (Class::Error(class), format!("lookup failed: {f}"))
        }
        KeyOutcome::Held(why) => (Class::Held, format!("held for review: {why}")),
    }
}

/// What the transaction does with a recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Accepted into this transaction.
    Accept,
    /// Needs another treatment than the recipients already accepted:
    /// `452 4.5.3`, the client retries it in a separate transaction.
    Defer(Reply),
    /// Refused by its own decision (reject or tempfail).
    Refuse(Reply),
}

/// The treatment shared by the accepted recipients of one transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Group {
    Empty,
    Plaintext,
    Encrypt {
        /// Methods every accepted recipient can use, in the order that
        /// wins at the end.
        candidates: Vec<Method>,
        /// Whether a `required` recipient set the order.
        ordered_by_required: bool,
        /// The S/MIME cipher of the first accepted recipient.
        smime_cipher: SmimeCipher,
        /// Whether any accepted recipient's rule protects the header: the
        /// message is one body, and hiding the Subject from the servers
        /// on the way serves every copy (only the at-rest listing of the
        /// others shows `[...]`). Never a reason to defer a recipient.
        protect_headers: bool,
    },
}

/// The recipients of one SMTP transaction (one message body).
///
/// Recipients are admitted in RCPT order, greedily: the first accepted one
/// fixes whether the body is encrypted or plaintext; each encrypted one
/// narrows the set of methods all can use. A recipient that would make the
/// set empty, or plaintext beside encrypted (either way round), is
/// deferred with `452 4.5.3`. The final method is the first of the common
/// set in the preference order of the first `required` recipient, or of
/// the first recipient if none is required ("strictest order wins").
/// Recipients with a different S/MIME cipher cannot share S/MIME.
#[derive(Clone, Debug)]
pub struct Transaction {
    group: Group,
}

impl Default for Transaction {
    fn default() -> Self {
        Self::new()
    }
}

impl Transaction {
    /// An empty transaction.
    pub fn new() -> Self {
        Transaction {
            group: Group::Empty,
        }
    }

    /// Offers one recipient's decision.
    pub fn admit<K>(&mut self, d: &RecipientDecision<K>) -> Admission {
        let defer = Admission::Defer(Reply::too_many_recipients());
        match (&d.action, &mut self.group) {
            (Action::Reject(r) | Action::TempFail(r), _) => Admission::Refuse(r.clone()),
            (Action::Pass(_), Group::Empty) => {
                self.group = Group::Plaintext;
                Admission::Accept
            }
            (Action::Pass(_), Group::Plaintext) => Admission::Accept,
            (Action::Pass(_), Group::Encrypt { .. }) => defer,
            (Action::Encrypt { .. }, Group::Plaintext) => defer,
            (
                Action::Encrypt {
                    choices,
                    smime_cipher,
                    required,
                    protect_headers,
                },
                Group::Empty,
            ) => {
                self.group = Group::Encrypt {
                    candidates: choices.iter().map(|(m, _)| *m).collect(),
                    ordered_by_required: *required,
                    smime_cipher: *smime_cipher,
                    protect_headers: *protect_headers,
                };
                Admission::Accept
            }
            (
                Action::Encrypt {
                    choices,
                    smime_cipher,
                    required,
                    protect_headers,
                },
                Group::Encrypt {
                    candidates,
                    ordered_by_required,
                    smime_cipher: group_cipher,
                    protect_headers: group_protects,
                },
            ) => {
                let mine: Vec<Method> = choices
                    .iter()
                    .map(|(m, _)| *m)
                    .filter(|m| *m != Method::Smime || smime_cipher == group_cipher)
                    .collect();
                let common: Vec<Method> = if *required && !*ordered_by_required {
                    mine.iter()
                        .copied()
                        .filter(|m| candidates.contains(m))
                        .collect()
                } else {
                    candidates
                        .iter()
                        .copied()
                        .filter(|m| mine.contains(m))
                        .collect()
                };
                if common.is_empty() {
                    return defer;
                }
                *candidates = common;
                *ordered_by_required |= *required;
                *group_protects |= *protect_headers;
                Admission::Accept
            }
        }
    }

    /// The method the accepted recipients are encrypted with, or `None`
    /// when they are delivered as plaintext (or none was accepted).
    pub fn method(&self) -> Option<Method> {
        match &self.group {
            Group::Encrypt { candidates, .. } => candidates.first().copied(),
            _ => None,
        }
    }

    /// Whether the message is encrypted with its header protected
    /// (RFC 9788): some accepted recipient's rule asks for it.
    pub fn protect_headers(&self) -> bool {
        matches!(
            self.group,
            Group::Encrypt {
                protect_headers: true,
                ..
            }
        )
    }

    /// The S/MIME cipher, when [`Transaction::method`] is S/MIME.
    pub fn smime_cipher(&self) -> Option<SmimeCipher> {
        match &self.group {
            Group::Encrypt { smime_cipher, .. } => Some(*smime_cipher),
            _ => None,
        }
    }
}

/// Groups the decisions of one transaction (in RCPT order): the admission
/// of each, and the method the accepted ones share.
pub fn group<K>(decisions: &[RecipientDecision<K>]) -> (Vec<Admission>, Option<Method>) {
    let mut t = Transaction::new();
    let admissions = decisions.iter().map(|d| t.admit(d)).collect();
    (admissions, t.method())
}
