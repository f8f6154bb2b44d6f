//! The former path of [`crate::keys::dns::owner`] (DNS owner names for
//! SMIMEA and OPENPGPKEY), kept so callers outside `keys::dns` compile
//! unchanged. New code uses `crate::keys::dns::owner`.

pub use super::dns::owner::*;
