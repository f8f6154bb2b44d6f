//! Shared helpers for the integration tests: tool checks, running the
//! binary, S/MIME certificates (openssl crate) and OpenPGP keys (gpg),
//! decryption with the reference tools, and an independent model of the
//! message format (expected inner entity, outer header rules).
//!
//! Nothing here calls the library under test: every expectation is computed
//! by this module on its own.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::Once;
use std::time::{SystemTime, UNIX_EPOCH};

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
};
use openssl::x509::{X509, X509NameBuilder};
use tempfile::TempDir;

// ---------------------------------------------------------------------------
// Tools and scratch space
// ---------------------------------------------------------------------------

/// Panics (never skips) when `openssl`, `gpg` or `gpgconf` is not runnable.
pub fn require_tools() {
    static CHECKED: Once = Once::new();
    CHECKED.call_once(|| {
        for (tool, arg, package) in [
            ("openssl", "version", "openssl"),
            ("gpg", "--version", "gnupg"),
            ("gpgconf", "--version", "gnupg"),
        ] {
            match Command::new(tool).arg(arg).output() {
                Ok(o) if o.status.success() => {}
                Ok(o) => panic!(
                    "required tool `{tool}` is present but `{tool} {arg}` failed ({}): {}; \
                     these tests must not be skipped",
                    o.status,
                    String::from_utf8_lossy(&o.stderr)
                ),
                Err(e) => panic!(
                    "required tool `{tool}` is missing ({e}): install the `{package}` \
                     package; these tests must not be skipped"
                ),
            }
        }
    });
}

/// A fresh directory under /tmp (short paths: gpg-agent socket limits).
pub fn tempdir(prefix: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .expect("creating a temporary directory under /tmp")
}

/// Per-test scratch space: `keys/` is given to the binary as `--key-dir`,
/// `work/` holds private keys and intermediate files.
pub struct Scratch {
    _root: TempDir,
    /// The key directory handed to `--key-dir`.
    pub keys: PathBuf,
    /// Private material and temporary files.
    pub work: PathBuf,
}

impl Scratch {
    /// Checks the tools and creates the directories.
    pub fn new() -> Self {
        require_tools();
        let root = tempdir("aem");
        let keys = root.path().join("keys");
        let work = root.path().join("work");
        std::fs::create_dir(&keys).expect("mkdir keys");
        std::fs::create_dir(&work).expect("mkdir work");
        Scratch {
            _root: root,
            keys,
            work,
        }
    }

