//! The end-of-message steps between "a message and its validated
//! recipients" and "an encrypted message": verify a candidate ciphertext
//! over the whole body (`check_ciphertext`) and stream the inner entity
//! into the backend (`encrypt_entity`) — both used by the offline
//! `encrypt` command and the milter — plus the milter's own two: take the
//! chosen method's keys from the recipients' decisions (`keys_for`) and
//! the blocking step that verifies, encrypts and renders into a spool
//! (`seal`). `encrypt` checks before it looks keys up (an encrypted input
//! needs none) and writes straight to standard output, so it composes
//! the two shared steps itself. [`prepare`] does it all for a message in
//! memory (tests, benchmarks).
//! (Finding and validating keys belongs to [`crate::keys::KeyService`].)

use std::io::{self, Read};

use crate::backend::{BackendError, EncryptOptions, EncryptedEntity, EncryptionBackend, Recipient};
use crate::material::Method;
use crate::memory::MemoryBudget;
use crate::message::blind::blind;
use crate::message::classify::{Classification, EncryptedKind, classify};
use crate::message::protect::{Protection, Unprotectable, protect as protect_header};
use crate::message::rewrite::{HeaderEdit, inner_header, outer_edits};
use crate::message::verify::{Verification, verify};
use crate::message::{CrlfReader, Eol, HeaderField};
use crate::policy::{Action, RecipientDecision};
use crate::signing::{SignError, Signer, sign};
use crate::spool::Spool;

/// The result of [`prepare`].
pub enum Prepared {
    /// Verified ciphertext: change nothing.
    AlreadyEncrypted(EncryptedKind),
    /// The header edits and the new body.
    Encrypted {
        /// Edits turning the original header into the outer header.
        edits: Vec<HeaderEdit>,
        /// The encrypted entity (its body is the new message body).
        entity: EncryptedEntity,
    },
}

/// What the full check of a message found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Check {
    /// Not a candidate: plaintext (the body was not read).
    Plain,
    /// The whole content is verified ciphertext: pass it unchanged.
    Verified(EncryptedKind),
    /// Looked like `looked` but is not (only) ciphertext: encrypt it.
    NotCiphertext {
        /// What the cheap classification took it for.
        looked: EncryptedKind,
        /// Why verification refused it.
        reason: String,
    },
}

impl Check {
    /// The log line (after the queue id) for a refused candidate.
    pub fn note(&self) -> Option<String> {
        match self {
            Check::NotCiphertext { looked, reason } => Some(format!(
                "looks encrypted ({looked}) but is not ({reason}); encrypting"
            )),
            _ => None,
        }
    }
}

/// The one "classify candidate → verify fully" step: a message passes as
/// already encrypted only if [`classify`] made it a candidate *and*
/// [`verify`] checked its whole body. Reads `body` (the body as received)
/// only for a candidate; CPU- and I/O-bound, so the milter runs it on the
/// blocking pool. A read error is an error, never a verdict.
pub(crate) fn check_ciphertext(
    headers: &[HeaderField],
    classification: &Classification,
    body: &mut dyn io::Read,
) -> io::Result<Check> {
    let Some(looked) = classification.candidate() else {
        return Ok(Check::Plain);
    };
    match verify(headers, body) {
        Verification::Verified(kind) => Ok(Check::Verified(kind)),
        Verification::NotCiphertext(reason) => Ok(Check::NotCiphertext { looked, reason }),
        Verification::ReadError(e) => Err(io::Error::other(format!(
            "reading the body to verify it: {e}"
        ))),
    }
}

