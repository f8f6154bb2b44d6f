//! Learned keys: one current key per address and method, from S/MIME
//! signatures and Autocrypt headers of authenticated mail (or `keys
//! import`), kept by Autocrypt Level 1's update rule (§2.3): a message
//! with a newer effective date wins, an older one changes nothing.
//!
//! Each write is one transaction whose `UPDATE`s carry their own
//! condition (`effective < …`), so that two hosts learning for the same
//! address at once cannot put the older key back.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::db::{Access, DbError, Row, Value, bad_row};
use super::{Store, StoreError, normal};
use crate::material::Method;

/// How a key was learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LearnedFrom {
    /// The signer's certificate of a verified S/MIME signature.
    SmimeSignature,
    /// An `Autocrypt:` header.
    Autocrypt,
    /// `autoencrypt-milter keys import` (an operator seeding the store).
    Import,
}

impl LearnedFrom {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            LearnedFrom::SmimeSignature => "smime-signature",
            LearnedFrom::Autocrypt => "autocrypt",
            LearnedFrom::Import => "import",
        }
    }

    /// The value named `s`, if any.
    pub fn parse(s: &str) -> Option<LearnedFrom> {
        [
            LearnedFrom::SmimeSignature,
            LearnedFrom::Autocrypt,
            LearnedFrom::Import,
        ]
        .into_iter()
        .find(|h| h.as_str() == s)
    }
}

/// Autocrypt's `prefer-encrypt` attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PreferEncrypt {
    /// `prefer-encrypt=mutual`.
    Mutual,
    /// Absent (or any other value, Autocrypt Level 1 §2.1).
    NoPreference,
}

impl PreferEncrypt {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            PreferEncrypt::Mutual => "mutual",
            PreferEncrypt::NoPreference => "nopreference",
        }
    }

    /// The value named `s`, if any.
    pub fn parse(s: &str) -> Option<PreferEncrypt> {
        match s {
            "mutual" => Some(PreferEncrypt::Mutual),
            "nopreference" => Some(PreferEncrypt::NoPreference),
            _ => None,
        }
    }
}

/// A learned key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LearnedKey {
    /// The address ([`crate::Address`]'s display form), the key of every
    /// table.
    pub address: String,
    /// The method the key is for.
    pub method: Method,
    /// Upper-case hex fingerprint, as [`crate::backend::identify`] gives it.
    pub fingerprint: String,
    /// The key in its one encoding (DER certificate, binary OpenPGP
    /// certificate).
    pub key: Vec<u8>,
    /// How it was learned.
    pub how: LearnedFrom,
    /// Autocrypt only.
    pub prefer_encrypt: Option<PreferEncrypt>,
    /// The teaching message's effective date (its `Date:`, clamped to
    /// when it arrived), unix seconds: the update rule compares these.
    pub effective: i64,
    /// When this key was first learned for the address, unix seconds.
    pub first_seen: i64,
    /// When it was last seen, unix seconds.
    pub last_seen: i64,
}

/// What [`Store::learn`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Learned {
    /// Nothing was known for the address and method: stored.
    New,
    /// Another key was replaced (the message is newer).
    Replaced {
        /// The replaced key's fingerprint.
        previous: String,
    },
    /// The same key again: `effective`, `prefer_encrypt` and `last_seen`
    /// updated.
    Refreshed,
    /// The stored key is from a newer (or equally new) message: nothing
    /// changed.
    Older,
}

const SELECT_ONE: &str = "SELECT address, method, fingerprint, key, how, prefer_encrypt, \
                          effective, first_seen, last_seen FROM learned_keys \
                          WHERE address = $1 AND method = $2";
const SELECT_ALL: &str = "SELECT address, method, fingerprint, key, how, prefer_encrypt, \
                          effective, first_seen, last_seen FROM learned_keys \
                          ORDER BY address, method";
const SELECT_ADDRESS: &str = "SELECT address, method, fingerprint, key, how, prefer_encrypt, \
                              effective, first_seen, last_seen FROM learned_keys \
                              WHERE address = $1 ORDER BY method";
