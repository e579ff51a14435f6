//! Adversarial HTTP/1.1 over raw TCP: request heads, framing and request
//! targets a client library would refuse to send. Each case asserts the
//! answer (a clear 4xx, or a closed connection where HTTP says so, or a
//! clean forward), that nothing more than the case allows reached either
//! upstream (both record every request they parse: a smuggled request
//! would show up there), and that the gateway then serves a normal
//! request on a new connection.

mod common;

use common::*;

/// What a case must get.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// This status from the gateway (or hyper for it); nothing reaches an
    /// upstream.
    Status(u16),
    /// A 4xx, or the connection closed unanswered; nothing reaches an
    /// upstream.
    Refused,
    /// 200 from the passthrough upstream, which got exactly one request,
    /// for this target, with this body.
    Forwarded(&'static str, &'static str),
    /// 400: the body broke after the head went up (the client's fault,
    /// not the upstream's). The passthrough upstream may have got the head, but
    /// never a body it could take as complete.
    BodyCut,
}

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    want: Want,
}

fn case(name: &'static str, bytes: impl AsRef<[u8]>, want: Want) -> Case {
    Case {
        name,
        bytes: bytes.as_ref().to_vec(),
        want,
    }
}

/// `GET <target>` with `Host: gw` and `fields` (each ending in CRLF).
fn get(target: &str, fields: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: gw\r\n{fields}\r\n").into_bytes()
}

/// `POST /upload` with `fields` and then `body` as given.
fn post(fields: &str, body: &str) -> Vec<u8> {
    format!("POST /upload HTTP/1.1\r\nHost: gw\r\n{fields}\r\n{body}").into_bytes()
}

/// A request, to be sent as another's body.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: gw\r\n\r\n";

