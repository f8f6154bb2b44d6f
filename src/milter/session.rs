//! Per-connection and per-message state, and what happens at each stage.
//! Knows nothing of the milter protocol: `callbacks.rs` translates stages
//! into these calls and the verdicts back into replies and actions.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::address::Address;
use crate::backend::{Method, Recipient};
use crate::memory::MemoryBudget;
use crate::message::HeaderField;
use crate::message::rewrite::HeaderEdit;
use crate::metrics::Outcome;
use crate::policy::{
    Action, Admission, ConnectionFacts, Direction, Query, RecipientDecision, Reply, SignWish,
    Transaction, Treatment,
};
use crate::spool::Spool;

use super::{Engine, Shared};

mod eom;
mod sign;

/// What to answer at RCPT.
#[derive(Debug)]
pub enum RcptVerdict {
    /// Accept the recipient into this transaction.
    Accept,
    /// Refuse it with this reply (550/450/451/452).
    Refuse(Reply),
}

/// What to do at the end of the message.
pub enum EomVerdict {
    /// Deliver as received; the reason is logged.
    Unchanged {
        /// Why (for the log).
        reason: String,
        /// How it counts in `messages_total`.
        outcome: Outcome,
        /// Header edits all the same (the verification's
        /// `Authentication-Results`), in order.
        edits: Vec<HeaderEdit>,
    },
    /// Signed, not encrypted: apply these header edits and replace the
    /// body.
    Signed {
        /// Header edits, in order.
        edits: Vec<HeaderEdit>,
        /// The new body (`multipart/signed`), CRLF line endings.
        body: Spool,
        /// Method signed with.
        method: Method,
    },
    /// Apply these header edits and replace the body.
    Encrypt {
        /// Header edits, in order.
        edits: Vec<HeaderEdit>,
        /// The new body, CRLF line endings.
        body: Spool,
        /// Method used.
        method: Method,
        /// Number of recipients it is encrypted to.
        recipients: usize,
        /// Method it was signed with inside the encryption, if any.
        signed: Option<Method>,
    },
    /// Refuse the message.
    Refuse(Reply),
}

/// Counts a transaction as in progress while it lives (so that shutdown
/// can wait for it).
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(counter: Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        InFlight(counter)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One SMTP transaction in progress.
struct MessageState {
    _in_flight: InFlight,
    directions: Vec<Direction>,
    sender: Option<Address>,
    /// `{auth_authen}`: the SMTP AUTH login, when the session
    /// authenticated.
    login: Option<String>,
    /// What the accepted recipients' rules ask of signing.
    sign: SignWish,
    txn: Transaction,
    accepted: Vec<RecipientDecision<Recipient>>,
    headers: Vec<HeaderField>,
    body: Spool,
    /// The body could not be spooled; the message is refused at its end
    /// (the body stage has no reply of its own: see `callbacks.rs`).
    spool_failed: bool,
    /// Header bytes received (stored or not).
    header_bytes: u64,
    /// Body bytes received (stored or not).
    body_bytes: u64,
    /// Set once a limit is passed: from then on nothing more is stored
    /// and the end of message only applies [`Overflow::verdict`].
    overflow: Option<Overflow>,
}

/// At most this many header fields are kept per message; beyond it the
/// message is handled like one over `limits.max_header_bytes`. Keeping a
/// field costs about 100 bytes however short it is (a 4-byte `X:` field
/// included), so `max_header_bytes` alone let 1 MiB of tiny fields take
/// some 13 MiB per connection. Real messages have tens to hundreds.
pub const MAX_HEADER_FIELDS: usize = 10_000;

/// Which limit a message passed. Its outcome is decided then: what was not
/// kept cannot be encrypted, nor verified as ciphertext.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Overflow {
    /// `limits.max_header_bytes`.
    Headers,
    /// [`MAX_HEADER_FIELDS`].
    Fields,
    /// `limits.max_message_bytes`.
    Body,
}

