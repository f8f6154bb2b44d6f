//! Classification (stub).
