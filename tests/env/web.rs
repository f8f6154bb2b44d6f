//! The HTTPS test environment (WKD hosts and keyservers), for integration
//! tests.
//!
//! Include it next to the DNS environment:
//!
//! ```ignore
//! #[path = "env/mod.rs"]
//! mod env;
//! #[path = "env/web.rs"]
//! mod web;
//! ```
//!
//! and call [`WebEnv::start`] with a running [`DnsEnv`]: it runs
//! `tests/env/web-up` on the DNS environment's directory (nginx on
//! `WEB_IP:443` with certificates from a test CA, `hang.py` on `HANG_IP`,
//! nothing on `REFUSED_IP`; the A records are in the DNS environment's
//! zones) and stops it with `tests/env/web-down` when dropped. Drop it
//! before the `DnsEnv` (a local declared after it is). Startup failures
//! panic with the script's output: tests fail loudly, they never skip.
//!
//! See "Web test environment" in `tests/env/README.md` for the users and
//! what each URL answers.

#![allow(dead_code)]
#![allow(
    clippy::panic,
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test helper: failures must panic loudly"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

#[allow(
    clippy::duplicate_mod,
    reason = "a test crate may include several environments; each carries its own copy of these helpers"
)]
#[path = "script.rs"]
mod script;
use script::{parse_env_sh, script};

use crate::env::DnsEnv;

/// The ids of the web test users, as [`WebEnv::user`] takes them.
pub const WEB_USER_IDS: &[&str] = &[
    "alice",
    "bob",
    "multi",
    "other",
    "nouid",
    "expired",
    "missing",
    "error",
    "slow",
    "html",
    "huge",
    "redirect",
    "moved",
    "upper",
    "pgpwkd",
    "ks",
    "ksmissing",
    "y",
    "badtls",
    "hang",
    "refused",
    "built",
];

/// One web test user: the address and, when it has one, its OpenPGP key.
#[derive(Debug, Clone)]
pub struct WebUser {
    /// Short id (`alice`, `bob`, …; see [`WEB_USER_IDS`]).
    pub id: String,
    /// The mail address, e.g. `alice@wkd.autoencrypt.test`.
    pub address: String,
    /// Primary key fingerprint (40 hex digits, upper case), when the user
    /// has a key.
    pub fpr: Option<String>,
    /// The binary transferable public key (as WKD serves it, alone).
    pub public: Option<PathBuf>,
    /// GNUPGHOME holding the secret key (the same for every user).
    pub gnupghome: PathBuf,
    /// The URL a client asks first: WKD advanced, direct for `bob`, the
    /// keyserver's by-email URL for `ks`/`ksmissing`.
    pub url: String,
}

/// A running web test environment; stopped on drop.
#[derive(Debug)]
pub struct WebEnv {
    dns_dir: PathBuf,
    vars: BTreeMap<String, String>,
    users: BTreeMap<String, WebUser>,
    stopped: bool,
}

