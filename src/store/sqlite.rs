//! The SQLite driver (rusqlite over the system libsqlite3): one
//! connection behind a mutex, used on a thread of its own, so that a
//! writer waiting for another process's lock never stalls the milter's
//! event loop, and a lookup's store call never waits behind encryptions
//! on tokio's blocking pool (which the milter sizes to the encryption
//! slots: two large messages would hold a two-core host's pool for
//! seconds).
//!
//! Opening creates the file (mode 0600) and its missing parent
//! directories (0700), sets WAL (readers and one writer at once, the
//! milter and a `keys` command side by side) and a busy timeout, and
//! migrates — synchronously: an error here is a start-up error.

use std::fs;
use std::future::Future;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};

use super::db::{Access, Body, Conn, Db, DbError, DbFuture, Kind, Row, Value};
use super::schema;

/// An open SQLite store.
pub(crate) struct Sqlite {
    conn: Arc<Mutex<rusqlite::Connection>>,
    shown: String,
    timeout: Duration,
    /// The store thread's queue; the thread ends when this is dropped.
    jobs: std::sync::mpsc::SyncSender<Job>,
}

/// One call for the store thread.
type Job = Box<dyn FnOnce() + Send>;

/// Calls waiting for the store thread at most; beyond it a call fails at
/// once ("busy") rather than queue without bound.
const QUEUE: usize = 4_096;

impl Sqlite {
    /// Opens (creating if need be) and migrates the database at `path`.
    pub(crate) fn open(path: &Path, timeout: Duration, now: i64) -> Result<Sqlite, DbError> {
        let shown = format!("sqlite {}", path.display());
        create_owner_only(path)?;
        let conn = rusqlite::Connection::open(path)
            .map_err(|e| DbError::Unavailable(format!("cannot open: {e}")))?;
        conn.busy_timeout(timeout)
            .map_err(|e| DbError::Unavailable(format!("cannot set busy_timeout: {e}")))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(|e| DbError::Unavailable(format!("cannot set journal_mode WAL: {e}")))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(DbError::Unavailable(format!(
                "journal_mode is {mode}, not wal (a file system without shared memory?)"
            )));
        }
        // In WAL mode NORMAL loses no committed transaction on a crash of
        // the process, only possibly the last ones on a power loss.
        conn.execute_batch("PRAGMA synchronous = NORMAL")
            .map_err(|e| DbError::Unavailable(format!("cannot set synchronous: {e}")))?;
        let conn = Arc::new(Mutex::new(conn));
        run_blocking(
            &conn,
            Access::Write,
            Box::new(move |c| {
                Box::pin(async move { schema::migrate(c, Kind::Sqlite, now).await.map(|_| ()) })
            }),
        )?;
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(QUEUE);
        std::thread::Builder::new()
            .name("aem-sqlite".to_owned())
            .spawn(move || {
                while let Ok(job) = queue.recv() {
                    job();
                }
            })
            .map_err(|e| DbError::Unavailable(format!("cannot start the store thread: {e}")))?;
        Ok(Sqlite {
            conn,
            shown,
            timeout,
            jobs,
        })
    }
}

impl Db for Sqlite {
    fn describe(&self) -> &str {
        &self.shown
    }

    fn transaction(&self, access: Access, body: Body) -> DbFuture<'_, ()> {
        let conn = Arc::clone(&self.conn);
        let timeout = self.timeout;
        let (done, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(run_blocking(&conn, access, body));
        });
        let queued = self.jobs.try_send(job);
        Box::pin(async move {
            if queued.is_err() {
                return Err(DbError::Unavailable(format!(
                    "{QUEUE} calls already wait for the store thread"
                )));
            }
            // busy_timeout bounds waiting for another process; this bounds
            // waiting for the store thread and this process's other calls.
            // A body given up on may still run later: every write is one
            // that a retry would make too.
            match tokio::time::timeout(timeout, answer).await {
                Err(_) => Err(DbError::Timeout(timeout)),
                Ok(Err(_)) => Err(DbError::Query("the store thread ended".to_owned())),
                Ok(Ok(r)) => r,
            }
        })
    }
}

/// Creates the missing parent directories (0700) and the file (0600)
/// before SQLite does (it would use the umask). An existing file keeps its
/// mode: the operator may have chosen it. A new file is given its
/// directory's owner: `keys import` run as root in the milter's state
/// directory must not leave a file the milter cannot open (SQLite, as
/// root, gives its -wal and -shm files the database file's owner).
fn create_owner_only(path: &Path) -> Result<(), DbError> {
    let fail = |what: &str, p: &Path, e: std::io::Error| {
        DbError::Unavailable(format!("cannot create {what} {}: {e}", p.display()))
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| fail("directory", parent, e))?;
    }
    // Never open (and close) an existing database file here: closing any
    // descriptor of a file drops every POSIX lock this process holds on
    // it, so another connection of the process (the engine before a
    // reload, a test reading the store) would lose its locks under SQLite.
    if path.exists() {
        return Ok(());
    }
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => take_directory_owner(path),
        // Made by someone else in between: theirs to have made.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(fail("file", path, e)),
    }
    Ok(())
}

