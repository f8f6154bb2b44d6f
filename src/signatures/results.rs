//! The `Authentication-Results` field (RFC 8601) that reports a
//! signature verdict, and the fields a sender may have forged under our
//! authserv-id, which are removed before ours is added.
//!
//! # What the field says, and why
//!
//! One field per verified message, holding one result:
//!
//! ```text
//! Authentication-Results: mx.example.org; smime=pass (key via dane, vouched for by DNSSEC)
//!  body.smime-identifier=alice@example.org
//! Authentication-Results: mx.example.org; openpgp=fail reason="the signature by 0123… does not verify: …"
//!  body.openpgp-identifier=alice@example.org
//! ```
//!
//! * **S/MIME** uses the registered method `smime` of RFC 7281 §3 with
//!   the ptype `body` and its property `smime-identifier` (§3.2), here
//!   the `From:` address: the address whose keys the signature was
//!   checked against, which on a pass is the signer's (the key service
//!   validated the key for exactly that address). `smime-part` is left
//!   out, since only the top-level entity — the whole body — is ever
//!   verified; `smime-serial` and `smime-issuer`, which RFC 7281 §3.2
//!   wants together or not at all, are left out as well: the key is
//!   trusted for its source, not for its issuer, and its fingerprint is
//!   in the log.
//! * **OpenPGP** has no registered method: the IANA "Email
//!   Authentication Methods" registry (RFC 8601 §6) has `smime` but no
//!   OpenPGP entry. RFC 8601's grammar has no `x-` convention for
//!   experimental names (a method is a Keyword, registered or an
//!   extension method, §2.2 and §2.7.6), and RFC 6648 deprecates `X-`
//!   prefixes for new names, since they leak into use and then cannot
//!   be renamed. An unregistered method is to be used only where the
//!   ADMD has consented to it (§2.7.6) — here the operator who enabled
//!   verification — and a production consumer may ignore it, or drop the
//!   whole field that carries it. So: the name `openpgp` (the
//!   standard's own name, RFC 9580, and this project's method name; `pgp`
//!   is a product's), the ptype `body` and the property
//!   `openpgp-identifier`, mirroring RFC 7281 exactly so that a later
//!   registration can take them as they are; and always a field of its
//!   own, so that a consumer that drops fields with unknown methods drops
//!   nothing but ours (the MTA's DKIM, SPF and DMARC results stay in
//!   theirs).
//! * **Results** are RFC 7281 §3.1's (none, pass, fail, policy, neutral,
//!   temperror, permerror), used for OpenPGP too:
//!   [`Verdict::Pass`] → `pass` (the signature verified and the ADMD
//!   accepts the signer: a key of the `From:` address);
//!   [`Verdict::Fail`] → `fail` (a signature failed verification);
//!   [`Verdict::Policy`] → `policy` (valid, but signed by a key the ADMD
//!   does not accept for that address, or no key was found for it);
//!   [`Verdict::PermError`] → `permerror` (cannot be processed and never
//!   will be: a broken structure, an unsupported algorithm);
//!   a failed key lookup → `temperror` (likely transient, §2.7.1's
//!   example: a key that could not be retrieved). `neutral` is not
//!   written: its "not otherwise able to be processed" overlaps
//!   `permerror`, and `permerror` tells a consumer more (retrying will not
//!   help). `none` (not signed) is not written either: an unsigned
//!   message gets no field.
//! * **Why** is a `reason=` (§2.2 reasonspec) on every result but pass;
//!   the key's provenance is a comment. Both are for humans and are
//!   sanitised: ASCII only (no bidirectional overrides), no control
//!   characters, bounded; the reason is a quoted-string, the comment has
//!   its parentheses and backslashes escaped, so neither can end a result
//!   and start a forged one. The authserv-id and the identifier are
//!   written bare when they are tokens, else as quoted-strings; an
//!   identifier that cannot be written faithfully (a control character,
//!   over [`MAX_IDENTIFIER`] bytes) is left out rather than altered.
//!
//! Forged fields (§5: a receiver removes fields that claim its own
//! authserv-id before adding its own): [`ours`].

use crate::address::{Address, Domain};
use crate::backend::Method;
use crate::harvest::auth_results::{authserv_id_of, parse, same_authserv_id};
use crate::message::HeaderField;