    /// A path in `work/`.
    pub fn file(&self, name: &str) -> PathBuf {
        self.work.join(name)
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// Runs `cmd`, panicking with its stderr when it cannot start or fails.
fn run_ok(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {cmd:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Deterministic pseudo-random bytes (xorshift64*): large, incompressible
/// and reproducible test payloads.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Base64 in lines of 76 characters, each ended by `eol`.
pub fn base64_lines(data: &[u8], eol: &str) -> Vec<u8> {
    let encoded = openssl::base64::encode_block(data);
    let mut out = Vec::with_capacity(encoded.len() + encoded.len() / 76 * 2 + 2);
    for chunk in encoded.as_bytes().chunks(76) {
        out.extend_from_slice(chunk);
        out.extend_from_slice(eol.as_bytes());
    }
    out
}

// ---------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------

/// The result of one `autoencrypt-milter encrypt` run.
pub struct EncryptRun {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output, raw.
    pub stdout: Vec<u8>,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl EncryptRun {
    /// Panics unless the run exited 0.
    pub fn assert_success(&self, context: &str) {
        assert!(
            self.status.code() == Some(0),
            "{context}: encrypt exited {} (expected 0); stderr:\n{}",
            self.status,
            self.stderr
        );
    }

    /// Panics unless the run exited 1 with a single-line reason that names
    /// `addr` and contains `phrase` (case-insensitive), and wrote nothing to
    /// standard output.
    pub fn assert_refused(&self, addr: &str, phrase: &str) {
        assert!(
            self.status.code() == Some(1),
            "expected exit 1 refusing {addr} ({phrase:?}), got {}; stderr:\n{}\nstdout: {} bytes",
            self.status,
            self.stderr,
            self.stdout.len()
        );
        let reason = self.stderr.trim_end();
        assert!(
            !reason.is_empty() && !reason.contains('\n'),
            "expected a one-line reason on stderr, got:\n{reason}"
        );
        assert!(
            reason.contains(addr),
            "reason does not name the address {addr}: {reason}"
        );
        assert!(
            reason.to_lowercase().contains(&phrase.to_lowercase()),
            "reason does not contain {phrase:?}: {reason}"
        );
        assert!(
            self.stdout.is_empty(),
            "a refused message must not be written to stdout ({} bytes written)",
            self.stdout.len()
        );
    }
}

/// Runs `autoencrypt-milter encrypt --to A [--to B] --key-dir DIR EXTRA...`
/// with `input` on stdin.
pub fn run_encrypt(input: &[u8], to: &[&str], key_dir: &Path, extra: &[&str]) -> EncryptRun {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_autoencrypt-milter"));
    cmd.arg("encrypt");
    for addr in to {
        cmd.arg("--to").arg(addr);
    }
    cmd.arg("--key-dir").arg(key_dir).args(extra);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Keep log noise out of stderr unless the caller's env asks for it.
        .env_remove("RUST_LOG");
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin piped");
    std::thread::scope(|s| {
        // Feed stdin from another thread: large messages would otherwise
        // deadlock against a full stdout pipe.
        s.spawn(move || {
            // The binary may exit early (refusal) and close stdin.
            let _ = stdin.write_all(input);
        });
        let out = child.wait_with_output().expect("waiting for encrypt");
        EncryptRun {
            status: out.status,
            stdout: out.stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
}

// ---------------------------------------------------------------------------
// Independent model of the message format
// ---------------------------------------------------------------------------

/// Line ending style.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eol {
    /// `\n`
    Lf,
    /// `\r\n`
    Crlf,
}

impl Eol {
    /// The terminator bytes.
    pub fn as_str(self) -> &'static str {
        match self {
            Eol::Lf => "\n",
            Eol::Crlf => "\r\n",
        }
    }

    /// The style of the first line of `msg` (the header section).
    pub fn of_header(msg: &[u8]) -> Eol {
        match msg.iter().position(|&b| b == b'\n') {
            Some(i) if i > 0 && msg[i - 1] == b'\r' => Eol::Crlf,
            _ => Eol::Lf,
        }
    }
}

/// One header field with its raw bytes (name, colon, value, continuation
/// lines and every line terminator).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    /// The field name, lower-cased.
    pub name: String,
    /// The raw bytes.
    pub raw: Vec<u8>,
}

impl Field {
    /// The unfolded value (after the colon), trimmed, lossily decoded.
    pub fn value(&self) -> String {
        let colon = self.raw.iter().position(|&b| b == b':').unwrap_or(0);
        let text = String::from_utf8_lossy(&self.raw[colon + 1..]);
        text.replace("\r\n", "\n")
            .split('\n')
            .collect::<Vec<_>>()
            .join("")
            .trim()
            .to_owned()
    }

    /// A short printable form for failure messages.
    pub fn show(&self) -> String {
        escape(&self.raw, 200)
    }
}

/// Splits a message into its header fields and its body. The header
/// section ends at the first empty line (`\n` or `\r\n`), which belongs to
/// neither part; with no empty line, everything is header.
pub fn split_message(msg: &[u8]) -> (Vec<Field>, &[u8]) {
    let mut fields: Vec<Field> = Vec::new();
    let mut pos = 0;
    while pos < msg.len() {
        let end = msg[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(msg.len(), |i| pos + i + 1);
        let line = &msg[pos..end];
        if line == b"\n" || line == b"\r\n" {
            return (fields, &msg[end..]);
        }
        match (line[0], fields.last_mut()) {
            (b' ' | b'\t', Some(last)) => last.raw.extend_from_slice(line),
            _ => {
                let name_end = line.iter().position(|&b| b == b':').unwrap_or(line.len());
                let name = String::from_utf8_lossy(&line[..name_end])
                    .trim_end()
                    .to_ascii_lowercase();
                fields.push(Field {
                    name,
                    raw: line.to_vec(),
                });
            }
        }
        pos = end;
    }
    (fields, &msg[msg.len()..])
}

/// Bare LF → CRLF; existing CRLF kept.
pub fn to_crlf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 40 + 2);
    let mut prev = 0u8;
    for &b in data {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

/// CRLF → LF (to turn tool output into the LF form a Unix MTA stores).
pub fn to_lf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    for (i, &b) in data.iter().enumerate() {
        if b == b'\r' && data.get(i + 1) == Some(&b'\n') {
            continue;
        }
        out.push(b);
    }
    out
}

/// The entity that decryption must give back: every `Content-*` field in
/// input order with its original bytes (CRLF line endings), an empty line,
/// and the body with bare LF turned into CRLF.
pub fn expected_inner_entity(input: &[u8]) -> Vec<u8> {
    let (fields, body) = split_message(input);
    let mut out = Vec::new();
    for f in fields.iter().filter(|f| f.name.starts_with("content-")) {
        out.extend_from_slice(&to_crlf(&f.raw));
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&to_crlf(body));
    out
}

/// The entity decryption must give back when the header is protected
/// (RFC 9788, `protect_headers`), written from the contract and not from
/// the milter's code: every field of the input in order with its original
/// bytes (CRLF), except `Bcc`, `HP-Outer` and the fields added in transit;
/// the `Content-Type` (trailing white space and `;` cut) followed by
/// `;CRLF hp="cipher";CRLF protected-headers="v1"` — or, without one, the
/// MIME default with those parameters; then one `HP-Outer: Name: value`
/// per copied field that is not `Content-*`, `MIME-Version`, `Comments`
/// or `Keywords`, the Subject as `[...]`; an empty line; the body (CRLF).
pub fn expected_protected_entity(input: &[u8]) -> Vec<u8> {
    const NOT_COPIED: [&str; 13] = [
        "bcc",
        "hp-outer",
        "received",
        "return-path",
        "delivered-to",
        "x-original-to",
        "received-spf",
        "authentication-results",
        "dkim-signature",
        "arc-seal",
        "arc-message-signature",
        "arc-authentication-results",
        "x-original-recipient",
    ];
    let (fields, body) = split_message(input);
    let mut out = Vec::new();
    let mut records = Vec::new();
    let mut typed = false;
    for f in fields
        .iter()
        .filter(|f| !NOT_COPIED.contains(&f.name.as_str()))
    {
        let raw = to_crlf(&f.raw);
        if f.name == "content-type" {
            typed = true;
            let mut v = raw[..raw.len() - 2].to_vec();
            while matches!(v.last(), Some(b' ' | b'\t' | b'\r' | b'\n' | b';')) {
                v.pop();
            }
            out.extend_from_slice(&v);
            out.extend_from_slice(b";\r\n hp=\"cipher\";\r\n protected-headers=\"v1\"\r\n");
            continue;
        }
        out.extend_from_slice(&raw);
        if f.name.starts_with("content-")
            || ["mime-version", "comments", "keywords"].contains(&f.name.as_str())
        {
            continue;
        }
        let colon = raw.iter().position(|&b| b == b':').unwrap();
        records.extend_from_slice(b"HP-Outer: ");
        records.extend_from_slice(&raw[..colon]);
        records.extend_from_slice(b": ");
        if f.name == "subject" {
            records.extend_from_slice(b"[...]\r\n");
        } else {
            let value = &raw[colon + 1..];
            let start = value
                .iter()
                .position(|b| !b" \t\r\n".contains(b))
                .unwrap_or(value.len());
            if start == value.len() {
                records.extend_from_slice(b"\r\n");
            } else {
                records.extend_from_slice(&value[start..]);
            }
        }
    }
    if !typed {
        out.extend_from_slice(
            b"Content-Type: text/plain; charset=us-ascii;\r\n hp=\"cipher\"; protected-headers=\"v1\"\r\n",
        );
    }
    out.extend_from_slice(&records);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&to_crlf(body));
    out
}

/// What a message with header protection asked for decrypts to: the
/// protected entity ([`expected_protected_entity`]) unless the message
/// cannot carry one — its root is a signature (`multipart/signed`, or
/// `application/(x-)pkcs7-mime` that is not `smime-type=enveloped-data`),
/// it has several `Content-Type` fields or one that already has an `hp`,
/// `protected-headers` or `hp-legacy-display` parameter, or one without
/// `type/subtype` — then the plain inner entity ([`expected_inner_entity`]).
pub fn expected_payload(input: &[u8]) -> Vec<u8> {
    let (fields, _) = split_message(input);
    let types: Vec<&Field> = fields.iter().filter(|f| f.name == "content-type").collect();
    let protectable = match types.as_slice() {
        [] => true,
        [one] => {
            let ct = ContentType::parse(&one.value());
            let pkcs7 =
                ct.mime == "application/pkcs7-mime" || ct.mime == "application/x-pkcs7-mime";
            let enveloped = ct
                .param("smime-type")
                .is_some_and(|t| t.eq_ignore_ascii_case("enveloped-data"));
            ct.mime.contains('/')
                && ct.mime != "multipart/signed"
                && (!pkcs7 || enveloped)
                && ["hp", "protected-headers", "hp-legacy-display"]
                    .iter()
                    .all(|p| ct.param(p).is_none())
        }
        _ => false,
    };
    if protectable {
        expected_protected_entity(input)
    } else {
        expected_inner_entity(input)
    }
}

/// A MIME type with lower-cased parameter names and unquoted values.
#[derive(Debug)]
pub struct ContentType {
    /// `type/subtype`, lower-cased.
    pub mime: String,
    /// Parameters in order (names lower-cased).
    pub params: Vec<(String, String)>,
}

impl ContentType {
    /// Parses a header value (already unfolded).
    pub fn parse(value: &str) -> Self {
        let mut parts = split_params(value).into_iter();
        let mime = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let params = parts
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                let v = v.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .map_or_else(
                        || v.to_owned(),
                        |v| v.replace("\\\"", "\"").replace("\\\\", "\\"),
                    );
                Some((k.trim().to_ascii_lowercase(), v))
            })
            .collect();
        ContentType { mime, params }
    }

    /// A parameter value by (lower-case) name.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Splits at `;` outside quoted strings.
fn split_params(value: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    let mut escaped = false;
    for c in value.chars() {
        let cur = out.last_mut().expect("non-empty");
        if escaped {
            escaped = false;
            cur.push(c);
        } else if quoted && c == '\\' {
            escaped = true;
            cur.push(c);
        } else if c == '"' {
            quoted = !quoted;
            cur.push(c);
        } else if c == ';' && !quoted {
            out.push(String::new());
        } else {
            cur.push(c);
        }
    }
    out
}

/// The parts of a multipart body: the bytes between delimiter lines, the
/// line break before each delimiter belonging to the delimiter (RFC 2046).
pub fn split_multipart<'a>(body: &'a [u8], boundary: &str) -> Vec<&'a [u8]> {
    let delim = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut part_start: Option<usize> = None;
    let mut pos = 0;
    while pos < body.len() {
        let end = body[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(body.len(), |i| pos + i + 1);
        let line = &body[pos..end];
        let trimmed = trim_eol(line);
        let is_delim = trimmed.starts_with(delim.as_bytes())
            && trimmed[delim.len()..]
                .iter()
                .all(|&b| b == b'-' || b == b' ' || b == b'\t');
        if is_delim {
            if let Some(start) = part_start {
                // Drop the line break that precedes the delimiter.
                let mut stop = pos;
                if stop > start && body[stop - 1] == b'\n' {
                    stop -= 1;
                    if stop > start && body[stop - 1] == b'\r' {
                        stop -= 1;
                    }
                }
                parts.push(&body[start..stop.max(start)]);
            }
            if trimmed[delim.len()..].starts_with(b"--") {
                return parts;
            }
            part_start = Some(end);
        }
        pos = end;
    }
    parts
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Printable excerpt of bytes (for failure messages).
pub fn escape(data: &[u8], max: usize) -> String {
    let mut s = String::new();
    for &b in data.iter().take(max) {
        match b {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            0x20..=0x7e => s.push(b as char),
            _ => {
                let _ = write!(s, "\\x{b:02x}");
            }
        }
    }
    if data.len() > max {
        let _ = write!(s, "…(+{} bytes)", data.len() - max);
    }
    s
}

/// Byte-for-byte equality with a readable report of the first difference.
pub fn assert_bytes_eq(actual: &[u8], expected: &[u8], context: &str) {
    if actual == expected {
        return;
    }
    let first = actual
        .iter()
        .zip(expected)
        .position(|(a, e)| a != e)
        .unwrap_or(actual.len().min(expected.len()));
    let from = first.saturating_sub(60);
    panic!(
        "{context}: decrypted entity differs from the expected inner entity\n\
         lengths: actual {} expected {}; first difference at byte {first}\n\
         actual   [{from}..]: {}\n\
         expected [{from}..]: {}",
        actual.len(),
        expected.len(),
        escape(&actual[from.min(actual.len())..], 160),
        escape(&expected[from.min(expected.len())..], 160),
    );
}

/// Checks that the bytes use `eol` only: no CR in LF style; every LF
/// preceded by CR and every CR followed by LF in CRLF style.
pub fn assert_eol_style(data: &[u8], eol: Eol, what: &str) {
    for (i, &b) in data.iter().enumerate() {
        let ok = match (eol, b) {
            (Eol::Lf, b'\r') => false,
            (Eol::Crlf, b'\n') => i > 0 && data[i - 1] == b'\r',
            (Eol::Crlf, b'\r') => data.get(i + 1) == Some(&b'\n'),
            _ => true,
        };
        assert!(
            ok,
            "{what}: line ending at byte {i} does not follow the input's {eol:?} style: …{}…",
            escape(&data[i.saturating_sub(40)..(i + 40).min(data.len())], 100)
        );
    }
}

/// Which kind of encrypted output is expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outer {
    /// `application/pkcs7-mime`; `auth` for authEnveloped-data (GCM).
    Smime {
        /// AES-GCM (authEnveloped-data).
        auth: bool,
    },
    /// PGP/MIME `multipart/encrypted`.
    OpenPgp,
}

enum Slot {
    Keep(Vec<u8>),
    Replaced(&'static str),
}

/// Checks the outer header section of `output` against the rules of the
/// contract and returns the output body. Kept fields must be byte-identical
/// and in order; replaced fields sit where the first original was; added
/// fields come last (in any order) and use the input's line ending style.
pub fn check_outer_headers<'a>(input: &[u8], output: &'a [u8], kind: Outer) -> &'a [u8] {
    let eol = Eol::of_header(input);
    let smime = matches!(kind, Outer::Smime { .. });
    let (in_fields, _) = split_message(input);
    let (out_fields, out_body) = split_message(output);
    // Header protection (RFC 9788) shows itself as the Subject replaced by
    // `[...]`: then every Subject is replaced and Comments and Keywords go.
    let protected = out_fields
        .iter()
        .any(|f| f.name == "subject" && f.value() == "[...]")
        && in_fields
            .iter()
            .any(|f| f.name == "subject" && f.value() != "[...]");

    let mut expected: Vec<Slot> = Vec::new();
    let (mut ct, mut cte, mut cd) = (false, false, false);
    for f in &in_fields {
        match f.name.as_str() {
            "content-type" => {
                if !ct {
                    expected.push(Slot::Replaced("content-type"));
                }
                ct = true;
            }
            "content-transfer-encoding" => {
                if smime && !cte {
                    expected.push(Slot::Replaced("content-transfer-encoding"));
                }
                cte = true;
            }
            "content-disposition" => {
                if smime && !cd {
                    expected.push(Slot::Replaced("content-disposition"));
                }
                cd = true;
            }
            // Every other content field moves inside the encryption.
            n if n.starts_with("content-") => {}
            "subject" if protected => expected.push(Slot::Replaced("subject")),
            "comments" | "keywords" if protected => {}
            _ => expected.push(Slot::Keep(f.raw.clone())),
        }
    }
    let mut appended: Vec<&str> = Vec::new();
    if !ct {
        appended.push("content-type");
    }
    if smime && !cte {
        appended.push("content-transfer-encoding");
    }
    if smime && !cd {
        appended.push("content-disposition");
    }
    if !in_fields.iter().any(|f| f.name == "mime-version") {
        appended.push("mime-version");
    }

    let listing = || {
        let mut s = String::from("output header fields:\n");
        for f in &out_fields {
            let _ = writeln!(s, "  {}", f.show());
        }
        s
    };
    let check_added = |f: &Field| {
        assert!(
            f.raw.ends_with(eol.as_str().as_bytes()),
            "added/replaced field does not end with the input's {eol:?} line ending: {}",
            f.show()
        );
        assert_eol_style(&f.raw, eol, "added/replaced header field");
    };

    assert!(
        out_fields.len() == expected.len() + appended.len(),
        "expected {} kept/replaced fields + appended {:?}, got {} fields\n{}",
        expected.len(),
        appended,
        out_fields.len(),
        listing()
    );
    for (i, (slot, got)) in expected.iter().zip(&out_fields).enumerate() {
        match slot {
            Slot::Keep(raw) => assert!(
                &got.raw == raw,
                "header field #{i} must be kept byte-identical:\n  expected {}\n  got      {}\n{}",
                escape(raw, 200),
                got.show(),
                listing()
            ),
            Slot::Replaced(name) => {
                assert!(
                    got.name == *name,
                    "header field #{i} must be the replaced {name}, got {}\n{}",
                    got.show(),
                    listing()
                );
                if *name == "subject" {
                    assert_eq!(got.value(), "[...]", "protected Subject");
                }
                check_added(got);
            }
        }
    }
    let mut tail: Vec<&str> = out_fields[expected.len()..]
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    tail.sort_unstable();
    let mut want = appended.clone();
    want.sort_unstable();
    assert!(
        tail == want,
        "appended fields at the end should be {want:?}, got {tail:?}\n{}",
        listing()
    );
    for f in &out_fields[expected.len()..] {
        check_added(f);
    }

    // Values of the fields the contract prescribes.
    let get = |name: &str| {
        let found: Vec<&Field> = out_fields.iter().filter(|f| f.name == name).collect();
        assert!(
            found.len() == 1,
            "exactly one {name} expected in the output\n{}",
            listing()
        );
        found[0].value()
    };
    if !in_fields.iter().any(|f| f.name == "mime-version") {
        assert_eq!(get("mime-version"), "1.0", "appended MIME-Version");
    }
    let ctype = ContentType::parse(&get("content-type"));
    match kind {
        Outer::Smime { auth } => {
            assert_eq!(ctype.mime, "application/pkcs7-mime", "outer Content-Type");
            let want = if auth {
                "authenveloped-data"
            } else {
                "enveloped-data"
            };
            assert_eq!(
                ctype
                    .param("smime-type")
                    .map(str::to_ascii_lowercase)
                    .as_deref(),
                Some(want),
                "smime-type of {ctype:?}"
            );
            assert_eq!(ctype.param("name"), Some("smime.p7m"), "name of {ctype:?}");
            assert!(
                get("content-transfer-encoding").eq_ignore_ascii_case("base64"),
                "Content-Transfer-Encoding must be base64\n{}",
                listing()
            );
            let disp = ContentType::parse(&get("content-disposition"));
            assert_eq!(disp.mime, "attachment", "Content-Disposition");
            assert_eq!(disp.param("filename"), Some("smime.p7m"), "{disp:?}");
        }
        Outer::OpenPgp => {
            assert_eq!(ctype.mime, "multipart/encrypted", "outer Content-Type");
            assert_eq!(
                ctype.param("protocol"),
                Some("application/pgp-encrypted"),
                "protocol of {ctype:?}"
            );
            assert!(ctype.param("boundary").is_some(), "boundary of {ctype:?}");
            for gone in [
                "content-transfer-encoding",
                "content-disposition",
                "content-id",
                "content-description",
            ] {
                assert!(
                    !out_fields.iter().any(|f| f.name == gone),
                    "PGP/MIME output must not carry {gone}\n{}",
                    listing()
                );
            }
        }
    }
    // The empty line separating header and body follows the style too.
    let header_len = output.len() - out_body.len();
    assert!(
        output[..header_len].ends_with(format!("{0}{0}", eol.as_str()).as_bytes())
            || (header_len == eol.as_str().len()),
        "header section must end with an empty {eol:?} line"
    );
    out_body
}

// ---------------------------------------------------------------------------
// S/MIME
// ---------------------------------------------------------------------------

/// Key algorithm of a test certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA 2048.
    Rsa,
    /// EC prime256v1.
    Ec,
}

