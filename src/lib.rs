//! autoencrypt-milter: encrypts mail to recipient keys found in
//! DNSSEC-signed DNS (SMIMEA, OPENPGPKEY) or in a local key directory.
//!
//! The binary is a thin wrapper around [`cli::run`]; the library exists so
//! that integration tests and benchmarks reach the same code.

pub mod address;
pub mod backend;
pub mod cli;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod keys;
pub mod material;
pub mod memory;
pub mod message;
pub mod metrics;
pub mod milter;
pub mod pipeline;
pub mod policy;
pub mod spool;

pub use address::Address;
pub use backend::{EncryptionBackend, Method, Registry};
