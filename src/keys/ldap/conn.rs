//! One connection's work: opening, securing and binding it, and one
//! bounded search on it — connect and operation timeouts, the server's
//! size and time limits, and the same limits enforced here, since a
//! server may not keep them. Each runs as a task of its own: ldap3 reads
//! some responses with `expect`, so a malformed answer panics, and the
//! panic must end that task (a failure), not the lookup that waits.

use std::sync::Arc;

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError, SearchOptions};

use super::entry::{DirEntry, parse_entry};
use super::settings::{Bind, LdapSettings};
use crate::keys::FailReason;

/// Most bytes of entries one search may return: far more than any
/// person's certificates, little enough that a runaway directory cannot
/// fill the memory.
pub const MAX_SEARCH_BYTES: usize = 4 * 1024 * 1024;

/// A failed operation, by what it means for the connection.
#[derive(Debug)]
pub enum Broken {
    /// The connection is gone (closed, reset): a fresh one may work.
    Closed(FailReason),
    /// The connection may be mid-answer (timeout, an answer cut off):
    /// not reused, not retried.
    Stuck(FailReason),
    /// The server answered, with something of no use: the connection is
    /// fine.
    Answer(FailReason),
}

impl Broken {
    /// The failure itself.
    pub fn reason(self) -> FailReason {
        match self {
            Broken::Closed(r) | Broken::Stuck(r) | Broken::Answer(r) => r,
        }
    }

    fn from_error(url: &str, e: LdapError) -> Broken {
        match e {
            LdapError::Timeout { .. } => Broken::Stuck(FailReason::Timeout),
            LdapError::LdapResult { result } => Broken::Answer(FailReason::BadAnswer(format!(
                "{url}: {}",
                result_text(result.rc, &result.text)
            ))),
            other => Broken::Closed(FailReason::Network(format!("{url}: {other}"))),
        }
    }
}

/// Why a connection could not be opened, and whether the directory
/// refused the bind's credentials (not worth trying again soon: Active
/// Directory counts failed binds towards locking the account).
#[derive(Debug)]
pub struct ConnectFailure {
    /// The failure.
    pub reason: FailReason,
    /// The bind was refused for the credentials or how they were sent
    /// (invalidCredentials, inappropriateAuthentication,
    /// insufficientAccessRights, authMethodNotSupported,
    /// strongerAuthRequired, confidentialityRequired).
    pub refused_bind: bool,
}

impl From<FailReason> for ConnectFailure {
    fn from(reason: FailReason) -> Self {
        ConnectFailure {
            reason,
            refused_bind: false,
        }
    }
}

/// Opens, secures and binds one connection, within the connect and
/// operation timeouts, in a task of its own.
pub async fn connect(s: Arc<LdapSettings>) -> Result<Ldap, ConnectFailure> {
    let url = s.url.clone();
    match tokio::spawn(connect_inner(s)).await {
        Ok(r) => r,
        Err(e) => Err(FailReason::BadAnswer(format!(
            "{url}: unreadable answer while connecting ({e})"
        ))
        .into()),
    }
}

async fn connect_inner(s: Arc<LdapSettings>) -> Result<Ldap, ConnectFailure> {
    let mut conn_settings = LdapConnSettings::new()
        .set_conn_timeout(s.connect_timeout)
        .set_starttls(s.starttls);
    if let Some(tls) = &s.tls {
        conn_settings = conn_settings.set_connector(tls.clone());
    }
    let opened = tokio::time::timeout(
        s.connect_timeout,
        LdapConnAsync::with_settings(conn_settings, &s.url),
    )
    .await;
    let (conn, mut ldap) = match opened {
        Err(_) | Ok(Err(LdapError::Timeout { .. })) => return Err(FailReason::Timeout.into()),
        Ok(Err(e)) => return Err(FailReason::Network(format!("{}: {e}", s.url)).into()),
        Ok(Ok(pair)) => pair,
    };
    let url = s.url.clone();
    tokio::spawn(async move {
        if let Err(e) = conn.drive().await {
            tracing::debug!("ldap {url}: connection ended: {e}");
        }
    });
    let bound = match &s.bind {
        Bind::Anonymous => return Ok(ldap),
        Bind::Simple { dn, password } => {
            tokio::time::timeout(
                s.timeout,
                ldap.with_timeout(s.timeout)
                    .simple_bind(dn, password.expose()),
            )
            .await
        }
        Bind::SaslExternal => {
            tokio::time::timeout(s.timeout, ldap.with_timeout(s.timeout).sasl_external_bind()).await
        }
    };
    match bound {
        Err(_) | Ok(Err(LdapError::Timeout { .. })) => Err(FailReason::Timeout.into()),
        Ok(Err(e)) => Err(FailReason::Network(format!("{}: {e}", s.url)).into()),
        Ok(Ok(result)) if result.rc == 0 => Ok(ldap),
        Ok(Ok(result)) => Err(ConnectFailure {
            reason: FailReason::BadAnswer(format!(
                "{}: bind {} refused: {}",
                s.url,
                s.bind.describe(),
                result_text(result.rc, &result.text)
            )),
            refused_bind: matches!(result.rc, 7 | 8 | 13 | 48 | 49 | 50),
        }),
    }
}

