//! Adversarial bodies and heads for the PAT API (SPEC §3), sent as raw
//! bytes: each gets its clear status with the SPEC §3 JSON body naming the
//! field (or `body`) at fault, no PAT is minted by any of them, and the
//! gateway then mints normally.

use std::time::Duration;

use crate::common::*;

const PATH: &str = "/api/ext/users/personal-access-token";

/// One request: `fields` replace the default `Authorization` and
/// `Content-Type` when given.
struct Case {
    name: String,
    fields: Option<String>,
    body: Vec<u8>,
    status: u16,
    /// What the error message starts with (`None`: not checked).
    message: Option<&'static str>,
}

fn case(name: impl Into<String>, body: impl AsRef<[u8]>, status: u16, message: &'static str) -> Case {
    Case {
        name: name.into(),
        fields: None,
        body: body.as_ref().to_vec(),
        status,
        message: (!message.is_empty()).then_some(message),
    }
}

fn with_fields(mut c: Case, fields: &str) -> Case {
    c.fields = Some(fields.to_string());
    c
}

fn default_fields() -> String {
    format!("Authorization: Basic {API_TOKEN}\r\nContent-Type: application/json\r\n")
}

/// A mint body for alice on app A with `extra` members after `appId`.
fn alice(extra: &str) -> String {
    format!(r#"{{"email": "alice@example.com", "appId": "{APP_A}"{extra}}}"#)
}

fn body_cases() -> Vec<Case> {
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    vec![
        // Not JSON, or not an object.
        case("empty body", "", 400, "body: malformed JSON"),
        case("truncated object", "{", 400, "body: malformed JSON"),
        case(
            "truncated string",
            r#"{"email": "alice@exa"#,
            400,
            "body: malformed JSON",
        ),
        case(
            "truncated after a comma",
            r#"{"email": "alice@example.com","#,
            400,
            "body: malformed JSON",
        ),
        case(
            "single quotes",
            "{'email': 'alice@example.com'}",
            400,
            "body: malformed JSON",
        ),
        case("trailing comma", alice(","), 400, "body: malformed JSON"),
        case(
            "a comment",
            format!("// hi\n{}", alice("")),
            400,
            "body: malformed JSON",
        ),
        case(
            "trailing garbage",
            format!("{} x", alice("")),
            400,
            "body: malformed JSON",
        ),
        case(
            "two objects",
            format!("{}{}", alice(""), alice("")),
            400,
            "body: malformed JSON",
        ),
        case(
            "a byte-order mark",
            format!("\u{feff}{}", alice("")),
            400,
            "body: malformed JSON",
        ),
        case(
            "invalid UTF-8",
            b"{\"email\": \"\xff\xfe\"}",
            400,
            "body: malformed JSON",
        ),
        case("NaN", alice(r#", "sessionExpiry": NaN"#), 400, "body: malformed JSON"),
        case(
            "Infinity",
            alice(r#", "sessionExpiry": Infinity"#),
            400,
            "body: malformed JSON",
        ),
        case(
            "a number too large for a double",
            alice(r#", "sessionExpiry": 1e400"#),
            400,
            "body: malformed JSON",
        ),
        case(
            "an unescaped control byte in a string",
            "{\"email\": \"a\u{1}b\"}",
            400,
            "body: malformed JSON",
        ),
        case(
            "a lone surrogate escape",
            r#"{"email": "\ud800@example.com"}"#,
            400,
            "body: malformed JSON",
        ),
        case("an array", "[]", 400, "body: expected a JSON object"),
        case("a string", "\"alice@example.com\"", 400, "body: expected a JSON object"),
        case("null", "null", 400, "body: expected a JSON object"),
        case("a number", "42", 400, "body: expected a JSON object"),
        case("true", "true", 400, "body: expected a JSON object"),
        // Depth: serde_json stops at 128 levels, no stack to overflow.
        case(
            "deep nesting in a field",
            format!(r#"{{"email": {}}}"#, deep(30_000)),
            400,
            "body: malformed JSON",
        ),
        case(
            "deep nesting in an unknown field",
            format!(r#"{{"x": {}}}"#, deep(200)),
            400,
            "body: malformed JSON",
        ),
        case(
            "deep objects",
            format!("{}{}", r#"{"a":"#.repeat(500), "}".repeat(500)),
            400,
            "body: malformed JSON",
        ),
        case(
            "nesting under the limit in an unknown field",
            format!(r#"{{"x": {}}}"#, deep(50)),
            400,
            "x: unknown field",
        ),
        // Repeated keys: refused, whichever value would win.
        case(
            "email twice",
            format!(r#"{{"email": "eve@other.example", "email": "alice@example.com", "appId": "{APP_A}"}}"#),
            400,
            "body: an object repeats a key",
        ),
        case(
            "appId twice, same value",
            alice(&format!(r#", "appId": "{APP_A}""#)),
            400,
            "body: an object repeats a key",
        ),
        case(
            "a key repeated by an escape",
            format!(r#"{{"email": "eve@other.example", "\u0065mail": "alice@example.com", "appId": "{APP_A}"}}"#),
            400,
            "body: an object repeats a key",
        ),
        // Fields: missing, null, wrong type, out of range, unknown.
        case("empty object", "{}", 400, "email"),
        case("no email", format!(r#"{{"appId": "{APP_A}"}}"#), 400, "email"),
        case("no appId", r#"{"email": "alice@example.com"}"#, 400, "appId"),
        case(
            "email null",
            format!(r#"{{"email": null, "appId": "{APP_A}"}}"#),
            400,
            "email: must be a string",
        ),
        case(
            "appId null",
            r#"{"email": "alice@example.com", "appId": null}"#,
            400,
            "appId: must be a string",
        ),
        case(
            "sessionExpiry null",
            alice(r#", "sessionExpiry": null"#),
            400,
            "sessionExpiry: must be an integer",
        ),
        case(
            "patExpiry null",
            alice(r#", "patExpiry": null"#),
            400,
            "patExpiry: must be an integer",
        ),
        case(
            "email a number",
            format!(r#"{{"email": 5, "appId": "{APP_A}"}}"#),
            400,
            "email: must be a string",
        ),
        case(
            "email an array",
            format!(r#"{{"email": ["alice@example.com"], "appId": "{APP_A}"}}"#),
            400,
            "email: must be a string",
        ),
        case(
            "email an object",
            format!(r#"{{"email": {{"$ne": ""}}, "appId": "{APP_A}"}}"#),
            400,
            "email: must be a string",
        ),
        case(
            "email empty",
            format!(r#"{{"email": "", "appId": "{APP_A}"}}"#),
            400,
            "email: must not be empty",
        ),
        case(
            "email only spaces",
            format!(r#"{{"email": "   ", "appId": "{APP_A}"}}"#),
            400,
            "email: must not be empty",
        ),
        case(
            "appId not a UUID",
            r#"{"email": "alice@example.com", "appId": "app"}"#,
            400,
            "appId: must be a UUID",
        ),
        case(
            "appId a UUID with braces",
            format!(r#"{{"email": "alice@example.com", "appId": "{{{APP_A}}}"}}"#),
            400,
            "appId: must be a UUID",
        ),
        case(
            "appId a number",
            r#"{"email": "alice@example.com", "appId": 7}"#,
            400,
            "appId: must be a string",
        ),
        case(
            "appId a path",
            r#"{"email": "alice@example.com", "appId": "../8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc"}"#,
            400,
            "appId: must be a UUID",
        ),
        case(
            "sessionExpiry a float",
            alice(r#", "sessionExpiry": 60.0"#),
            400,
            "sessionExpiry: must be an integer",
        ),
        case(
            "sessionExpiry a fraction",
            alice(r#", "sessionExpiry": 0.5"#),
            400,
            "sessionExpiry: must be an integer",
        ),
        case(
            "sessionExpiry in exponent form",
            alice(r#", "sessionExpiry": 6e1"#),
            400,
            "sessionExpiry: must be an integer",
        ),
        case(
            "sessionExpiry a string",
            alice(r#", "sessionExpiry": "60""#),
            400,
            "sessionExpiry: must be an integer",
        ),
        case(
            "sessionExpiry a boolean",
            alice(r#", "sessionExpiry": true"#),
            400,
            "sessionExpiry: must be an integer",
        ),
        case(
            "sessionExpiry zero",
            alice(r#", "sessionExpiry": 0"#),
            400,
            "sessionExpiry: must be between",
        ),
        case(
            "sessionExpiry negative",
            alice(r#", "sessionExpiry": -5"#),
            400,
            "sessionExpiry: must be between",
        ),
        case(
            "sessionExpiry huge",
            alice(r#", "sessionExpiry": 18446744073709551615"#),
            400,
            "sessionExpiry: must be between",
        ),
        case(
            "sessionExpiry past u64",
            alice(r#", "sessionExpiry": 18446744073709551616"#),
            400,
            "sessionExpiry: must be an integer",
        ),
        case(
            "patExpiry zero",
            alice(r#", "patExpiry": 0"#),
            400,
            "patExpiry: must be between",
        ),
        case(
            "patExpiry negative",
            alice(r#", "patExpiry": -1"#),
            400,
            "patExpiry: must be between",
        ),
        case(
            "patExpiry past the maximum",
            alice(r#", "patExpiry": 100000000"#),
            400,
            "patExpiry: must be between",
        ),
        case(
            "patExpiry a float",
            alice(r#", "patExpiry": 60.5"#),
            400,
            "patExpiry: must be an integer",
        ),
        case(
            "an unknown field",
            alice(r#", "admin": true"#),
            400,
            "admin: unknown field",
        ),
        case(
            "an unknown field differing in case",
            format!(r#"{{"Email": "alice@example.com", "appId": "{APP_A}"}}"#),
            400,
            "Email: unknown field",
        ),
        case(
            "groups with configured users",
            alice(r#", "groups": ["admins"]"#),
            400,
            "groups: not accepted",
        ),
        // Well-formed, for someone who is not there.
        case(
            "unknown email",
            format!(r#"{{"email": "mallory@example.com", "appId": "{APP_A}"}}"#),
            404,
            "email",
        ),
        case(
            "unicode email",
            format!(r#"{{"email": "ålice@example.com", "appId": "{APP_A}"}}"#),
            404,
            "email",
        ),
        case(
            "an email with a NUL escape",
            format!(r#"{{"email": "alice@example.com\u0000", "appId": "{APP_A}"}}"#),
            404,
            "email",
        ),
        case(
            "overlong email",
            format!(
                r#"{{"email": "{}@example.com", "appId": "{APP_A}"}}"#,
                "a".repeat(10_000)
            ),
            404,
            "email",
        ),
        case(
            "unknown app",
            r#"{"email": "alice@example.com", "appId": "00000000-0000-4000-8000-000000000000"}"#,
            404,
            "appId",
        ),
        case(
            "a user the app does not admit",
            format!(r#"{{"email": "eve@other.example", "appId": "{APP_A}"}}"#),
            403,
            "",
        ),
        // Size: api.max_body_bytes (64 KiB by default).
        case(
            "a body over the limit",
            alice(&format!(r#", "x": "{}""#, "a".repeat(70_000))),
            413,
            "",
        ),
    ]
}

fn head_cases() -> Vec<Case> {
    let auth = format!("Authorization: Basic {API_TOKEN}\r\n");
    let json = "Content-Type: application/json\r\n";
    vec![
        with_fields(case("no Authorization", alice(""), 401, ""), json),
        with_fields(
            case("Bearer instead of Basic", alice(""), 401, ""),
            &format!("Authorization: Bearer {API_TOKEN}\r\n{json}"),
        ),
        with_fields(
            case("Basic without a token", alice(""), 401, ""),
            &format!("Authorization: Basic\r\n{json}"),
        ),
        with_fields(
            case("a wrong token", alice(""), 401, ""),
            &format!("Authorization: Basic x{API_TOKEN}\r\n{json}"),
        ),
        with_fields(
            case("the token's prefix alone", alice(""), 401, ""),
            &format!("Authorization: Basic {}\r\n{json}", &API_TOKEN[..10]),
        ),
        with_fields(
            case("two Authorization fields", alice(""), 401, ""),
            &format!("{auth}Authorization: Basic wrong\r\n{json}"),
        ),
        with_fields(case("no Content-Type", alice(""), 415, ""), &auth),
        with_fields(
            case("text/plain", alice(""), 415, ""),
            &format!("{auth}Content-Type: text/plain\r\n"),
        ),
        with_fields(
            case("application/jsonx", alice(""), 415, ""),
            &format!("{auth}Content-Type: application/jsonx\r\n"),
        ),
        with_fields(
            case("form-encoded", "email=alice@example.com", 415, ""),
            &format!("{auth}Content-Type: application/x-www-form-urlencoded\r\n"),
        ),
        with_fields(
            case("application/json with a charset", alice(""), 201, ""),
            &format!("{auth}Content-Type: application/json; charset=utf-8\r\n"),
        ),
    ]
}

/// Sends `c` on a new connection; returns what is wrong with the answer.
async fn check(gw: &Gateway, c: &Case) -> Result<(), String> {
    let fields = c.fields.clone().unwrap_or_else(default_fields);
    let mut conn = RawConn::connect(gw.public_addr).await;
    let mut bytes = format!(
        "POST {PATH} HTTP/1.1\r\nHost: gw\r\n{fields}Content-Length: {}\r\n\r\n",
        c.body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(&c.body);
    let _ = conn.send(&bytes).await;
    let r = conn.read_response(false).await.map_err(|e| format!("no answer: {e}"))?;
    if r.status != c.status {
        return Err(format!(
            "want {}, got {} {}",
            c.status,
            r.status,
            String::from_utf8_lossy(&r.body)
        ));
    }
    if c.status == 201 {
        return Ok(());
    }
    let body: serde_json::Value =
        serde_json::from_slice(&r.body).map_err(|e| format!("error body is not JSON ({e}): {:?}", r.body))?;
    if body["statusCode"] != c.status || !body["error"].is_string() {
        return Err(format!("error body {body}"));
    }
    let message = body["message"].as_str().unwrap_or("");
    if let Some(want) = c.message {
        if !message.starts_with(want) {
            return Err(format!("message {message:?}, want it to start with {want:?}"));
        }
    }
    if message.len() > 300 {
        return Err(format!("a {}-byte message echoes the input", message.len()));
    }
    Ok(())
}

async fn run(gw: &Gateway, cases: Vec<Case>) {
    let count = cases.len();
    let minted_before = minted(gw).await;
    let mut failures = Vec::new();
    let mut created = 0;
    for c in &cases {
        created += usize::from(c.status == 201);
        if let Err(why) = check(gw, c).await {
            failures.push(format!("{}: {why}", c.name));
        }
    }
    assert_all_passed(count, &failures);
    assert_eq!(
        minted(gw).await - minted_before,
        created as f64,
        "only the cases that should mint minted"
    );
    // And the API still works.
    let pat = mint_pat(gw.public_addr, "alice@example.com", APP_A).await;
    assert!(pat.starts_with("pat_"), "{pat}");
}

/// `embedgate_pats_minted_total` from the admin listener's metrics.
async fn minted(gw: &Gateway) -> f64 {
    let admin = gw.admin_addr.expect("admin listener");
    let text = get(admin, "/metrics").await.text();
    text.lines()
        .filter(|l| l.starts_with("embedgate_pats_minted_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_hostile_mint_bodies_get_their_400_naming_the_field() {
    let up = echo_upstream("a").await;
    let gw = EmbedOpts::new(&up.url(), &up.url()).start().await;
    run(&gw, body_cases()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mint_requests_without_the_right_token_or_type_are_refused() {
    let up = echo_upstream("a").await;
    let gw = EmbedOpts::new(&up.url(), &up.url()).start().await;
    run(&gw, head_cases()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_vouched_emails_are_checked_for_form_and_length() {
    let up = echo_upstream("a").await;
    let mut opts = EmbedOpts::new(&up.url(), &up.url());
    opts.extra = "[identity]\nusers = \"portal\"\n".into();
    let gw = opts.start().await;
    let body = |email: &str| format!(r#"{{"email": "{email}", "appId": "{APP_B}"}}"#);
    let cases = vec![
        case(
            "overlong email",
            body(&format!("{}@example.com", "a".repeat(300))),
            400,
            "email: at most",
        ),
        case(
            "no at sign",
            body("alice.example.com"),
            400,
            "email: must be an email address",
        ),
        case(
            "two at signs",
            body("a@b@example.com"),
            400,
            "email: must be an email address",
        ),
        case(
            "a space inside",
            body("al ice@example.com"),
            400,
            "email: must be an email address",
        ),
        case(
            "a control escape",
            body("alice\\u0007@example.com"),
            400,
            "email: must be an email address",
        ),
        case(
            "a comma (a header list separator)",
            body("a,b@example.com"),
            400,
            "email: must be an email address",
        ),
        case(
            "a semicolon",
            body("a;b@example.com"),
            400,
            "email: must be an email address",
        ),
        case(
            "a quoted local part",
            body("\\\"a\\\"@example.com"),
            400,
            "email: must be an email address",
        ),
        case(
            "an address literal",
            body("a@[127.0.0.1]"),
            400,
            "email: must be an email address",
        ),
        case(
            "an underscore in the domain",
            body("a@ex_ample.com"),
            400,
            "email: must be an email address",
        ),
        case("plus addressing", body("new.user+tag@example.com"), 201, ""),
        case(
            "groups not an array",
            format!(r#"{{"email": "x@example.com", "appId": "{APP_B}", "groups": "admins"}}"#),
            400,
            "groups",
        ),
        case(
            "a group with a comma",
            format!(r#"{{"email": "x@example.com", "appId": "{APP_B}", "groups": ["a,b"]}}"#),
            400,
            "groups",
        ),
        case(
            "attributes not an object",
            format!(r#"{{"email": "x@example.com", "appId": "{APP_B}", "attributes": [1]}}"#),
            400,
            "attributes",
        ),
        case("a vouched user", body("new.user@example.com"), 201, ""),
    ];
    run(&gw, cases).await;
}

/// A body that trickles in slower than `header_read_timeout_seconds` gets
/// 408, and holds nothing afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mint_body_that_trickles_in_gets_408() {
    let up = echo_upstream("a").await;
    let mut opts = EmbedOpts::new(&up.url(), &up.url());
    opts.server_extra = "header_read_timeout_seconds = 1".into();
    let gw = opts.start().await;
    let body = alice("");
    let mut c = RawConn::connect(gw.public_addr).await;
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nHost: gw\r\n{}Content-Length: {}\r\n\r\n",
        default_fields(),
        body.len()
    );
    c.send(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    for b in body.as_bytes().iter().take(10) {
        // The gateway answers (and closes) once the timeout is up.
        if c.send(&[*b]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let r = c.read_response(false).await.expect("an answer");
    assert_eq!(r.status, 408, "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(minted(&gw).await, 0.0);
    let pat = mint_pat(gw.public_addr, "alice@example.com", APP_A).await;
    assert!(pat.starts_with("pat_"));
}
