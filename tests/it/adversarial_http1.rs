//! Adversarial HTTP/1.1 over raw TCP and TLS: request heads, framing and
//! request targets a client library would refuse to send. Each case asserts
//! the answer (a clear 4xx, or a closed connection where HTTP says so, or a
//! clean forward), that nothing more than the case allows reached either
//! upstream (both record every request they parse: a smuggled request
//! would show up there), and that the gateway then serves a normal
//! request on a new connection. Every table runs over plain TCP and over
//! TLS (ALPN `http/1.1`), and a last one holds what only TLS can get wrong:
//! bytes that are not TLS, or not the protocol ALPN chose, and handshakes
//! left unfinished.

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::*;
use tokio::io::AsyncReadExt;

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
    /// Two 200s on the one connection, and the passthrough upstream got
    /// exactly two requests: the first for this target with this body,
    /// then `GET /second` (sent right behind it, in the same write).
    Pipelined(&'static str, &'static str),
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

/// The request [`Want::Pipelined`] sends behind the first.
const SECOND: &str = "GET /second HTTP/1.1\r\nHost: gw\r\n\r\n";

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
        // Where a body ends, the next request begins: a request pipelined
        // right behind a body is one request, whatever the framing.
        case(
            "a request after a Content-Length body",
            post("Content-Length: 3\r\n", &format!("abc{SECOND}")),
            Pipelined("/upload", "abc"),
        ),
        case(
            "a request after a chunked body",
            post(
                "Transfer-Encoding: chunked\r\n",
                &format!("3\r\nabc\r\n0\r\n\r\n{SECOND}"),
            ),
            Pipelined("/upload", "abc"),
        ),
        case(
            "a request after a chunked body with trailer fields",
            post(
                "Transfer-Encoding: chunked\r\n",
                &format!("3\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n{SECOND}"),
            ),
            Pipelined("/upload", "abc"),
        ),
        case(
            "a request after a chunked body with chunk extensions",
            post(
                "Transfer-Encoding: chunked\r\n",
                &format!("3;name=value\r\nabc\r\n0;last\r\n\r\n{SECOND}"),
            ),
            Pipelined("/upload", "abc"),
        ),
        case(
            "a request after a chunked body whose data looks like a chunk end",
            post(
                "Transfer-Encoding: chunked\r\n",
                &format!("7\r\n0\r\n\r\nab\r\n0\r\n\r\n{SECOND}"),
            ),
            Pipelined("/upload", "0\r\n\r\nab"),
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

/// How a table reaches the gateway.
#[derive(Clone, Copy)]
enum Over {
    Tcp,
    /// TLS, ALPN `http/1.1`.
    Tls,
}

/// A gateway in front of two recording upstreams: the passthrough's
/// (`pass`) and the embed apps' (`app`).
struct Setup {
    gw: Gateway,
    /// The CA the gateway's certificate is signed by, when it serves TLS.
    tls: Option<TestTls>,
    pass: Log,
    app: Log,
    /// Served for as long as the gateway.
    _upstreams: [Upstream; 2],
}

impl Setup {
    async fn start(over: Over) -> Setup {
        let (pass, pass_log) = recording_upstream().await;
        let (app, app_log) = recording_upstream().await;
        let dir = new_dir();
        let mut opts = EmbedOpts::new(&app.url(), &app.url());
        opts.extra = passthrough(&pass.url());
        let tls = match over {
            Over::Tcp => None,
            Over::Tls => {
                opts.extra.push_str(&tls_section());
                Some(TestTls::generate(dir.path()))
            }
        };
        Setup {
            gw: Gateway::start(dir, &opts.config()).await,
            tls,
            pass: pass_log,
            app: app_log,
            _upstreams: [pass, app],
        }
    }

    fn dial(&self) -> Dial<'_> {
        self.tls.as_ref().map_or(Dial::Tcp, Dial::Tls)
    }

    /// The upstreams' request counts so far.
    fn counts(&self) -> (usize, usize) {
        (self.pass.lock().unwrap().len(), self.app.lock().unwrap().len())
    }

    /// What reached the upstreams since `counts` said `before`.
    fn since(&self, before: (usize, usize)) -> (Vec<Received>, Vec<Received>) {
        (
            self.pass.lock().unwrap()[before.0..].to_vec(),
            self.app.lock().unwrap()[before.1..].to_vec(),
        )
    }

    /// The gateway is fine: a normal request on a new connection gets 200,
    /// and the passthrough upstream gets that request alone.
    async fn serves_normally(&self) -> Result<(), String> {
        let before = self.counts();
        let r = get_path(self.dial(), self.gw.public_addr, "/normal").await;
        if r != Some(200) {
            return Err(format!("a normal request after it got {r:?}"));
        }
        let normal: Vec<String> = self.since(before).0.iter().map(|r| r.target.clone()).collect();
        if normal != ["/normal"] {
            return Err(format!("after it, the upstream got {normal:?} for one normal request"));
        }
        Ok(())
    }
}

