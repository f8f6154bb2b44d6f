//! SMIMEA / OPENPGPKEY answers: a resolver response as wire bytes through
//! the path every `trust-ad` answer takes (hickory's message and rdata
//! parsers, the reading of the answer, the key's record checks), then the
//! backend's key validation (certificate and OpenPGP parsers).

use std::time::{Duration, SystemTime};

use crate::address::Address;
use crate::backend::{Method, Registry};
use crate::keys::dns::lookup_from_response;
use crate::keys::owner::owner_name;
use crate::keys::{Lookup, Security};

/// First byte: bit 0 method (0 S/MIME, 1 OpenPGP), bit 1
/// `allow_insecure`, bit 2 the AD bit, bit 3 "the rest is a whole DNS
/// message" (else the rest is the rdata of one answer record).
pub fn rdata(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let method = if sel & 1 == 0 {
        Method::Smime
    } else {
        Method::OpenPgp
    };
    let allow_insecure = sel & 2 != 0;
    let Ok(addr) = Address::parse("alice@example.test") else {
        return;
    };
    let Ok(name) = owner_name(&addr, method) else {
        return;
    };
    let wire = if sel & 8 != 0 {
        rest.to_vec()
    } else {
        response(&name, method, sel & 4 != 0, rest)
    };
    // The AD bit of whatever message the bytes are.
    let authentic = wire.get(3).is_some_and(|b| b & 0x20 != 0);
    let Some(lookup) = lookup_from_response(&wire, &name, method, allow_insecure) else {
        return;
    };
    match &lookup {
        Lookup::Found { keys, security, .. } => {
            match security {
                Security::Secure => assert!(authentic, "secure without AD"),
                Security::Insecure => assert!(allow_insecure && !authentic),
                Security::Local => panic!("DNS answer counted as local"),
                Security::WebPki => panic!("DNS answer counted as web PKI"),
                Security::Directory => panic!("DNS answer counted as LDAP"),
                Security::Learned => panic!("DNS answer counted as learned"),
            }
            let backend = Registry::new();
            let backend = backend.get(method);
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
            for k in keys {
                assert_eq!(k.method, method);
                if let Ok(r) = backend.validate(k, &addr, now) {
                    assert_eq!(r.address, addr);
                    assert_eq!(r.method(), method);
                }
            }
        }
        Lookup::Insecure => assert!(!authentic, "AD answer counted as insecure"),
        Lookup::NotFound | Lookup::Bogus(_) | Lookup::Failed(_) => {}
    }
}

/// A NOERROR response to `name`'s query with one answer whose rdata is
/// `rdata` (cut to what a record can hold).
fn response(
    name: &hickory_resolver::proto::rr::Name,
    method: Method,
    ad: bool,
    rdata: &[u8],
) -> Vec<u8> {
    let rtype: u16 = match method {
        Method::Smime => 53,
        Method::OpenPgp => 61,
    };
    let rdata = &rdata[..rdata.len().min(usize::from(u16::MAX) - 512)];
    let mut w = Vec::with_capacity(rdata.len() + 128);
    // id 0; QR RD; RA and maybe AD; one question, one answer.
    w.extend_from_slice(&[
        0,
        0,
        0x81,
        if ad { 0xA0 } else { 0x80 },
        0,
        1,
        0,
        1,
        0,
        0,
        0,
        0,
    ]);
    for label in name.iter() {
        w.push(u8::try_from(label.len()).unwrap_or(63));
        w.extend_from_slice(label);
    }
    w.push(0);
    w.extend_from_slice(&rtype.to_be_bytes());
    w.extend_from_slice(&[0, 1]);
    // Answer: the question's name by pointer, IN, TTL 300.
    w.extend_from_slice(&[0xC0, 0x0C]);
    w.extend_from_slice(&rtype.to_be_bytes());
    w.extend_from_slice(&[0, 1, 0, 0, 1, 0x2C]);
    w.extend_from_slice(&u16::try_from(rdata.len()).unwrap_or(0).to_be_bytes());
    w.extend_from_slice(rdata);
    w
}