const CURRENT: &str = "SELECT fingerprint, effective, last_seen FROM learned_keys \
                       WHERE address = $1 AND method = $2";
const INSERT: &str = "INSERT INTO learned_keys (address, method, fingerprint, key, how, \
                      prefer_encrypt, effective, first_seen, last_seen) \
                      VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                      ON CONFLICT (address, method) DO NOTHING";
const REFRESH: &str = "UPDATE learned_keys SET effective = $3, prefer_encrypt = $4, \
                       last_seen = $5 \
                       WHERE address = $1 AND method = $2 AND fingerprint = $6 \
                       AND effective <= $3";
const REPLACE: &str = "UPDATE learned_keys SET fingerprint = $3, key = $4, how = $5, \
                       prefer_encrypt = $6, effective = $7, first_seen = $8, last_seen = $9 \
                       WHERE address = $1 AND method = $2 AND effective < $7";

const FORGET: [&str; 3] = [
    "DELETE FROM learned_keys WHERE address = $1",
    "DELETE FROM key_history WHERE address = $1",
    "DELETE FROM key_changes WHERE address = $1",
];
const FORGET_METHOD: [&str; 3] = [
    "DELETE FROM learned_keys WHERE address = $1 AND method = $2",
    "DELETE FROM key_history WHERE address = $1 AND method = $2",
    "DELETE FROM key_changes WHERE address = $1 AND method = $2",
];

impl Store {
    /// The learned key for `address` and `method`, if any.
    pub async fn learned(
        &self,
        address: &str,
        method: Method,
    ) -> Result<Option<LearnedKey>, StoreError> {
        let params = [Value::text(normal(address)), Value::text(method.as_str())];
        self.run("read a learned key", Access::Read, move |c| {
            Box::pin(async move {
                let rows = c.query(SELECT_ONE, &params).await?;
                rows.first().map(from_row).transpose()
            })
        })
        .await
    }

    /// Stores `key` by the update rule: a newer `effective` wins; the same
    /// fingerprint only refreshes `effective`, `prefer_encrypt` and
    /// `last_seen`; an older message changes nothing.
    pub async fn learn(&self, key: &LearnedKey) -> Result<Learned, StoreError> {
        let mut key = key.clone();
        key.address = normal(&key.address);
        self.run("learn a key", Access::Write, move |c| {
            Box::pin(async move {
                let addr = Value::text(&key.address);
                let method = Value::text(key.method.as_str());
                let prefer = key
                    .prefer_encrypt
                    .map_or(Value::Null, |p| Value::text(p.as_str()));
                // The whole row, as INSERT and REPLACE write it.
                let row = [
                    addr.clone(),
                    method.clone(),
                    Value::text(&key.fingerprint),
                    Value::Text(B64.encode(&key.key)),
                    Value::text(key.how.as_str()),
                    prefer.clone(),
                    Value::Int(key.effective),
                    Value::Int(key.first_seen),
                    Value::Int(key.last_seen),
                ];
                // Twice at most: an insert that lost a race reads the
                // winner's row the second time.
                for _ in 0..2 {
                    let rows = c.query(CURRENT, &[addr.clone(), method.clone()]).await?;
                    let Some(r) = rows.first() else {
                        if c.execute(INSERT, &row).await? == 1 {
                            return Ok(Learned::New);
                        }
                        continue;
                    };
                    let row_name = || format!("learned_keys {} {}", key.address, key.method);
                    let bad = |e: String| bad_row(row_name(), e);
                    let (fp, effective, last_seen) = (
                        r.text(0).map_err(bad)?.to_owned(),
                        r.int(1).map_err(bad)?,
                        r.int(2).map_err(bad)?,
                    );
                    if fp == key.fingerprint {
                        if key.effective < effective {
                            return Ok(Learned::Older);
                        }
                        let params = [
                            addr.clone(),
                            method.clone(),
                            Value::Int(key.effective),
                            prefer.clone(),
                            Value::Int(last_seen.max(key.last_seen)),
                            Value::text(&key.fingerprint),
                        ];
                        return Ok(if c.execute(REFRESH, &params).await? == 1 {
                            Learned::Refreshed
                        } else {
                            Learned::Older
                        });
                    }
                    if key.effective <= effective {
                        return Ok(Learned::Older);
                    }
                    return Ok(if c.execute(REPLACE, &row).await? == 1 {
                        Learned::Replaced { previous: fp }
                    } else {
                        Learned::Older
                    });
                }
                Err(DbError::Query(format!(
                    "learned_keys {} {}: inserted and gone again twice meanwhile",
                    key.address, key.method
                )))
            })
        })
        .await
    }

