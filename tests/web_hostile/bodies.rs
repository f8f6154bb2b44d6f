//! Bodies: endless, dripping, mis-framed, cut; header floods; what is
//! not HTTP or not TLS.

use super::*;

// ---------------------------------------------------------------------------
// 1. Endless bodies.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_chunked_body_fails_at_the_size_limit_not_the_timeout() {
    let pki = Pki::new();
    let written = Arc::new(AtomicUsize::new(0));
    let w = Arc::clone(&written);
    let server = Server::https(&identity(&pki), 443, move |_, mut s: Stream| {
        let w = Arc::clone(&w);
        async move {
            let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
            if s.write_all(head).await.is_err() {
                return;
            }
            let chunk = [b'x'; 4096];
            loop {
                let frame = [b"1000\r\n".as_slice(), &chunk, b"\r\n"].concat();
                if s.write_all(&frame).await.is_err() {
                    return;
                }
                w.fetch_add(chunk.len(), Ordering::SeqCst);
            }
        }
    });
    let rig = Rig::wkd_at(&pki, server.ip());
    let (lookup, took) = timed(rig.lookup(ALICE)).await;
    assert_failed(&lookup, &["exceeds wkd.max_response_bytes (65536)"]);
    assert!(
        took < TIMEOUT,
        "stopped at the limit, not the timeout ({took:?})"
    );
    // The client stopped reading at the limit: the server could write no
    // more than the limit plus what socket buffers hold.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let w = written.load(Ordering::SeqCst);
    assert!(w < 16 * 1_048_576, "the server wrote {w} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_dripping_a_byte_every_100_ms_fails_at_the_timeout() {
    let pki = Pki::new();
    let server = Server::https(&identity(&pki), 443, |_, mut s: Stream| async move {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await;
        loop {
            if s.write_all(b"1\r\nx\r\n").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let rig = Rig::wkd_at(&pki, server.ip());
    let (lookup, took) = timed(rig.lookup(ALICE)).await;
    assert!(
        matches!(lookup, Lookup::Failed(FailReason::Timeout)),
        "{lookup:?}"
    );
    assert!(
        took >= TIMEOUT && took < TIMEOUT + Duration::from_millis(500),
        "ended after {took:?}"
    );
}

// ---------------------------------------------------------------------------
// 2. Content-Length.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_length_above_the_limit_fails_before_any_body() {
    let pki = Pki::new();
    let server = Server::https(&identity(&pki), 443, |_, mut s: Stream| async move {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10485760\r\n\r\nsmall")
            .await;
        // And then nothing: the client must not wait for the rest.
        tokio::time::sleep(Duration::from_secs(10)).await;
    });
    let rig = Rig::wkd_at(&pki, server.ip());
    let (lookup, took) = timed(rig.lookup(ALICE)).await;
    assert_failed(
        &lookup,
        &["a body of 10485760 bytes", "wkd.max_response_bytes"],
    );
    assert!(took < TIMEOUT / 2, "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_beyond_the_declared_length_are_not_part_of_the_body() {
    let pki = Pki::new();
    let key = alice_key();
    let mut bytes =
        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", key.len()).into_bytes();
    bytes.extend_from_slice(&key);
    bytes.extend_from_slice(b"<html>trailing junk, not a key</html>");
    let server = raw_server(&identity(&pki), bytes);
    let rig = Rig::wkd_at(&pki, server.ip());
    assert_eq!(assert_found(&rig.lookup(ALICE).await), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_length_cutting_a_key_short_is_a_failure() {
    let pki = Pki::new();
    let key = alice_key();
    let mut bytes = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
        key.len() / 2 + 3
    )
    .into_bytes();
    bytes.extend_from_slice(&key);
    let server = raw_server(&identity(&pki), bytes);
    let rig = Rig::wkd_at(&pki, server.ip());
    assert_failed(&rig.lookup(ALICE).await, &["not an OpenPGP key"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_shorter_than_declared_is_a_failure() {
    let pki = Pki::new();
    let key = alice_key();
    let mut bytes = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
        key.len() + 100
    )
    .into_bytes();
    bytes.extend_from_slice(&key);
    let server = raw_server(&identity(&pki), bytes);
    let rig = Rig::wkd_at(&pki, server.ip());
    assert_failed(&rig.lookup(ALICE).await, &["reading the body"]);
}

/// HTTP/1.1 allows a body that ends where the connection does, but its
/// end cannot be told from a cut (see the next cases): refused, even
/// closed with a proper close_notify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_framed_only_by_the_close_is_a_failure() {
    let pki = Pki::new();
    let mut bytes = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
    bytes.extend_from_slice(&alice_key());
    let server = raw_server(&identity(&pki), bytes);
    let rig = Rig::wkd_at(&pki, server.ip());
    assert_failed(
        &rig.lookup(ALICE).await,
        &["neither Content-Length nor chunked"],
    );
    // Framings that look declared but that hyper reads to the close: a
    // Transfer-Encoding other than chunked overrides Content-Length, and
    // the last Transfer-Encoding decides.
    let key = alice_key();
    for head in [
        format!(
            "Content-Length: {}\r\nTransfer-Encoding: identity\r\n",
            key.len()
        ),
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n".to_owned(),
        "Transfer-Encoding: xchunked\r\n".to_owned(),
    ] {
        let mut bytes = format!("HTTP/1.1 200 OK\r\nConnection: close\r\n{head}\r\n").into_bytes();
        bytes.extend_from_slice(&key);
        let server = raw_server(&identity(&pki), bytes);
        let rig = Rig::wkd_at(&pki, server.ip());
        assert_failed(
            &rig.lookup(ALICE).await,
            &["neither Content-Length nor chunked"],
        );
    }
}

/// Alice's key as `gpg --export` orders it — primary key, user ID, its
/// self-signature, the encryption subkey, its binding and, appended when
/// it was revoked, the subkey's revocation — and where the revocation
/// starts.
fn key_with_a_revoked_subkey_in_gpg_order() -> (Vec<u8>, usize) {
    use sequoia_openpgp::cert::SubkeyRevocationBuilder;
    use sequoia_openpgp::serialize::Serialize;
    use sequoia_openpgp::types::ReasonForRevocation;
    let (alice, _) = CertBuilder::new()
        .add_userid(ALICE)
        .add_transport_encryption_subkey()
        .generate()
        .unwrap();
    let mut signer = alice
        .primary_key()
        .key()
        .clone()
        .parts_into_secret()
        .unwrap()
        .into_keypair()
        .unwrap();
    let sub = alice.keys().subkeys().next().unwrap();
    let revocation = SubkeyRevocationBuilder::new()
        .set_reason_for_revocation(ReasonForRevocation::KeyCompromised, b"leaked")
        .unwrap()
        .build(&mut signer, &alice, sub.key(), None)
        .unwrap();
    let uid = alice.userids().next().unwrap();
    let packets: Vec<Packet> = vec![
        alice.primary_key().key().clone().parts_into_public().into(),
        uid.userid().clone().into(),
        uid.self_signatures().next().unwrap().clone().into(),
        sub.key().clone().parts_into_public().into(),
        sub.self_signatures().next().unwrap().clone().into(),
    ];
    let mut bytes = Vec::new();
    for p in packets {
        p.serialize(&mut bytes).unwrap();
    }
    let cut = bytes.len();
    Packet::from(revocation).serialize(&mut bytes).unwrap();
    (bytes, cut)
}

/// The key with its subkey revocation, whole (with a length, or chunked):
/// no key to encrypt to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subkey_revocation_at_the_end_of_the_body_is_honoured() {
    let pki = Pki::new();
    let (key, _) = key_with_a_revoked_subkey_in_gpg_order();
    for framing in ["length", "chunked"] {
        let key = key.clone();
        let server = Server::https(&identity(&pki), 443, move |_, s: Stream| {
            let key = key.clone();
            async move {
                if framing == "length" {
                    reply(s, "200 OK", &[], &key).await;
                } else {
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
                        key.len()
                    );
                    raw(s, &[head.as_bytes(), &key, b"\r\n0\r\n\r\n"].concat()).await;
                }
            }
        });
        let rig = Rig::wkd_at(&pki, server.ip());
        match rig.resolve(ALICE).await {
            KeyOutcome::Found {
                usable, rejected, ..
            } => {
                assert!(usable.is_empty(), "{framing}");
                assert_eq!(
                    rejected[0].reason,
                    RejectReason::NoEncryptionKey,
                    "{framing}"
                );
            }
            other => panic!("{framing}: {other:?}"),
        }
    }
}

/// A body that ends only where the connection does, cut by a TCP FIN
/// without TLS close_notify — what an on-path attacker can inject — just
/// before the subkey revocation: the revoked subkey must not become
/// usable. (A lying Content-Length or a missing last chunk is caught by
/// hyper; a close-delimited body is not.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fin_without_close_notify_cannot_cut_off_a_revocation() {
    let pki = Pki::new();
    let (key, cut) = key_with_a_revoked_subkey_in_gpg_order();
    let server = Server::https(&identity(&pki), 443, move |_, mut s: Stream| {
        let key = key.clone();
        async move {
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
                .await;
            let _ = s.write_all(&key[..cut]).await;
            let _ = s.flush().await;
            // FIN on the TCP stream, no TLS close_notify.
            let _ = s.get_mut().shutdown().await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let rig = Rig::wkd_at(&pki, server.ip());
    match rig.resolve(ALICE).await {
        KeyOutcome::Failed(why) => assert!(why.to_string().contains(HOST), "{why}"),
        KeyOutcome::Found { usable, .. } => panic!(
            "a cut body was taken whole: {} usable key(s), its revoked subkey among them",
            usable.len()
        ),
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------
// 4. Header floods.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_headers_are_a_failure() {
    let pki = Pki::new();
    let mut bytes = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..5_000 {
        bytes.extend_from_slice(format!("X-Flood-{i}: y\r\n").as_bytes());
    }
    bytes.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    let server = raw_server(&identity(&pki), bytes);
    let rig = Rig::wkd_at(&pki, server.ip());
    assert_failed(&rig.lookup(ALICE).await, &[HOST]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_mib_header_line_is_a_failure() {
    let pki = Pki::new();
    let mut bytes = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
    bytes.extend(std::iter::repeat_n(b'a', 1_048_576));
    bytes.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
    let server = raw_server(&identity(&pki), bytes);
    let rig = Rig::wkd_at(&pki, server.ip());
    assert_failed(&rig.lookup(ALICE).await, &[HOST]);
}

// ---------------------------------------------------------------------------
// 5. Not HTTP, or not TLS.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_not_an_http_response_is_a_failure() {
    let pki = Pki::new();
    let id = identity(&pki);
    let key = alice_key();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("an SSH banner", b"SSH-2.0-OpenSSH_9.6\r\n".to_vec()),
        ("HTTP/0.9: the key without a status line", key.clone()),
        (
            "HTTP/0.9: an armored key",
            cert(ALICE).armored().to_vec().unwrap(),
        ),
        ("nothing at all", Vec::new()),
        (
            "headers and no body",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n".to_vec(),
        ),
        (
            "200, no length, no body",
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec(),
        ),
        ("a status line only", b"HTTP/1.1 200 OK\r\n".to_vec()),
        (
            "endless 100 Continue",
            b"HTTP/1.1 100 Continue\r\n\r\n".repeat(20_000),
        ),
        (
            "HTTP/2 preface",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
        ),
    ];
    for (what, bytes) in cases {
        let server = raw_server(&id, bytes);
        let rig = Rig::wkd_at(&pki, server.ip());
        let (lookup, took) = timed(rig.lookup(ALICE)).await;
        assert!(matches!(lookup, Lookup::Failed(_)), "{what}: {lookup:?}");
        assert!(
            took <= TIMEOUT + Duration::from_millis(300),
            "{what}: {took:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_handshake_cut_or_refused_is_a_failure() {
    let pki = Pki::new();
    // Accepts, closes at once.
    let closer = Server::tcp(443, |tcp| async move { drop(tcp) });
    // Reads the ClientHello, answers a fatal handshake_failure alert.
    let alerter = Server::tcp(443, |mut tcp| async move {
        let mut buf = [0u8; 4096];
        let _ = tcp.read(&mut buf).await;
        let _ = tcp
            .write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28])
            .await;
    });
    // Answers a ClientHello with plain text.
    let plain = Server::tcp(443, |mut tcp| async move {
        let mut buf = [0u8; 4096];
        let _ = tcp.read(&mut buf).await;
        let _ = tcp.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
    });
    for (what, server) in [("close", &closer), ("alert", &alerter), ("plain", &plain)] {
        let rig = Rig::wkd_at(&pki, server.ip());
        let (lookup, took) = timed(rig.lookup(ALICE)).await;
        assert_failed(&lookup, &["TLS with openpgpkey.example.org"]);
        assert!(took < CONNECT, "{what}: {took:?}");
    }
}