fn head_cases() -> Vec<Case> {
    use Want::*;
    let long_value = "a".repeat(70 * 1024);
    let many_fields: String = (0..150).map(|i| format!("X-F{i}: v\r\n")).collect();
    vec![
        // Host (RFC 9112 §3.2).
        case("no Host", "GET /x HTTP/1.1\r\n\r\n", Status(400)),
        case(
            "two Host fields",
            "GET /x HTTP/1.1\r\nHost: gw\r\nHost: other\r\n\r\n",
            Status(400),
        ),
        case(
            "two Host fields, same value",
            "GET /x HTTP/1.1\r\nHost: gw\r\nHost: gw\r\n\r\n",
            Status(400),
        ),
        case("Host with a space", "GET /x HTTP/1.1\r\nHost: g w\r\n\r\n", Status(400)),
        case(
            "Host with userinfo",
            "GET /x HTTP/1.1\r\nHost: user@gw\r\n\r\n",
            Status(400),
        ),
        case(
            "Host with a non-numeric port",
            "GET /x HTTP/1.1\r\nHost: gw:http\r\n\r\n",
            Status(400),
        ),
        case("Host with a path", "GET /x HTTP/1.1\r\nHost: gw/x\r\n\r\n", Status(400)),
        case(
            "Host with an open IPv6 bracket",
            "GET /x HTTP/1.1\r\nHost: [::1\r\n\r\n",
            Status(400),
        ),
        case("empty Host", "GET /x HTTP/1.1\r\nHost:\r\n\r\n", Forwarded("/x", "")),
        case("HTTP/1.0 without Host", "GET /x HTTP/1.0\r\n\r\n", Forwarded("/x", "")),
        case(
            "Host with a trailing dot",
            "GET /x HTTP/1.1\r\nHost: gw.\r\n\r\n",
            Forwarded("/x", ""),
        ),
        // Request line.
        case(
            "absolute-form, routed by its path",
            "GET http://elsewhere/x?q=1 HTTP/1.1\r\nHost: gw\r\n\r\n",
            Forwarded("/x?q=1", ""),
        ),
        case(
            "absolute-form of another scheme",
            "GET ftp://gw/x HTTP/1.1\r\nHost: gw\r\n\r\n",
            Status(400),
        ),
        case(
            "authority-form CONNECT",
            "CONNECT gw:443 HTTP/1.1\r\nHost: gw:443\r\n\r\n",
            Status(405),
        ),
        case(
            "CONNECT with a path",
            "CONNECT /x HTTP/1.1\r\nHost: gw\r\n\r\n",
            Status(405),
        ),
        case(
            "asterisk-form OPTIONS",
            "OPTIONS * HTTP/1.1\r\nHost: gw\r\n\r\n",
            Status(400),
        ),
        case("lowercase protocol", "GET /x http/1.1\r\nHost: gw\r\n\r\n", Refused),
        case("HTTP/0.9 request line", "GET /x\r\n\r\n", Refused),
        case(
            "two spaces in the request line",
            "GET  /x HTTP/1.1\r\nHost: gw\r\n\r\n",
            Refused,
        ),
        case(
            "control byte in the method",
            "G\x01T /x HTTP/1.1\r\nHost: gw\r\n\r\n",
            Refused,
        ),
        case("space in the target", "GET /a b HTTP/1.1\r\nHost: gw\r\n\r\n", Refused),
        case("NUL in the target", "GET /a\x00b HTTP/1.1\r\nHost: gw\r\n\r\n", Refused),
        case("unknown major version", "GET /x HTTP/3.0\r\nHost: gw\r\n\r\n", Refused),
        case(
            "target over the head limit",
            format!("GET /{} HTTP/1.1\r\nHost: gw\r\n\r\n", "a".repeat(70 * 1024)),
            Refused,
        ),
        // Header fields.
        case(
            "space before the colon",
            "GET /x HTTP/1.1\r\nHost : gw\r\n\r\n",
            Refused,
        ),
        case(
            "space before the colon of another field",
            get("/x", "X-A : b\r\n"),
            Refused,
        ),
        case("obs-fold continuation line", get("/x", "X-A: a\r\n b\r\n"), Refused),
        case("field name with a bracket", get("/x", "X(A): b\r\n"), Refused),
        case("field without a colon", get("/x", "X-A\r\n"), Refused),
        case("control byte in a value", get("/x", "X-A: a\x01b\r\n"), Refused),
        case("NUL in a value", get("/x", "X-A: a\x00b\r\n"), Refused),
        case("bare CR in a value", get("/x", "X-A: a\rb\r\n"), Refused),
        case(
            "value over the head limit",
            get("/x", &format!("X-A: {long_value}\r\n")),
            Status(431),
        ),
        case(
            "fields over the head limit together",
            get(
                "/x",
                &(0..40)
                    .map(|i| format!("X-F{i}: {}\r\n", "b".repeat(2000)))
                    .collect::<String>(),
            ),
            Status(431),
        ),
        case("too many fields", get("/x", &many_fields), Refused),
        case("empty field name", get("/x", ": v\r\n"), Refused),
        // Bare LF line endings are read as CRLF (RFC 9112 §2.2 allows it);
        // the upstream gets one normal request, in CRLF.
        case(
            "bare LF line endings",
            "GET /x HTTP/1.1\nHost: gw\n\n",
            Forwarded("/x", ""),
        ),
        // Content-Length and Transfer-Encoding (RFC 9112 §6).
        // Both: read by Transfer-Encoding alone, Content-Length dropped, and
        // the connection closed after the answer (RFC 9112 §6.1): the
        // upstream gets the chunked body's bytes, framed anew.
        case(
            "Content-Length with Transfer-Encoding",
            post("Content-Length: 3\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\nabc"),
            Forwarded("/upload", ""),
        ),
        case(
            "Transfer-Encoding with Content-Length",
            post(
                "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
                "1\r\nz\r\n0\r\n\r\n",
            ),
            Forwarded("/upload", "z"),
        ),
        case(
            "two different Content-Length",
            post("Content-Length: 3\r\nContent-Length: 4\r\n", "abcd"),
            Refused,
        ),
        case(
            "Content-Length list of two values",
            post("Content-Length: 3, 4\r\n", "abcd"),
            Refused,
        ),
        case(
            "Content-Length not a number",
            post("Content-Length: abc\r\n", ""),
            Refused,
        ),
        case("negative Content-Length", post("Content-Length: -1\r\n", ""), Refused),
        case(
            "Content-Length with a plus sign",
            post("Content-Length: +3\r\n", "abc"),
            Refused,
        ),
        case(
            "Content-Length over 64 bits",
            post("Content-Length: 99999999999999999999999\r\n", ""),
            Refused,
        ),
        case("Content-Length in hex", post("Content-Length: 0x3\r\n", "abc"), Refused),
        case(
            "Transfer-Encoding gzip without chunked",
            post("Transfer-Encoding: gzip\r\n", "abc"),
            Refused,
        ),
        case(
            "Transfer-Encoding chunked then gzip",
            post("Transfer-Encoding: chunked, gzip\r\n", "0\r\n\r\n"),
            Refused,
        ),
        case(
            "Transfer-Encoding identity",
            post("Transfer-Encoding: identity\r\n", "abc"),
            Refused,
        ),
        case(
            "Transfer-Encoding xchunked",
            post("Transfer-Encoding: xchunked\r\n", "0\r\n\r\n"),
            Refused,
        ),
        case(
            "Transfer-Encoding on HTTP/1.0",
            "POST /upload HTTP/1.0\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            Refused,
        ),
        case(
            "equal duplicate Content-Length",
            post("Content-Length: 3\r\nContent-Length: 3\r\n", "abc"),
            Forwarded("/upload", "abc"),
        ),
        case(
            "Transfer-Encoding in capitals",
            post("Transfer-Encoding: CHUNKED\r\n", "3\r\nabc\r\n0\r\n\r\n"),
            Forwarded("/upload", "abc"),
        ),
        // A smuggled second request inside a body is body, never a request.
        case(
            "request inside a Content-Length body",
            post(&format!("Content-Length: {}\r\n", SMUGGLED.len()), SMUGGLED),
            Forwarded("/upload", SMUGGLED),
        ),
        case(
            "request inside a chunked body",
            post(
                "Transfer-Encoding: chunked\r\n",
                &format!("{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n", SMUGGLED.len()),
            ),
            Forwarded("/upload", SMUGGLED),
        ),
        // Chunked bodies (RFC 9112 §7.1): broken framing is the client's fault.
        case(
            "chunk size not hex",
            post("Transfer-Encoding: chunked\r\n", "zz\r\nabc\r\n0\r\n\r\n"),
            BodyCut,
        ),
        case(
            "chunk size over 64 bits",
            post(
                "Transfer-Encoding: chunked\r\n",
                "FFFFFFFFFFFFFFFFFF\r\nabc\r\n0\r\n\r\n",
            ),
            BodyCut,
        ),
        case(
            "negative chunk size",
            post("Transfer-Encoding: chunked\r\n", "-3\r\nabc\r\n0\r\n\r\n"),
            BodyCut,
        ),
        case(
            "chunk data longer than its size",
            post("Transfer-Encoding: chunked\r\n", "3\r\nabcdef\r\n0\r\n\r\n"),
            BodyCut,
        ),
        case(
            "chunk without CRLF after its data",
            post("Transfer-Encoding: chunked\r\n", "3\r\nabcX\r\n0\r\n\r\n"),
            BodyCut,
        ),
        case(
            "chunk size with a space inside",
            post("Transfer-Encoding: chunked\r\n", "1 0\r\nabc\r\n0\r\n\r\n"),
            BodyCut,
        ),
        // Extensions are read past and never forwarded (the gateway frames
        // the upstream's body itself), whatever bytes they hold.
        case(
            "chunk extension with a control byte",
            post("Transfer-Encoding: chunked\r\n", "3;a\x01=b\r\nabc\r\n0\r\n\r\n"),
            Forwarded("/upload", "abc"),
        ),
        case(
            "chunk extension with a bare LF",
            post("Transfer-Encoding: chunked\r\n", "3;a\nb\r\nabc\r\n0\r\n\r\n"),
            BodyCut,
        ),
        case(
            "valid chunk extensions",
            post("Transfer-Encoding: chunked\r\n", "3;name=value;x\r\nabc\r\n0\r\n\r\n"),
            Forwarded("/upload", "abc"),
        ),
    ]
}

