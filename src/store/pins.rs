//! Per-address pins set with `keys pin`: fingerprints fixed out of band.
//! A pinned address is encrypted only to a pinned key (the key service
//! keeps a snapshot of [`Store::all_pins`], refreshed every
//! `refresh_secs`).

use super::db::{Access, DbError, Row, Value, bad_row};
use super::{Store, StoreError, normal};

/// A pin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    /// The address ([`crate::Address`]'s display form).
    pub address: String,
    /// Canonical upper-case hex
    /// (`material::canonical_fingerprint`).
    pub fingerprint: String,
    /// When it was set, unix seconds.
    pub created: i64,
    /// The operator's note (may be empty).
    pub note: String,
}

const ALL: &str = "SELECT address, fingerprint, created, note FROM pins \
                   ORDER BY address, fingerprint";
const INSERT: &str = "INSERT INTO pins (address, fingerprint, created, note) \
                      VALUES ($1, $2, $3, $4) ON CONFLICT (address, fingerprint) DO NOTHING";
const NOTE: &str = "UPDATE pins SET note = $3 WHERE address = $1 AND fingerprint = $2";
const UNPIN_ALL: &str = "DELETE FROM pins WHERE address = $1";
const UNPIN_ONE: &str = "DELETE FROM pins WHERE address = $1 AND fingerprint = $2";

impl Store {
    /// Every pin, by address and fingerprint.
    pub async fn all_pins(&self) -> Result<Vec<Pin>, StoreError> {
        self.run("read the pins", Access::Read, |c| {
            Box::pin(async move { c.query(ALL, &[]).await?.iter().map(from_row).collect() })
        })
        .await
    }

    /// Pins `pin.fingerprint` (any spelling `canonical_fingerprint`
    /// reads; stored canonical) for `pin.address`; `true` when it is new.
    /// An existing pin keeps its `created`; a non-empty `note` replaces its
    /// note.
    pub async fn pin(&self, pin: &Pin) -> Result<bool, StoreError> {
        let mut pin = pin.clone();
        pin.address = normal(&pin.address);
        pin.fingerprint =
            crate::material::canonical_fingerprint(&pin.fingerprint).map_err(|reason| {
                StoreError::Invalid {
                    store: self.describe(),
                    what: "pin a key",
                    reason,
                }
            })?;
        self.run("pin a key", Access::Write, move |c| {
            Box::pin(async move {
                let key = [Value::text(&pin.address), Value::text(&pin.fingerprint)];
                let row = [
                    key[0].clone(),
                    key[1].clone(),
                    Value::Int(pin.created),
                    Value::text(&pin.note),
                ];
                if c.execute(INSERT, &row).await? == 1 {
                    return Ok(true);
                }
                if !pin.note.is_empty() {
                    let note = [key[0].clone(), key[1].clone(), Value::text(&pin.note)];
                    c.execute(NOTE, &note).await?;
                }
                Ok(false)
            })
        })
        .await
    }

    /// Removes the pins of `address` (only `fingerprint`, when given); the
    /// number removed.
    pub async fn unpin(&self, address: &str, fingerprint: Option<&str>) -> Result<u64, StoreError> {
        let address = normal(address);
        let fingerprint = match fingerprint {
            None => None,
            Some(f) => Some(crate::material::canonical_fingerprint(f).map_err(|reason| {
                StoreError::Invalid {
                    store: self.describe(),
                    what: "unpin",
                    reason,
                }
            })?),
        };
        self.run("unpin", Access::Write, move |c| {
            Box::pin(async move {
                match fingerprint {
                    None => c.execute(UNPIN_ALL, &[Value::text(&address)]).await,
                    Some(f) => {
                        c.execute(UNPIN_ONE, &[Value::text(&address), Value::Text(f)])
                            .await
                    }
                }
            })
        })
        .await
    }
}

fn from_row(r: &Row) -> Result<Pin, DbError> {
    let address = r
        .text(0)
        .map_err(|e| bad_row("pins (address unreadable)", e))?;
    let fp = r.text(1).unwrap_or("?");
    let bad = |e: String| bad_row(format!("pins {address} {fp}"), e);
    let fingerprint = r.text(1).map_err(bad)?;
    let canonical = crate::material::canonical_fingerprint(fingerprint).map_err(bad)?;
    if canonical != fingerprint {
        return Err(bad("the fingerprint is not in canonical form".to_owned()));
    }
    Ok(Pin {
        address: address.to_owned(),
        fingerprint: canonical,
        created: r.int(2).map_err(bad)?,
        note: r.text(3).map_err(bad)?.to_owned(),
    })
}
