//! Policy files: reading the policy directory (`*.toml` in name order),
//! the `[[rule]]` table format, and turning each table into a checked
//! [`Rule`] — or an error naming file, line, rule and key.
//!
//! Combinations the typed [`Rule`] cannot represent (a `required` rule
//! that would pass on a missing key or a lookup error, an opportunistic
//! rule that would reject) are rejected here, so a policy that loads never
//! downgrades to plaintext where a rule demands encryption.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::config::{Location, TomlIndex};
use crate::material::{Method, OnKeyChange, SmimeCipher, SourceKind, TrustLevel};
use crate::policy::PolicyError;
use crate::policy::Signing;
use crate::policy::glob::{AddressGlob, SenderGlob};
use crate::policy::rule::{DirectionMatch, Mode, OnLookupError, OnMissingKey, Rule, Treatment};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Spanned<String>,
    #[serde(default = "any_direction")]
    direction: DirectionMatch,
    recipient: Option<Spanned<GlobList>>,
    sender: Option<Spanned<GlobList>>,
    daemon_name: Option<Spanned<String>>,
    authenticated: Option<bool>,
    methods: Option<Vec<MethodName>>,
    mode: Option<Spanned<RawMode>>,
    on_missing_key: Option<Spanned<RawMissingKey>>,
    on_lookup_error: Option<Spanned<RawLookupError>>,
    smime_cipher: Option<Spanned<CipherName>>,
    sources: Option<Spanned<Vec<Spanned<String>>>>,
    min_trust: Option<Spanned<String>>,
    tolerate_failures: Option<Spanned<Vec<Spanned<String>>>>,
    pin: Option<Spanned<Vec<Spanned<String>>>>,
    on_key_change: Option<Spanned<String>>,
    protect_headers: Option<Spanned<bool>>,
    sign: Option<Spanned<Vec<MethodName>>>,
    sign_required: Option<Spanned<bool>>,
}

/// A list of source names (`sources`, `tolerate_failures`): each known,
/// none twice.
fn source_list(
    key: &str,
    names: Vec<Spanned<String>>,
    err: &dyn Fn(Range<usize>, String) -> PolicyError,
) -> Result<Vec<SourceKind>, PolicyError> {
    let mut kinds: Vec<SourceKind> = Vec::new();
    for name in names {
        let at = name.span();
        let kind: SourceKind = name
            .get_ref()
            .parse()
            .map_err(|e| err(at.clone(), format!("key `{key}`: {e}")))?;
        if kinds.contains(&kind) {
            return Err(err(at, format!("key `{key}`: {kind} is listed twice")));
        }
        kinds.push(kind);
    }
    Ok(kinds)
}

fn any_direction() -> DirectionMatch {
    DirectionMatch::Any
}

/// A glob list, also accepted as a single string. Elements keep their
/// spans (for the line of a bad pattern in a multi-line array).
#[derive(Default)]
struct GlobList(Vec<(String, Option<Range<usize>>)>);

impl<'de> Deserialize<'de> for GlobList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = GlobList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an address pattern or an array of them")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<GlobList, E> {
                Ok(GlobList(vec![(s.to_owned(), None)]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<GlobList, A::Error> {
                let mut v = Vec::new();
                while let Some(s) = seq.next_element::<Spanned<String>>()? {
                    let span = s.span();
                    v.push((s.into_inner(), Some(span)));
                }
                Ok(GlobList(v))
            }
        }
        d.deserialize_any(V)
    }
}

struct MethodName(Method);

impl<'de> Deserialize<'de> for MethodName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map(MethodName).map_err(serde::de::Error::custom)
    }
}

struct CipherName(SmimeCipher);

impl<'de> Deserialize<'de> for CipherName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map(CipherName).map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawMode {
    Opportunistic,
    Required,
}

#[derive(Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawMissingKey {
    Pass,
    Reject,
    Tempfail,
}

#[derive(Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawLookupError {
    Tempfail,
    Pass,
}

/// Parses one policy file's text. `path` is only used in errors and in
/// the rules' origins.
pub fn parse_file(path: &Path, text: &str) -> Result<Vec<Rule>, PolicyError> {
    let index = TomlIndex::parse(path, text).map_err(|e| PolicyError::from_config(e, None))?;
    let raw: RawFile = match toml::from_str(text) {
        Ok(r) => r,
        Err(e) => return Err(toml_error(path, text, &index, &e)),
    };
    let mut rules = Vec::with_capacity(raw.rule.len());
    for spanned in raw.rule {
        let rule_span = spanned.span();
        let r = spanned.into_inner();
        rules.push(build_rule(path, &index, rule_span, r)?);
    }
    Ok(rules)
}

