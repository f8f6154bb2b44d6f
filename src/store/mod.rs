//! The key store: keys learned from mail, the fingerprints each key
//! source returned per address (for noticing key changes), the pins set
//! with `keys pin`, and key changes waiting for review. One [`Store`] API
//! over two databases: SQLite in the state directory (the default, no
//! configuration) and PostgreSQL for a fleet of MX hosts that share what
//! each learns.
//!
//! The rooms:
//!
//! | file | owns |
//! |---|---|
//! | `db.rs` | the driver interface: values, rows, a transaction body |
//! | `sqlite.rs`, `postgres.rs`, `pg_config.rs` | the two drivers; PostgreSQL's URL, password and TLS |
//! | `schema.rs` | the tables and their versioned migrations |
//! | `learned.rs` | learned keys: Autocrypt's update rule |
//! | `pins.rs` | per-address pins |
//! | `history.rs` | fingerprints seen per source, key changes, approval |
//!
//! Why two drivers behind a small trait and not one crate for both:
//! rusqlite and tokio-postgres are each the best-kept driver for their
//! database, and the one async "any database" crate (sqlx) brings its own
//! TLS stack, macros and a runtime layer for what is here a dozen
//! statements. The SQL is written once for both (TEXT and BIGINT only,
//! `$N` placeholders, `ON CONFLICT` upserts).

mod db;
mod history;
mod learned;
mod pg_config;
mod pins;
mod postgres;
mod schema;
mod sqlite;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use db::{Access, Conn, Db, DbError, DbFuture};

pub use history::{KeyChange, Observation, Seen, SeenBy};
pub use learned::{Learned, LearnedFrom, LearnedKey, PreferEncrypt};
pub use pins::Pin;
pub use schema::CURRENT as SCHEMA_VERSION;

/// How to reach the store (from `[store]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreSettings {
    /// `sqlite:///abs/path.sqlite` or `postgres://user@host:port/db?sslmode=…`.
    pub url: String,
    /// PostgreSQL: the password, first line of this file.
    pub password_file: Option<PathBuf>,
    /// PostgreSQL TLS: only these CAs (PEM).
    pub ca_file: Option<PathBuf>,
    /// PostgreSQL: connecting (TCP, TLS, login, schema check) takes at
    /// most this long.
    pub connect_timeout: Duration,
    /// Each call takes at most this long at the store (SQLite: also how
    /// long it waits for another process's lock).
    pub timeout: Duration,
}

impl StoreSettings {
    /// The settings `[store]` gives.
    pub fn from_config(c: &crate::config::StoreConfig) -> StoreSettings {
        StoreSettings {
            url: c.url_in_force(),
            password_file: c.password_file.clone(),
            ca_file: c.ca_file.clone(),
            connect_timeout: Duration::from_millis(c.connect_timeout_ms),
            timeout: Duration::from_millis(c.timeout_ms),
        }
    }
}

/// A store operation that failed. Every variant names the store as
/// [`Store::describe`] shows it (never a password) and, where one was
/// running, the operation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The settings cannot make a store (URL, password file, CA file).
    #[error("key store {store}: {reason}")]
    Setup {
        /// The store (its URL without any password).
        store: String,
        /// What is wrong.
        reason: String,
    },
    /// No connection could be made, or it was lost.
    #[error("key store {store}: {what}: unavailable: {reason}")]
    Unavailable {
        /// The store.
        store: String,
        /// The operation.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// No answer in time.
    #[error("key store {store}: {what}: no answer within {} ms", after.as_millis())]
    Timeout {
        /// The store.
        store: String,
        /// The operation.
        what: &'static str,
        /// How long it waited.
        after: Duration,
    },
    /// The database refused a statement.
    #[error("key store {store}: {what}: {reason}")]
    Query {
        /// The store.
        store: String,
        /// The operation.
        what: &'static str,
        /// The database's message.
        reason: String,
    },
    /// A value given to the store that it cannot keep.
    #[error("key store {store}: {what}: {reason}")]
    Invalid {
        /// The store.
        store: String,
        /// The operation.
        what: &'static str,
        /// What is wrong with the value.
        reason: String,
    },
    /// The database's schema is newer than this program knows.
    #[error(
        "key store {store}: the schema is version {found}, newer than this autoencrypt-milter \
         knows ({known}): run the newer version against it"
    )]
    SchemaTooNew {
        /// The store.
        store: String,
        /// Its schema version.
        found: i64,
        /// The newest this program knows.
        known: i64,
    },
    /// A row holds what the schema does not allow (bad base64, an
    /// unknown method): the operation fails, nothing is guessed.
    #[error("key store {store}: {what}: {row}: {reason}")]
    BadRow {
        /// The store.
        store: String,
        /// The operation.
        what: &'static str,
        /// Which row (table and key).
        row: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl StoreError {
    /// The store, as [`Store::describe`] shows it.
    pub fn store(&self) -> &str {
        match self {
            StoreError::Setup { store, .. }
            | StoreError::Unavailable { store, .. }
            | StoreError::Timeout { store, .. }
            | StoreError::Query { store, .. }
            | StoreError::Invalid { store, .. }
            | StoreError::SchemaTooNew { store, .. }
            | StoreError::BadRow { store, .. } => store,
        }
    }

    /// A short name of the kind of failure (a metric label).
    pub fn label(&self) -> &'static str {
        match self {
            StoreError::Setup { .. } => "setup",
            StoreError::Unavailable { .. } => "unavailable",
            StoreError::Timeout { .. } => "timeout",
            StoreError::Query { .. } => "query",
            StoreError::Invalid { .. } => "invalid",
            StoreError::SchemaTooNew { .. } => "schema",
            StoreError::BadRow { .. } => "bad_row",
        }
    }
}