/// Runs `cases` one connection each; returns what went wrong, case by case.
async fn run(setup: &Setup, cases: Vec<Case>) -> Vec<String> {
    let mut failures = Vec::new();
    for case in cases {
        if let Err(why) = run_one(setup, &case).await {
            failures.push(format!("{}: {why}", case.name));
        }
    }
    failures
}

async fn run_one(setup: &Setup, case: &Case) -> Result<(), String> {
    let before = setup.counts();
    let mut c = RawConn::dial(setup.dial(), setup.gw.public_addr).await;
    // The gateway may answer and close before all of it is written.
    let _ = c.send(&case.bytes).await;
    let answer = c.read_response(false).await;
    let status = answer.as_ref().map(|r| r.status).ok();
    // What reached the upstreams, once the gateway has answered.
    let (new_pass, new_app) = setup.since(before);
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
        Want::Pipelined(target, body) => {
            if status != Some(200) {
                return Err(format!("want 200, got {answer:?}"));
            }
            let second = c.read_response(false).await;
            if second.as_ref().map(|r| r.status).ok() != Some(200) {
                return Err(format!("want 200 for the second request, got {second:?}"));
            }
            let (new_pass, _) = setup.since(before);
            match new_pass.as_slice() {
                [one, two]
                    if one.target == target
                        && one.body.as_deref() == Ok(body.as_bytes())
                        && two.target == "/second"
                        && two.body.as_deref() == Ok(&b""[..]) => {}
                other => {
                    return Err(format!(
                        "want {target:?} with {body:?} then /second, upstream got {other:?}"
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
            tokio::time::sleep(Duration::from_millis(300)).await;
            if let Some(whole) = setup.since(before).0.iter().find(|r| r.body.is_ok()) {
                return Err(format!("the upstream took a body as complete: {whole:?}"));
            }
        }
    }
    setup.serves_normally().await
}

async fn get_path(dial: Dial<'_>, addr: SocketAddr, path: &str) -> Option<u16> {
    let mut c = RawConn::dial(dial, addr).await;
    c.send(&get(path, "")).await.ok()?;
    c.read_response(false).await.ok().map(|r| r.status)
}

/// Runs `cases` against a fresh gateway; fails with every case that failed.
async fn run_table(over: Over, cases: Vec<Case>) {
    let setup = Setup::start(over).await;
    let count = cases.len();
    let failures = run(&setup, cases).await;
    assert_all_passed(count, &failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_ambiguous_heads_are_refused_and_nothing_is_smuggled() {
    run_table(Over::Tcp, head_cases()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_ambiguous_heads_are_refused_and_nothing_is_smuggled_over_tls() {
    run_table(Over::Tls, head_cases()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_targets_are_checked_before_routing() {
    run_table(Over::Tcp, path_cases()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_targets_are_checked_before_routing_over_tls() {
    run_table(Over::Tls, path_cases()).await;
}

/// What a TLS-only case does on its connection, and so what it must get.
enum TlsMove {
    /// These bytes before any handshake: the connection ends without an
    /// HTTP success.
    Plaintext(Vec<u8>),
    /// A handshake offering only these protocols by ALPN, none of them
    /// the gateway's: a `no_application_protocol` alert (RFC 7301 §3.2).
    ForeignAlpn(&'static [&'static [u8]]),
    /// A handshake offering these protocols by ALPN, then these bytes of
    /// another protocol: the connection ends without an HTTP success.
    OtherProtocol(&'static [&'static [u8]], Vec<u8>),
    /// Half a ClientHello, then the connection closed.
    HalfHello,
    /// A whole ClientHello, then closed on the gateway's first flight.
    HelloThenClose,
}

/// The h2 preface and a GET on stream 1, as a client with prior knowledge
/// would send them.
fn h2_get() -> Vec<u8> {
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(SETTINGS, 0, 0, &[]));
    bytes.extend(frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &block(&get_fields(b"/x", &[])),
    ));
    bytes
}

/// How long a refused connection may take to end: half the default head
/// timeout (10 s), which would end even a silent one.
const ENDS_WITHIN: Duration = Duration::from_secs(5);

async fn run_tls_move(setup: &Setup, tls: &TestTls, case: &TlsMove) -> Result<(), String> {
    let addr = setup.gw.public_addr;
    match case {
        TlsMove::Plaintext(bytes) => {
            let mut c = RawConn::connect(addr).await;
            let _ = c.send(bytes).await;
            ends_without_success(c.wait_closed(ENDS_WITHIN).await)
        }
        TlsMove::OtherProtocol(alpn, bytes) => {
            let (stream, _) = tls.connect(addr, alpn).await;
            let mut c = RawConn::new(stream);
            let _ = c.send(bytes).await;
            ends_without_success(c.wait_closed(ENDS_WITHIN).await)
        }
        TlsMove::ForeignAlpn(alpn) => {
            let alert = rustls::Error::AlertReceived(rustls::AlertDescription::NoApplicationProtocol);
            match tls.try_connect(addr, alpn).await {
                Ok(stream) => Err(format!(
                    "the handshake succeeded, ALPN {:?}",
                    stream.get_ref().1.alpn_protocol()
                )),
                Err(e) if e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) == Some(&alert) => Ok(()),
                Err(e) => Err(format!("want the alert {alert:?}, the handshake failed with {e:?}")),
            }
        }
        TlsMove::HalfHello => {
            let hello = tls.client_hello(&[b"http/1.1"]);
            let mut c = RawConn::connect(addr).await;
            c.send(&hello[..hello.len() / 2]).await.map_err(|e| e.to_string())
        }
        TlsMove::HelloThenClose => {
            let mut c = RawConn::connect(addr).await;
            c.send(&tls.client_hello(&[b"http/1.1"]))
                .await
                .map_err(|e| e.to_string())?;
            // The gateway's first flight (a handshake record, 0x16) has
            // begun; the connection closes on drop.
            let mut first = [0u8; 1];
            match tokio::time::timeout(T, c.stream.read(&mut first)).await {
                Ok(Ok(1)) if first[0] == 0x16 => Ok(()),
                other => Err(format!("want the gateway's ServerHello, got {other:?} {first:?}")),
            }
        }
    }
}

/// `Ok` when a connection, as [`RawConn::wait_closed`] saw it, ended, and
/// any HTTP answer on it was an error.
fn ends_without_success((got, end, _): (Vec<u8>, Ending, Duration)) -> Result<(), String> {
    let text = String::from_utf8_lossy(&got);
    if got.starts_with(b"HTTP/") {
        let status = text.split(' ').nth(1).and_then(|s| s.parse::<u16>().ok());
        if status.is_none_or(|s| s < 400) {
            return Err(format!("answered {text:?}"));
        }
    }
    if end == Ending::StillOpen {
        return Err(format!(
            "still open after {ENDS_WITHIN:?}, the gateway having sent {text:?}"
        ));
    }
    Ok(())
}

/// Runs the TLS-only `cases` against a fresh TLS gateway: each must get
/// what its move says, reach no upstream, and leave the gateway serving a
/// normal request over TLS.
async fn run_tls_table(cases: Vec<(&str, TlsMove)>) {
    let setup = Setup::start(Over::Tls).await;
    let tls = setup.tls.as_ref().expect("a TLS gateway");
    let count = cases.len();
    let mut failures = Vec::new();
    for (name, case) in cases {
        let before = setup.counts();
        let outcome = match run_tls_move(&setup, tls, &case).await {
            Ok(()) => match setup.since(before) {
                (pass, app) if pass.is_empty() && app.is_empty() => setup.serves_normally().await,
                reached => Err(format!("the upstreams got {reached:?}")),
            },
            failed => failed,
        };
        if let Err(why) = outcome {
            failures.push(format!("{name}: {why}"));
        }
    }
    assert_all_passed(count, &failures);
}

/// What only TLS can get wrong: bytes that are not TLS on the TLS port,
/// ALPN offering nothing the gateway speaks, HTTP/2 where ALPN did not
/// choose it (RFC 9113 §3.3: h2 over TLS only by ALPN), and handshakes
/// left unfinished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_not_the_negotiated_protocol_is_refused_over_tls() {
    use TlsMove::*;
    run_tls_table(vec![
        ("plain HTTP/1.1 to the TLS port", Plaintext(get("/x", ""))),
        ("h2 with prior knowledge to the TLS port", Plaintext(h2_get())),
        ("ALPN offering only spdy/3", ForeignAlpn(&[b"spdy/3"])),
        (
            "ALPN offering only http/1.0 and h2c",
            ForeignAlpn(&[b"http/1.0", b"h2c"]),
        ),
        (
            "the h2 preface on an http/1.1 connection",
            OtherProtocol(&[b"http/1.1"], h2_get()),
        ),
        ("the h2 preface without ALPN", OtherProtocol(&[], h2_get())),
        ("half a ClientHello, then a close", HalfHello),
        ("a ClientHello, then a close", HelloThenClose),
    ])
    .await;
}

/// On a connection that chose h2 by ALPN, anything but the preface is a
/// connection error (RFC 9113 §3.4). Served as HTTP/1.1 instead, a request
/// would also miss the HTTP/1.1 driver's guards (its response stall check).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_on_a_connection_that_negotiated_h2_is_refused() {
    run_tls_table(vec![(
        "HTTP/1.1 on an h2 connection",
        TlsMove::OtherProtocol(&[b"h2"], get("/x", "")),
    )])
    .await;
}
