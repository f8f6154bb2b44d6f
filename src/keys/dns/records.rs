//! Reading DNS answers as keys: SMIMEA (RFC 8162) and OPENPGPKEY
//! (RFC 7929) rdata become [`KeyMaterial`], or the reason a record holds
//! none; an [`Answer`] becomes the source's [`Lookup`]. Also the one
//! entry from wire bytes to a `Lookup` that fuzzing and tests drive,
//! [`lookup_from_response`].

use hickory_resolver::proto::op::Message;
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

use std::sync::OnceLock;
use std::time::SystemTime;

use super::trust_ad::read_ad_response;
use super::{Answer, Validation};
use crate::backend::pkix::PkixTrust;
use crate::keys::{Lookup, Provenance, Security, SourceKind};
use crate::material::{KeyMaterial, KeyRejected, Method, RejectReason};

/// The record type holding `method`'s keys.
pub fn record_type(method: Method) -> RecordType {
    match method {
        Method::Smime => RecordType::SMIMEA,
        Method::OpenPgp => RecordType::OPENPGPKEY,
    }
}

/// What one `trust-ad` resolver response (its wire bytes) yields for
/// `name`'s `method` record: the path every answer from the network takes
/// after the transport. `None` when the bytes are no DNS message (the
/// transport drops those). For fuzzing and tests.
#[doc(hidden)]
pub fn lookup_from_response(
    wire: &[u8],
    name: &Name,
    method: Method,
    allow_insecure: bool,
) -> Option<Lookup> {
    // One store for all calls, as a DnsSource holds one: a fuzzer calls
    // this many thousand times.
    static PKIX: OnceLock<PkixTrust> = OnceLock::new();
    let pkix = PKIX.get_or_init(PkixTrust::system);
    let m = Message::from_vec(wire).ok()?;
    let answer = read_ad_response(&m, name, record_type(method));
    Some(to_lookup(
        &answer,
        method,
        allow_insecure,
        Some(name),
        pkix,
        SystemTime::now(),
    ))
}

/// Reads an answer as keys for `method`; SMIMEA usage-1 certificates are
/// checked against `pkix`. `fetched` is when the answer arrived (each
/// key's provenance).
pub(super) fn to_lookup(
    answer: &Answer,
    method: Method,
    allow_insecure: bool,
    name: Option<&Name>,
    pkix: &PkixTrust,
    fetched: SystemTime,
) -> Lookup {
    let origin_name = name.map(Name::to_ascii).unwrap_or_default();
    match answer {
        Answer::Records {
            records,
            validation,
        } => {
            let security = match validation {
                Validation::Secure => Security::Secure,
                Validation::Insecure if allow_insecure => Security::Insecure,
                Validation::Insecure => return Lookup::Insecure,
            };
            let provenance = Provenance {
                source: SourceKind::Dane,
                security,
                trust: SourceKind::Dane.trust(),
                fetched,
            };
            let mut keys = Vec::new();
            let mut unusable = Vec::new();
            for r in records {
                match record_key(&r.data, method, &origin_name, pkix, provenance) {
                    Some(Ok(k)) => keys.push(k),
                    Some(Err(e)) => unusable.push(e),
                    None => {}
                }
            }
            if keys.is_empty() && unusable.is_empty() {
                return Lookup::NotFound;
            }
            Lookup::Found {
                keys,
                unusable,
                security,
            }
        }
        Answer::Empty {
            validation: Validation::Secure,
            ..
        } => Lookup::NotFound,
        Answer::Empty {
            validation: Validation::Insecure,
            ..
        } => Lookup::Insecure,
        Answer::Bogus(why) => Lookup::Bogus(why.clone()),
        Answer::Failed(why) => Lookup::Failed(why.clone()),
    }
}

/// The key material of one record, or why it has none. `None` for a
/// record of another type (a CNAME on the way).
fn record_key(
    data: &RData,
    method: Method,
    name: &str,
    pkix: &PkixTrust,
    provenance: Provenance,
) -> Option<Result<KeyMaterial, KeyRejected>> {
    match (data, method) {
        (RData::SMIMEA(s), Method::Smime) => {
            let t = &s.0;
            let (usage, selector, matching) = (
                u8::from(t.cert_usage),
                u8::from(t.selector),
                u8::from(t.matching),
            );
            let origin = format!("SMIMEA {usage} {selector} {matching} at {name}");
            let reject = |reason| {
                Some(Err(KeyRejected {
                    origin: origin.clone(),
                    reason,
                }))
            };
            if selector != 0 || matching != 0 {
                return reject(RejectReason::UnusableRecord(format!(
                    "selector {selector} matching {matching} carries no full certificate"
                )));
            }
            match usage {
                3 => {}
                // PKIX-EE: the certificate must verify against the system
                // trust store as well.
                1 => {
                    if let Err(why) = pkix.verify(&t.cert_data) {
                        return reject(RejectReason::Untrusted(why));
                    }
                }
                other => {
                    return reject(RejectReason::UnusableRecord(format!(
                        "usage {other} names a CA, not the recipient's certificate"
                    )));
                }
            }
            Some(Ok(KeyMaterial {
                bound_addresses: Vec::new(),
                method,
                data: t.cert_data.clone(),
                origin,
                provenance,
            }))
        }
        (RData::OPENPGPKEY(k), Method::OpenPgp) => Some(Ok(KeyMaterial {
            bound_addresses: Vec::new(),
            method,
            data: k.public_key.clone(),
            origin: format!("OPENPGPKEY at {name}"),
            provenance,
        })),
        _ => None,
    }
}

/// RFC 2308 §5: a denial may be cached for the lesser of the SOA's TTL
/// and its minimum field.
pub(super) fn soa_negative_ttl(authorities: &[Record]) -> Option<u32> {
    authorities.iter().find_map(|r| match &r.data {
        RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::FailReason;

    #[test]
    fn failures_and_bogus_are_never_no_key() {
        let pkix = PkixTrust::system();
        for a in [
            Answer::Bogus("x".into()),
            Answer::Failed(FailReason::Timeout),
            Answer::Failed(FailReason::ServFail),
        ] {
            let l = to_lookup(&a, Method::Smime, true, None, &pkix, SystemTime::now());
            assert!(matches!(l, Lookup::Bogus(_) | Lookup::Failed(_)), "{l:?}");
        }
        let insecure_denial = Answer::Empty {
            validation: Validation::Insecure,
            negative_ttl: Some(60),
        };
        assert!(matches!(
            to_lookup(
                &insecure_denial,
                Method::Smime,
                false,
                None,
                &pkix,
                SystemTime::now()
            ),
            Lookup::Insecure
        ));
        let secure_denial = Answer::Empty {
            validation: Validation::Secure,
            negative_ttl: Some(60),
        };
        assert!(matches!(
            to_lookup(
                &secure_denial,
                Method::Smime,
                false,
                None,
                &pkix,
                SystemTime::now()
            ),
            Lookup::NotFound
        ));
    }
}