/// Extended key usage choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eku {
    /// emailProtection.
    EmailProtection,
    /// serverAuth only.
    ServerAuthOnly,
}

/// Key usage choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ku {
    /// keyEncipherment (RSA) or keyAgreement (EC), as real certificates.
    Encryption,
    /// digitalSignature only.
    SignatureOnly,
}

/// What a test certificate looks like.
#[derive(Clone, Debug)]
pub struct CertSpec {
    /// Address in subjectAltName (and subject emailAddress).
    pub email: String,
    /// RSA or EC.
    pub kind: KeyKind,
    /// notBefore, relative to now, in seconds.
    pub not_before: i64,
    /// notAfter, relative to now, in seconds.
    pub not_after: i64,
    /// keyUsage.
    pub key_usage: Ku,
    /// extendedKeyUsage.
    pub eku: Eku,
}

const DAY: i64 = 86_400;

impl CertSpec {
    /// A certificate as a real S/MIME encryption certificate looks.
    pub fn good(email: &str, kind: KeyKind) -> Self {
        CertSpec {
            email: email.to_owned(),
            kind,
            not_before: -DAY,
            not_after: 365 * DAY,
            key_usage: Ku::Encryption,
            eku: Eku::EmailProtection,
        }
    }
}

/// A certificate with its private key, written to `work/`.
pub struct SmimeId {
    /// The certificate.
    pub cert: X509,
    /// The private key.
    pub key: PKey<Private>,
    /// PEM certificate file (for `-recip` / `-signer`).
    pub cert_path: PathBuf,
    /// PEM private key file (for `-inkey`).
    pub key_path: PathBuf,
}

