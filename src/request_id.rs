//! `X-Request-Id`: one id per request, on every log line of it, sent to the
//! upstream and returned to the client.
//!
//! A well-formed id from a trusted proxy (`server.trusted_proxies`) is kept,
//! so one id follows a request across the hops; any other is replaced. A new
//! id is 128 random bits, 32 hex digits. They are drawn from the system's
//! random source [`BATCH`] at a time and written out as text once; each id
//! is a slice of that text (shared, not copied): a request's id costs no
//! hash, no allocation and no system call of its own.

use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use bytes::Bytes;
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

/// Ids drawn from the system's random source at a time.
const BATCH: usize = 128;

/// The hex text of [`BATCH`] ids, and how many of them are taken.
struct Batch {
    text: Bytes,
    taken: usize,
}

impl Batch {
    fn draw() -> Batch {
        let mut random = [0u8; 16 * BATCH];
        if SystemRandom::new().fill(&mut random).is_err() {
            fallback(&mut random);
        }
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = vec![0u8; 32 * BATCH];
        for (pair, byte) in text.chunks_exact_mut(2).zip(random) {
            pair[0] = HEX[usize::from(byte >> 4)];
            pair[1] = HEX[usize::from(byte & 0xf)];
        }
        Batch {
            text: Bytes::from(text),
            taken: 0,
        }
    }
}

thread_local! {
    static IDS: RefCell<Batch> = RefCell::new(Batch::draw());
}

/// A new id.
pub(crate) fn generate() -> HeaderValue {
    let id = IDS.with(|ids| {
        let mut batch = ids.borrow_mut();
        if batch.taken == BATCH {
            *batch = Batch::draw();
        }
        let at = 32 * batch.taken;
        batch.taken += 1;
        batch.text.slice(at..at + 32)
    });
    // Hex digits: always a valid header value.
    HeaderValue::from_maybe_shared(id).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// Should the system's random source fail: SipHash outputs of a
/// per-process counter under keys drawn at start (unique in the process,
/// not guessable from one another).
fn fallback(random: &mut [u8]) {
    static KEYS: LazyLock<RandomState> = LazyLock::new(RandomState::new);
    static NEXT: AtomicU64 = AtomicU64::new(0);
    for chunk in random.chunks_mut(8) {
        let bits = KEYS.hash_one(NEXT.fetch_add(1, Ordering::Relaxed)).to_be_bytes();
        chunk.copy_from_slice(&bits[..chunk.len()]);
    }
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
    fn the_fallback_never_repeats_either() {
        let mut random = [0u8; 16 * BATCH];
        fallback(&mut random);
        let halves: HashSet<&[u8]> = random.chunks(8).collect();
        assert_eq!(halves.len(), 2 * BATCH);
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
