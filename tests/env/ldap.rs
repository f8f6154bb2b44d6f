//! The LDAP test environment (two real OpenLDAP `slapd`s), for integration
//! tests of the `ldap` key source.
//!
//! Include it on its own (it needs no DNS environment):
//!
//! ```ignore
//! #[path = "env/ldap.rs"]
//! mod ldap;
//! ```
//!
//! and call [`LdapEnv::start`]: it runs `tests/env/ldap-up` in a fresh
//! temporary directory (slapd "plain" on `ldap://` and `ldapi://`, slapd
//! "tls" on `ldap://` with StartTLS required and `ldaps://`, both loaded
//! with the test users; `hang.py` on a port that never answers; a port
//! where nothing listens) and stops it with `tests/env/ldap-down` when
//! dropped. Startup failures panic with the script's output: tests fail
//! loudly, they never skip.
//!
//! See "LDAP test environment" in `tests/env/README.md` for the users and
//! what each endpoint does.

#![allow(dead_code)]
#![allow(
    clippy::panic,
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test helper: failures must panic loudly"
)]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

#[allow(
    clippy::duplicate_mod,
    reason = "a test crate may include several environments; each carries its own copy of these helpers"
)]
#[path = "script.rs"]
mod script;
use script::{parse_env_sh, run_down, script};

#[path = "ldap/search.rs"]
mod search;
#[allow(
    unused_imports,
    reason = "the API for every test crate; each uses only part of it"
)]
pub use search::{Bind, Endpoint, Entry, Search, parse_ldif, run_search};

/// The ids of the LDAP test users, as [`LdapEnv::user`] takes them.
pub const LDAP_USER_IDS: &[&str] = &[
    "one",
    "two",
    "expired",
    "onlyexpired",
    "pkcs7",
    "pgp",
    "pgparmored",
    "both",
    "nokey",
    "primary",
    "wrongaddr",
    "local",
    "dup1",
    "dup2",
    "upper",
];

/// Seconds an `ldap*` tool run by this module may take before it is killed
/// (its own options do not bound waiting for an answer).
const TOOL_TIMEOUT_SECS: &str = "10";

/// One LDAP test user. The `cert*`, `keys` vectors are parallel: index `i`
/// of each describes the entry's `i`-th certificate, in the entry's order.
#[derive(Debug, Clone)]
pub struct LdapUser {
    /// Short id (`one`, `two`, …; see [`LDAP_USER_IDS`]).
    pub id: String,
    /// `uid=<id>,ou=people,dc=autoencrypt,dc=test`.
    pub dn: String,
    /// The entry's `mail`, e.g. `one@ldap.autoencrypt.test`
    /// (`Mixed.Case@…` for `upper`, `dup@…` for `dup1` and `dup2`).
    pub address: String,
    /// `proxyAddresses` values (only `primary` has any).
    pub proxy_addresses: Vec<String>,
    /// Certificates, PEM.
    pub certs: Vec<PathBuf>,
    /// The same certificates, DER (as stored in `userCertificate;binary`).
    pub certs_der: Vec<PathBuf>,
    /// Their private keys (PEM, PKCS#8, unencrypted).
    pub keys: Vec<PathBuf>,
    /// SHA-256 of each certificate's DER, lower-case hex.
    pub cert_sha256: Vec<String>,
    /// Whether each certificate is expired (valid 2020-01-01 … 2021-01-01).
    pub cert_expired: Vec<bool>,
    /// The attribute each certificate is stored in: `userCertificate;binary`
    /// (DER) or `userSMIMECertificate` (a DER PKCS#7 bag, see `pkcs7`).
    pub cert_attrs: Vec<String>,
    /// The e-mail address in each certificate's subjectAltName (differs from
    /// `address` only for `wrongaddr`).
    pub cert_emails: Vec<String>,
    /// The PKCS#7 SignedData bag (DER) stored in `userSMIMECertificate`.
    pub pkcs7: Option<PathBuf>,
    /// OpenPGP primary key fingerprint (40 hex digits, upper case).
    pub openpgp_fpr: Option<String>,
    /// The transferable public key, binary (`gpg --export`).
    pub openpgp_public: Option<PathBuf>,
    /// The same, ASCII-armored.
    pub openpgp_public_asc: Option<PathBuf>,
    /// `pgpKey` holds the armored form (`pgparmored`), not the binary one.
    pub openpgp_armored_in_ldap: bool,
    /// GNUPGHOME holding every LDAP user's OpenPGP secret key.
    pub gnupghome: PathBuf,
}