/// Classifies and verifies the message and, unless it is verified
/// ciphertext, encrypts it to `to` (header protected when
/// `opts.protect_headers` asks and the message allows). `body` is the
/// original body as received.
pub fn prepare(
    headers: &[HeaderField],
    body: &[u8],
    backend: &dyn EncryptionBackend,
    to: &[Recipient],
    opts: &EncryptOptions,
) -> Result<Prepared, BackendError> {
    let class = classify(headers, body);
    if let Check::Verified(kind) = check_ciphertext(headers, &class, &mut &body[..])? {
        return Ok(Prepared::AlreadyEncrypted(kind));
    }
    let composed = compose(headers, opts.protect_headers);
    let Encrypted { edits, entity } = encrypt_entity(
        headers,
        composed.edits,
        &mut composed.inner_header.chain(CrlfReader::new(body)),
        backend,
        to,
        opts,
    )?;
    Ok(Prepared::Encrypted { edits, entity })
}

/// [`prepare`], signing the inner entity with `signer` first (the
/// signature inside the encryption, as the milter does for an
/// authenticated sender): tests and benchmarks.
pub fn prepare_signed(
    headers: &[HeaderField],
    body: &[u8],
    backend: &dyn EncryptionBackend,
    to: &[Recipient],
    opts: &EncryptOptions,
    signer: &Signer,
) -> Result<Prepared, BackendError> {
    let composed = compose(headers, opts.protect_headers);
    let mut inner = composed.inner_header.chain(CrlfReader::new(body));
    let step = SignStep {
        signer,
        required: true,
    };
    let entity = match sign_entity(&mut inner, step)? {
        Ok((entity, _)) => entity,
        Err(why) => {
            return Err(BackendError::Crypto {
                method: signer.method(),
                detail: why,
            });
        }
    };
    let Encrypted { edits, entity } = encrypt_entity(
        headers,
        composed.edits,
        &mut io::Cursor::new(entity),
        backend,
        to,
        opts,
    )?;
    Ok(Prepared::Encrypted { edits, entity })
}

/// The inner entity's header section and the outer header edits that go
/// with it, from [`compose`].
pub(crate) struct Composed {
    /// The header section of the inner entity (CRLF, with its empty
    /// line): read it, then the body, into the backend.
    pub(crate) inner_header: io::Cursor<Vec<u8>>,
    /// Edits the header protection makes to the outer header (none
    /// without it).
    pub(crate) edits: Vec<HeaderEdit>,
    /// Why the header was not protected although it was asked to be.
    pub(crate) unprotected: Option<Unprotectable>,
}

/// The inner entity's header: protected (RFC 9788, `message::protect`)
/// when `protect` asks and the message allows it, else the `Content-*`
/// fields alone, as before.
pub(crate) fn compose(headers: &[HeaderField], protect: bool) -> Composed {
    match protect.then(|| protect_header(headers)) {
        Some(Ok(Protection {
            inner_header,
            edits,
        })) => Composed {
            inner_header: io::Cursor::new(inner_header),
            edits,
            unprotected: None,
        },
        refused => Composed {
            inner_header: io::Cursor::new(inner_header(headers)),
            edits: Vec::new(),
            unprotected: refused.and_then(Result::err),
        },
    }
}

/// An encrypted message: the header edits and the new body.
pub(crate) struct Encrypted {
    /// Edits turning the original header into the outer header.
    pub(crate) edits: Vec<HeaderEdit>,
    /// The encrypted entity (its body is the new message body).
    pub(crate) entity: EncryptedEntity,
}

/// Encrypts the inner entity `inner` yields (a [`Composed`] header, then
/// the body with canonical line endings) and computes the edits: `first`
/// (the header protection's), then the content fields'.
pub(crate) fn encrypt_entity(
    headers: &[HeaderField],
    first: Vec<HeaderEdit>,
    inner: &mut dyn io::Read,
    backend: &dyn EncryptionBackend,
    to: &[Recipient],
    opts: &EncryptOptions,
) -> Result<Encrypted, BackendError> {
    let entity = backend.encrypt(inner, to, opts)?;
    let mut edits = first;
    edits.extend(outer_edits(headers, &entity.fields));
    Ok(Encrypted { edits, entity })
}

/// How many of a message's recipients are blind, for the metric and the
/// log line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Blind {
    /// Distinct recipient addresses no `To:` or `Cc:` names.
    pub(crate) blind: usize,
    /// Distinct recipient addresses in all.
    pub(crate) addresses: usize,
    /// Whether the blind ones' keys were marked [`Recipient::hidden`].
    pub(crate) hidden: bool,
}

