//! The signing key directory (`signing.key_dir`): per address,
//! `<address>.pem` (the S/MIME certificate, then its chain) with
//! `<address>.key` (its private key, PEM, unencrypted), and
//! `<address>.sec.asc` (an OpenPGP key with its secret signing key).
//!
//! Read once per configuration (start and reload), all or nothing: a
//! private key file that the group or others may read, or that another
//! user owns, a key that does not match its certificate, or an OpenPGP key
//! without a usable secret signing key stops the load with the file's
//! name, so a mistake is found when the operator makes it, not when a
//! message needs the key. Nothing about a key is logged but its file name
//! and fingerprint.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use sequoia_openpgp as pgp;

use super::{OpenPgpSigner, Signer, SmimeSigner};
use crate::address::{Address, fold_case};
use crate::material::Method;

/// Why the key directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyDirError {
    /// Reading the directory or a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A file is not acceptable.
    #[error("{}: {reason}", path.display())]
    Refused {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

fn refused(path: &Path, reason: impl Into<String>) -> KeyDirError {
    KeyDirError::Refused {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// The loaded signing keys, by address (local part case-insensitive, as
/// mail systems compare it).
#[derive(Clone, Default)]
pub struct SigningKeys {
    by_address: HashMap<String, Vec<Signer>>,
}

/// The lookup form of an address.
fn key_of(addr: &Address) -> String {
    format!("{}@{}", fold_case(&addr.local_unquoted()), addr.domain())
}

/// A private key file must be the milter's alone: owned by the user the
/// milter runs as, no permission bits for group or others.
fn check_private(path: &Path) -> Result<(), KeyDirError> {
    let meta = std::fs::metadata(path).map_err(|source| KeyDirError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(refused(
            path,
            format!(
                "mode {mode:04o}: a private key must be readable by the milter's user only \
                 (chmod 0600)"
            ),
        ));
    }
    // The effective uid without unsafe code: /proc/self belongs to the
    // process's effective user (proc(5)).
    let euid = std::fs::metadata("/proc/self")
        .map_err(|source| KeyDirError::Io {
            path: PathBuf::from("/proc/self"),
            source,
        })?
        .uid();
    if meta.uid() != euid {
        return Err(refused(
            path,
            format!(
                "owned by uid {}, not by the milter's user (uid {euid})",
                meta.uid()
            ),
        ));
    }
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>, KeyDirError> {
    std::fs::read(path).map_err(|source| KeyDirError::Io {
        path: path.to_owned(),
        source,
    })
}

fn openssl_reason(e: &openssl::error::ErrorStack) -> String {
    e.errors()
        .first()
        .and_then(|e| e.reason())
        .unwrap_or("unreadable")
        .to_owned()
}

/// The S/MIME signer from `<address>.pem` and `<address>.key`.
fn load_smime(pem: &Path, key: &Path) -> Result<SmimeSigner, KeyDirError> {
    check_private(key)?;
    let mut certs = openssl::x509::X509::stack_from_pem(&read(pem)?)
        .map_err(|e| {
            refused(
                pem,
                format!("not a PEM certificate chain: {}", openssl_reason(&e)),
            )
        })?
        .into_iter();
    let cert = certs
        .next()
        .ok_or_else(|| refused(pem, "no certificate in the file"))?;
    let chain: Vec<_> = certs.collect();
    let private = openssl::pkey::PKey::private_key_from_pem(&read(key)?).map_err(|e| {
        refused(
            key,
            format!("not an unencrypted PEM private key: {}", openssl_reason(&e)),
        )
    })?;
    let matches = cert
        .public_key()
        .map(|p| p.public_eq(&private))
        .unwrap_or(false);
    if !matches {
        return Err(refused(
            key,
            format!("does not match the certificate in {}", pem.display()),
        ));
    }
    Ok(SmimeSigner {
        cert,
        chain,
        key: private,
    })
}

/// The OpenPGP signer from `<address>.sec.asc`: it must hold the secret
/// of a signing-capable key, unencrypted (the milter has no one to ask
/// for a passphrase).
fn load_openpgp(path: &Path) -> Result<OpenPgpSigner, KeyDirError> {
    use pgp::parse::Parse;
    check_private(path)?;
    let cert = pgp::Cert::from_bytes(&read(path)?)
        .map_err(|e| refused(path, format!("not an OpenPGP key: {e}")))?;
    let policy = pgp::policy::StandardPolicy::new();
    let usable = cert
        .keys()
        .with_policy(&policy, SystemTime::now())
        .supported()
        .alive()
        .revoked(false)
        .for_signing()
        .secret()
        .any(|k| k.key().has_unencrypted_secret());
    if !usable {
        return Err(refused(
            path,
            "no valid signing key with unencrypted secret key material (export it with \
             `gpg --export-secret-keys` after removing the passphrase)",
        ));
    }
    Ok(OpenPgpSigner { cert })
}

impl SigningKeys {
    /// Loads every key in `dir`. Hidden files and files of other names
    /// are ignored; a `.key` without its `.pem` (or the reverse) is an
    /// error, as is a file name that is not an address.
    pub fn load(dir: &Path) -> Result<SigningKeys, KeyDirError> {
        let entries = std::fs::read_dir(dir).map_err(|source| KeyDirError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let mut names: Vec<String> = Vec::new();
        for e in entries {
            let e = e.map_err(|source| KeyDirError::Io {
                path: dir.to_owned(),
                source,
            })?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') {
                names.push(name);
            }
        }
        names.sort();
        let mut keys = SigningKeys::default();
        for name in &names {
            let path = dir.join(name);
            let (stem, method) = if let Some(s) = name.strip_suffix(".sec.asc") {
                (s, Method::OpenPgp)
            } else if let Some(s) = name.strip_suffix(".pem") {
                (s, Method::Smime)
            } else if let Some(s) = name.strip_suffix(".key") {
                if !names.contains(&format!("{s}.pem")) {
                    return Err(refused(&path, format!("no certificate {s}.pem beside it")));
                }
                continue;
            } else {
                continue;
            };
            let addr = Address::parse(stem)
                .ok()
                .filter(Address::has_dns_domain)
                .ok_or_else(|| refused(&path, "the file name is not <address>.pem/.sec.asc"))?;
            let signer = match method {
                Method::Smime => {
                    let key = dir.join(format!("{stem}.key"));
                    if !names.contains(&format!("{stem}.key")) {
                        return Err(refused(
                            &path,
                            format!("no private key {stem}.key beside it"),
                        ));
                    }
                    Signer::Smime(Arc::new(load_smime(&path, &key)?))
                }
                Method::OpenPgp => Signer::OpenPgp(Arc::new(load_openpgp(&path)?)),
            };
            let slot = keys.by_address.entry(key_of(&addr)).or_default();
            if slot.iter().any(|s| s.method() == method) {
                return Err(refused(&path, format!("a second {method} key for {addr}")));
            }
            slot.push(signer);
        }
        Ok(keys)
    }

    /// The key of `addr` for `method`.
    pub fn get(&self, addr: &Address, method: Method) -> Option<&Signer> {
        self.by_address
            .get(&key_of(addr))?
            .iter()
            .find(|s| s.method() == method)
    }

    /// The methods `addr` has a key for.
    pub fn methods(&self, addr: &Address) -> Vec<Method> {
        self.by_address
            .get(&key_of(addr))
            .map(|v| v.iter().map(Signer::method).collect())
            .unwrap_or_default()
    }

    /// How many keys are loaded (for the start-up log line).
    pub fn len(&self) -> usize {
        self.by_address.values().map(Vec::len).sum()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.by_address.is_empty()
    }
}

#[cfg(test)]
#[path = "keys_tests.rs"]
mod tests;
