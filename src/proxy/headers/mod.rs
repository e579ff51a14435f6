//! Header rules of the proxy, one concern per file.

pub mod forwarded;
pub mod hop;
pub mod identity;
