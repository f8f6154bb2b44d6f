//! Smoke test of the LDAP test environment (tests/env/ldap-up): every
//! endpoint answers (or refuses) as tests/env/README.md says, checked with
//! OpenLDAP's own `ldapsearch`; every user's entry holds exactly the
//! material its files say (certificates byte for byte, fingerprints,
//! OpenPGP keys read back by `gpg --show-keys`); stopping and starting a
//! slapd, and adding, changing and deleting entries, work.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

#[path = "env/ldap.rs"]
mod ldap;

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use ldap::{
    Bind, Endpoint, LDAP_USER_IDS, LdapEnv, LdapUser, Search, b64, cert_der_b64, run_search,
};
use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::x509::X509;

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `search` found exactly these DNs (any order).
fn dns(s: &Search) -> Vec<String> {
    let mut d: Vec<String> = s.entries.iter().map(|e| e.dn.clone()).collect();
    d.sort();
    d
}

fn found(s: &Search, what: &str) -> Vec<String> {
    assert_eq!(s.code, 0, "{what}: ldapsearch failed: {s:?}");
    dns(s)
}

/// The port of an `ldap[s]://127.0.0.1:PORT` URL.
fn port(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn endpoints() {
    let t0 = Instant::now();
    let env = LdapEnv::start();
    let t_up = t0.elapsed();
    let one = env.user("one").dn.clone();
    let search = |ep, bind| env.ldapsearch(ep, bind, env.base(), "(uid=one)", &["dn"]);

    // Plain with the milter's bind, ldapi as root over EXTERNAL, StartTLS
    // (-ZZ) and ldaps against the test CA: each finds the entry.
    for (ep, bind) in [
        (Endpoint::Plain, Bind::Milter),
        (Endpoint::Ldapi, Bind::External),
        (Endpoint::StartTls, Bind::Milter),
        (Endpoint::Ldaps, Bind::Milter),
        (Endpoint::Ldaps, Bind::Admin),
        (Endpoint::Plain, Bind::Admin),
    ] {
        assert_eq!(
            found(&search(ep, bind), &format!("{ep:?} {bind:?}")),
            [one.as_str()]
        );
    }

    // The tls slapd: nothing before StartTLS (confidentialityRequired).
    let s = search(Endpoint::StartTlsPort, Bind::Milter);
    assert_eq!(s.code, 13, "{s:?}");
    let s = search(Endpoint::StartTlsPort, Bind::Anonymous);
    assert_eq!(s.code, 13, "{s:?}");

    // The wrong CA: neither StartTLS nor ldaps verifies.
    for ep in [Endpoint::StartTls, Endpoint::Ldaps] {
        let mut c = env.ldapsearch_command(ep, Bind::Milter, env.base(), "(uid=one)", &["dn"]);
        c.env("LDAPTLS_CACERT", env.wrong_ca_file());
        let s = run_search(&mut c);
        assert_ne!(s.code, 0, "{ep:?} with the wrong CA: {s:?}");
        assert!(s.entries.is_empty(), "{s:?}");
    }
    // Nor does the system's trust (the test CA is nowhere else).
    let mut c =
        env.ldapsearch_command(Endpoint::Ldaps, Bind::Anonymous, "", "(objectClass=*)", &[]);
    c.env_remove("LDAPTLS_CACERT");
    assert_ne!(run_search(&mut c).code, 0);

    // Wrong password: invalidCredentials (49), on both slapds.
    for ep in [Endpoint::Plain, Endpoint::Ldaps, Endpoint::StartTls] {
        let s = search(ep, Bind::WrongPassword);
        assert_eq!(s.code, 49, "{ep:?}: {s:?}");
    }
    // The password file ends in a newline; `ldapsearch -y` sends it too,
    // and that is a wrong password (README: use the line, not the file).
    let mut c = env.command("ldapsearch");
    c.args(["-x", "-H", env.ldap_url(), "-D", env.bind_dn(), "-y"])
        .arg(env.password_file())
        .args(["-b", env.base(), "(uid=one)"]);
    assert_eq!(run_search(&mut c).code, 49);
    let pw = std::fs::read_to_string(env.password_file()).unwrap();
    assert!(pw.ends_with('\n') && pw.lines().count() == 1, "{pw:?}");
    use std::os::unix::fs::PermissionsExt as _;
    for f in [
        env.password_file(),
        env.wrong_password_file(),
        env.admin_password_file(),
    ] {
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
    }
    assert_ne!(
        env.password(),
        std::fs::read_to_string(env.wrong_password_file())
            .unwrap()
            .trim_end()
    );

    // Anonymous: binds, sees nothing (the base is not even disclosed:
    // noSuchObject), on both slapds; the root DSE is readable.
    for ep in [Endpoint::Plain, Endpoint::Ldaps] {
        let s = env.ldapsearch(ep, Bind::Anonymous, env.base(), "(objectClass=*)", &[]);
        assert_eq!((s.code, s.entries.len()), (32, 0), "{ep:?}: {s:?}");
        let s = env.ldapsearch(ep, Bind::Anonymous, env.people_base(), "(mail=*)", &[]);
        assert_eq!((s.code, s.entries.len()), (32, 0), "{ep:?}: {s:?}");
        let mut c = env.ldapsearch_command(ep, Bind::Anonymous, "", "(objectClass=*)", &["+"]);
        c.args(["-s", "base"]);
        let s = run_search(&mut c);
        assert_eq!(s.code, 0, "{s:?}");
        assert_eq!(
            s.entries[0].values("namingContexts"),
            [env.base().as_bytes()]
        );
    }
    // ldapi without EXTERNAL is anonymous too.
    let s = env.ldapsearch(
        Endpoint::Ldapi,
        Bind::Anonymous,
        env.base(),
        "(uid=one)",
        &[],
    );
    assert!(s.entries.is_empty(), "{s:?}");

    // userPassword: for binding only; not even the milter reads it, the
    // rootdn does.
    let s = env.ldapsearch(
        Endpoint::Plain,
        Bind::Milter,
        env.bind_dn(),
        "(objectClass=*)",
        &[],
    );
    assert_eq!(found(&s, "milter's own entry"), [env.bind_dn().to_string()]);
    assert!(s.entries[0].values("userPassword").is_empty(), "{s:?}");
    assert_eq!(s.entries[0].values("cn"), [b"milter".as_slice()]);
    let s = env.ldapsearch(
        Endpoint::Plain,
        Bind::Admin,
        env.bind_dn(),
        "(objectClass=*)",
        &[],
    );
    assert!(
        s.entries[0].values("userPassword")[0].starts_with(b"{SSHA}"),
        "{s:?}"
    );

    // The stats log shows who bound and what was searched.
    let log = env.plain_log();
    assert!(
        log.contains(&format!("BIND dn=\"{}\" method=128", env.bind_dn())),
        "{log}"
    );
    assert!(log.contains("filter=\"(uid=one)\""), "{log}");
    assert!(env.tls_log().contains("STARTTLS"), "{}", env.tls_log());

    // Refused: at once. Hang: accepted, silent.
    let t = Instant::now();
    let s = env.ldapsearch(
        Endpoint::Refused,
        Bind::Anonymous,
        env.base(),
        "(uid=one)",
        &[],
    );
    assert_eq!(s.code, 255, "{s:?}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    tcp_accepted_silent(port(env.hang_url()));
    assert_eq!(
        TcpStream::connect(("127.0.0.1", port(env.refused_url())))
            .unwrap_err()
            .kind(),
        ErrorKind::ConnectionRefused
    );

    // The certificate: the test CA's, for 127.0.0.1 and localhost.
    let ca = X509::from_pem(&read(&env.ca_file())).unwrap();
    let wrong = X509::from_pem(&read(&env.wrong_ca_file())).unwrap();
    assert_ne!(
        ca.public_key().unwrap().public_key_to_der().unwrap(),
        wrong.public_key().unwrap().public_key_to_der().unwrap()
    );
    let server = X509::from_pem(&read(&env.dir().join("server/server.pem"))).unwrap();
    assert!(server.verify(&ca.public_key().unwrap()).unwrap());
    let sans: Vec<String> = server
        .subject_alt_names()
        .unwrap()
        .iter()
        .map(|n| {
            n.ipaddress()
                .map(|ip| format!("IP:{ip:?}"))
                .or_else(|| n.dnsname().map(|d| format!("DNS:{d}")))
                .unwrap()
        })
        .collect();
    assert_eq!(sans, ["IP:[127, 0, 0, 1]", "DNS:localhost"]);

    // PIDs.
    let pids = [
        env.plain_pid().unwrap(),
        env.tls_pid().unwrap(),
        env.hang_pid(),
    ];
    assert_eq!(env.var("PLAIN_PID"), pids[0].to_string());
    assert_eq!(env.var("TLS_PID"), pids[1].to_string());
    let json: String = std::fs::read_to_string(env.dir().join("ldap.json")).unwrap();
    assert!(
        json.contains(&format!("\"plain_pid\": {}", pids[0])),
        "{json}"
    );

    let mut env = env;
    let t1 = Instant::now();
    env.stop();
    let t_down = t1.elapsed();
    for p in pids {
        assert!(gone(p), "ldap-down left pid {p} running");
    }
    eprintln!("timings: ldap-up {t_up:?}, ldap-down {t_down:?}");
}

/// `port` on 127.0.0.1 accepts a TCP connection and sends nothing back in
/// a second.
fn tcp_accepted_silent(port: u16) {
    let addr = ([127, 0, 0, 1], port).into();
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("{addr} must accept: {e}"));
    // An anonymous simple bind request, as a client would send it.
    c.write_all(&[
        0x30, 0x0c, 0x02, 0x01, 0x01, 0x60, 0x07, 0x02, 0x01, 0x03, 0x04, 0x00, 0x80, 0x00,
    ])
    .unwrap();
    c.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut buf = [0u8; 16];
    match c.read(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("{addr} must stay silent, got {other:?}"),
    }
}

/// True once `pid` is gone or a zombie.
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => matches!(
            stat.rsplit(") ").next().and_then(|s| s.chars().next()),
            Some('Z' | 'X')
        ),
    }
}

