//! Key history and key changes: the fingerprints each key source
//! returned per address and method, so that a source returning a
//! different key than before is noticed; the changes, pending review
//! (`on_key_change = "review"`) or approved.
//!
//! The first keys a source returns for an address are trusted on first
//! use (approved). A new fingerprint after that is a change: recorded in
//! the history (approved unless the rule asks for review) and in
//! `key_changes` once — the insert that made the row tells its caller to
//! count it, so that a fleet sharing the store counts each change once.
//! (Two hosts seeing an address for the very first time at the same
//! moment, with different keys, both trust on first use: there was no
//! "before" to change from.)

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::db::{Access, DbError, Row, Value, bad_row};
use super::{Store, StoreError, normal};
use crate::material::Method;

/// One fingerprint a source returned for an address and method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// Upper-case hex fingerprint.
    pub fingerprint: String,
    /// The key, as the source returned it.
    pub key: Vec<u8>,
    /// When the source first returned it, unix seconds.
    pub first_seen: i64,
    /// When it last did (refreshed at most hourly), unix seconds.
    pub last_seen: i64,
    /// Trusted on first use, accepted by the rule, or approved with
    /// `keys approve`; `false` while a change waits for review.
    pub approved: bool,
}

/// A [`Seen`] with the source and method it is for ([`Store::history_of`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenBy {
    /// The source.
    pub source: String,
    /// The method.
    pub method: Method,
    /// What it returned.
    pub seen: Seen,
}

/// What [`Store::observe`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    /// Nothing was known for (source, address, method): every key
    /// recorded, approved (trust on first use).
    First,
    /// Every fingerprint already known (`last_seen` refreshed at most
    /// hourly). Also the answer for no keys at all.
    Same,
    /// Fingerprints not seen before: recorded (approved unless `review`),
    /// each with a key-change row (pending when `review`, else approved
    /// at once, for the record).
    Changed {
        /// The new fingerprints, in the order given.
        new: Vec<String>,
        /// The approved keys known before (the ones mail may keep going
        /// to while a change waits).
        approved_before: Vec<Seen>,
        /// Whether this call's insert made the history row: count the
        /// change (once per fleet).
        counted: bool,
    },
}

/// A key change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyChange {
    /// The source that returned the new key (`dane`, `ldap`, …).
    pub source: String,
    /// The address.
    pub address: String,
    /// The method.
    pub method: Method,
    /// The fingerprints approved before.
    pub old: Vec<String>,
    /// The new fingerprint.
    pub new: String,
    /// When it was noticed, unix seconds.
    pub detected: i64,
    /// When it was approved; `None` while pending.
    pub approved: Option<i64>,
}

/// `last_seen` is written at most this often (seconds): a lookup must not
/// be a write.
const TOUCH_EVERY: i64 = 3600;

const SEEN: &str = "SELECT fingerprint, key, first_seen, last_seen, approved FROM key_history \
                    WHERE source = $1 AND address = $2 AND method = $3 \
                    ORDER BY first_seen, fingerprint";
const SEEN_OF: &str = "SELECT fingerprint, key, first_seen, last_seen, approved, source, method \
                       FROM key_history WHERE address = $1 \
                       ORDER BY source, method, first_seen, fingerprint";
const RECORD: &str = "INSERT INTO key_history (source, address, method, fingerprint, key, \
                      first_seen, last_seen, approved) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                      ON CONFLICT (source, address, method, fingerprint) DO NOTHING";
const TOUCH: &str = "UPDATE key_history SET last_seen = $5 \
                     WHERE source = $1 AND address = $2 AND method = $3 AND fingerprint = $4 \
                     AND last_seen < $6";
const CHANGE: &str = "INSERT INTO key_changes (source, address, method, old, new, detected, \
                      approved) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                      ON CONFLICT (source, address, method, new) DO NOTHING";
const PENDING: &str = "SELECT source, address, method, old, new, detected, approved \
                       FROM key_changes WHERE approved IS NULL \
                       ORDER BY detected, address, method, new, source";
const ALL_CHANGES: &str = "SELECT source, address, method, old, new, detected, approved \
                           FROM key_changes ORDER BY detected, address, method, new, source";
const APPROVE_CHANGES: &str = "UPDATE key_changes SET approved = $3 \
                               WHERE address = $1 AND new = $2 AND approved IS NULL";
const APPROVE_HISTORY: &str = "UPDATE key_history SET approved = 1 \
                               WHERE address = $1 AND fingerprint = $2 AND approved = 0";
const COUNT_PENDING: &str = "SELECT COUNT(*) FROM key_changes WHERE approved IS NULL";

/// Keys kept per source, address and method, of each kind: approved ones
/// (the newest by last use) and ones awaiting review (the newest first
/// seen). A source that returns a new key at every lookup cannot grow the
/// store without bound; what is dropped is what would never be used.
pub const KEPT_PER_KIND: i64 = 8;