/// Marks the keys of blind recipients (`message::blind`) `hidden` when
/// `hide` says so, and counts the blind ones by address.
pub(crate) fn mark_blind(headers: &[HeaderField], to: &mut [Recipient], hide: bool) -> Blind {
    let flags = blind(headers, to.iter().map(|r| &r.address));
    for (r, is_blind) in to.iter_mut().zip(&flags) {
        r.hidden = *is_blind && hide;
    }
    // An address with several keys counts once.
    let seen: std::collections::HashMap<_, _> = to.iter().map(|r| &r.address).zip(flags).collect();
    Blind {
        blind: seen.values().filter(|b| **b).count(),
        addresses: seen.len(),
        hidden: hide,
    }
}

/// The keys for `method` of every recipient whose decision is to encrypt
/// (the transaction admitted only recipients that can use `method`).
pub(crate) fn keys_for(
    method: Method,
    decisions: Vec<RecipientDecision<Recipient>>,
) -> Vec<Recipient> {
    let mut to = Vec::new();
    for d in decisions {
        if let Action::Encrypt { choices, .. } = d.action
            && let Some((_, keys)) = choices.into_iter().find(|(m, _)| *m == method)
        {
            to.extend(keys);
        }
    }
    to
}

/// The message as the milter received it, for [`seal`].
pub(crate) struct Received<'a> {
    /// Header fields as received.
    pub(crate) headers: &'a [HeaderField],
    /// What the cheap check made of it.
    pub(crate) class: &'a Classification,
    /// The body as received.
    pub(crate) body: &'a Spool,
}

/// What [`seal`] did.
pub(crate) enum Sealed {
    /// The body is verified ciphertext: change nothing.
    Verified(EncryptedKind),
    /// Encrypted; the body rendered with CRLF line endings.
    Encrypted {
        /// Edits turning the original header into the outer header.
        edits: Vec<HeaderEdit>,
        /// The rendered body.
        body: Spool,
        /// Its blind recipients.
        blind: Blind,
        /// Whether it was signed inside the encryption.
        signed: Signed,
    },
    /// A rule requires a signature and the message cannot be signed
    /// (why): refuse it, nothing was encrypted.
    Unsignable(String),
}

/// The signing step of [`seal`] and [`sign_only`]: the sender's key, and
/// whether a rule requires the signature.
#[derive(Clone, Copy)]
pub(crate) struct SignStep<'a> {
    /// The key.
    pub(crate) signer: &'a Signer,
    /// `sign_required`.
    pub(crate) required: bool,
}

/// Whether the message was signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Signed {
    /// No signature was asked for.
    NotAsked,
    /// Signed with this method.
    With(Method),
    /// Asked for (not required) but the entity cannot be made safe for
    /// transport: sent unsigned, why.
    Unsafe(String),
}

/// Signs the entity `inner` yields with `step`: the signed entity, or —
/// when it cannot be made safe for transport — the entity unchanged and
/// why (`Err` of the outer result only for a library failure, or for a
/// required signature: `Ok(Err(why))`).
fn sign_entity(
    inner: &mut dyn io::Read,
    step: SignStep<'_>,
) -> Result<Result<(Vec<u8>, Signed), String>, BackendError> {
    let mut entity = Vec::new();
    inner.read_to_end(&mut entity)?;
    match sign(&entity, step.signer) {
        Ok(s) => Ok(Ok((s.to_entity(), Signed::With(step.signer.method())))),
        Err(SignError::Unsafe(why)) if step.required => Ok(Err(why)),
        Err(SignError::Unsafe(why)) => Ok(Ok((entity, Signed::Unsafe(why)))),
        Err(e @ SignError::Crypto { .. }) => Err(BackendError::Crypto {
            method: step.signer.method(),
            detail: e.to_string(),
        }),
    }
}

