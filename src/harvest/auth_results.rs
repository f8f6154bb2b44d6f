//! `Authentication-Results` (RFC 8601) read, and the one question harvesting
//! asks of it: did the receiving MTA — a field under exactly the
//! configured `authserv-id` — see DKIM pass for the `From:` domain, or
//! DMARC pass for it?
//!
//! The grammar (§2.2) is parsed in full, comments and folds anywhere CFWS
//! may stand, so that text in a comment or a `reason` string is never
//! read as a result. A field with a syntax error is ignored whole (never
//! resynchronised at the next `;`: a value our MTA copied from the SMTP
//! session could otherwise end a result and start a forged one), and so is
//! a field whose version is not 1 (§2.6). Within a good field, a result
//! for a method version other than 1 is ignored (§2.6), as is every method
//! but `dkim` and `dmarc` (§4.1: consumers ignore methods they do not
//! support; §2.7.6's advice to drop a whole field with an unknown method
//! is not followed, since the field is our own MTA's and only the two
//! methods read here carry meaning for it).
//!
//! What counts: `dkim=pass` with `header.d` equal to the `From:` domain,
//! or with `header.i`'s domain equal to it; `dmarc=pass` with
//! `header.from` equal to it. Domains are compared in their canonical
//! form (IDNA A-labels, lower case), so exact, not aligned: a signature by
//! a parent or sub-domain does not count.

use super::lex::{Cursor, Unterminated, is_fws};
use crate::address::domain::canonical_name;
use crate::message::HeaderField;

/// How the `From:` domain was authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthBy {
    /// A passing DKIM signature by the `From:` domain.
    Dkim,
    /// DMARC passed for the `From:` domain.
    Dmarc,
}

impl AuthBy {
    /// The name in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthBy::Dkim => "dkim",
            AuthBy::Dmarc => "dmarc",
        }
    }
}

/// One parsed `Authentication-Results` field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthResults {
    /// The authserv-id as written (quotes removed).
    pub authserv_id: String,
    /// `none`: the field says no authentication was done.
    pub none: bool,
    /// The results in order.
    pub results: Vec<ResInfo>,
}

/// One `method=result` statement with its reason and properties.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResInfo {
    /// Lower-cased method keyword (`dkim`).
    pub method: String,
    /// The method version, when written (`dkim/1`).
    pub method_version: Option<u32>,
    /// Lower-cased result keyword (`pass`).
    pub result: String,
    /// The `reason=` value.
    pub reason: Option<String>,
    /// `ptype.property=value`, names lower-cased.
    pub props: Vec<Prop>,
}

/// One `ptype.property=value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prop {
    /// Lower-cased ptype (`header`).
    pub ptype: String,
    /// Lower-cased property (`d`).
    pub property: String,
    /// The value, quotes and quoted-pairs resolved.
    pub value: String,
}

impl ResInfo {
    /// The value of `ptype.property`, the first if written twice.
    pub fn prop(&self, ptype: &str, property: &str) -> Option<&str> {
        self.props
            .iter()
            .find(|p| p.ptype == ptype && p.property == property)
            .map(|p| p.value.as_str())
    }
}

/// Why a field value is not an `Authentication-Results` payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthResultsError {
    /// A comment or quoted string without its end.
    #[error("unterminated comment or quoted string")]
    Unterminated,
    /// Not the RFC 8601 grammar at this byte offset.
    #[error("syntax error at byte {at}: expected {expected}")]
    Syntax {
        /// Offset in the raw value.
        at: usize,
        /// What the grammar wanted there.
        expected: &'static str,
    },
    /// A version of the field other than 1 (§2.6: not parsed further).
    #[error("unsupported Authentication-Results version {0}")]
    Version(String),
}

impl From<Unterminated> for AuthResultsError {
    fn from(_: Unterminated) -> Self {
        AuthResultsError::Unterminated
    }
}

/// RFC 2045 token characters, plus UTF-8 (RFC 6532) bytes.
fn is_token(b: u8) -> bool {
    b >= 0x80 || (b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b))
}

