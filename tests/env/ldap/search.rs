//! Searching the LDAP test environment with OpenLDAP's `ldapsearch`:
//! which endpoint, bound as whom, and the LDIF it printed parsed into
//! entries. Part of `ldap.rs` (`LdapEnv`), which re-exports it.

use std::process::Command;

use super::{LdapEnv, read_line};

/// One of the environment's endpoints, for [`LdapEnv::ldapsearch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// slapd "plain", `ldap://127.0.0.1:PORT`, no TLS.
    Plain,
    /// slapd "plain", `ldapi://` (the socket under the environment's dir).
    Ldapi,
    /// slapd "tls", `ldap://127.0.0.1:PORT2` with StartTLS (`-ZZ`).
    StartTls,
    /// slapd "tls", `ldap://127.0.0.1:PORT2` without StartTLS (refused:
    /// confidentialityRequired, 13).
    StartTlsPort,
    /// slapd "tls", `ldaps://127.0.0.1:PORT3`.
    Ldaps,
    /// hang.py: accepts, never answers.
    Hang,
    /// Nothing listens.
    Refused,
}

/// Who [`LdapEnv::ldapsearch`] binds as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bind<'a> {
    /// No bind (anonymous).
    Anonymous,
    /// The milter's service account with its password.
    Milter,
    /// The milter's service account with the wrong password.
    WrongPassword,
    /// The rootdn (`cn=admin,…`): sees everything, ACLs do not apply.
    Admin,
    /// SASL EXTERNAL (over ldapi: root's peer credentials).
    External,
    /// Any DN and password.
    Simple { dn: &'a str, password: &'a str },
}

/// One entry from an `ldapsearch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub dn: String,
    /// Attribute descriptions as the server wrote them
    /// (`userCertificate;binary`), with their values, in order.
    pub attrs: Vec<(String, Vec<u8>)>,
}

impl Entry {
    /// The values of `attr` (compared case-insensitively, options included).
    pub fn values(&self, attr: &str) -> Vec<&[u8]> {
        self.attrs
            .iter()
            .filter(|(a, _)| a.eq_ignore_ascii_case(attr))
            .map(|(_, v)| v.as_slice())
            .collect()
    }
}

/// What an `ldapsearch` did.
#[derive(Debug, Clone)]
pub struct Search {
    /// ldapsearch's exit status: the LDAP result code (0, 32 noSuchObject,
    /// 49 invalidCredentials, 13 confidentialityRequired, …), 255 when it
    /// could not reach or talk TLS to the server, 124 when it timed out.
    pub code: i32,
    pub entries: Vec<Entry>,
    pub stderr: String,
}

impl LdapEnv {
    /// `ldapsearch` below `base` (subtree) for `filter`, returning `attrs`
    /// (all user attributes when empty), bound as `bind`.
    pub fn ldapsearch(
        &self,
        endpoint: Endpoint,
        bind: Bind<'_>,
        base: &str,
        filter: &str,
        attrs: &[&str],
    ) -> Search {
        run_search(&mut self.ldapsearch_command(endpoint, bind, base, filter, attrs))
    }

    /// The command [`Self::ldapsearch`] runs, to change before running it
    /// with [`run_search`] (e.g. `.env("LDAPTLS_CACERT", env.wrong_ca_file())`).
    pub fn ldapsearch_command(
        &self,
        endpoint: Endpoint,
        bind: Bind<'_>,
        base: &str,
        filter: &str,
        attrs: &[&str],
    ) -> Command {
        let mut c = self.command("ldapsearch");
        c.args(["-LLL", "-o", "ldif-wrap=no", "-o", "nettimeout=3"]);
        let url = match endpoint {
            Endpoint::Plain => self.ldap_url(),
            Endpoint::Ldapi => self.ldapi_url(),
            Endpoint::StartTls => {
                c.arg("-ZZ");
                self.starttls_url()
            }
            Endpoint::StartTlsPort => self.starttls_url(),
            Endpoint::Ldaps => self.ldaps_url(),
            Endpoint::Hang => self.hang_url(),
            Endpoint::Refused => self.refused_url(),
        };
        c.args(["-H", url]);
        match bind {
            Bind::Anonymous => {
                c.arg("-x");
            }
            Bind::Milter => {
                c.args(["-x", "-D", self.bind_dn(), "-w"])
                    .arg(self.password());
            }
            Bind::WrongPassword => {
                c.args(["-x", "-D", self.bind_dn(), "-w"])
                    .arg(read_line(&self.wrong_password_file()));
            }
            Bind::Admin => {
                c.args(["-x", "-D", self.admin_dn(), "-w"])
                    .arg(self.admin_password());
            }
            Bind::External => {
                c.args(["-Q", "-Y", "EXTERNAL"]);
            }
            Bind::Simple { dn, password } => {
                c.args(["-x", "-D", dn, "-w", password]);
            }
        }
        c.args(["-b", base, filter]).args(attrs);
        c
    }
}

/// Runs an `ldapsearch` command (see [`LdapEnv::ldapsearch_command`]).
pub fn run_search(cmd: &mut Command) -> Search {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("LdapEnv: cannot run ldapsearch (ldap-utils): {e}"));
    Search {
        code: out.status.code().unwrap_or(-1),
        entries: parse_ldif(&String::from_utf8_lossy(&out.stdout)),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Parses `ldapsearch -LLL -o ldif-wrap=no` output: `attr: value` and
/// `attr:: base64` lines, entries separated by blank lines.
pub fn parse_ldif(text: &str) -> Vec<Entry> {
    let mut entries = Vec::new();
    for record in text.split("\n\n") {
        let mut dn = None;
        let mut attrs = Vec::new();
        for line in record
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (name, value) = if let Some((n, v)) = line.split_once(":: ") {
                (
                    n,
                    openssl::base64::decode_block(v).unwrap_or_else(|e| {
                        panic!("LdapEnv: bad base64 in ldapsearch output line {line:?}: {e}")
                    }),
                )
            } else if let Some((n, v)) = line.split_once(": ") {
                (n, v.as_bytes().to_vec())
            } else if let Some(n) = line.strip_suffix(':') {
                (n, Vec::new())
            } else {
                panic!("LdapEnv: cannot parse ldapsearch output line {line:?}");
            };
            if name.eq_ignore_ascii_case("dn") && dn.is_none() {
                dn = Some(String::from_utf8_lossy(&value).into_owned());
            } else {
                attrs.push((name.to_string(), value));
            }
        }
        if let Some(dn) = dn {
            entries.push(Entry { dn, attrs });
        }
    }
    entries
}
