//! The PostgreSQL driver (tokio-postgres): one client, connected on
//! first use and migrated on each new connection, dropped after any
//! connection error so that the next call connects again.
//!
//! One client means one transaction at a time: tokio-postgres pipelines
//! whatever is sent on a client, so a statement of another call would
//! land inside a running transaction. Calls therefore take turns (a
//! mutex), each bounded by `timeout` — waiting for its turn included —
//! and, when it has to connect, by `connect_timeout` for that (TCP, TLS,
//! login and the schema check). A call that runs out of time drops the
//! connection: what the server did with a half-sent transaction is
//! unknown, and a hung server must not hold the next call.

use std::collections::HashMap;
use std::time::Duration;

use bytes::BytesMut;
use tokio::time::Instant;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

use super::db::{Access, Body, Conn, Db, DbError, DbFuture, Kind, Row, Value};
use super::pg_config::PgConfig;
use super::schema;

/// A PostgreSQL store.
pub(crate) struct Postgres {
    pg: PgConfig,
    connect_timeout: Duration,
    timeout: Duration,
    live: tokio::sync::Mutex<Option<Live>>,
}

impl Postgres {
    /// A store that connects on first use.
    pub(crate) fn new(pg: PgConfig, connect_timeout: Duration, timeout: Duration) -> Postgres {
        Postgres {
            pg,
            connect_timeout,
            timeout,
            live: tokio::sync::Mutex::new(None),
        }
    }

    /// Connects, logs in and migrates.
    async fn connect(&self) -> Result<Live, DbError> {
        let (client, task) = match &self.pg.tls {
            None => {
                let (client, conn) = self
                    .pg
                    .config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(|e| unavailable(&e))?;
                (client, self.drive(conn))
            }
            Some(tls) => {
                let (client, conn) = self
                    .pg
                    .config
                    .connect(tls.clone())
                    .await
                    .map_err(|e| unavailable(&e))?;
                (client, self.drive(conn))
            }
        };
        let mut live = Live {
            client,
            task,
            statements: HashMap::new(),
        };
        let now = super::unix_now();
        run(
            &mut live,
            Box::new(move |c| {
                Box::pin(async move { schema::migrate(c, Kind::Postgres, now).await.map(|_| ()) })
            }),
        )
        .await?;
        tracing::debug!(store = %self.pg.shown, "connected to the key store");
        Ok(live)
    }

    /// Runs the connection's I/O until the client is dropped or the
    /// connection fails.
    fn drive<F>(&self, conn: F) -> tokio::task::JoinHandle<()>
    where
        F: std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
    {
        let shown = self.pg.shown.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(store = %shown, "key store connection ended: {e}");
            }
        })
    }
}

impl Db for Postgres {
    fn describe(&self) -> &str {
        &self.pg.shown
    }

    fn transaction(&self, _access: Access, body: Body) -> DbFuture<'_, ()> {
        Box::pin(async move {
            let mut deadline = Instant::now() + self.timeout;
            let Ok(mut guard) = tokio::time::timeout_at(deadline, self.live.lock()).await else {
                return Err(DbError::Timeout(self.timeout));
            };
            if guard.is_none() {
                let started = Instant::now();
                match tokio::time::timeout(self.connect_timeout, self.connect()).await {
                    Err(_) => return Err(DbError::Timeout(self.connect_timeout)),
                    Ok(r) => *guard = Some(r?),
                }
                deadline += started.elapsed();
            }
            let Some(live) = guard.as_mut() else {
                return Err(DbError::Unavailable("no connection".to_owned()));
            };
            match tokio::time::timeout_at(deadline, run(live, body)).await {
                Err(_) => {
                    *guard = None;
                    Err(DbError::Timeout(self.timeout))
                }
                Ok(Err(e)) => {
                    if matches!(e, DbError::Unavailable(_)) || live.client.is_closed() {
                        *guard = None;
                    } else {
                        // A refused statement may be a cached plan the
                        // schema no longer fits: prepare afresh.
                        live.statements.clear();
                    }
                    Err(e)
                }
                Ok(Ok(())) => Ok(()),
            }
        })
    }
}

/// A live connection: the client, the task driving it, the statements
/// prepared on it.
struct Live {
    client: tokio_postgres::Client,
    task: tokio::task::JoinHandle<()>,
    statements: HashMap<&'static str, tokio_postgres::Statement>,
}

impl Drop for Live {
    fn drop(&mut self) {
        // A connection to a server that stopped answering would otherwise
        // linger until TCP gives up.
        self.task.abort();
    }
}

impl Live {
    async fn statement(&mut self, sql: &'static str) -> Result<tokio_postgres::Statement, DbError> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql).await.map_err(|e| pg_error(&e))?;
        self.statements.insert(sql, s.clone());
        Ok(s)
    }
}

