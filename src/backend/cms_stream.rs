//! Streaming CMS encryption: OpenSSL reads the content from a Rust
//! [`Read`] and writes the BER-encoded ContentInfo to a Rust [`Write`],
//! so neither the plaintext nor the ciphertext has to be held in memory.
//!
//! The `openssl` crate only offers `CMS_encrypt` over an in-memory slice
//! with an in-memory result (three copies of a large message at once), so
//! this module calls `CMS_encrypt(..., CMS_STREAM)` and
//! `i2d_CMS_bio_stream` directly, exactly as `openssl cms -encrypt
//! -stream` does, with a BIO that bridges to Rust I/O.
#![allow(
    unsafe_code,
    reason = "FFI to OpenSSL's streaming CMS API, which the openssl crate does not wrap"
)]

use std::ffi::{c_char, c_int, c_long, c_void};
use std::io::{self, Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;

use foreign_types::ForeignTypeRef;
use openssl::error::ErrorStack;
use openssl::stack::StackRef;
use openssl::symm::Cipher;
use openssl::x509::X509;
use openssl_sys as ffi;

unsafe extern "C" {
    // In libcrypto since 1.0.0; openssl-sys does not declare it.
    fn i2d_CMS_bio_stream(
        out: *mut ffi::BIO,
        cms: *mut ffi::CMS_ContentInfo,
        input: *mut ffi::BIO,
        flags: c_int,
    ) -> c_int;
}

/// Why streaming encryption failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// OpenSSL reported an error.
    #[error("{0}")]
    OpenSsl(#[from] ErrorStack),
    /// Reading the content or writing the result failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// A reader or writer panicked inside an OpenSSL callback.
    #[error("panic in I/O callback")]
    Panic,
}

/// What a bridge BIO's data pointer points at.
struct Bridge<'a> {
    reader: Option<&'a mut dyn Read>,
    writer: Option<&'a mut dyn Write>,
    error: Option<io::Error>,
    panicked: bool,
}

impl Bridge<'_> {
    fn check(&mut self) -> Result<(), StreamError> {
        if self.panicked {
            return Err(StreamError::Panic);
        }
        match self.error.take() {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

/// Encrypts everything `input` yields to `certs` with `cipher` (an AEAD
/// cipher gives AuthEnvelopedData) and writes the BER ContentInfo to
/// `output`. The content is taken as binary: no line-ending changes.
pub fn encrypt(
    certs: &StackRef<X509>,
    cipher: Cipher,
    input: &mut dyn Read,
    output: &mut dyn Write,
) -> Result<(), StreamError> {
    let mut source = Bridge {
        reader: Some(input),
        writer: None,
        error: None,
        panicked: false,
    };
    let mut sink = Bridge {
        reader: None,
        writer: Some(output),
        error: None,
        panicked: false,
    };
    let flags = ffi::CMS_BINARY | ffi::CMS_STREAM;
    // SAFETY: every pointer created here is checked for NULL and freed
    // before returning; the bridges outlive the BIOs that point at them;
    // the callbacks only touch the bridge through the BIO's data pointer.
    let ok = unsafe {
        let method = new_method()?;
        let result = (|| {
            let cms = ffi::CMS_encrypt(certs.as_ptr(), ptr::null_mut(), cipher.as_ptr(), flags);
            if cms.is_null() {
                return Err(StreamError::OpenSsl(ErrorStack::get()));
            }
            let in_bio = new_bio(method, &mut source);
            let out_bio = new_bio(method, &mut sink);
            let rc = if in_bio.is_null() || out_bio.is_null() {
                0
            } else {
                #[allow(clippy::cast_possible_wrap, reason = "CMS flag bits fit in c_int")]
                i2d_CMS_bio_stream(out_bio, cms, in_bio, flags as c_int)
            };
            let err = (rc != 1).then(ErrorStack::get);
            if !in_bio.is_null() {
                ffi::BIO_free_all(in_bio);
            }
            if !out_bio.is_null() {
                ffi::BIO_free_all(out_bio);
            }
            ffi::CMS_ContentInfo_free(cms);
            match err {
                Some(e) => Err(StreamError::OpenSsl(e)),
                None => Ok(()),
            }
        })();
        ffi::BIO_meth_free(method);
        result
    };
    // OpenSSL's copy loop treats a read error as end of input and ignores
    // write errors, so the bridges' own records decide: a truncated
    // message must never pass as encrypted.
    source.check()?;
    sink.check()?;
    ok?;
    output_flush(&mut sink)
}

fn output_flush(sink: &mut Bridge<'_>) -> Result<(), StreamError> {
    match sink.writer.as_mut() {
        Some(w) => w.flush().map_err(StreamError::Io),
        None => Ok(()),
    }
}

unsafe fn new_method() -> Result<*mut ffi::BIO_METHOD, ErrorStack> {
    // SAFETY: plain constructor calls; the result is checked.
    unsafe {
        let m = ffi::BIO_meth_new(ffi::BIO_TYPE_NONE, c"autoencrypt-bridge".as_ptr());
        if m.is_null() {
            return Err(ErrorStack::get());
        }
        let ok = ffi::BIO_meth_set_write__fixed_rust(m, Some(bridge_write)) == 1
            && ffi::BIO_meth_set_read__fixed_rust(m, Some(bridge_read)) == 1
            && ffi::BIO_meth_set_ctrl__fixed_rust(m, Some(bridge_ctrl)) == 1
            && ffi::BIO_meth_set_create__fixed_rust(m, Some(bridge_create)) == 1
            && ffi::BIO_meth_set_destroy__fixed_rust(m, Some(bridge_destroy)) == 1;
        if !ok {
            ffi::BIO_meth_free(m);
            return Err(ErrorStack::get());
        }
        Ok(m)
    }
}

unsafe fn new_bio(method: *mut ffi::BIO_METHOD, bridge: &mut Bridge<'_>) -> *mut ffi::BIO {
    // SAFETY: `method` is valid; the bridge outlives the BIO (freed in
    // `encrypt` before the bridge goes out of scope).
    unsafe {
        let bio = ffi::BIO_new(method);
        if !bio.is_null() {
            ffi::BIO_set_data(bio, ptr::from_mut(bridge).cast::<c_void>());
            ffi::BIO_set_init(bio, 1);
        }
        bio
    }
}

/// The bridge behind a BIO, if any.
unsafe fn bridge<'a>(bio: *mut ffi::BIO) -> Option<&'a mut Bridge<'a>> {
    // SAFETY: the data pointer is either NULL or a live `Bridge` set by `new_bio`.
    unsafe { ffi::BIO_get_data(bio).cast::<Bridge<'a>>().as_mut() }
}

unsafe extern "C" fn bridge_write(bio: *mut ffi::BIO, buf: *const c_char, len: c_int) -> c_int {
    // SAFETY: OpenSSL passes a valid buffer of `len` bytes.
    let Some(b) = (unsafe { bridge(bio) }) else {
        return -1;
    };
    let Ok(n) = usize::try_from(len) else {
        return -1;
    };
    let data = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), n) };
    let Some(w) = b.writer.as_mut() else {
        return -1;
    };
    match catch_unwind(AssertUnwindSafe(|| w.write_all(data))) {
        Ok(Ok(())) => len,
        Ok(Err(e)) => {
            b.error = Some(e);
            -1
        }
        Err(_) => {
            b.panicked = true;
            -1
        }
    }
}

