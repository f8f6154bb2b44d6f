//! Per-connection and per-message state, and what happens at each stage.
//! Knows nothing of the milter protocol: `callbacks.rs` translates stages
//! into these calls and the verdicts back into replies and actions.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime};

use crate::address::Address;
use crate::backend::{EncryptOptions, Method, Recipient};
use crate::keys::KeySource;
use crate::message::HeaderField;
use crate::message::classify::{SCAN_LIMIT, classify};
use crate::message::rewrite::{HeaderEdit, inner_reader};
use crate::metrics::{ConnectionGuard, Outcome};
use crate::pipeline::{Check, Prepared, check_ciphertext, encrypt_entity};
use crate::policy::{
    Action, Admission, ConnectionFacts, Direction, KeyOutcome, MethodOutcome, Query,
    RecipientDecision, Reply, Transaction, Treatment,
};
use crate::spool::Spool;

use super::{Engine, Shared};

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
    txn: Transaction,
    accepted: Vec<RecipientDecision<Recipient>>,
    headers: Vec<HeaderField>,
    body: Spool,
    /// The body could not be spooled; the message is refused at its end
    /// (the body stage has no reply of its own: see `callbacks.rs`).
    spool_failed: bool,
}

/// One MTA connection.
pub struct Session {
    engine: Arc<Engine>,
    in_flight: Arc<AtomicUsize>,
    encryption_slots: Arc<tokio::sync::Semaphore>,
    conn: ConnectionFacts,
    queue_id: Option<String>,
    msg: Option<MessageState>,
    /// Directions of the last message that reached its end, for counting.
    finished: Vec<Direction>,
    _connection: ConnectionGuard,
}

