//! Micro-benchmarks of the pieces every embed request (or every mint) runs
//! through, one named bench per piece, measured on the crate's own code
//! through `embedgate::bench_support`:
//!
//! - `session_lookup/*`: the session check's store step — hash the cookie
//!   value, use the session — in a memory store holding 100 000 sessions;
//! - `cookie/*`: taking the session cookie out of the request's `Cookie`
//!   field(s), HTTP/1.1 style (one field) and HTTP/2 style (one per cookie);
//! - `identity/headers`: the `X-Embed-*` headers of a session already seen;
//! - `rewrite/*`: the response filter, rule by rule and whole;
//! - `assertion/*`: the cached `X-Embed-AssertionFixture` reused vs a fresh signature;
//! - `pat/mint`: a new PAT and its record kept in the memory store.
//!
//! `cargo bench --bench hot_path` runs them all; `-- session_lookup` only those.

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use embedgate::bench_support::{take_session_cookie, AssertionFixture, IdentityFixture, Mint, Rewrite, Sessions};
use http::header::{self, HeaderMap, HeaderValue};

/// Sessions in the store the lookups run against.
const SESSIONS: usize = 100_000;

fn session_lookup(c: &mut Criterion) {
    let sessions = Sessions::filled(SESSIONS).expect("the store fills");
    assert!(sessions.lookup(sessions.token(0)), "a filled session is found");
    assert!(!sessions.lookup("no such session"));
    let mut i = 0;
    c.bench_function("session_lookup/memory_hit", |b| {
        b.iter(|| {
            i += 1;
            sessions.lookup(black_box(sessions.token(i)))
        })
    });
    c.bench_function("session_lookup/memory_miss", |b| {
        b.iter(|| {
            sessions.lookup(black_box(
                "0000000000000000000000000000000000000000000000000000000000000000",
            ))
        })
    });
}

const SESSION_COOKIE: &str = "embedgate_session=3f6c0d2e9b8a47f1a2c4e6b8d0f1a3c5e7f9b1d3a5c7e9f1b3d5a7c9e1f3a5b7";
const OTHER_COOKIES: [&str; 4] = [
    "_ga=GA1.2.1234567890.1700000000",
    "theme=dark",
    "csrftoken=Zx8fJ2kLq9Rt4VwB",
    "lang=en-US",
];

/// A browser's cookies around the session cookie, in one `Cookie` field
/// (HTTP/1.1) or one field each (HTTP/2, RFC 9113 §8.2.3).
fn cookie_headers(split: bool) -> HeaderMap {
    let pairs = [
        OTHER_COOKIES[0],
        OTHER_COOKIES[1],
        SESSION_COOKIE,
        OTHER_COOKIES[2],
        OTHER_COOKIES[3],
    ];
    let mut headers = HeaderMap::new();
    headers.insert(header::HOST, HeaderValue::from_static("gw.example.com"));
    headers.insert(header::ACCEPT, HeaderValue::from_static("text/html,*/*;q=0.8"));
    if split {
        for pair in pairs {
            headers.append(header::COOKIE, HeaderValue::from_static(pair));
        }
    } else {
        let joined = pairs.join("; ");
        headers.insert(header::COOKIE, HeaderValue::from_str(&joined).expect("a header value"));
    }
    headers
}

fn cookie(c: &mut Criterion) {
    for (name, split) in [("cookie/extract_h1", false), ("cookie/extract_h2_split", true)] {
        let headers = cookie_headers(split);
        let mut probe = headers.clone();
        assert_eq!(
            take_session_cookie(&mut probe),
            1,
            "{name}: the session cookie is found"
        );
        assert_eq!(
            probe.get_all(header::COOKIE).iter().count(),
            1,
            "{name}: the rest in one field"
        );
        c.bench_function(name, |b| {
            b.iter_batched(
                || headers.clone(),
                // The headers are handed back so that dropping them is not timed.
                |mut headers| (take_session_cookie(&mut headers), headers),
                BatchSize::SmallInput,
            )
        });
    }
}

fn identity(c: &mut Criterion) {
    let identity = IdentityFixture::warm().expect("a signer");
    let first = identity.headers().expect("identity headers");
    assert_eq!(first.len(), 4);
    c.bench_function("identity/headers", |b| {
        b.iter(|| identity.headers().expect("identity headers"))
    });
}

/// What an upstream's login redirect sends back, framing rules included.
fn upstream_response() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; script-src 'self' 'unsafe-inline'; frame-ancestors 'self'"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("SAMEORIGIN"));
    headers.insert(header::LOCATION, HeaderValue::from_static(LOCATION));
    headers.append(header::SET_COOKIE, HeaderValue::from_static(SET_COOKIE));
    headers.append(
        header::SET_COOKIE,
        HeaderValue::from_static("flash=; Path=/login; Max-Age=0"),
    );
    headers
}

const LOCATION: &str = "/login?next=%2Fdashboard";
const SET_COOKIE: &str = "sid=0123456789abcdef; Path=/; Domain=app.internal; HttpOnly; Secure; SameSite=Lax";

fn rewrite(c: &mut Criterion) {
    let rewrite = Rewrite::default();
    assert!(rewrite
        .location(LOCATION)
        .is_some_and(|l| l.starts_with("/embed-apps/")));
    assert!(rewrite.set_cookie(SET_COOKIE).is_some_and(|s| !s.contains("Domain")));
    c.bench_function("rewrite/location", |b| b.iter(|| rewrite.location(black_box(LOCATION))));
    c.bench_function("rewrite/set_cookie", |b| {
        b.iter(|| rewrite.set_cookie(black_box(SET_COOKIE)))
    });
    let response = upstream_response();
    c.bench_function("rewrite/csp", |b| {
        b.iter_batched(
            || response.clone(),
            |mut headers| {
                rewrite.csp(&mut headers);
                headers
            },
            BatchSize::SmallInput,
        )
    });
    c.bench_function("rewrite/apply", |b| {
        b.iter_batched(
            || response.clone(),
            |mut headers| {
                rewrite.apply(&mut headers);
                headers
            },
            BatchSize::SmallInput,
        )
    });
}

fn assertion(c: &mut Criterion) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let mut assertion = AssertionFixture::new().expect("a signer");
    let signed = assertion.reuse_or_sign(now).expect("signed");
    assert_eq!(
        assertion.reuse_or_sign(now).expect("reused"),
        signed,
        "the cache is hit"
    );
    c.bench_function("assertion/reuse", |b| {
        b.iter(|| assertion.reuse_or_sign(black_box(now)).expect("reused"))
    });
    c.bench_function("assertion/sign_fresh", |b| {
        b.iter(|| assertion.sign_fresh(black_box(now)).expect("signed"))
    });
}

fn pat(c: &mut Criterion) {
    c.bench_function("pat/mint", |b| {
        // A fresh store per sample, so the store does not grow over the
        // whole run; the fill of the sample's own PATs is measured.
        b.iter_custom(|iters| {
            let mint = Mint::default();
            let start = Instant::now();
            for i in 0..iters {
                black_box(mint.mint(i as usize).expect("minted"));
            }
            let elapsed: Duration = start.elapsed();
            drop(mint);
            elapsed
        })
    });
}

criterion_group!(hot_path, session_lookup, cookie, identity, rewrite, assertion, pat);
criterion_main!(hot_path);
