//! Integration tests for the offline `autoencrypt-milter encrypt` command.
//!
//! Every encrypted message is decrypted again with the reference tools
//! (`openssl cms -decrypt`, `gpg --decrypt`) and compared byte for byte with
//! the inner entity computed independently in `common`. Keys are generated
//! per test; `openssl` and `gpg` must be installed (the tests fail, never
//! skip, without them).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

const ALICE: &str = "alice@example.org";
const BOB: &str = "bob@example.org";
const CAROL: &str = "carol@example.org";

// ---------------------------------------------------------------------------
// The corpus
// ---------------------------------------------------------------------------

/// What a decrypted signed message must still pass.
enum SignedCheck {
    /// Not signed.
    None,
    /// `openssl cms -verify -noverify` (multipart/signed or signed-data).
    Smime,
    /// PGP/MIME multipart/signed; the home holds the signer's public key.
    Pgp(Gpg),
}

/// One corpus message.
struct Case {
    name: &'static str,
    input: Vec<u8>,
    signed: SignedCheck,
}

impl Case {
    fn plain(name: &'static str, input: Vec<u8>) -> Self {
        Case {
            name,
            input,
            signed: SignedCheck::None,
        }
    }
}

/// Converts the LF text of a literal into CRLF.
fn crlf(s: &str) -> Vec<u8> {
    to_crlf(s.as_bytes())
}

mod corpus {
    use super::*;

    const ROUTING: &str = "\
Return-Path: <sender@example.net>
Received: from mx.example.net (mx.example.net [192.0.2.1])
\tby mail.example.org (Postfix) with ESMTPS id 4F1A2B3C
\tfor <alice@example.org>; Sat, 22 Nov 2025 06:00:00 +0000 (UTC)
From: Sender <sender@example.net>
To: Alice <alice@example.org>
Date: Sat, 22 Nov 2025 06:00:00 +0000
";

    pub fn plain_ascii(_: &Scratch) -> Case {
        let msg = format!(
            "{ROUTING}Subject: Plain ASCII
Message-ID: <plain-ascii@example.net>
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii; format=flowed
Content-Transfer-Encoding: 7bit

Hello Alice,

this is a plain ASCII message.
-- 
Sender
"
        );
        Case::plain("plain_ascii", msg.into_bytes())
    }

    pub fn utf8_8bit(_: &Scratch) -> Case {
        let msg = format!(
            "{ROUTING}Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=
Message-ID: <utf8@example.net>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Grüße aus München! Ça va? Ελληνικά, русский, 日本語のテキスト, emoji 🔐✉️.
Zero width joiner: 👩‍💻 and combining: e\u{301}.
"
        );
        Case::plain("utf8_8bit", crlf(&msg))
    }

    pub fn quoted_printable(_: &Scratch) -> Case {
        let msg = format!(
            "{ROUTING}Subject: Quoted-printable
Message-ID: <qp@example.net>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

Gr=C3=BC=C3=9Fe aus M=C3=BCnchen! This line is long enough that it needs a s=
oft line break in quoted-printable, see?=20
Trailing space encoded=20
=3D sign, a tab=09
From the start of a line (=46rom escaped).
"
        );
        Case::plain("quoted_printable", msg.into_bytes())
    }

    pub fn multipart_alternative(_: &Scratch) -> Case {
        let msg = format!(
            "{ROUTING}Subject: Alternative
Message-ID: <alt@example.net>
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary=\"=_alt_1\"

This is a multi-part message in MIME format.

--=_alt_1
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

Hello =E2=80=93 plain version.

--=_alt_1
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: quoted-printable

<html><body><p>Hello =E2=80=93 <b>HTML</b> version.</p></body></html>

--=_alt_1--
"
        );
        Case::plain("multipart_alternative", crlf(&msg))
    }

    pub fn multipart_mixed_attachment(_: &Scratch) -> Case {
        let mut msg = format!(
            "{ROUTING}Subject: Report with attachment
Message-ID: <mixed@example.net>
MIME-Version: 1.0
Content-Type: multipart/mixed;
 boundary=\"------------mixed0123456789\"

--------------mixed0123456789
Content-Type: text/plain; charset=us-ascii
Content-Transfer-Encoding: 7bit

Please find the report attached.

--------------mixed0123456789
Content-Type: application/pdf; name=\"report.pdf\"
Content-Disposition: attachment; filename=\"report.pdf\"
Content-Transfer-Encoding: base64

"
        )
        .into_bytes();
        let mut payload = b"%PDF-1.7\n\x00\x01\xff\xfe\r\n\r".to_vec();
        payload.extend(pseudo_random_bytes(64 * 1024 + 13, 7));
        msg.extend(base64_lines(&payload, "\n"));
        msg.extend_from_slice(b"\n--------------mixed0123456789--\n");
        Case::plain("multipart_mixed_attachment", msg)
    }

    pub fn nested_multipart(_: &Scratch) -> Case {
        let mut msg = format!(
            "{ROUTING}Subject: Nested
Message-ID: <nested@example.net>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=outer

--outer
Content-Type: multipart/alternative; boundary=\"alt\"

--alt
Content-Type: text/plain; charset=utf-8

Text with an inline image.
--alt
Content-Type: multipart/related; boundary=\"rel\"; type=\"text/html\"

--rel
Content-Type: text/html; charset=utf-8

<p>Text with an <img src=\"cid:img1@example.net\"> inline image.</p>
--rel
Content-Type: image/png
Content-ID: <img1@example.net>
Content-Transfer-Encoding: base64
Content-Disposition: inline; filename=\"dot.png\"

"
        )
        .into_bytes();
        msg.extend(base64_lines(&pseudo_random_bytes(300, 3), "\n"));
        msg.extend_from_slice(
            b"--rel--

--alt--

--outer
Content-Type: message/rfc822

From: Someone <someone@example.com>
To: Sender <sender@example.net>
Subject: Forwarded
Content-Type: text/plain

Forwarded body.

--outer
Content-Type: application/octet-stream; name=blob.bin
Content-Disposition: attachment; filename=blob.bin
Content-Transfer-Encoding: base64

",
        );
        msg.extend(base64_lines(&pseudo_random_bytes(1000, 4), "\n"));
        msg.extend_from_slice(b"--outer--\n");
        Case::plain("nested_multipart", msg)
    }

    /// Headers of a message around an S/MIME-signed entity from openssl,
    /// stored with LF line endings as a Unix MTA keeps them.
    fn wrap_signed(tool_output: &[u8], subject: &str) -> Vec<u8> {
        let mut msg = format!("{ROUTING}Subject: {subject}\nMessage-ID: <{subject}@example.net>\n")
            .into_bytes();
        msg.extend(to_lf(tool_output));
        msg
    }

