//! Inbound signature verification (issue 15): a raw message through
//! `signatures::signed_form`, `verify` (without keys, and with one fixed
//! key per method, which the signed seeds in
//! `fuzz/corpus/signature_verify/` are signed with) and `results::ours`,
//! and the field written for the verdict read back by the harvest parser.

use std::sync::OnceLock;
use std::time::SystemTime;

use crate::address::Address;
use crate::backend::{KeyMaterial, Method, Recipient, Registry};
use crate::harvest::auth_results::parse;
use crate::harvest::from::author;
use crate::material::{Provenance, Security, SourceKind};
use crate::message::{HeaderField, Message};
use crate::signatures::results::{Reported, field_value, method_name, ours};
use crate::signatures::{Verdict, signed_form, verify};

/// The address the fixed keys are for.
const FROM: &str = "alice@example.org";
/// Our authserv-id in the target.
const AUTHSERV_ID: &str = "mx.example.org";

/// The fixed S/MIME key: a self-signed P-256 certificate for [`FROM`]
/// (valid until 2126). Its private key signed the S/MIME seeds and was
/// thrown away.
const SMIME_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBwjCCAWmgAwIBAgIUeWHB/MKmpkWMmaBJYzOTxwk4c/EwCgYIKoZIzj0EAwIw
FTETMBEGA1UEAwwKRnV6eiBBbGljZTAgFw0yNjEyMDIxNDA0MjNaGA8yMTI2MTEw
ODE0MDQyM1owFTETMBEGA1UEAwwKRnV6eiBBbGljZTBZMBMGByqGSM49AgEGCCqG
SM49AwEHA0IABKORd2FJFsrtUhesthEUZDev8sgLvceUcjvdSKcVR6eDmcGZWGSj
qIF/JtvR6viYju+t8HxEanz3iKbfieQHh/+jgZQwgZEwHQYDVR0OBBYEFN7Nkb2N
aK0zq28h9G14tA9pLgxBMB8GA1UdIwQYMBaAFN7Nkb2NaK0zq28h9G14tA9pLgxB
MA8GA1UdEwEB/wQFMAMBAf8wHAYDVR0RBBUwE4ERYWxpY2VAZXhhbXBsZS5vcmcw
CwYDVR0PBAQDAgOIMBMGA1UdJQQMMAoGCCsGAQUFBwMEMAoGCCqGSM49BAMCA0cA
MEQCIG1keJbodBXFrGrcvAN1sDGyRrAnPOPz8wRbczvatV4KAiADMsILb/iNzKON
/fVlvC672YO0i8mOdTpIN0REpCftCg==
-----END CERTIFICATE-----
";

/// The fixed OpenPGP key for [`FROM`] (Ed25519 signing, Cv25519
/// encryption, no expiry), made by gpg; it signed the PGP/MIME seeds.
const PGP_CERT: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----

mDMEaxAlZxYJKwYBBAHaRw8BAQdAl0QxVVvxwMq7MUrWzlOBR1aKWCHP1Woz2sPD
fzqKxVe0HkZ1enogQWxpY2UgPGFsaWNlQGV4YW1wbGUub3JnPoiQBBMWCAA4FiEE
AZvQmDASfk/VdC07Pe09j1Em42YFAmsQJWcCGwMFCwkIBwIGFQoJCAsCBBYCAwEC
HgECF4AACgkQPe09j1Em42Yn0gD/dG00h/yrVXEkRnSm14wBintTK25P16ACxtdr
0hr5TYYBAONPeUlx522wLSOwsGe3/SWZaeet0QMT2c0MrhX/JGYAuDgEaxAlZxIK
KwYBBAGXVQEFAQEHQNG1HQWsmG6ckIvpDS3ENCXgfRq8FY1Z7SlwfB69D400AwEI
B4h4BBgWCAAgFiEEAZvQmDASfk/VdC07Pe09j1Em42YFAmsQJWcCGwwACgkQPe09
j1Em42Y7tAD/S6ZkLBX3QeAFUmK+CPfiLj7vaaK8gFypLRdwjhgjOVQA/RIPoFtZ
wgPyMu2ENiY9Sd1zqpIaoZ7JmUPUQOo5qYsF
=WhdL
-----END PGP PUBLIC KEY BLOCK-----
";

fn from() -> Address {
    Address::parse(FROM).unwrap_or_else(|e| panic!("{e}"))
}

