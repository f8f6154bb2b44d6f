//! The local key store: a directory the administrator fills with
//! `<address>.pem` / `<address>.crt` (S/MIME certificates) and
//! `<address>.asc` / `<address>.pgp` (OpenPGP public keys).
//!
//! File names are looked up with the domain in its canonical form
//! (A-labels, lower case: `alice@xn--bcher-kva.test.pem`), the local part
//! as written and then lower-cased. Only when none of those exists is the
//! U-label spelling tried (`alice@bücher.test.pem`), since that is how an
//! administrator may name the file; both name one address, so either
//! file is its key. Other spellings (upper case, trailing dot) are never
//! looked for. Domain-less addresses and address literals have no key
//! file.

use std::io;
use std::path::PathBuf;

use crate::address::Address;
use crate::keys::{FailReason, KeySource, Lookup, LookupFuture, Provenance, Security, SourceKind};
use crate::material::{KeyMaterial, Method};

/// A directory of key files.
#[derive(Clone, Debug)]
pub struct DirectorySource {
    dir: PathBuf,
}

impl DirectorySource {
    /// A source reading from `dir`. The directory is read at every lookup,
    /// so keys can be added without a reload.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DirectorySource { dir: dir.into() }
    }

    /// File name extensions for `method`, in lookup order.
    pub fn extensions(method: Method) -> &'static [&'static str] {
        match method {
            Method::Smime => &["pem", "crt"],
            Method::OpenPgp => &["asc", "pgp"],
        }
    }

    /// Synchronous lookup; the directory is local, so this never waits on
    /// the network.
    pub fn lookup_sync(&self, addr: &Address, method: Method) -> Lookup {
        if !addr.has_dns_domain() {
            return Lookup::NotFound;
        }
        let lower = addr.lowercased();
        let mut names = vec![addr.to_string(), lower.to_string()];
        names.extend(addr.unicode());
        names.extend(lower.unicode());
        names.dedup();
        let mut keys = Vec::new();
        for name in &names {
            // Path separators in a local part must not reach the file system.
            if name.contains('/') || name.contains('\0') || name.starts_with('.') {
                return Lookup::NotFound;
            }
            for ext in Self::extensions(method) {
                let path = self.dir.join(format!("{name}.{ext}"));
                match std::fs::read(&path) {
                    Ok(data) => keys.push(KeyMaterial {
                        bound_addresses: Vec::new(),
                        method,
                        data,
                        origin: format!("file {}", path.display()),
                        provenance: Provenance::now(SourceKind::Directory, Security::Local),
                    }),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Lookup::Failed(FailReason::Network(format!(
                            "reading {}: {e}",
                            path.display()
                        )));
                    }
                }
            }
            if !keys.is_empty() {
                break;
            }
        }
        if keys.is_empty() {
            Lookup::NotFound
        } else {
            Lookup::Found {
                keys,
                unusable: Vec::new(),
                security: Security::Local,
            }
        }
    }
}

impl KeySource for DirectorySource {
    fn kind(&self) -> SourceKind {
        SourceKind::Directory
    }

    fn describe(&self) -> String {
        format!("local key directory {}", self.dir.display())
    }

    fn lookup<'a>(&'a self, addr: &'a Address, method: Method) -> LookupFuture<'a> {
        let result = self.lookup_sync(addr, method);
        Box::pin(std::future::ready(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_by_extension_and_lowercase_fallback() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("alice@example.org.pem"), b"cert").unwrap();
        std::fs::write(d.path().join("alice@example.org.asc"), b"key").unwrap();
        let src = DirectorySource::new(d.path());
        let a = Address::parse("Alice@Example.org").unwrap();
        match src.lookup_sync(&a, Method::Smime) {
            Lookup::Found { keys, security, .. } => {
                assert_eq!(security, Security::Local);
                assert_eq!(keys.len(), 1);
                assert_eq!(keys[0].data, b"cert");
                assert_eq!(keys[0].method, Method::Smime);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            src.lookup_sync(&a, Method::OpenPgp),
            Lookup::Found { .. }
        ));
        let b = Address::parse("bob@example.org").unwrap();
        assert!(matches!(
            src.lookup_sync(&b, Method::Smime),
            Lookup::NotFound
        ));
    }

    #[test]
    fn unreadable_file_is_a_failure_not_absence() {
        let d = tempfile::tempdir().unwrap();
        // A directory where a file is expected cannot be read.
        std::fs::create_dir(d.path().join("carol@example.org.pem")).unwrap();
        let src = DirectorySource::new(d.path());
        let c = Address::parse("carol@example.org").unwrap();
        assert!(matches!(
            src.lookup_sync(&c, Method::Smime),
            Lookup::Failed(_)
        ));
    }

    #[test]
    fn canonical_name_first_then_u_label() {
        let d = tempfile::tempdir().unwrap();
        let src = DirectorySource::new(d.path());
        std::fs::write(d.path().join("x@bücher.test.asc"), b"u-label").unwrap();
        for s in ["x@bücher.test", "X@XN--BCHER-KVA.test."] {
            match src.lookup_sync(&Address::parse(s).unwrap(), Method::OpenPgp) {
                Lookup::Found { keys, .. } => assert_eq!(keys[0].data, b"u-label"),
                other => panic!("{s}: {other:?}"),
            }
        }
        std::fs::write(d.path().join("x@xn--bcher-kva.test.asc"), b"a-label").unwrap();
        match src.lookup_sync(&Address::parse("x@bücher.test").unwrap(), Method::OpenPgp) {
            Lookup::Found { keys, .. } => {
                assert_eq!(keys.len(), 1);
                assert_eq!(keys[0].data, b"a-label");
            }
            other => panic!("{other:?}"),
        }
        // Files for addresses without a DNS domain are never read.
        std::fs::write(d.path().join("postmaster.asc"), b"k").unwrap();
        std::fs::write(d.path().join("a@[192.0.2.1].asc"), b"k").unwrap();
        for s in ["postmaster", "a@[192.0.2.1]"] {
            assert!(matches!(
                src.lookup_sync(&Address::parse(s).unwrap(), Method::OpenPgp),
                Lookup::NotFound
            ));
        }
    }

    #[test]
    fn needlessly_quoted_local_part_finds_the_same_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("alice.b@example.org.asc"), b"key").unwrap();
        let src = DirectorySource::new(d.path());
        for s in [
            "alice.b@example.org",
            "\"alice.b\"@example.org",
            "\"alice\\.b\"@example.org",
        ] {
            assert!(
                matches!(
                    src.lookup_sync(&Address::parse(s).unwrap(), Method::OpenPgp),
                    Lookup::Found { .. }
                ),
                "{s}"
            );
        }
    }

    #[test]
    fn path_tricks_find_nothing() {
        let d = tempfile::tempdir().unwrap();
        let src = DirectorySource::new(d.path());
        let evil = Address::parse("\"../../etc/passwd\"@example.org").unwrap();
        assert!(matches!(
            src.lookup_sync(&evil, Method::Smime),
            Lookup::NotFound
        ));
    }
}
