//! Bearer secrets: personal access tokens (`pat_` + 256 random bits) and
//! session tokens (256 random bits), drawn from the OS CSPRNG. The store
//! keeps only their SHA-256, so a leaked store leaks no usable token, and a
//! lookup is one hash-map probe whatever the number of live tokens.

use std::sync::{Mutex, PoisonError};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};

/// Every PAT starts with this.
pub(crate) const PAT_PREFIX: &str = "pat_";
/// Random bytes in a token: 256 bits.
const TOKEN_BYTES: usize = 32;

/// The SHA-256 of a token: what the store keys on.
pub(crate) type TokenHash = [u8; 32];

/// The OS CSPRNG failed to produce bytes (it does not, short of a broken
/// kernel; the request then fails with 500 rather than use weak bytes).
#[derive(Debug, thiserror::Error)]
#[error("the system random number generator failed")]
pub(crate) struct RandomError;

/// A new PAT: `pat_` and 64 lowercase hex digits.
pub(crate) fn new_pat() -> Result<String, RandomError> {
    Ok(format!("{PAT_PREFIX}{}", random_hex()?))
}

/// A new opaque session token: 64 lowercase hex digits.
pub(crate) fn new_session_token() -> Result<String, RandomError> {
    random_hex()
}

fn random_hex() -> Result<String, RandomError> {
    let mut bytes = [0u8; TOKEN_BYTES];
    SystemRandom::new().fill(&mut bytes).map_err(|_| RandomError)?;
    Ok(hex::encode(bytes))
}

/// SHA-256 of `token`.
pub(crate) fn hash(token: &str) -> TokenHash {
    crate::crypto::sha256(token.as_bytes())
}

/// The hash of the last token one client connection presented: a browser
/// sends its session cookie on every request, and hashing it again each
/// time was the largest cost of an embed request after the forward. Only
/// that connection's own requests read it. Never printed, never cloned
/// (a clone starts empty).
#[derive(Default)]
pub(crate) struct HashMemo(Mutex<Option<(Box<[u8]>, TokenHash)>>);

impl HashMemo {
    /// [`hash`] of `token` (as it came, in bytes), from the memo when it
    /// is the last one.
    pub(crate) fn hash(&self, token: &[u8]) -> TokenHash {
        let mut last = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((seen, hash)) = &*last {
            if **seen == *token {
                return *hash;
            }
        }
        let hashed: TokenHash = crate::crypto::sha256(token);
        *last = Some((token.into(), hashed));
        hashed
    }
}

impl Clone for HashMemo {
    fn clone(&self) -> Self {
        HashMemo::default()
    }
}

impl std::fmt::Debug for HashMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HashMemo")
    }
}

/// Whether `s` has the shape of a PAT this gateway mints (cheap pre-check
/// before hashing; the hash lookup is the real check).
pub(crate) fn looks_like_pat(s: &str) -> bool {
    s.strip_prefix(PAT_PREFIX)
        .is_some_and(|hex| hex.len() == 2 * TOKEN_BYTES && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memo_hashes_as_hash_does_whichever_token_comes() {
        let memo = HashMemo::default();
        for token in ["a", "a", "b", "a", "", "b", "b"] {
            assert_eq!(memo.hash(token.as_bytes()), hash(token), "{token:?}");
        }
        assert_eq!(format!("{:?}", memo), "HashMemo");
        assert_eq!(memo.clone().0.lock().map(|m| m.is_none()).ok(), Some(true));
    }
    use std::collections::HashSet;

    #[test]
    fn pats_are_prefixed_256_bit_hex_and_distinct() {
        let pats: HashSet<String> = (0..100).filter_map(|_| new_pat().ok()).collect();
        assert_eq!(pats.len(), 100);
        for pat in &pats {
            assert!(looks_like_pat(pat), "{pat}");
            assert_eq!(pat.len(), 4 + 64);
        }
    }

    #[test]
    fn session_tokens_are_256_bit_hex() {
        let token = new_session_token().unwrap_or_default();
        assert_eq!(token.len(), 64);
        assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn hash_is_sha256() {
        assert_eq!(
            hex::encode(hash("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn malformed_pats_are_recognised() {
        for bad in [
            "",
            "pat_",
            "pat_XYZ",
            "tok_0000000000000000000000000000000000000000000000000000000000000000",
        ] {
            assert!(!looks_like_pat(bad), "{bad}");
        }
        assert!(!looks_like_pat(&format!("pat_{}", "A".repeat(64))));
    }
}
