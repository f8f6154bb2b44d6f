//! `autoencrypt-milter encrypt`: the whole pipeline offline, standard
//! input to standard output, keys from a local key directory. Input may
//! start with an mbox separator line (`From sender date`), which is kept.

use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crate::address::Address;
use crate::backend::{EncryptOptions, Method, Recipient, Registry, SmimeCipher};
use crate::keys::directory::DirectorySource;
use crate::keys::{KeyChoice, KeyService};
use crate::message::classify::classify;
use crate::message::rewrite::{apply_edits, write_header};
use crate::message::{CrlfReader, Message};
use crate::pipeline::{Check, Encrypted, check_ciphertext, compose, encrypt_entity, mark_blind};
use crate::policy::KeyOutcome;

/// Arguments of `encrypt`.
#[derive(Debug, clap::Args)]
pub struct EncryptArgs {
    /// Recipient address (repeat for several recipients).
    #[arg(long = "to", value_name = "ADDR", required = true)]
    pub to: Vec<String>,
    /// Encryption method; by default the first of smime, openpgp for which
    /// every recipient has a usable key.
    #[arg(long, value_name = "smime|openpgp")]
    pub method: Option<Method>,
    /// Directory with `<address>.pem|.crt` and `<address>.asc|.pgp` files.
    #[arg(long, value_name = "DIR")]
    pub key_dir: PathBuf,
    /// S/MIME content cipher.
    #[arg(long, value_name = "CIPHER", default_value = "aes-256-cbc")]
    pub cipher: SmimeCipher,
    /// Protect the header (RFC 9788): the original fields inside, the
    /// Subject outside replaced by `[...]`, as a rule with
    /// `protect_headers = true` does.
    #[arg(long)]
    pub protect_headers: bool,
}

/// Runs `encrypt`.
pub fn run(args: &EncryptArgs) -> ExitCode {
    match encrypt(args) {
        Ok(code) => code,
        Err(e) => super::fail(1, e),
    }
}