/// RFC 5321 Let-dig and `-` (Keyword = Ldh-str).
fn is_ldh(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

/// A bare pvalue or reason: anything up to white space, a comment, `;`
/// or a quote. Looser than `token` (DKIM `header.b` carries `/` and `+`),
/// but it can never swallow a `;`, so it cannot merge two results.
fn is_bare_value(b: u8) -> bool {
    !is_fws(b) && !matches!(b, b'(' | b';' | b'"') && b != 0
}

struct Parser<'a> {
    c: Cursor<'a>,
}

impl Parser<'_> {
    fn syntax(&self, expected: &'static str) -> AuthResultsError {
        AuthResultsError::Syntax {
            at: self.c.pos(),
            expected,
        }
    }

    fn keyword(&mut self, expected: &'static str) -> Result<String, AuthResultsError> {
        let k = self.c.take_while(is_ldh);
        if k.is_empty() || k.ends_with(b"-") {
            return Err(self.syntax(expected));
        }
        Ok(String::from_utf8_lossy(k).to_ascii_lowercase())
    }

    /// RFC 2045 `value`: a token or a quoted string.
    fn value(&mut self, bare: fn(u8) -> bool) -> Result<Vec<u8>, AuthResultsError> {
        if self.c.peek() == Some(b'"') {
            let mut v = self.c.quoted()?;
            // pvalue's `local-part "@" domain-name` with a quoted local part.
            if self.c.peek() == Some(b'@') {
                v.extend_from_slice(self.c.take_while(bare));
            }
            return Ok(v);
        }
        let v = self.c.take_while(bare);
        if v.is_empty() {
            return Err(self.syntax("a value"));
        }
        Ok(v.to_vec())
    }

    /// `[CFWS] DIGITS [CFWS]` as a version number (saturating).
    fn digits(&mut self) -> Option<(String, u32)> {
        let d = self.c.take_while(|b| b.is_ascii_digit());
        if d.is_empty() {
            return None;
        }
        let text = String::from_utf8_lossy(d).into_owned();
        let n = text.parse::<u32>().unwrap_or(u32::MAX);
        Some((text, n))
    }

    fn resinfo(&mut self) -> Result<ResInfo, AuthResultsError> {
        // methodspec = [CFWS] method [CFWS] "=" [CFWS] result
        self.c.cfws()?;
        let method = self.keyword("a method")?;
        self.c.cfws()?;
        let mut method_version = None;
        if self.c.eat(b'/') {
            self.c.cfws()?;
            let (_, n) = self
                .digits()
                .ok_or_else(|| self.syntax("a method version"))?;
            method_version = Some(n);
            self.c.cfws()?;
        }
        if !self.c.eat(b'=') {
            return Err(self.syntax("'=' after the method"));
        }
        self.c.cfws()?;
        let result = self.keyword("a result")?;
        let mut info = ResInfo {
            method,
            method_version,
            result,
            reason: None,
            props: Vec::new(),
        };
        // [CFWS reasonspec] [CFWS 1*propspec]
        loop {
            self.c.cfws()?;
            match self.c.peek() {
                None | Some(b';') => return Ok(info),
                Some(b) if is_ldh(b) => {}
                Some(_) => return Err(self.syntax("a reason, a property, ';' or the end")),
            }
            let word = self.keyword("a reason or property type")?;
            self.c.cfws()?;
            if self.c.eat(b'.') {
                self.c.cfws()?;
                let property = self.keyword("a property")?;
                self.c.cfws()?;
                if !self.c.eat(b'=') {
                    return Err(self.syntax("'=' after the property"));
                }
                self.c.cfws()?;
                let value = self.value(is_bare_value)?;
                info.props.push(Prop {
                    ptype: word,
                    property,
                    value: String::from_utf8_lossy(&value).into_owned(),
                });
            } else if word == "reason" && info.reason.is_none() && info.props.is_empty() {
                if !self.c.eat(b'=') {
                    return Err(self.syntax("'=' after reason"));
                }
                self.c.cfws()?;
                let value = self.value(is_bare_value)?;
                info.reason = Some(String::from_utf8_lossy(&value).into_owned());
            } else {
                return Err(self.syntax("'.' in a property"));
            }
        }
    }
}

