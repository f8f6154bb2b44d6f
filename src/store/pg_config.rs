//! What the PostgreSQL driver connects with, made once from the settings:
//! the libpq-style URL (tokio-postgres parses it), the password from its
//! file, and TLS as `sslmode` asks, with `ca_file` as the only CAs.
//!
//! `sslmode` is read here, not by tokio-postgres (which knows only
//! disable, prefer and require): as in libpq, `prefer` (the default) and
//! `require` encrypt without checking the server unless `ca_file` is
//! given, `verify-ca` checks the chain, `verify-full` also the host name.
//! A password written in the URL is refused: URLs end up in logs, `ps`
//! and `check-config`.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
use postgres_openssl::MakeTlsConnector;
use tokio_postgres::config::{Host, SslMode};

/// A parsed PostgreSQL store address, ready to connect.
pub(crate) struct PgConfig {
    /// tokio-postgres's configuration, password included.
    pub(crate) config: tokio_postgres::Config,
    /// The TLS connector; `None` for `sslmode=disable`.
    pub(crate) tls: Option<MakeTlsConnector>,
    /// `postgres host:port/db`.
    pub(crate) shown: String,
}

impl fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

/// How far TLS checks the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verify {
    /// Encrypt, check nothing (libpq's prefer/require without a CA file).
    Nothing,
    /// The chain must lead to a trusted CA.
    Chain,
    /// The chain, and the certificate must name the host.
    Full,
}

/// Reads `url` (`postgres://user@host:port/db?sslmode=…`), the password
/// file and the CA file.
pub(crate) fn pg_config(
    url: &str,
    password_file: Option<&Path>,
    ca_file: Option<&Path>,
    connect_timeout: Duration,
) -> Result<PgConfig, String> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut sslmode = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", v)) => sslmode = Some(v.to_owned()),
            _ => rest.push(pair),
        }
    }
    let url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| format!("not a PostgreSQL URL: {e}"))?;
    if config.get_password().is_some() {
        return Err("the URL holds a password: put it in [store] password_file instead".to_owned());
    }
    let (mode, verify) = match sslmode.as_deref().unwrap_or("prefer") {
        "disable" => (SslMode::Disable, None),
        "prefer" => (SslMode::Prefer, Some(Verify::Nothing)),
        "require" => (SslMode::Require, Some(Verify::Nothing)),
        "verify-ca" => (SslMode::Require, Some(Verify::Chain)),
        "verify-full" => (SslMode::Require, Some(Verify::Full)),
        other => {
            return Err(format!(
                "sslmode={other:?} is not one of disable, prefer, require, verify-ca, verify-full"
            ));
        }
    };
    // libpq: a root certificate file makes prefer/require check the chain.
    let verify = verify.map(|v| match v {
        Verify::Nothing if ca_file.is_some() => Verify::Chain,
        v => v,
    });
    if verify.is_none() && ca_file.is_some() {
        return Err("ca_file is set, but sslmode=disable turns TLS off".to_owned());
    }
    config.ssl_mode(mode);
    if let Some(file) = password_file {
        config.password(read_password(file)?);
    }
    config.connect_timeout(connect_timeout);
    if config.get_application_name().is_none() {
        config.application_name("autoencrypt-milter");
    }
    let tls = verify.map(|v| connector(v, ca_file)).transpose()?;
    let shown = format!("postgres {}", shown(&config));
    Ok(PgConfig { config, tls, shown })
}

/// `host:port/db` (hosts joined by commas; no user, no password).
fn shown(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let port = ports
                .get(i)
                .or_else(|| ports.first())
                .copied()
                .unwrap_or(5432);
            match h {
                Host::Tcp(name) if name.contains(':') => format!("[{name}]:{port}"),
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(dir) => format!("{}:{port}", dir.display()),
            }
        })
        .collect();
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or_default();
    format!("{}/{db}", hosts.join(","))
}

/// The first line of `file`, without its line end; empty is refused.
fn read_password(file: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("password_file {}: {e}", file.display()))?;
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        return Err(format!(
            "password_file {}: the first line is empty",
            file.display()
        ));
    }
    Ok(line.to_owned())
}

fn connector(verify: Verify, ca_file: Option<&Path>) -> Result<MakeTlsConnector, String> {
    let tls = |e: openssl::error::ErrorStack| format!("TLS set-up: {e}");
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(tls)?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(tls)?;
    if let Some(file) = ca_file {
        let bad = |why: String| format!("ca_file {}: {why}", file.display());
        let pem = std::fs::read(file).map_err(|e| bad(e.to_string()))?;
        let certs = openssl::x509::X509::stack_from_pem(&pem).map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("no PEM certificate in it".to_owned()));
        }
        // A store of these CAs alone, not added to the system roots.
        let mut store = openssl::x509::store::X509StoreBuilder::new().map_err(tls)?;
        for c in certs {
            store.add_cert(c).map_err(|e| bad(e.to_string()))?;
        }
        b.set_cert_store(store.build());
    }
    if verify == Verify::Nothing {
        b.set_verify(SslVerifyMode::NONE);
    }
    let mut m = MakeTlsConnector::new(b.build());
    if verify != Verify::Full {
        m.set_callback(|c, _| {
            c.set_verify_hostname(false);
            Ok(())
        });
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]
    use super::*;

    fn parse(url: &str) -> Result<PgConfig, String> {
        pg_config(url, None, None, Duration::from_secs(1))
    }

    #[test]
    fn shown_names_host_port_db_only() {
        let c = parse("postgres://aem@db.example:6543/keys?sslmode=verify-full").unwrap();
        assert_eq!(c.shown, "postgres db.example:6543/keys");
        assert_eq!(c.config.get_ssl_mode(), SslMode::Require);
        let c = parse("postgresql://aem@127.0.0.1/keys?sslmode=disable&connect_timeout=2").unwrap();
        assert_eq!(c.shown, "postgres 127.0.0.1:5432/keys");
        assert!(c.tls.is_none());
        let c = parse("postgres://aem@h1,h2:7/aem").unwrap();
        assert_eq!(c.shown, "postgres h1:5432,h2:7/aem");
        assert_eq!(c.config.get_ssl_mode(), SslMode::Prefer);
    }

    #[test]
    fn a_password_in_the_url_is_refused() {
        for url in [
            "postgres://aem:hunter2@h/db",
            "postgres://aem@h/db?password=hunter2",
        ] {
            let e = parse(url).unwrap_err();
            assert!(e.contains("password_file"), "{e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn bad_sslmode_and_url() {
        assert!(
            parse("postgres://h/db?sslmode=allow")
                .unwrap_err()
                .contains("allow")
        );
        assert!(parse("postgres://h/db?nonsense=1").is_err());
        let e = pg_config(
            "postgres://h/db?sslmode=disable",
            None,
            Some(Path::new("/nonexistent")),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(e.contains("disable"), "{e}");
    }

    #[test]
    fn password_file_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "s3cret\nignored\n").unwrap();
        let c = pg_config("postgres://u@h/db", Some(&f), None, Duration::from_secs(1)).unwrap();
        assert_eq!(c.config.get_password(), Some(&b"s3cret"[..]));
        assert!(!format!("{c:?}").contains("s3cret"));
        std::fs::write(&f, "\n").unwrap();
        let e = pg_config("postgres://u@h/db", Some(&f), None, Duration::from_secs(1)).unwrap_err();
        assert!(e.contains("empty"), "{e}");
    }
}
