//! `keys list|show|import|forget|pin|unpin|changes|approve`: the key store
//! from the command line. It opens the store `[store]` of the
//! configuration names — the same one the milter uses, so on a fleet
//! sharing a PostgreSQL store one command acts on every host (each sees
//! it within `store.refresh_secs`).
//!
//! Output is one line per item, `key=value` fields after the positional
//! ones, times in UTC (`2024-01-02T03:04:05Z`), no key material. Exit
//! status: 0 done, 1 nothing found or nothing to do (or a usage or input
//! error), 2 the store failed.

use crate::harvest::date::iso_utc;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use clap::Subcommand;

use crate::address::Address;
use crate::config::{Config, FileRequirement};
use crate::material::{KeyMaterial, Method, Provenance, Security, SourceKind};
use crate::store::{
    KeyChange, Learned, LearnedFrom, LearnedKey, Pin, Store, StoreError, StoreSettings,
};

/// `keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// One line per learned key (of ADDRESS only, when given).
    List {
        /// Only this address's keys.
        address: Option<String>,
    },
    /// Everything the store holds for an address: learned keys, pins,
    /// what each source returned, key changes.
    Show {
        /// The address.
        address: String,
    },
    /// Record a certificate or OpenPGP key (PEM/DER, armored/binary) as
    /// learned for ADDRESS, as if from a message now: it replaces what was
    /// learned from older mail. The key must be usable for the address.
    Import {
        /// The certificate or key file.
        file: PathBuf,
        /// The address it is for.
        #[arg(long, value_name = "ADDRESS")]
        address: String,
        /// The method, when the file could be read as both.
        #[arg(long, value_name = "smime|openpgp")]
        method: Option<Method>,
    },
    /// Forget the learned keys, key history and key changes of an address
    /// (of one method only with --method). Pins stay.
    Forget {
        /// The address.
        address: String,
        /// Only this method.
        #[arg(long, value_name = "smime|openpgp")]
        method: Option<Method>,
    },
    /// Pin a fingerprint for an address: mail to it is encrypted only to
    /// a pinned key.
    Pin {
        /// The address.
        address: String,
        /// The fingerprint: hex, any case, spaces or colons allowed.
        fingerprint: String,
        /// A note kept with the pin (replaces an existing pin's note).
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Remove an address's pins (only FINGERPRINT, when given).
    Unpin {
        /// The address.
        address: String,
        /// Only this fingerprint.
        fingerprint: Option<String>,
    },
    /// Key changes waiting for review (all, with --all).
    Changes {
        /// Approved ones too.
        #[arg(long)]
        all: bool,
    },
    /// Approve a changed key: mail goes to it from now on.
    Approve {
        /// The address.
        address: String,
        /// The new key's fingerprint.
        fingerprint: String,
    },
}

impl KeysCommand {
    /// Whether the command only reads (it then creates no SQLite file).
    fn reads_only(&self) -> bool {
        matches!(
            self,
            KeysCommand::List { .. } | KeysCommand::Show { .. } | KeysCommand::Changes { .. }
        )
    }
}

/// The outcome of a command: status and what to say on stderr.
enum Outcome {
    Done,
    Nothing(String),
}

/// Why a command could not run.
enum Failure {
    /// A usage or input error (exit 1).
    Input(String),
    /// The store failed (exit 2).
    Store(StoreError),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

/// Runs a `keys` subcommand.
pub fn run(config: &Path, cmd: &KeysCommand) -> ExitCode {
    let loaded = match Config::load(config, FileRequirement::for_path(config)) {
        Ok(l) => l,
        Err(e) => return super::fail(1, e),
    };
    let settings = StoreSettings::from_config(&loaded.config.store);
    if cmd.reads_only()
        && let Some(path) = settings.url.strip_prefix("sqlite://")
        && !Path::new(path).exists()
    {
        return super::fail(1, format!("no key store at {path} yet (nothing learned)"));
    }
    let store = match Store::open(&settings) {
        Ok(s) => s,
        Err(e) => return super::fail(2, e),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return super::fail(2, format!("starting the runtime: {e}")),
    };
    match runtime.block_on(execute(&store, cmd)) {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::Nothing(why)) => super::fail(1, why),
        Err(Failure::Input(why)) => super::fail(1, why),
        Err(Failure::Store(e)) => super::fail(2, e),
    }
}