/// A typed-deserialisation error, with the rule's name when the error is
/// inside a rule.
fn toml_error(path: &Path, text: &str, index: &TomlIndex, e: &toml::de::Error) -> PolicyError {
    let (line, key) = match e.span() {
        Some(span) => (
            Some(index.line_at(span.start)),
            index.key_at(&span).map(str::to_owned),
        ),
        None => (None, None),
    };
    // "rule[2].mode" → rule 2's name and key "mode".
    let mut rule = None;
    let mut field = key.clone();
    if let Some(k) = &key
        && let Some(rest) = k.strip_prefix("rule[")
        && let Some((n, tail)) = rest.split_once(']')
    {
        field = tail.strip_prefix('.').map(str::to_owned);
        if let Ok(i) = n.parse::<usize>() {
            rule = rule_name_at(text, i);
        }
    }
    let message = match field {
        Some(f) if !f.is_empty() => format!("key `{f}`: {}", e.message().trim()),
        _ => e.message().trim().to_owned(),
    };
    PolicyError::Invalid {
        location: Location::File {
            path: path.to_owned(),
            line,
        },
        rule,
        message,
    }
}

/// The `name` of the i-th rule, read leniently (for error messages).
fn rule_name_at(text: &str, i: usize) -> Option<String> {
    let t: toml::Table = toml::from_str(text).ok()?;
    let name = t.get("rule")?.as_array()?.get(i)?.get("name")?.as_str()?;
    Some(name.to_owned())
}