fn path_cases() -> Vec<Case> {
    use Want::*;
    let embed = |rest: &str| format!("/embed-apps/{APP_A}/{rest}");
    vec![
        // Dot segments, anywhere, plain or encoded once or twice.
        case("dot-dot segment", get("/a/../b", ""), Status(400)),
        case("dot segment", get("/a/./b", ""), Status(400)),
        case("trailing dot-dot", get("/a/..", ""), Status(400)),
        case("encoded dot-dot", get("/a/%2e%2e/b", ""), Status(400)),
        case("encoded dot-dot, mixed case", get("/a/%2E%2e/b", ""), Status(400)),
        case("half-encoded dot-dot", get("/a/.%2e/b", ""), Status(400)),
        case("double-encoded dot-dot", get("/a/%252e%252e/b", ""), Status(400)),
        case(
            "dot-dot out of an embed app",
            get(&embed("../../api/ext/users/personal-access-token"), ""),
            Status(400),
        ),
        case(
            "encoded dot-dot out of an embed app",
            get(&embed("%2e%2e/%2e%2e/x"), ""),
            Status(400),
        ),
        case(
            "dot-dot into the API",
            get("/x/../api/ext/users/personal-access-token", ""),
            Status(400),
        ),
        case(
            "dot segments in the query are data",
            get("/x?a=../../b", ""),
            Forwarded("/x?a=../../b", ""),
        ),
        case(
            "dots inside a segment are a name",
            get("/a/..b/c..", ""),
            Forwarded("/a/..b/c..", ""),
        ),
        // NUL.
        case("encoded NUL", get("/a%00b", ""), Status(400)),
        case("double-encoded NUL", get("/a%2500b", ""), Status(400)),
        // The gateway's own trees: nothing an upstream could split anew.
        case("empty segment in an embed path", get(&embed("a//b"), ""), Status(400)),
        case("encoded slash in an embed path", get(&embed("a%2Fb"), ""), Status(400)),
        case(
            "double-encoded slash in an embed path",
            get(&embed("a%252Fb"), ""),
            Status(400),
        ),
        case("backslash in an embed path", get(&embed("a\\b"), ""), Refused),
        case(
            "encoded backslash in an embed path",
            get(&embed("a%5Cb"), ""),
            Status(400),
        ),
        case(
            "encoded backslash dot-dot in an embed path",
            get(&embed("..%5C..%5Capi"), ""),
            Status(400),
        ),
        case(
            "empty segment in the API",
            get("/api/ext//users/personal-access-token", ""),
            Status(400),
        ),
        // Passthrough paths keep them, untouched.
        case(
            "encoded slash in a passthrough path",
            get("/files/a%2Fb", ""),
            Forwarded("/files/a%2Fb", ""),
        ),
        case(
            "empty segment in a passthrough path",
            get("/a//b", ""),
            Forwarded("/a//b", ""),
        ),
        // Matching: as sent, case-sensitive, never decoded.
        case(
            "the API in capitals is not the API",
            get("/API/ext/users/personal-access-token", ""),
            Forwarded("/API/ext/users/personal-access-token", ""),
        ),
        case(
            "an encoded API path is not the API",
            get("/%61pi/ext/users/personal-access-token", ""),
            Forwarded("/%61pi/ext/users/personal-access-token", ""),
        ),
        case(
            "embed tree in capitals is not the embed tree",
            get(&format!("/EMBED-APPS/{APP_A}/"), ""),
            Forwarded("/EMBED-APPS/8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc/", ""),
        ),
        case(
            "an app id in capitals is that app (no session: 401)",
            get(&format!("/embed-apps/{}/", APP_A.to_uppercase()), ""),
            Status(401),
        ),
        case(
            "an encoded app id is no app",
            get("/embed-apps/%38ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc/", ""),
            Status(404),
        ),
        case(
            "an app id with a trailing dot is no app",
            get(&format!("/embed-apps/{APP_A}./"), ""),
            Status(404),
        ),
        case("an embed path without a session", get(&embed("x"), ""), Status(401)),
        case(
            "the JWKS tree with an encoded slash",
            get("/.well-known/embedgate/%2Fjwks.json", ""),
            Status(400),
        ),
    ]
}