/// The rows beyond [`KEPT_PER_KIND`] of one kind (`$4`: approved 1 or 0).
const PRUNE: &str = "DELETE FROM key_history \
                     WHERE source = $1 AND address = $2 AND method = $3 AND approved = $4 \
                     AND fingerprint NOT IN (SELECT fingerprint FROM key_history \
                     WHERE source = $1 AND address = $2 AND method = $3 AND approved = $4 \
                     ORDER BY last_seen DESC, first_seen DESC, fingerprint LIMIT $5)";
/// Changes whose new key the history no longer holds.
const PRUNE_CHANGES: &str = "DELETE FROM key_changes \
                             WHERE source = $1 AND address = $2 AND method = $3 \
                             AND new NOT IN (SELECT fingerprint FROM key_history \
                             WHERE source = $1 AND address = $2 AND method = $3)";

impl Store {
    /// What `source` returned for `address` and `method` so far, oldest
    /// first.
    pub async fn history(
        &self,
        source: &str,
        address: &str,
        method: Method,
    ) -> Result<Vec<Seen>, StoreError> {
        let address = &normal(address);
        let params = [
            Value::text(source),
            Value::text(address),
            Value::text(method.as_str()),
        ];
        let row_name = format!("key_history {source} {address} {method}");
        self.run("read the key history", Access::Read, move |c| {
            Box::pin(async move {
                let rows = c.query(SEEN, &params).await?;
                rows.iter().map(|r| seen(r, &row_name)).collect()
            })
        })
        .await
    }

    /// What every source returned for `address`, by source, method, and
    /// oldest first.
    pub async fn history_of(&self, address: &str) -> Result<Vec<SeenBy>, StoreError> {
        let address = &normal(address);
        let params = [Value::text(address)];
        let address = address.to_owned();
        self.run("read the key history", Access::Read, move |c| {
            Box::pin(async move {
                let rows = c.query(SEEN_OF, &params).await?;
                rows.iter()
                    .map(|r| {
                        let source = r.text(5).unwrap_or("?");
                        let method = r.text(6).unwrap_or("?");
                        let name = format!("key_history {source} {address} {method}");
                        let bad = |e: String| bad_row(name.clone(), e);
                        Ok(SeenBy {
                            seen: seen(r, &name)?,
                            source: r.text(5).map_err(bad)?.to_owned(),
                            method: method
                                .parse()
                                .map_err(|e: crate::material::UnknownMethod| bad(e.to_string()))?,
                        })
                    })
                    .collect()
            })
        })
        .await
    }

    /// Records that `source` returned `keys` (fingerprint, key) for
    /// `address` and `method` at `now`, and whether that is a change.
    pub async fn observe(
        &self,
        source: &str,
        address: &str,
        method: Method,
        keys: &[(String, Vec<u8>)],
        review: bool,
        now: i64,
    ) -> Result<Observation, StoreError> {
        let address = &normal(address);
        let mut given: Vec<(String, Vec<u8>)> = Vec::with_capacity(keys.len());
        for (fp, key) in keys {
            if !given.iter().any(|(f, _)| f == fp) {
                given.push((fp.clone(), key.clone()));
            }
        }
        if given.is_empty() {
            return Ok(Observation::Same);
        }
        let id = [
            Value::text(source),
            Value::text(address),
            Value::text(method.as_str()),
        ];
        let row_name = format!("key_history {source} {address} {method}");
        self.run(
            "record the keys a source returned",
            Access::Write,
            move |c| {
                Box::pin(async move {
                    let rows = c.query(SEEN, &id).await?;
                    let known: Vec<Seen> = rows
                        .iter()
                        .map(|r| seen(r, &row_name))
                        .collect::<Result<_, _>>()?;
                    let record = |fp: &str, key: &[u8], approved: bool| {
                        let mut p = id.to_vec();
                        p.extend([
                            Value::text(fp),
                            Value::Text(B64.encode(key)),
                            Value::Int(now),
                            Value::Int(now),
                            Value::Int(i64::from(approved)),
                        ]);
                        p
                    };
                    if known.is_empty() {
                        for (fp, key) in &given {
                            c.execute(RECORD, &record(fp, key, true)).await?;
                        }
                        return Ok(Observation::First);
                    }
                    for (fp, _) in given
                        .iter()
                        .filter(|(f, _)| known.iter().any(|k| k.fingerprint == *f))
                    {
                        let mut p = id.to_vec();
                        p.extend([
                            Value::text(fp),
                            Value::Int(now),
                            Value::Int(now.saturating_sub(TOUCH_EVERY)),
                        ]);
                        c.execute(TOUCH, &p).await?;
                    }
                    let new: Vec<&(String, Vec<u8>)> = given
                        .iter()
                        .filter(|(f, _)| !known.iter().any(|k| k.fingerprint == *f))
                        .collect();
                    if new.is_empty() {
                        return Ok(Observation::Same);
                    }
                    let approved_before: Vec<Seen> =
                        known.into_iter().filter(|k| k.approved).collect();
                    let old: Vec<&str> = approved_before
                        .iter()
                        .map(|k| k.fingerprint.as_str())
                        .collect();
                    let old = old.join(" ");
                    let mut counted = false;
                    for (fp, key) in &new {
                        counted |= c.execute(RECORD, &record(fp, key, !review)).await? == 1;
                        let mut p = id.to_vec();
                        p.extend([
                            Value::text(&old),
                            Value::text(fp),
                            Value::Int(now),
                            if review { Value::Null } else { Value::Int(now) },
                        ]);
                        c.execute(CHANGE, &p).await?;
                    }
                    for approved in [0, 1] {
                        let mut p = id.to_vec();
                        p.extend([Value::Int(approved), Value::Int(KEPT_PER_KIND)]);
                        c.execute(PRUNE, &p).await?;
                    }
                    c.execute(PRUNE_CHANGES, &id).await?;
                    Ok(Observation::Changed {
                        new: new.into_iter().map(|(f, _)| f.clone()).collect(),
                        approved_before,
                        counted,
                    })
                })
            },
        )
        .await
    }