fn build_rule(
    path: &Path,
    index: &TomlIndex,
    rule_span: Range<usize>,
    r: RawRule,
) -> Result<Rule, PolicyError> {
    let name = r.name.get_ref().trim().to_owned();
    let at = |span: Range<usize>| Location::File {
        path: path.to_owned(),
        line: Some(index.line_at(span.start)),
    };
    let err = |span: Range<usize>, message: String| PolicyError::Invalid {
        location: at(span),
        rule: Some(name.clone()),
        message,
    };
    if name.is_empty() {
        return Err(err(
            r.name.span(),
            "key `name`: must not be empty".to_owned(),
        ));
    }
    let signing = signing(&r, &err)?;
    let globs = |list: Option<Spanned<GlobList>>| -> Vec<(String, Range<usize>)> {
        match list {
            None => Vec::new(),
            Some(l) => {
                let whole = l.span();
                l.into_inner()
                    .0
                    .into_iter()
                    .map(|(g, span)| (g, span.unwrap_or_else(|| whole.clone())))
                    .collect()
            }
        }
    };
    let mut recipient = Vec::new();
    for (g, span) in globs(r.recipient) {
        recipient
            .push(AddressGlob::parse(&g).map_err(|e| err(span, format!("key `recipient`: {e}")))?);
    }
    let mut sender = Vec::new();
    for (g, span) in globs(r.sender) {
        sender.push(SenderGlob::parse(&g).map_err(|e| err(span, format!("key `sender`: {e}")))?);
    }
    let daemon_name = match r.daemon_name {
        Some(d) if d.get_ref().trim().is_empty() => {
            return Err(err(
                d.span(),
                "key `daemon_name`: must not be empty".to_owned(),
            ));
        }
        Some(d) => Some(d.into_inner()),
        None => None,
    };

    let methods: Vec<Method> = match r.methods {
        Some(v) => v.into_iter().map(|m| m.0).collect(),
        None => Method::ALL.to_vec(),
    };
    for (i, m) in methods.iter().enumerate() {
        if methods[..i].contains(m) {
            return Err(err(
                rule_span,
                format!("key `methods`: {m} is listed twice"),
            ));
        }
    }

    let treatment = if methods.is_empty() {
        // A rule that never encrypts must not pretend to have a mode.
        if let Some(m) = r
            .mode
            .as_ref()
            .filter(|m| *m.get_ref() == RawMode::Required)
        {
            return Err(err(
                m.span(),
                "key `mode`: methods = [] never encrypts, so it cannot be required".to_owned(),
            ));
        }
        for (key, span) in [
            (
                "on_missing_key",
                r.on_missing_key.as_ref().map(Spanned::span),
            ),
            (
                "on_lookup_error",
                r.on_lookup_error.as_ref().map(Spanned::span),
            ),
            ("smime_cipher", r.smime_cipher.as_ref().map(Spanned::span)),
            ("sources", r.sources.as_ref().map(Spanned::span)),
            ("min_trust", r.min_trust.as_ref().map(Spanned::span)),
            (
                "tolerate_failures",
                r.tolerate_failures.as_ref().map(Spanned::span),
            ),
            ("pin", r.pin.as_ref().map(Spanned::span)),
            ("on_key_change", r.on_key_change.as_ref().map(Spanned::span)),
            (
                "protect_headers",
                r.protect_headers.as_ref().map(Spanned::span),
            ),
        ] {
            if let Some(span) = span {
                return Err(err(
                    span,
                    format!("key `{key}`: has no effect with methods = []"),
                ));
            }
        }
        Treatment::NeverEncrypt
    } else {
        let mode = match r.mode.as_ref().map(|m| *m.get_ref()) {
            None | Some(RawMode::Opportunistic) => {
                if let Some(k) = r
                    .on_missing_key
                    .as_ref()
                    .filter(|k| *k.get_ref() != RawMissingKey::Pass)
                {
                    return Err(err(
                        k.span(),
                        "key `on_missing_key`: an opportunistic rule passes when no key exists; \
                         use mode = \"required\" to reject or tempfail"
                            .to_owned(),
                    ));
                }
                Mode::Opportunistic {
                    on_lookup_error: match r.on_lookup_error.as_ref().map(|k| *k.get_ref()) {
                        None | Some(RawLookupError::Tempfail) => OnLookupError::TempFail,
                        Some(RawLookupError::Pass) => OnLookupError::Pass,
                    },
                }
            }
            Some(RawMode::Required) => {
                // Never downgrade to plaintext where a rule demands
                // encryption: both "pass" spellings are configuration errors.
                if let Some(k) = r
                    .on_lookup_error
                    .as_ref()
                    .filter(|k| *k.get_ref() == RawLookupError::Pass)
                {
                    return Err(err(
                        k.span(),
                        "key `on_lookup_error`: \"pass\" would deliver unencrypted mail that the rule \
                         requires to be encrypted; required rules always tempfail on lookup errors"
                            .to_owned(),
                    ));
                }
                let on_missing_key =
                    match r.on_missing_key.as_ref().map(|k| (*k.get_ref(), k.span())) {
                        None | Some((RawMissingKey::Reject, _)) => OnMissingKey::Reject,
                        Some((RawMissingKey::Tempfail, _)) => OnMissingKey::TempFail,
                        Some((RawMissingKey::Pass, span)) => {
                            return Err(err(
                                span,
                                "key `on_missing_key`: a required rule never passes unencrypted; \
                             use mode = \"opportunistic\" for that"
                                    .to_owned(),
                            ));
                        }
                    };
                Mode::Required { on_missing_key }
            }
        };
        let smime_cipher = match r.smime_cipher {
            Some(c) if !methods.contains(&Method::Smime) => {
                return Err(err(
                    c.span(),
                    "key `smime_cipher`: set, but methods do not include smime".to_owned(),
                ));
            }
            Some(c) => Some(c.into_inner().0),
            None => None,
        };
        let sources_span = r.sources.as_ref().map(Spanned::span);
        let sources = match r.sources {
            None => None,
            Some(list) => {
                let span = list.span();
                let kinds = source_list("sources", list.into_inner(), &err)?;
                if kinds.is_empty() {
                    return Err(err(
                        span,
                        "key `sources`: an empty list asks no source, so no key is ever found; \
                         use methods = [] for a rule that never encrypts"
                            .to_owned(),
                    ));
                }
                Some(kinds)
            }
        };
        let tolerate_failures = match r.tolerate_failures {
            None => None,
            Some(list) => {
                let span = list.span();
                let kinds = source_list("tolerate_failures", list.into_inner(), &err)?;
                if mode.is_required() && !kinds.is_empty() {
                    return Err(err(
                        span,
                        "key `tolerate_failures`: a required rule defers when a source it relies \
                         on fails (a tolerated failure could reject or pass mail for which a key \
                         exists); leave it out, or make the rule opportunistic"
                            .to_owned(),
                    ));
                }
                Some(kinds)
            }
        };
        let min_trust = match r.min_trust {
            None => None,
            Some(t) => Some(
                t.get_ref()
                    .parse::<TrustLevel>()
                    .map_err(|e| err(t.span(), format!("key `min_trust`: {e}")))?,
            ),
        };
        // A learned key is below any other trust: a rule that names the
        // source but not the trust would silently never use it.
        if let Some(list) = &sources
            && list.contains(&SourceKind::Learned)
        {
            let floor = min_trust.unwrap_or(if mode.is_required() {
                TrustLevel::Dnssec
            } else {
                TrustLevel::Learned
            });
            if floor > TrustLevel::Learned {
                let span = sources_span.unwrap_or(rule_span.clone());
                return Err(err(
                    span,
                    format!(
                        "key `sources`: learned keys are below this rule's min_trust ({floor}{}), \
                         so they would never be used; set min_trust = \"learned\" to use them",
                        if min_trust.is_none() {
                            ", the default of a required rule"
                        } else {
                            ""
                        }
                    ),
                ));
            }
        }
        let on_key_change = match &r.on_key_change {
            None => OnKeyChange::Accept,
            Some(v) => match v.get_ref().as_str() {
                "accept" => OnKeyChange::Accept,
                "review" => OnKeyChange::Review,
                other => {
                    return Err(err(
                        v.span(),
                        format!(
                            "key `on_key_change`: unknown value {other:?} (expected \"accept\" \
                             or \"review\")"
                        ),
                    ));
                }
            },
        };
        let mut pin: Vec<String> = Vec::new();
        if let Some(list) = &r.pin
            && list.get_ref().is_empty()
        {
            return Err(err(
                list.span(),
                "key `pin`: an empty list pins nothing; leave the key out".to_owned(),
            ));
        }
        for p in r.pin.map(Spanned::into_inner).unwrap_or_default() {
            let f = crate::material::canonical_fingerprint(p.get_ref())
                .map_err(|e| err(p.span(), format!("key `pin`: {e}")))?;
            if pin.contains(&f) {
                return Err(err(p.span(), format!("key `pin`: {f} is listed twice")));
            }
            // 40 digits name an OpenPGP v4 key only: under a rule without
            // openpgp it could never match, and every key would be refused.
            if f.len() == 40 && !methods.contains(&Method::OpenPgp) {
                return Err(err(
                    p.span(),
                    format!(
                        "key `pin`: {f} is an OpenPGP v4 fingerprint, but methods do not \
                         include openpgp (an S/MIME pin is the certificate's SHA-256, 64 digits)"
                    ),
                ));
            }
            pin.push(f);
        }
        Treatment::Encrypt {
            methods,
            mode,
            smime_cipher,
            sources,
            min_trust,
            tolerate_failures,
            pin,
            on_key_change,
            protect_headers: r.protect_headers.map(Spanned::into_inner),
        }
    };

    Ok(Rule {
        name,
        origin: at(rule_span),
        direction: r.direction,
        recipient,
        sender,
        daemon_name,
        authenticated: r.authenticated,
        treatment,
        signing,
    })
}

