//! Key material the benchmarks generate for themselves.

use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::x509::extension::{ExtendedKeyUsage, KeyUsage, SubjectAlternativeName};
use openssl::x509::{X509, X509Builder, X509NameBuilder};
use sequoia_openpgp::Cert;
use sequoia_openpgp::cert::CertBuilder;

/// A self-signed RSA 2048 S/MIME certificate for `addr`, valid 30 days.
pub fn smime_cert(addr: &str) -> X509 {
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    smime_cert_for_key(&key, addr)
}

/// [`smime_cert`] for a given key.
#[allow(dead_code, reason = "the signing bench alone brings its own key")]
pub fn smime_cert_for_key(key: &PKey<openssl::pkey::Private>, addr: &str) -> X509 {
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "bench").unwrap();
    let name = name.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    let san = SubjectAlternativeName::new()
        .email(addr)
        .build(&b.x509v3_context(None, None))
        .unwrap();
    b.append_extension(san).unwrap();
    b.append_extension(KeyUsage::new().key_encipherment().build().unwrap())
        .unwrap();
    b.append_extension(ExtendedKeyUsage::new().email_protection().build().unwrap())
        .unwrap();
    b.sign(key, MessageDigest::sha256()).unwrap();
    b.build()
}

/// A general-purpose (cv25519) OpenPGP certificate for `addr`.
pub fn openpgp_cert(addr: &str) -> Cert {
    let (cert, _) = CertBuilder::general_purpose(Some(format!("Bench <{addr}>")))
        .generate()
        .unwrap();
    cert
}

/// `data` validated as `addr`'s key for `method`, as if it came from the
/// key directory. Not every bench validates keys in-process.
#[allow(
    dead_code,
    reason = "milter_load, which shares this module, hands keys to the binary instead"
)]
pub fn recipient(
    registry: &autoencrypt_milter::Registry,
    method: autoencrypt_milter::Method,
    data: Vec<u8>,
    addr: &str,
) -> autoencrypt_milter::backend::Recipient {
    use autoencrypt_milter::keys::{Provenance, Security, SourceKind};
    let key = autoencrypt_milter::backend::KeyMaterial {
        bound_addresses: Vec::new(),
        method,
        data,
        origin: "bench".into(),
        provenance: Provenance::now(SourceKind::Directory, Security::Local),
    };
    registry
        .get(method)
        .validate(
            &key,
            &autoencrypt_milter::Address::parse(addr).unwrap(),
            std::time::SystemTime::now(),
        )
        .unwrap()
}
