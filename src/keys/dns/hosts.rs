//! Host names for the web sources, resolved through the DNS key source's
//! own resolvers, mode and cache: A and AAAA, IPv4 first. DNSSEC matters
//! only as far as a bogus answer is refused (it may be an attack); an
//! unsigned zone's addresses are used, since TLS authenticates the host.

use hickory_resolver::proto::rr::{Name, RData, RecordType};

use super::{Answer, DnsSource};
use crate::keys::web::{HostAnswer, HostFuture, Hosts};

impl Hosts for DnsSource {
    fn resolve<'a>(&'a self, host: &'a str) -> HostFuture<'a> {
        Box::pin(async move {
            let Ok(mut name) = Name::from_ascii(host) else {
                return HostAnswer::NoSuchHost;
            };
            name.set_fqdn(true);
            let ((v4, _, _), (v6, _, _)) = tokio::join!(
                self.query(&name, RecordType::A),
                self.query(&name, RecordType::AAAA)
            );
            let mut addrs = Vec::new();
            let mut failure = None;
            for answer in [v4, v6] {
                match answer {
                    Answer::Records { records, .. } => {
                        addrs.extend(records.iter().filter_map(|r| match &r.data {
                            RData::A(a) => Some(std::net::IpAddr::V4(a.0)),
                            RData::AAAA(a) => Some(std::net::IpAddr::V6(a.0)),
                            _ => None,
                        }));
                    }
                    Answer::Empty { .. } => {}
                    Answer::Bogus(why) => return HostAnswer::Bogus(format!("{host}: {why}")),
                    Answer::Failed(why) => failure = Some(why),
                }
            }
            match (addrs.is_empty(), failure) {
                (false, _) => HostAnswer::Addrs(addrs),
                // One family failed, the other had none: unknown, not absent.
                (true, Some(why)) => HostAnswer::Failed(why),
                (true, None) => HostAnswer::NoSuchHost,
            }
        })
    }
}
