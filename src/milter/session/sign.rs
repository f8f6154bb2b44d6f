//! Signing and verifying at the end of a message: whether (and with which
//! key) the message of an authenticated sender is signed, the blocking
//! sign-only step, and the verification of an inbound message's signature
//! against the key the key service finds for its `From:` address — the
//! `Authentication-Results` edits that record it, forged ones removed
//! first. The signing and the verification themselves are
//! [`crate::signing`] and [`crate::signatures`]; this file only gathers
//! the facts, runs them off the connection thread and counts.

use super::{EomVerdict, MessageState, Session};
use crate::harvest::from::author;
use crate::keys::KeyChoice;
use crate::material::Method;
use crate::message::classify::Classification;
use crate::message::rewrite::HeaderEdit;
use crate::metrics::Outcome;
use crate::pipeline::{SignedOnly, sign_only};
use crate::policy::{KeyOutcome, Reply, Unsigned};
use crate::signatures::results::{Reported, field_value, ours};
use crate::signatures::{Verdict, signed_form, verify};
use crate::signing::Signer;
use crate::spool::Spool;

/// The sources a signature is verified against: every configured one but
/// `learned`. A learned key came from the sender's own earlier mail, so
/// a pass against it would say little more than "the same key as last
/// time", and it would put the key store on the end-of-message path of
/// every signed inbound message (harvesting learns the signer's key after
/// the reply, as before).
fn verification_choice() -> KeyChoice {
    use crate::material::SourceKind;
    KeyChoice {
        sources: Some(vec![
            SourceKind::Directory,
            SourceKind::Ldap,
            SourceKind::Dane,
            SourceKind::Wkd,
            SourceKind::Keyserver,
        ]),
        ..KeyChoice::any()
    }
}

/// The `Authentication-Results` field name.
const AR: &str = "Authentication-Results";

impl Session {
    /// The key to sign `msg` with, or why it is not signed: the session
    /// authenticated, the login may use the single `From:` address, the
    /// sender's client did not sign or encrypt it already, it is within
    /// `signing.max_message_bytes`, and the sender has a key for a
    /// method the rules allow ([`crate::policy::SignWish::choose`]).
    pub(super) fn signer_for(
        &self,
        msg: &MessageState,
        encryption: Option<Method>,
        class: &Classification,
    ) -> Result<Signer, Unsigned> {
        let setup = self
            .engine
            .signing
            .as_ref()
            .ok_or(Unsigned::NotConfigured)?;
        let login = msg.login.as_deref().ok_or(Unsigned::NotAuthenticated)?;
        let from = author(&msg.headers).map_err(|_| Unsigned::NoAuthor)?;
        if !setup.logins.allows(login, &from) {
            return Err(Unsigned::LoginNotAllowed);
        }
        // `signed_form` covers both S/MIME forms and PGP/MIME.
        if class.candidate().is_some() || signed_form(&msg.headers).is_some() {
            return Err(Unsigned::AlreadyProtected);
        }
        if msg.body_bytes > self.engine.config.signing.max_message_bytes {
            return Err(Unsigned::TooLarge);
        }
        let method = msg
            .sign
            .choose(encryption, &setup.keys.methods(&from))
            .ok_or(Unsigned::NoKey)?;
        let signer = setup
            .keys
            .get(&from, method)
            .cloned()
            .ok_or(Unsigned::NoKey)?;
        if !signer.valid_at(std::time::SystemTime::now()) {
            return Err(Unsigned::KeyExpired);
        }
        Ok(signer)
    }

    /// Counts and logs a message not signed; the refusal when a rule
    /// requires the signature (a message the sender's client signed or
    /// encrypted itself satisfies it: it reaches the recipient protected,
    /// just not by us).
    pub(super) fn not_signed(
        &self,
        msg: &MessageState,
        qid: &str,
        why: Unsigned,
    ) -> Option<EomVerdict> {
        self.engine.metrics.unsigned(why);
        let rule = msg.sign.rule.as_deref().unwrap_or("?");
        if msg.sign.required && why != Unsigned::AlreadyProtected {
            tracing::warn!("{qid}: not signed: {why}; rule \"{rule}\" requires a signature");
            return Some(EomVerdict::Refuse(Reply::signature_required(
                &why.to_string(),
            )));
        }
        tracing::info!("{qid}: not signed: {why} (rule \"{rule}\" asks for a signature)");
        None
    }