/// One MTA connection.
pub struct Session {
    engine: Arc<Engine>,
    in_flight: Arc<AtomicUsize>,
    encryption_slots: Arc<tokio::sync::Semaphore>,
    memory_budget: MemoryBudget,
    conn: ConnectionFacts,
    queue_id: Option<String>,
    msg: Option<MessageState>,
    /// Directions of the last message that reached its end, for counting.
    finished: Vec<Direction>,
}

impl Session {
    /// A new connection, bound to the engine (configuration, policy, key
    /// sources) current when it was opened.
    pub fn new(shared: &Shared) -> Self {
        // Connections are counted where they are accepted (slots.rs).
        let engine = shared.engine();
        Session {
            engine,
            in_flight: shared.in_flight(),
            encryption_slots: shared.encryption_slots(),
            memory_budget: shared.memory_budget(),
            conn: ConnectionFacts::default(),
            queue_id: None,
            msg: None,
            finished: Vec::new(),
        }
    }

    /// Counts the last message in `messages_total`, once per direction of
    /// its accepted recipients.
    pub fn count(&self, outcome: Outcome) {
        for d in &self.finished {
            self.engine.metrics.message(*d, outcome);
        }
    }

    /// The engine this connection works with.
    pub fn engine(&self) -> Arc<Engine> {
        self.engine.clone()
    }

    /// The queue id for log lines (`NOQUEUE` until the MTA names it).
    pub fn queue_id(&self) -> &str {
        self.queue_id.as_deref().unwrap_or("NOQUEUE")
    }

    /// Records the MTA's queue id (macro `i`).
    pub fn set_queue_id(&mut self, id: &str) {
        if !id.is_empty() {
            self.queue_id = Some(id.to_owned());
        }
    }

    /// Records `{daemon_name}`.
    pub fn set_daemon_name(&mut self, name: &str) {
        if !name.is_empty() {
            self.conn.daemon_name = Some(name.to_owned());
        }
    }

    /// Starts a transaction (MAIL FROM). `login` is `{auth_authen}`, when
    /// set and not empty.
    pub fn mail(&mut self, sender: &str, login: Option<&str>) {
        let login = login.filter(|l| !l.is_empty());
        self.conn.authenticated = login.is_some();
        let sender = sender.trim();
        let sender = if sender.is_empty() || sender == "<>" {
            None
        } else {
            // Not the null sender: an unparseable MAIL FROM must not pass
            // for `<>` (bounces are often exempt). It matches no sender
            // glob, so only rules without `sender` apply.
            // Postfix reads comments and white space away (its log shows
            // the stripped form); read them the same way before giving up.
            let stripped = crate::address::strip_comments(sender);
            let parsed = Address::parse(sender).or_else(|e| {
                stripped
                    .as_deref()
                    .filter(|s| *s != sender)
                    .map_or(Err(e.clone()), |s| Address::parse(s).map_err(|_| e))
            });
            Some(parsed.unwrap_or_else(|e| {
                tracing::info!("{}: MAIL FROM matches no sender glob: {e}", self.queue_id());
                Address::unparseable(sender)
            }))
        };
        self.msg = Some(MessageState {
            _in_flight: InFlight::new(self.in_flight.clone()),
            directions: Vec::new(),
            sender,
            login: login.map(str::to_owned),
            sign: SignWish::default(),
            txn: Transaction::new(),
            accepted: Vec::new(),
            headers: Vec::new(),
            body: Spool::with_budget(
                usize::try_from(self.engine.config.limits.spool_threshold_bytes)
                    .unwrap_or(usize::MAX),
                self.memory_budget.clone(),
            ),
            spool_failed: false,
            header_bytes: 0,
            body_bytes: 0,
            overflow: None,
        });
    }