    /// How many key changes await review (the metric).
    pub async fn pending_changes(&self) -> Result<u64, StoreError> {
        self.run("count the pending key changes", Access::Read, move |c| {
            Box::pin(async move {
                let rows = c.query(COUNT_PENDING, &[]).await?;
                let n = rows
                    .first()
                    .ok_or_else(|| "no row".to_owned())
                    .and_then(|r| r.int(0))
                    .map_err(|e| DbError::Query(format!("COUNT(*) of pending changes: {e}")))?;
                Ok(u64::try_from(n).unwrap_or(0))
            })
        })
        .await
    }

    /// Key changes, oldest first: only those pending review, or all.
    pub async fn changes(&self, pending_only: bool) -> Result<Vec<KeyChange>, StoreError> {
        let sql = if pending_only { PENDING } else { ALL_CHANGES };
        self.run("read the key changes", Access::Read, move |c| {
            Box::pin(async move { c.query(sql, &[]).await?.iter().map(change).collect() })
        })
        .await
    }

    /// Approves `fingerprint` for `address` at `now`, from whichever
    /// source it came: its pending changes and its history rows. The
    /// number of pending changes approved.
    pub async fn approve(
        &self,
        address: &str,
        fingerprint: &str,
        now: i64,
    ) -> Result<u64, StoreError> {
        let fingerprint =
            crate::material::canonical_fingerprint(fingerprint).map_err(|reason| {
                StoreError::Invalid {
                    store: self.describe(),
                    what: "approve a key change",
                    reason,
                }
            })?;
        let key = [Value::text(normal(address)), Value::text(fingerprint)];
        self.run("approve a key change", Access::Write, move |c| {
            Box::pin(async move {
                let changes = c
                    .execute(
                        APPROVE_CHANGES,
                        &[key[0].clone(), key[1].clone(), Value::Int(now)],
                    )
                    .await?;
                c.execute(APPROVE_HISTORY, &key).await?;
                Ok(changes)
            })
        })
        .await
    }
}

/// A `key_history` row ([`SEEN`]'s columns), checked.
fn seen(r: &Row, row_name: &str) -> Result<Seen, DbError> {
    let fp = r.text(0).unwrap_or("?");
    let bad = |e: String| bad_row(format!("{row_name} {fp}"), e);
    let approved = match r.int(4).map_err(bad)? {
        0 => false,
        1 => true,
        n => return Err(bad(format!("approved is {n}, not 0 or 1"))),
    };
    Ok(Seen {
        fingerprint: r.text(0).map_err(bad)?.to_owned(),
        key: B64
            .decode(r.text(1).map_err(bad)?)
            .map_err(|e| bad(format!("key is not base64: {e}")))?,
        first_seen: r.int(2).map_err(bad)?,
        last_seen: r.int(3).map_err(bad)?,
        approved,
    })
}

/// A `key_changes` row, checked.
fn change(r: &Row) -> Result<KeyChange, DbError> {
    let name = format!(
        "key_changes {} {} {} {}",
        r.text(0).unwrap_or("?"),
        r.text(1).unwrap_or("?"),
        r.text(2).unwrap_or("?"),
        r.text(4).unwrap_or("?")
    );
    let bad = |e: String| bad_row(name.clone(), e);
    let method: Method = r
        .text(2)
        .map_err(bad)?
        .parse()
        .map_err(|e: crate::material::UnknownMethod| bad(e.to_string()))?;
    Ok(KeyChange {
        source: r.text(0).map_err(bad)?.to_owned(),
        address: r.text(1).map_err(bad)?.to_owned(),
        method,
        old: r
            .text(3)
            .map_err(bad)?
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
        new: r.text(4).map_err(bad)?.to_owned(),
        detected: r.int(5).map_err(bad)?,
        approved: r.opt_int(6).map_err(bad)?,
    })
}
