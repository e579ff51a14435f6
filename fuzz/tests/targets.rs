//! The fuzz targets: embedgate's config parser, mint-body parser, cookie
//! filter, PAT extraction and request-target rules, each fed inputs that
//! proptest generates — raw bytes, and token soups built from what those
//! parsers look for — and checked by `embedgate::fuzzing` for what must
//! hold. A failing input is shrunk and saved under
//! `proptest-regressions/`, and replayed first on every later run.
//!
//! `FUZZ_CASES` inputs per target and input kind (default 2,000: CI runs
//! them briefly); for a long run:
//!
//! ```text
//! FUZZ_CASES=1000000 cargo test --release -p embedgate-fuzz
//! ```

use embedgate::fuzzing;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};

fn config() -> Config {
    let cases = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..Config::default()
    }
}

/// Bytes built from `tokens`, up to `max` of them, with raw bytes mixed in.
fn soup(tokens: &'static [&'static str], max: usize) -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => proptest::sample::select(tokens).prop_map(|t| t.as_bytes().to_vec()),
        1 => proptest::collection::vec(any::<u8>(), 1..4),
    ];
    proptest::collection::vec(piece, 0..max).prop_map(|pieces| pieces.concat())
}

fn raw(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

const TOML_TOKENS: &[&str] = &[
    "[server]\n",
    "[api]\n",
    "[[apps]]\n",
    "[[users]]\n",
    "[pat]\n",
    "[session]\n",
    "[rate_limit]\n",
    "[store]\n",
    "[tls]\n",
    "[log]\n",
    "[identity]\n",
    "[passthrough]\n",
    "listen = ",
    "public_url = ",
    "upstream = ",
    "id = ",
    "email = ",
    "groups = ",
    "allow_users = ",
    "token_sha256 = ",
    "frame_ancestors = ",
    "kind = ",
    "url = ",
    "worker_threads = ",
    "max_body_bytes = ",
    "\"127.0.0.1:0\"",
    "\"https://gw.example\"",
    "\"http://127.0.0.1:1/\"",
    "\"8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc\"",
    "\"a@example.com\"",
    "[\"*\"]",
    "[]",
    "0",
    "-1",
    "1e9",
    "18446744073709551616",
    "true",
    "\"\"",
    "\"\\u0000\"",
    "\n",
    " ",
    "=",
    "[",
    "]",
    "{",
    "}",
    ",",
    "#",
    "'",
    "\"",
];

const JSON_TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"email\"",
    "\"appId\"",
    "\"sessionExpiry\"",
    "\"patExpiry\"",
    "\"groups\"",
    "\"attributes\"",
    "\"alice@example.com\"",
    "\"A@B.C\"",
    "\"8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc\"",
    "\"8BA8BF0E-6B8F-4E07-ABB9-6FD2D816FABC\"",
    "\"x\"",
    "\"\"",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "0",
    "1",
    "-1",
    "60",
    "1.5",
    "1e400",
    "18446744073709551616",
    "null",
    "true",
    "false",
    " ",
    "\"sales\"",
    "\"a,b\"",
];

const COOKIE_TOKENS: &[&str] = &[
    "embedgate_session",
    "=",
    ";",
    "; ",
    " ",
    "\"",
    "\n",
    "a",
    "b=c",
    "%20",
    ",",
    "Embedgate_session",
    "=;",
    "==",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
];

const QUERY_TOKENS: &[&str] = &[
    "personal-access-token",
    "Personal-Access-Token",
    "=",
    "&",
    "pat_",
    "PAT_",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789ABCDEF",
    "%",
    "%70",
    "%5f",
    "+",
    "a",
    "g",
    "%00",
];

const TARGET_TOKENS: &[&str] = &[
    "/",
    "/",
    "/",
    "embed-apps",
    "api",
    "ext",
    ".well-known",
    "embedgate",
    "8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc",
    ".",
    "..",
    "%2e",
    "%2E",
    "%25",
    "%252e",
    "%2f",
    "%2F",
    "%5c",
    "%5C",
    "%00",
    "\\",
    "a",
    "?",
    "#",
    ":",
    "@",
    "http://gw",
    "https://",
    "*",
    "%",
    "\n",
    "gw",
    "gw:80",
    "[::1]",
    "users",
    "personal-access-token",
    " ",
];

/// Pieces of one path segment: dots, escapes, escaped escapes.
const SEGMENT_TOKENS: &[&str] = &[
    ".", ".", "%2e", "%2E", "%25", "2e", "2E", "%252e", "%2f", "%2F", "%5c", "%5C", "\\", "a", "%00", "%", "25", "2f",
    "5c", "00",
];

/// A target under one of the gateway's trees (or not), of segments built
/// from [`SEGMENT_TOKENS`], with a query now and then.
fn structured_target() -> impl Strategy<Value = Vec<u8>> {
    let tree = proptest::sample::select(
        &[
            "/embed-apps/8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc",
            "/api/ext",
            "/.well-known/embedgate",
            "/embed-apps",
            "",
        ][..],
    );
    let segment = soup(SEGMENT_TOKENS, 4);
    (
        tree,
        proptest::collection::vec(segment, 0..6),
        proptest::option::of(soup(SEGMENT_TOKENS, 3)),
    )
        .prop_map(|(tree, segments, query)| {
            let mut target = tree.as_bytes().to_vec();
            for segment in segments {
                target.push(b'/');
                target.extend(segment);
            }
            if target.is_empty() {
                target.push(b'/');
            }
            if let Some(query) = query {
                target.push(b'?');
                target.extend(query);
            }
            target
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn config_text_raw(data in raw(2048)) {
        fuzzing::config_text(&data);
    }

    #[test]
    fn config_text_tokens(data in soup(TOML_TOKENS, 80)) {
        fuzzing::config_text(&data);
    }

    #[test]
    fn mint_body_raw(data in raw(512)) {
        fuzzing::mint_body(&data);
    }

    #[test]
    fn mint_body_tokens(data in soup(JSON_TOKENS, 40)) {
        fuzzing::mint_body(&data);
    }

    #[test]
    fn cookie_fields_raw(data in raw(512)) {
        fuzzing::cookie_fields(&data);
    }

    #[test]
    fn cookie_fields_tokens(data in soup(COOKIE_TOKENS, 40)) {
        fuzzing::cookie_fields(&data);
    }

    #[test]
    fn pat_query_raw(data in raw(512)) {
        fuzzing::pat_query(&data);
    }

    #[test]
    fn pat_query_tokens(data in soup(QUERY_TOKENS, 30)) {
        fuzzing::pat_query(&data);
    }

    #[test]
    fn request_target_raw(data in raw(256)) {
        fuzzing::request_target(&data);
    }

    #[test]
    fn request_target_tokens(data in soup(TARGET_TOKENS, 30)) {
        fuzzing::request_target(&data);
    }

    #[test]
    fn request_target_segments(data in structured_target()) {
        fuzzing::request_target(&data);
    }
}