unsafe extern "C" fn bridge_read(bio: *mut ffi::BIO, buf: *mut c_char, len: c_int) -> c_int {
    // SAFETY: OpenSSL passes a writable buffer of `len` bytes.
    let Some(b) = (unsafe { bridge(bio) }) else {
        return -1;
    };
    let Ok(n) = usize::try_from(len) else {
        return -1;
    };
    let data = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), n) };
    let Some(r) = b.reader.as_mut() else {
        return -1;
    };
    loop {
        match catch_unwind(AssertUnwindSafe(|| r.read(data))) {
            Ok(Ok(got)) => return c_int::try_from(got).unwrap_or(-1),
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
            Ok(Err(e)) => {
                b.error = Some(e);
                return -1;
            }
            Err(_) => {
                b.panicked = true;
                return -1;
            }
        }
    }
}

unsafe extern "C" fn bridge_ctrl(
    bio: *mut ffi::BIO,
    cmd: c_int,
    _num: c_long,
    _ptr: *mut c_void,
) -> c_long {
    if cmd != ffi::BIO_CTRL_FLUSH {
        return 0;
    }
    // SAFETY: see `bridge`.
    let Some(b) = (unsafe { bridge(bio) }) else {
        return 0;
    };
    let Some(w) = b.writer.as_mut() else { return 1 };
    match catch_unwind(AssertUnwindSafe(|| w.flush())) {
        Ok(Ok(())) => 1,
        Ok(Err(e)) => {
            b.error = Some(e);
            0
        }
        Err(_) => {
            b.panicked = true;
            0
        }
    }
}

unsafe extern "C" fn bridge_create(bio: *mut ffi::BIO) -> c_int {
    // SAFETY: OpenSSL passes the BIO being created.
    unsafe {
        ffi::BIO_set_init(bio, 0);
        ffi::BIO_set_data(bio, ptr::null_mut());
    }
    1
}

unsafe extern "C" fn bridge_destroy(bio: *mut ffi::BIO) -> c_int {
    if bio.is_null() {
        return 0;
    }
    // The bridge is owned by `encrypt`'s stack frame: only forget it.
    // SAFETY: OpenSSL passes the BIO being freed.
    unsafe {
        ffi::BIO_set_data(bio, ptr::null_mut());
        ffi::BIO_set_init(bio, 0);
    }
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that fails half-way.
    struct Failing(usize);
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::other("disk on fire"));
            }
            let n = buf.len().min(self.0);
            buf[..n].fill(b'x');
            self.0 -= n;
            Ok(n)
        }
    }

    fn no_certs() -> openssl::stack::Stack<X509> {
        openssl::stack::Stack::new().unwrap()
    }

    #[test]
    fn read_error_is_an_error_not_a_short_message() {
        // With no recipients OpenSSL still streams; the read error must win.
        let mut out = Vec::new();
        let r = encrypt(
            &no_certs(),
            Cipher::aes_256_cbc(),
            &mut Failing(100_000),
            &mut out,
        );
        assert!(r.is_err(), "a failing reader must fail the encryption");
    }
}