impl SmimeId {
    /// An identity whose certificate and key are PEM files already
    /// (e.g. from the DNSSEC test environment).
    pub fn from_files(cert_path: &Path, key_path: &Path) -> Self {
        SmimeId {
            cert: X509::from_pem(&std::fs::read(cert_path).expect("read cert")).expect("PEM cert"),
            key: PKey::private_key_from_pem(&std::fs::read(key_path).expect("read key"))
                .expect("PEM key"),
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
        }
    }

    /// Generates a self-signed certificate per `spec`; files are named
    /// after `label` in `dir`.
    pub fn generate(dir: &Path, label: &str, spec: &CertSpec) -> Self {
        let key = match spec.kind {
            KeyKind::Rsa => PKey::from_rsa(Rsa::generate(2048).expect("RSA keygen")),
            KeyKind::Ec => {
                let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("P-256");
                PKey::from_ec_key(EcKey::generate(&group).expect("EC keygen"))
            }
        }
        .expect("PKey");

        let mut name = X509NameBuilder::new().expect("name");
        name.append_entry_by_nid(Nid::COMMONNAME, &format!("Test {}", spec.email))
            .expect("CN");
        name.append_entry_by_nid(Nid::PKCS9_EMAILADDRESS, &spec.email)
            .expect("emailAddress");
        let name = name.build();

        let mut b = X509::builder().expect("builder");
        b.set_version(2).expect("v3");
        let serial = {
            let mut bn = BigNum::new().expect("bn");
            bn.rand(64, openssl::bn::MsbOption::MAYBE_ZERO, false)
                .expect("rand serial");
            Asn1Integer::from_bn(&bn).expect("serial")
        };
        b.set_serial_number(&serial).expect("serial");
        b.set_subject_name(&name).expect("subject");
        b.set_issuer_name(&name).expect("issuer");
        b.set_pubkey(&key).expect("pubkey");
        let now = unix_now();
        b.set_not_before(&Asn1Time::from_unix(now + spec.not_before).expect("time"))
            .expect("notBefore");
        b.set_not_after(&Asn1Time::from_unix(now + spec.not_after).expect("time"))
            .expect("notAfter");
        b.append_extension(BasicConstraints::new().critical().build().expect("bc"))
            .expect("bc");
        let mut ku = KeyUsage::new();
        ku.critical();
        match (spec.key_usage, spec.kind) {
            (Ku::Encryption, KeyKind::Rsa) => ku.digital_signature().key_encipherment(),
            (Ku::Encryption, KeyKind::Ec) => ku.digital_signature().key_agreement(),
            (Ku::SignatureOnly, _) => ku.digital_signature(),
        };
        b.append_extension(ku.build().expect("ku")).expect("ku");
        let mut eku = ExtendedKeyUsage::new();
        match spec.eku {
            Eku::EmailProtection => eku.email_protection(),
            Eku::ServerAuthOnly => eku.server_auth(),
        };
        b.append_extension(eku.build().expect("eku")).expect("eku");
        let san = SubjectAlternativeName::new()
            .email(&spec.email)
            .build(&b.x509v3_context(None, None))
            .expect("san");
        b.append_extension(san).expect("san");
        b.sign(&key, MessageDigest::sha256()).expect("sign");
        let cert = b.build();

        let cert_path = dir.join(format!("{label}.cert.pem"));
        let key_path = dir.join(format!("{label}.key.pem"));
        std::fs::write(&cert_path, cert.to_pem().expect("pem")).expect("write cert");
        std::fs::write(&key_path, key.private_key_to_pem_pkcs8().expect("pem")).expect("write key");
        SmimeId {
            cert,
            key,
            cert_path,
            key_path,
        }
    }

