//! The policy engine: which rule applies to a recipient, and what to do
//! given the key lookup outcomes. Everything here is pure except
//! [`Policy::load`], which reads the policy directory.
//!
//! * `rule.rs`: rules and matching; `file.rs`: policy files
//!   ([`load_dir`], [`parse_file`]);
//! * `glob.rs`: address patterns ([`AddressGlob`], [`SenderGlob`]);
//! * `decision.rs`: per-recipient decisions ([`decide`]) and
//!   per-transaction grouping ([`group`], [`Transaction`]);
//! * `signing.rs`: a rule's `sign` / `sign_required`, the message's
//!   [`SignWish`] and the choice of the signing method;
//! * `reply.rs`: the one place SMTP reply texts are written ([`Reply`];
//!   the milter uses it as it is).

mod decision;
mod file;
mod glob;
mod reply;
mod rule;
mod signing;

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::address::{Address, Domain, domain::canonical_name};
use crate::config::{Config, ConfigError, DEFAULT_POLICY_DIR, Location};
use crate::material::SourceKind;

pub use decision::{
    Action, Admission, KeyOutcome, MethodOutcome, PassReason, RecipientDecision, Settings,
    Transaction, decide, group,
};
pub use file::{load_dir, parse_file};
pub use glob::{AddressGlob, SenderGlob};
pub use reply::Reply;
pub use rule::{
    DirectionMatch, Mode, OnLookupError, OnMissingKey, Rule, Treatment, protects_headers_by_default,
};
pub use signing::{SignWish, Signing, Unsigned};

/// Direction of one recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The recipient's domain is in `local_domains`: encryption at rest.
    Inbound,
    /// Any other recipient.
    Outbound,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        })
    }
}

/// What the milter knows about the SMTP connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectionFacts {
    /// The MTA's `{daemon_name}` macro, when sent.
    pub daemon_name: Option<String>,
    /// Whether the client authenticated (`{auth_authen}` set).
    pub authenticated: bool,
}

/// The facts a rule is matched against.
#[derive(Clone, Copy, Debug)]
pub struct Query<'a> {
    /// The recipient.
    pub recipient: &'a Address,
    /// The envelope sender; `None` for the null sender `<>`.
    pub sender: Option<&'a Address>,
    /// The recipient's direction.
    pub direction: Direction,
    /// Connection facts.
    pub conn: &'a ConnectionFacts,
}

/// A policy that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The policy directory cannot be listed.
    #[error("{}: cannot read policy directory: {source}", dir.display())]
    ReadDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A policy file cannot be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A rule or file is invalid.
    #[error("{location}: {}{message}", rule.as_ref().map(|r| format!("rule {r:?}: ")).unwrap_or_default())]
    Invalid {
        /// File and line.
        location: Location,
        /// The rule's name, when the error is inside a rule.
        rule: Option<String>,
        /// What is wrong (names the key when there is one).
        message: String,
    },
}

impl PolicyError {
    pub(crate) fn from_config(e: ConfigError, rule: Option<String>) -> Self {
        match e {
            ConfigError::Invalid {
                location,
                key,
                message,
            } => PolicyError::Invalid {
                location,
                rule,
                message: match key {
                    Some(k) => format!("key `{k}`: {message}"),
                    None => message,
                },
            },
            ConfigError::Read { path, source } => PolicyError::Read { path, source },
            ConfigError::NotFound { path } => PolicyError::Read {
                path,
                source: io::Error::from(io::ErrorKind::NotFound),
            },
        }
    }
}

/// A rule that can never apply because an earlier one matches everything
/// it matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shadowed {
    /// Index of the unreachable rule in [`Policy::rules`].
    pub rule: usize,
    /// Index of the earlier rule that takes all its recipients.
    pub by: usize,
}

/// The rule that applied, and why.
#[derive(Clone, Debug)]
pub struct Match<'a> {
    /// The rule.
    pub rule: &'a Rule,
    /// Its index in [`Policy::rules`], `None` for the built-in default.
    pub index: Option<usize>,
    /// One line per condition that held.
    pub why: Vec<String>,
    /// Earlier rules that did not apply, with the first failed condition.
    pub skipped: Vec<(&'a Rule, String)>,
}

fn is_required(rule: &Rule) -> bool {
    matches!(
        rule.treatment,
        Treatment::Encrypt {
            mode: Mode::Required { .. },
            ..
        }
    )
}

