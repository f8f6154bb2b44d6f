//! The learned-key vocabulary, as the key store defines it.

pub use crate::store::{LearnedFrom, LearnedKey, PreferEncrypt};