/// `sign` and `sign_required`: a list of known methods, none twice, not
/// empty; `sign_required` only beside a `sign`.
fn signing(
    r: &RawRule,
    err: &dyn Fn(Range<usize>, String) -> PolicyError,
) -> Result<Signing, PolicyError> {
    let required = r.sign_required.as_ref().map(|v| (*v.get_ref(), v.span()));
    let Some(list) = &r.sign else {
        if let Some((true, span)) = required {
            return Err(err(
                span,
                "key `sign_required`: needs `sign` (the methods to sign with)".to_owned(),
            ));
        }
        return Ok(Signing::default());
    };
    let methods: Vec<Method> = list.get_ref().iter().map(|m| m.0).collect();
    if methods.is_empty() {
        return Err(err(
            list.span(),
            "key `sign`: an empty list signs nothing; leave the key out".to_owned(),
        ));
    }
    for (i, m) in methods.iter().enumerate() {
        if methods[..i].contains(m) {
            return Err(err(list.span(), format!("key `sign`: {m} is listed twice")));
        }
    }
    Ok(Signing {
        methods,
        required: required.is_some_and(|(v, _)| v),
    })
}

/// Reads every `*.toml` in `dir`, in byte order of the file names.
pub fn load_dir(dir: &Path) -> Result<Vec<Rule>, PolicyError> {
    let entries = std::fs::read_dir(dir).map_err(|source| PolicyError::ReadDir {
        dir: dir.to_owned(),
        source,
    })?;
    let mut files: Vec<PathBuf> = Vec::new();
    for e in entries {
        let e = e.map_err(|source| PolicyError::ReadDir {
            dir: dir.to_owned(),
            source,
        })?;
        let p = e.path();
        // Editor backups ("x.toml~") and hidden files are not policy.
        let is_policy = p.extension().is_some_and(|x| x == "toml")
            && !p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if is_policy && p.is_file() {
            files.push(p);
        }
    }
    files.sort();
    let mut rules: Vec<Rule> = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|source| PolicyError::Read {
            path: f.clone(),
            source,
        })?;
        for rule in parse_file(&f, &text)? {
            if let Some(prev) = rules.iter().find(|r| r.name == rule.name) {
                return Err(PolicyError::Invalid {
                    location: rule.origin.clone(),
                    rule: Some(rule.name.clone()),
                    message: format!("rule name already used at {}", prev.origin),
                });
            }
            rules.push(rule);
        }
    }
    Ok(rules)
}

#[cfg(test)]
#[path = "file_tests.rs"]
mod tests;
