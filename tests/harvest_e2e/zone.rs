//! Changing the signed test zone while it is served: a record is put in
//! `DIR/zones/autoencrypt.test.zone` (dns-up's layout), the zone is signed
//! again with its own keys (`DIR/keys`, the KSK told by its flags 257) by
//! `ldns-signzone`, and nsd reads it again on SIGHUP. Used for "the DNS key
//! of a pinned address changes"; the record gets a short TTL so that the
//! milter's DNS cache lets go of the old answer within seconds.
//!
//! The re-signed zone is signed honestly throughout: dns-up's tampered
//! records for bogus@ become valid ones (no test here uses bogus@).

use std::process::Command;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::env::DnsEnv;

/// The SMIMEA owner name of `address` (RFC 8162: the first 28 octets of
/// SHA-256 of the local part, hex), absolute.
pub fn smimea_owner(address: &str) -> String {
    let (local, domain) = address.rsplit_once('@').expect("an address");
    let digest = Sha256::digest(local.as_bytes());
    let hex: String = digest[..28].iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}._smimecert.{domain}.")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// Publishes `cert_der` as the only SMIMEA (3 0 0) record of `address`
/// with `ttl`, signs the zone again and waits until nsd serves it.
pub fn publish_smimea(dns: &DnsEnv, address: &str, cert_der: &[u8], ttl: u32) {
    let zone = dns.zone().trim_end_matches('.').to_owned();
    let owner = smimea_owner(address);
    assert!(
        owner.ends_with(&format!(".{zone}.")),
        "{address} is not inside {zone}"
    );
    let zone_file = dns.dir().join("zones").join(format!("{zone}.zone"));
    let text = std::fs::read_to_string(&zone_file).expect("reading the zone file");
    let serial = next_serial(&text);
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with(&owner) {
            continue;
        }
        if line.contains(" IN SOA ") {
            // "@ IN SOA ns1.Z. hostmaster.Z. SERIAL 3600 600 86400 60"
            let mut w: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
            w[5] = serial.to_string();
            out.push_str(&w.join(" "));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    let rdata = hex(cert_der);
    out.push_str(&format!("{owner} {ttl} IN SMIMEA 3 0 0 {rdata}\n"));
    std::fs::write(&zone_file, out).expect("writing the zone file");
    sign(dns, &zone);
    reload_until(dns, &owner, &rdata);
}

fn next_serial(zone_text: &str) -> u64 {
    let soa = zone_text
        .lines()
        .find(|l| l.contains(" IN SOA "))
        .expect("an SOA line");
    let serial: u64 = soa
        .split_whitespace()
        .nth(5)
        .and_then(|s| s.parse().ok())
        .expect("an SOA serial");
    serial + 1
}

/// ldns-signzone with the zone's own KSK and ZSK, valid from an hour ago
/// for 30 days (as dns-up signs it).
fn sign(dns: &DnsEnv, zone: &str) {
    let keys = dns.dir().join("keys");
    let mut ksk = None;
    let mut zsk = None;
    for e in std::fs::read_dir(&keys).expect("the zone's key directory") {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(base) = name.strip_suffix(".key") else {
            continue;
        };
        if !base.starts_with(&format!("K{zone}.+")) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        if text.contains("DNSKEY\t257 ") || text.contains("DNSKEY 257 ") {
            ksk = Some(base.to_owned());
        } else {
            zsk = Some(base.to_owned());
        }
    }
    let (ksk, zsk) = (ksk.expect("the zone's KSK"), zsk.expect("the zone's ZSK"));
    let stamp = |t: i64| {
        let out = Command::new("date")
            .args(["-u", "-d", &format!("@{t}"), "+%Y%m%d%H%M%S"])
            .output()
            .expect("date");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let now = super::mail::unix_now();
    let zones = dns.dir().join("zones");
    let out = Command::new("ldns-signzone")
        .current_dir(&keys)
        .args(["-i", &stamp(now - 3600), "-e", &stamp(now + 30 * 86_400)])
        .arg("-f")
        .arg(zones.join(format!("{zone}.signed")))
        .args(["-o", &format!("{zone}.")])
        .arg(zones.join(format!("{zone}.zone")))
        .args([&zsk, &ksk])
        .output()
        .expect("ldns-signzone (ldnsutils) is required");
    assert!(
        out.status.success(),
        "ldns-signzone failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// SIGHUP to nsd until it answers `owner` SMIMEA with `rdata` (bounded).
fn reload_until(dns: &DnsEnv, owner: &str, rdata: &str) {
    let pid = dns.var("NSD_PID").to_owned();
    let port = dns.var("NSD_PORT").to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let hup = Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .expect("kill");
        assert!(hup.success(), "SIGHUP to nsd {pid} failed");
        let answer = Command::new("dig")
            .args([
                "@127.0.0.1",
                "-p",
                &port,
                "+norec",
                "+short",
                owner,
                "SMIMEA",
            ])
            .output()
            .expect("dig (bind9-dnsutils) is required");
        let served: String = String::from_utf8_lossy(&answer.stdout)
            .chars()
            .filter(char::is_ascii_hexdigit)
            .collect::<String>()
            .to_ascii_uppercase();
        if served.ends_with(rdata) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "nsd does not serve the new SMIMEA for {owner}; it answers {:?}\n{}",
            String::from_utf8_lossy(&answer.stdout),
            std::fs::read_to_string(dns.var("NSD_LOG")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
