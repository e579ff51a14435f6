//! `X-Request-Id`: one id per request, on every log line of it, sent to the
//! upstream and returned to the client.
//!
//! A well-formed id from a trusted proxy (`server.trusted_proxies`) is kept,
//! so one id follows a request across the hops; any other is replaced. A new
//! id is 128 bits, 32 hex digits: two SipHash outputs of a per-process
//! counter under keys drawn at start, so ids never repeat in a process and
//! cannot be guessed from one another, at the cost of a hash rather than a
//! system call per request.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// The header's name.
pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest id kept from a proxy.
const MAX_LEN: usize = 128;

/// The id of a request: the trusted proxy's, when `trusted` and it is well
/// formed (1 to 128 visible ASCII characters, one field), else a new one.
pub(crate) fn of(headers: &HeaderMap, trusted: bool) -> HeaderValue {
    if trusted {
        let mut sent = headers.get_all(&X_REQUEST_ID).iter();
        if let (Some(value), None) = (sent.next(), sent.next()) {
            if well_formed(value.as_bytes()) {
                return value.clone();
            }
        }
    }
    generate()
}

fn well_formed(id: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&id.len()) && id.iter().all(u8::is_ascii_graphic)
}

/// A new id.
pub(crate) fn generate() -> HeaderValue {
    static KEYS: LazyLock<(RandomState, RandomState)> = LazyLock::new(|| (RandomState::new(), RandomState::new()));
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let (a, b) = &*KEYS;
    let mut text = [0u8; 32];
    let bits = [a.hash_one(n), b.hash_one(n)];
    for (i, byte) in bits.iter().flat_map(|half| half.to_be_bytes()).enumerate() {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        text[2 * i] = HEX[usize::from(byte >> 4)];
        text[2 * i + 1] = HEX[usize::from(byte & 0xf)];
    }
    // Hex digits: always a valid header value.
    HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn headers(values: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(&X_REQUEST_ID, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn new_ids_are_32_hex_digits_and_never_repeat() {
        let ids: HashSet<String> = (0..10_000)
            .map(|_| generate().to_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids
            .iter()
            .all(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())));
    }

    #[test]
    fn a_trusted_proxys_well_formed_id_is_kept_and_any_other_replaced() {
        assert_eq!(of(&headers(&["abc-123"]), true), "abc-123");
        let long = "x".repeat(128);
        let h = {
            let mut h = HeaderMap::new();
            h.insert(&X_REQUEST_ID, HeaderValue::from_str(&long).unwrap());
            h
        };
        assert_eq!(of(&h, true), long.as_str());
        for (sent, trusted) in [
            (&["abc-123"][..], false),
            (&["a b"][..], true),
            (&[""][..], true),
            (&["one", "two"][..], true),
        ] {
            let id = of(&headers(sent), trusted);
            assert_eq!(id.len(), 32, "{sent:?} trusted={trusted}: {id:?}");
        }
        let too_long = {
            let mut h = HeaderMap::new();
            h.insert(&X_REQUEST_ID, HeaderValue::from_str(&"x".repeat(129)).unwrap());
            h
        };
        assert_eq!(of(&too_long, true).len(), 32);
    }
}
