//! Helpers for `signing_formats`: the external tools, a small test PKI,
//! OpenPGP homes for gpg and rnp, and a reading of `multipart/signed`
//! that shares no code with the library.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
};
use openssl::x509::{X509, X509NameBuilder};

/// Runs `tool` with `args` (stdin from `input`), panicking with the
/// tool's name when it cannot be started: a missing verifier must fail
/// the test, never skip it.
pub fn run(tool: &str, args: &[&str], env: &[(&str, &Path)], input: &[u8]) -> Output {
    let mut cmd = Command::new(tool);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("`{tool}` is required and cannot be started: {e}"));
    // A tool may exit without reading its input.
    let _ = child.stdin.take().expect("stdin").write_all(input);
    child.wait_with_output().expect("waiting for the tool")
}

/// [`run`], and the run must succeed.
pub fn run_ok(tool: &str, args: &[&str], env: &[(&str, &Path)]) -> Output {
    let out = run(tool, args, env, b"");
    assert!(
        out.status.success(),
        "{tool} {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Path as a `&str` argument.
pub fn arg(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temporary path")
}

/// A certificate with its key and PEM file.
pub struct Id {
    pub cert: X509,
    pub key: PKey<Private>,
    pub pem: PathBuf,
}

/// RSA 2048 or EC P-256.
#[derive(Clone, Copy, Debug)]
pub enum Alg {
    Rsa,
    Ec,
}

fn key(alg: Alg) -> PKey<Private> {
    match alg {
        Alg::Rsa => PKey::from_rsa(Rsa::generate(2048).expect("RSA")),
        Alg::Ec => {
            let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("P-256");
            PKey::from_ec_key(EcKey::generate(&group).expect("EC"))
        }
    }
    .expect("key")
}

/// A CA certificate (`issuer` `None`) or an S/MIME signing certificate
/// for `email` issued by `issuer`.
pub fn certificate(dir: &Path, cn: &str, alg: Alg, issuer: Option<&Id>, email: &str) -> Id {
    let key = key(alg);
    let mut name = X509NameBuilder::new().expect("name");
    name.append_entry_by_nid(Nid::COMMONNAME, cn).expect("CN");
    let name = name.build();
    let mut b = X509::builder().expect("builder");
    b.set_version(2).expect("v3");
    let mut serial = BigNum::new().expect("bn");
    serial.rand(64, MsbOption::MAYBE_ZERO, false).expect("rand");
    b.set_serial_number(&Asn1Integer::from_bn(&serial).expect("serial"))
        .expect("serial");
    b.set_subject_name(&name).expect("subject");
    b.set_issuer_name(issuer.map_or(&*name, |i| i.cert.subject_name()))
        .expect("issuer");
    b.set_pubkey(&key).expect("pubkey");
    b.set_not_before(&Asn1Time::days_from_now(0).expect("time"))
        .expect("notBefore");
    b.set_not_after(&Asn1Time::days_from_now(30).expect("time"))
        .expect("notAfter");
    let mut ku = KeyUsage::new();
    ku.critical();
    if issuer.is_none() {
        b.append_extension(BasicConstraints::new().critical().ca().build().expect("bc"))
            .expect("bc");
        ku.key_cert_sign().crl_sign();
    } else {
        b.append_extension(BasicConstraints::new().critical().build().expect("bc"))
            .expect("bc");
        ku.digital_signature().non_repudiation();
        let eku = ExtendedKeyUsage::new()
            .email_protection()
            .build()
            .expect("eku");
        b.append_extension(eku).expect("eku");
        let ctx = b.x509v3_context(issuer.map(|i| &*i.cert), None);
        let san = SubjectAlternativeName::new()
            .email(email)
            .build(&ctx)
            .expect("san");
        b.append_extension(san).expect("san");
    }
    b.append_extension(ku.build().expect("ku")).expect("ku");
    b.sign(issuer.map_or(&key, |i| &i.key), MessageDigest::sha256())
        .expect("sign");
    let cert = b.build();
    let pem = dir.join(format!("{cn}.pem").replace(' ', "-"));
    std::fs::write(&pem, cert.to_pem().expect("PEM")).expect("write PEM");
    Id { cert, key, pem }
}

/// An NSS database in `dir` trusting `ca` for e-mail.
pub fn nss_db(dir: &Path, ca: &Id) -> String {
    std::fs::create_dir_all(dir).expect("mkdir nss");
    let db = format!("sql:{}", arg(dir));
    run_ok("certutil", &["-N", "-d", &db, "--empty-password"], &[]);
    run_ok(
        "certutil",
        &[
            "-A",
            "-d",
            &db,
            "-n",
            "testca",
            "-t",
            "C,C,C",
            "-i",
            arg(&ca.pem),
        ],
        &[],
    );
    db
}

/// The two parts of a `multipart/signed` message: the signed entity and
/// the signature part's body, and the part header of the signature.
pub struct SignedParts {
    pub content_type: String,
    pub signed: Vec<u8>,
    pub signature_header: String,
    pub signature_body: Vec<u8>,
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// Reads `message` (header, empty line, multipart/signed body) by plain
/// string search: the first `--B CRLF` line, the signed part up to
/// `CRLF --B CRLF`, the signature part up to `CRLF --B-- CRLF`.
pub fn signed_parts(message: &[u8]) -> SignedParts {
    let text = String::from_utf8_lossy(message);
    let header_end = find(message, b"\r\n\r\n", 0).expect("header end") + 4;
    let header = &text[..header_end];
    let unfolded = header.replace("\r\n ", " ");
    let content_type = unfolded
        .lines()
        .find_map(|l| l.strip_prefix("Content-Type: "))
        .expect("Content-Type")
        .to_owned();
    let boundary = content_type
        .split("boundary=\"")
        .nth(1)
        .and_then(|b| b.split('"').next())
        .expect("quoted boundary");
    let open = format!("\r\n--{boundary}\r\n");
    let close = format!("\r\n--{boundary}--\r\n");
    let first = find(message, &open.as_bytes()[2..], header_end).expect("first delimiter");
    let start = first + open.len() - 2;
    let second = find(message, open.as_bytes(), start).expect("second delimiter");
    let sig_start = second + open.len();
    let end = find(message, close.as_bytes(), sig_start).expect("close delimiter");
    assert_eq!(end + close.len(), message.len(), "nothing after the close");
    let sig = &message[sig_start..end];
    let sig_header_end = find(sig, b"\r\n\r\n", 0).expect("signature header") + 4;
    SignedParts {
        content_type,
        signed: message[start..second].to_vec(),
        signature_header: String::from_utf8_lossy(&sig[..sig_header_end]).into_owned(),
        signature_body: sig[sig_header_end..].to_vec(),
    }
}

/// Python's email package on `entity`: every part that is neither
/// multipart nor message/rfc822, its content decoded from its transfer
/// encoding.
pub fn python_leaves(entity: &[u8]) -> Vec<Vec<u8>> {
    let script = "import email,sys\n\
        m=email.message_from_bytes(sys.stdin.buffer.read())\n\
        for p in m.walk():\n\
        \x20 if not p.is_multipart() and p.get_content_type()!='message/rfc822':\n\
        \x20   print((p.get_payload(decode=True) or b'').hex())\n";
    let out = run("python3", &["-c", script], &[], entity);
    assert!(
        out.status.success(),
        "python3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("hex")
        .lines()
        .map(|l| {
            (0..l.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&l[i..i + 2], 16).expect("hex"))
                .collect()
        })
        .collect()
}
