//! The one small interface both database drivers implement, so that every
//! store operation's SQL and logic is written once: values (only TEXT and
//! BIGINT cross it), rows, a connection inside a transaction ([`Conn`]),
//! and a database that runs a transaction body ([`Db`]).
//!
//! SQL is written for both: `$1..$n` placeholders (the SQLite driver
//! rewrites them to `?1..?n`), upserts with `ON CONFLICT … DO …`, no
//! arithmetic on parameters (PostgreSQL would have to guess their types).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A value crossing to or from the database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Value {
    /// TEXT.
    Text(String),
    /// BIGINT (SQLite INTEGER).
    Int(i64),
    /// NULL.
    Null,
    /// Read from a column holding something else (a BLOB or REAL someone
    /// wrote into a SQLite file, a PostgreSQL type the schema never
    /// uses): named, so that the row is refused, not misread.
    Unsupported(String),
}

impl Value {
    /// A TEXT value.
    pub(crate) fn text(s: impl Into<String>) -> Value {
        Value::Text(s.into())
    }

    /// What the value is, in words (errors).
    pub(crate) fn kind(&self) -> &str {
        match self {
            Value::Text(_) => "text",
            Value::Int(_) => "an integer",
            Value::Null => "NULL",
            Value::Unsupported(t) => t,
        }
    }
}

/// One result row, its columns in the statement's order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Row(pub(crate) Vec<Value>);

impl Row {
    fn get(&self, i: usize) -> Result<&Value, String> {
        self.0
            .get(i)
            .ok_or_else(|| format!("column {i} is missing ({} columns)", self.0.len()))
    }

    /// Column `i` as text; anything else is an error naming the column.
    pub(crate) fn text(&self, i: usize) -> Result<&str, String> {
        match self.get(i)? {
            Value::Text(s) => Ok(s),
            v => Err(format!("column {i} holds {}, not text", v.kind())),
        }
    }

    /// Column `i` as text or NULL.
    pub(crate) fn opt_text(&self, i: usize) -> Result<Option<&str>, String> {
        match self.get(i)? {
            Value::Null => Ok(None),
            Value::Text(s) => Ok(Some(s)),
            v => Err(format!("column {i} holds {}, not text", v.kind())),
        }
    }

    /// Column `i` as an integer.
    pub(crate) fn int(&self, i: usize) -> Result<i64, String> {
        match self.get(i)? {
            Value::Int(n) => Ok(*n),
            v => Err(format!("column {i} holds {}, not an integer", v.kind())),
        }
    }

    /// Column `i` as an integer or NULL.
    pub(crate) fn opt_int(&self, i: usize) -> Result<Option<i64>, String> {
        match self.get(i)? {
            Value::Null => Ok(None),
            Value::Int(n) => Ok(Some(*n)),
            v => Err(format!("column {i} holds {}, not an integer", v.kind())),
        }
    }
}

/// What went wrong below the store's operations; the store adds which
/// store and which operation ([`super::StoreError`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DbError {
    /// No connection could be made, or it was lost (the server is down,
    /// refused us, the TLS handshake or the login failed).
    Unavailable(String),
    /// No answer within this long.
    Timeout(Duration),
    /// The database refused a statement.
    Query(String),
    /// The schema is newer than this program knows.
    SchemaTooNew {
        /// The database's schema version.
        found: i64,
        /// The newest this program knows.
        known: i64,
    },
    /// A row whose values cannot be what the schema says.
    BadRow {
        /// Which row (table and key).
        row: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbError::Unavailable(r) | DbError::Query(r) => f.write_str(r),
            DbError::Timeout(d) => write!(f, "no answer within {} ms", d.as_millis()),
            DbError::SchemaTooNew { found, known } => {
                write!(f, "schema version {found}, newer than {known}")
            }
            DbError::BadRow { row, reason } => write!(f, "{row}: {reason}"),
        }
    }
}

/// A row that cannot be read as the schema says: `table` and the row's
/// key name it (never a key's bytes).
pub(crate) fn bad_row(row: impl Into<String>, reason: impl Into<String>) -> DbError {
    DbError::BadRow {
        row: row.into(),
        reason: reason.into(),
    }
}

/// A boxed future of a driver call.
pub(crate) type DbFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, DbError>> + Send + 'a>>;

/// A connection inside a transaction.
pub(crate) trait Conn: Send {
    /// Runs a statement that returns rows.
    fn query<'a>(&'a mut self, sql: &'static str, params: &'a [Value]) -> DbFuture<'a, Vec<Row>>;
    /// Runs a statement; the number of rows it changed.
    fn execute<'a>(&'a mut self, sql: &'static str, params: &'a [Value]) -> DbFuture<'a, u64>;
}

/// The work of one transaction: committed when it returns `Ok`, rolled
/// back otherwise.
pub(crate) type Body = Box<dyn for<'c> FnOnce(&'c mut dyn Conn) -> DbFuture<'c, ()> + Send>;

/// Whether a transaction writes (SQLite takes the write lock at its start,
/// so that two writers never deadlock upgrading a read lock).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// Reads only.
    Read,
    /// Writes.
    Write,
}

/// Which driver, where SQL differs (the migration lock).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// SQLite (rusqlite).
    Sqlite,
    /// PostgreSQL (tokio-postgres).
    Postgres,
}

/// A database the store runs transactions on.
pub(crate) trait Db: Send + Sync {
    /// The store as logs and errors show it (never a password).
    fn describe(&self) -> &str;
    /// Runs `body` in one transaction, bounded by the store's timeout.
    fn transaction(&self, access: Access, body: Body) -> DbFuture<'_, ()>;
}
