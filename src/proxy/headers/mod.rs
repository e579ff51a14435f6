//! Header rules of the proxy, one concern per file.

pub(crate) mod forwarded;
pub(crate) mod hop;
pub(crate) mod identity;
