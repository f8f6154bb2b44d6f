//! The store's schema and its versioned migrations.
//!
//! `schema_migrations` holds one row per migration applied. Migrating runs
//! in one transaction under a lock, so that two hosts (or a milter and a
//! `keys` command) starting together against one database apply each
//! migration once: PostgreSQL takes a transaction-scoped advisory lock
//! first (before `CREATE TABLE IF NOT EXISTS`, which is not safe run
//! concurrently there); SQLite's driver starts every writing transaction
//! with `BEGIN IMMEDIATE`. A database whose schema is newer than this
//! program knows is refused: an older binary must not write rows a newer
//! one reads differently.
//!
//! Only TEXT and BIGINT columns: keys are base64 TEXT, times unix seconds,
//! flags 0/1.

use super::db::{Conn, DbError, Kind, Value, bad_row};

/// One migration: the statements that take the schema from `version - 1`
/// to `version`.
struct Migration {
    version: i64,
    name: &'static str,
    statements: &'static [&'static str],
}

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "learned keys, key history, pins, key changes",
    statements: &[
        // One current key per address and method (Autocrypt's update rule
        // decides which, learn()).
        "CREATE TABLE learned_keys (
            address TEXT NOT NULL,
            method TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            key TEXT NOT NULL,
            how TEXT NOT NULL,
            prefer_encrypt TEXT,
            effective BIGINT NOT NULL,
            first_seen BIGINT NOT NULL,
            last_seen BIGINT NOT NULL,
            PRIMARY KEY (address, method)
        )",
        // Every fingerprint each source returned per address and method.
        "CREATE TABLE key_history (
            source TEXT NOT NULL,
            address TEXT NOT NULL,
            method TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            key TEXT NOT NULL,
            first_seen BIGINT NOT NULL,
            last_seen BIGINT NOT NULL,
            approved BIGINT NOT NULL,
            PRIMARY KEY (source, address, method, fingerprint)
        )",
        "CREATE INDEX key_history_address ON key_history (address)",
        "CREATE TABLE pins (
            address TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            created BIGINT NOT NULL,
            note TEXT NOT NULL,
            PRIMARY KEY (address, fingerprint)
        )",
        // `old`: the fingerprints approved before, space-separated;
        // `approved`: NULL while pending, else when.
        "CREATE TABLE key_changes (
            source TEXT NOT NULL,
            address TEXT NOT NULL,
            method TEXT NOT NULL,
            old TEXT NOT NULL,
            new TEXT NOT NULL,
            detected BIGINT NOT NULL,
            approved BIGINT,
            PRIMARY KEY (source, address, method, new)
        )",
        "CREATE INDEX key_changes_address ON key_changes (address)",
    ],
}];

/// The newest schema version this program knows.
pub const CURRENT: i64 = 1;

/// Serialises migrations across PostgreSQL sessions (any constant; "aem"
/// and the table's name, so that no other application's lock is taken).
const PG_LOCK: &str = "SELECT pg_advisory_xact_lock(7365003612)";

/// Brings the schema to [`CURRENT`], inside the caller's (writing)
/// transaction; the version it found.
pub(crate) async fn migrate(c: &mut dyn Conn, kind: Kind, now: i64) -> Result<i64, DbError> {
    if kind == Kind::Postgres {
        c.execute(PG_LOCK, &[]).await?;
    }
    c.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version BIGINT PRIMARY KEY,
            name TEXT NOT NULL,
            applied BIGINT NOT NULL
        )",
        &[],
    )
    .await?;
    let found = version(c).await?;
    if found > CURRENT {
        return Err(DbError::SchemaTooNew {
            found,
            known: CURRENT,
        });
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > found) {
        for s in m.statements {
            c.execute(s, &[]).await?;
        }
        c.execute(
            "INSERT INTO schema_migrations (version, name, applied) VALUES ($1, $2, $3)",
            &[Value::Int(m.version), Value::text(m.name), Value::Int(now)],
        )
        .await?;
    }
    Ok(found)
}

/// The schema version recorded (0 for a new database).
pub(crate) async fn version(c: &mut dyn Conn) -> Result<i64, DbError> {
    let rows = c
        .query("SELECT version FROM schema_migrations", &[])
        .await?;
    let mut max = 0;
    for r in &rows {
        let v = r.int(0).map_err(|e| bad_row("schema_migrations", e))?;
        max = max.max(v);
    }
    Ok(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_consecutive_and_end_at_current() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1, "{}", m.name);
        }
        assert_eq!(MIGRATIONS.last().map(|m| m.version), Some(CURRENT));
    }
}
