//! Which addresses the web sources may connect to: public ones only,
//! unless `wkd.allow_private_addresses`. A recipient's domain chooses the
//! host names, so without this its DNS could point the milter at the
//! operator's own network (loopback services, RFC 1918 hosts, cloud
//! metadata at link-local) — TLS would stop a forged key, but not the
//! connection, and the RCPT's outcome would tell a sender whether a port
//! is open.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Whether `ip` is an address on the public Internet.
pub(super) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => public_v4(v4),
            None => public_v6(v6),
        },
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        // Shared address space (carrier-grade NAT), RFC 6598.
        || (a == 100 && (64..128).contains(&b))
        // Benchmarking, RFC 2544; reserved, RFC 1112; IETF protocol
        // assignments 192.0.0.0/24; the 6to4 relay anycast 192.88.99.0/24.
        || (a == 198 && (b == 18 || b == 19))
        || ip.octets()[..3] == [192, 0, 0]
        || ip.octets()[..3] == [192, 88, 99]
        || a >= 240)
}

fn public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    // ::/96: unspecified, loopback, IPv4-compatible ::a.b.c.d.
    if s[..6] == [0; 6] {
        return false;
    }
    // ::ffff:0:0/96 (SIIT).
    if s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0 {
        return false;
    }
    // NAT64: the well-known prefix reaches the IPv4 inside it (public
    // IPv4 must still work on IPv6-only hosts); local-use prefixes never.
    if s[0] == 0x64 && s[1] == 0xff9b {
        return s[2..6] == [0; 4] && public_v4(v4(s[6], s[7]));
    }
    // 6to4 carries an IPv4 address.
    if s[0] == 0x2002 {
        return public_v4(v4(s[1], s[2]));
    }
    !(ip.is_multicast()
        // Teredo 2001::/32, documentation 2001:db8::/32.
        || (s[0] == 0x2001 && (s[1] == 0 || s[1] == 0x0db8))
        // Discard-only 100::/64.
        || (s[0] == 0x0100 && s[1..4] == [0; 3])
        // Unique local fc00::/7, link-local fe80::/10, site-local fec0::/10.
        || (s[0] & 0xfe00) == 0xfc00
        || (s[0] & 0xffc0) == 0xfe80
        || (s[0] & 0xffc0) == 0xfec0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        let p = |s: &str| is_public(s.parse().expect("address"));
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "2a00:1450:4001:80b::200e",
            // NAT64 of a public address; 6to4 of one.
            "64:ff9b::5db8:d822",
            "2002:5db8:d822::1",
        ] {
            assert!(p(public), "{public}");
        }
        for private in [
            "127.0.0.1",
            "127.38.1.2",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "2001:db8::1",
            "::7f00:1",
            "::a00:1",
            "::ffff:0:a00:1",
            "64:ff9b::a00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::a00:1",
            "2002:a00:1::1",
            "2001:0:4136:e378::1",
            "fec0::1",
            "100::1",
            "192.0.0.8",
            "192.88.99.1",
        ] {
            assert!(!p(private), "{private}");
        }
    }
}
