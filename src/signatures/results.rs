//! Stub.
use super::Verdict;
use crate::address::Address;
use crate::backend::Method;
use crate::message::HeaderField;

/// What goes in.
pub enum Reported<'a> {
    /// A verdict.
    Verdict(&'a Verdict),
    /// Lookup failure.
    TempError(&'a str),
}

/// Field value.
pub fn field_value(
    authserv_id: &str,
    method: Method,
    _r: &Reported,
    _from: &Address,
    _note: Option<&str>,
) -> String {
    format!("{authserv_id}; {method}=permerror")
}

/// Ours.
pub fn ours(_h: &[HeaderField], _a: &str) -> Vec<usize> {
    Vec::new()
}