/// Why `encrypt` stopped.
#[derive(Debug, thiserror::Error)]
enum EncryptError {
    #[error(transparent)]
    Address(#[from] crate::address::AddressError),
    #[error("{0}")]
    NoKey(String),
    #[error("{0}")]
    Backend(#[from] crate::backend::BackendError),
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
}

fn encrypt(args: &EncryptArgs) -> Result<ExitCode, EncryptError> {
    let addrs = args
        .to
        .iter()
        .map(|a| Address::parse(a))
        .collect::<Result<Vec<_>, _>>()?;
    let mut raw = Vec::new();
    io::stdin().lock().read_to_end(&mut raw)?;
    let (envelope, message) = split_mbox_separator(&raw);
    let msg = Message::parse(message);
    let body = &message[msg.body_offset..];

    let class = classify(&msg.headers, body);
    match check_ciphertext(&msg.headers, &class, &mut &body[..])? {
        Check::Verified(kind) => {
            io::stdout().lock().write_all(&raw)?;
            eprintln!(
                "autoencrypt-milter: already encrypted (verified {kind}); passed through unchanged"
            );
            return Ok(ExitCode::SUCCESS);
        }
        check => {
            if let Some(note) = check.note() {
                eprintln!("autoencrypt-milter: {note}");
            }
        }
    }

    let registry = Arc::new(Registry::new());
    let keys = KeyService::new(
        vec![Arc::new(DirectorySource::new(&args.key_dir))],
        registry.clone(),
        None,
    );
    let (method, mut recipients) = choose(&keys, &addrs, args.method)?;
    // A --to address no To: or Cc: names is blind, as in the milter.
    mark_blind(&msg.headers, &mut recipients, true);

    let eol = msg.eol;
    let opts = EncryptOptions {
        smime_cipher: args.cipher,
        protect_headers: args.protect_headers,
        ..EncryptOptions::default()
    };
    let backend = registry.get(method);
    let composed = compose(&msg.headers, opts.protect_headers);
    if let Some(why) = composed.unprotected {
        eprintln!("autoencrypt-milter: header not protected: {why}");
    }
    // The inner entity is streamed from the input and the ciphertext
    // spooled, so the message is held in memory once.
    let mut inner = composed.inner_header.chain(CrlfReader::new(body));
    let Encrypted { edits, entity } = encrypt_entity(
        &msg.headers,
        composed.edits,
        &mut inner,
        backend,
        &recipients,
        &opts,
    )?;
    drop(inner);
    let mut headers = msg.headers;
    apply_edits(&mut headers, &edits, eol);
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(256 * 1024, stdout.lock());
    out.write_all(envelope)?;
    write_header(&headers, eol, &mut out)?;
    entity.body.write_to(eol, &mut out)?;
    out.flush()?;
    let summary: Vec<String> = recipients
        .iter()
        .map(|r| format!("{} [{}]", r.address, r.fingerprint))
        .collect();
    let detail = match method {
        Method::Smime => format!("smime, {}", args.cipher),
        Method::OpenPgp => "openpgp".to_owned(),
    };
    eprintln!(
        "autoencrypt-milter: encrypted ({detail}) to {}",
        summary.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

/// Splits off an mbox separator line (`From sender date`, RFC 4155) at the
/// very start of the input, line ending included: it is not a header
/// field, and parsed as one it would end the header section at once and
/// carry every field into the encryption. It goes out first, unchanged.
fn split_mbox_separator(raw: &[u8]) -> (&[u8], &[u8]) {
    if !raw.starts_with(b"From ") {
        return (&[], raw);
    }
    let end = raw
        .iter()
        .position(|&b| b == b'\n')
        .map_or(raw.len(), |i| i + 1);
    raw.split_at(end)
}

/// Picks the method (the given one, or the first that every recipient
/// has a usable key for) and the recipients' keys.
fn choose(
    keys: &KeyService,
    addrs: &[Address],
    wanted: Option<Method>,
) -> Result<(Method, Vec<Recipient>), EncryptError> {
    let methods: Vec<Method> = match wanted {
        Some(m) => vec![m],
        None => Method::ALL.to_vec(),
    };
    // The directory answers at once; the runtime drives its future and the
    // key service's deadline (which needs the timer).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    let mut problems: Vec<String> = Vec::new();
    'method: for &method in &methods {
        let mut all = Vec::new();
        for addr in addrs {
            let resolved = runtime.block_on(keys.resolve(addr, method, &KeyChoice::any()));
            let problem = match resolved.outcome {
                KeyOutcome::Found { usable, .. } if !usable.is_empty() => {
                    all.extend(usable);
                    continue;
                }
                KeyOutcome::Found { rejected, .. } => {
                    let reasons: Vec<String> = rejected.iter().map(ToString::to_string).collect();
                    format!("{addr}: {method} key refused: {}", reasons.join("; "))
                }
                KeyOutcome::NotFound => format!("{addr}: no key for {method}"),
                KeyOutcome::Insecure => format!("{addr}: {method} key source is insecure"),
                KeyOutcome::Bogus(why) => format!("{addr}: {method}: DNSSEC bogus: {why}"),
                KeyOutcome::Failed(why) => format!("{addr}: {method}: lookup failed: {why}"),
                KeyOutcome::Held(why) => format!("{addr}: {method}: held for review: {why}"),
            };
            problems.push(problem);
            continue 'method;
        }
        return Ok((method, all));
    }
    Err(EncryptError::NoKey(format!(
        "no usable key for every recipient: {}",
        problems.join("; ")
    )))
}

#[cfg(test)]
mod tests {
    use super::split_mbox_separator;

    #[test]
    fn mbox_separator_is_split_off_with_its_line_ending() {
        let raw = b"From alice@example.org Tue Dec  1 10:00:00 2026\r\nSubject: x\r\n\r\nhi\r\n";
        let (sep, rest) = split_mbox_separator(raw);
        assert_eq!(sep, b"From alice@example.org Tue Dec  1 10:00:00 2026\r\n");
        assert_eq!(rest, b"Subject: x\r\n\r\nhi\r\n");
        // A header field called "From" has a colon, not a space.
        let (sep, rest) = split_mbox_separator(b"From: a@b\n\nhi\n");
        assert!(sep.is_empty());
        assert_eq!(rest, b"From: a@b\n\nhi\n");
        // A lone separator without a line ending is all envelope.
        let (sep, rest) = split_mbox_separator(b"From x");
        assert_eq!((sep, rest), (&b"From x"[..], &b""[..]));
    }
}