    /// Every learned key (of `address` only, when given), by address and
    /// method.
    pub async fn list_learned(&self, address: Option<&str>) -> Result<Vec<LearnedKey>, StoreError> {
        let address = address.map(normal);
        self.run("list learned keys", Access::Read, move |c| {
            Box::pin(async move {
                let rows = match &address {
                    Some(a) => c.query(SELECT_ADDRESS, &[Value::text(a)]).await?,
                    None => c.query(SELECT_ALL, &[]).await?,
                };
                rows.iter().map(from_row).collect()
            })
        })
        .await
    }

    /// Forgets what the store learned and saw of `address` (of `method`
    /// only, when given): learned keys, key history, key changes. Pins
    /// stay (`unpin` removes them). The number of rows removed.
    pub async fn forget(&self, address: &str, method: Option<Method>) -> Result<u64, StoreError> {
        let address = normal(address);
        self.run("forget an address", Access::Write, move |c| {
            Box::pin(async move {
                let mut n = 0;
                match method {
                    None => {
                        for sql in FORGET {
                            n += c.execute(sql, &[Value::text(&address)]).await?;
                        }
                    }
                    Some(m) => {
                        let params = [Value::text(&address), Value::text(m.as_str())];
                        for sql in FORGET_METHOD {
                            n += c.execute(sql, &params).await?;
                        }
                    }
                }
                Ok(n)
            })
        })
        .await
    }
}

/// A `learned_keys` row (the columns in [`SELECT_ONE`]'s order), checked.
fn from_row(r: &Row) -> Result<LearnedKey, DbError> {
    let address = r
        .text(0)
        .map_err(|e| bad_row("learned_keys (address unreadable)", e))?;
    let method_name = r.text(1).unwrap_or("?");
    let row_name = format!("learned_keys {address} {method_name}");
    let bad = |e: String| bad_row(row_name.clone(), e);
    let method: Method = r
        .text(1)
        .map_err(bad)?
        .parse()
        .map_err(|e: crate::material::UnknownMethod| bad(e.to_string()))?;
    let key = B64
        .decode(r.text(3).map_err(bad)?)
        .map_err(|e| bad(format!("key is not base64: {e}")))?;
    let how_name = r.text(4).map_err(bad)?;
    let how =
        LearnedFrom::parse(how_name).ok_or_else(|| bad(format!("unknown how {how_name:?}")))?;
    let prefer_encrypt = match r.opt_text(5).map_err(bad)? {
        None => None,
        Some(p) => Some(
            PreferEncrypt::parse(p).ok_or_else(|| bad(format!("unknown prefer_encrypt {p:?}")))?,
        ),
    };
    Ok(LearnedKey {
        address: address.to_owned(),
        method,
        fingerprint: r.text(2).map_err(bad)?.to_owned(),
        key,
        how,
        prefer_encrypt,
        effective: r.int(6).map_err(bad)?,
        first_seen: r.int(7).map_err(bad)?,
        last_seen: r.int(8).map_err(bad)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for h in [
            LearnedFrom::SmimeSignature,
            LearnedFrom::Autocrypt,
            LearnedFrom::Import,
        ] {
            assert_eq!(LearnedFrom::parse(h.as_str()), Some(h));
        }
        for p in [PreferEncrypt::Mutual, PreferEncrypt::NoPreference] {
            assert_eq!(PreferEncrypt::parse(p.as_str()), Some(p));
        }
        assert_eq!(LearnedFrom::parse("dane"), None);
    }
}
