//! Signing keys (to be written).
