//! A throwaway PostgreSQL (Debian's), for the key store tests.
//!
//! Include it on its own:
//!
//! ```ignore
//! #[path = "env/pg.rs"]
//! mod pg;
//! ```
//!
//! and call [`PgEnv::start`]: it runs `tests/env/pg-up` in a fresh
//! temporary directory (a new cluster on a free loopback port, TLS on,
//! role `aem` with a password file, database `aem`) and stops it with
//! `tests/env/pg-down` when dropped. [`PgEnv::stop`] and
//! [`PgEnv::start_again`] take the server down and back up (same port,
//! same data). Startup failures panic with the script's output: tests fail
//! loudly, they never skip.

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

use tempfile::TempDir;

#[allow(
    clippy::duplicate_mod,
    reason = "a test crate may include several environments; each carries its own copy of these helpers"
)]
#[path = "script.rs"]
mod script;
use script::{parse_env_sh, script};

/// A running (or stopped) PostgreSQL test server; stopped on drop.
#[derive(Debug)]
pub struct PgEnv {
    dir: TempDir,
    vars: BTreeMap<String, String>,
    running: bool,
}

impl PgEnv {
    /// Makes and starts a new cluster in a new temporary directory.
    ///
    /// Panics, with `pg-up`'s output, when it cannot.
    pub fn start() -> PgEnv {
        // Under /tmp: the server runs as `nobody` when the tests run as
        // root, and must reach the directory.
        let dir = tempfile::Builder::new()
            .prefix("pgenv.")
            .tempdir_in("/tmp")
            .unwrap_or_else(|e| panic!("PgEnv: cannot create a temporary directory: {e}"));
        let mut env = PgEnv {
            dir,
            vars: BTreeMap::new(),
            running: false,
        };
        env.up();
        env
    }

    fn up(&mut self) {
        let up = script("pg-up");
        let out = Command::new(&up)
            .arg(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("PgEnv: cannot run {}: {e}", up.display()));
        if !out.status.success() {
            let _ = Command::new(script("pg-down"))
                .arg(self.dir.path())
                .output();
            panic!(
                "PgEnv: {} {} failed ({}). It needs the postgresql package: run `tests/env/install-deps` as root.\n--- stderr ---\n{}\n--- stdout ---\n{}",
                up.display(),
                self.dir.path().display(),
                out.status,
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout),
            );
        }
        let sh = self.dir.path().join("pg").join("pg.sh");
        let text = std::fs::read_to_string(&sh)
            .unwrap_or_else(|e| panic!("PgEnv: cannot read {}: {e}", sh.display()));
        self.vars = parse_env_sh(&text);
        self.running = true;
    }

    /// A raw value from `pg.sh`; panics if absent.
    pub fn var(&self, key: &str) -> &str {
        self.vars
            .get(key)
            .unwrap_or_else(|| panic!("PgEnv: no {key} in pg.sh"))
    }

    /// The loopback port.
    pub fn port(&self) -> u16 {
        self.var("PG_PORT").parse().unwrap()
    }

    /// `postgres://aem@127.0.0.1:PORT/DB?sslmode=disable`.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://aem@127.0.0.1:{}/{db}?sslmode=disable",
            self.port()
        )
    }

    /// The same with another `sslmode` (and host: `127.0.0.1` or
    /// `localhost`, both in the server's certificate).
    pub fn url_tls(&self, host: &str, db: &str, sslmode: &str) -> String {
        format!(
            "postgres://aem@{host}:{}/{db}?sslmode={sslmode}",
            self.port()
        )
    }

    /// Role `aem`'s password file (one line, mode 0600).
    pub fn password_file(&self) -> PathBuf {
        PathBuf::from(self.var("PG_PASSWORD_FILE"))
    }

    /// A file with a wrong password for `aem`.
    pub fn wrong_password_file(&self) -> PathBuf {
        PathBuf::from(self.var("PG_WRONG_PASSWORD_FILE"))
    }

    /// The CA that issued the server's certificate (PEM).
    pub fn ca_file(&self) -> PathBuf {
        PathBuf::from(self.var("PG_CA_FILE"))
    }

    /// An unrelated CA (PEM).
    pub fn wrong_ca_file(&self) -> PathBuf {
        PathBuf::from(self.var("PG_WRONG_CA_FILE"))
    }

    /// The server's log (connections and disconnections are logged).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.var("PG_LOG")).unwrap_or_default()
    }

    /// The environment's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `sql` in database `db` as the superuser (over the unix
    /// socket); its output (`psql -tA`). Panics when psql fails.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-tA"])
            .args(["-h", self.var("PG_SOCKET_DIR"), "-p", self.var("PG_PORT")])
            .args(["-U", "postgres", "-d", db, "-c", sql])
            .env("HOME", "/nonexistent")
            .output()
            .unwrap_or_else(|e| panic!("PgEnv: cannot run psql: {e}"));
        assert!(
            out.status.success(),
            "psql {db} -c {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A new, empty database owned by `aem`.
    pub fn create_database(&self, name: &str) {
        self.psql("postgres", &format!("CREATE DATABASE {name} OWNER aem"));
    }

    /// Stops the server (by PID, as `pg-down`): connections are ended and
    /// new ones refused until [`Self::start_again`].
    pub fn stop(&mut self) {
        let down = script("pg-down");
        let out = Command::new(&down)
            .arg(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("PgEnv: cannot run {}: {e}", down.display()));
        assert!(
            out.status.success(),
            "pg-down failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.running = false;
    }

    /// Starts the same cluster again on the same port.
    pub fn start_again(&mut self) {
        self.up();
    }
}

impl Drop for PgEnv {
    fn drop(&mut self) {
        let down = script("pg-down");
        match Command::new(&down)
            .arg("--purge")
            .arg(self.dir.path())
            .output()
        {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "PgEnv: {} failed ({}): {}",
                down.display(),
                o.status,
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("PgEnv: cannot run {}: {e}", down.display()),
        }
    }
}