/// Runs `cases` one connection each; returns what went wrong, case by case.
async fn run(gw: &Gateway, pass: &Log, app: &Log, cases: Vec<Case>) -> Vec<String> {
    let mut failures = Vec::new();
    for case in cases {
        if let Err(why) = run_one(gw, pass, app, &case).await {
            failures.push(format!("{}: {why}", case.name));
        }
    }
    failures
}

async fn run_one(gw: &Gateway, pass: &Log, app: &Log, case: &Case) -> Result<(), String> {
    let (pass_before, app_before) = (pass.lock().unwrap().len(), app.lock().unwrap().len());
    let mut c = RawConn::connect(gw.public_addr).await;
    // The gateway may answer and close before all of it is written.
    let _ = c.send(&case.bytes).await;
    let answer = c.read_response(false).await;
    let status = answer.as_ref().map(|r| r.status).ok();
    // What reached the upstreams, once the gateway has answered.
    let new_pass: Vec<Received> = pass.lock().unwrap()[pass_before..].to_vec();
    let new_app: Vec<Received> = app.lock().unwrap()[app_before..].to_vec();
    if !new_app.is_empty() {
        return Err(format!("the embed upstream got {new_app:?}"));
    }
    match case.want {
        Want::Status(want) => {
            if status != Some(want) {
                return Err(format!("want {want}, got {answer:?}"));
            }
            if let Ok(r) = &answer {
                if r.status >= 400 && r.header("content-type") == Some("application/json") {
                    let body: serde_json::Value =
                        serde_json::from_slice(&r.body).map_err(|e| format!("error body: {e}"))?;
                    if body["statusCode"] != want {
                        return Err(format!("error body {body}"));
                    }
                }
            }
            if !new_pass.is_empty() {
                return Err(format!("the passthrough upstream got {new_pass:?}"));
            }
        }
        Want::Refused => {
            if status.is_some_and(|s| !(400..500).contains(&s)) {
                return Err(format!("want a 4xx or a close, got {answer:?}"));
            }
            if !new_pass.is_empty() {
                return Err(format!("the passthrough upstream got {new_pass:?}"));
            }
        }
        Want::Forwarded(target, body) => {
            if status != Some(200) {
                return Err(format!("want 200, got {answer:?}"));
            }
            match new_pass.as_slice() {
                [one] if one.target == target && one.body.as_deref() == Ok(body.as_bytes()) => {}
                other => {
                    return Err(format!(
                        "want one request for {target:?} with {body:?}, upstream got {other:?}"
                    ))
                }
            }
        }
        Want::BodyCut => {
            if status != Some(400) {
                return Err(format!("want 400, got {answer:?}"));
            }
            // The upstream records a request once its body has ended,
            // whole or not, which may be after the gateway answered.
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            let new_pass: Vec<Received> = pass.lock().unwrap()[pass_before..].to_vec();
            if let Some(whole) = new_pass.iter().find(|r| r.body.is_ok()) {
                return Err(format!("the upstream took a body as complete: {whole:?}"));
            }
        }
    }
    // And the gateway is fine: a normal request on a new connection.
    let after = pass.lock().unwrap().len();
    let r = get_path(gw, "/normal").await;
    if r != Some(200) {
        return Err(format!("a normal request after it got {r:?}"));
    }
    let normal: Vec<String> = pass.lock().unwrap()[after..].iter().map(|r| r.target.clone()).collect();
    if normal != ["/normal"] {
        return Err(format!("after it, the upstream got {normal:?} for one normal request"));
    }
    Ok(())
}

async fn get_path(gw: &Gateway, path: &str) -> Option<u16> {
    let mut c = RawConn::connect(gw.public_addr).await;
    c.send(&get(path, "")).await.ok()?;
    c.read_response(false).await.ok().map(|r| r.status)
}

async fn gateway() -> (Gateway, Upstream, Log, Upstream, Log) {
    let (pass, pass_log) = recording_upstream().await;
    let (app, app_log) = recording_upstream().await;
    let mut opts = EmbedOpts::new(&app.url(), &app.url());
    opts.extra = passthrough(&pass.url());
    let gw = opts.start().await;
    (gw, pass, pass_log, app, app_log)
}

/// Runs `cases` against a fresh gateway; fails with every case that failed.
async fn run_table(cases: Vec<Case>) {
    let (gw, _pass, pass_log, _app, app_log) = gateway().await;
    let count = cases.len();
    let failures = run(&gw, &pass_log, &app_log, cases).await;
    assert_all_passed(count, &failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_ambiguous_heads_are_refused_and_nothing_is_smuggled() {
    run_table(head_cases()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_targets_are_checked_before_routing() {
    run_table(path_cases()).await;
}