/// An address in its canonical form (the key of every store table).
fn address(s: &str) -> Result<String, Failure> {
    Address::parse(s)
        .map(|a| crate::store::store_key(&a))
        .map_err(|e| Failure::Input(e.to_string()))
}

fn fingerprint(s: &str) -> Result<String, Failure> {
    crate::material::canonical_fingerprint(s).map_err(Failure::Input)
}

async fn execute(store: &Store, cmd: &KeysCommand) -> Result<Outcome, Failure> {
    let now = crate::backend::unix_seconds(SystemTime::now());
    match cmd {
        KeysCommand::List { address: a } => {
            let a = a.as_deref().map(address).transpose()?;
            let keys = store.list_learned(a.as_deref()).await?;
            for k in &keys {
                println!("{}", learned_line(k));
            }
            Ok(if keys.is_empty() {
                Outcome::Nothing("no learned keys".to_owned())
            } else {
                Outcome::Done
            })
        }
        KeysCommand::Show { address: a } => show(store, &address(a)?).await,
        KeysCommand::Import {
            file,
            address: a,
            method,
        } => import(store, file, a, *method, now).await,
        KeysCommand::Forget { address: a, method } => {
            let a = address(a)?;
            match store.forget(&a, *method).await? {
                0 => Ok(Outcome::Nothing(format!("nothing stored for {a}"))),
                n => {
                    println!("forgot {a} rows={n}");
                    Ok(Outcome::Done)
                }
            }
        }
        KeysCommand::Pin {
            address: a,
            fingerprint: f,
            note,
        } => {
            let (a, f) = (address(a)?, fingerprint(f)?);
            let pin = Pin {
                address: a.clone(),
                fingerprint: f.clone(),
                created: now,
                note: note.clone(),
            };
            if store.pin(&pin).await? {
                println!("pinned {a} {f}");
                Ok(Outcome::Done)
            } else if !note.is_empty() {
                println!("pinned {a} {f} (already; note replaced)");
                Ok(Outcome::Done)
            } else {
                Ok(Outcome::Nothing(format!("{f} is already pinned for {a}")))
            }
        }
        KeysCommand::Unpin {
            address: a,
            fingerprint: f,
        } => {
            let a = address(a)?;
            let f = f.as_deref().map(fingerprint).transpose()?;
            match store.unpin(&a, f.as_deref()).await? {
                0 => Ok(Outcome::Nothing(match f {
                    Some(f) => format!("{f} is not pinned for {a}"),
                    None => format!("no pins for {a}"),
                })),
                n => {
                    println!("unpinned {a} pins={n}");
                    Ok(Outcome::Done)
                }
            }
        }
        KeysCommand::Changes { all } => {
            let changes = store.changes(!all).await?;
            for c in &changes {
                println!("{}", change_line(c));
            }
            Ok(if changes.is_empty() {
                Outcome::Nothing(if *all {
                    "no key changes".to_owned()
                } else {
                    "no key changes waiting for review".to_owned()
                })
            } else {
                Outcome::Done
            })
        }
        KeysCommand::Approve {
            address: a,
            fingerprint: f,
        } => {
            let (a, f) = (address(a)?, fingerprint(f)?);
            match store.approve(&a, &f, now).await? {
                0 => Ok(Outcome::Nothing(format!(
                    "no change of {a} to {f} waits for review"
                ))),
                n => {
                    println!("approved {a} {f} changes={n}");
                    Ok(Outcome::Done)
                }
            }
        }
    }
}

