//! `dns.mode = "validate"`: hickory-resolver validates DNSSEC in-process
//! from a trust anchor (the built-in root, or the DNSKEYs of
//! `dns.trust_anchor`), through whatever recursive resolvers are
//! configured. The proof hickory puts on each record (or on the denial)
//! says how far an answer is vouched for.

use std::net::SocketAddr;
use std::sync::Arc;

use hickory_resolver::Resolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as HickoryDnsError, NetError};
use hickory_resolver::proto::dnssec::{Proof, TrustAnchors};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, Record, RecordType};

use super::records::soa_negative_ttl;
use super::{Answer, DnsSettings, DnsSetupError, Validation};
use crate::keys::FailReason;

/// The validating resolver for `settings`, asking `resolvers`.
pub(super) fn validating_resolver(
    settings: &DnsSettings,
    resolvers: &[SocketAddr],
) -> Result<Resolver<TokioRuntimeProvider>, DnsSetupError> {
    let name_servers = resolvers
        .iter()
        .map(|addr| {
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
        })
        .collect();
    let mut opts = ResolverOpts::default();
    opts.timeout = settings.timeout;
    opts.attempts = 2;
    opts.validate = true;
    // Our own cache keeps the outcomes; hickory's keeps DNSKEY/DS chains.
    opts.cache_size = 1024;
    opts.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
    let anchors = match &settings.trust_anchor {
        Some(path) => {
            let bad = |reason: String| DnsSetupError::TrustAnchor {
                path: path.clone(),
                reason,
            };
            let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
            // hickory reads DNSKEY records only (no DS), and an anchor file
            // without any would silently validate nothing.
            if !text.lines().any(|l| {
                !l.trim_start().starts_with(';') && l.to_ascii_uppercase().contains("DNSKEY")
            }) {
                return Err(bad(
                    "no DNSKEY records in it (DS records are not supported here)".into(),
                ));
            }
            text.parse::<TrustAnchors>()
                .map_err(|e| bad(e.to_string()))?
        }
        None => TrustAnchors::default(),
    };
    Resolver::builder_with_config(
        ResolverConfig::from_name_servers(name_servers),
        TokioRuntimeProvider::default(),
    )
    .with_options(opts)
    .with_trust_anchor(Arc::new(anchors))
    .build()
    .map_err(|e| DnsSetupError::Resolver(e.to_string()))
}

/// `validate` mode: hickory validates; the proof on each record (or on
/// the denial) says how far.
pub(super) async fn query(
    resolver: &Resolver<TokioRuntimeProvider>,
    name: &Name,
    rtype: RecordType,
) -> Answer {
    match resolver.lookup(name.clone(), rtype).await {
        Ok(lookup) => {
            let records: Vec<Record> = lookup
                .answers()
                .iter()
                .filter(|r| r.record_type() == rtype)
                .cloned()
                .collect();
            if records.is_empty() {
                return Answer::Empty {
                    validation: Validation::Insecure,
                    negative_ttl: None,
                };
            }
            let weakest = records
                .iter()
                .map(|r| r.proof)
                .min_by_key(|p| proof_rank(*p));
            match weakest {
                Some(Proof::Secure) => Answer::Records {
                    records,
                    validation: Validation::Secure,
                },
                Some(Proof::Insecure) => Answer::Records {
                    records,
                    validation: Validation::Insecure,
                },
                Some(p) => Answer::Bogus(format!("records at {name} are {p}")),
                None => Answer::Empty {
                    validation: Validation::Insecure,
                    negative_ttl: None,
                },
            }
        }
        Err(e) => {
            tracing::debug!("{name} {rtype}: {e:?}");
            net_error_answer(&e, name)
        }
    }
}

fn proof_rank(p: Proof) -> u8 {
    match p {
        Proof::Secure => 3,
        Proof::Insecure => 2,
        Proof::Bogus => 1,
        _ => 0,
    }
}

fn net_error_answer(e: &NetError, name: &Name) -> Answer {
    match e {
        NetError::Dns(HickoryDnsError::Nsec {
            proof, response, ..
        }) => {
            let negative_ttl = soa_negative_ttl(&response.authorities);
            match proof {
                Proof::Secure => Answer::Empty {
                    validation: Validation::Secure,
                    negative_ttl,
                },
                Proof::Insecure => Answer::Empty {
                    validation: Validation::Insecure,
                    negative_ttl,
                },
                other => Answer::Bogus(format!("denial of {name} is {other}")),
            }
        }
        // hickory validates the denial's SOA and NSEC/NSEC3 records and
        // marks each with its proof: the weakest one decides.
        NetError::Dns(HickoryDnsError::NoRecordsFound(nr)) => {
            let weakest = nr
                .authorities
                .iter()
                .flat_map(|a| a.iter())
                .map(|r| r.proof)
                .min_by_key(|p| proof_rank(*p));
            match weakest {
                Some(Proof::Secure) => Answer::Empty {
                    validation: Validation::Secure,
                    negative_ttl: nr.negative_ttl,
                },
                Some(Proof::Insecure) => Answer::Empty {
                    validation: Validation::Insecure,
                    negative_ttl: nr.negative_ttl,
                },
                // Bogus, indeterminate, or no records at all to prove the
                // denial: not a provable "no key".
                _ => Answer::Bogus(format!("denial of {name} cannot be validated")),
            }
        }
        NetError::Dns(HickoryDnsError::DnssecBogus) => {
            Answer::Bogus(format!("validation of {name} failed"))
        }
        NetError::Dns(HickoryDnsError::ResponseCode(ResponseCode::ServFail)) => {
            Answer::Failed(FailReason::ServFail)
        }
        NetError::Dns(HickoryDnsError::ResponseCode(code)) => {
            Answer::Failed(FailReason::Network(format!("resolver answered {code}")))
        }
        NetError::Timeout => Answer::Failed(FailReason::Timeout),
        other => {
            let text = other.to_string();
            // hickory reports validation failures in several shapes.
            if text.contains("DNSSEC") || text.contains("bogus") || text.contains("RRSIG") {
                Answer::Bogus(text)
            } else {
                Answer::Failed(FailReason::Network(text))
            }
        }
    }
}