/// The key store. Cheap to clone: clones share one connection.
#[derive(Clone)]
pub struct Store {
    db: Arc<dyn Db>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Store").field(&self.db.describe()).finish()
    }
}

impl Store {
    /// Opens the store `settings.url` names.
    ///
    /// SQLite (`sqlite:///abs/path.sqlite`): creates the file (0600) and
    /// its missing parent directories (0700), sets WAL and the busy
    /// timeout, migrates — now; an error here is a start-up error.
    /// PostgreSQL (`postgres://user@host:port/db?sslmode=…`, password only
    /// from `password_file`): reads the files and returns at once; it
    /// connects on first use, migrates on each new connection and
    /// connects again after a failure.
    pub fn open(settings: &StoreSettings) -> Result<Store, StoreError> {
        let url = settings.url.trim();
        if url.starts_with("sqlite://") {
            let Some(path) = sqlite::path_of(url) else {
                return Err(StoreError::Setup {
                    store: url.to_owned(),
                    reason: "no file name after sqlite://".to_owned(),
                });
            };
            let db = sqlite::Sqlite::open(&path, settings.timeout, unix_now())
                .map_err(|e| context(&format!("sqlite {}", path.display()), "open", e))?;
            return Ok(Store { db: Arc::new(db) });
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pg = pg_config::pg_config(
                url,
                settings.password_file.as_deref(),
                settings.ca_file.as_deref(),
                settings.connect_timeout,
            )
            .map_err(|reason| StoreError::Setup {
                store: redact(url),
                reason,
            })?;
            let db = postgres::Postgres::new(pg, settings.connect_timeout, settings.timeout);
            return Ok(Store { db: Arc::new(db) });
        }
        Err(StoreError::Setup {
            store: redact(url),
            reason: "not a store URL (expected sqlite:///path/keys.sqlite or postgres://…)"
                .to_owned(),
        })
    }

    /// The store for logs: `sqlite /var/lib/…/keys.sqlite`,
    /// `postgres host:port/db`.
    pub fn describe(&self) -> String {
        self.db.describe().to_owned()
    }

    /// Whether the store answers (PostgreSQL: connects if need be).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.run("ping", Access::Read, |c| {
            Box::pin(async move { c.query("SELECT 1", &[]).await.map(drop) })
        })
        .await
    }

    /// Runs `f` in one transaction; its result, or the failure with the
    /// store and `what` for context.
    async fn run<R, F>(&self, what: &'static str, access: Access, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: for<'c> FnOnce(&'c mut dyn Conn) -> DbFuture<'c, R> + Send + 'static,
    {
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let body: db::Body = Box::new(move |c| {
            let fut = f(c);
            Box::pin(async move {
                let _ = tx.send(fut.await?);
                Ok(())
            })
        });
        self.db
            .transaction(access, body)
            .await
            .map_err(|e| context(self.db.describe(), what, e))?;
        rx.try_recv().map_err(|_| StoreError::Query {
            store: self.describe(),
            what,
            reason: "internal: the transaction committed without a result".to_owned(),
        })
    }
}

/// A driver's error with the store and the operation.
fn context(store: &str, what: &'static str, e: DbError) -> StoreError {
    let store = store.to_owned();
    match e {
        DbError::Unavailable(reason) => StoreError::Unavailable {
            store,
            what,
            reason,
        },
        DbError::Timeout(after) => StoreError::Timeout { store, what, after },
        DbError::Query(reason) => StoreError::Query {
            store,
            what,
            reason,
        },
        DbError::SchemaTooNew { found, known } => StoreError::SchemaTooNew {
            store,
            found,
            known,
        },
        DbError::BadRow { row, reason } => StoreError::BadRow {
            store,
            what,
            row,
            reason,
        },
    }
}

/// `url` with any password in it replaced by `***` (for errors about a
/// URL that could not be read, so not known to hold none).
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let q: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some(("password", _)) => "password=***".to_owned(),
                    _ => p.to_owned(),
                })
                .collect();
            format!("{path}?{}", q.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// Now, unix seconds.
/// The form an address takes in every table of the store: its local
/// part lower-cased (mail systems compare it so in practice), so that
/// `Alice@x` learned from a `From:` and `alice@x` in a RCPT are one
/// address, and a pin set with the CLI applies to both.
pub fn store_key(addr: &crate::Address) -> String {
    addr.lowercased().to_string()
}

/// [`store_key`] of an address given as text: every operation takes the
/// address through it, so no caller can write a row the others miss. Text
/// that is no address is kept as given (it matches nothing real).
pub(crate) fn normal(address: &str) -> String {
    crate::Address::parse(address).map_or_else(|_| address.to_owned(), |a| store_key(&a))
}

pub(crate) fn unix_now() -> i64 {
    crate::backend::unix_seconds(std::time::SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://aem:hunter2@db:5432/keys?sslmode=require"),
            "postgres://aem:***@db:5432/keys?sslmode=require"
        );
        assert_eq!(
            redact("postgres://aem@db/keys?password=hunter2&x=1"),
            "postgres://aem@db/keys?password=***&x=1"
        );
        assert_eq!(redact("postgres://db/keys"), "postgres://db/keys");
    }
}