async fn show(store: &Store, a: &str) -> Result<Outcome, Failure> {
    let learned = store.list_learned(Some(a)).await?;
    let pins: Vec<Pin> = store
        .all_pins()
        .await?
        .into_iter()
        .filter(|p| p.address == a)
        .collect();
    let history = store.history_of(a).await?;
    let changes: Vec<KeyChange> = store
        .changes(false)
        .await?
        .into_iter()
        .filter(|c| c.address == a)
        .collect();
    for k in &learned {
        println!("learned {}", learned_line(k));
    }
    for p in &pins {
        println!(
            "pin {} {} created={} note={:?}",
            p.address,
            p.fingerprint,
            iso_utc(p.created),
            p.note
        );
    }
    for h in &history {
        println!(
            "history {} {} {} {} first-seen={} last-seen={} {}",
            a,
            h.method,
            h.source,
            h.seen.fingerprint,
            iso_utc(h.seen.first_seen),
            iso_utc(h.seen.last_seen),
            if h.seen.approved {
                "approved"
            } else {
                "pending"
            }
        );
    }
    for c in &changes {
        println!("change {}", change_line(c));
    }
    if learned.is_empty() && pins.is_empty() && history.is_empty() && changes.is_empty() {
        return Ok(Outcome::Nothing(format!("nothing stored for {a}")));
    }
    Ok(Outcome::Done)
}

async fn import(
    store: &Store,
    file: &Path,
    a: &str,
    method: Option<Method>,
    now: i64,
) -> Result<Outcome, Failure> {
    let addr = Address::parse(a).map_err(|e| Failure::Input(e.to_string()))?;
    let data = std::fs::read(file)
        .map_err(|e| Failure::Input(format!("reading {}: {e}", file.display())))?;
    let methods = match method {
        Some(m) => vec![m],
        None => Method::ALL.to_vec(),
    };
    let Some((method, identity)) = methods
        .iter()
        .find_map(|&m| crate::backend::identify(m, &data).map(|i| (m, i)))
    else {
        let what = match method {
            Some(Method::Smime) => "an S/MIME certificate",
            Some(Method::OpenPgp) => "an OpenPGP key",
            None => "a certificate or OpenPGP key",
        };
        return Err(Failure::Input(format!("{} is not {what}", file.display())));
    };
    // A key the milter would refuse for the address is not worth storing.
    let material = KeyMaterial {
        method,
        data: identity.canonical.clone(),
        origin: file.display().to_string(),
        provenance: Provenance::now(SourceKind::Directory, Security::Local),
        bound_addresses: Vec::new(),
    };
    crate::backend::Registry::new()
        .get(method)
        .validate(&material, &addr, SystemTime::now())
        .map_err(|e| Failure::Input(format!("not imported: {e}")))?;
    let key = LearnedKey {
        address: crate::store::store_key(&addr),
        method,
        fingerprint: identity.fingerprint.clone(),
        key: identity.canonical,
        how: LearnedFrom::Import,
        prefer_encrypt: None,
        effective: now,
        first_seen: now,
        last_seen: now,
    };
    let outcome = match store.learn(&key).await? {
        Learned::New => "new".to_owned(),
        Learned::Replaced { previous } => format!("replaced={previous}"),
        Learned::Refreshed => "refreshed".to_owned(),
        Learned::Older => {
            return Ok(Outcome::Nothing(format!(
                "not imported: the {method} key learned for {addr} is from a message dated now \
                 or later"
            )));
        }
    };
    println!("imported {addr} {method} {} {outcome}", key.fingerprint);
    Ok(Outcome::Done)
}

/// `ADDRESS METHOD FINGERPRINT how=… prefer-encrypt=… effective=…
/// first-seen=… last-seen=…`.
fn learned_line(k: &LearnedKey) -> String {
    format!(
        "{} {} {} how={} prefer-encrypt={} effective={} first-seen={} last-seen={}",
        k.address,
        k.method,
        k.fingerprint,
        k.how.as_str(),
        k.prefer_encrypt.map_or("-", |p| p.as_str()),
        iso_utc(k.effective),
        iso_utc(k.first_seen),
        iso_utc(k.last_seen)
    )
}

/// `ADDRESS METHOD SOURCE new=FP old=FP,FP detected=… pending|approved=…`.
fn change_line(c: &KeyChange) -> String {
    let old = if c.old.is_empty() {
        "-".to_owned()
    } else {
        c.old.join(",")
    };
    format!(
        "{} {} {} new={} old={} detected={} {}",
        c.address,
        c.method,
        c.source,
        c.new,
        old,
        iso_utc(c.detected),
        match c.approved {
            Some(t) => format!("approved={}", iso_utc(t)),
            None => "pending".to_owned(),
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc() {
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso_utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(iso_utc(-1), "1969-12-31T23:59:59Z");
        assert_eq!(iso_utc(4_102_444_799), "2099-12-31T23:59:59Z");
    }
}
