//! Smoke test of the DNSSEC test environment (tests/env): every case in the
//! zones behaves as intended when asked through unbound with `dig`, and
//! through `delv` validating in-process against nsd with the anchor file.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

#[path = "env/mod.rs"]
mod env;

use std::process::Command;

use env::DnsEnv;

/// What `dig` printed, parsed.
#[derive(Debug)]
struct Dig {
    status: String,
    flags: Vec<String>,
    answers: usize,
    size: usize,
    short: Vec<String>,
    text: String,
}

impl Dig {
    fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
}

fn dig(server: std::net::SocketAddr, name: &str, rtype: &str, extra: &[&str]) -> Dig {
    let out = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string()])
        .args(["+dnssec", "+time=5", "+tries=1", "+nomultiline"])
        .args(extra)
        .args([name, rtype])
        .output()
        .unwrap_or_else(|e| panic!("cannot run dig (package bind9-dnsutils): {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "dig {name} {rtype} failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or_else(|| panic!("no status in dig output:\n{text}"))
        .to_string();
    let flags_line = text
        .lines()
        .find(|l| l.starts_with(";; flags:"))
        .unwrap_or_else(|| panic!("no flags in dig output:\n{text}"));
    let flags = flags_line
        .trim_start_matches(";; flags:")
        .split(';')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let answers = flags_line
        .split("ANSWER: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ANSWER count in dig output:\n{text}"));
    let size = text
        .split("MSG SIZE  rcvd: ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // Answer-section RDATA of the queried type.
    let mut short = Vec::new();
    let mut in_answer = false;
    for line in text.lines() {
        if line.starts_with(";; ANSWER SECTION:") {
            in_answer = true;
            continue;
        }
        if in_answer {
            if line.trim().is_empty() {
                break;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() > 4 && fields[3] == rtype {
                short.push(fields[4..].join(" "));
            }
        }
    }
    Dig {
        status,
        flags,
        answers,
        size,
        short,
        text,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn read(path: &std::path::Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn assert_secure(d: &Dig, what: &str) {
    assert_eq!(d.status, "NOERROR", "{what}: {}", d.text);
    assert!(d.has("ad"), "{what}: no AD flag:\n{}", d.text);
    assert!(!d.short.is_empty(), "{what}: no answer:\n{}", d.text);
}

fn assert_servfail(d: &Dig, what: &str) {
    assert_eq!(d.status, "SERVFAIL", "{what}: {}", d.text);
    assert!(!d.has("ad"), "{what}: {}", d.text);
}

#[test]
fn secure_records_have_ad_and_the_published_data() {
    let env = DnsEnv::start();
    let r = env.resolver();
    let both = env.user("both");

    let d = dig(r, &both.smimea_owner, "SMIMEA", &[]);
    assert_secure(&d, "both@ SMIMEA");
    let der = read(both.cert_der.as_deref().expect("both@ has a certificate"));
    let rdata = d.short[0].replace(' ', "").to_uppercase();
    assert_eq!(
        rdata,
        format!("300{}", hex(&der)),
        "both@ SMIMEA is 3 0 0 <DER>"
    );

    let d = dig(r, &both.openpgpkey_owner, "OPENPGPKEY", &[]);
    assert_secure(&d, "both@ OPENPGPKEY");
    let published = d.short[0].replace(' ', "");
    let key = read(
        both.pgp_public
            .as_deref()
            .expect("both@ has an OpenPGP key"),
    );
    let b64 = Command::new("base64")
        .arg("-w0")
        .arg(both.pgp_public.as_deref().expect("path"))
        .output()
        .expect("base64 runs");
    assert!(!key.is_empty());
    assert_eq!(published, String::from_utf8_lossy(&b64.stdout).trim());

    for (id, rtype) in [
        ("smime", "SMIMEA"),
        ("smimeec", "SMIMEA"),
        ("pgp", "OPENPGPKEY"),
        ("pgprsa", "OPENPGPKEY"),
        ("expired", "SMIMEA"),
    ] {
        let u = env.user(id);
        let owner = if rtype == "SMIMEA" {
            &u.smimea_owner
        } else {
            &u.openpgpkey_owner
        };
        assert_secure(&dig(r, owner, rtype, &[]), &format!("{id}@ {rtype}"));
    }

    let h = env.user("hashonly");
    let d = dig(r, &h.smimea_owner, "SMIMEA", &[]);
    assert_secure(&d, "hashonly@");
    assert!(d.short[0].starts_with("3 0 1 "), "{}", d.text);

    // Single-type users: the other type is an authenticated denial.
    let d = dig(r, &env.user("smime").openpgpkey_owner, "OPENPGPKEY", &[]);
    assert_eq!(d.status, "NXDOMAIN", "{}", d.text);
    assert!(d.has("ad"), "{}", d.text);
}

#[test]
fn denial_bogus_insecure_and_lame() {
    let env = DnsEnv::start();
    let r = env.resolver();

    let none = env.user("none");
    for (owner, rtype) in [
        (&none.smimea_owner, "SMIMEA"),
        (&none.openpgpkey_owner, "OPENPGPKEY"),
    ] {
        let d = dig(r, owner, rtype, &[]);
        assert_eq!(d.status, "NXDOMAIN", "none@ {rtype}: {}", d.text);
        assert!(d.has("ad"), "none@ {rtype}: no AD:\n{}", d.text);
        let nsec = d
            .text
            .lines()
            .any(|l| l.split_whitespace().nth(3) == Some("NSEC"));
        assert!(nsec, "none@: NSEC proof expected:\n{}", d.text);
    }

    let bogus = env.user("bogus");
    assert_servfail(&dig(r, &bogus.smimea_owner, "SMIMEA", &[]), "bogus@ SMIMEA");
    assert_servfail(
        &dig(r, &bogus.openpgpkey_owner, "OPENPGPKEY", &[]),
        "bogus@ OPENPGPKEY",
    );
    assert_servfail(
        &dig(r, &env.user("x").smimea_owner, "SMIMEA", &[]),
        "x@expiredsig SMIMEA",
    );

    let y = env.user("y");
    for (owner, rtype) in [
        (&y.smimea_owner, "SMIMEA"),
        (&y.openpgpkey_owner, "OPENPGPKEY"),
    ] {
        let d = dig(r, owner, rtype, &[]);
        assert_eq!(d.status, "NOERROR", "y@unsigned {rtype}: {}", d.text);
        assert!(!d.short.is_empty(), "y@unsigned {rtype}: {}", d.text);
        assert!(
            !d.has("ad"),
            "y@unsigned {rtype} must be insecure:\n{}",
            d.text
        );
    }

    let started = std::time::Instant::now();
    assert_servfail(
        &dig(r, &env.user("lame").smimea_owner, "SMIMEA", &[]),
        "z@lame SMIMEA",
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "lame SERVFAIL took {:?}",
        started.elapsed()
    );

    // The bogus and expired-signature failures are validation failures.
    let log = env.unbound_log();
    assert!(log.contains("validation failure"), "unbound log:\n{log}");
}

#[test]
fn lowercase_fallback_user() {
    let env = DnsEnv::start();
    let r = env.resolver();
    let upper = env.user("upper");
    assert_eq!(upper.address, "Upper@autoencrypt.test");
    assert_ne!(upper.smimea_owner, upper.smimea_owner_lc);
    for (as_written, lc, rtype) in [
        (&upper.smimea_owner, &upper.smimea_owner_lc, "SMIMEA"),
        (
            &upper.openpgpkey_owner,
            &upper.openpgpkey_owner_lc,
            "OPENPGPKEY",
        ),
    ] {
        let d = dig(r, as_written, rtype, &[]);
        assert_eq!(
            d.status, "NXDOMAIN",
            "Upper@ as written {rtype}: {}",
            d.text
        );
        assert!(d.has("ad"), "{}", d.text);
        assert_secure(&dig(r, lc, rtype, &[]), "Upper@ lower-cased");
    }
}

#[test]
fn tcp_user_needs_tcp() {
    let env = DnsEnv::start();
    let owner = &env.user("tcp").smimea_owner;
    let d = dig(
        env.resolver(),
        owner,
        "SMIMEA",
        &["+bufsize=1232", "+notcp", "+ignore"],
    );
    assert!(
        d.has("tc"),
        "tcp@ over UDP/1232 must be truncated:\n{}",
        d.text
    );
    assert_eq!(d.answers, 0, "{}", d.text);

    let d = dig(env.resolver(), owner, "SMIMEA", &["+tcp"]);
    assert_secure(&d, "tcp@ over TCP");
    assert!(!d.has("tc"), "{}", d.text);
    assert_eq!(d.answers, 2, "SMIMEA + RRSIG:\n{}", d.text);
    assert!(d.size > 1232, "answer is {} bytes", d.size);
}

#[test]
fn in_process_validation_with_the_anchor_file() {
    let env = DnsEnv::start();
    let anchors = std::fs::read_to_string(env.trust_anchor_dnskeys()).expect("anchor file");
    let keys: Vec<&str> = anchors.lines().filter(|l| l.contains(" DNSKEY ")).collect();
    assert_eq!(keys.len(), 2, "KSK and ZSK:\n{anchors}");
    assert!(keys.iter().any(|l| l.contains(" DNSKEY 257 ")), "{anchors}");
    assert!(keys.iter().any(|l| l.contains(" DNSKEY 256 ")), "{anchors}");

    let delv = |name: &str| {
        let out = Command::new("delv")
            .arg(format!("@{}", env.nsd().ip()))
            .args(["-p", &env.nsd().port().to_string()])
            .arg("-a")
            .arg(env.trust_anchor_delv())
            .arg("+root=autoencrypt.test")
            .args([name, "SMIMEA"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run delv (package bind9-dnsutils): {e}"));
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let out = delv(&env.user("both").smimea_owner);
    assert!(out.contains("; fully validated"), "{out}");
    let out = delv(&env.user("bogus").smimea_owner);
    assert!(out.contains("resolution failed"), "{out}");
    let out = delv(&env.user("none").smimea_owner);
    assert!(out.contains("negative response, fully validated"), "{out}");
}

#[test]
fn two_environments_at_once() {
    let a = DnsEnv::start();
    let b = DnsEnv::start();
    assert_ne!(a.resolver(), b.resolver());
    assert_ne!(a.nsd(), b.nsd());
    assert_ne!(a.gnupghome(), b.gnupghome());
    for env in [&a, &b] {
        assert_secure(
            &dig(
                env.resolver(),
                &env.user("both").smimea_owner,
                "SMIMEA",
                &[],
            ),
            "both@ SMIMEA",
        );
    }
    // Different zone keys, so one environment's anchors do not fit the other.
    assert_ne!(
        std::fs::read_to_string(a.trust_anchor_ds()).expect("anchor"),
        std::fs::read_to_string(b.trust_anchor_ds()).expect("anchor")
    );
    assert!(a.unbound_queries() > 0);
    drop(a);
    assert_secure(
        &dig(
            b.resolver(),
            &b.user("pgp").openpgpkey_owner,
            "OPENPGPKEY",
            &[],
        ),
        "pgp@ after the other environment stopped",
    );
}