    /// Writes the certificate into the key directory as `<file_addr>.pem`.
    pub fn install_pem(&self, key_dir: &Path, file_addr: &str) {
        std::fs::write(
            key_dir.join(format!("{file_addr}.pem")),
            self.cert.to_pem().expect("pem"),
        )
        .expect("install cert");
    }

    /// Writes the certificate into the key directory as DER `<file_addr>.crt`.
    pub fn install_der(&self, key_dir: &Path, file_addr: &str) {
        std::fs::write(
            key_dir.join(format!("{file_addr}.crt")),
            self.cert.to_der().expect("der"),
        )
        .expect("install cert");
    }
}

/// `openssl cms -decrypt` on an S/MIME message (`-inform SMIME`) or a DER
/// CMS structure (`-inform DER`).
pub fn smime_decrypt(
    scratch: &Scratch,
    data: &[u8],
    inform: &str,
    id: &SmimeId,
) -> Result<Vec<u8>, String> {
    let tag = unique_tag();
    let input = scratch.file(&format!("cms-in-{tag}"));
    let output = scratch.file(&format!("cms-out-{tag}"));
    std::fs::write(&input, data).expect("write cms input");
    let out = Command::new("openssl")
        .args(["cms", "-decrypt", "-inform", inform, "-in"])
        .arg(&input)
        .arg("-recip")
        .arg(&id.cert_path)
        .arg("-inkey")
        .arg(&id.key_path)
        .arg("-out")
        .arg(&output)
        .output()
        .expect("run openssl cms -decrypt");
    let _ = std::fs::remove_file(&input);
    if !out.status.success() {
        return Err(format!(
            "openssl cms -decrypt -inform {inform} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let plain = std::fs::read(&output).expect("read decrypted");
    let _ = std::fs::remove_file(&output);
    Ok(plain)
}

/// The content-encryption algorithm of a DER CMS structure, as openssl
/// names it (`aes-256-cbc`, `aes-256-gcm`, …).
pub fn cms_content_cipher(scratch: &Scratch, der: &[u8]) -> String {
    let path = scratch.file(&format!("cms-print-{}", unique_tag()));
    std::fs::write(&path, der).expect("write der");
    let out = run_ok(
        Command::new("openssl")
            .args(["cms", "-cmsout", "-print", "-inform", "DER", "-in"])
            .arg(&path),
        "openssl cms -cmsout -print",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "contentEncryptionAlgorithm:" {
            let alg = lines.next().unwrap_or_default().trim();
            if let Some(rest) = alg.strip_prefix("algorithm: ") {
                return rest.split(' ').next().unwrap_or_default().to_owned();
            }
        }
    }
    panic!("no contentEncryptionAlgorithm in openssl's CMS dump");
}

/// `openssl cms -encrypt` of `content` to `id`: a complete S/MIME message
/// (MIME-Version, Content-Disposition, Content-Type, Content-Transfer-
/// Encoding, base64 body) with LF line endings.
pub fn smime_encrypt_tool(
    scratch: &Scratch,
    content: &[u8],
    id: &SmimeId,
    cipher: &str,
) -> Vec<u8> {
    let tag = unique_tag();
    let input = scratch.file(&format!("enc-in-{tag}"));
    let output = scratch.file(&format!("enc-out-{tag}"));
    std::fs::write(&input, content).expect("write");
    run_ok(
        Command::new("openssl")
            .args(["cms", "-encrypt", "-binary", &format!("-{cipher}"), "-in"])
            .arg(&input)
            .arg("-out")
            .arg(&output)
            .arg(&id.cert_path),
        "openssl cms -encrypt",
    );
    std::fs::read(&output).expect("read")
}

/// `openssl cms -sign` of an entity: multipart/signed (`detached`) or
/// application/pkcs7-mime signed-data. Returns openssl's message.
pub fn smime_sign_tool(scratch: &Scratch, entity: &[u8], id: &SmimeId, detached: bool) -> Vec<u8> {
    let tag = unique_tag();
    let input = scratch.file(&format!("sign-in-{tag}"));
    let output = scratch.file(&format!("sign-out-{tag}"));
    std::fs::write(&input, entity).expect("write");
    let mut cmd = Command::new("openssl");
    cmd.args(["cms", "-sign", "-md", "sha256"]);
    if !detached {
        cmd.arg("-nodetach");
    }
    cmd.arg("-in")
        .arg(&input)
        .arg("-signer")
        .arg(&id.cert_path)
        .arg("-inkey")
        .arg(&id.key_path)
        .arg("-out")
        .arg(&output);
    run_ok(&mut cmd, "openssl cms -sign");
    std::fs::read(&output).expect("read")
}

/// `openssl cms -verify -noverify -inform SMIME`: signature check only,
/// no chain.
pub fn smime_verify(scratch: &Scratch, entity: &[u8]) -> Result<(), String> {
    let path = scratch.file(&format!("verify-{}", unique_tag()));
    std::fs::write(&path, entity).expect("write");
    let out = Command::new("openssl")
        .args(["cms", "-verify", "-noverify", "-inform", "SMIME", "-in"])
        .arg(&path)
        .args(["-out", "/dev/null"])
        .output()
        .expect("run openssl cms -verify");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Checks the S/MIME output of `input` (headers, line endings, base64 body
/// of ≤ 76-character lines) and returns the decoded DER CMS structure.
pub fn check_smime_output(input: &[u8], output: &[u8], auth: bool) -> Vec<u8> {
    let eol = Eol::of_header(input);
    let body = check_outer_headers(input, output, Outer::Smime { auth });
    assert_eol_style(body, eol, "S/MIME body");
    let text = std::str::from_utf8(body).expect("S/MIME body must be ASCII base64");
    let mut b64 = String::with_capacity(text.len());
    for (n, line) in text.split(eol.as_str()).enumerate() {
        assert!(
            line.len() <= 76,
            "base64 line {n} has {} characters (max 76)",
            line.len()
        );
        assert!(
            line.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')),
            "base64 line {n} has characters outside the base64 alphabet: {line:?}"
        );
        b64.push_str(line);
    }
    let der = openssl::base64::decode_block(&b64).expect("S/MIME body is valid base64");
    assert!(
        der.first() == Some(&0x30),
        "decoded body is not a DER SEQUENCE"
    );
    der
}

// ---------------------------------------------------------------------------
// OpenPGP (gpg)
// ---------------------------------------------------------------------------

/// OpenPGP key algorithms used by the tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PgpKind {
    /// Ed25519 primary + Cv25519 encryption subkey.
    Cv25519,
    /// RSA 3072 primary + RSA 3072 encryption subkey.
    Rsa3072,
}

/// A private GNUPGHOME under /tmp; its gpg-agent is killed on drop.
pub struct Gpg {
    home: TempDir,
}

impl Gpg {
    /// A fresh, empty home.
    pub fn new() -> Self {
        require_tools();
        let home = tempdir("g");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700))
                .expect("chmod GNUPGHOME");
        }
        Gpg { home }
    }

    /// The GNUPGHOME path.
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// `gpg` with this home, in batch mode, with empty loopback passphrases.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new("gpg");
        c.env("GNUPGHOME", self.home.path()).args([
            "--batch",
            "--no-tty",
            "--yes",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--trust-model",
            "always",
            "--status-fd",
            "2",
        ]);
        c
    }

    /// Generates a key for `email` (an unprotected secret key) and returns
    /// its fingerprint. `faked_time` (`20200101T000000!`) and `expire`
    /// (`0`, `1y`) produce already-expired keys.
    pub fn generate(
        &self,
        email: &str,
        kind: PgpKind,
        expire: &str,
        faked_time: Option<&str>,
    ) -> String {
        let algo = match kind {
            PgpKind::Cv25519 => {
                "Key-Type: eddsa\nKey-Curve: ed25519\nKey-Usage: sign\n\
                 Subkey-Type: ecdh\nSubkey-Curve: cv25519\nSubkey-Usage: encrypt\n"
            }
            PgpKind::Rsa3072 => {
                "Key-Type: RSA\nKey-Length: 3072\nKey-Usage: sign\n\
                 Subkey-Type: RSA\nSubkey-Length: 3072\nSubkey-Usage: encrypt\n"
            }
        };
        let params = format!(
            "%no-protection\n{algo}Name-Real: Test User\nName-Email: {email}\n\
             Expire-Date: {expire}\n%commit\n"
        );
        let path = self.home.path().join(format!("params-{}", unique_tag()));
        std::fs::write(&path, params).expect("write key params");
        let mut cmd = self.cmd();
        if let Some(t) = faked_time {
            cmd.args(["--faked-system-time", t]);
        }
        cmd.arg("--gen-key").arg(&path);
        let out = run_ok(&mut cmd, "gpg --gen-key");
        created_fingerprint(&out)
    }

    /// A key with only an Ed25519 signing primary key (no encryption
    /// subkey); returns its fingerprint.
    pub fn generate_sign_only(&self, email: &str) -> String {
        let out = run_ok(
            self.cmd()
                .args(["--quick-gen-key", email, "ed25519", "sign", "never"]),
            "gpg --quick-gen-key (sign only)",
        );
        created_fingerprint(&out)
    }

    /// Imports the revocation certificate gpg stored at key generation:
    /// the key becomes revoked.
    pub fn revoke(&self, fpr: &str) {
        let rev_path = self
            .home
            .path()
            .join("openpgp-revocs.d")
            .join(format!("{fpr}.rev"));
        let rev = std::fs::read_to_string(&rev_path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", rev_path.display()));
        let rev = rev.replace(
            ":-----BEGIN PGP PUBLIC KEY BLOCK-----",
            "-----BEGIN PGP PUBLIC KEY BLOCK-----",
        );
        let path = self.home.path().join("revocation.asc");
        std::fs::write(&path, rev).expect("write revocation");
        run_ok(
            self.cmd().arg("--import").arg(&path),
            "gpg --import revocation",
        );
    }

    /// The transferable public key, armored or binary.
    pub fn export(&self, fpr: &str, armor: bool) -> Vec<u8> {
        let mut cmd = self.cmd();
        if armor {
            cmd.arg("--armor");
        }
        let out = run_ok(cmd.args(["--export", fpr]), "gpg --export");
        assert!(!out.stdout.is_empty(), "gpg exported nothing for {fpr}");
        out.stdout
    }

    /// Writes the public key into the key directory as `<file_addr>.asc`
    /// (armored) or `<file_addr>.pgp` (binary).
    pub fn install(&self, fpr: &str, key_dir: &Path, file_addr: &str, armor: bool) {
        let ext = if armor { "asc" } else { "pgp" };
        std::fs::write(
            key_dir.join(format!("{file_addr}.{ext}")),
            self.export(fpr, armor),
        )
        .expect("install OpenPGP key");
    }

    /// Imports public keys exported from another home.
    pub fn import(&self, key: &[u8]) {
        let path = self.home.path().join(format!("import-{}", unique_tag()));
        std::fs::write(&path, key).expect("write");
        run_ok(self.cmd().arg("--import").arg(&path), "gpg --import");
    }

    /// `gpg --decrypt --output FILE`: the raw plaintext. Fails unless gpg
    /// reports a SEIPD v1 (MDC) packet that decrypted with a good MDC.
    pub fn decrypt(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        let tag = unique_tag();
        let input = self.home.path().join(format!("dec-in-{tag}"));
        let output = self.home.path().join(format!("dec-out-{tag}"));
        std::fs::write(&input, message).expect("write");
        let out = self
            .cmd()
            .arg("--output")
            .arg(&output)
            .arg("--decrypt")
            .arg(&input)
            .output()
            .expect("run gpg --decrypt");
        let status = String::from_utf8_lossy(&out.stderr).into_owned();
        let _ = std::fs::remove_file(&input);
        if !out.status.success() || !status.contains("[GNUPG:] DECRYPTION_OKAY") {
            return Err(format!("gpg --decrypt failed ({}):\n{status}", out.status));
        }
        if !status.contains("[GNUPG:] DECRYPTION_INFO 2 ") || !status.contains("[GNUPG:] GOODMDC") {
            return Err(format!(
                "gpg did not see a SEIPD v1 packet with a good MDC:\n{status}"
            ));
        }
        let plain = std::fs::read(&output).expect("read decrypted");
        let _ = std::fs::remove_file(&output);
        Ok(plain)
    }

    /// `gpg --armor --encrypt` to `fpr`.
    pub fn encrypt_armored(&self, data: &[u8], fpr: &str) -> Vec<u8> {
        let tag = unique_tag();
        let input = self.home.path().join(format!("enc-in-{tag}"));
        let output = self.home.path().join(format!("enc-out-{tag}"));
        std::fs::write(&input, data).expect("write");
        run_ok(
            self.cmd()
                .args(["--armor", "--recipient", fpr, "--output"])
                .arg(&output)
                .arg("--encrypt")
                .arg(&input),
            "gpg --encrypt",
        );
        std::fs::read(&output).expect("read")
    }

    /// An armored detached signature by `fpr` over `data`.
    pub fn detach_sign(&self, data: &[u8], fpr: &str) -> Vec<u8> {
        let tag = unique_tag();
        let input = self.home.path().join(format!("sig-in-{tag}"));
        let output = self.home.path().join(format!("sig-out-{tag}"));
        std::fs::write(&input, data).expect("write");
        run_ok(
            self.cmd()
                .args(["--armor", "--digest-algo", "SHA256", "--local-user", fpr])
                .arg("--output")
                .arg(&output)
                .arg("--detach-sign")
                .arg(&input),
            "gpg --detach-sign",
        );
        std::fs::read(&output).expect("read")
    }

    /// `gpg --verify SIG DATA`: Ok when the signature is good.
    pub fn verify_detached(&self, sig: &[u8], data: &[u8]) -> Result<(), String> {
        let tag = unique_tag();
        let sig_path = self.home.path().join(format!("v-sig-{tag}"));
        let data_path = self.home.path().join(format!("v-data-{tag}"));
        std::fs::write(&sig_path, sig).expect("write");
        std::fs::write(&data_path, data).expect("write");
        let out = self
            .cmd()
            .arg("--verify")
            .arg(&sig_path)
            .arg(&data_path)
            .output()
            .expect("run gpg --verify");
        let status = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() && status.contains("[GNUPG:] GOODSIG") {
            Ok(())
        } else {
            Err(status)
        }
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.home.path())
            .args(["--kill", "gpg-agent"])
            .output();
    }
}