/// The loaded rules, the built-in default, and the settings decisions need.
#[derive(Clone, Debug)]
pub struct Policy {
    rules: Vec<Rule>,
    default_rule: Rule,
    local_domains: Vec<String>,
    settings: Settings,
}

impl Policy {
    /// A policy from rules already parsed (first match wins).
    pub fn new(rules: Vec<Rule>, local_domains: Vec<String>, settings: Settings) -> Self {
        Policy {
            rules,
            default_rule: Rule::builtin_default(),
            // Config has made them canonical already; this keeps a policy
            // built by hand (tests, tools) on the same form.
            local_domains: local_domains
                .iter()
                .map(|d| canonical_name(d).unwrap_or_else(|_| d.to_lowercase()))
                .collect(),
            settings,
        }
    }

    /// Reads `config.policy_dir`. A missing directory is fine only when it
    /// is the default one (then the built-in rule alone applies, and the
    /// second value says so); a directory the administrator named must
    /// exist, so that a typo cannot silently drop required rules.
    pub fn load(config: &Config) -> Result<(Policy, Option<String>), PolicyError> {
        let settings = Settings {
            allow_insecure: config.dns.allow_insecure,
            smime_cipher: config.smime.cipher,
        };
        let dir = &config.policy_dir;
        let (rules, note) = if !dir.exists()
            && dir.as_path() == std::path::Path::new(DEFAULT_POLICY_DIR)
        {
            (
                Vec::new(),
                Some(format!(
                    "policy directory {} does not exist: only the built-in default rule applies",
                    dir.display()
                )),
            )
        } else {
            (load_dir(dir)?, None)
        };
        let configured = crate::keys::configured_sources(config);
        for rule in &rules {
            let methods: &[crate::material::Method] = match &rule.treatment {
                Treatment::Encrypt { methods, .. } => methods,
                Treatment::NeverEncrypt => &[],
            };
            if let Some(choice) = rule.treatment.key_choice()
                && !choice
                    .plan(&configured)
                    .iter()
                    .any(|k| methods.iter().any(|m| k.serves(*m)))
            {
                // It could never find a key (no source it may ask, or none
                // holding keys for its methods: WKD has no S/MIME): a
                // required rule would bounce every message as "no key", an
                // opportunistic one never encrypt. A configuration error,
                // not a missing key.
                return Err(PolicyError::Invalid {
                    location: rule.origin.clone(),
                    rule: Some(rule.name.clone()),
                    message: format!(
                        "asks no configured key source that holds keys for its methods \
                         (sources: {}; min_trust {}; configured: {}; wkd and keyserver hold \
                         openpgp keys only)",
                        choice.sources.as_ref().map_or_else(
                            || "every configured source".to_owned(),
                            |s| s.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
                        ),
                        choice.min_trust,
                        SourceKind::list_with_trust(&configured, ", ")
                    ),
                });
            }
        }
        Ok((
            Policy::new(rules, config.local_domains.clone(), settings),
            note,
        ))
    }

    /// The rules in evaluation order (without the built-in default).
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The rule applied when none matches.
    pub fn default_rule(&self) -> &Rule {
        &self.default_rule
    }

    /// The decision settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Inbound when the recipient's domain is exactly one of
    /// `local_domains` (in canonical form; subdomains only when listed),
    /// or when it has no domain (the MTA delivers `<postmaster>` locally).
    pub fn direction_of(&self, recipient: &Address) -> Direction {
        if recipient.kind() == Domain::None
            || self.local_domains.iter().any(|d| d == recipient.domain())
        {
            Direction::Inbound
        } else {
            Direction::Outbound
        }
    }

