//! autoencrypt-milter: encrypts mail to recipient keys found in
//! DNSSEC-signed DNS (SMIMEA, OPENPGPKEY) or in a local key directory.
//!
//! The binary is a thin wrapper around [`cli::run`]; the library exists so
//! that integration tests and benchmarks reach the same code. Its public
//! surface is what those need:
//!
//! * [`milter`]: the engine, [`milter::serve`] with its reload and
//!   shutdown inputs, the listeners;
//! * [`keys`]: the [`keys::KeyService`], the [`keys::KeySource`] trait and
//!   its outcome, the DNS source;
//! * [`policy`], [`config`], [`metrics`]: rules and decisions, the
//!   configuration, the metric families and their endpoint;
//! * [`message`], [`pipeline`], [`backend`]: the message model,
//!   classification and verification, the end-of-message steps, the
//!   encryption backends;
//! * [`store`]: the key store (learned keys, key history, pins, key
//!   changes) over SQLite or PostgreSQL;
//! * [`cli::run`]; `fuzzing` (hidden) for the fuzz targets.
//!
//! Everything else is private to the crate.

mod address;
pub mod backend;
pub mod cli;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod harvest;
pub mod keys;
mod material;
mod memory;
pub mod message;
pub mod metrics;
pub mod milter;
pub mod pipeline;
pub mod policy;
pub mod signatures;
pub mod signing;
mod spool;
pub mod store;

pub use address::{Address, AddressError};
pub use backend::{EncryptionBackend, Method, Registry};
pub use memory::MemoryBudget;
pub use spool::Spool;
