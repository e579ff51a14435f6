//! The hasher of the maps looked up on every request: foldhash, seeded per
//! process. Their keys come from the config (apps, users, upstreams) or are
//! digests of tokens the gateway made (sessions, PATs), never chosen by a
//! client to collide, so std's SipHash would buy nothing there but cost.

/// A `BuildHasher` for those maps.
pub(crate) type FastHash = foldhash::fast::RandomState;