fn created_fingerprint(out: &Output) -> String {
    let status = String::from_utf8_lossy(&out.stderr);
    status
        .lines()
        .find_map(|l| l.strip_prefix("[GNUPG:] KEY_CREATED "))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no KEY_CREATED in gpg's status output:\n{status}"))
}

/// Checks the PGP/MIME structure of `output` (RFC 3156) against `input`
/// and returns the ASCII-armored PGP message of the second part.
pub fn check_pgp_mime_output(input: &[u8], output: &[u8]) -> Vec<u8> {
    let eol = Eol::of_header(input);
    let body = check_outer_headers(input, output, Outer::OpenPgp);
    assert_eol_style(body, eol, "PGP/MIME body");
    let (fields, _) = split_message(output);
    let ctype = fields
        .iter()
        .find(|f| f.name == "content-type")
        .map(|f| ContentType::parse(&f.value()))
        .expect("Content-Type checked above");
    let boundary = ctype.param("boundary").expect("boundary checked above");
    let parts = split_multipart(body, boundary);
    assert!(
        parts.len() == 2,
        "multipart/encrypted must have exactly 2 parts, found {}: {}",
        parts.len(),
        escape(body, 600)
    );

    let (control_fields, control_body) = split_message(parts[0]);
    let control_type = control_fields
        .iter()
        .find(|f| f.name == "content-type")
        .map(|f| ContentType::parse(&f.value()).mime);
    assert_eq!(
        control_type.as_deref(),
        Some("application/pgp-encrypted"),
        "first part: {}",
        escape(parts[0], 300)
    );
    assert!(
        String::from_utf8_lossy(control_body)
            .lines()
            .any(|l| l.trim() == "Version: 1"),
        "first part must contain `Version: 1`: {}",
        escape(parts[0], 300)
    );

    let (data_fields, data_body) = split_message(parts[1]);
    let data_type = data_fields
        .iter()
        .find(|f| f.name == "content-type")
        .map(|f| ContentType::parse(&f.value()).mime);
    assert_eq!(
        data_type.as_deref(),
        Some("application/octet-stream"),
        "second part: {}",
        escape(parts[1], 300)
    );
    let begin = b"-----BEGIN PGP MESSAGE-----";
    let end = b"-----END PGP MESSAGE-----";
    let start = find(data_body, begin)
        .unwrap_or_else(|| panic!("second part has no ASCII armor: {}", escape(data_body, 300)));
    let stop = find(&data_body[start..], end)
        .map(|i| start + i + end.len())
        .expect("armor END line");
    data_body[start..stop].to_vec()
}

/// First index of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub fn unique_tag() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