impl LdapUser {
    /// SHA-256 fingerprints of the certificates that are not expired.
    pub fn valid_cert_sha256(&self) -> Vec<&str> {
        self.cert_sha256
            .iter()
            .zip(&self.cert_expired)
            .filter(|(_, expired)| !**expired)
            .map(|(f, _)| f.as_str())
            .collect()
    }

    /// `(certificate PEM, private key PEM)` of the certificates that are
    /// not expired.
    pub fn valid_certs(&self) -> Vec<(&Path, &Path)> {
        (0..self.certs.len())
            .filter(|&i| !self.cert_expired[i])
            .map(|i| (self.certs[i].as_path(), self.keys[i].as_path()))
            .collect()
    }
}

/// A running LDAP test environment; stopped on drop.
#[derive(Debug)]
pub struct LdapEnv {
    dir: TempDir,
    vars: BTreeMap<String, String>,
    users: BTreeMap<String, LdapUser>,
    stopped: bool,
}

impl LdapEnv {
    /// Builds and starts a fresh environment in a new temporary directory.
    ///
    /// Panics, with `ldap-up`'s output, when it cannot.
    pub fn start() -> LdapEnv {
        let dir = tempfile::Builder::new()
            .prefix("ldapenv.")
            .tempdir()
            .unwrap_or_else(|e| panic!("LdapEnv: cannot create a temporary directory: {e}"));
        let up = script("ldap-up");
        let out = Command::new(&up)
            .arg(dir.path())
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "LdapEnv: cannot run {}: {e} (bash, slapd and ldap-utils from tests/env/install-deps are required)",
                    up.display()
                )
            });
        if !out.status.success() {
            let _ = Command::new(script("ldap-down")).arg(dir.path()).output();
            panic!(
                "LdapEnv: {} {} failed ({}). It needs root, slapd and ldap-utils: run `tests/env/install-deps` as root.\n--- stderr ---\n{}\n--- stdout ---\n{}",
                up.display(),
                dir.path().display(),
                out.status,
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout),
            );
        }
        let ldap_sh = dir.path().join("ldap").join("ldap.sh");
        let text = std::fs::read_to_string(&ldap_sh)
            .unwrap_or_else(|e| panic!("LdapEnv: cannot read {}: {e}", ldap_sh.display()));
        let mut env = LdapEnv {
            dir,
            vars: parse_env_sh(&text),
            users: BTreeMap::new(),
            stopped: false,
        };
        let ids: Vec<String> = env
            .var("LDAP_USERS")
            .split_whitespace()
            .map(str::to_string)
            .collect();
        for id in ids {
            let user = env.load_user(&id);
            env.users.insert(id, user);
        }
        env
    }

    fn load_user(&self, id: &str) -> LdapUser {
        let p = format!("LDAP_USER_{}_", id.to_uppercase());
        let get = |k: &str| self.vars.get(&format!("{p}{k}")).cloned();
        let list = |k: &str| -> Vec<String> {
            get(k)
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_string)
                .collect()
        };
        let paths = |k: &str| list(k).into_iter().map(PathBuf::from).collect();
        LdapUser {
            id: id.to_string(),
            dn: self.var(&format!("{p}DN")).to_string(),
            address: self.var(&format!("{p}ADDRESS")).to_string(),
            proxy_addresses: list("PROXY_ADDRESSES"),
            certs: paths("CERTS"),
            certs_der: paths("CERTS_DER"),
            keys: paths("KEYS"),
            cert_sha256: list("CERT_SHA256"),
            cert_expired: list("CERT_STATE").iter().map(|s| s == "expired").collect(),
            cert_attrs: list("CERT_ATTRS"),
            cert_emails: list("CERT_EMAILS"),
            pkcs7: get("PKCS7").map(PathBuf::from),
            openpgp_fpr: get("PGP_FPR"),
            openpgp_public: get("PGP_PUBLIC").map(PathBuf::from),
            openpgp_public_asc: get("PGP_PUBLIC_ASC").map(PathBuf::from),
            openpgp_armored_in_ldap: get("PGP_STORED").as_deref() == Some("armored"),
            gnupghome: PathBuf::from(self.var(&format!("{p}GNUPGHOME"))),
        }
    }

    /// A raw value from `ldap.sh` (see tests/env/README.md); panics if absent.
    pub fn var(&self, key: &str) -> &str {
        self.vars
            .get(key)
            .unwrap_or_else(|| panic!("LdapEnv: no {key} in ldap.sh"))
    }

    fn path(&self, key: &str) -> PathBuf {
        PathBuf::from(self.var(key))
    }

    /// The environment's directory (`<tempdir>/ldap`: configs, databases,
    /// logs, users' material).
    pub fn dir(&self) -> PathBuf {
        self.path("LDAP_ENV_DIR")
    }

    /// slapd "plain": `ldap://127.0.0.1:PORT` (no TLS).
    pub fn ldap_url(&self) -> &str {
        self.var("LDAP_URL")
    }

    /// slapd "plain": `ldapi://%2F…%2Fldapi` (SASL EXTERNAL as root works).
    pub fn ldapi_url(&self) -> &str {
        self.var("LDAPI_URL")
    }

    /// The ldapi socket's path.
    pub fn ldapi_socket(&self) -> PathBuf {
        self.path("LDAPI_SOCKET")
    }

    /// slapd "tls": `ldap://127.0.0.1:PORT2`; StartTLS is offered and
    /// required before anything else (`security tls=1`).
    pub fn starttls_url(&self) -> &str {
        self.var("STARTTLS_URL")
    }

    /// slapd "tls": `ldaps://127.0.0.1:PORT3`.
    pub fn ldaps_url(&self) -> &str {
        self.var("LDAPS_URL")
    }

    /// `ldap://127.0.0.1:PORT4`: accepts TCP, never answers (also as
    /// `ldaps://` on the same port: the TLS handshake never completes).
    pub fn hang_url(&self) -> &str {
        self.var("HANG_URL")
    }

    /// `ldap://127.0.0.1:PORT5`: nothing listened there at start.
    pub fn refused_url(&self) -> &str {
        self.var("REFUSED_URL")
    }

    /// `dc=autoencrypt,dc=test`.
    pub fn base(&self) -> &str {
        self.var("BASE")
    }

    /// `ou=people,dc=autoencrypt,dc=test`.
    pub fn people_base(&self) -> &str {
        self.var("PEOPLE_BASE")
    }

    /// `ldap.autoencrypt.test`, every user's domain but `local`'s.
    pub fn domain(&self) -> &str {
        self.var("DOMAIN")
    }

    /// `local.autoencrypt.test`, user `local`'s domain.
    pub fn local_domain(&self) -> &str {
        self.var("LOCAL_DOMAIN")
    }

    /// The milter's service account, `cn=milter,ou=services,dc=autoencrypt,dc=test`.
    pub fn bind_dn(&self) -> &str {
        self.var("BIND_DN")
    }

    /// Its password: one line, newline-terminated, mode 0600.
    pub fn password_file(&self) -> PathBuf {
        self.path("PASSWORD_FILE")
    }

    /// The password itself (the file's line without its newline).
    pub fn password(&self) -> String {
        read_line(&self.password_file())
    }

    /// A wrong password for the same account, same format.
    pub fn wrong_password_file(&self) -> PathBuf {
        self.path("WRONG_PASSWORD_FILE")
    }

    /// The rootdn, `cn=admin,dc=autoencrypt,dc=test`.
    pub fn admin_dn(&self) -> &str {
        self.var("ADMIN_DN")
    }

    /// The rootdn's password file (same format as [`Self::password_file`]).
    pub fn admin_password_file(&self) -> PathBuf {
        self.path("ADMIN_PASSWORD_FILE")
    }

    /// The rootdn's password.
    pub fn admin_password(&self) -> String {
        read_line(&self.admin_password_file())
    }

    /// The DN root's SASL EXTERNAL bind over ldapi maps to
    /// (`gidNumber=0+uidNumber=0,cn=peercred,cn=external,cn=auth`).
    pub fn external_dn(&self) -> &str {
        self.var("EXTERNAL_DN")
    }

    /// The test CA (PEM) that issued slapd "tls"'s certificate
    /// (SAN IP:127.0.0.1, DNS:localhost).
    pub fn ca_file(&self) -> PathBuf {
        self.path("CA_FILE")
    }

    /// An unrelated CA (PEM): TLS with it as the only trust must fail.
    pub fn wrong_ca_file(&self) -> PathBuf {
        self.path("WRONG_CA_FILE")
    }

    /// The CA (PEM) that issued the users' S/MIME certificates.
    pub fn user_ca_file(&self) -> PathBuf {
        self.path("USER_CA_FILE")
    }

    /// Its private key (PEM), for tests that issue more certificates.
    pub fn user_ca_key(&self) -> PathBuf {
        self.path("USER_CA_KEY")
    }

    /// GNUPGHOME holding every LDAP user's OpenPGP secret key.
    pub fn gnupghome(&self) -> PathBuf {
        self.path("GNUPGHOME")
    }

    /// A user by id (see [`LDAP_USER_IDS`]); panics on an unknown id.
    pub fn user(&self, id: &str) -> &LdapUser {
        self.users
            .get(id)
            .unwrap_or_else(|| panic!("LdapEnv: no LDAP test user {id:?}"))
    }

    /// All users, by id.
    pub fn users(&self) -> impl Iterator<Item = &LdapUser> {
        self.users.values()
    }

    /// The PID of slapd "plain" now, `None` while it is stopped.
    pub fn plain_pid(&self) -> Option<u32> {
        self.slapd_pid("plain")
    }

    /// The PID of slapd "tls" now, `None` while it is stopped.
    pub fn tls_pid(&self) -> Option<u32> {
        self.slapd_pid("tls")
    }

    /// The PID of hang.py.
    pub fn hang_pid(&self) -> u32 {
        self.var("HANG_PID").parse().unwrap()
    }

    fn slapd_pid(&self, inst: &str) -> Option<u32> {
        let pidfile = self.dir().join(inst).join("slapd.pid");
        let pid: u32 = std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let state = stat.rsplit(") ").next()?.chars().next()?;
        (state != 'Z' && state != 'X').then_some(pid)
    }

    /// slapd "plain"'s stats log (`-d stats`: every connection, BIND dn,
    /// SRCH base and filter as received, RESULT err=…).
    pub fn plain_log(&self) -> String {
        std::fs::read_to_string(self.var("PLAIN_LOG")).unwrap_or_default()
    }

    /// slapd "tls"'s stats log (with STARTTLS and TLS lines).
    pub fn tls_log(&self) -> String {
        std::fs::read_to_string(self.var("TLS_LOG")).unwrap_or_default()
    }

    /// Stops slapd "plain" (by PID, as `ldap-down DIR plain`): its port
    /// and the ldapi socket refuse connections until [`Self::start_plain`].
    pub fn stop_plain(&self) {
        self.down("plain");
    }

    /// Starts slapd "plain" again on the same port and socket, with the
    /// same database (changes made while it ran, or offline, are kept).
    pub fn start_plain(&self) {
        self.up("plain");
    }

    /// Stops slapd "tls".
    pub fn stop_tls(&self) {
        self.down("tls");
    }

    /// Starts slapd "tls" again on the same ports.
    pub fn start_tls(&self) {
        self.up("tls");
    }

    fn down(&self, inst: &str) {
        let down = script("ldap-down");
        let out = Command::new(&down)
            .arg(self.dir.path())
            .arg(inst)
            .output()
            .unwrap_or_else(|e| panic!("LdapEnv: cannot run {}: {e}", down.display()));
        assert!(
            out.status.success(),
            "LdapEnv: ldap-down {inst} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            self.slapd_pid(inst),
            None,
            "LdapEnv: slapd {inst} still runs"
        );
    }

    fn up(&self, inst: &str) {
        let up = script("ldap-up");
        let out = Command::new(&up)
            .args(["--start", inst])
            .arg(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("LdapEnv: cannot run {}: {e}", up.display()));
        assert!(
            out.status.success(),
            "LdapEnv: ldap-up --start {inst} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Adds the entries of `ldif` (plain LDIF records, no `changetype`) to
    /// both directories, as the rootdn: `ldapadd` to a running slapd,
    /// `slapadd` into a stopped one's database. Panics if either fails.
    pub fn add(&self, ldif: &str) {
        self.change(ldif, true);
    }

    /// Applies `ldif` change records (`changetype: add|modify|delete`,
    /// RFC 2849) to both directories, as the rootdn: `ldapmodify` to a
    /// running slapd, `slapmodify` into a stopped one's database.
    pub fn modify(&self, ldif: &str) {
        self.change(ldif, false);
    }

    /// Deletes the entry `dn` (a leaf) from both directories.
    pub fn delete(&self, dn: &str) {
        self.change(&format!("dn: {dn}\nchangetype: delete\n"), false);
    }

    fn change(&self, ldif: &str, add: bool) {
        for (inst, url) in [("plain", self.ldap_url()), ("tls", self.ldaps_url())] {
            let mut cmd = if self.slapd_pid(inst).is_some() {
                let mut c = self.command("ldapmodify");
                if add {
                    c.arg("-a");
                }
                c.args(["-x", "-H", url, "-D", self.admin_dn(), "-w"])
                    .arg(self.admin_password());
                c
            } else {
                let mut c = Command::new(if add { "slapadd" } else { "slapmodify" });
                c.arg("-f").arg(self.dir().join(inst).join("slapd.conf"));
                c
            };
            let out = run_with_stdin(&mut cmd, ldif.as_bytes());
            assert!(
                out.status.success(),
                "LdapEnv: {cmd:?} ({inst}) failed ({}):\n{}{}\n--- LDIF ---\n{ldif}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
            );
        }
    }

    /// A command for an OpenLDAP client tool (`ldapsearch`, `ldapmodify`,
    /// …) under `timeout`, with no `~/.ldaprc` (HOME is unset to a path
    /// that does not exist) and `LDAPTLS_CACERT` set to [`Self::ca_file`]
    /// (override it with `.env(…)` for "wrong CA" cases).
    pub fn command(&self, tool: &str) -> Command {
        let mut c = Command::new("timeout");
        c.args([TOOL_TIMEOUT_SECS, tool])
            .env("HOME", "/nonexistent")
            .env("LDAPTLS_CACERT", self.ca_file())
            .env("LDAPTLS_REQCERT", "demand");
        c
    }

    /// Stops everything now (also done on drop).
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        run_down("ldap-down", self.dir.path(), "LdapEnv");
    }
}

impl Drop for LdapEnv {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The first line of a password file, without its line end.
fn read_line(path: &Path) -> String {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("LdapEnv: cannot read {}: {e}", path.display()));
    text.lines().next().unwrap_or_default().to_string()
}

fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("LdapEnv: cannot run {cmd:?}: {e}"));
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// Base64 (one line, as LDIF's `attr:: value` takes it) of a certificate's
/// DER; `path` holds the certificate as PEM or DER.
pub fn cert_der_b64(path: &Path) -> String {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let cert = openssl::x509::X509::from_pem(&bytes)
        .or_else(|_| openssl::x509::X509::from_der(&bytes))
        .unwrap_or_else(|e| panic!("{} is no certificate: {e}", path.display()));
    b64(&cert.to_der().unwrap())
}

/// Base64 of any bytes, one line (LDIF's `attr:: value`, e.g. a `pgpKey`).
pub fn b64(bytes: &[u8]) -> String {
    openssl::base64::encode_block(bytes)
}
