//! The key service's dealings with the key store: the pins set with
//! `keys pin`, joined to a rule's before a lookup, and the key history a
//! lookup's usable keys are vetted against (`on_key_change`). A child of
//! `service.rs`, so that the lookup itself reads in one sitting.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::{KeyService, Step};
use crate::address::Address;
use crate::backend::Recipient;
use crate::keys::history::{KeyHistory, Vetted};
use crate::keys::learned::LearnedSource;
use crate::keys::pins::StorePins;
use crate::keys::{FailReason, SourceKind};
use crate::material::{KeyChoice, KeyMaterial};
use crate::policy::{KeyOutcome, MethodOutcome};
use crate::store::Store;

/// What the service keeps of the key store.
pub(super) struct StoreParts {
    pub(super) store: Store,
    pub(super) pins: Arc<StorePins>,
    pub(super) history: KeyHistory,
    pub(super) learned: Option<Arc<LearnedSource>>,
}

impl KeyService {
    /// The same, with the key store's pins and history (tests of the
    /// chain with a store).
    #[cfg(test)]
    pub(crate) fn with_store(mut self, store: Store, refresh: std::time::Duration) -> Self {
        self.store = Some(StoreParts {
            pins: StorePins::new(store.clone(), refresh, None),
            history: KeyHistory::new(store.clone(), refresh, None),
            store,
            learned: None,
        });
        self
    }

    /// Takes over the store pins `old` (the engine before a reload) has
    /// read, when both use the same store.
    pub fn take_over_pins(&self, old: &KeyService) {
        if let (Some(new), Some(old)) = (&self.store, &old.store) {
            new.pins.take_over(&old.pins);
        }
    }

    /// The key store (none in unit tests of the chain).
    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref().map(|s| &s.store)
    }

    /// The `learned` source, when the service has one (the harvester
    /// tells it about keys it learned).
    pub(crate) fn learned_source(&self) -> Option<&Arc<LearnedSource>> {
        self.store.as_ref().and_then(|s| s.learned.as_ref())
    }

    /// `choice` with the store's pins for `addr` joined to its own (`None`:
    /// nothing to add), within `until`; why not when they cannot be known.
    pub(super) async fn with_store_pins(
        &self,
        addr: &Address,
        choice: &KeyChoice,
        until: Instant,
        trace: bool,
        steps: &mut Vec<Step>,
    ) -> Result<Option<KeyChoice>, FailReason> {
        let Some(parts) = &self.store else {
            return Ok(None);
        };
        let pins = tokio::time::timeout_at(until.into(), parts.pins.for_address(addr))
            .await
            .unwrap_or(Err(FailReason::Timeout))?;
        if pins.is_empty() {
            return Ok(None);
        }
        if trace {
            steps.push(Step {
                source: format!("pins in the key store ({})", parts.store.describe()),
                answer: "pinned",
                asked: pins.clone(),
            });
        }
        let mut all = choice.pins.clone();
        all.extend(pins.into_iter().filter(|p| !choice.pins.contains(p)));
        Ok(Some(KeyChoice {
            pins: all,
            ..choice.clone()
        }))
    }

    /// Applies the rule's `on_key_change` to the usable keys `kind` found
    /// (`as_found`: their fingerprints and bytes), through the key history.
    #[allow(
        clippy::too_many_arguments,
        reason = "one call site, the lookup's own state"
    )]
    pub(super) async fn vet(
        &self,
        parts: &StoreParts,
        kind: SourceKind,
        addr: &Address,
        outcome: &mut MethodOutcome<Recipient>,
        as_found: &[(String, Vec<u8>)],
        choice: &KeyChoice,
        now: SystemTime,
    ) {
        let method = outcome.method;
        let KeyOutcome::Found {
            security, usable, ..
        } = &mut outcome.outcome
        else {
            return;
        };
        let security = *security;
        // A pinned key is the operator's word, given out of band: it needs
        // no review (and with pins, every usable key is a pinned one).
        let on_change = if choice.pins.is_empty() {
            choice.on_key_change
        } else {
            crate::material::OnKeyChange::Accept
        };
        match parts
            .history
            .vet(kind, addr, method, as_found, on_change)
            .await
        {
            Vetted::Use(fingerprints) => {
                let before = usable.len();
                usable.retain(|r| fingerprints.contains(&r.fingerprint));
                if usable.len() < before {
                    outcome.notes.push(format!(
                        "{} new key(s) from {kind} held for review (keys approve)",
                        before - usable.len()
                    ));
                }
            }
            Vetted::Previous(seen) => {
                let backend = self.registry.get(method);
                let previous: Vec<Recipient> = seen
                    .iter()
                    .filter(|s| choice.pins.is_empty() || choice.pins.contains(&s.fingerprint))
                    .filter_map(|s| {
                        let k = KeyMaterial {
                            method,
                            data: s.key.clone(),
                            origin: format!("key {kind} returned before (approved)"),
                            provenance: crate::material::Provenance::now(kind, security),
                            bound_addresses: Vec::new(),
                        };
                        self.validated.validate(backend, &k, addr, now).ok()
                    })
                    .collect();
                if previous.is_empty() {
                    outcome.outcome = KeyOutcome::Held(format!(
                        "{kind} returned a new key, which awaits review (keys approve), and no \
                         key approved before is still valid"
                    ));
                } else {
                    outcome.notes.push(format!(
                        "{kind} returned a new key, held for review (keys approve): using the \
                         key(s) approved before"
                    ));
                    *usable = previous;
                }
            }
            Vetted::Failed(why) => {
                outcome.outcome = KeyOutcome::Failed(FailReason::Network(why));
            }
        }
    }
}