    const SIGNED_ENTITY: &str = "Content-Type: text/plain; charset=utf-8\r
Content-Transfer-Encoding: quoted-printable\r
\r
Signed text with trailing space=20\r
and an umlaut: =C3=A4\r
";

    pub fn multipart_signed_smime(s: &Scratch) -> Case {
        let signer = SmimeId::generate(
            &s.work,
            "signer",
            &CertSpec::good("sender@example.net", KeyKind::Rsa),
        );
        let signed = smime_sign_tool(s, SIGNED_ENTITY.as_bytes(), &signer, true);
        Case {
            name: "multipart_signed_smime",
            input: wrap_signed(&signed, "smime-signed"),
            signed: SignedCheck::Smime,
        }
    }

    pub fn pkcs7_signed_data(s: &Scratch) -> Case {
        let signer = SmimeId::generate(
            &s.work,
            "signer",
            &CertSpec::good("sender@example.net", KeyKind::Ec),
        );
        let signed = smime_sign_tool(s, SIGNED_ENTITY.as_bytes(), &signer, false);
        Case {
            name: "pkcs7_signed_data",
            input: wrap_signed(&signed, "signed-data"),
            signed: SignedCheck::Smime,
        }
    }

    pub fn multipart_signed_pgp(_: &Scratch) -> Case {
        let gpg = Gpg::new();
        let fpr = gpg.generate("sender@example.net", PgpKind::Cv25519, "0", None);
        let signed_part = SIGNED_ENTITY.as_bytes();
        let sig = gpg.detach_sign(signed_part, &fpr);
        let mut msg = format!(
            "{ROUTING}Subject: PGP signed
Message-ID: <pgp-signed@example.net>
MIME-Version: 1.0
Content-Type: multipart/signed; micalg=pgp-sha256;
 protocol=\"application/pgp-signature\"; boundary=\"sig-b\"

This is an OpenPGP/MIME signed message (RFC 4880 and 3156)
--sig-b
"
        )
        .into_bytes();
        // Stored with LF: the signature is over the CRLF form.
        msg.extend(to_lf(signed_part));
        msg.extend_from_slice(
            b"
--sig-b
Content-Type: application/pgp-signature; name=\"signature.asc\"
Content-Description: OpenPGP digital signature
Content-Disposition: attachment; filename=\"signature.asc\"

",
        );
        msg.extend(to_lf(&sig));
        msg.extend_from_slice(b"\n--sig-b--\n");
        Case {
            name: "multipart_signed_pgp",
            input: msg,
            signed: SignedCheck::Pgp(gpg),
        }
    }

    pub fn long_lines(_: &Scratch) -> Case {
        let long_header = format!("X-Long-Header: {}\n", "h".repeat(1200));
        let body = format!(
            "short line\n{}\n{}\n{} end\n",
            "a".repeat(999),
            "b".repeat(2000),
            "c ".repeat(2500)
        );
        let msg = format!(
            "{ROUTING}Subject: Long lines
Message-ID: <long@example.net>
{long_header}MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii
Content-Transfer-Encoding: 7bit

{body}"
        );
        Case::plain("long_lines", msg.into_bytes())
    }

    const LINE_ENDINGS: &str = "\
From: Sender <sender@example.net>
To: Alice <alice@example.org>
Subject: Line endings
Date: Sat, 22 Nov 2025 06:00:00 +0000
Message-ID: <eol@example.net>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=b1

--b1
Content-Type: text/plain; charset=us-ascii

first line

third line, after an empty one
--b1
Content-Type: text/csv; name=data.csv
Content-Disposition: attachment

a,b,c
1,2,3
--b1--
";

    pub fn lf_line_endings(_: &Scratch) -> Case {
        Case::plain("lf_line_endings", LINE_ENDINGS.as_bytes().to_vec())
    }

    pub fn crlf_line_endings(_: &Scratch) -> Case {
        Case::plain("crlf_line_endings", crlf(LINE_ENDINGS))
    }

    /// CRLF header section, body mixing CRLF and bare LF.
    pub fn mixed_line_endings(_: &Scratch) -> Case {
        let mut msg = crlf(
            "From: Sender <sender@example.net>
To: Alice <alice@example.org>
Subject: Mixed line endings
Content-Type: text/plain; charset=us-ascii

",
        );
        msg.extend_from_slice(b"crlf line\r\nbare lf line\nanother crlf\r\n\nlast bare\n");
        Case::plain("mixed_line_endings", msg)
    }

    pub fn latin1_8bit(_: &Scratch) -> Case {
        let mut msg = format!("{ROUTING}Message-ID: <latin1@example.net>\n").into_bytes();
        // Raw 8-bit Latin-1 in headers too (seen from broken mailers).
        msg.extend_from_slice(b"Subject: Gr\xfc\xdfe aus K\xf6ln\n");
        msg.extend_from_slice(
            b"MIME-Version: 1.0
Content-Type: text/plain; charset=iso-8859-1
Content-Transfer-Encoding: 8bit
Content-Description: Stra\xdfe

Gr\xfc\xdfe aus K\xf6ln, \xe4\xf6\xfc \xc4\xd6\xdc \xdf \xe9\xe8 \xa9 \xbd.
Not valid UTF-8: \xc3 alone, \xff\xfe.
",
        );
        Case::plain("latin1_8bit", msg)
    }

    pub fn empty_body(_: &Scratch) -> Case {
        let msg = format!(
            "{ROUTING}Subject: Empty body
Message-ID: <empty@example.net>
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii

"
        );
        Case::plain("empty_body", msg.into_bytes())
    }

    /// RFC 822 style: no MIME header fields at all.
    pub fn no_content_type(_: &Scratch) -> Case {
        let msg = format!(
            "{ROUTING}Subject: No MIME at all
Message-ID: <nomime@example.net>

Just text, implicitly text/plain; charset=us-ascii.
"
        );
        Case::plain("no_content_type", msg.into_bytes())
    }

    pub fn no_final_newline(_: &Scratch) -> Case {
        let msg = format!(
            "{ROUTING}Subject: No final newline
Message-ID: <nonl@example.net>
Content-Type: text/plain

first line
last line without newline"
        );
        Case::plain("no_final_newline", msg.into_bytes())
    }

    /// Header names in odd case, folding with tabs and spaces, a folded
    /// Content-Type with parameters on continuation lines, empty values.
    pub fn odd_folding(_: &Scratch) -> Case {
        let msg = "\
received: from a.example.net by b.example.org;
 Sat, 22 Nov 2025 06:00:00 +0000
from: Sender <sender@example.net>
TO: Alice <alice@example.org>,
\t\"Bob, the other\" <bob@example.org>
subject: a subject
  folded
\tthree times
   with mixed whitespace
X-Empty:
X-No-Space:value
mime-version: 1.0 (produced by a test)
content-type: text/plain;
\tcharset=\"utf-8\";
\tformat=flowed;
 delsp=yes
CONTENT-TRANSFER-ENCODING:
 8bit
X-After: kept in place

Body after odd headers. \u{2713}
";
        Case::plain("odd_folding", crlf(msg))
    }