    /// The first rule that applies (or the built-in default), and why.
    ///
    /// A domain-less recipient (`<alice>`) is delivered by the MTA under a
    /// local domain we cannot see (`$myorigin`), so a rule also applies
    /// when it applies to `alice@D` for some `D` in `local_domains`: a
    /// `required` rule for a local domain cannot be dodged by leaving the
    /// domain out. The same holds for a domain-less sender (`MAIL
    /// FROM:<alice>`), which the MTA qualifies with `$myorigin` too.
    ///
    /// An address literal (`ceo@[192.0.2.1]`) may name the MTA itself,
    /// which then delivers it locally (Postfix: a literal of
    /// `inet_interfaces`); which literals those are is unknown here, so
    /// when its own rule is not required but the rule for `ceo@D`
    /// (inbound, `D` in `local_domains`) is, that rule applies.
    pub fn select<'a>(&'a self, q: &Query<'_>) -> Match<'a> {
        let m = self.select_as_given(q);
        if q.recipient.kind() != Domain::Literal || is_required(m.rule) {
            return m;
        }
        for d in &self.local_domains {
            let Ok(local) = Address::parse(&format!("{}@{d}", q.recipient.local())) else {
                continue;
            };
            let inbound = Query {
                recipient: &local,
                direction: Direction::Inbound,
                ..*q
            };
            let mut mi = self.select_as_given(&inbound);
            if is_required(mi.rule) {
                mi.why.insert(
                    0,
                    format!(
                        "address literal {} may be this MTA: taken as {local} (inbound), \
whose rule is required",
                        q.recipient
                    ),
                );
                return mi;
            }
        }
        m
    }

    fn select_as_given<'a>(&'a self, q: &Query<'_>) -> Match<'a> {
        let qualify = |a: &Address| -> Vec<Address> {
            self.local_domains
                .iter()
                .filter_map(|d| a.qualified(d))
                .collect()
        };
        // Each reading of the envelope: as given first, then with a
        // domain-less recipient and/or sender qualified by a local domain
        // (the MTA qualifies a domain-less MAIL FROM the same way).
        let qualified_rcpt = qualify(q.recipient);
        // A sender with routing in its local part is rewritten by the MTA
        // (`legal.example!alice` → `alice@legal.example`); recipients like
        // that are refused at RCPT, senders are read as each routing.
        let qualified_sender: Vec<Address> = q
            .sender
            .map(|s| {
                let mut all = qualify(s);
                for r in s.routed_readings() {
                    all.extend(qualify(&r));
                    all.push(r);
                }
                all
            })
            .unwrap_or_default();
        let mut skipped = Vec::new();
        for (i, r) in self.rules.iter().enumerate() {
            let found = r.check(q).or_else(|why_not| {
                let rcpts = std::iter::once(None).chain(qualified_rcpt.iter().map(Some));
                rcpts
                    .flat_map(|ra| {
                        std::iter::once(None)
                            .chain(qualified_sender.iter().map(Some))
                            .map(move |sa| (ra, sa))
                    })
                    .filter(|(ra, sa)| ra.is_some() || sa.is_some())
                    .find_map(|(ra, sa)| {
                        let mut why = r
                            .check(&Query {
                                recipient: ra.unwrap_or(q.recipient),
                                sender: sa.or(q.sender),
                                ..*q
                            })
                            .ok()?;
                        if let Some(s) = sa {
                            why.insert(
                                0,
                                format!(
                                    "sender {} taken as {s} (local_domains, routing)",
                                    q.sender.map_or_else(String::new, ToString::to_string)
                                ),
                            );
                        }
                        if let Some(a) = ra {
                            why.insert(
                                0,
                                format!(
                                    "domain-less recipient {} taken as {a} (local_domains)",
                                    q.recipient
                                ),
                            );
                        }
                        Some(why)
                    })
                    .ok_or(why_not)
            });
            match found {
                Ok(why) => {
                    return Match {
                        rule: r,
                        index: Some(i),
                        why,
                        skipped,
                    };
                }
                Err(why_not) => skipped.push((r, why_not)),
            }
        }
        Match {
            rule: &self.default_rule,
            index: None,
            why: vec!["no rule matched".to_owned()],
            skipped,
        }
    }

    /// Selects the rule and decides: the whole engine for one recipient.
    pub fn decide<K>(
        &self,
        q: &Query<'_>,
        outcomes: Vec<MethodOutcome<K>>,
    ) -> RecipientDecision<K> {
        decide(
            self.select(q).rule,
            q.recipient,
            q.direction,
            outcomes,
            &self.settings,
        )
    }

    /// Rules that can never apply, each with the earlier rule that hides it.
    pub fn shadowed(&self) -> Vec<Shadowed> {
        self.rules
            .iter()
            .enumerate()
            .filter_map(|(j, r)| {
                self.rules[..j]
                    .iter()
                    .position(|e| r.is_shadowed_by(e))
                    .map(|i| Shadowed { rule: j, by: i })
            })
            .collect()
    }
}