    /// A recipient (RCPT TO): look its keys up, decide, and fit it into the
    /// transaction.
    pub async fn rcpt(&mut self, rcpt: &str) -> RcptVerdict {
        let engine = self.engine.clone();
        let qid = self.queue_id().to_owned();
        let Some(msg) = self.msg.as_mut() else {
            tracing::warn!("{qid}: RCPT without MAIL; refusing");
            return RcptVerdict::Refuse(Reply::internal_error());
        };
        let addr = match Address::parse(rcpt) {
            Ok(a) => a,
            Err(e) => {
                // No canonical form, so no rule can be proven not to
                // apply: refuse, permanently, since the same text fails
                // the same way at every retry (a 4xx would loop until
                // the queue lifetime ends).
                tracing::warn!("{qid}: rcpt refused: {e}");
                return RcptVerdict::Refuse(Reply::bad_address());
            }
        };
        if addr.routes_in_local_part() {
            tracing::warn!("{qid}: rcpt {addr} refused: routing in the local part");
            return RcptVerdict::Refuse(Reply::routed_address());
        }
        let shown = addr.both_forms();
        let direction = engine.policy.direction_of(&addr);
        let q = Query {
            recipient: &addr,
            sender: msg.sender.as_ref(),
            direction,
            conn: &self.conn,
        };
        let rule = engine.policy.select(&q).rule;
        let signing = rule.signing.clone();
        let methods: Vec<Method> = match &rule.treatment {
            Treatment::NeverEncrypt => Vec::new(),
            Treatment::Encrypt { methods, .. } => methods.clone(),
        };
        let outcomes = match rule.treatment.key_choice() {
            Some(choice) => engine.keys.resolve_all(&addr, &methods, &choice).await,
            None => Vec::new(),
        };
        let decision = engine.policy.decide(&q, outcomes);
        for note in &decision.notes {
            tracing::info!("{qid}: rcpt {shown} ({direction}): {note}");
        }
        match msg.txn.admit(&decision) {
            Admission::Accept => {
                tracing::info!(
                    "{qid}: rcpt {shown} ({direction}): rule \"{}\": {}",
                    decision.rule,
                    action_summary(&decision.action)
                );
                msg.sign.add(&decision.rule, &signing);
                msg.accepted.push(decision);
                if !msg.directions.contains(&direction) {
                    msg.directions.push(direction);
                }
                RcptVerdict::Accept
            }
            Admission::Defer(reply) | Admission::Refuse(reply) => {
                tracing::info!(
                    "{qid}: rcpt {shown} ({direction}): rule \"{}\": {} {} {}",
                    decision.rule,
                    reply.code(),
                    reply.enhanced(),
                    reply.text()
                );
                RcptVerdict::Refuse(reply)
            }
        }
    }

    /// A header field as received. `value` is everything after the colon
    /// (the MTA is asked to keep the leading space).
    ///
    /// Beyond `limits.max_header_bytes` or [`MAX_HEADER_FIELDS`] nothing
    /// more of the message is stored (what was is released) and its
    /// outcome is decided.
    pub fn header(&mut self, name: &str, value: &[u8]) {
        let limits = &self.engine.config.limits;
        let qid = self.queue_id.as_deref().unwrap_or("NOQUEUE");
        let Some(msg) = self.msg.as_mut() else {
            return;
        };
        // As on the wire: name, colon, value, CRLF.
        msg.header_bytes = msg
            .header_bytes
            .saturating_add((name.len() + value.len() + 3) as u64);
        if msg.overflow.is_some() {
            return;
        }
        let over = if msg.header_bytes > limits.max_header_bytes {
            Some(Overflow::Headers)
        } else if msg.headers.len() >= MAX_HEADER_FIELDS {
            Some(Overflow::Fields)
        } else {
            None
        };
        if let Some(over) = over {
            msg.overflow = Some(over);
            msg.headers = Vec::new();
            msg.body = Spool::new(0);
            tracing::warn!("{qid}: {}; no longer stored", over.describe(msg, limits));
            return;
        }
        msg.headers.push(HeaderField::new(name, value));
    }

