//! End of message in the milter: the outcome of a message that passed a
//! limit, the cheap classification on a bounded prefix, and the blocking
//! work ([`crate::pipeline::seal`]) under an encryption slot, turned into
//! an [`EomVerdict`].

use std::io::Read;
use std::time::{Instant, SystemTime};

use super::{EomVerdict, MAX_HEADER_FIELDS, MessageState, Overflow, Session};
use crate::backend::EncryptOptions;
use crate::backend::Method;
use crate::harvest::{Job, Screen, judge, material};
use crate::message::classify::{SCAN_LIMIT, classify};
use crate::metrics::{Blindness, Outcome};
use crate::pipeline::{
    Blind, Check, Received, Sealed, SignStep, Signed, check_ciphertext, keys_for, seal,
};
use crate::policy::{Action, Direction, Reply, Unsigned};
use crate::spool::Spool;

impl Overflow {
    pub(super) fn describe(
        self,
        msg: &MessageState,
        limits: &crate::config::LimitsConfig,
    ) -> String {
        match self {
            Overflow::Headers => format!(
                "header fields of {} bytes exceed limits.max_header_bytes ({})",
                msg.header_bytes, limits.max_header_bytes
            ),
            Overflow::Fields => {
                format!("more than {MAX_HEADER_FIELDS} header fields (the most kept per message)")
            }
            Overflow::Body => format!(
                "body of {} bytes exceeds limits.max_message_bytes ({})",
                msg.body_bytes, limits.max_message_bytes
            ),
        }
    }

    /// A `required` recipient makes it a refusal (`552 5.3.4`: retrying
    /// will not make it smaller); otherwise it passes as received, which
    /// is what the recipients' rules allow for a message without
    /// encryption.
    pub(super) fn verdict(
        self,
        msg: &MessageState,
        limits: &crate::config::LimitsConfig,
    ) -> EomVerdict {
        let required = msg
            .accepted
            .iter()
            .any(|d| matches!(d.action, Action::Encrypt { required: true, .. }));
        if required {
            EomVerdict::Refuse(Reply::too_big_to_encrypt())
        } else if msg.sign.required {
            EomVerdict::Refuse(Reply::signature_required(
                &crate::policy::Unsigned::TooLarge.to_string(),
            ))
        } else {
            EomVerdict::Unchanged {
                reason: format!("{}; opportunistic, passed", self.describe(msg, limits)),
                outcome: Outcome::Passed,
                edits: Vec::new(),
            }
        }
    }
}

impl Session {
    /// End of message: classify, encrypt per the transaction's decision;
    /// then, for inbound mail that was accepted, offer the message to
    /// harvesting (which runs after this reply).
    pub async fn eom(&mut self) -> EomVerdict {
        let qid = self.queue_id().to_owned();
        let Some(mut msg) = self.msg.take() else {
            self.finished.clear();
            return EomVerdict::Refuse(Reply::internal_error());
        };
        self.finished = std::mem::take(&mut msg.directions);
        let inbound = self.finished.contains(&Direction::Inbound);
        let verdict = self.settle(&mut msg, &qid).await;
        if inbound && !matches!(verdict, EomVerdict::Refuse(_)) {
            self.harvest(msg, qid);
        }
        verdict
    }

    /// Hands `msg` to the harvester when its header promises key material
    /// ([`screen`]: headers only, cheap). The body goes along only for a
    /// signature to verify, and only up to `harvest.max_message_bytes`.
    fn harvest(&self, msg: MessageState, qid: String) {
        let Some(harvester) = &self.engine.harvester else {
            return;
        };
        if msg.overflow.is_some() || msg.spool_failed {
            return;
        }
        let Some(mut material) = material(&msg.headers) else {
            return;
        };
        // A sender confirmed lately is not examined again: decided before
        // the rest of the header is read.
        if let Some(from) = &material.from
            && !harvester.still_to_examine(from, &mut material.smime, &mut material.autocrypt)
        {
            return;
        }
        let authserv_id = &self.engine.config.authserv_id;
        match judge(material, &msg.headers, authserv_id, SystemTime::now()) {
            Screen::Nothing => {}
            Screen::Unauthenticated { .. } => harvester.skipped("not_authenticated"),
            Screen::Candidate(mut candidate) => {
                // The operator accepts Autocrypt headers that no DKIM
                // signature covers (examine refuses them otherwise).
                if self.engine.config.harvest.autocrypt_unsigned {
                    candidate.autocrypt_signed = true;
                }
                let mut body = None;
                if candidate.smime {
                    if msg.body_bytes > harvester.max_message_bytes() {
                        harvester.skipped("too_large");
                        candidate.smime = false;
                    } else {
                        body = Some(msg.body);
                    }
                }
                if candidate.smime || candidate.autocrypt {
                    harvester.offer(Job {
                        held: 0,
                        qid,
                        candidate,
                        headers: msg.headers,
                        body,
                    });
                }
            }
        }
    }