    /// Content-* fields beyond Content-Type: a repeated Content-Type,
    /// Content-ID, Content-Description, Content-Disposition (inline) and
    /// Content-Language (kept outside too); no MIME-Version.
    pub fn repeated_content_fields(_: &Scratch) -> Case {
        let msg = format!(
            "{ROUTING}Content-Type: text/plain; charset=us-ascii
Subject: Repeated content fields
Content-Language: en
Content-ID: <part1@example.net>
Content-Type: text/plain; charset=utf-8
Content-Description: the body
Content-Disposition: inline
Message-ID: <repeat@example.net>

Body.
"
        );
        Case::plain("repeated_content_fields", msg.into_bytes())
    }
}

// ---------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------

/// Checks what a decrypted signed message must still pass.
fn check_signature(scratch: &Scratch, case: &Case, decrypted: &[u8]) {
    match &case.signed {
        SignedCheck::None => {}
        SignedCheck::Smime => {
            if let Err(e) = smime_verify(scratch, decrypted) {
                panic!(
                    "{}: S/MIME signature no longer verifies after decryption: {e}",
                    case.name
                );
            }
        }
        SignedCheck::Pgp(gpg) => {
            let (fields, body) = split_message(decrypted);
            let ctype = fields
                .iter()
                .find(|f| f.name == "content-type")
                .map(|f| ContentType::parse(&f.value()))
                .expect("decrypted entity has a Content-Type");
            assert_eq!(ctype.mime, "multipart/signed");
            let parts = split_multipart(body, ctype.param("boundary").expect("boundary"));
            assert_eq!(parts.len(), 2, "{}: multipart/signed parts", case.name);
            let (_, sig) = split_message(parts[1]);
            if let Err(e) = gpg.verify_detached(sig, parts[0]) {
                panic!(
                    "{}: PGP/MIME signature no longer verifies after decryption:\n{e}",
                    case.name
                );
            }
        }
    }
}

/// Encrypts `case` to `id` with S/MIME, checks the output format and that
/// `openssl cms -decrypt` (as S/MIME and as DER) gives the inner entity.
fn smime_check_case(
    scratch: &Scratch,
    id: &SmimeId,
    addr: &str,
    case: &Case,
    cipher: Option<&str>,
) {
    let mut extra = vec!["--method", "smime"];
    if let Some(c) = cipher {
        extra.extend(["--cipher", c]);
    }
    let run = run_encrypt(&case.input, &[addr], &scratch.keys, &extra);
    run.assert_success(case.name);
    let cipher = cipher.unwrap_or("aes-256-cbc");
    let der = check_smime_output(&case.input, &run.stdout, cipher == "aes-256-gcm");
    assert_eq!(
        cms_content_cipher(scratch, &der),
        cipher,
        "{}: content-encryption algorithm",
        case.name
    );
    let expected = expected_inner_entity(&case.input);
    let via_smime = smime_decrypt(scratch, &run.stdout, "SMIME", id)
        .unwrap_or_else(|e| panic!("{}: {e}", case.name));
    assert_bytes_eq(
        &via_smime,
        &expected,
        &format!("{} (-inform SMIME)", case.name),
    );
    let via_der =
        smime_decrypt(scratch, &der, "DER", id).unwrap_or_else(|e| panic!("{}: {e}", case.name));
    assert_bytes_eq(&via_der, &expected, &format!("{} (-inform DER)", case.name));
    check_signature(scratch, case, &via_smime);
}

/// Encrypts `case` to `addr` with OpenPGP, checks PGP/MIME and that
/// `gpg --decrypt` in `gpg`'s home gives the inner entity.
fn pgp_check_case(scratch: &Scratch, gpg: &Gpg, addr: &str, case: &Case) {
    let run = run_encrypt(
        &case.input,
        &[addr],
        &scratch.keys,
        &["--method", "openpgp"],
    );
    run.assert_success(case.name);
    let armored = check_pgp_mime_output(&case.input, &run.stdout);
    let decrypted = gpg
        .decrypt(&armored)
        .unwrap_or_else(|e| panic!("{}: {e}", case.name));
    assert_bytes_eq(&decrypted, &expected_inner_entity(&case.input), case.name);
    check_signature(scratch, case, &decrypted);
}

fn smime_roundtrip(build: fn(&Scratch) -> Case, kind: KeyKind, cipher: Option<&str>) {
    let s = Scratch::new();
    let id = SmimeId::generate(&s.work, "alice", &CertSpec::good(ALICE, kind));
    id.install_pem(&s.keys, ALICE);
    smime_check_case(&s, &id, ALICE, &build(&s), cipher);
}

fn pgp_roundtrip(build: fn(&Scratch) -> Case, kind: PgpKind) {
    let s = Scratch::new();
    let gpg = Gpg::new();
    let fpr = gpg.generate(ALICE, kind, "0", None);
    gpg.install(&fpr, &s.keys, ALICE, true);
    pgp_check_case(&s, &gpg, ALICE, &build(&s));
}

/// `encrypt --protect-headers`: the corpus message decrypts to the RFC
/// 9788 payload (or, signed or already marked, to the plain entity: the
/// header then stays as it came) and the outer header is the contract's,
/// with the Subject as `[...]` where protected.
fn smime_protected_roundtrip(build: fn(&Scratch) -> Case) {
    let s = Scratch::new();
    let id = SmimeId::generate(&s.work, "alice", &CertSpec::good(ALICE, KeyKind::Rsa));
    id.install_pem(&s.keys, ALICE);
    let case = build(&s);
    let run = run_encrypt(
        &case.input,
        &[ALICE],
        &s.keys,
        &["--method", "smime", "--protect-headers"],
    );
    run.assert_success(case.name);
    let der = check_smime_output(&case.input, &run.stdout, false);
    let plain =
        smime_decrypt(&s, &der, "DER", &id).unwrap_or_else(|e| panic!("{}: {e}", case.name));
    let want = common::expected_payload(&case.input);
    assert_bytes_eq(&plain, &want, case.name);
    let protected = want != expected_inner_entity(&case.input);
    let (out_fields, _) = common::split_message(&run.stdout);
    let (in_fields, _) = common::split_message(&case.input);
    if protected && in_fields.iter().any(|f| f.name == "subject") {
        assert!(
            out_fields
                .iter()
                .filter(|f| f.name == "subject")
                .all(|f| f.value() == "[...]"),
            "{}: Subject outside",
            case.name
        );
    }
}