use super::Verdict;

/// Characters of the comment (`note`), at most.
pub const MAX_NOTE: usize = 120;
/// Characters of the `reason=` text, at most.
pub const MAX_REASON: usize = 200;
/// Bytes of the identifier (the address as written), at most: RFC 5321
/// §4.5.3.1.3 limits a path to 256 octets.
pub const MAX_IDENTIFIER: usize = 256;

/// What goes into the field: a verdict, or a lookup failure of the key service.
#[derive(Debug, Clone, Copy)]
pub enum Reported<'a> {
    /// The verdict over the message.
    Verdict(&'a Verdict),
    /// The key service could not complete the lookup: why.
    TempError(&'a str),
}

/// The method name in the field for `m` (smime: "smime", RFC 7281; OpenPGP: "openpgp", see
/// the module documentation).
pub fn method_name(m: Method) -> &'static str {
    match m {
        Method::Smime => "smime",
        Method::OpenPgp => "openpgp",
    }
}

/// The property of `m` that carries the identifier.
fn identifier_property(m: Method) -> &'static str {
    match m {
        Method::Smime => "smime-identifier",
        Method::OpenPgp => "openpgp-identifier",
    }
}

fn result_name(r: &Reported) -> &'static str {
    match r {
        Reported::Verdict(v) => v.as_str(),
        Reported::TempError(_) => "temperror",
    }
}

fn reason_text<'a>(r: &Reported<'a>) -> Option<&'a str> {
    match *r {
        Reported::Verdict(Verdict::Pass { .. }) => None,
        Reported::Verdict(Verdict::Fail(s) | Verdict::Policy(s) | Verdict::PermError(s)) => Some(s),
        Reported::TempError(s) => Some(s),
    }
}

/// RFC 2045 token characters (ASCII, no tspecials, no space or controls).
fn is_token_char(c: char) -> bool {
    c.is_ascii_graphic() && !"()<>@,;:\\\"/[]?=".contains(c)
}

/// RFC 5322 atext.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c)
}

/// Human text made safe to embed: printable ASCII only (anything else,
/// controls and line breaks included, becomes a space, and runs of white
/// space one), trimmed, at most `max` characters ("..." marks a cut).
fn human(text: &str, max: usize) -> String {
    let mut out = String::new();
    let mut chars = 0;
    let mut cut = false;
    for c in text.chars() {
        let c = if c.is_ascii_graphic() { c } else { ' ' };
        if c == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        if chars == max {
            cut = true;
            break;
        }
        out.push(c);
        chars += 1;
    }
    let end = out.trim_end().len();
    out.truncate(end);
    if cut {
        out.push_str("...");
    }
    out
}

/// `s` as an RFC 5322 quoted-string: `"` and `\` as quoted-pairs. The
/// caller has removed controls.
fn push_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// `s` bare when it is a token, else quoted (controls dropped: an
/// authserv-id is configuration, not attacker input, but it must not
/// break the field either).
fn push_value(out: &mut String, s: &str) {
    if !s.is_empty() && s.chars().all(is_token_char) {
        out.push_str(s);
    } else {
        let clean: String = s.chars().filter(|c| !c.is_control()).collect();
        push_quoted(out, &clean);
    }
}