    /// A body chunk (CRLF line endings, as on the wire). After an error
    /// the rest of the body is ignored, what was spooled is released, and
    /// [`Session::eom`] refuses the message.
    ///
    /// Beyond `limits.max_message_bytes` the body is no longer stored
    /// (what was is released) and the rest is discarded as it arrives.
    pub fn body(&mut self, chunk: &[u8]) -> io::Result<()> {
        let limits = &self.engine.config.limits;
        let qid = self.queue_id.as_deref().unwrap_or("NOQUEUE");
        let Some(msg) = self.msg.as_mut() else {
            return Ok(());
        };
        msg.body_bytes = msg.body_bytes.saturating_add(chunk.len() as u64);
        if msg.spool_failed || msg.overflow.is_some() {
            return Ok(());
        }
        if msg.body_bytes > limits.max_message_bytes {
            msg.overflow = Some(Overflow::Body);
            msg.body = Spool::new(0);
            tracing::info!(
                "{qid}: {}; the rest is discarded",
                Overflow::Body.describe(msg, limits)
            );
            return Ok(());
        }
        msg.body.write_all(chunk).inspect_err(|_| {
            msg.spool_failed = true;
            msg.body = Spool::new(0);
        })
    }

    /// The transaction was aborted: forget it (its spool file goes with it).
    pub fn abort(&mut self) {
        self.msg = None;
    }
}

/// The log text of a recipient's action; each key with its fingerprint
/// and provenance (never key material).
fn action_summary(a: &Action<Recipient>) -> String {
    use std::fmt::Write as _;
    match a {
        Action::Encrypt {
            choices, required, ..
        } => {
            // One string, written in place: this runs at every RCPT on
            // the connection thread.
            let mut out = String::with_capacity(160);
            out.push_str(if *required {
                "encrypt (required) with "
            } else {
                "encrypt (opportunistic) with "
            });
            for (i, (m, keys)) in choices.iter().enumerate() {
                if i > 0 {
                    out.push_str(" or ");
                }
                let _ = write!(out, "{m} ({} key(s): ", keys.len());
                for (j, k) in keys.iter().enumerate() {
                    if j > 0 {
                        out.push_str("; ");
                    }
                    let p = &k.provenance;
                    let _ = write!(
                        out,
                        "{} via {}, vouched for by {}",
                        k.fingerprint,
                        p.source,
                        p.security.vouched_by()
                    );
                }
                out.push(')');
            }
            out
        }
        Action::Pass(why) => format!("pass: {why}"),
        Action::Reject(r) | Action::TempFail(r) => {
            format!("{} {} {}", r.code(), r.enhanced(), r.text())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

    use std::sync::Arc;

    use super::*;
    use crate::backend::Registry;
    use crate::keys::memory::MemorySource;
    use crate::keys::{KeyChoice, KeyService, Lookup, Provenance, Security, SourceKind};
    use crate::material::{KeyMaterial, SmimeCipher};
    use crate::policy::KeyOutcome;

    /// The RCPT log line names each key by fingerprint, source and what
    /// vouched for it.
    #[test]
    fn the_rcpt_log_names_each_keys_provenance() {
        let pkey =
            openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        let cert = crate::fuzzing::session::certificate(&pkey, "a@example.org").unwrap();
        let src = Arc::new(MemorySource::new("m"));
        src.set(
            "a@example.org",
            Method::Smime,
            Lookup::Found {
                keys: vec![KeyMaterial {
                    bound_addresses: Vec::new(),
                    method: Method::Smime,
                    data: cert,
                    origin: "SMIMEA 3 0 0 at x".into(),
                    provenance: Provenance::now(SourceKind::Dane, Security::Secure),
                }],
                unusable: Vec::new(),
                security: Security::Secure,
            },
        );
        let keys = KeyService::new(vec![src], Arc::new(Registry::new()), None);
        let addr = Address::parse("a@example.org").unwrap();
        let outcome = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(keys.resolve(&addr, Method::Smime, &KeyChoice::any()));
        let KeyOutcome::Found { usable, .. } = outcome.outcome else {
            panic!("no key");
        };
        let fingerprint = usable[0].fingerprint.clone();
        let line = action_summary(&Action::Encrypt {
            choices: vec![(Method::Smime, usable)],
            smime_cipher: SmimeCipher::default(),
            required: true,
            protect_headers: true,
        });
        assert_eq!(
            line,
            format!(
                "encrypt (required) with smime (1 key(s): {fingerprint} via dane, vouched for by \
                 DNSSEC)"
            )
        );
    }
}