/// Runs `body` between BEGIN and COMMIT (ROLLBACK when it fails).
async fn run(live: &mut Live, body: Body) -> Result<(), DbError> {
    live.client
        .batch_execute("BEGIN")
        .await
        .map_err(|e| pg_error(&e))?;
    let result = body(&mut PgConn { live: &mut *live }).await;
    match result {
        Ok(()) => live
            .client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| pg_error(&e)),
        Err(e) => match live.client.batch_execute("ROLLBACK").await {
            Ok(()) => Err(e),
            Err(r) => Err(DbError::Unavailable(format!(
                "{e}; then ROLLBACK failed: {r}"
            ))),
        },
    }
}

struct PgConn<'x> {
    live: &'x mut Live,
}

impl Conn for PgConn<'_> {
    fn query<'a>(&'a mut self, sql: &'static str, params: &'a [Value]) -> DbFuture<'a, Vec<Row>> {
        Box::pin(async move {
            let stmt = self.live.statement(sql).await?;
            let refs: Vec<&(dyn ToSql + Sync)> =
                params.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
            let rows = self
                .live
                .client
                .query(&stmt, &refs)
                .await
                .map_err(|e| pg_error(&e))?;
            rows.iter().map(row).collect()
        })
    }

    fn execute<'a>(&'a mut self, sql: &'static str, params: &'a [Value]) -> DbFuture<'a, u64> {
        Box::pin(async move {
            let stmt = self.live.statement(sql).await?;
            let refs: Vec<&(dyn ToSql + Sync)> =
                params.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
            self.live
                .client
                .execute(&stmt, &refs)
                .await
                .map_err(|e| pg_error(&e))
        })
    }
}

fn is_text(ty: &Type) -> bool {
    *ty == Type::TEXT || *ty == Type::VARCHAR || *ty == Type::BPCHAR || *ty == Type::NAME
}

/// One result row as [`Value`]s.
fn row(r: &tokio_postgres::Row) -> Result<Row, DbError> {
    let mut values = Vec::with_capacity(r.len());
    for (i, col) in r.columns().iter().enumerate() {
        let ty = col.type_();
        let v = if is_text(ty) {
            r.try_get::<_, Option<String>>(i)
                .map(|v| v.map_or(Value::Null, Value::Text))
        } else if *ty == Type::INT8 {
            r.try_get::<_, Option<i64>>(i)
                .map(|v| v.map_or(Value::Null, Value::Int))
        } else if *ty == Type::INT4 {
            r.try_get::<_, Option<i32>>(i)
                .map(|v| v.map_or(Value::Null, |n| Value::Int(n.into())))
        } else {
            Ok(Value::Unsupported(format!("a value of type {ty}")))
        };
        values.push(v.map_err(|e| DbError::Query(format!("column {}: {e}", col.name())))?);
    }
    Ok(Row(values))
}

/// A connection-level failure: the connection is not used again.
fn unavailable(e: &tokio_postgres::Error) -> DbError {
    DbError::Unavailable(describe(e))
}

/// A statement the server refused is [`DbError::Query`]; anything else
/// — I/O, a closed connection, a FATAL error (the server ends the
/// session: shutting down, the administrator terminating it), SQLSTATE
/// classes 08 (connection) and 57 (operator intervention) — is
/// [`DbError::Unavailable`].
fn pg_error(e: &tokio_postgres::Error) -> DbError {
    let session_ends = e.as_db_error().is_none_or(|d| {
        matches!(d.severity(), "FATAL" | "PANIC")
            || d.code().code().starts_with("08")
            || d.code().code().starts_with("57")
    });
    if session_ends || e.is_closed() {
        DbError::Unavailable(describe(e))
    } else {
        DbError::Query(describe(e))
    }
}

/// The server's message and SQLSTATE, or the client's error with its
/// cause (tokio-postgres's own text says only "db error").
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!(
            "{}: {} (SQLSTATE {})",
            d.severity(),
            d.message(),
            d.code().code()
        ),
        None => {
            let mut s = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(c) = source {
                let t = c.to_string();
                if !s.contains(&t) {
                    s = format!("{s}: {t}");
                }
                source = c.source();
            }
            s
        }
    }
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null | Value::Unsupported(_) => Ok(IsNull::Yes),
            Value::Text(s) if is_text(ty) => s.as_str().to_sql(ty, out),
            Value::Int(n) if *ty == Type::INT8 => n.to_sql(ty, out),
            Value::Int(n) if *ty == Type::INT4 => i32::try_from(*n)?.to_sql(ty, out),
            v => Err(format!("{} where the statement wants {ty}", v.kind()).into()),
        }
    }

    fn accepts(ty: &Type) -> bool {
        is_text(ty) || *ty == Type::INT8 || *ty == Type::INT4
    }

    to_sql_checked!();
}