/// One search on `ldap` for `filter`, bounded in time, entries and
/// bytes, in a task of its own.
pub async fn search(
    s: Arc<LdapSettings>,
    ldap: Ldap,
    filter: String,
) -> Result<Vec<DirEntry>, Broken> {
    let url = s.url.clone();
    let timeout = s.timeout;
    let task = tokio::spawn(async move {
        tokio::time::timeout(timeout, search_inner(&s, ldap, &filter)).await
    });
    match task.await {
        Ok(Ok(r)) => r,
        // The connection may be stuck mid-answer: not reused.
        Ok(Err(_)) => Err(Broken::Stuck(FailReason::Timeout)),
        Err(e) => Err(Broken::Stuck(FailReason::BadAnswer(format!(
            "{url}: unreadable answer ({e})"
        )))),
    }
}

async fn search_inner(
    s: &LdapSettings,
    mut ldap: Ldap,
    filter: &str,
) -> Result<Vec<DirEntry>, Broken> {
    let opts = SearchOptions::new()
        .sizelimit(s.size_limit)
        .timelimit(i32::try_from(s.timeout.as_secs().max(1)).unwrap_or(60));
    let mut stream = ldap
        .with_search_options(opts)
        .with_timeout(s.timeout)
        .streaming_search(&s.base, s.scope, filter, s.attributes.clone())
        .await
        .map_err(|e| Broken::from_error(&s.url, e))?;
    let mut entries = Vec::new();
    let mut bytes = 0usize;
    let limit = usize::try_from(s.size_limit).unwrap_or(usize::MAX);
    loop {
        let item = stream
            .next()
            .await
            .map_err(|e| Broken::from_error(&s.url, e))?;
        let Some(item) = item else { break };
        if item.is_ref() || item.is_intermediate() {
            // Referrals are not chased: this directory answers.
            continue;
        }
        let entry = parse_entry(item.0, &s.attributes).map_err(|why| {
            Broken::Stuck(FailReason::BadAnswer(format!(
                "{}: unreadable entry: {why}",
                s.url
            )))
        })?;
        bytes = bytes.saturating_add(entry.size());
        entries.push(entry);
        if entries.len() > limit {
            // The server ignored the size limit; the connection is
            // dropped rather than left streaming.
            return Err(Broken::Stuck(too_many(&s.url, s.size_limit)));
        }
        if bytes > MAX_SEARCH_BYTES {
            return Err(Broken::Stuck(FailReason::BadAnswer(format!(
                "{}: entries larger than {MAX_SEARCH_BYTES} bytes",
                s.url
            ))));
        }
    }
    let result = stream.finish().await;
    match result.rc {
        0 => Ok(entries),
        4 => Err(Broken::Answer(too_many(&s.url, s.size_limit))),
        _ => Err(Broken::Answer(FailReason::BadAnswer(format!(
            "{}: search failed: {}",
            s.url,
            result_text(result.rc, &result.text)
        )))),
    }
}

fn too_many(url: &str, limit: i32) -> FailReason {
    FailReason::BadAnswer(format!(
        "{url}: the search matched more than {limit} entries (size_limit)"
    ))
}

/// An LDAP result code with its name (RFC 4511 §4.1.9) and the server's
/// diagnostic message, bounded and on one line.
pub fn result_text(rc: u32, text: &str) -> String {
    let name = match rc {
        1 => "operationsError",
        2 => "protocolError",
        3 => "timeLimitExceeded",
        4 => "sizeLimitExceeded",
        8 => "strongerAuthRequired",
        10 => "referral",
        11 => "adminLimitExceeded",
        13 => "confidentialityRequired",
        32 => "noSuchObject",
        34 => "invalidDNSyntax",
        48 => "inappropriateAuthentication",
        49 => "invalidCredentials",
        50 => "insufficientAccessRights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwillingToPerform",
        80 => "other",
        _ => "error",
    };
    let text = text.trim();
    if text.is_empty() {
        format!("{name} ({rc})")
    } else {
        let one_line: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(200)
            .collect();
        format!("{name} ({rc}): {one_line}")
    }
}
