//! Who is at the other end of a milter connection, as the kernel says:
//! the user id of a unix-socket peer, the address of a TCP peer. The
//! connection slots share themselves out between peers (see `slots.rs`),
//! so one hostile local client cannot hold every slot against the MTA.

use std::net::IpAddr;

/// The identity a connection's slot is counted against.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Peer {
    /// A unix-socket peer, by user id (`SO_PEERCRED`).
    Uid(u32),
    /// A TCP peer on another host, by address.
    Ip(IpAddr),
    /// Any loopback address: a local client can pick any of 127.0.0.0/8
    /// as its source, so loopback addresses are one peer.
    Loopback,
    /// The kernel did not say (all such connections are one peer).
    #[default]
    Unknown,
}

impl Peer {
    /// The peer for a TCP source address.
    pub fn of_ip(ip: IpAddr) -> Peer {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        if ip.is_loopback() {
            Peer::Loopback
        } else {
            Peer::Ip(ip)
        }
    }
}

/// A connected stream that knows its peer.
pub trait HasPeer {
    /// The peer of this connection.
    fn peer(&self) -> Peer;
}

impl HasPeer for tokio::net::TcpStream {
    fn peer(&self) -> Peer {
        self.peer_addr()
            .map_or(Peer::Unknown, |a| Peer::of_ip(a.ip()))
    }
}

impl HasPeer for tokio::net::UnixStream {
    fn peer(&self) -> Peer {
        self.peer_cred()
            .map_or(Peer::Unknown, |c| Peer::Uid(c.uid()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_loopback_address_is_one_peer() {
        for ip in [
            "127.0.0.1",
            "127.0.0.2",
            "127.255.0.9",
            "::1",
            "::ffff:127.0.0.5",
        ] {
            assert_eq!(
                Peer::of_ip(ip.parse().unwrap_or(IpAddr::from([0; 4]))),
                Peer::Loopback,
                "{ip}"
            );
        }
        let remote: IpAddr = "192.0.2.7".parse().unwrap_or(IpAddr::from([0; 4]));
        assert_eq!(Peer::of_ip(remote), Peer::Ip(remote));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap_or(IpAddr::from([0; 4]));
        assert_eq!(Peer::of_ip(mapped), Peer::Ip(remote));
    }
}