/// A message signed and not encrypted ([`sign_only`]).
pub(crate) enum SignedOnly {
    /// Signed: the edits and the new body.
    Signed {
        /// Edits turning the original content fields into the
        /// `multipart/signed` ones.
        edits: Vec<HeaderEdit>,
        /// The new body, CRLF line endings.
        body: Spool,
    },
    /// It cannot be made safe for transport (why): unchanged.
    Unsafe(String),
}

/// The milter's blocking work for a message that is signed and not
/// encrypted: the entity (the `Content-*` fields and the body) signed
/// with `signer`, the outer header keeping everything else.
pub(crate) fn sign_only(
    headers: &[HeaderField],
    body: &Spool,
    signer: &Signer,
    spool_threshold: usize,
    budget: MemoryBudget,
) -> Result<SignedOnly, BackendError> {
    let mut inner = io::Cursor::new(inner_header(headers)).chain(CrlfReader::new(body.reader()));
    let mut entity = Vec::new();
    inner.read_to_end(&mut entity)?;
    let signed = match sign(&entity, signer) {
        Ok(s) => s,
        Err(SignError::Unsafe(why)) => return Ok(SignedOnly::Unsafe(why)),
        Err(e @ SignError::Crypto { .. }) => {
            return Err(BackendError::Crypto {
                method: signer.method(),
                detail: e.to_string(),
            });
        }
    };
    drop(entity);
    let mut out = Spool::with_budget(spool_threshold, budget);
    io::Write::write_all(&mut out, &signed.body)?;
    Ok(SignedOnly::Signed {
        edits: outer_edits(headers, &signed.fields),
        body: out,
    })
}

/// The milter's blocking end-of-message work, in one place: verify a
/// candidate over the whole body; unless it is verified ciphertext,
/// mark the blind recipients' keys, compose the inner entity (header
/// protected per `opts`), encrypt it to `to` and render the result into a
/// spool drawing on `budget`. Reads `body` once to verify (only a
/// candidate) and once to encrypt. Why a candidate is encrypted all the
/// same, and why a header is not protected although asked, go to `note`
/// before the encryption starts (so the log has them even when the
/// encryption fails).
pub(crate) fn seal(
    Received {
        headers,
        class,
        body,
    }: Received<'_>,
    backend: &dyn EncryptionBackend,
    mut to: Vec<Recipient>,
    opts: &EncryptOptions,
    budget: MemoryBudget,
    sign_step: Option<SignStep<'_>>,
    mut note: impl FnMut(&str),
) -> Result<Sealed, BackendError> {
    let check = check_ciphertext(headers, class, &mut body.reader())?;
    if let Check::Verified(kind) = check {
        return Ok(Sealed::Verified(kind));
    }
    if let Some(why) = check.note() {
        note(&why);
    }
    let blind = mark_blind(headers, &mut to, opts.hide_blind);
    let composed = compose(headers, opts.protect_headers);
    if let Some(why) = composed.unprotected {
        note(&format!("header not protected: {why}"));
    }
    let mut inner = composed.inner_header.chain(CrlfReader::new(body.reader()));
    // Signed first, so the signature travels inside the encryption (the
    // header protection's fields inside the signature too, RFC 9788).
    let (signed_entity, signed) = match sign_step {
        None => (None, Signed::NotAsked),
        Some(step) => match sign_entity(&mut inner, step)? {
            Ok((entity, signed)) => (Some(entity), signed),
            Err(why) => return Ok(Sealed::Unsignable(why)),
        },
    };
    let Encrypted { edits, entity } = match signed_entity {
        Some(e) => encrypt_entity(
            headers,
            composed.edits,
            &mut io::Cursor::new(e),
            backend,
            &to,
            opts,
        )?,
        None => encrypt_entity(headers, composed.edits, &mut inner, backend, &to, opts)?,
    };
    let mut rendered = Spool::with_budget(opts.spool_threshold, budget);
    entity.body.write_to(Eol::Crlf, &mut rendered)?;
    Ok(Sealed::Encrypted {
        edits,
        body: rendered,
        blind,
        signed,
    })
}