/// Parses one field value (everything after the colon, folds included).
pub fn parse(value: &[u8]) -> Result<AuthResults, AuthResultsError> {
    let mut p = Parser {
        c: Cursor::new(value),
    };
    p.c.cfws()?;
    let id = p.value(is_token)?;
    let authserv_id = String::from_utf8_lossy(&id).into_owned();
    // [CFWS authres-version]
    p.c.cfws()?;
    if let Some((text, n)) = p.digits() {
        if n != 1 {
            return Err(AuthResultsError::Version(text));
        }
        p.c.cfws()?;
    }
    let mut out = AuthResults {
        authserv_id,
        none: false,
        results: Vec::new(),
    };
    loop {
        p.c.cfws()?;
        if p.c.at_end() {
            break;
        }
        if !p.c.eat(b';') {
            return Err(p.syntax("';'"));
        }
        p.c.cfws()?;
        if p.c.at_end() && !out.results.is_empty() {
            // A trailing ';' after the last result: written by some MTAs,
            // harmless.
            break;
        }
        if out.results.is_empty() && !out.none && p.is_none_keyword() {
            out.none = true;
            p.c.cfws()?;
            if !p.c.at_end() {
                return Err(p.syntax("the end after 'none'"));
            }
            break;
        }
        let info = p.resinfo()?;
        out.results.push(info);
    }
    if !out.none && out.results.is_empty() {
        return Err(p.syntax("'; none' or a result"));
    }
    Ok(out)
}

/// The authserv-id a field value starts with, when it has one, whether
/// or not the rest parses: `signatures` removes a broken field under its
/// own id as well, since a laxer reader might still find a result in it.
pub fn authserv_id_of(value: &[u8]) -> Option<String> {
    let mut p = Parser {
        c: Cursor::new(value),
    };
    p.c.cfws().ok()?;
    let id = p.value(is_token).ok()?;
    Some(String::from_utf8_lossy(&id).into_owned())
}

impl Parser<'_> {
    /// `none` followed by CFWS or the end (not `none=…`, a method).
    fn is_none_keyword(&mut self) -> bool {
        let rest = self.c.rest();
        if rest.len() < 4 || !rest[..4].eq_ignore_ascii_case(b"none") {
            return false;
        }
        match rest.get(4) {
            None => {}
            Some(&b) if is_fws(b) || b == b'(' => {}
            Some(_) => return false,
        }
        for _ in 0..4 {
            self.c.bump();
        }
        true
    }
}