    /// Signs a message that is not encrypted, on the blocking pool under
    /// an encryption slot. `first` are the edits made before (the
    /// verification's).
    pub(super) async fn sign_unencrypted(
        &mut self,
        msg: &mut MessageState,
        signer: Signer,
        first: Vec<HeaderEdit>,
        qid: &str,
    ) -> EomVerdict {
        let engine = self.engine.clone();
        let headers = std::mem::take(&mut msg.headers);
        let body = std::mem::replace(&mut msg.body, Spool::new(0));
        let threshold =
            usize::try_from(engine.config.limits.spool_threshold_bytes).unwrap_or(usize::MAX);
        let budget = self.memory_budget.clone();
        let method = signer.method();
        let Ok(slot) = self.encryption_slots.clone().acquire_owned().await else {
            tracing::error!("{qid}: encryption slots closed");
            return EomVerdict::Refuse(Reply::internal_error());
        };
        let result = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let signed = sign_only(&headers, &body, &signer, threshold, budget);
            (signed, headers, body)
        })
        .await
        .map(|(signed, headers, body)| {
            msg.headers = headers;
            msg.body = body;
            signed
        });
        match result {
            Ok(Ok(SignedOnly::Signed { edits, body })) => {
                let mut all = first;
                all.extend(edits);
                EomVerdict::Signed {
                    edits: all,
                    body,
                    method,
                }
            }
            Ok(Ok(SignedOnly::Unsafe(why))) => {
                tracing::info!("{qid}: {why}");
                match self.not_signed(msg, qid, Unsigned::Unsafe) {
                    Some(refusal) => refusal,
                    None => EomVerdict::Unchanged {
                        reason: "no recipient needs encryption".into(),
                        outcome: Outcome::Passed,
                        edits: first,
                    },
                }
            }
            Ok(Err(e)) => {
                tracing::error!("{qid}: signing failed: {e}");
                EomVerdict::Refuse(Reply::internal_error())
            }
            Err(e) => {
                tracing::error!("{qid}: signing task failed: {e}");
                EomVerdict::Refuse(Reply::internal_error())
            }
        }
    }

    /// Verifies an inbound message's signature, if it has one, and returns
    /// the header edits: every `Authentication-Results` field that claims
    /// our authserv-id with a signature result deleted (last first, so the
    /// indexes stay valid), then ours prepended. `Err` is the refusal
    /// when the body could not be read or the task failed (451: the
    /// message is not lost, the MTA retries).
    pub(super) async fn verify_inbound(
        &self,
        msg: &mut MessageState,
        qid: &str,
    ) -> Result<Vec<HeaderEdit>, EomVerdict> {
        let engine = self.engine.clone();
        let authserv_id = engine.config.authserv_id.as_str();
        let mut edits = self.forged_removed(msg, qid);
        let Some(form) = signed_form(&msg.headers) else {
            return Ok(edits);
        };
        let method = form.method();
        let from = match author(&msg.headers) {
            Ok(a) => a,
            Err(e) => {
                engine.metrics.verified(method, "permerror");
                tracing::info!("{qid}: {method} signature not verified: {e}");
                return Ok(edits);
            }
        };
        if msg.body_bytes > engine.config.verify.max_message_bytes {
            engine.metrics.verified(method, "too_large");
            tracing::info!(
                "{qid}: {method} signature not verified: larger than verify.max_message_bytes"
            );
            return Ok(edits);
        }
        let outcome = engine
            .keys
            .resolve(&from, method, &verification_choice())
            .await
            .outcome;
        let keys = match outcome {
            KeyOutcome::Found { usable, .. } => Ok(usable),
            KeyOutcome::NotFound | KeyOutcome::Insecure => Ok(Vec::new()),
            KeyOutcome::Bogus(why) => Err(format!("DNSSEC validation failed: {why}")),
            KeyOutcome::Failed(why) => Err(format!("key lookup failed: {why}")),
            KeyOutcome::Held(why) => Err(format!("key change held for review: {why}")),
        };
        let keys = match keys {
            Ok(keys) => keys,
            Err(why) => {
                let value =
                    field_value(authserv_id, method, &Reported::TempError(&why), &from, None);
                edits.push(HeaderEdit::Prepend {
                    name: AR.to_owned(),
                    value,
                });
                engine.metrics.verified(method, "temperror");
                tracing::info!("{qid}: {method} signature from {from}: temperror ({why})");
                return Ok(edits);
            }
        };
        let verdict = self
            .verify_blocking(msg, form, keys.clone(), qid)
            .await
            .ok_or_else(|| EomVerdict::Refuse(Reply::internal_error()))?;
        // The provenance of the key that passed, for the reader of the
        // field: a DNSSEC-vouched pass is not a web-PKI one.
        let note = match &verdict {
            Verdict::Pass { fingerprint } => keys
                .iter()
                .find(|k| &k.fingerprint == fingerprint)
                .map(|k| {
                    format!(
                        "key via {}, vouched for by {}",
                        k.provenance.source,
                        k.provenance.security.vouched_by()
                    )
                }),
            _ => None,
        };
        edits.push(HeaderEdit::Prepend {
            name: AR.to_owned(),
            value: field_value(
                authserv_id,
                method,
                &Reported::Verdict(&verdict),
                &from,
                note.as_deref(),
            ),
        });
        let result = verdict.as_str();
        engine.metrics.verified(method, result);
        tracing::info!(
            "{qid}: {method} signature from {from}: {result} ({verdict:?}{})",
            note.map(|n| format!("; {n}")).unwrap_or_default()
        );
        Ok(edits)
    }

    /// The edits that delete every `Authentication-Results` field claiming
    /// our authserv-id with a signature result (last first, so the
    /// indexes stay valid); counted and logged. Also for a message whose
    /// body was too large to keep (its header was kept).
    pub(super) fn forged_removed(&self, msg: &MessageState, qid: &str) -> Vec<HeaderEdit> {
        let authserv_id = self.engine.config.authserv_id.as_str();
        let forged = ours(&msg.headers, authserv_id);
        if forged.is_empty() {
            return Vec::new();
        }
        self.engine.metrics.forged_results_removed(forged.len());
        tracing::warn!(
            "{qid}: removed {} Authentication-Results field(s) claiming {authserv_id} with a \
             signature result (not written here)",
            forged.len()
        );
        forged
            .into_iter()
            .rev()
            .map(|index| HeaderEdit::Delete {
                name: AR.to_owned(),
                index,
            })
            .collect()
    }

    /// [`verify`] on the blocking pool under an encryption slot; `None`
    /// (logged) when the body could not be read or the task failed (then
    /// the headers and body are gone: the caller must refuse).
    async fn verify_blocking(
        &self,
        msg: &mut MessageState,
        form: crate::signatures::Form,
        keys: Vec<crate::backend::Recipient>,
        qid: &str,
    ) -> Option<Verdict> {
        let headers = std::mem::take(&mut msg.headers);
        let body = std::mem::replace(&mut msg.body, Spool::new(0));
        let Ok(slot) = self.encryption_slots.clone().acquire_owned().await else {
            msg.headers = headers;
            msg.body = body;
            tracing::error!("{qid}: encryption slots closed");
            return None;
        };
        let joined = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let mut bytes = Vec::new();
            let read = std::io::Read::read_to_end(&mut body.reader(), &mut bytes);
            let verdict = read.map(|_| verify(&headers, &bytes, form, &keys));
            (verdict, headers, body)
        })
        .await;
        match joined {
            Ok((verdict, headers, body)) => {
                msg.headers = headers;
                msg.body = body;
                match verdict {
                    Ok(v) => Some(v),
                    Err(e) => {
                        tracing::error!("{qid}: reading the body to verify its signature: {e}");
                        None
                    }
                }
            }
            Err(e) => {
                tracing::error!("{qid}: verification task failed: {e}");
                None
            }
        }
    }
}
