//! The DNSSEC test environment, for integration tests.
//!
//! Include it with `#[path = "env/mod.rs"] mod env;` and call
//! [`DnsEnv::start`]: it runs `tests/env/dns-up` in a fresh temporary
//! directory (nsd serving the offline-signed zones, unbound validating with
//! the test zone's DS, a server answering REFUSED for the lame child) and
//! stops everything again with `tests/env/dns-down` when dropped. Startup
//! failures (a tool missing, a daemon not answering) panic with the script's
//! output: tests fail loudly, they never skip.
//!
//! See `tests/env/README.md` for what the zones hold.

#![allow(dead_code)]
#![allow(
    clippy::panic,
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test helper: failures must panic loudly"
)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;
mod script;
use script::{parse_env_sh, run_down, script};

/// The ids of the test users, as [`DnsEnv::user`] takes them.
pub const USER_IDS: &[&str] = &[
    "both", "smime", "smimeec", "pgp", "pgprsa", "none", "hashonly", "expired", "bogus", "tcp",
    "upper", "x", "y", "lame",
];

/// One test user: address, owner names and the secret material to decrypt
/// what was encrypted to the keys published for it.
#[derive(Debug, Clone)]
pub struct DnsUser {
    /// Short id (`both`, `smime`, …, `upper`, `x`, `y`, `lame`).
    pub id: String,
    /// The mail address, e.g. `both@autoencrypt.test` or `Upper@autoencrypt.test`.
    pub address: String,
    /// SMIMEA owner name of the local part as written (absolute, trailing dot).
    pub smimea_owner: String,
    /// OPENPGPKEY owner name of the local part as written.
    pub openpgpkey_owner: String,
    /// SMIMEA owner name of the lower-cased local part.
    pub smimea_owner_lc: String,
    /// OPENPGPKEY owner name of the lower-cased local part.
    pub openpgpkey_owner_lc: String,
    /// S/MIME certificate (PEM), when the user has one.
    pub cert: Option<PathBuf>,
    /// The same certificate, DER.
    pub cert_der: Option<PathBuf>,
    /// S/MIME private key (PEM, PKCS#8, unencrypted).
    pub key: Option<PathBuf>,
    /// GNUPGHOME holding the user's OpenPGP secret key (shared by all users).
    pub gnupghome: Option<PathBuf>,
    /// OpenPGP primary key fingerprint (40 hex digits, upper case).
    pub pgp_fpr: Option<String>,
    /// Binary transferable public key, as published in OPENPGPKEY.
    pub pgp_public: Option<PathBuf>,
    /// Armored transferable secret key (no passphrase).
    pub pgp_secret: Option<PathBuf>,
}

/// A running DNSSEC test environment; stopped on drop.
#[derive(Debug)]
pub struct DnsEnv {
    dir: TempDir,
    vars: BTreeMap<String, String>,
    users: BTreeMap<String, DnsUser>,
    stopped: bool,
}

