//! Unit tests of the DNS source without a network: cached answers,
//! failures, the trust store built once, provenance of cached keys.

use super::*;

#[test]
fn resolv_conf_parsing() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("resolv.conf");
    std::fs::write(&p, "# x\nsearch example.org\nnameserver 127.0.0.53\nnameserver ::1\nnameserver fe80::1%eth0\noptions edns0\n").unwrap();
    let s = resolv_conf_servers(&p);
    assert_eq!(s.len(), 3);
    assert_eq!(s[0], "127.0.0.53:53".parse().unwrap());
    assert!(resolv_conf_servers(&d.path().join("missing")).is_empty());
}

/// A self-signed certificate (DER) for `email`: never PKIX-trusted.
fn self_signed(email: &str) -> Vec<u8> {
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::x509::{X509Builder, X509NameBuilder};
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", email).unwrap();
    let name = name.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    let serial = BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap();
    b.set_serial_number(&serial).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    b.build().to_der().unwrap()
}

/// A source whose resolver is never asked: every answer a test gives it
/// comes from its cache.
fn offline_source() -> DnsSource {
    DnsSource::new(DnsSettings {
        mode: DnsMode::TrustAd,
        resolvers: vec!["127.0.0.1:9".parse().unwrap()],
        trust_anchor: None,
        timeout: Duration::from_secs(1),
        allow_insecure: false,
        lowercase_fallback: true,
    })
    .unwrap()
}

/// Caches, as arrived at `fetched`, a DNSSEC-secure SMIMEA record with
/// `usage` and a full self-signed certificate for `addr`.
fn cache_smimea(source: &DnsSource, addr: &Address, usage: u8, fetched: SystemTime) {
    use hickory_resolver::proto::rr::RData;
    use hickory_resolver::proto::rr::rdata::SMIMEA;
    use hickory_resolver::proto::rr::rdata::tlsa::{CertUsage, Matching, Selector};

    let name = owner_name(addr, Method::Smime).unwrap();
    let rdata = RData::SMIMEA(SMIMEA::new(
        CertUsage::from(usage),
        Selector::from(0),
        Matching::from(0),
        self_signed(&addr.to_string()),
    ));
    source.cache.insert(
        name.clone(),
        RecordType::SMIMEA,
        Answer::Records {
            records: vec![Record::from_rdata(name, 300, rdata)],
            validation: Validation::Secure,
        },
        Duration::from_secs(300),
        fetched,
    );
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A key from a cached answer carries when the answer arrived, not
/// when the cache was read, and the lookup counts as a cache hit.
#[test]
fn cached_keys_keep_their_fetch_time() {
    use crate::keys::{Security, SourceKind};

    let source = offline_source();
    let addr = Address::parse("dane@example.test").unwrap();
    let arrived = SystemTime::now() - Duration::from_secs(600);
    cache_smimea(&source, &addr, 3, arrived);
    let traced = current_thread().block_on(source.lookup_traced(&addr, Method::Smime, true));
    assert!(traced.cached);
    assert_eq!(traced.asked.len(), 1);
    assert!(
        traced.asked[0].ends_with("1 record(s), DNSSEC secure"),
        "{:?}",
        traced.asked
    );
    let Lookup::Found { keys, .. } = traced.lookup else {
        panic!("{:?}", traced.lookup);
    };
    assert_eq!(keys.len(), 1);
    let p = keys[0].provenance;
    assert_eq!(
        (p.source, p.security, p.fetched),
        (SourceKind::Dane, Security::Secure, arrived)
    );
    assert_eq!(source.queries_sent(), 0);
}

/// The system trust store is loaded when the source is built, once;
/// lookups that check SMIMEA usage-1 records (here from the cache,
/// so no network is needed) load none.
#[test]
fn the_pkix_trust_store_is_built_once_per_source() {
    use crate::backend::pkix::built;
    use crate::material::RejectReason;

    let before = built::stores();
    let source = offline_source();
    assert_eq!(built::stores(), before + 1, "built with the source");

    let addr = Address::parse("pkix@example.test").unwrap();
    cache_smimea(&source, &addr, 1, SystemTime::now());
    // Current-thread runtime: the lookups run on this thread, whose
    // store count is the one read.
    let rt = current_thread();
    for _ in 0..3 {
        let d = rt.block_on(source.lookup_detailed(&addr, Method::Smime));
        assert!(d.asked.len() == 1 && d.asked[0].cached, "{:?}", d.asked);
        match d.lookup {
            Lookup::Found { keys, unusable, .. } => {
                assert!(keys.is_empty(), "self-signed usage 1 is not trusted");
                assert_eq!(unusable.len(), 1);
                assert!(
                    matches!(unusable[0].reason, RejectReason::Untrusted(_)),
                    "{:?}",
                    unusable[0]
                );
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(built::stores(), before + 1, "no store per lookup");
    assert_eq!(source.queries_sent(), 0);
}
