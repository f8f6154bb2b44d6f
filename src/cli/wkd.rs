//! `wkd build`: a Web Key Directory for the local users' OpenPGP keys, so
//! an operator publishes them the way others' are fetched. Reads the key
//! directory, keeps each key that can be encrypted to for its address (of
//! a local domain) with only that address's user IDs, and writes both
//! layouts of draft-koch-openpgp-webkey-service:
//!
//! * `OUT/advanced/`: the document root of `openpgpkey.<domain>` (one
//!   tree serves every domain: the domain is in the path);
//! * `OUT/direct/<domain>/`: the document root of `<domain>` itself.
//!
//! Each has the `policy` file WKD clients look for. `OUT` is replaced as a
//! whole, so a key removed from the directory is no longer published.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use clap::Subcommand;

use crate::address::Address;
use crate::backend::openpgp::wkd_key;
use crate::config::{Config, FileRequirement};
use crate::keys::directory::DirectorySource;
use crate::keys::wkd::{advanced_path, direct_path, local_part_hash};
use crate::material::Method;

/// `wkd` subcommands.
#[derive(Debug, Subcommand)]
pub enum WkdCommand {
    /// Write the Web Key Directory (advanced and direct layouts) for the
    /// OpenPGP keys of local-domain addresses in the key directory.
    Build(BuildArgs),
}

/// Arguments of `wkd build`.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The key directory; by default `keys.directory` of the configuration.
    #[arg(long, value_name = "DIR")]
    pub key_dir: Option<PathBuf>,
    /// Output directory, replaced as a whole: `advanced/` and
    /// `direct/<domain>/` below it are the document roots to serve.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// Runs a `wkd` subcommand.
pub fn run(config: &Path, cmd: &WkdCommand) -> ExitCode {
    let WkdCommand::Build(args) = cmd;
    let loaded = match Config::load(config, FileRequirement::for_path(config)) {
        Ok(l) => l,
        Err(e) => return super::fail(1, e),
    };
    let Some(key_dir) = args
        .key_dir
        .clone()
        .or_else(|| loaded.config.keys.directory.clone())
    else {
        return super::fail(1, "no key directory: give --key-dir or set keys.directory");
    };
    if loaded.config.local_domains.is_empty() {
        return super::fail(1, "local_domains is empty: no address is ours to publish");
    }
    match build(&loaded.config, &key_dir, &args.out) {
        Ok(published) => {
            for line in published {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => super::fail(1, e),
    }
}

/// One published file: every usable key of the addresses that share its
/// name (local parts that differ only in ASCII case hash alike).
#[derive(Default)]
struct Entry {
    addresses: Vec<String>,
    keys: Vec<u8>,
}

/// Builds the tree in a sibling of `out`, then puts it in `out`'s place.
/// Returns one line per published file, and one per key left out.
fn build(config: &Config, key_dir: &Path, out: &Path) -> Result<Vec<String>, String> {
    if out.exists() && !out.is_dir() {
        return Err(format!(
            "--out {}: exists and is not a directory",
            out.display()
        ));
    }
    let now = SystemTime::now();
    let mut report = Vec::new();
    let mut entries: BTreeMap<(String, String), Entry> = BTreeMap::new();
    let dir = std::fs::read_dir(key_dir)
        .map_err(|e| format!("reading the key directory {}: {e}", key_dir.display()))?;
    let mut files: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.sort();
    for path in files {
        let Some((stem, ext)) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.rsplit_once('.'))
        else {
            continue;
        };
        if !DirectorySource::extensions(Method::OpenPgp).contains(&ext) {
            continue;
        }
        // A signing key directory's `<address>.sec.asc`: its public half
        // is published (wkd_key serializes no secret key material).
        let stem = if ext == "asc" {
            stem.strip_suffix(".sec").unwrap_or(stem)
        } else {
            stem
        };
        let Ok(addr) = Address::parse(stem) else {
            report.push(format!("skipped {}: not an address", path.display()));
            continue;
        };
        if !addr.has_dns_domain() || !config.is_local_domain(addr.domain()) {
            report.push(format!(
                "skipped {}: {} is not a local domain",
                path.display(),
                addr.domain()
            ));
            continue;
        }
        let data = std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        match wkd_key(&data, &addr, now) {
            Ok(key) => {
                let entry = entries
                    .entry((addr.domain().to_owned(), local_part_hash(&addr)))
                    .or_default();
                entry.keys.extend_from_slice(&key);
                entry.addresses.push(addr.to_string());
            }
            Err(why) => report.push(format!("skipped {}: {why}", path.display())),
        }
    }

    let tmp = sibling(out, "tmp")?;
    let _ = std::fs::remove_dir_all(&tmp);
    let write = |rel: &str, data: &[u8]| -> Result<(), String> {
        let path = tmp.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        std::fs::write(&path, data).map_err(|e| format!("writing {}: {e}", path.display()))
    };
    // A policy file for every local domain: it says the domain has a WKD
    // (a client then reads a missing key as "no key", not as "no WKD").
    for domain in &config.local_domains {
        write(
            &format!("advanced/.well-known/openpgpkey/{domain}/policy"),
            b"",
        )?;
        write(
            &format!("direct/{domain}/.well-known/openpgpkey/policy"),
            b"",
        )?;
    }
    for ((domain, _), entry) in &entries {
        // Any of the addresses names the file: they hash alike.
        let Some(first) = entry.addresses.first() else {
            continue;
        };
        let addr = Address::parse(first).map_err(|e| e.to_string())?;
        let advanced = format!("advanced/{}", advanced_path(&addr));
        let direct = format!("direct/{domain}/{}", direct_path(&addr));
        write(&advanced, &entry.keys)?;
        write(&direct, &entry.keys)?;
        report.push(format!(
            "published {}: {advanced}, {direct}",
            entry.addresses.join(", ")
        ));
    }
    replace(&tmp, out).map_err(|e| format!("replacing {}: {e}", out.display()))?;
    Ok(report)
}

/// `out` with `.<what>-<pid>` appended, in the same directory (so the
/// final rename does not cross file systems).
fn sibling(out: &Path, what: &str) -> Result<PathBuf, String> {
    let name = out
        .file_name()
        .ok_or_else(|| format!("--out {}: needs a directory name", out.display()))?;
    let mut name = name.to_os_string();
    name.push(format!(".{what}-{}", std::process::id()));
    Ok(out.with_file_name(name))
}

/// Puts the directory `new` in place of `out` (which may not exist).
fn replace(new: &Path, out: &Path) -> io::Result<()> {
    if out.exists() {
        let old = sibling(out, "old").map_err(io::Error::other)?;
        let _ = std::fs::remove_dir_all(&old);
        std::fs::rename(out, &old)?;
        std::fs::rename(new, out)?;
        std::fs::remove_dir_all(&old)
    } else {
        std::fs::rename(new, out)
    }
}