impl Session {
    /// A new connection, bound to the engine (configuration, policy, key
    /// sources) current when it was opened.
    pub fn new(shared: &Shared) -> Self {
        let engine = shared.engine();
        let guard = engine.metrics.connection_opened();
        Session {
            engine,
            in_flight: shared.in_flight(),
            encryption_slots: shared.encryption_slots(),
            conn: ConnectionFacts::default(),
            queue_id: None,
            msg: None,
            finished: Vec::new(),
            _connection: guard,
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

    /// Starts a transaction (MAIL FROM). `authenticated` is whether
    /// `{auth_authen}` is set.
    pub fn mail(&mut self, sender: &str, authenticated: bool) {
        self.conn.authenticated = authenticated;
        let sender = sender.trim();
        let sender = if sender.is_empty() || sender == "<>" {
            None
        } else {
            Address::parse(sender).ok()
        };
        self.msg = Some(MessageState {
            _in_flight: InFlight::new(self.in_flight.clone()),
            directions: Vec::new(),
            sender,
            txn: Transaction::new(),
            accepted: Vec::new(),
            headers: Vec::new(),
            body: Spool::new(
                usize::try_from(self.engine.config.limits.spool_threshold_bytes)
                    .unwrap_or(usize::MAX),
            ),
            spool_failed: false,
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
                // Cannot be looked up, so cannot be proven not to need
                // encryption: defer rather than deliver in the clear.
                tracing::warn!("{qid}: {e}");
                return RcptVerdict::Refuse(Reply::internal_error());
            }
        };
        let direction = engine.policy.direction_of(&addr);
        let q = Query {
            recipient: &addr,
            sender: msg.sender.as_ref(),
            direction,
            conn: &self.conn,
        };
        let rule = engine.policy.select(&q).rule;
        let methods: Vec<Method> = match &rule.treatment {
            Treatment::NeverEncrypt => Vec::new(),
            Treatment::Encrypt { methods, .. } => methods.clone(),
        };
        let outcomes = look_up(&engine, &addr, &methods).await;
        let decision = engine.policy.decide(&q, outcomes);
        for note in &decision.notes {
            tracing::info!("{qid}: rcpt {addr} ({direction}): {note}");
        }
        match msg.txn.admit(&decision) {
            Admission::Accept => {
                tracing::info!(
                    "{qid}: rcpt {addr} ({direction}): rule \"{}\": {}",
                    decision.rule,
                    action_summary(&decision.action)
                );
                msg.accepted.push(decision);
                if !msg.directions.contains(&direction) {
                    msg.directions.push(direction);
                }
                RcptVerdict::Accept
            }
            Admission::Defer(reply) | Admission::Refuse(reply) => {
                tracing::info!(
                    "{qid}: rcpt {addr} ({direction}): rule \"{}\": {} {} {}",
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
    pub fn header(&mut self, name: &str, value: &[u8]) {
        if let Some(msg) = self.msg.as_mut() {
            msg.headers.push(HeaderField::new(name, value));
        }
    }

    /// A body chunk (CRLF line endings, as on the wire). After an error
    /// the rest of the body is ignored, what was spooled is released, and
    /// [`Session::eom`] refuses the message.
    pub fn body(&mut self, chunk: &[u8]) -> io::Result<()> {
        let Some(msg) = self.msg.as_mut() else {
            return Ok(());
        };
        if msg.spool_failed {
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

    /// End of message: classify, encrypt per the transaction's decision.
    pub async fn eom(&mut self) -> EomVerdict {
        let qid = self.queue_id().to_owned();
        let Some(mut msg) = self.msg.take() else {
            self.finished.clear();
            return EomVerdict::Refuse(Reply::internal_error());
        };
        self.finished = std::mem::take(&mut msg.directions);
        if msg.spool_failed {
            // Logged when it happened.
            return EomVerdict::Refuse(Reply::internal_error());
        }
        let engine = self.engine.clone();
        let size = msg.body.len();
        engine.metrics.message_size(size);
        let unchanged = |reason: String, outcome| EomVerdict::Unchanged { reason, outcome };
        let Some(method) = msg.txn.method() else {
            return unchanged("no recipient needs encryption".into(), Outcome::Passed);
        };
        let required = msg
            .accepted
            .iter()
            .any(|d| matches!(d.action, Action::Encrypt { required: true, .. }));

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
        let oversized = size > engine.config.limits.max_message_bytes;
        if class.candidate().is_some() && (oversized || engine.config.dry_run) {
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
                check_ciphertext(&headers, &class, &mut body.reader())
            })
            .await;
            match checked {
                Ok(Ok(Check::Verified(kind))) => {
                    return unchanged(
                        format!("already encrypted (verified {kind})"),
                        Outcome::AlreadyEncrypted,
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
        if oversized {
            return if required {
                EomVerdict::Refuse(Reply::too_big_to_encrypt())
            } else {
                unchanged(
                    format!("{size} bytes exceeds limits.max_message_bytes; opportunistic, passed"),
                    Outcome::Passed,
                )
            };
        }
        // Every accepted recipient can use `method`: take its keys.
        let mut to = Vec::new();
        for d in msg.accepted.drain(..) {
            if let Action::Encrypt { choices, .. } = d.action
                && let Some((_, keys)) = choices.into_iter().find(|(m, _)| *m == method)
            {
                to.extend(keys);
            }
        }
        if to.is_empty() {
            tracing::error!("{qid}: encryption decided but no keys for {method}");
            return EomVerdict::Refuse(Reply::internal_error());
        }
        let recipients = to.len();
        if engine.config.dry_run {
            return unchanged(
                format!("dry run: would encrypt with {method} to {recipients} key(s)"),
                Outcome::Passed,
            );
        }
        let opts = EncryptOptions {
            smime_cipher: msg.txn.smime_cipher().unwrap_or_default(),
            spool_threshold: usize::try_from(engine.config.limits.spool_threshold_bytes)
                .unwrap_or(usize::MAX),
        };
        let headers = std::mem::take(&mut msg.headers);
        let body = std::mem::replace(&mut msg.body, Spool::new(0));
        let registry = engine.registry.clone();
        // Waiting for a slot counts as encryption time in the metrics: it is
        // latency the message sees.
        let started = Instant::now();
        let Ok(slot) = self.encryption_slots.clone().acquire_owned().await else {
            tracing::error!("{qid}: encryption slots closed");
            return EomVerdict::Refuse(Reply::internal_error());
        };
        /// What the blocking task did.
        enum Done {
            Verified(crate::message::classify::EncryptedKind),
            Encrypted(Vec<HeaderEdit>, Spool),
        }
        let task_qid = qid.clone();
        // CPU-bound: off the thread that serves the milter connections.
        let result = tokio::task::spawn_blocking(move || {
            // Held while the work runs, even if the connection goes away.
            let _slot = slot;
            // Verified ciphertext passes; a candidate that fails is encrypted.
            let check = check_ciphertext(&headers, &class, &mut body.reader())?;
            if let Check::Verified(kind) = check {
                return Ok(Done::Verified(kind));
            }
            if let Some(note) = check.note() {
                tracing::info!("{task_qid}: {note}");
            }
            let backend = registry.get(method);
            let mut inner = inner_reader(&headers, body.reader());
            let prepared = encrypt_entity(&headers, &mut inner, backend, &to, &opts)?;
            let Prepared::Encrypted { edits, entity } = prepared else {
                return Err(crate::backend::BackendError::Recipients(
                    "nothing to encrypt".into(),
                ));
            };
            let mut rendered = Spool::new(opts.spool_threshold);
            entity
                .body
                .write_to(crate::message::Eol::Crlf, &mut rendered)?;
            Ok(Done::Encrypted(edits, rendered))
        })
        .await;
        if !matches!(result, Ok(Ok(Done::Verified(_)))) {
            engine.metrics.encryption(method, started.elapsed());
        }
        match result {
            Ok(Ok(Done::Verified(kind))) => unchanged(
                format!("already encrypted (verified {kind})"),
                Outcome::AlreadyEncrypted,
            ),
            Ok(Ok(Done::Encrypted(edits, body))) => EomVerdict::Encrypt {
                edits,
                body,
                method,
                recipients,
            },
            Ok(Err(e)) => {
                tracing::error!("{qid}: encryption failed: {e}");
                EomVerdict::Refuse(Reply::internal_error())
            }
            Err(e) => {
                tracing::error!("{qid}: encryption task failed: {e}");
                EomVerdict::Refuse(Reply::internal_error())
            }
        }
    }
}

/// Looks `addr` up for every method, concurrently, and validates the keys.
async fn look_up(
    engine: &Engine,
    addr: &Address,
    methods: &[Method],
) -> Vec<MethodOutcome<Recipient>> {
    let now = SystemTime::now();
    let one = |method: Method| async move {
        let started = Instant::now();
        let lookup = engine.sources.lookup(addr, method).await;
        engine.metrics.lookup(method, &lookup, started.elapsed());
        let backend = engine.registry.get(method);
        MethodOutcome {
            method,
            outcome: KeyOutcome::from_lookup(lookup, |k| {
                engine.validated.validate(backend, k, addr, now)
            }),
        }
    };
    match methods {
        [] => Vec::new(),
        [a] => vec![one(*a).await],
        [a, b] => {
            let (x, y) = tokio::join!(one(*a), one(*b));
            vec![x, y]
        }
        more => {
            let mut v = Vec::with_capacity(more.len());
            for m in more {
                v.push(one(*m).await);
            }
            v
        }
    }
}

fn action_summary<K>(a: &Action<K>) -> String {
    match a {
        Action::Encrypt {
            choices, required, ..
        } => {
            let methods: Vec<String> = choices
                .iter()
                .map(|(m, k)| format!("{m} ({} key(s))", k.len()))
                .collect();
            format!(
                "encrypt ({}) with {}",
                if *required {
                    "required"
                } else {
                    "opportunistic"
                },
                methods.join(" or ")
            )
        }
        Action::Pass(why) => format!("pass: {why}"),
        Action::Reject(r) | Action::TempFail(r) => {
            format!("{} {} {}", r.code(), r.enhanced(), r.text())
        }
    }
}
