//! Rewrite (stub).