impl WebEnv {
    /// Starts nginx and hang.py for `dns`'s zones.
    ///
    /// Panics, with `web-up`'s output, when it cannot.
    pub fn start(dns: &DnsEnv) -> WebEnv {
        let dns_dir = dns.dir().to_path_buf();
        let up = script("web-up");
        let out = Command::new(&up)
            .arg(&dns_dir)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "WebEnv: cannot run {}: {e} (bash and nginx from tests/env/install-deps are required)",
                    up.display()
                )
            });
        if !out.status.success() {
            let _ = Command::new(script("web-down")).arg(&dns_dir).output();
            panic!(
                "WebEnv: {} {} failed ({}). It needs root and nginx: run `tests/env/install-deps` as root.\n--- stderr ---\n{}\n--- stdout ---\n{}",
                up.display(),
                dns_dir.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout),
            );
        }
        let web_sh = dns_dir.join("web").join("web.sh");
        let text = std::fs::read_to_string(&web_sh)
            .unwrap_or_else(|e| panic!("WebEnv: cannot read {}: {e}", web_sh.display()));
        let mut env = WebEnv {
            dns_dir,
            vars: parse_env_sh(&text),
            users: BTreeMap::new(),
            stopped: false,
        };
        let ids: Vec<String> = env
            .var("WEB_USERS")
            .split_whitespace()
            .map(str::to_string)
            .collect();
        for id in ids {
            let user = env.load_user(&id);
            env.users.insert(id, user);
        }
        env
    }

    fn load_user(&self, id: &str) -> WebUser {
        let p = format!("WEB_USER_{}_", id.to_uppercase());
        let get = |k: &str| self.vars.get(&format!("{p}{k}")).cloned();
        WebUser {
            id: id.to_string(),
            address: self.var(&format!("{p}ADDRESS")).to_string(),
            fpr: get("FPR"),
            public: get("PUBLIC").map(PathBuf::from),
            gnupghome: self.gnupghome(),
            url: self.var(&format!("{p}URL")).to_string(),
        }
    }

    /// A raw value from `web.sh` (see tests/env/README.md); panics if absent.
    pub fn var(&self, key: &str) -> &str {
        self.vars
            .get(key)
            .unwrap_or_else(|| panic!("WebEnv: no {key} in web.sh"))
    }

    /// The environment's directory (`<dns dir>/web`: config, logs, roots).
    pub fn dir(&self) -> PathBuf {
        PathBuf::from(self.var("WEB_ENV_DIR"))
    }

    /// The test CA (PEM) that issued every server certificate.
    pub fn ca_file(&self) -> PathBuf {
        PathBuf::from(self.var("CA_FILE"))
    }

    /// A user by id (see [`WEB_USER_IDS`]); panics on an unknown id.
    pub fn user(&self, id: &str) -> &WebUser {
        self.users
            .get(id)
            .unwrap_or_else(|| panic!("WebEnv: no web test user {id:?}"))
    }

    /// All users, by id.
    pub fn users(&self) -> impl Iterator<Item = &WebUser> {
        self.users.values()
    }

    /// GNUPGHOME holding every web user's secret key (y's included).
    pub fn gnupghome(&self) -> PathBuf {
        PathBuf::from(self.var("GNUPGHOME"))
    }

    /// Where a test writes `autoencrypt-milter wkd build --out` output:
    /// nginx serves `advanced/` as `openpgpkey.built.autoencrypt.test` and
    /// `direct/built.autoencrypt.test/` as `built.autoencrypt.test`.
    pub fn built_dir(&self) -> PathBuf {
        PathBuf::from(self.var("BUILT_DIR"))
    }

    /// The VKS keyserver, `https://keys.autoencrypt.test` (no slash).
    pub fn keyserver_url(&self) -> String {
        self.var("KEYSERVER_URL").to_string()
    }

    /// A keyserver that answers 500 to everything.
    pub fn failing_keyserver_url(&self) -> String {
        self.var("FAILING_KEYSERVER_URL").to_string()
    }

    /// nginx's access log so far, one line per request:
    /// `CLIENT [TIME] SCHEME://HOST:PORT "REQUEST" STATUS BYTES`.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.var("ACCESS_LOG")).unwrap_or_default()
    }

    /// nginx's error log (proxy timeouts, missing files, …).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.var("NGINX_ERROR_LOG")).unwrap_or_default()
    }

    /// Stops nginx and hang.py now (also done on drop).
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let down = script("web-down");
        match Command::new(&down).arg(&self.dns_dir).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "WebEnv: {} failed ({}): {}",
                down.display(),
                o.status,
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("WebEnv: cannot run {}: {e}", down.display()),
        }
        // If the DnsEnv went first, its directory (and the pid files in it)
        // is gone and web-down found nothing: stop the daemons by the PIDs
        // web.sh recorded.
        if !self.dns_dir.join("web").exists() {
            for (key, what) in [("NGINX_PID", "nginx"), ("HANG_PID", "hang.py")] {
                if let Some(pid) = self.vars.get(key) {
                    kill_if(pid, what);
                }
            }
        }
    }
}

/// SIGTERM to `pid` if its command line still names `what`.
fn kill_if(pid: &str, what: &str) {
    let cmdline = std::fs::read(Path::new("/proc").join(pid).join("cmdline")).unwrap_or_default();
    if String::from_utf8_lossy(&cmdline).contains(what) {
        let _ = Command::new("kill").args(["-TERM", pid]).output();
    }
}

impl Drop for WebEnv {
    fn drop(&mut self) {
        self.stop();
    }
}