impl DnsEnv {
    /// Builds and starts a fresh environment in a new temporary directory.
    ///
    /// Panics, with `dns-up`'s output, when it cannot.
    pub fn start() -> DnsEnv {
        let dir = tempfile::Builder::new()
            .prefix("dnsenv.")
            .tempdir()
            .unwrap_or_else(|e| panic!("DnsEnv: cannot create a temporary directory: {e}"));
        let up = script("dns-up");
        let out = Command::new(&up)
            .arg(dir.path())
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "DnsEnv: cannot run {}: {e} (bash and the tools from tests/env/install-deps are required)",
                    up.display()
                )
            });
        if !out.status.success() {
            // Whatever did start is stopped by dns-up itself on failure; run
            // dns-down anyway in case it got as far as writing pidfiles.
            let _ = Command::new(script("dns-down")).arg(dir.path()).output();
            panic!(
                "DnsEnv: {} {} failed ({}). Install the test tools with `tests/env/install-deps` (root).\n--- stderr ---\n{}\n--- stdout ---\n{}",
                up.display(),
                dir.path().display(),
                out.status,
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout),
            );
        }
        let env_sh = dir.path().join("env.sh");
        let text = std::fs::read_to_string(&env_sh)
            .unwrap_or_else(|e| panic!("DnsEnv: cannot read {}: {e}", env_sh.display()));
        let vars = parse_env_sh(&text);
        let mut env = DnsEnv {
            dir,
            vars,
            users: BTreeMap::new(),
            stopped: false,
        };
        let ids: Vec<String> = env
            .var("USERS")
            .split_whitespace()
            .map(str::to_string)
            .collect();
        for id in ids {
            let user = env.load_user(&id);
            env.users.insert(id, user);
        }
        env
    }

    fn load_user(&self, id: &str) -> DnsUser {
        let p = format!("USER_{}_", id.to_uppercase());
        let get = |k: &str| self.vars.get(&format!("{p}{k}")).cloned();
        let path = |k: &str| get(k).map(PathBuf::from);
        DnsUser {
            id: id.to_string(),
            address: self.var(&format!("{p}ADDRESS")).to_string(),
            smimea_owner: self.var(&format!("{p}SMIMEA_OWNER")).to_string(),
            openpgpkey_owner: self.var(&format!("{p}OPENPGPKEY_OWNER")).to_string(),
            smimea_owner_lc: self.var(&format!("{p}SMIMEA_OWNER_LC")).to_string(),
            openpgpkey_owner_lc: self.var(&format!("{p}OPENPGPKEY_OWNER_LC")).to_string(),
            cert: path("CERT"),
            cert_der: path("CERT_DER"),
            key: path("KEY"),
            gnupghome: path("GNUPGHOME"),
            pgp_fpr: get("PGP_FPR"),
            pgp_public: path("PGP_PUBLIC"),
            pgp_secret: path("PGP_SECRET"),
        }
    }

    /// A raw value from `env.sh` (see tests/env/README.md); panics if absent.
    pub fn var(&self, key: &str) -> &str {
        self.vars
            .get(key)
            .unwrap_or_else(|| panic!("DnsEnv: no {key} in env.sh"))
    }

    fn addr(&self, key: &str) -> SocketAddr {
        let v = self.var(key);
        v.parse()
            .unwrap_or_else(|e| panic!("DnsEnv: {key}={v:?} is no socket address: {e}"))
    }

    /// The environment's directory (logs, zones, configs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The validating resolver (unbound).
    pub fn resolver(&self) -> SocketAddr {
        self.addr("UNBOUND_ADDR")
    }

    /// The authoritative server (nsd) for the parent and both served children.
    pub fn nsd(&self) -> SocketAddr {
        self.addr("NSD_ADDR")
    }

    /// The only server of `lame.autoencrypt.test.`: answers REFUSED to all.
    pub fn lame_server(&self) -> SocketAddr {
        self.addr("LAME_ADDR")
    }

    /// A loopback address where nothing listened when the environment
    /// started (for "resolver not listening" tests).
    pub fn unused_addr(&self) -> SocketAddr {
        self.addr("UNUSED_ADDR")
    }

    /// The parent zone, `autoencrypt.test.`.
    pub fn zone(&self) -> &str {
        self.var("ZONE")
    }

    /// unbound's trust anchor: the parent zone's DS (SHA-256), zone-file line.
    pub fn trust_anchor_ds(&self) -> PathBuf {
        PathBuf::from(self.var("TRUST_ANCHOR_DS"))
    }

    /// All DNSKEYs (KSK and ZSK) of the parent zone, zone-file lines without
    /// comments: the trust anchor for an in-process validator (hickory).
    pub fn trust_anchor_dnskeys(&self) -> PathBuf {
        PathBuf::from(self.var("TRUST_ANCHOR_DNSKEYS"))
    }

    /// The same DNSKEYs as a `trust-anchors { … };` file for `delv -a`.
    pub fn trust_anchor_delv(&self) -> PathBuf {
        PathBuf::from(self.var("TRUST_ANCHOR_DELV"))
    }

    /// GNUPGHOME holding every user's OpenPGP secret key.
    pub fn gnupghome(&self) -> PathBuf {
        PathBuf::from(self.var("GNUPGHOME"))
    }

    /// A user by id (see [`USER_IDS`]); panics on an unknown id.
    pub fn user(&self, id: &str) -> &DnsUser {
        self.users
            .get(id)
            .unwrap_or_else(|| panic!("DnsEnv: no test user {id:?}"))
    }

    /// All users, by id.
    pub fn users(&self) -> impl Iterator<Item = &DnsUser> {
        self.users.values()
    }

    /// unbound's log (validation failures are logged at val-log-level 2).
    pub fn unbound_log(&self) -> String {
        std::fs::read_to_string(self.var("UNBOUND_LOG")).unwrap_or_default()
    }

    /// unbound's query counter (`total.num.queries`, not reset), read with
    /// unbound-control over its local socket.
    pub fn unbound_queries(&self) -> u64 {
        let out = Command::new("unbound-control")
            .arg("-c")
            .arg(self.var("UNBOUND_CONF"))
            .arg("stats_noreset")
            .output()
            .unwrap_or_else(|e| panic!("DnsEnv: cannot run unbound-control: {e}"));
        assert!(
            out.status.success(),
            "unbound-control stats_noreset failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| l.strip_prefix("total.num.queries="))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no total.num.queries in unbound-control output:\n{text}"))
    }

    /// Stops the daemons now (also done on drop).
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        run_down("dns-down", self.dir.path(), "DnsEnv");
    }
}

impl Drop for DnsEnv {
    fn drop(&mut self) {
        self.stop();
    }
}