    /// The verdict on the message; what the blocking work borrowed of
    /// `msg` (headers, body) is put back for harvesting.
    async fn settle(&mut self, msg: &mut MessageState, qid: &str) -> EomVerdict {
        let qid = qid.to_owned();
        if msg.spool_failed {
            // Logged when it happened.
            return EomVerdict::Refuse(Reply::internal_error());
        }
        let engine = self.engine.clone();
        let size = msg.body_bytes;
        engine.metrics.message_size(size);
        let encryption = msg.txn.method();
        let inbound = self.finished.contains(&Direction::Inbound);
        let verifying = inbound
            && engine.config.verify.enabled
            && !engine.config.authserv_id.is_empty()
            && !engine.config.dry_run;
        if encryption.is_none() && !msg.sign.wanted() && !verifying {
            return EomVerdict::Unchanged {
                reason: "no recipient needs encryption".into(),
                outcome: Outcome::Passed,
                edits: Vec::new(),
            };
        }
        // Before classification: what was not kept cannot be verified.
        if let Some(over) = msg.overflow {
            let mut verdict = over.verdict(msg, &engine.config.limits);
            // A body too large to keep: its header was kept, so a forged
            // result still goes.
            if verifying
                && over == Overflow::Body
                && let EomVerdict::Unchanged { edits, .. } = &mut verdict
            {
                *edits = self.forged_removed(msg, &qid);
            }
            return verdict;
        }
        // On the message as received, before it is signed or encrypted.
        let first = if verifying {
            match self.verify_inbound(msg, &qid).await {
                Ok(edits) => edits,
                Err(refusal) => return refusal,
            }
        } else {
            Vec::new()
        };
        let unchanged = |reason: String, outcome, edits| EomVerdict::Unchanged {
            reason,
            outcome,
            edits,
        };
        let mut prefix = Vec::with_capacity(usize::try_from(size).unwrap_or(0).min(SCAN_LIMIT));
        if let Err(e) = msg
            .body
            .reader()
            .take(SCAN_LIMIT as u64)
            .read_to_end(&mut prefix)
        {
            tracing::error!("{qid}: reading the spooled body: {e}");
            return EomVerdict::Refuse(Reply::internal_error());
        }
        // The cheap candidate check here; the full verification reads the
        // whole body and runs on the blocking pool.
        let class = classify(&msg.headers, &prefix);
        drop(prefix);
        let signer = if msg.sign.wanted() && !engine.config.dry_run {
            match self.signer_for(msg, encryption, &class) {
                Ok(signer) => Some(signer),
                Err(why) => {
                    if let Some(refusal) = self.not_signed(msg, &qid, why) {
                        return refusal;
                    }
                    None
                }
            }
        } else {
            None
        };
        let Some(method) = encryption else {
            return match signer {
                Some(signer) => self.sign_unencrypted(msg, signer, first, &qid).await,
                None => unchanged(
                    "no recipient needs encryption".into(),
                    Outcome::Passed,
                    first,
                ),
            };
        };
        // (A body past limits.max_message_bytes was not kept: answered above.)
        if class.candidate().is_some() && engine.config.dry_run {
            // Nothing will be encrypted here: only verify.
            let headers = msg.headers.clone();
            let class = class.clone();
            let body = std::mem::replace(&mut msg.body, Spool::new(0));
            let Ok(slot) = self.encryption_slots.clone().acquire_owned().await else {
                tracing::error!("{qid}: encryption slots closed");
                return EomVerdict::Refuse(Reply::internal_error());
            };
            let checked = tokio::task::spawn_blocking(move || {
                let _slot = slot;
                let checked = check_ciphertext(&headers, &class, &mut body.reader());
                (checked, body)
            })
            .await
            .map(|(checked, body)| {
                msg.body = body;
                checked
            });
            match checked {
                Ok(Ok(Check::Verified(kind))) => {
                    return unchanged(
                        format!("already encrypted (verified {kind})"),
                        Outcome::AlreadyEncrypted,
                        Vec::new(),
                    );
                }
                Ok(Ok(check)) => {
                    if let Some(note) = check.note() {
                        tracing::info!("{qid}: {note}");
                    }
                }
                Ok(Err(e)) => {
                    tracing::error!("{qid}: {e}");
                    return EomVerdict::Refuse(Reply::internal_error());
                }
                Err(e) => {
                    tracing::error!("{qid}: verification task failed: {e}");
                    return EomVerdict::Refuse(Reply::internal_error());
                }
            }
        }
        // Every accepted recipient can use `method`: take its keys.
        let to = keys_for(method, std::mem::take(&mut msg.accepted));
        if to.is_empty() {
            tracing::error!("{qid}: encryption decided but no keys for {method}");
            engine.metrics.encryption_error(method);
            return EomVerdict::Refuse(Reply::internal_error());
        }
        let recipients = to.len();
        if engine.config.dry_run {
            return unchanged(
                format!("dry run: would encrypt with {method} to {recipients} key(s)"),
                Outcome::Passed,
                Vec::new(),
            );
        }
        let opts = EncryptOptions {
            smime_cipher: msg.txn.smime_cipher().unwrap_or_default(),
            spool_threshold: usize::try_from(engine.config.limits.spool_threshold_bytes)
                .unwrap_or(usize::MAX),
            protect_headers: msg.txn.protect_headers(),
            hide_blind: engine.config.openpgp.hide_blind_recipients,
        };
        let headers = std::mem::take(&mut msg.headers);
        let body = std::mem::replace(&mut msg.body, Spool::new(0));
        let registry = engine.keys.registry().clone();
        let budget = self.memory_budget.clone();
        // Waiting for a slot counts as encryption time in the metrics: it is
        // latency the message sees.
        let started = Instant::now();
        let Ok(slot) = self.encryption_slots.clone().acquire_owned().await else {
            tracing::error!("{qid}: encryption slots closed");
            engine.metrics.encryption_error(method);
            return EomVerdict::Refuse(Reply::internal_error());
        };
        let task_qid = qid.clone();
        let required = msg.sign.required;
        // CPU-bound: off the thread that serves the milter connections.
        let result = tokio::task::spawn_blocking(move || {
            // Held while the work runs, even if the connection goes away.
            let _slot = slot;
            let received = Received {
                headers: &headers,
                class: &class,
                body: &body,
            };
            let step = signer.as_ref().map(|signer| SignStep { signer, required });
            let sealed = seal(
                received,
                registry.get(method),
                to,
                &opts,
                budget,
                step,
                |note| tracing::info!("{task_qid}: {note}"),
            );
            (sealed, headers, body)
        })
        .await
        .map(|(sealed, headers, body)| {
            msg.headers = headers;
            msg.body = body;
            sealed
        });
        if !matches!(result, Ok(Ok(Sealed::Verified(_)))) {
            engine.metrics.encryption(method, started.elapsed());
        }
        match result {
            Ok(Ok(Sealed::Verified(kind))) => unchanged(
                format!("already encrypted (verified {kind})"),
                Outcome::AlreadyEncrypted,
                first,
            ),
            Ok(Ok(Sealed::Encrypted {
                edits,
                body,
                blind,
                signed,
            })) => {
                count_blind(&engine.metrics, &qid, method, blind);
                let signed = match signed {
                    Signed::With(m) => Some(m),
                    Signed::NotAsked => None,
                    Signed::Unsafe(why) => {
                        tracing::info!("{qid}: {why}");
                        // Not required (seal refuses then): counted only.
                        let _ = self.not_signed(msg, &qid, Unsigned::Unsafe);
                        None
                    }
                };
                let mut all = first;
                all.extend(edits);
                EomVerdict::Encrypt {
                    edits: all,
                    body,
                    method,
                    recipients,
                    signed,
                }
            }
            Ok(Ok(Sealed::Unsignable(why))) => {
                tracing::info!("{qid}: {why}");
                self.not_signed(msg, &qid, Unsigned::Unsafe)
                    .unwrap_or_else(|| EomVerdict::Refuse(Reply::internal_error()))
            }
            Ok(Err(e)) => {
                tracing::error!("{qid}: encryption failed: {e}");
                engine.metrics.encryption_error(method);
                EomVerdict::Refuse(Reply::internal_error())
            }
            Err(e) => {
                tracing::error!("{qid}: encryption task failed: {e}");
                engine.metrics.encryption_error(method);
                EomVerdict::Refuse(Reply::internal_error())
            }
        }
    }
}

/// Counts a message's blind recipients by what its ciphertext shows of
/// them, and logs the S/MIME exposure, so the operator can see it.
fn count_blind(metrics: &crate::metrics::Metrics, qid: &str, method: Method, b: Blind) {
    if b.blind == 0 {
        return;
    }
    let result = match method {
        _ if b.addresses == 1 => Blindness::Alone,
        Method::OpenPgp if b.hidden => Blindness::Hidden,
        Method::OpenPgp | Method::Smime => Blindness::Exposed,
    };
    metrics.blind_recipients(method, result, b.blind);
    match result {
        Blindness::Exposed => tracing::warn!(
            "{qid}: {method} to {} recipients, {} of them blind (Bcc): the ciphertext names \
             each recipient's key to the others ({}; one transaction per recipient avoids it: \
             README, \"One copy per recipient\")",
            b.addresses,
            b.blind,
            match method {
                Method::Smime => "S/MIME has no anonymous RecipientInfo",
                Method::OpenPgp => "openpgp.hide_blind_recipients = false",
            }
        ),
        _ => tracing::info!(
            "{qid}: {} blind recipient(s) ({}) of {}",
            b.blind,
            result.as_str(),
            b.addresses
        ),
    }
}