/// Gives `path` its directory's owner and group, where allowed (as root;
/// otherwise it is ours, as it should be).
fn take_directory_owner(path: &Path) {
    use std::os::unix::fs::MetadataExt;
    let parent = match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(p) => p,
        None => Path::new("."),
    };
    if let (Ok(dir), Ok(file)) = (fs::metadata(parent), fs::metadata(path))
        && (dir.uid(), dir.gid()) != (file.uid(), file.gid())
    {
        let _ = std::os::unix::fs::chown(path, Some(dir.uid()), Some(dir.gid()));
    }
}

/// The path of a `sqlite://PATH` URL (`sqlite:///abs/path`); a relative
/// path is taken from the working directory.
pub(crate) fn path_of(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://")?;
    if rest.is_empty() {
        return None;
    }
    std::path::absolute(rest).ok()
}

/// Runs `body` in one transaction on the calling (blocking) thread.
fn run_blocking(
    conn: &Mutex<rusqlite::Connection>,
    access: Access,
    body: Body,
) -> Result<(), DbError> {
    // A panic elsewhere while holding the lock leaves the connection
    // usable; an open transaction it left is rolled back below.
    let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
    if !guard.is_autocommit() {
        let _ = guard.execute_batch("ROLLBACK");
    }
    let begin = match access {
        Access::Read => "BEGIN DEFERRED",
        Access::Write => "BEGIN IMMEDIATE",
    };
    guard.execute_batch(begin).map_err(sql_error)?;
    let mut c = SqliteConn { conn: &mut guard };
    // Every step of a SQLite body is ready at once: one poll runs it all.
    let result = poll_once(body(&mut c)).unwrap_or_else(|| {
        Err(DbError::Query(
            "internal: a transaction body waited on something other than SQLite".to_owned(),
        ))
    });
    match result {
        Ok(()) => guard.execute_batch("COMMIT").map_err(|e| {
            let _ = guard.execute_batch("ROLLBACK");
            sql_error(e)
        }),
        Err(e) => {
            let _ = guard.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Polls `f` once; `None` if it is not finished.
fn poll_once<F: Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

fn sql_error(e: rusqlite::Error) -> DbError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            DbError::Unavailable(format!("the database stayed locked: {e}"))
        }
        _ => DbError::Query(e.to_string()),
    }
}

/// `&mut`: a shared reference to a connection is not `Send`.
struct SqliteConn<'x> {
    conn: &'x mut rusqlite::Connection,
}

impl Conn for SqliteConn<'_> {
    fn query<'a>(&'a mut self, sql: &'static str, params: &'a [Value]) -> DbFuture<'a, Vec<Row>> {
        Box::pin(std::future::ready(query(self.conn, sql, params)))
    }

    fn execute<'a>(&'a mut self, sql: &'static str, params: &'a [Value]) -> DbFuture<'a, u64> {
        let r = self
            .conn
            .prepare_cached(&numbered(sql))
            .and_then(|mut s| s.execute(rusqlite::params_from_iter(params)))
            .map(|n| n as u64)
            .map_err(sql_error);
        Box::pin(std::future::ready(r))
    }
}

fn query(conn: &rusqlite::Connection, sql: &str, params: &[Value]) -> Result<Vec<Row>, DbError> {
    let mut stmt = conn.prepare_cached(&numbered(sql)).map_err(sql_error)?;
    let columns = stmt.column_count();
    let mut rows = stmt
        .query(rusqlite::params_from_iter(params))
        .map_err(sql_error)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(sql_error)? {
        let mut values = Vec::with_capacity(columns);
        for i in 0..columns {
            values.push(match r.get_ref(i).map_err(sql_error)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(n) => Value::Int(n),
                ValueRef::Text(t) => match std::str::from_utf8(t) {
                    Ok(s) => Value::Text(s.to_owned()),
                    Err(_) => Value::Unsupported("text that is not UTF-8".to_owned()),
                },
                ValueRef::Real(_) => Value::Unsupported("a real number".to_owned()),
                ValueRef::Blob(_) => Value::Unsupported("a blob".to_owned()),
            });
        }
        out.push(Row(values));
    }
    Ok(out)
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Int(n) => ValueRef::Integer(*n),
            Value::Null | Value::Unsupported(_) => ValueRef::Null,
        }))
    }
}

/// `$N` placeholders as SQLite's `?N`. (SQLite would read `$1` as a
/// *named* parameter, numbered by first appearance: `$2 … $1` would swap.)
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn placeholders_are_numbered() {
        assert_eq!(
            numbered("UPDATE t SET a = $2 WHERE b = $1 AND c = $10"),
            "UPDATE t SET a = ?2 WHERE b = ?1 AND c = ?10"
        );
    }

    #[test]
    fn urls() {
        assert_eq!(
            path_of("sqlite:///var/lib/x/keys.sqlite"),
            Some(PathBuf::from("/var/lib/x/keys.sqlite"))
        );
        assert!(path_of("sqlite://").is_none());
        assert!(path_of("postgres://h/db").is_none());
        assert!(path_of("sqlite://rel.sqlite").unwrap().is_absolute());
    }
}