/// One test per corpus message and method: S/MIME to an RSA certificate
/// with the default cipher, OpenPGP to a Cv25519 key.
macro_rules! corpus_matrix {
    ($($name:ident),* $(,)?) => {
        mod corpus_smime_rsa_cbc {
            use super::*;
            $( #[test] fn $name() { smime_roundtrip(corpus::$name, KeyKind::Rsa, None) } )*
        }
        mod corpus_openpgp_cv25519 {
            use super::*;
            $( #[test] fn $name() { pgp_roundtrip(corpus::$name, PgpKind::Cv25519) } )*
        }
        mod corpus_smime_protected {
            use super::*;
            $( #[test] fn $name() { smime_protected_roundtrip(corpus::$name) } )*
        }
    };
}

corpus_matrix!(
    plain_ascii,
    utf8_8bit,
    quoted_printable,
    multipart_alternative,
    multipart_mixed_attachment,
    nested_multipart,
    multipart_signed_smime,
    pkcs7_signed_data,
    multipart_signed_pgp,
    long_lines,
    lf_line_endings,
    crlf_line_endings,
    mixed_line_endings,
    latin1_8bit,
    empty_body,
    no_content_type,
    no_final_newline,
    odd_folding,
    repeated_content_fields,
);

/// The messages each further key type / cipher is checked on.
const KEY_MATRIX_CASES: [fn(&Scratch) -> Case; 4] = [
    corpus::multipart_mixed_attachment,
    corpus::crlf_line_endings,
    corpus::latin1_8bit,
    corpus::no_content_type,
];

fn smime_key_matrix(kind: KeyKind, cipher: &str) {
    let s = Scratch::new();
    let id = SmimeId::generate(&s.work, "alice", &CertSpec::good(ALICE, kind));
    id.install_pem(&s.keys, ALICE);
    for build in KEY_MATRIX_CASES {
        smime_check_case(&s, &id, ALICE, &build(&s), Some(cipher));
    }
}

#[test]
fn smime_rsa_aes_128_cbc() {
    smime_key_matrix(KeyKind::Rsa, "aes-128-cbc");
}

#[test]
fn smime_rsa_aes_256_gcm() {
    smime_key_matrix(KeyKind::Rsa, "aes-256-gcm");
}

#[test]
fn smime_ec_aes_256_cbc() {
    smime_key_matrix(KeyKind::Ec, "aes-256-cbc");
}

#[test]
fn smime_ec_aes_128_cbc() {
    smime_key_matrix(KeyKind::Ec, "aes-128-cbc");
}

#[test]
fn smime_ec_aes_256_gcm() {
    smime_key_matrix(KeyKind::Ec, "aes-256-gcm");
}

#[test]
fn openpgp_rsa3072() {
    let s = Scratch::new();
    let gpg = Gpg::new();
    let fpr = gpg.generate(ALICE, PgpKind::Rsa3072, "0", None);
    gpg.install(&fpr, &s.keys, ALICE, true);
    for build in KEY_MATRIX_CASES {
        pgp_check_case(&s, &gpg, ALICE, &build(&s));
    }
}

/// A 25 MiB binary attachment (about 34 MB of base64).
fn huge_attachment(_: &Scratch) -> Case {
    let mut msg = b"From: Sender <sender@example.net>
To: Alice <alice@example.org>
Subject: 25 MB attachment
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=huge

--huge
Content-Type: text/plain

See attachment.
--huge
Content-Type: application/octet-stream; name=big.bin
Content-Disposition: attachment; filename=big.bin
Content-Transfer-Encoding: base64

"
    .to_vec();
    msg.extend(base64_lines(
        &pseudo_random_bytes(25 * 1024 * 1024, 25),
        "\n",
    ));
    msg.extend_from_slice(b"--huge--\n");
    Case::plain("huge_attachment", msg)
}

#[test]
fn smime_25_mb_attachment() {
    smime_roundtrip(huge_attachment, KeyKind::Rsa, None);
}

#[test]
fn openpgp_25_mb_attachment() {
    pgp_roundtrip(huge_attachment, PgpKind::Cv25519);
}

// ---------------------------------------------------------------------------
// Key files, addresses, method choice, several recipients
// ---------------------------------------------------------------------------

/// DER `.crt` certificates and binary `.pgp` keys are read as well.
#[test]
fn der_certificate_and_binary_openpgp_key_files() {
    let s = Scratch::new();
    let id = SmimeId::generate(&s.work, "alice", &CertSpec::good(ALICE, KeyKind::Ec));
    id.install_der(&s.keys, ALICE);
    let case = corpus::plain_ascii(&s);
    smime_check_case(&s, &id, ALICE, &case, None);

    let s = Scratch::new();
    let gpg = Gpg::new();
    let fpr = gpg.generate(ALICE, PgpKind::Cv25519, "0", None);
    gpg.install(&fpr, &s.keys, ALICE, false);
    pgp_check_case(&s, &gpg, ALICE, &case);
}

/// The key file name has the local part as written and the domain in
/// lower case, whatever case the domain is given in.
#[test]
fn key_file_name_has_lower_case_domain() {
    let s = Scratch::new();
    let id = SmimeId::generate(
        &s.work,
        "alice",
        &CertSpec::good("Alice@example.org", KeyKind::Rsa),
    );
    id.install_pem(&s.keys, "Alice@example.org");
    let case = corpus::plain_ascii(&s);
    smime_check_case(&s, &id, "Alice@EXAMPLE.Org", &case, None);
}

/// Without `--method`, S/MIME is chosen when every recipient has a
/// certificate, even if OpenPGP keys exist too.
#[test]
fn method_defaults_to_smime_when_all_have_certificates() {
    let s = Scratch::new();
    let id = SmimeId::generate(&s.work, "alice", &CertSpec::good(ALICE, KeyKind::Rsa));
    id.install_pem(&s.keys, ALICE);
    let gpg = Gpg::new();
    let fpr = gpg.generate(ALICE, PgpKind::Cv25519, "0", None);
    gpg.install(&fpr, &s.keys, ALICE, true);

    let case = corpus::plain_ascii(&s);
    let run = run_encrypt(&case.input, &[ALICE], &s.keys, &[]);
    run.assert_success("no --method");
    check_smime_output(&case.input, &run.stdout, false);
    let dec = smime_decrypt(&s, &run.stdout, "SMIME", &id).unwrap();
    assert_bytes_eq(&dec, &expected_inner_entity(&case.input), "auto smime");

    // `--method openpgp` overrides the preference.
    let run = run_encrypt(&case.input, &[ALICE], &s.keys, &["--method", "openpgp"]);
    run.assert_success("--method openpgp");
    let armored = check_pgp_mime_output(&case.input, &run.stdout);
    let dec = gpg.decrypt(&armored).unwrap();
    assert_bytes_eq(&dec, &expected_inner_entity(&case.input), "forced openpgp");
}

/// Without `--method`, OpenPGP is chosen when one recipient has only an
/// OpenPGP key, and both recipients can decrypt.
#[test]
fn method_falls_back_to_openpgp_when_a_recipient_lacks_a_certificate() {
    let s = Scratch::new();
    let alice_cert = SmimeId::generate(&s.work, "alice", &CertSpec::good(ALICE, KeyKind::Rsa));
    alice_cert.install_pem(&s.keys, ALICE);
    let alice = Gpg::new();
    let alice_fpr = alice.generate(ALICE, PgpKind::Cv25519, "0", None);
    alice.install(&alice_fpr, &s.keys, ALICE, true);
    let bob = Gpg::new();
    let bob_fpr = bob.generate(BOB, PgpKind::Cv25519, "0", None);
    bob.install(&bob_fpr, &s.keys, BOB, true);

    let case = corpus::utf8_8bit(&s);
    let run = run_encrypt(&case.input, &[ALICE, BOB], &s.keys, &[]);
    run.assert_success("alice (both) + bob (OpenPGP only)");
    let armored = check_pgp_mime_output(&case.input, &run.stdout);
    let expected = expected_inner_entity(&case.input);
    assert_bytes_eq(&alice.decrypt(&armored).unwrap(), &expected, "alice");
    assert_bytes_eq(&bob.decrypt(&armored).unwrap(), &expected, "bob");
}

/// When no single method covers every recipient, nothing is written and
/// the exit status is 1.
#[test]
fn no_common_method_for_all_recipients_is_refused() {
    let s = Scratch::new();
    SmimeId::generate(&s.work, "alice", &CertSpec::good(ALICE, KeyKind::Rsa))
        .install_pem(&s.keys, ALICE);
    let bob = Gpg::new();
    let bob_fpr = bob.generate(BOB, PgpKind::Cv25519, "0", None);
    bob.install(&bob_fpr, &s.keys, BOB, true);

    let case = corpus::plain_ascii(&s);
    let run = run_encrypt(&case.input, &[ALICE, BOB], &s.keys, &[]);
    assert_eq!(
        run.status.code(),
        Some(1),
        "alice has only S/MIME, bob only OpenPGP; stderr: {}",
        run.stderr
    );
    let reason = run.stderr.trim_end();
    assert!(
        !reason.is_empty() && !reason.contains('\n'),
        "one-line reason expected: {reason}"
    );
    assert!(run.stdout.is_empty(), "nothing may be written on refusal");
}

/// Two S/MIME recipients (RSA and EC): each one's key alone decrypts; a
/// third key does not.
#[test]
fn two_smime_recipients_each_decrypt() {
    let s = Scratch::new();
    let alice = SmimeId::generate(&s.work, "alice", &CertSpec::good(ALICE, KeyKind::Rsa));
    alice.install_pem(&s.keys, ALICE);
    let bob = SmimeId::generate(&s.work, "bob", &CertSpec::good(BOB, KeyKind::Ec));
    bob.install_pem(&s.keys, BOB);
    let carol = SmimeId::generate(&s.work, "carol", &CertSpec::good(CAROL, KeyKind::Rsa));

    for cipher in ["aes-256-cbc", "aes-256-gcm"] {
        let case = corpus::multipart_alternative(&s);
        let run = run_encrypt(
            &case.input,
            &[ALICE, BOB],
            &s.keys,
            &["--method", "smime", "--cipher", cipher],
        );
        run.assert_success(cipher);
        check_smime_output(&case.input, &run.stdout, cipher == "aes-256-gcm");
        let expected = expected_inner_entity(&case.input);
        for (who, id) in [("alice", &alice), ("bob", &bob)] {
            let dec = smime_decrypt(&s, &run.stdout, "SMIME", id)
                .unwrap_or_else(|e| panic!("{who} ({cipher}): {e}"));
            assert_bytes_eq(&dec, &expected, &format!("{who} ({cipher})"));
        }
        assert!(
            smime_decrypt(&s, &run.stdout, "SMIME", &carol).is_err(),
            "a non-recipient's key must not decrypt ({cipher})"
        );
    }
}

/// Two OpenPGP recipients (Cv25519 and RSA 3072), each with only their own
/// secret key: each decrypts; a third key does not.
#[test]
fn two_openpgp_recipients_each_decrypt() {
    let s = Scratch::new();
    let alice = Gpg::new();
    let alice_fpr = alice.generate(ALICE, PgpKind::Cv25519, "0", None);
    alice.install(&alice_fpr, &s.keys, ALICE, true);
    let bob = Gpg::new();
    let bob_fpr = bob.generate(BOB, PgpKind::Rsa3072, "0", None);
    bob.install(&bob_fpr, &s.keys, BOB, true);
    let carol = Gpg::new();
    carol.generate(CAROL, PgpKind::Cv25519, "0", None);

    let case = corpus::multipart_mixed_attachment(&s);
    let run = run_encrypt(
        &case.input,
        &[ALICE, BOB],
        &s.keys,
        &["--method", "openpgp"],
    );
    run.assert_success("alice + bob");
    let armored = check_pgp_mime_output(&case.input, &run.stdout);
    let expected = expected_inner_entity(&case.input);
    assert_bytes_eq(&alice.decrypt(&armored).unwrap(), &expected, "alice");
    assert_bytes_eq(&bob.decrypt(&armored).unwrap(), &expected, "bob");
    assert!(
        carol.decrypt(&armored).is_err(),
        "a non-recipient's key must not decrypt"
    );
}

// ---------------------------------------------------------------------------
// Refused keys
// ---------------------------------------------------------------------------

/// Runs encrypt for ALICE with `--method` and expects a refusal.
fn assert_alice_refused(s: &Scratch, method: &str, phrase: &str) {
    let case = corpus::plain_ascii(s);
    run_encrypt(&case.input, &[ALICE], &s.keys, &["--method", method])
        .assert_refused(ALICE, phrase);
}

fn refuse_smime(spec: CertSpec, phrase: &str) {
    let s = Scratch::new();
    SmimeId::generate(&s.work, "alice", &spec).install_pem(&s.keys, ALICE);
    assert_alice_refused(&s, "smime", phrase);
}

#[test]
fn smime_refuses_expired_certificate() {
    refuse_smime(
        CertSpec {
            not_before: -2 * 365 * 86_400,
            not_after: -365 * 86_400,
            ..CertSpec::good(ALICE, KeyKind::Rsa)
        },
        "expired",
    );
}

#[test]
fn smime_refuses_not_yet_valid_certificate() {
    refuse_smime(
        CertSpec {
            not_before: 365 * 86_400,
            not_after: 2 * 365 * 86_400,
            ..CertSpec::good(ALICE, KeyKind::Rsa)
        },
        "not yet valid",
    );
}

#[test]
fn smime_refuses_certificate_for_another_address() {
    refuse_smime(CertSpec::good(BOB, KeyKind::Rsa), "not issued for");
}

#[test]
fn smime_refuses_server_auth_only_certificate() {
    refuse_smime(
        CertSpec {
            eku: Eku::ServerAuthOnly,
            ..CertSpec::good(ALICE, KeyKind::Rsa)
        },
        "extended key usage lacks emailProtection",
    );
}

#[test]
fn smime_refuses_rsa_certificate_without_key_encipherment() {
    refuse_smime(
        CertSpec {
            key_usage: Ku::SignatureOnly,
            ..CertSpec::good(ALICE, KeyKind::Rsa)
        },
        "key usage does not allow encryption",
    );
}

#[test]
fn openpgp_refuses_expired_key() {
    let s = Scratch::new();
    let gpg = Gpg::new();
    let fpr = gpg.generate(ALICE, PgpKind::Cv25519, "1y", Some("20200101T000000!"));
    gpg.install(&fpr, &s.keys, ALICE, true);
    assert_alice_refused(&s, "openpgp", "expired");
}

#[test]
fn openpgp_refuses_sign_only_key() {
    let s = Scratch::new();
    let gpg = Gpg::new();
    let fpr = gpg.generate_sign_only(ALICE);
    gpg.install(&fpr, &s.keys, ALICE, true);
    assert_alice_refused(&s, "openpgp", "no usable encryption-capable");
}

#[test]
fn openpgp_refuses_revoked_key() {
    let s = Scratch::new();
    let gpg = Gpg::new();
    let fpr = gpg.generate(ALICE, PgpKind::Cv25519, "0", None);
    gpg.revoke(&fpr);
    gpg.install(&fpr, &s.keys, ALICE, true);
    assert_alice_refused(&s, "openpgp", "revoked");
}

#[test]
fn openpgp_refuses_key_for_another_address() {
    let s = Scratch::new();
    let gpg = Gpg::new();
    let fpr = gpg.generate(BOB, PgpKind::Cv25519, "0", None);
    gpg.install(&fpr, &s.keys, ALICE, true);
    assert_alice_refused(&s, "openpgp", "not issued for");
}

#[test]
fn missing_key_file_is_refused() {
    let s = Scratch::new();
    let case = corpus::plain_ascii(&s);
    run_encrypt(&case.input, &[ALICE], &s.keys, &[]).assert_refused(ALICE, "no key");
}

/// One good and one refused recipient: the whole message is refused and
/// the reason names the refused one.
#[test]
fn one_refused_recipient_refuses_the_message() {
    let s = Scratch::new();
    SmimeId::generate(&s.work, "alice", &CertSpec::good(ALICE, KeyKind::Rsa))
        .install_pem(&s.keys, ALICE);
    SmimeId::generate(
        &s.work,
        "bob",
        &CertSpec {
            not_before: -2 * 365 * 86_400,
            not_after: -365 * 86_400,
            ..CertSpec::good(BOB, KeyKind::Ec)
        },
    )
    .install_pem(&s.keys, BOB);
    let case = corpus::plain_ascii(&s);
    run_encrypt(&case.input, &[ALICE, BOB], &s.keys, &["--method", "smime"])
        .assert_refused(BOB, "expired");
}

// ---------------------------------------------------------------------------
// Already encrypted: passed through untouched
// ---------------------------------------------------------------------------

/// A recipient with a valid certificate and OpenPGP key, so that only the
/// classification decides between passing through and encrypting.
struct PassThroughSetup {
    s: Scratch,
    cert: SmimeId,
    gpg: Gpg,
    fpr: String,
}

impl PassThroughSetup {
    fn new() -> Self {
        let s = Scratch::new();
        let cert = SmimeId::generate(&s.work, "alice", &CertSpec::good(ALICE, KeyKind::Rsa));
        cert.install_pem(&s.keys, ALICE);
        let gpg = Gpg::new();
        let fpr = gpg.generate(ALICE, PgpKind::Cv25519, "0", None);
        gpg.install(&fpr, &s.keys, ALICE, true);
        PassThroughSetup { s, cert, gpg, fpr }
    }

    fn assert_passed_through(&self, what: &str, input: &[u8]) {
        for method in [None, Some("smime"), Some("openpgp")] {
            let extra: Vec<&str> = method.map(|m| vec!["--method", m]).unwrap_or_default();
            let run = run_encrypt(input, &[ALICE], &self.s.keys, &extra);
            run.assert_success(what);
            assert!(
                run.stdout == input,
                "{what} ({method:?}): already encrypted input must be copied byte-identical \
                 ({} bytes in, {} out)\nout: {}",
                input.len(),
                run.stdout.len(),
                escape(&run.stdout, 400)
            );
            assert!(
                run.stderr.to_lowercase().contains("already encrypted"),
                "{what} ({method:?}): stderr must note \"already encrypted\": {:?}",
                run.stderr
            );
        }
    }
}

const PT_HEADERS: &str = "\
From: Sender <sender@example.net>
To: Alice <alice@example.org>
Subject: Already encrypted
Date: Sat, 22 Nov 2025 06:00:00 +0000
Message-ID: <already@example.net>
";

const SECRET_ENTITY: &[u8] = b"Content-Type: text/plain\r\n\r\nsecret\r\n";

/// `openssl cms -encrypt` output under the routing headers.
fn smime_tool_message(p: &PassThroughSetup, cipher: &str) -> Vec<u8> {
    let mut msg = PT_HEADERS.as_bytes().to_vec();
    msg.extend(smime_encrypt_tool(&p.s, SECRET_ENTITY, &p.cert, cipher));
    msg
}

fn replace(haystack: &[u8], from: &str, to: &str) -> Vec<u8> {
    let i = find(haystack, from.as_bytes()).unwrap_or_else(|| panic!("{from:?} not in fixture"));
    let mut out = haystack[..i].to_vec();
    out.extend_from_slice(to.as_bytes());
    out.extend_from_slice(&haystack[i + from.len()..]);
    out
}

#[test]
fn passes_through_smime_enveloped_data() {
    let p = PassThroughSetup::new();
    let msg = smime_tool_message(&p, "aes-256-cbc");
    p.assert_passed_through("pkcs7-mime enveloped-data", &msg);
    p.assert_passed_through("pkcs7-mime enveloped-data, CRLF", &to_crlf(&msg));
}

#[test]
fn passes_through_x_pkcs7_mime_auth_enveloped_data() {
    let p = PassThroughSetup::new();
    let msg = smime_tool_message(&p, "aes-256-gcm");
    let msg = replace(&msg, "application/pkcs7-mime", "application/x-pkcs7-mime");
    assert!(find(&msg, b"smime-type=authEnveloped-data").is_some());
    p.assert_passed_through("x-pkcs7-mime authEnveloped-data", &msg);
}

#[test]
fn passes_through_pkcs7_mime_without_smime_type() {
    let p = PassThroughSetup::new();
    let msg = smime_tool_message(&p, "aes-128-cbc");
    let msg = replace(&msg, "; smime-type=enveloped-data", "");
    let msg = replace(&msg, "; name=\"smime.p7m\"", "");
    let msg = replace(
        &msg,
        "Content-Disposition: attachment; filename=\"smime.p7m\"\n",
        "",
    );
    p.assert_passed_through("pkcs7-mime, no smime-type, EnvelopedData", &msg);
}

#[test]
fn passes_through_octet_stream_p7m() {
    let p = PassThroughSetup::new();
    let tool = smime_encrypt_tool(&p.s, SECRET_ENTITY, &p.cert, "aes-256-cbc");
    let (_, body) = split_message(&tool);
    let b64: String = String::from_utf8_lossy(body).split_whitespace().collect();
    let der = openssl::base64::decode_block(&b64).unwrap();
    let mut msg = PT_HEADERS.as_bytes().to_vec();
    msg.extend_from_slice(
        b"MIME-Version: 1.0
Content-Type: application/octet-stream; name=\"message.p7m\"
Content-Transfer-Encoding: base64
Content-Disposition: attachment; filename=\"message.p7m\"

",
    );
    msg.extend(base64_lines(&der, "\n"));
    p.assert_passed_through("application/octet-stream *.p7m", &msg);
}

#[test]
fn passes_through_pgp_mime() {
    let p = PassThroughSetup::new();
    let armored = p.gpg.encrypt_armored(SECRET_ENTITY, &p.fpr);
    let mut msg = PT_HEADERS.as_bytes().to_vec();
    msg.extend_from_slice(
        b"MIME-Version: 1.0
Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\";
 boundary=\"pgp-enc\"

This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)
--pgp-enc
Content-Type: application/pgp-encrypted
Content-Description: PGP/MIME version identification

Version: 1

--pgp-enc
Content-Type: application/octet-stream; name=\"encrypted.asc\"
Content-Description: OpenPGP encrypted message
Content-Disposition: inline; filename=\"encrypted.asc\"

",
    );
    msg.extend_from_slice(&armored);
    msg.extend_from_slice(b"\n--pgp-enc--\n");
    p.assert_passed_through("PGP/MIME", &msg);
    p.assert_passed_through("PGP/MIME, CRLF", &to_crlf(&msg));
}

#[test]
fn passes_through_inline_pgp_text_plain() {
    let p = PassThroughSetup::new();
    let armored = p.gpg.encrypt_armored(b"secret text\n", &p.fpr);
    let mut msg = PT_HEADERS.as_bytes().to_vec();
    msg.extend_from_slice(
        b"MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii
Content-Transfer-Encoding: 7bit

",
    );
    msg.extend_from_slice(&armored);
    p.assert_passed_through("inline PGP, text/plain", &msg);
}

/// Inline PGP as the first part of a multipart/mixed is not the whole
/// message (the attachment is plaintext): it gets encrypted (issue 9.1).
#[test]
fn inline_pgp_in_first_part_of_multipart_is_encrypted() {
    let p = PassThroughSetup::new();
    let armored = p.gpg.encrypt_armored(b"secret text\n", &p.fpr);
    let mut msg = PT_HEADERS.as_bytes().to_vec();
    msg.extend_from_slice(
        b"MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=\"inl\"

--inl
Content-Type: text/plain; charset=us-ascii

",
    );
    msg.extend_from_slice(&armored);
    msg.extend_from_slice(
        b"
--inl
Content-Type: application/octet-stream; name=\"file.pgp\"
Content-Transfer-Encoding: base64

AAECAwQFBgc=
--inl--
",
    );
    let case = Case::plain("inline PGP, first part of multipart/mixed", msg);
    pgp_check_case(&p.s, &p.gpg, ALICE, &case);
    smime_check_case(&p.s, &p.cert, ALICE, &case, None);
}

/// A PGP block quoted in the middle of a text is not an encrypted message:
/// it gets encrypted (and decrypts to the expected entity).
#[test]
fn pgp_block_not_at_start_is_encrypted() {
    let p = PassThroughSetup::new();
    let armored = p.gpg.encrypt_armored(b"secret text\n", &p.fpr);
    let mut msg = PT_HEADERS.as_bytes().to_vec();
    msg.extend_from_slice(b"Content-Type: text/plain\n\nYou sent me this, I cannot read it:\n\n");
    msg.extend_from_slice(&armored);
    let case = Case::plain("quoted PGP block", msg);
    pgp_check_case(&p.s, &p.gpg, ALICE, &case);
    smime_check_case(&p.s, &p.cert, ALICE, &case, None);
}

/// application/pkcs7-mime with no smime-type whose CMS content is
/// SignedData is only signed: it gets encrypted, and still verifies.
#[test]
fn pkcs7_mime_without_smime_type_signed_data_is_encrypted() {
    let p = PassThroughSetup::new();
    let signer = SmimeId::generate(
        &p.s.work,
        "signer",
        &CertSpec::good("sender@example.net", KeyKind::Rsa),
    );
    let signed = smime_sign_tool(&p.s, SECRET_ENTITY, &signer, false);
    let signed = replace(&signed, "; smime-type=signed-data", "");
    let signed = replace(&signed, "; name=\"smime.p7m\"", "");
    let signed = replace(
        &signed,
        "Content-Disposition: attachment; filename=\"smime.p7m\"\n",
        "",
    );
    let mut msg = PT_HEADERS.as_bytes().to_vec();
    msg.extend(to_lf(&signed));
    let case = Case {
        name: "pkcs7-mime signed-data without smime-type",
        input: msg,
        signed: SignedCheck::Smime,
    };
    smime_check_case(&p.s, &p.cert, ALICE, &case, None);
}

// ---------------------------------------------------------------------------
// Self-checks of the helpers (independent of the binary)
// ---------------------------------------------------------------------------

/// The expected-entity model on a hand-checked example.
#[test]
fn helper_expected_inner_entity() {
    let input = b"From: a@b\ncontent-type: text/plain;\n charset=utf-8\nSubject: x\n\
Content-Transfer-Encoding: 8bit\n\nline1\nline2\r\n";
    assert_eq!(
        expected_inner_entity(input),
        b"content-type: text/plain;\r\n charset=utf-8\r\n\
Content-Transfer-Encoding: 8bit\r\n\r\nline1\r\nline2\r\n"
            .to_vec()
    );
    assert_eq!(
        expected_inner_entity(b"From: a@b\n\nbody"),
        b"\r\nbody".to_vec()
    );
    assert_eq!(expected_inner_entity(b"From: a@b\n\n"), b"\r\n".to_vec());
}

/// The decryption helpers and the output checks accept what the reference
/// tools produce, and the header check rejects a changed field.
#[test]
fn helper_reference_tools_round_trip() {
    let s = Scratch::new();
    for kind in [KeyKind::Rsa, KeyKind::Ec] {
        let id = SmimeId::generate(&s.work, "alice", &CertSpec::good(ALICE, kind));
        for cipher in ["aes-256-cbc", "aes-256-gcm"] {
            let out = smime_encrypt_tool(&s, SECRET_ENTITY, &id, cipher);
            let dec = smime_decrypt(&s, &out, "SMIME", &id).unwrap();
            assert_bytes_eq(&dec, SECRET_ENTITY, "openssl round trip");
            let (_, body) = split_message(&out);
            let b64: String = String::from_utf8_lossy(body).split_whitespace().collect();
            let der = openssl::base64::decode_block(&b64).unwrap();
            assert_eq!(cms_content_cipher(&s, &der), cipher);
        }
    }

    // A message as the binary should produce it, built from tool output.
    let id = SmimeId::generate(&s.work, "alice", &CertSpec::good(ALICE, KeyKind::Rsa));
    let input = corpus::plain_ascii(&s).input;
    let inner = expected_inner_entity(&input);
    let tool = smime_encrypt_tool(&s, &inner, &id, "aes-256-cbc");
    let (tool_fields, tool_body) = split_message(&tool);
    let (in_fields, _) = split_message(&input);
    let mut out = Vec::new();
    for f in &in_fields {
        match f.name.as_str() {
            "content-type" => out.extend_from_slice(
                b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=\"smime.p7m\"\n",
            ),
            "content-transfer-encoding" => out.extend_from_slice(b"Content-Transfer-Encoding: base64\n"),
            _ => out.extend_from_slice(&f.raw),
        }
    }
    let cd = tool_fields
        .iter()
        .find(|f| f.name == "content-disposition")
        .unwrap();
    out.extend_from_slice(&cd.raw);
    out.push(b'\n');
    out.extend_from_slice(tool_body);
    let der = check_smime_output(&input, &out, false);
    assert_bytes_eq(
        &smime_decrypt(&s, &der, "DER", &id).unwrap(),
        &inner,
        "model",
    );

    // Changing a kept field must be caught.
    let tampered = replace(&out, "Subject: Plain ASCII", "Subject: Plain ASCIi");
    let caught = std::panic::catch_unwind(|| check_smime_output(&input, &tampered, false));
    assert!(
        caught.is_err(),
        "header check must reject a changed Subject"
    );

    // gpg: encrypt, decrypt, SEIPD v1 check; detached signatures.
    let gpg = Gpg::new();
    let fpr = gpg.generate(ALICE, PgpKind::Cv25519, "0", None);
    let armored = gpg.encrypt_armored(&inner, &fpr);
    assert_bytes_eq(&gpg.decrypt(&armored).unwrap(), &inner, "gpg round trip");
    let sig = gpg.detach_sign(&inner, &fpr);
    gpg.verify_detached(&sig, &inner).unwrap();
    assert!(gpg.verify_detached(&sig, b"other").is_err());
}

/// The gpg key variants used by the refusal tests really are what they
/// claim (expired, sign-only, revoked), as gpg itself sees them.
#[test]
fn helper_gpg_edge_keys() {
    let gpg = Gpg::new();
    let expired = gpg.generate(ALICE, PgpKind::Cv25519, "1y", Some("20200101T000000!"));
    let sign_only = gpg.generate_sign_only(BOB);
    let revoked = gpg.generate(CAROL, PgpKind::Cv25519, "0", None);
    gpg.revoke(&revoked);
    let out = gpg
        .cmd()
        .args(["--with-colons", "--list-keys"])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    let validity = |fpr: &str| -> (String, String) {
        // The "pub" line before the key's "fpr" line: validity and
        // capabilities fields.
        let lines: Vec<&str> = listing.lines().collect();
        let i = lines
            .iter()
            .position(|l| l.starts_with("fpr:") && l.contains(fpr))
            .unwrap();
        let f: Vec<&str> = lines[i - 1].split(':').collect();
        (f[1].to_owned(), f[11].to_owned())
    };
    assert_eq!(validity(&expired).0, "e", "expired key");
    assert!(
        !validity(&sign_only).1.contains('E'),
        "sign-only key has no E capability"
    );
    assert_eq!(validity(&revoked).0, "r", "revoked key");
}

/// The signed corpus messages verify in their canonical (inner entity)
/// form, so a verification failure after decryption is the binary's fault.
#[test]
fn helper_signed_corpus_verifies_before_encryption() {
    let s = Scratch::new();
    for build in [
        corpus::multipart_signed_smime,
        corpus::pkcs7_signed_data,
        corpus::multipart_signed_pgp,
    ] {
        let case = build(&s);
        let inner = expected_inner_entity(&case.input);
        check_signature(&s, &case, &inner);
        let tampered = if find(&inner, b"Signed text").is_some() {
            replace(&inner, "Signed text", "Signed texT")
        } else {
            // signed-data: the content is inside the base64 body; alter one
            // base64 character in the middle of it.
            let mut t = inner.clone();
            let mut i = inner.len() / 2;
            while !t[i].is_ascii_alphanumeric() {
                i += 1;
            }
            t[i] = if t[i] == b'A' { b'B' } else { b'A' };
            t
        };
        let caught = std::panic::catch_unwind(|| check_signature(&s, &case, &tampered));
        assert!(
            caught.is_err(),
            "{}: tampered content must not verify",
            case.name
        );
    }
}

/// The PGP/MIME check accepts a hand-built RFC 3156 message around gpg
/// output and hands back an armored message gpg decrypts.
#[test]
fn helper_pgp_mime_check() {
    let s = Scratch::new();
    let gpg = Gpg::new();
    let fpr = gpg.generate(ALICE, PgpKind::Cv25519, "0", None);
    let input = corpus::plain_ascii(&s).input;
    let inner = expected_inner_entity(&input);
    let (fields, _) = split_message(&input);
    let mut out = Vec::new();
    for f in &fields {
        match f.name.as_str() {
            "content-type" => out.extend_from_slice(
                b"Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\";\n boundary=\"b\"\n",
            ),
            "content-transfer-encoding" => {}
            _ => out.extend_from_slice(&f.raw),
        }
    }
    out.extend_from_slice(
        b"\n--b\nContent-Type: application/pgp-encrypted\n\nVersion: 1\n\n--b\n\
Content-Type: application/octet-stream; name=\"encrypted.asc\"\n\n",
    );
    out.extend(gpg.encrypt_armored(&inner, &fpr));
    out.extend_from_slice(b"\n--b--\n");
    let armored = check_pgp_mime_output(&input, &out);
    assert_bytes_eq(&gpg.decrypt(&armored).unwrap(), &inner, "PGP/MIME model");
}