/// What `gpg --show-keys` says of a key: primary fingerprints, user IDs,
/// and the capabilities of each (sub)key.
fn show_keys(key: &[u8]) -> (Vec<String>, Vec<String>, Vec<String>) {
    let home = tempfile::tempdir().unwrap();
    let mut child = Command::new("gpg")
        .arg("--homedir")
        .arg(home.path())
        .args(["--batch", "--with-colons", "--show-keys"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("gpg (gnupg) must be installed");
    child.stdin.take().unwrap().write_all(key).unwrap();
    let out = child.wait_with_output().unwrap();
    let _ = Command::new("gpgconf")
        .arg("--homedir")
        .arg(home.path())
        .args(["--kill", "all"])
        .output();
    let text = String::from_utf8_lossy(&out.stdout);
    let (mut fprs, mut uids, mut caps) = (vec![], vec![], vec![]);
    let mut after_pub = false;
    for l in text.lines() {
        let f: Vec<&str> = l.split(':').collect();
        match f[0] {
            "pub" => {
                after_pub = true;
                caps.push(f[11].to_string());
            }
            "sub" => caps.push(f[11].to_string()),
            "fpr" if after_pub => {
                fprs.push(f[9].to_string());
                after_pub = false;
            }
            "uid" => uids.push(f[9].to_string()),
            _ => {}
        }
    }
    (fprs, uids, caps)
}

/// Checks one user's entry against its files.
fn check_user(env: &LdapEnv, u: &LdapUser) {
    let s = env.ldapsearch(Endpoint::Plain, Bind::Milter, &u.dn, "(objectClass=*)", &[]);
    assert_eq!(found(&s, &u.id), [u.dn.as_str()]);
    let e = &s.entries[0];
    assert_eq!(e.values("mail"), [u.address.as_bytes()], "{}", u.id);
    assert!(u.address.ends_with(if u.id == "local" {
        "@local.autoencrypt.test"
    } else {
        "@ldap.autoencrypt.test"
    }));

    let n = u.certs.len();
    for v in [
        u.certs_der.len(),
        u.keys.len(),
        u.cert_sha256.len(),
        u.cert_expired.len(),
        u.cert_attrs.len(),
        u.cert_emails.len(),
    ] {
        assert_eq!(v, n, "{}: parallel vectors", u.id);
    }
    let user_ca = X509::from_pem(&read(&env.user_ca_file())).unwrap();
    let now = Asn1Time::days_from_now(0).unwrap();
    let mut der_in_attr = vec![];
    for i in 0..n {
        let cert = X509::from_pem(&read(&u.certs[i])).unwrap();
        let der = cert.to_der().unwrap();
        assert_eq!(der, read(&u.certs_der[i]), "{} cert {i}: PEM and DER", u.id);
        let fpr: String = cert
            .digest(MessageDigest::sha256())
            .unwrap()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(fpr, u.cert_sha256[i], "{} cert {i}", u.id);
        let expired = cert.not_after() < now;
        assert_eq!(expired, u.cert_expired[i], "{} cert {i}", u.id);
        if expired {
            assert_eq!(cert.not_after().to_string(), "Jan  1 00:00:00 2021 GMT");
        }
        assert!(
            cert.verify(&user_ca.public_key().unwrap()).unwrap(),
            "{} cert {i}: issued by the user CA",
            u.id
        );
        let emails: Vec<String> = cert
            .subject_alt_names()
            .unwrap()
            .iter()
            .filter_map(|n| n.email().map(str::to_string))
            .collect();
        assert_eq!(emails, [u.cert_emails[i].clone()], "{} cert {i}", u.id);
        let key = PKey::private_key_from_pem(&read(&u.keys[i])).unwrap();
        assert!(
            key.public_eq(&cert.public_key().unwrap()),
            "{} key {i}",
            u.id
        );
        assert_eq!(key.rsa().unwrap().size(), 256, "RSA 2048");
        assert_eq!(cert_der_b64(&u.certs[i]), b64(&der));
        match u.cert_attrs[i].as_str() {
            "userCertificate;binary" => der_in_attr.push(der),
            "userSMIMECertificate" => {
                let p7 = u.pkcs7.as_ref().unwrap();
                assert_eq!(
                    e.values("userSMIMECertificate"),
                    [read(p7).as_slice()],
                    "{}",
                    u.id
                );
                let bag = openssl::pkcs7::Pkcs7::from_der(&read(p7)).unwrap();
                let certs = bag.signed().unwrap().certificates().unwrap();
                assert_eq!(certs.len(), 1);
                assert_eq!(
                    certs.get(0).unwrap().to_der().unwrap(),
                    der,
                    "{}: the bag holds the cert",
                    u.id
                );
            }
            a => panic!("{}: attribute {a}", u.id),
        }
    }
    let got: Vec<Vec<u8>> = e
        .values("userCertificate;binary")
        .iter()
        .map(|v| v.to_vec())
        .collect();
    assert_eq!(
        got, der_in_attr,
        "{}: userCertificate;binary, in order",
        u.id
    );
    if u.pkcs7.is_none() {
        assert!(e.values("userSMIMECertificate").is_empty(), "{}", u.id);
    }
    // Asked for as plain `userCertificate` the server adds ;binary itself.
    let s = env.ldapsearch(
        Endpoint::Ldaps,
        Bind::Milter,
        &u.dn,
        "(objectClass=*)",
        &["userCertificate"],
    );
    assert_eq!(
        s.entries[0].values("userCertificate;binary").len(),
        der_in_attr.len(),
        "{}",
        u.id
    );

    // OpenPGP.
    let stored = e.values("pgpKey");
    match &u.openpgp_fpr {
        None => assert!(stored.is_empty(), "{}", u.id),
        Some(fpr) => {
            assert_eq!(fpr.len(), 40);
            assert_eq!(fpr, &fpr.to_uppercase());
            let bin = read(u.openpgp_public.as_ref().unwrap());
            let asc = read(u.openpgp_public_asc.as_ref().unwrap());
            let want = if u.openpgp_armored_in_ldap {
                &asc
            } else {
                &bin
            };
            assert_eq!(stored, [want.as_slice()], "{}", u.id);
            assert_eq!(
                stored[0].starts_with(b"-----BEGIN PGP PUBLIC KEY BLOCK-----"),
                u.openpgp_armored_in_ldap
            );
            let (fprs, uids, caps) = show_keys(stored[0]);
            assert_eq!(fprs, [fpr.as_str()], "{}", u.id);
            assert_eq!(uids, [format!("<{}>", u.address)], "{}", u.id);
            assert_eq!(caps.len(), 2, "{}: primary and one subkey: {caps:?}", u.id);
            assert!(
                caps[1].contains('e'),
                "{}: an encryption subkey: {caps:?}",
                u.id
            );
            // The secret key is in the GNUPGHOME.
            let o = Command::new("gpg")
                .arg("--homedir")
                .arg(&u.gnupghome)
                .args(["--batch", "--with-colons", "--list-secret-keys", fpr])
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "{}: {}",
                u.id,
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
    assert_eq!(u.gnupghome, env.gnupghome());
}

#[test]
fn users() {
    let env = LdapEnv::start();
    let ids: Vec<&str> = env.users().map(|u| u.id.as_str()).collect();
    let mut want = LDAP_USER_IDS.to_vec();
    want.sort();
    assert_eq!(ids, want);
    for u in env.users() {
        check_user(&env, u);
    }
    let has = |id: &str| {
        let u = env.user(id);
        (u.cert_expired.clone(), u.openpgp_fpr.is_some())
    };
    assert_eq!(has("one"), (vec![false], false));
    assert_eq!(has("two"), (vec![false, false], false));
    assert_ne!(
        env.user("two").cert_sha256[0],
        env.user("two").cert_sha256[1]
    );
    assert_eq!(has("expired"), (vec![true, false], false));
    assert_eq!(has("onlyexpired"), (vec![true], false));
    assert_eq!(
        env.user("expired").valid_cert_sha256(),
        [env.user("expired").cert_sha256[1].as_str()]
    );
    assert_eq!(has("pkcs7"), (vec![false], false));
    assert_eq!(env.user("pkcs7").cert_attrs, ["userSMIMECertificate"]);
    assert_eq!(has("pgp"), (vec![], true));
    assert_eq!(has("pgparmored"), (vec![], true));
    assert!(env.user("pgparmored").openpgp_armored_in_ldap);
    assert_eq!(has("both"), (vec![false], true));
    assert_eq!(has("nokey"), (vec![], false));
    assert_eq!(
        env.user("wrongaddr").cert_emails,
        ["someone-else@ldap.autoencrypt.test"]
    );
    assert_eq!(
        env.user("upper").address,
        "Mixed.Case@ldap.autoencrypt.test"
    );
    assert_eq!(env.user("local").address, "local@local.autoencrypt.test");
    assert_eq!(
        env.user("primary").proxy_addresses,
        [
            "SMTP:primary@ldap.autoencrypt.test",
            "smtp:alias@ldap.autoencrypt.test"
        ]
    );

    // Searches as the key source makes them.
    let people = env.people_base();
    let by = |filter: &str| {
        found(
            &env.ldapsearch(Endpoint::Ldaps, Bind::Milter, people, filter, &["dn"]),
            filter,
        )
    };
    assert_eq!(
        by("(mail=dup@ldap.autoencrypt.test)"),
        [env.user("dup1").dn.clone(), env.user("dup2").dn.clone()]
    );
    for f in [
        "(mail=mixed.case@ldap.autoencrypt.test)",
        "(mail=MIXED.CASE@LDAP.AUTOENCRYPT.TEST)",
    ] {
        assert_eq!(
            by(f),
            [env.user("upper").dn.clone()],
            "mail matches case-insensitively"
        );
    }
    for f in [
        "(proxyAddresses=smtp:alias@ldap.autoencrypt.test)",
        "(proxyAddresses=SMTP:alias@ldap.autoencrypt.test)",
        "(proxyAddresses=smtp:primary@ldap.autoencrypt.test)",
        "(|(mail=alias@ldap.autoencrypt.test)(proxyAddresses=smtp:alias@ldap.autoencrypt.test))",
    ] {
        assert_eq!(by(f), [env.user("primary").dn.clone()], "{f}");
    }
    assert!(by("(mail=alias@ldap.autoencrypt.test)").is_empty());
    assert!(by("(mail=someone-else@ldap.autoencrypt.test)").is_empty());
    // An escaped filter (RFC 4515) finds nothing; the unescaped one would
    // have matched everyone.
    assert!(by("(mail=a\\2a\\29\\28uid=\\2a@x)").is_empty());
    assert_eq!(by("(mail=*)").len(), LDAP_USER_IDS.len());
    // Indexed: no "not indexed" warning for mail or proxyAddresses.
    let log = env.tls_log();
    assert!(!log.contains("not indexed"), "{log}");
}

#[test]
fn stop_start_add_delete() {
    let env = LdapEnv::start();
    let url = env.ldap_url().to_string();
    let pid = env.plain_pid().unwrap();
    let search = |ep, uid: &str| {
        env.ldapsearch(
            ep,
            Bind::Milter,
            env.base(),
            &format!("(uid={uid})"),
            &["mail"],
        )
    };
    let ldif = |uid: &str, cert: &Path| {
        format!(
            "dn: uid={uid},{}\nobjectClass: inetOrgPerson\nobjectClass: autoencryptPgpKeyHolder\nuid: {uid}\ncn: {uid}\nsn: {uid}\nmail: {uid}@ldap.autoencrypt.test\nuserCertificate;binary:: {}\n",
            env.people_base(),
            cert_der_b64(cert)
        )
    };

    // Added while both run: on both.
    env.add(&ldif("added", &env.user("one").certs[0]));
    for ep in [Endpoint::Plain, Endpoint::Ldaps, Endpoint::Ldapi] {
        let bind = if ep == Endpoint::Ldapi {
            Bind::External
        } else {
            Bind::Milter
        };
        let s = env.ldapsearch(
            ep,
            bind,
            env.base(),
            "(uid=added)",
            &["userCertificate;binary"],
        );
        assert_eq!(found(&s, "added").len(), 1, "{ep:?}");
        assert_eq!(
            s.entries[0].values("userCertificate;binary"),
            [read(&env.user("one").certs_der[0]).as_slice()]
        );
    }
    // A change record: a pgpKey for it.
    let key = read(env.user("pgp").openpgp_public.as_ref().unwrap());
    env.modify(&format!(
        "dn: uid=added,{}\nchangetype: modify\nadd: pgpKey\npgpKey:: {}\n",
        env.people_base(),
        b64(&key)
    ));
    let s = env.ldapsearch(
        Endpoint::Ldaps,
        Bind::Milter,
        env.base(),
        "(uid=added)",
        &["pgpKey"],
    );
    assert_eq!(s.entries[0].values("pgpKey"), [key.as_slice()]);

    // Down: refused on the port and the socket; the tls slapd goes on.
    env.stop_plain();
    assert_eq!(env.plain_pid(), None);
    assert_eq!(search(Endpoint::Plain, "one").code, 255);
    assert_ne!(
        env.ldapsearch(
            Endpoint::Ldapi,
            Bind::External,
            env.base(),
            "(uid=one)",
            &[]
        )
        .code,
        0
    );
    assert_eq!(
        found(&search(Endpoint::Ldaps, "one"), "tls while plain is down").len(),
        1
    );
    // Changes while it is down go into its database (slapadd/slapmodify).
    env.add(&ldif("offline", &env.user("two").certs[1]));
    env.delete(&format!("uid=added,{}", env.people_base()));
    env.stop_plain(); // twice: nothing to stop

    // Back, on the same port, with the changes.
    env.start_plain();
    let pid2 = env.plain_pid().unwrap();
    assert_ne!(pid, pid2);
    assert_eq!(env.ldap_url(), url);
    assert!(
        std::fs::read_to_string(env.dir().join("ldap.sh"))
            .unwrap()
            .contains(&format!("PLAIN_PID='{pid2}'"))
    );
    for ep in [Endpoint::Plain, Endpoint::Ldaps] {
        assert_eq!(found(&search(ep, "offline"), "offline").len(), 1, "{ep:?}");
        assert!(found(&search(ep, "added"), "deleted").is_empty(), "{ep:?}");
        assert_eq!(found(&search(ep, "one"), "one").len(), 1, "{ep:?}");
    }

    // The tls slapd too.
    env.stop_tls();
    assert_eq!(search(Endpoint::Ldaps, "one").code, 255);
    // (ldapsearch exits 1 when StartTLS cannot even connect.)
    let s = search(Endpoint::StartTls, "one");
    assert!(s.code != 0 && s.entries.is_empty(), "{s:?}");
    env.start_tls();
    assert_eq!(
        found(&search(Endpoint::StartTls, "one"), "tls back").len(),
        1
    );
}

#[test]
fn two_environments_run_at_once() {
    let (a, b) = thread::scope(|s| {
        let a = s.spawn(LdapEnv::start);
        let b = s.spawn(LdapEnv::start);
        (a.join().unwrap(), b.join().unwrap())
    });
    for key in [
        "LDAP_URL",
        "LDAPI_URL",
        "STARTTLS_URL",
        "LDAPS_URL",
        "HANG_URL",
        "REFUSED_URL",
    ] {
        assert_ne!(a.var(key), b.var(key), "{key}");
    }
    a.add(&format!(
        "dn: uid=only-a,{}\nobjectClass: inetOrgPerson\nuid: only-a\ncn: a\nsn: a\n",
        a.people_base()
    ));
    let s = b.ldapsearch(Endpoint::Plain, Bind::Milter, b.base(), "(uid=only-a)", &[]);
    assert!(found(&s, "b").is_empty());
    let mut a = a;
    a.stop();
    assert_eq!(
        b.ldapsearch(Endpoint::Plain, Bind::Milter, b.base(), "(uid=one)", &[])
            .entries
            .len(),
        1
    );
}
