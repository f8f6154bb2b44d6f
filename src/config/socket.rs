//! The milter socket: `inet:HOST:PORT`, `inet6:[ADDR]:PORT` or
//! `unix:/path`, parsed, printed and (de)serialised as that one string.

use std::fmt;
use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::forms::via_str;

/// The milter socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Socket {
    /// `inet:HOST:PORT` — an IPv4 address or a host name.
    Inet {
        /// Address or name to bind.
        host: String,
        /// TCP port.
        port: u16,
    },
    /// `inet6:[ADDR]:PORT`.
    Inet6 {
        /// IPv6 address to bind.
        addr: Ipv6Addr,
        /// TCP port.
        port: u16,
    },
    /// `unix:/path`.
    Unix(PathBuf),
}

/// Why a socket specification is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid socket {input:?}: {reason} (expected inet:HOST:PORT, inet6:[ADDR]:PORT or unix:/path)"
)]
pub struct SocketError {
    /// The text given.
    pub input: String,
    /// What is wrong.
    pub reason: &'static str,
}

impl FromStr for Socket {
    type Err = SocketError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| SocketError {
            input: s.to_owned(),
            reason,
        };
        let port = |p: &str| match p.parse::<u16>() {
            Ok(0) => Err(err("port 0")),
            Ok(n) => Ok(n),
            Err(_) => Err(err("bad port")),
        };
        if let Some(rest) = s.strip_prefix("unix:") {
            if rest.is_empty() {
                return Err(err("empty path"));
            }
            return Ok(Socket::Unix(PathBuf::from(rest)));
        }
        if let Some(rest) = s.strip_prefix("inet6:") {
            let rest = rest
                .strip_prefix('[')
                .ok_or_else(|| err("IPv6 address must be in brackets"))?;
            let (addr, p) = rest.split_once("]:").ok_or_else(|| err("missing ]:PORT"))?;
            let addr = addr
                .parse::<Ipv6Addr>()
                .map_err(|_| err("bad IPv6 address"))?;
            return Ok(Socket::Inet6 {
                addr,
                port: port(p)?,
            });
        }
        if let Some(rest) = s.strip_prefix("inet:") {
            let (host, p) = rest.rsplit_once(':').ok_or_else(|| err("missing :PORT"))?;
            if host.is_empty() {
                return Err(err("empty host"));
            }
            let host_ok = host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
            if !host_ok {
                return Err(err("bad host (IPv6 needs inet6:[ADDR]:PORT)"));
            }
            return Ok(Socket::Inet {
                host: host.to_owned(),
                port: port(p)?,
            });
        }
        Err(err("unknown kind"))
    }
}

impl fmt::Display for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Socket::Inet { host, port } => write!(f, "inet:{host}:{port}"),
            Socket::Inet6 { addr, port } => write!(f, "inet6:[{addr}]:{port}"),
            Socket::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl Serialize for Socket {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        via_str::serialize(self, s)
    }
}

impl<'de> Deserialize<'de> for Socket {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        via_str::deserialize(d)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]
    use super::*;

    #[test]
    fn sockets_parse_and_round_trip() {
        for s in [
            "inet:127.0.0.1:10040",
            "inet:localhost:1",
            "inet6:[::1]:10040",
            "unix:/run/a.sock",
        ] {
            assert_eq!(s.parse::<Socket>().unwrap().to_string(), s);
        }
        for bad in [
            "inet:127.0.0.1",
            "inet::25",
            "inet:1.2.3.4:0",
            "inet:1.2.3.4:70000",
            "inet6:::1:25",
            "inet6:[zz]:25",
            "unix:",
            "tcp:1.2.3.4:5",
            "inet:::1:25",
        ] {
            assert!(bad.parse::<Socket>().is_err(), "{bad} accepted");
        }
    }
}
