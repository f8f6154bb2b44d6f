//! `autoencrypt-milter encrypt`: the whole pipeline offline, standard
//! input to standard output, keys from a local key directory.

use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use crate::address::Address;
use crate::backend::{EncryptOptions, Method, Recipient, Registry, SmimeCipher};
use crate::keys::directory::DirectorySource;
use crate::message::Message;
use crate::message::classify::classify;
use crate::message::rewrite::{apply_edits, inner_reader, write_header};
use crate::pipeline::{Check, Prepared, check_ciphertext, encrypt_entity};
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
    let msg = Message::parse(&raw);
    let body = &raw[msg.body_offset..];

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

    let registry = Registry::new();
    let source = DirectorySource::new(&args.key_dir);
    let (method, recipients) = choose(&registry, &source, &addrs, args.method)?;

    let eol = msg.eol;
    let opts = EncryptOptions {
        smime_cipher: args.cipher,
        ..EncryptOptions::default()
    };
    let backend = registry.get(method);
    // The inner entity is streamed from the input and the ciphertext
    // spooled, so the message is held in memory once.
    let mut inner = inner_reader(&msg.headers, body);
    let Prepared::Encrypted { edits, entity } =
        encrypt_entity(&msg.headers, &mut inner, backend, &recipients, &opts)?
    else {
        // encrypt_entity never classifies; nothing else to do.
        return Ok(ExitCode::SUCCESS);
    };
    drop(inner);
    let mut headers = msg.headers;
    apply_edits(&mut headers, &edits, eol);
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(256 * 1024, stdout.lock());
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

/// Picks the method (the given one, or the first that every recipient
/// has a usable key for) and the recipients' keys.
fn choose(
    registry: &Registry,
    source: &DirectorySource,
    addrs: &[Address],
    wanted: Option<Method>,
) -> Result<(Method, Vec<Recipient>), EncryptError> {
    let now = SystemTime::now();
    let methods: Vec<Method> = match wanted {
        Some(m) => vec![m],
        None => Method::ALL.to_vec(),
    };
    let mut problems: Vec<String> = Vec::new();
    'method: for &method in &methods {
        let backend = registry.get(method);
        let mut all = Vec::new();
        for addr in addrs {
            let lookup = source.lookup_sync(addr, method);
            let problem = match KeyOutcome::from_lookup(lookup, |k| backend.validate(k, addr, now))
            {
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
