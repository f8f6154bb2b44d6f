//! `lookup` (what the address's domain publishes: DNS records, its Web
//! Key Directory, and what the configured keyservers and LDAP directories
//! hold) and `record`
//! (the zone-file line an operator publishes).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use base64::Engine as _;

use crate::address::Address;
use crate::backend::{KeyMaterial, Method, Registry, openpgp, smime};
use crate::config::{Config, FileRequirement};
use crate::keys::owner::owner_name;
use crate::keys::{KeyChoice, KeyService, SourceKind};
use crate::policy::KeyOutcome;

/// Arguments of `lookup`.
#[derive(Debug, clap::Args)]
pub struct LookupArgs {
    /// Addresses to look up.
    #[arg(value_name = "ADDRESS", required = true)]
    pub addresses: Vec<String>,
}

/// Arguments of `record`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("key").required(true).args(["smimea", "openpgpkey"])))]
pub struct RecordArgs {
    /// An S/MIME certificate (PEM or DER): print an SMIMEA record.
    #[arg(long, value_name = "CERT")]
    pub smimea: Option<PathBuf>,
    /// An OpenPGP public key (armored or binary): print an OPENPGPKEY record.
    #[arg(long, value_name = "KEY")]
    pub openpgpkey: Option<PathBuf>,
    /// The address the record is for.
    #[arg(value_name = "ADDRESS")]
    pub address: String,
}

