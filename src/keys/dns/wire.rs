//! The wire client of `trust-ad` mode: one DNS message to one server and
//! its answer, over UDP first and over TCP (RFC 7766 framing) when the
//! UDP answer is truncated. Knows bytes, ids and sockets, not DNSSEC.

use std::net::SocketAddr;

use hickory_resolver::proto::op::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::keys::FailReason;

/// EDNS payload size advertised over UDP (the DNS flag day 2020 value).
pub(super) const UDP_PAYLOAD: u16 = 1232;

/// Sends `query` (encoded, with id `id`) to `server` and returns the
/// answer: UDP, then TCP when the UDP answer has TC=1 (a full-certificate
/// SMIMEA answer with its RRSIG exceeds [`UDP_PAYLOAD`]).
pub(super) async fn exchange(
    server: SocketAddr,
    query: &[u8],
    id: u16,
) -> Result<Message, FailReason> {
    match udp_exchange(server, query, id).await {
        Ok(r) if r.metadata.truncation => tcp_exchange(server, query, id).await,
        other => other,
    }
}

/// A fresh query id.
pub(super) fn rand_id() -> u16 {
    let mut b = [0u8; 2];
    // A predictable id only weakens spoofing protection on the loopback
    // path trust-ad already requires to be trusted.
    let _ = openssl::rand::rand_bytes(&mut b);
    u16::from_be_bytes(b)
}

fn io_fail(e: &std::io::Error) -> FailReason {
    FailReason::Network(e.to_string())
}

async fn udp_exchange(server: SocketAddr, query: &[u8], id: u16) -> Result<Message, FailReason> {
    let bind: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let sock = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|e| io_fail(&e))?;
    sock.connect(server).await.map_err(|e| io_fail(&e))?;
    sock.send(query).await.map_err(|e| io_fail(&e))?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = sock.recv(&mut buf).await.map_err(|e| io_fail(&e))?;
        match Message::from_vec(&buf[..n]) {
            // Ignore stray datagrams with another id.
            Ok(m) if m.metadata.id == id => return Ok(m),
            Ok(_) | Err(_) => continue,
        }
    }
}

async fn tcp_exchange(server: SocketAddr, query: &[u8], id: u16) -> Result<Message, FailReason> {
    let mut stream = tokio::net::TcpStream::connect(server)
        .await
        .map_err(|e| io_fail(&e))?;
    let len =
        u16::try_from(query.len()).map_err(|_| FailReason::Network("query too long".into()))?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await.map_err(|e| io_fail(&e))?;
    let n = stream.read_u16().await.map_err(|e| io_fail(&e))?;
    let mut buf = vec![0u8; usize::from(n)];
    stream.read_exact(&mut buf).await.map_err(|e| io_fail(&e))?;
    let m = Message::from_vec(&buf)
        .map_err(|e| FailReason::Network(format!("malformed answer: {e}")))?;
    if m.metadata.id != id {
        return Err(FailReason::Network("answer with a foreign id".into()));
    }
    Ok(m)
}