/// The fixed key of `method`, validated once as the key service would.
fn fixed_key(method: Method) -> &'static Recipient {
    static KEYS: OnceLock<(Recipient, Recipient)> = OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        let validate = |method, data: &str| {
            let material = KeyMaterial {
                method,
                data: data.as_bytes().to_vec(),
                origin: "fuzz".into(),
                provenance: Provenance::now(SourceKind::Test, Security::Local),
                bound_addresses: Vec::new(),
            };
            Registry::new()
                .get(method)
                .validate(&material, &from(), SystemTime::now())
                .unwrap_or_else(|e| panic!("the fixed {method} key: {e}"))
        };
        (
            validate(Method::Smime, SMIME_CERT),
            validate(Method::OpenPgp, PGP_CERT),
        )
    });
    match method {
        Method::Smime => &keys.0,
        Method::OpenPgp => &keys.1,
    }
}

/// The field written for `reported` reads back as one result of our
/// method under our id, and is ours to remove the next time.
fn check_field(method: Method, reported: &Reported, result: &str, addr: &Address, note: &str) {
    let value = field_value(AUTHSERV_ID, method, reported, addr, Some(note));
    assert!(!value.contains(['\r', '\n']), "{value:?}");
    let ar = parse(value.as_bytes()).unwrap_or_else(|e| panic!("{value:?}: {e}"));
    assert_eq!(ar.authserv_id, AUTHSERV_ID);
    assert_eq!(ar.results.len(), 1, "{value:?}");
    assert_eq!(ar.results[0].method, method_name(method));
    assert_eq!(ar.results[0].result, result);
    let field = [HeaderField::new(
        "Authentication-Results",
        format!(" {value}"),
    )];
    assert_eq!(ours(&field, AUTHSERV_ID), vec![1], "{value:?}");
}

/// A raw message (header section, empty line, body): never a panic; a
/// pass only by a key given; the field for each verdict well formed;
/// the forged fields named by position, in order, in range.
pub fn signature_verify(data: &[u8]) {
    let msg = Message::parse(data);
    let body = data.get(msg.body_offset..).unwrap_or_default();

    let fields = msg
        .headers
        .iter()
        .filter(|h| h.is("Authentication-Results"))
        .count();
    let forged = ours(&msg.headers, AUTHSERV_ID);
    assert!(forged.windows(2).all(|w| w[0] < w[1]), "{forged:?}");
    assert!(
        forged.iter().all(|&i| (1..=fields).contains(&i)),
        "{forged:?}"
    );

    // The note and the address come from the input: hostile both.
    let note = String::from_utf8_lossy(body.get(..body.len().min(300)).unwrap_or_default());
    let addr = author(&msg.headers).unwrap_or_else(|_| from());
    check_field(
        Method::Smime,
        &Reported::TempError(&note),
        "temperror",
        &addr,
        &note,
    );

    let Some(form) = signed_form(&msg.headers) else {
        return;
    };
    let method = form.method();
    for keys in [&[][..], std::slice::from_ref(fixed_key(method))] {
        let v = verify(&msg.headers, body, form, keys);
        if let Verdict::Pass { fingerprint } = &v {
            assert!(
                keys.iter().any(|k| &k.fingerprint == fingerprint),
                "a pass by {fingerprint}, not a key given"
            );
        }
        check_field(method, &Reported::Verdict(&v), v.as_str(), &addr, &note);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signed seeds pass with the fixed key: the fuzzer starts from
    /// inputs that reach every stage of verification.
    #[test]
    fn the_signed_seeds_pass_with_the_fixed_key() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/signature_verify");
        for (name, method) in [
            ("smime-detached", Method::Smime),
            ("smime-opaque", Method::Smime),
            ("smime-nocerts", Method::Smime),
            ("pgp-mime", Method::OpenPgp),
        ] {
            let raw = std::fs::read(format!("{dir}/{name}")).unwrap_or_else(|e| panic!("{e}"));
            let msg = Message::parse(&raw);
            let form = signed_form(&msg.headers).unwrap_or_else(|| panic!("{name}"));
            let key = fixed_key(method);
            let v = verify(
                &msg.headers,
                &raw[msg.body_offset..],
                form,
                std::slice::from_ref(key),
            );
            assert_eq!(
                v,
                Verdict::Pass {
                    fingerprint: key.fingerprint.clone()
                },
                "{name}"
            );
            assert_eq!(ours(&msg.headers, AUTHSERV_ID), vec![2, 3], "{name}");
            signature_verify(&raw);
        }
    }
}
