//! The one place where policy outcomes become SMTP replies (the contract
//! table "SMTP replies" in the design). The milter sends these verbatim
//! (`smfi_setreply`-style: code, enhanced status, text); `policy explain`
//! prints them. No other module writes an SMTP reply text.
//!
//! Reply texts name the recipient and a coarse reason class only: detailed
//! reasons (file paths, key rejection details) go to the logs, not to the
//! SMTP client.

use std::fmt;

use crate::address::Address;

/// An SMTP reply: basic code, enhanced status code (RFC 3463) and text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    code: u16,
    enhanced: &'static str,
    text: String,
}

/// Why a lookup could not be completed, as far as the SMTP client is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LookupFailure {
    /// No answer in time.
    Timeout,
    /// DNSSEC validation failed.
    Bogus,
    /// SERVFAIL, network or I/O error.
    Failed,
}

impl Reply {
    /// `451 4.7.1`: a key lookup failed, timed out or was bogus and the rule
    /// says tempfail.
    pub fn lookup_failed(rcpt: &Address, why: LookupFailure) -> Reply {
        let why = match why {
            LookupFailure::Timeout => "timed out",
            LookupFailure::Bogus => "failed DNSSEC validation",
            LookupFailure::Failed => "failed",
        };
        Reply::new(
            451,
            "4.7.1",
            format!("Encryption key lookup for <{rcpt}> {why}, try again later"),
        )
    }

    /// `550 5.7.1`: the rule requires encryption and there is no usable key.
    pub fn required_no_key(rcpt: &Address) -> Reply {
        Reply::new(
            550,
            "5.7.1",
            format!("Encryption to <{rcpt}> is required, but no usable key was found"),
        )
    }

    /// `450 4.7.1`: as [`Reply::required_no_key`], with
    /// `on_missing_key = "tempfail"` (the key may be published later).
    pub fn required_no_key_tempfail(rcpt: &Address) -> Reply {
        Reply::new(
            450,
            "4.7.1",
            format!(
                "Encryption to <{rcpt}> is required, but no usable key was found yet, try again later"
            ),
        )
    }

    /// `451 4.7.1`: the recipient's key changed and the rule holds the new
    /// one for review (`on_key_change = "review"`), with no key approved
    /// before still valid. The text does not say more: the SMTP client may
    /// be anyone.
    pub fn key_change_held(rcpt: &Address) -> Reply {
        Reply::new(
            451,
            "4.7.1",
            format!("Encryption key for <{rcpt}> is awaiting review, try again later"),
        )
    }

    /// `452 4.5.3`: the recipient needs another treatment (method, or
    /// plaintext) than those already accepted in this transaction; the
    /// client retries it in a separate transaction (RFC 5321 §4.5.3.1.10).
    pub fn too_many_recipients() -> Reply {
        Reply::new(452, "4.5.3", "Too many recipients".to_owned())
    }

    /// `552 5.3.4`: a message that a `required` rule must encrypt is larger
    /// than `limits.max_message_bytes`; retrying will not make it fit.
    pub fn too_big_to_encrypt() -> Reply {
        Reply {
            code: 552,
            enhanced: "5.3.4",
            text: "Message too big to encrypt".into(),
        }
    }

    /// `550 5.7.1`: a rule requires the server to sign the message and it
    /// cannot (`why`: one of the fixed reasons of
    /// [`crate::policy::Unsigned`], never text from the message).
    pub fn signature_required(why: &str) -> Reply {
        Reply::new(
            550,
            "5.7.1",
            format!("Message must be signed by the server, but {why}"),
        )
    }

    /// `550 5.1.3`: the recipient address has no canonical form (a domain
    /// UTS #46 refuses, a malformed literal or local part); retrying the
    /// same text cannot help, so the sender learns at once.
    pub fn bad_address() -> Reply {
        Reply::new(550, "5.1.3", "Bad recipient address syntax".to_owned())
    }

    /// `550 5.1.3`: routing in the local part (`site!user`, `user%site`,
    /// `"user@site"`): the MTA would deliver to a domain the policy never
    /// saw.
    pub fn routed_address() -> Reply {
        Reply::new(
            550,
            "5.1.3",
            "Routing in the local part (! % @) is not accepted".to_owned(),
        )
    }

    /// `451 4.3.0`: a bug or I/O error; never an unencrypted pass where a
    /// rule required encryption.
    pub fn internal_error() -> Reply {
        Reply::new(451, "4.3.0", "Internal error, try again later".to_owned())
    }

    fn new(code: u16, enhanced: &'static str, text: String) -> Reply {
        // SMTP reply text is printable US-ASCII on one line (RFC 5321
        // §4.2); addresses may be SMTPUTF8 or carry odd bytes. '%' is
        // avoided because libmilter-style setreply treats it as a format.
        let text = text
            .chars()
            .map(|c| {
                if (' '..='~').contains(&c) && c != '%' {
                    c
                } else {
                    '?'
                }
            })
            .collect();
        Reply {
            code,
            enhanced,
            text,
        }
    }

    /// The basic reply code (e.g. 550).
    pub fn code(&self) -> u16 {
        self.code
    }

    /// The enhanced status code (e.g. `5.7.1`).
    pub fn enhanced(&self) -> &'static str {
        self.enhanced
    }

    /// The text after the codes.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether this is a permanent (5xx) reply.
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.code, self.enhanced, self.text)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn codes_match_the_contract_table() {
        let r = Address::parse("bob@partner.example").unwrap();
        let cases = [
            (
                Reply::lookup_failed(&r, LookupFailure::Timeout),
                451,
                "4.7.1",
            ),
            (Reply::lookup_failed(&r, LookupFailure::Bogus), 451, "4.7.1"),
            (Reply::required_no_key(&r), 550, "5.7.1"),
            (Reply::required_no_key_tempfail(&r), 450, "4.7.1"),
            (Reply::too_many_recipients(), 452, "4.5.3"),
            (Reply::internal_error(), 451, "4.3.0"),
        ];
        for (reply, code, enhanced) in cases {
            assert_eq!(
                (reply.code(), reply.enhanced()),
                (code, enhanced),
                "{reply}"
            );
            assert_eq!(
                reply.to_string().split(' ').next().unwrap(),
                code.to_string()
            );
        }
        assert_eq!(
            Reply::too_many_recipients().to_string(),
            "452 4.5.3 Too many recipients"
        );
    }

    #[test]
    fn text_is_printable_ascii() {
        let r = Address::parse("jörg%x@example.org").unwrap();
        let t = Reply::required_no_key(&r).to_string();
        assert!(
            t.chars().all(|c| (' '..='~').contains(&c) && c != '%'),
            "{t}"
        );
    }
}
