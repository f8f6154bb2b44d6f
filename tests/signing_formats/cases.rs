//! The entities `signing_formats` signs: each with the content its
//! leaves must decode to.

/// An entity to sign and the content of each of its leaves.
pub struct Case {
    pub name: &'static str,
    pub entity: Vec<u8>,
    pub leaves: Vec<Vec<u8>>,
}

fn attachment() -> Vec<u8> {
    // Every octet value, in a scrambled order (xorshift), 3000 of them.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    (0..3000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[3]
        })
        .collect()
}

pub fn cases() -> Vec<Case> {
    let text8 = "Gr\u{fc}\u{df}e aus K\u{f6}ln, \r\nFrom the team\t\r\n= sign\r\n";
    let data = attachment();
    let mut mixed = b"Content-Type: multipart/mixed; boundary=\"mix\"\r\n\r\n\
        This is a multi-part message in MIME format.\r\n--mix\r\n\
        Content-Type: text/plain; charset=us-ascii\r\n\r\nSee the attachment.\r\n--mix\r\n\
        Content-Type: application/octet-stream\r\n\
        Content-Disposition: attachment; filename=\"data.bin\"\r\n\r\n"
        .to_vec();
    mixed.extend_from_slice(&data);
    mixed.extend_from_slice(b"\r\n--mix--\r\n");
    vec![
        Case {
            name: "plain 7-bit",
            entity: b"Content-Type: text/plain; charset=us-ascii\r\n\
                Content-Transfer-Encoding: 7bit\r\n\r\nHello,\r\n\r\nthis is plain text.\r\n"
                .to_vec(),
            leaves: vec![b"Hello,\r\n\r\nthis is plain text.\r\n".to_vec()],
        },
        Case {
            name: "8-bit text, trailing white space, From line",
            entity: format!(
                "Content-Type: text/plain; charset=utf-8\r\n\
                 Content-Transfer-Encoding: 8bit\r\n\r\n{text8}"
            )
            .into_bytes(),
            leaves: vec![text8.as_bytes().to_vec()],
        },
        Case {
            name: "multipart/mixed with a binary attachment",
            entity: mixed,
            leaves: vec![b"See the attachment.".to_vec(), data],
        },
        Case {
            name: "multipart/alternative",
            entity: "Content-Type: multipart/alternative; boundary=alt\r\n\r\n--alt\r\n\
                Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
                Caf\u{e9} cr\u{e8}me\r\n--alt\r\nContent-Type: text/html\r\n\r\n\
                <p>Caf&eacute;</p>\r\n--alt--\r\n"
                .as_bytes()
                .to_vec(),
            leaves: vec![
                "Caf\u{e9} cr\u{e8}me".as_bytes().to_vec(),
                b"<p>Caf&eacute;</p>".to_vec(),
            ],
        },
        Case {
            name: "message/rfc822 with an 8-bit body",
            entity: "Content-Type: multipart/mixed; boundary=fwd\r\n\r\n--fwd\r\n\
                Content-Type: text/plain\r\n\r\nForwarded message below.\r\n--fwd\r\n\
                Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
                From: Carol <carol@example.org>\r\nSubject: hello\r\n\
                Content-Type: text/plain; charset=utf-8\r\n\r\nGr\u{fc}\u{df} dich\r\n\
                \r\n--fwd--\r\n"
                .as_bytes()
                .to_vec(),
            leaves: vec![
                b"Forwarded message below.".to_vec(),
                "Gr\u{fc}\u{df} dich\r\n".as_bytes().to_vec(),
            ],
        },
        Case {
            name: "RFC 9788 protected header",
            entity: "Subject: Geheim\r\nFrom: Alice <alice@example.org>\r\n\
                To: Bob <bob@example.net>\r\n\
                Content-Type: text/plain; charset=utf-8; hp=\"cipher\"\r\n\r\n\
                s\u{e9}cret\r\n"
                .as_bytes()
                .to_vec(),
            leaves: vec!["s\u{e9}cret\r\n".as_bytes().to_vec()],
        },
    ]
}