/// `record`: the zone-file line, in the record type's own syntax and in
/// the generic RFC 3597 form for servers that do not know the type.
pub fn record(args: &RecordArgs) -> ExitCode {
    match record_lines(args) {
        Ok(lines) => {
            for l in lines {
                println!("{l}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => super::fail(1, e),
    }
}

fn record_lines(args: &RecordArgs) -> Result<Vec<String>, String> {
    let addr = Address::parse(&args.address).map_err(|e| e.to_string())?;
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let (method, rdata, presentation) = match (&args.smimea, &args.openpgpkey) {
        (Some(path), _) => {
            let cert = smime::parse_certificate(&read(path)?)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let der = cert.to_der().map_err(|e| e.to_string())?;
            // Usage 3 (DANE-EE), selector 0 (full certificate), matching 0
            // (the certificate itself): what a sender can encrypt to.
            let mut rdata = vec![3u8, 0, 0];
            rdata.extend_from_slice(&der);
            let text = format!("SMIMEA 3 0 0 {}", hex(&der));
            (Method::Smime, rdata, text)
        }
        (None, Some(path)) => {
            let binary = openpgp::binary_public_key(&read(path)?)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let text = format!(
                "OPENPGPKEY {}",
                base64::engine::general_purpose::STANDARD.encode(&binary)
            );
            (Method::OpenPgp, binary, text)
        }
        (None, None) => return Err("give --smimea CERT or --openpgpkey KEY".into()),
    };
    let owner = owner_name(&addr, method)
        .map_err(|e| e.to_string())?
        .to_ascii();
    let type_number = match method {
        Method::Smime => 53,
        Method::OpenPgp => 61,
    };
    Ok(vec![
        format!("; {addr} ({method})"),
        format!("{owner} IN {presentation}"),
        format!("; the same in RFC 3597 generic syntax, for servers that do not know the type:"),
        format!(
            "{owner} IN TYPE{type_number} \\# {} {}",
            rdata.len(),
            hex(&rdata)
        ),
    ])
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

/// `lookup`: for each address and each published source (DNS, WKD,
/// keyservers — not the operator's own directory), what was asked, the
/// answer, and every key with its facts. Each source is asked on its own,
/// whatever the others say. Exit 0 when every address has a usable key
/// somewhere, 1 when one has none, 2 when one has none and a lookup could
/// not be completed.
pub fn lookup(config: &Path, args: &LookupArgs) -> ExitCode {
    let loaded = match Config::load(config, FileRequirement::for_path(config)) {
        Ok(l) => l,
        Err(e) => return super::fail(1, e),
    };
    let addrs = match args
        .addresses
        .iter()
        .map(|a| Address::parse(a))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(a) => a,
        Err(e) => return super::fail(1, e),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return super::fail(1, format!("starting the runtime: {e}")),
    };
    // What the address's domain publishes (and keyservers and LDAP
    // directories hold); the operator's key directory is theirs to list.
    let published = [
        SourceKind::Ldap,
        SourceKind::Dane,
        SourceKind::Wkd,
        SourceKind::Keyserver,
    ];
    let keys = match KeyService::from_config_only(
        &loaded.config,
        &published,
        Arc::new(Registry::new()),
        None,
    ) {
        Ok(k) => k,
        Err(e) => return super::fail(1, e),
    };
    let mut worst = 0u8;
    for addr in &addrs {
        let status = runtime.block_on(report(&keys, &loaded.config, addr));
        worst = worst.max(status);
    }
    ExitCode::from(worst)
}

/// Prints one address's report; returns its exit status.
async fn report(keys: &KeyService, config: &Config, addr: &Address) -> u8 {
    println!("{addr}");
    let mut usable_any = false;
    let mut incomplete = false;
    // Several `[[ldap]]` directories are one kind, asked in one chain (as
    // the milter asks them: a later one only when the earlier had
    // nothing), whatever their trust.
    let kinds = SourceKind::distinct(keys.plan(&KeyChoice::any()).iter().map(|s| s.kind()));
    for kind in kinds {
        let only = KeyChoice {
            sources: Some(vec![kind]),
            ..KeyChoice::any()
        };
        let (smime, openpgp) = tokio::join!(
            keys.explain(addr, Method::Smime, &only),
            keys.explain(addr, Method::OpenPgp, &only)
        );
        for (method, explained) in [(Method::Smime, smime), (Method::OpenPgp, openpgp)] {
            // A source without keys of this kind (WKD: no S/MIME), or one
            // that does not answer for the domain, is not asked.
            if explained.steps.is_empty() {
                continue;
            }
            for step in &explained.steps {
                println!(
                    "  {:<8} {}: {}",
                    method.as_str(),
                    step.source,
                    step.answer.replace('_', " ")
                );
                for line in &step.asked {
                    println!("  {:<8}   {line}", method.as_str());
                }
            }
            match explained.outcome.outcome {
                KeyOutcome::Found {
                    usable, rejected, ..
                } => {
                    usable_any |= !usable.is_empty();
                    for r in &usable {
                        println!(
                            "           usable: {} {}",
                            r.origin,
                            facts(method, &explained.found, &r.fingerprint)
                        );
                    }
                    for r in &rejected {
                        println!("           not usable: {r}");
                    }
                }
                KeyOutcome::Insecure if !config.dns.allow_insecure => {
                    println!(
                        "           unsigned zone: keys are not used (dns.allow_insecure is off)"
                    );
                }
                KeyOutcome::Bogus(why) => {
                    println!("           bogus: {why}");
                    incomplete = true;
                }
                KeyOutcome::Failed(why) => {
                    println!("           failed: {why}");
                    incomplete = true;
                }
                _ => {}
            }
        }
    }
    if usable_any {
        0
    } else if incomplete {
        2
    } else {
        1
    }
}

/// Algorithm and expiry of the key with `fingerprint`.
fn facts(method: Method, keys: &[KeyMaterial], fingerprint: &str) -> String {
    keys.iter()
        .find_map(|k| match method {
            Method::Smime => smime::describe(&k.data).filter(|d| d.fingerprint == fingerprint),
            Method::OpenPgp => openpgp::describe(&k.data).filter(|d| d.fingerprint == fingerprint),
        })
        .map(|d| format!("[{}] {}, expires {}", d.fingerprint, d.algorithm, d.expires))
        .unwrap_or_else(|| format!("[{fingerprint}]"))
}
