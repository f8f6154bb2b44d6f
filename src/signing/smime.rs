//! S/MIME `multipart/signed` (RFC 8551 §3.5.3): a detached CMS SignedData
//! (RFC 5652 §5) over exactly the octets of the transport-safe entity.
//!
//! The digest is SHA-256 whatever the key: OpenSSL's `CMS_sign` would
//! pick the key's default digest, so the signer is added with
//! `CMS_add1_signer(…, EVP_sha256())` to a partial SignedData and the
//! structure finished with `CMS_final`, which is what `openssl cms -sign
//! -md sha256` does; `micalg=sha-256` is then true. The content is taken
//! as binary (no text translation: it is canonical CRLF already). The
//! signed attributes are OpenSSL's usual ones: contentType,
//! messageDigest, signingTime, smimeCapabilities. The signer's
//! certificate and the chain travel in the SignedData.

use std::ffi::{c_int, c_uint, c_void};

use foreign_types::ForeignTypeRef;
use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::pkey::Private;
use openssl::stack::Stack;
use openssl::x509::X509;
use openssl_sys as ffi;

use super::frame::{Format, signed};
use super::{SignError, SignedEntity, SmimeSigner};
use crate::backend::encoding::write_base64_lines;
use crate::material::Method;
use crate::message::Eol;

#[allow(unsafe_code, reason = "declarations of libcrypto CMS functions")]
unsafe extern "C" {
    // In libcrypto since 1.0.0; openssl-sys does not declare them.
    fn CMS_add1_signer(
        cms: *mut ffi::CMS_ContentInfo,
        signer: *mut ffi::X509,
        pk: *mut ffi::EVP_PKEY,
        md: *const ffi::EVP_MD,
        flags: c_uint,
    ) -> *mut c_void;
    fn CMS_final(
        cms: *mut ffi::CMS_ContentInfo,
        data: *mut ffi::BIO,
        dcont: *mut ffi::BIO,
        flags: c_uint,
    ) -> c_int;
}

const FORMAT: Format<'static> = Format {
    method: Method::Smime,
    params: &["protocol=\"application/pkcs7-signature\"", "micalg=sha-256"],
    preamble: "This is an S/MIME signed message",
    signature_fields: "Content-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\n\
        Content-Transfer-Encoding: base64\r\n\
        Content-Disposition: attachment; filename=\"smime.p7s\"\r\n",
};

fn crypto(what: &str, e: &ErrorStack) -> SignError {
    SignError::Crypto {
        method: Method::Smime,
        detail: format!("{what}: {e}"),
    }
}

/// Signs the transport-safe `entity`.
pub(crate) fn sign(entity: &[u8], key: &SmimeSigner) -> Result<SignedEntity, SignError> {
    let der = signature(entity, key)?;
    let mut text = Vec::with_capacity(der.len() / 3 * 4 + der.len() / 38 + 8);
    write_base64_lines(&der, 76, Eol::Crlf, &mut text).map_err(|e| SignError::Crypto {
        method: Method::Smime,
        detail: format!("base64: {e}"),
    })?;
    signed(entity, &FORMAT, &text)
}

/// The DER ContentInfo of a detached SHA-256 SignedData over `entity`.
pub(crate) fn signature(entity: &[u8], key: &SmimeSigner) -> Result<Vec<u8>, SignError> {
    let mut certs = Stack::<X509>::new().map_err(|e| crypto("certificate stack", &e))?;
    let signer_der = key.cert.to_der().map_err(|e| crypto("certificate", &e))?;
    let mut seen = vec![signer_der];
    for c in &key.chain {
        // OpenSSL refuses a certificate twice; the signer's own is added
        // with the signer.
        let der = c.to_der().map_err(|e| crypto("chain certificate", &e))?;
        if !seen.contains(&der) {
            seen.push(der);
            certs
                .push(c.clone())
                .map_err(|e| crypto("certificate stack", &e))?;
        }
    }
    let flags = CMSOptions::DETACHED | CMSOptions::BINARY;
    let cms = CmsContentInfo::sign::<Private>(
        None,
        None,
        Some(&certs),
        None,
        flags | CMSOptions::PARTIAL,
    )
    .map_err(|e| crypto("SignedData", &e))?;
    finish(&cms, key, entity, flags.bits())?;
    cms.to_der().map_err(|e| crypto("DER", &e))
}

/// Adds the SHA-256 signer to the partial `cms` and signs `entity`.
#[allow(
    unsafe_code,
    reason = "FFI to CMS functions the openssl crate does not wrap"
)]
fn finish(
    cms: &CmsContentInfo,
    key: &SmimeSigner,
    entity: &[u8],
    flags: c_uint,
) -> Result<(), SignError> {
    let len = c_int::try_from(entity.len()).map_err(|_| SignError::Crypto {
        method: Method::Smime,
        detail: "an entity over 2 GiB".into(),
    })?;
    let failed = |what: &str| crypto(what, &ErrorStack::get());
    // SAFETY: all pointers come from live owned values borrowed for the
    // whole call (`cms`, the certificate, the key, the digest, `entity`);
    // CMS_add1_signer takes its own references to certificate and key
    // (the returned SignerInfo belongs to `cms`); the memory BIO only
    // reads `entity` and is freed before returning.
    unsafe {
        let si = CMS_add1_signer(
            cms.as_ptr(),
            key.cert.as_ptr(),
            key.key.as_ptr(),
            MessageDigest::sha256().as_ptr(),
            0,
        );
        if si.is_null() {
            return Err(failed("adding the signer"));
        }
        let data = ffi::BIO_new_mem_buf(entity.as_ptr().cast::<c_void>(), len);
        if data.is_null() {
            return Err(failed("memory BIO"));
        }
        let ok = CMS_final(cms.as_ptr(), data, std::ptr::null_mut(), flags);
        ffi::BIO_free_all(data);
        if ok != 1 {
            return Err(failed("signing"));
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "smime_tests.rs"]
mod tests;