/// Whether `id` (a field's authserv-id) is `wanted`: compared as domain
/// names when both are (case-insensitive, IDNA forms equal, §5's
/// A-label/U-label note), else ASCII case-insensitively.
pub fn same_authserv_id(id: &str, wanted: &str) -> bool {
    if wanted.is_empty() {
        return false;
    }
    if id.eq_ignore_ascii_case(wanted) {
        return true;
    }
    match (canonical_name(id), canonical_name(wanted)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn same_domain(written: &str, from_domain: &str) -> bool {
    canonical_name(written.trim()).is_ok_and(|d| d == from_domain)
}

/// Whether `from_domain` is `written` or below it (DMARC's relaxed
/// alignment, without the public-suffix list: a signature of `co.uk`
/// aligns with nothing real, since no one holds its key).
pub fn aligned(written: &str, from_domain: &str) -> bool {
    canonical_name(written.trim()).is_ok_and(|d| {
        d == from_domain
            || (d.contains('.')
                && from_domain
                    .strip_suffix(d.as_str())
                    .is_some_and(|head| head.ends_with('.')))
    })
}

/// What one field says of `from_domain` (canonical form), per method:
/// `None` when it reports no result of the method, else whether it passed
/// — DKIM exactly for the domain (`header.d`, or the domain of
/// `header.i`), DKIM aligned with it, DMARC for it (`header.from`).
struct Verdict {
    dkim: Option<bool>,
    dkim_aligned: Option<bool>,
    dmarc: Option<bool>,
}

fn verdict(results: &AuthResults, from_domain: &str) -> Verdict {
    let current = |r: &&ResInfo| r.method_version.is_none_or(|v| v == 1);
    let of = |method: &'static str| {
        results
            .results
            .iter()
            .filter(current)
            .filter(move |r| r.method == method)
    };
    let reports = |method: &'static str| of(method).next().is_some();
    let dkim_for = |pred: &dyn Fn(&str) -> bool| {
        of("dkim").any(|r| {
            r.result == "pass"
                && (r.prop("header", "d").is_some_and(pred)
                    || r.prop("header", "i")
                        .is_some_and(|i| i.rsplit_once('@').is_some_and(|(_, d)| pred(d))))
        })
    };
    Verdict {
        dkim: reports("dkim").then(|| dkim_for(&|d| same_domain(d, from_domain))),
        dkim_aligned: reports("dkim").then(|| dkim_for(&|d| aligned(d, from_domain))),
        dmarc: reports("dmarc").then(|| {
            of("dmarc").any(|r| {
                r.result == "pass"
                    && r.prop("header", "from")
                        .is_some_and(|d| same_domain(d, from_domain))
            })
        }),
    }
}

/// What `results` (one field) says about `from_domain`: DKIM before DMARC
/// when both passed; DMARC only together with an aligned DKIM pass.
pub fn judge(results: &AuthResults, from_domain: &str) -> Option<AuthBy> {
    let v = verdict(results, from_domain);
    decide(v.dkim, v.dkim_aligned, v.dmarc)
}

fn decide(dkim: Option<bool>, aligned: Option<bool>, dmarc: Option<bool>) -> Option<AuthBy> {
    if dkim == Some(true) {
        Some(AuthBy::Dkim)
    } else if dmarc == Some(true) && aligned == Some(true) {
        // A DMARC pass may rest on SPF alone, which vouches for neither
        // the header nor the body (any host of a shared provider in the
        // domain's SPF record passes): the key material must be under the
        // domain's DKIM signature.
        Some(AuthBy::Dmarc)
    } else {
        None
    }
}

/// Whether the fields under exactly `authserv_id` report that
/// `from_domain` (canonical form) was authenticated. For each method the
/// topmost field that reports it decides: the receiving MTA's verifiers
/// add theirs above whatever the message arrived with, so a pass the
/// sender wrote below the MTA's own fail or none counts for nothing.
/// Fields under other ids, and fields that do not parse, are ignored. An
/// empty `authserv_id` trusts nothing.
pub fn authenticated_by(
    headers: &[HeaderField],
    authserv_id: &str,
    from_domain: &str,
) -> Option<AuthBy> {
    if authserv_id.is_empty() || from_domain.is_empty() {
        return None;
    }
    let (mut dkim, mut aligned, mut dmarc) = (None, None, None);
    for h in headers.iter().filter(|h| h.is("Authentication-Results")) {
        let Ok(ar) = parse(&h.value) else { continue };
        if !same_authserv_id(&ar.authserv_id, authserv_id) {
            continue;
        }
        // `none`: the MTA authenticated nothing; whatever a lower field
        // says was written before the message reached it.
        if ar.results.is_empty() {
            dkim = dkim.or(Some(false));
            aligned = aligned.or(Some(false));
            dmarc = dmarc.or(Some(false));
            continue;
        }
        let v = verdict(&ar, from_domain);
        dkim = dkim.or(v.dkim);
        aligned = aligned.or(v.dkim_aligned);
        dmarc = dmarc.or(v.dmarc);
    }
    decide(dkim, aligned, dmarc)
}

#[cfg(test)]
#[path = "auth_results_tests.rs"]
mod tests;