/// Characters that would make an identifier display as something else:
/// controls and the bidirectional formatting characters.
fn is_deceptive(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// The pvalue for `from`: bare `local@domain` when the local part is a
/// dot-atom and the domain a DNS name, else the whole address as one
/// quoted-string (a valid `value`, §2.2); `None` when it cannot be
/// written faithfully.
fn identifier(from: &Address) -> Option<String> {
    if !matches!(from.kind(), Domain::Name | Domain::Literal) {
        return None;
    }
    let text = from.to_string();
    if text.len() > MAX_IDENTIFIER || text.chars().any(is_deceptive) {
        return None;
    }
    let local = from.local();
    let dot_atom = !local.is_empty()
        && local
            .split('.')
            .all(|a| !a.is_empty() && a.chars().all(is_atext));
    let domain_ok = from.kind() == Domain::Name
        && from
            .domain()
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    let mut out = String::new();
    if dot_atom && domain_ok {
        out.push_str(&text);
    } else {
        push_quoted(&mut out, &text);
    }
    Some(out)
}

/// The value of one `Authentication-Results` field (everything after "Authentication-Results:" without the leading space),
/// e.g. `mx.example.org; smime=pass (key via dane, vouched for by DNSSEC) body.smime-identifier=alice@example.org`.
/// `note` is a short human comment (key provenance) or None; it is
/// sanitised so it cannot break the field (no CR/LF or other controls,
/// ASCII only, parentheses escaped, at most [`MAX_NOTE`] characters).
/// No folds are written: the longest value stays well under the 998
/// octets of a line (RFC 5322 §2.1.1) for an authserv-id of a host name.
pub fn field_value(
    authserv_id: &str,
    method: Method,
    reported: &Reported,
    from: &Address,
    note: Option<&str>,
) -> String {
    let mut out = String::new();
    push_value(&mut out, authserv_id);
    out.push_str("; ");
    out.push_str(method_name(method));
    out.push('=');
    out.push_str(result_name(reported));
    if let Some(note) = note.map(|n| human(n, MAX_NOTE)).filter(|n| !n.is_empty()) {
        out.push_str(" (");
        for c in note.chars() {
            if matches!(c, '(' | ')' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push(')');
    }
    if let Some(reason) = reason_text(reported).map(|r| human(r, MAX_REASON)) {
        out.push_str(" reason=");
        push_quoted(&mut out, &reason);
    }
    if let Some(id) = identifier(from) {
        out.push_str(" body.");
        out.push_str(identifier_property(method));
        out.push('=');
        out.push_str(&id);
    }
    out
}

/// Whether `method` (lower case, as the parser gives it) is one this
/// milter writes.
fn is_our_method(method: &str) -> bool {
    method == method_name(Method::Smime) || method == method_name(Method::OpenPgp)
}

/// Whether raw field text names one of our methods anywhere.
fn mentions_our_method(value: &[u8]) -> bool {
    let lower = value.to_ascii_lowercase();
    [Method::Smime, Method::OpenPgp].iter().any(|&m| {
        let name = method_name(m).as_bytes();
        lower.windows(name.len()).any(|w| w == name)
    })
}

fn claims_ours(value: &[u8], authserv_id: &str) -> bool {
    match parse(value) {
        Ok(ar) => {
            same_authserv_id(&ar.authserv_id, authserv_id)
                && ar.results.iter().any(|r| is_our_method(&r.method))
        }
        // A field under our id that does not parse (a syntax error, a
        // version other than 1, `id/1`): a laxer reader than ours might
        // still find `smime=pass` in it, so it goes if it names one of
        // our methods at all. Removing a broken field of our own ADMD
        // loses nothing anyone could rely on.
        Err(_) => {
            authserv_id_of(value).is_some_and(|id| same_authserv_id(&id, authserv_id))
                && mentions_our_method(value)
        }
    }
}

/// The 1-based occurrences, among the message's `Authentication-Results` fields, of those that claim our authserv-id
/// AND report a method this milter writes (smime, or the OpenPGP method): removed before ours is added, so a sender
/// cannot forge a pass. Fields under our authserv-id that report only other methods (dkim, spf, dmarc: written by the
/// MTA's other filters, e.g. OpenDKIM, which harvesting trusts) are kept. Case-insensitive, comments (CFWS) tolerated,
/// version after the authserv-id tolerated (RFC 8601 §2.2).
///
/// Ascending. Each number counts the fields as received: a caller that
/// deletes them one by one (milter `chgheader` with an empty value)
/// deletes from the highest down, so that no deletion renumbers one yet
/// to come. An empty `authserv_id` claims nothing.
pub fn ours(headers: &[HeaderField], authserv_id: &str) -> Vec<usize> {
    if authserv_id.is_empty() {
        return Vec::new();
    }
    headers
        .iter()
        .filter(|h| h.is("Authentication-Results"))
        .enumerate()
        .filter(|(_, h)| claims_ours(&h.value, authserv_id))
        .map(|(i, _)| i + 1)
        .collect()
}

#[cfg(test)]
#[path = "results_tests.rs"]
mod tests;
