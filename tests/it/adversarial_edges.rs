//! Attacks at the edges of what the gateway forwards, each pinned from the
//! outside against the real binary, over HTTP/1.1, h2c (HTTP/2 with prior
//! knowledge on the plain port) and HTTP/2 over TLS wherever the attack
//! can be made in that protocol, with real upstreams where the issue is
//! how a real app reads what it gets:
//!
//! 1. identity spoofed through underscores (`X_Embed_User`), which a WSGI
//!    app (Python's `wsgiref`) folds into the gateway's own `X-Embed-User`;
//!    any other name with `_` dropped unless `underscores_in_headers`;
//! 2. framing allowed through a comma-joined CSP (`default-src 'self',
//!    frame-ancestors *`): one `frame-ancestors` policy, the app's, in a
//!    field of its own; and Chromium refusing such a frame;
//! 3. a `101` without the WebSocket handshake is no tunnel (502, and what
//!    the client sends next never reaches that upstream raw); `Upgrade: h2c`
//!    and others go up as plain requests; real WebSockets still tunnel over
//!    HTTP/1.1 and HTTP/2 (RFC 8441);
//! 4. base-path escapes on apps with their own host and on prefix apps
//!    (`/..\admin`, `/..;/admin`, overlong UTF-8 dots, …), with a Node app
//!    whose WHATWG URL parser would resolve them: 400, nothing forwarded;
//! 5. HTTP/2 clients that never open their window, and HTTP/1.1 clients that
//!    stop reading: bounded upstream connections, closed after
//!    `send_timeout_seconds`;
//! 6. two session cookies: a valid one beside garbage works, two valid ones
//!    are ambiguous (401, audited); a non-ASCII cookie beside it passes;
//! 7. upstream `Set-Cookie`s that would impersonate the session cookie, and
//!    `Domain=` on apps with their own host;
//! 8. `Connection:` naming a header the gateway sets;
//! 9. error answers of an app's tree carry its framing policy;
//! 10. a live PAT on any path but the exchange is never forwarded, checked
//!     or spent;
//! 11. the bad-PAT limiter counts IPv6 clients by /64.
//!
//! Python, Node and Chromium may be missing on a developer's machine: the
//! tests that need them print why and pass, unless `EMBEDGATE_CI_STRICT`
//! is set, where that is a failure.

use crate::common::devtools;
use crate::common::script_apps;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper::{Method, Request};
use hyper_util::rt::{TokioExecutor, TokioIo};
use script_apps::ScriptApp;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An app at the root of its own host ([`SHOP_HOST`]).
const APP_SHOP: &str = "5e0b0000-0000-4000-8000-0000000000c3";
const SHOP_HOST: &str = "shop.apps.example";
const SHOP_ANCESTOR: &str = "https://portal.example.com";
const MINT: &str = "/api/ext/users/personal-access-token";

/// An `[[apps]]` table served at the root of `host`, admitting alice and
/// `*@partner.example`.
fn host_app(id: &str, host: &str, upstream: &str, ancestors: &[&str]) -> String {
    format!(
        "[[apps]]\nid = \"{id}\"\nupstream = \"{upstream}\"\n\
         allow_users = [\"alice@example.com\", \"*@partner.example\"]\nallow_groups = []\n\
         frame_ancestors = {}\npublic_url = \"https://{host}\"\n\n",
        toml_list(ancestors)
    )
}

/// An `[[apps]]` table under the prefix, admitting every user.
fn prefix_app(id: &str, upstream: &str, ancestors: &[&str]) -> String {
    format!(
        "[[apps]]\nid = \"{id}\"\nupstream = \"{upstream}\"\nallow_users = [\"*\"]\nallow_groups = []\n\
         frame_ancestors = {}\n\n",
        toml_list(ancestors)
    )
}

fn toml_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("\"{i}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

// ---------------------------------------------------------------------------
// Three protocols, two gateways
// ---------------------------------------------------------------------------

/// How a request reaches the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    /// HTTP/1.1 over plain TCP.
    H1,
    /// HTTP/2 with prior knowledge on the plain port.
    H2c,
    /// HTTP/2 over TLS (ALPN `h2`).
    H2,
}

const PROTOS: [Proto; 3] = [Proto::H1, Proto::H2c, Proto::H2];

/// One config, served twice: on plain TCP (HTTP/1.1 and h2c) and on TLS.
struct Pair {
    plain: Gateway,
    tls: Gateway,
    ca: TestTls,
}

impl Pair {
    async fn start(opts: &EmbedOpts) -> Pair {
        let plain = opts.start().await;
        let dir = new_dir();
        let ca = TestTls::generate(dir.path());
        let mut with_tls = opts.clone();
        with_tls.extra = format!("{}\n{}", with_tls.extra, tls_section());
        let tls = Gateway::start(dir, &with_tls.config()).await;
        Pair { plain, tls, ca }
    }

    fn gw(&self, p: Proto) -> &Gateway {
        match p {
            Proto::H2 => &self.tls,
            Proto::H1 | Proto::H2c => &self.plain,
        }
    }

    /// How raw clients dial the gateway `p` speaks to.
    fn dial(&self, p: Proto) -> Dial<'_> {
        match p {
            Proto::H2 => Dial::Tls(&self.ca),
            Proto::H1 | Proto::H2c => Dial::Tcp,
        }
    }

    /// Sends `req` (whose URI is a path) on a new connection over `p`, to
    /// `host` (`Host`, or `:authority`) or else the gateway's own address.
    async fn request(&self, p: Proto, host: Option<&str>, req: Request<Body>) -> Reply {
        let (mut parts, body) = req.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_string(), |pq| pq.as_str().to_string());
        match p {
            Proto::H1 => {
                let addr = self.plain.public_addr;
                let host = host.map_or_else(|| addr.to_string(), str::to_string);
                parts.headers.insert("host", host.parse().unwrap());
                H1::connect(addr).await.request(Request::from_parts(parts, body)).await
            }
            Proto::H2c => {
                let addr = self.plain.public_addr;
                let authority = host.map_or_else(|| addr.to_string(), str::to_string);
                parts.uri = format!("http://{authority}{path}").parse().unwrap();
                let tcp = TcpStream::connect(addr).await.expect("connect");
                H2Over::handshake(tcp)
                    .await
                    .request(Request::from_parts(parts, body))
                    .await
            }
            Proto::H2 => {
                let addr = self.tls.public_addr;
                let authority = host.map_or_else(|| format!("localhost:{}", addr.port()), str::to_string);
                parts.uri = format!("https://{authority}{path}").parse().unwrap();
                let (tls, alpn) = self.ca.connect(addr, &[b"h2"]).await;
                assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
                H2Over::handshake(tls)
                    .await
                    .request(Request::from_parts(parts, body))
                    .await
            }
        }
    }

    /// `GET path` with `headers` (each its own field, repeats kept).
    async fn get(&self, p: Proto, host: Option<&str>, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = Request::get(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.request(p, host, req.body(empty()).unwrap()).await
    }

    async fn mint_pat(&self, p: Proto, email: &str, app: &str) -> String {
        let req = Request::post(MINT)
            .header("authorization", format!("Basic {API_TOKEN}"))
            .header("content-type", "application/json")
            .body(full(json!({"email": email, "appId": app}).to_string()))
            .unwrap();
        let r = self.request(p, None, req).await;
        assert_eq!(r.status, 201, "mint for {email} on {app}: {r:?} {}", r.text());
        r.json()["personalAccessToken"].as_str().unwrap().to_string()
    }

    /// A session of `email` on `app` for the gateway `p` speaks to,
    /// exchanged on `host` (an app's own) or the main host.
    async fn session(&self, p: Proto, email: &str, app: &str, host: Option<&str>) -> String {
        let pat = self.mint_pat(p, email, app).await;
        let r = self
            .get(p, host, &format!("/embed-apps/{app}?personal-access-token={pat}"), &[])
            .await;
        assert_eq!(r.status, 303, "exchange for {email} on {app}: {r:?} {}", r.text());
        set_cookie_value(&r, "embedgate_session").expect("the exchange set no session cookie")
    }
}

/// Where a request goes: app A under the prefix, the shop at the root of
/// its own host, or the passthrough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Prefix,
    Host,
    Passthrough,
}

const ROUTES: [Route; 3] = [Route::Prefix, Route::Host, Route::Passthrough];

impl Route {
    fn host(self) -> Option<&'static str> {
        (self == Route::Host).then_some(SHOP_HOST)
    }

    /// The path that reaches `rest` of this route's upstream.
    fn path(self, rest: &str) -> String {
        match self {
            Route::Prefix => format!("/embed-apps/{APP_A}{rest}"),
            Route::Host | Route::Passthrough => rest.to_string(),
        }
    }

    /// A session of alice for this route (none for the passthrough).
    async fn session(self, pair: &Pair, p: Proto) -> Option<String> {
        match self {
            Route::Prefix => Some(pair.session(p, "alice@example.com", APP_A, None).await),
            Route::Host => Some(pair.session(p, "alice@example.com", APP_SHOP, Some(SHOP_HOST)).await),
            Route::Passthrough => None,
        }
    }
}

/// The HTTP/2 `:status` a response's first header byte names, when it is
/// one of the static table's (RFC 7541 Appendix A).
fn h2_status(first_byte: u8) -> Option<u16> {
    match first_byte {
        0x88 => Some(200),
        0x89 => Some(204),
        0x8a => Some(206),
        0x8b => Some(304),
        0x8c => Some(400),
        0x8d => Some(404),
        0x8e => Some(500),
        _ => None,
    }
}

/// `GET` on one raw HTTP/2 stream with `fields` after the pseudo-headers.
async fn raw_h2_get(pair: &Pair, p: Proto, authority: &str, path: &[u8], fields: &[(&[u8], &[u8])]) -> Outcome {
    let scheme: &[u8] = if p == Proto::H2 { b"https" } else { b"http" };
    let mut all: Vec<(&[u8], &[u8])> = vec![
        (b":method", b"GET"),
        (b":scheme", scheme),
        (b":authority", authority.as_bytes()),
        (b":path", path),
    ];
    all.extend_from_slice(fields);
    let mut raw = Raw::dial(pair.dial(p), pair.gw(p)).await;
    raw.send(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &block(&all)))
        .await;
    raw.outcome(T).await
}

/// A whole HTTP/1.1 exchange over raw TCP.
async fn raw_h1(addr: SocketAddr, request: &[u8]) -> std::io::Result<RawResponse> {
    let mut c = RawConn::connect(addr).await;
    c.send(request).await?;
    c.read_response(false).await
}

/// A `200` whose head carries `lines` (each a whole field line) and whose
/// body is `ok`.
fn ok_with(lines: &[&str]) -> Vec<u8> {
    let mut head = String::from("HTTP/1.1 200 OK\r\n");
    for line in lines {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("Content-Type: text/html\r\nContent-Length: 2\r\n\r\nok");
    head.into_bytes()
}

/// A header's every value, lossily as text (a negative check must see
/// values that are not visible ASCII too).
fn all_values(headers: &hyper::HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

// ---------------------------------------------------------------------------
// 1. Identity spoofed through underscores
// ---------------------------------------------------------------------------

/// What a spoofed header's key in the WSGI environ must hold.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// What it holds when the client sends nothing (the gateway's value,
    /// or absent).
    Baseline,
    /// The request id the client got back.
    RequestId,
    /// The gateway's fresh assertion: there exactly when the baseline has
    /// one, one value, not the client's.
    FreshAssertion,
    /// Exactly this value.
    Exactly(&'static str),
}

struct Spoof {
    name: &'static str,
    fields: Vec<(&'static str, &'static str)>,
    /// The WSGI environ key looked at.
    key: &'static str,
    expect: Expect,
}

fn spoof(name: &'static str, fields: Vec<(&'static str, &'static str)>, key: &'static str, expect: Expect) -> Spoof {
    Spoof {
        name,
        fields,
        key,
        expect,
    }
}

/// Every value below is unique in the suite: finding it anywhere in what
/// the app was told means it got through.
fn colliding_spoofs() -> Vec<Spoof> {
    use Expect::*;
    vec![
        spoof(
            "X_Embed_User",
            vec![("X_Embed_User", "mallory@evil.example")],
            "HTTP_X_EMBED_USER",
            Baseline,
        ),
        spoof(
            "X_Embed_Groups",
            vec![("X_Embed_Groups", "admins-spoofed")],
            "HTTP_X_EMBED_GROUPS",
            Baseline,
        ),
        spoof(
            "X_Embed_Groups twice",
            vec![
                ("X_Embed_Groups", "admins-spoofed-1"),
                ("X_Embed_Groups", "admins-spoofed-2"),
            ],
            "HTTP_X_EMBED_GROUPS",
            Baseline,
        ),
        spoof(
            "X_Embed_Attr_Department",
            vec![("X_Embed_Attr_Department", "Finance-spoofed")],
            "HTTP_X_EMBED_ATTR_DEPARTMENT",
            Baseline,
        ),
        spoof(
            "X_EMBED_ATTR_ROLE",
            vec![("X_EMBED_ATTR_ROLE", "role-spoofed")],
            "HTTP_X_EMBED_ATTR_ROLE",
            Baseline,
        ),
        spoof(
            "x-embed_user",
            vec![("x-embed_user", "mallory-2@evil.example")],
            "HTTP_X_EMBED_USER",
            Baseline,
        ),
        spoof(
            "X-Embed_User",
            vec![("X-Embed_User", "mallory-3@evil.example")],
            "HTTP_X_EMBED_USER",
            Baseline,
        ),
        spoof(
            "x_embed-user",
            vec![("x_embed-user", "mallory-4@evil.example")],
            "HTTP_X_EMBED_USER",
            Baseline,
        ),
        spoof(
            "X_EMBED_USER",
            vec![("X_EMBED_USER", "mallory-5@evil.example")],
            "HTTP_X_EMBED_USER",
            Baseline,
        ),
        spoof(
            "X_Embed_User beside X-Embed-User",
            vec![
                ("X-Embed-User", "mallory-6@evil.example"),
                ("X_Embed_User", "mallory-7@evil.example"),
            ],
            "HTTP_X_EMBED_USER",
            Baseline,
        ),
        spoof(
            "X_Embed_App",
            vec![("X_Embed_App", "app-spoofed")],
            "HTTP_X_EMBED_APP",
            Baseline,
        ),
        spoof(
            "X_Embed_Assertion",
            vec![("X_Embed_Assertion", "eyJhbGciOiJub25lIn0.spoofed.")],
            "HTTP_X_EMBED_ASSERTION",
            FreshAssertion,
        ),
        spoof(
            "X_Embed_Anything",
            vec![("X_Embed_Anything", "anything-spoofed")],
            "HTTP_X_EMBED_ANYTHING",
            Baseline,
        ),
        spoof(
            "X_FORWARDED_FOR",
            vec![("X_FORWARDED_FOR", "10.66.66.1")],
            "HTTP_X_FORWARDED_FOR",
            Baseline,
        ),
        spoof(
            "X-Forwarded_For",
            vec![("X-Forwarded_For", "10.66.66.2")],
            "HTTP_X_FORWARDED_FOR",
            Baseline,
        ),
        spoof(
            "X_Forwarded_Host",
            vec![("X_Forwarded_Host", "host-spoofed.internal")],
            "HTTP_X_FORWARDED_HOST",
            Baseline,
        ),
        spoof(
            "X_Forwarded_Proto",
            vec![("X_Forwarded_Proto", "proto-spoofed")],
            "HTTP_X_FORWARDED_PROTO",
            Baseline,
        ),
        spoof(
            "X_Forwarded_Prefix",
            vec![("X_Forwarded_Prefix", "/prefix-spoofed")],
            "HTTP_X_FORWARDED_PREFIX",
            Baseline,
        ),
        spoof(
            "X_Forwarded_Port",
            vec![("X_Forwarded_Port", "port-spoofed")],
            "HTTP_X_FORWARDED_PORT",
            Baseline,
        ),
        spoof(
            "X_Forwarded_Ssl",
            vec![("X_Forwarded_Ssl", "ssl-spoofed")],
            "HTTP_X_FORWARDED_SSL",
            Baseline,
        ),
        spoof(
            "X_Real_IP",
            vec![("X_Real_IP", "10.66.66.3")],
            "HTTP_X_REAL_IP",
            Baseline,
        ),
        spoof(
            "x-real_ip",
            vec![("x-real_ip", "10.66.66.4")],
            "HTTP_X_REAL_IP",
            Baseline,
        ),
        spoof(
            "X_Request_Id",
            vec![("X_Request_Id", "request-id-spoofed")],
            "HTTP_X_REQUEST_ID",
            RequestId,
        ),
        spoof(
            "X-Request_ID",
            vec![("X-Request_ID", "request-id-spoofed-2")],
            "HTTP_X_REQUEST_ID",
            RequestId,
        ),
    ]
}

/// A GET through `route` over `p` with `fields`; the reply and the WSGI
/// app's JSON.
async fn wsgi_get(
    pair: &Pair,
    p: Proto,
    route: Route,
    session: Option<&str>,
    fields: &[(&str, &str)],
) -> Result<(Reply, Value), String> {
    let cookie = session.map(|s| format!("embedgate_session={s}"));
    let mut all = fields.to_vec();
    if let Some(cookie) = &cookie {
        all.push(("cookie", cookie));
    }
    let r = pair.get(p, route.host(), &route.path("/who?q=1"), &all).await;
    if r.status != 200 {
        return Err(format!("status {} {}", r.status, r.text()));
    }
    let env: Value =
        serde_json::from_slice(&r.body).map_err(|e| format!("not the WSGI app's JSON ({e}): {}", r.text()))?;
    Ok((r, env))
}

fn check_spoof(case: &Spoof, baseline: &Value, reply: &Reply, env: &Value) -> Result<(), String> {
    let got = env["headers"][case.key].as_str();
    let base = baseline["headers"][case.key].as_str();
    let key = case.key;
    let ok = match case.expect {
        Expect::Baseline => got == base,
        Expect::RequestId => got.is_some() && got == reply.header("x-request-id"),
        Expect::FreshAssertion => {
            got.is_some() == base.is_some() && got.is_none_or(|v| !v.contains(',') && !v.contains("spoofed"))
        }
        Expect::Exactly(v) => got == Some(v),
    };
    if !ok {
        return Err(format!("the app got {key} = {got:?} (without the spoof: {base:?})"));
    }
    if !matches!(case.expect, Expect::Exactly(_)) {
        let told = env["headers"].to_string();
        for (_, value) in &case.fields {
            if told.contains(value) {
                return Err(format!("the client's {value:?} reached the app: {told}"));
            }
        }
    }
    Ok(())
}

/// Runs `cases` over every protocol and route; the failures.
async fn run_spoofs(pair: &Pair, cases: &[Spoof]) -> Vec<String> {
    let mut failures = Vec::new();
    for p in PROTOS {
        for route in ROUTES {
            let session = route.session(pair, p).await;
            let (_, baseline) = wsgi_get(pair, p, route, session.as_deref(), &[])
                .await
                .unwrap_or_else(|why| panic!("{route:?} over {p:?} without a spoof: {why}"));
            if route != Route::Passthrough {
                assert_eq!(
                    baseline["headers"]["HTTP_X_EMBED_USER"], "alice@example.com",
                    "{route:?} over {p:?}: {baseline}"
                );
            }
            for case in cases {
                let result = match wsgi_get(pair, p, route, session.as_deref(), &case.fields).await {
                    Ok((reply, env)) => check_spoof(case, &baseline, &reply, &env),
                    Err(why) => Err(why),
                };
                if let Err(why) = result {
                    failures.push(format!("{} over {p:?} on the {route:?} route: {why}", case.name));
                }
            }
        }
    }
    failures
}

/// App A, the shop (on its own host) and the passthrough, all on the WSGI
/// app.
fn wsgi_opts(wsgi: &ScriptApp, server_extra: &str) -> EmbedOpts {
    let mut opts = EmbedOpts::new(&wsgi.url(), &wsgi.url());
    opts.server_extra = server_extra.to_string();
    opts.extra = format!(
        "{}{}",
        host_app(APP_SHOP, SHOP_HOST, &wsgi.url(), &[SHOP_ANCESTOR]),
        passthrough(&wsgi.url())
    );
    opts
}

/// A CGI-style app reads `X_Embed_User` as `X-Embed-User` (both are
/// `HTTP_X_EMBED_USER`): such a name, and any `_` spelling of a
/// forwarding header or the request id, never reaches an upstream, and by
/// default no name with `_` in it does (as nginx does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn underscore_spellings_of_gateway_headers_never_reach_a_wsgi_app() {
    let Some(wsgi) = ScriptApp::wsgi().await else { return };
    let pair = Pair::start(&wsgi_opts(&wsgi, "")).await;
    let mut cases = colliding_spoofs();
    cases.push(spoof(
        "My_Header (any name with _)",
        vec![("My_Header", "my-header-spoofed")],
        "HTTP_MY_HEADER",
        Expect::Baseline,
    ));
    cases.push(spoof(
        "My_Header beside My-Header",
        vec![("My-Header", "kept-dash"), ("My_Header", "my-header-spoofed-2")],
        "HTTP_MY_HEADER",
        Expect::Exactly("kept-dash"),
    ));
    let failures = run_spoofs(&pair, &cases).await;
    assert_all_passed(cases.len() * PROTOS.len() * ROUTES.len(), &failures);
}

/// With `underscores_in_headers = true`, an ordinary name with `_` is kept,
/// and the names that read as the gateway's are still removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn underscores_in_headers_keeps_other_names_but_never_the_gateways() {
    let Some(wsgi) = ScriptApp::wsgi().await else { return };
    let pair = Pair::start(&wsgi_opts(&wsgi, "underscores_in_headers = true")).await;
    let mut cases = colliding_spoofs();
    cases.push(spoof(
        "My_Header",
        vec![("My_Header", "kept-underscore")],
        "HTTP_MY_HEADER",
        Expect::Exactly("kept-underscore"),
    ));
    cases.push(spoof(
        "my_header_2",
        vec![("my_header_2", "kept-underscore-2")],
        "HTTP_MY_HEADER_2",
        Expect::Exactly("kept-underscore-2"),
    ));
    let failures = run_spoofs(&pair, &cases).await;
    assert_all_passed(cases.len() * PROTOS.len() * ROUTES.len(), &failures);
}

// ---------------------------------------------------------------------------
// 2. Framing through a comma-joined CSP
// ---------------------------------------------------------------------------

/// The directives of one CSP policy, each as its whitespace-separated
/// tokens, empty ones left out.
fn policy_directives(policy: &str) -> Vec<Vec<String>> {
    policy
        .split(';')
        .map(|d| d.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter(|d| !d.is_empty())
        .collect()
}

/// Every non-empty policy of one CSP field (policies are comma-separated,
/// CSP3 §2.2.1).
fn field_policies(field: &str) -> Vec<Vec<Vec<String>>> {
    field
        .split(',')
        .map(policy_directives)
        .filter(|p| !p.is_empty())
        .collect()
}

fn is_frame_ancestors(directive: &[String]) -> bool {
    directive[0].eq_ignore_ascii_case("frame-ancestors")
}

/// Whether a response of an app whose `frame_ancestors` list is `own`
/// frames as that list says: no `X-Frame-Options`; of all the policies in
/// all the CSP fields, exactly one has a `frame-ancestors` directive, and it
/// is the app's (`'none'` for an empty list), alone in its policy, in a CSP
/// field of its own; the other policies' directives are `kept` (when given).
fn framing_check(headers: &hyper::HeaderMap, own: &[&str], kept: Option<&[&str]>) -> Result<(), String> {
    let fields = all_values(headers, "content-security-policy");
    let xfo = all_values(headers, "x-frame-options");
    if !xfo.is_empty() {
        return Err(format!("X-Frame-Options {xfo:?} (CSP {fields:?})"));
    }
    let want_sources: BTreeSet<String> = if own.is_empty() {
        ["'none'".to_string()].into()
    } else {
        own.iter().map(|s| s.to_string()).collect()
    };
    let is_own = |policy: &Vec<Vec<String>>| {
        policy.len() == 1
            && is_frame_ancestors(&policy[0])
            && policy[0][1..].iter().cloned().collect::<BTreeSet<_>>() == want_sources
            && policy[0].len() == want_sources.len() + 1
    };
    let policies: Vec<Vec<Vec<String>>> = fields.iter().flat_map(|f| field_policies(f)).collect();
    let framing: Vec<&Vec<Vec<String>>> = policies
        .iter()
        .filter(|p| p.iter().any(|d| is_frame_ancestors(d)))
        .collect();
    if framing.len() != 1 || !is_own(framing[0]) {
        let shown: Vec<String> = framing
            .iter()
            .map(|p| p.iter().map(|d| d.join(" ")).collect::<Vec<_>>().join("; "))
            .collect();
        return Err(format!(
            "the policies naming frame-ancestors are {shown:?}, want only `frame-ancestors {}`: CSP {fields:?}",
            want_sources.iter().cloned().collect::<Vec<_>>().join(" ")
        ));
    }
    if !fields.iter().any(|f| {
        let p = field_policies(f);
        p.len() == 1 && is_own(&p[0])
    }) {
        return Err(format!("the app's policy is not a CSP field of its own: {fields:?}"));
    }
    if let Some(kept) = kept {
        let mut got: Vec<String> = policies
            .iter()
            .filter(|p| !is_own(p))
            .flatten()
            .map(|d| d.join(" "))
            .collect();
        got.sort();
        let mut want: Vec<String> = kept
            .iter()
            .map(|d| d.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        want.sort();
        if got != want {
            return Err(format!(
                "the upstream's other directives are {got:?}, want {want:?}: CSP {fields:?}"
            ));
        }
    }
    Ok(())
}

/// Name, the upstream's CSP field lines, the directives that must survive.
type CspCase = (&'static str, &'static [&'static str], &'static [&'static str]);

const CSP_CASES: &[CspCase] = &[
    (
        "comma-joined",
        &["Content-Security-Policy: default-src 'self', frame-ancestors *"],
        &["default-src 'self'"],
    ),
    (
        "two CSP fields",
        &[
            "Content-Security-Policy: default-src 'self'",
            "Content-Security-Policy: frame-ancestors *",
        ],
        &["default-src 'self'"],
    ),
    (
        "FRAME-ANCESTORS in capitals",
        &["Content-Security-Policy: default-src 'self'; FRAME-ANCESTORS *"],
        &["default-src 'self'"],
    ),
    (
        "Frame-Ancestors in its own field",
        &[
            "Content-Security-Policy: img-src 'self'",
            "Content-Security-Policy: Frame-Ancestors *; script-src 'self'",
        ],
        &["img-src 'self'", "script-src 'self'"],
    ),
    (
        "a policy of frame-ancestors alone",
        &["Content-Security-Policy: frame-ancestors *"],
        &[],
    ),
    (
        "tabs around the directive",
        &["Content-Security-Policy: default-src 'self';\tframe-ancestors\t*"],
        &["default-src 'self'"],
    ),
    (
        "a tab after the comma",
        &["Content-Security-Policy: default-src 'self',\tframe-ancestors *"],
        &["default-src 'self'"],
    ),
    (
        "spaces around the comma",
        &["Content-Security-Policy: default-src 'self' , frame-ancestors *"],
        &["default-src 'self'"],
    ),
    (
        "frame-ancestors twice in a policy",
        &["Content-Security-Policy: frame-ancestors https://evil.example; frame-ancestors *"],
        &[],
    ),
    (
        "frame-ancestors twice, comma-joined",
        &["Content-Security-Policy: frame-ancestors https://evil.example, frame-ancestors *"],
        &[],
    ),
    (
        "three policies",
        &["Content-Security-Policy: script-src 'none', img-src *, frame-ancestors *"],
        &["script-src 'none'", "img-src *"],
    ),
    (
        "empty policies around",
        &["Content-Security-Policy: , default-src 'self',, frame-ancestors *,"],
        &["default-src 'self'"],
    ),
    (
        "trailing semicolons",
        &["Content-Security-Policy: default-src 'self';, frame-ancestors *;"],
        &["default-src 'self'"],
    ),
    (
        "frame-ancestors first, then more",
        &["Content-Security-Policy:   frame-ancestors *  ; default-src 'self', report-uri /csp"],
        &["default-src 'self'", "report-uri /csp"],
    ),
    (
        "the field name in capitals",
        &["CONTENT-SECURITY-POLICY: default-src 'self', frame-ancestors *"],
        &["default-src 'self'"],
    ),
    (
        "comma-joined, no space",
        &["Content-Security-Policy: default-src 'self',frame-ancestors https://evil.example"],
        &["default-src 'self'"],
    ),
];

/// Answers `/csp/<i>` with [`CSP_CASES`]`[i]`'s fields, and an
/// `X-Frame-Options` that allows anyone.
async fn csp_upstream() -> Upstream {
    scripted_upstream(|target, _| {
        let i: usize = target.rsplit('/').next().and_then(|i| i.parse().ok()).unwrap_or(0);
        let (_, lines, _) = CSP_CASES[i.min(CSP_CASES.len() - 1)];
        let mut all = lines.to_vec();
        all.push("X-Frame-Options: ALLOW-FROM https://evil.example");
        ok_with(&all)
    })
    .await
}

/// Whatever the upstream's CSP says, split at `,` and `;`, only the app's
/// own `frame-ancestors` frames it, in a policy of its own; the rest of the
/// upstream's policy stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_csp_never_widens_frame_ancestors() {
    let up = csp_upstream().await;
    let mut opts = EmbedOpts::new(&up.url(), &up.url());
    opts.extra = host_app(APP_SHOP, SHOP_HOST, &up.url(), &[SHOP_ANCESTOR]);
    let pair = Pair::start(&opts).await;
    // App, host, the path under which the upstream is reached, its list.
    let apps: [(&str, Option<&str>, String, &[&str]); 3] = [
        (APP_A, None, format!("/embed-apps/{APP_A}"), &FRAME_ANCESTORS_A),
        (APP_B, None, format!("/embed-apps/{APP_B}"), &[]),
        (APP_SHOP, Some(SHOP_HOST), String::new(), &[SHOP_ANCESTOR]),
    ];
    let mut failures = Vec::new();
    let mut count = 0;
    for p in PROTOS {
        for (app, host, prefix, own) in &apps {
            let session = pair.session(p, "alice@example.com", app, *host).await;
            let cookie = format!("embedgate_session={session}");
            for (i, (name, _, kept)) in CSP_CASES.iter().enumerate() {
                count += 1;
                let r = pair
                    .get(p, *host, &format!("{prefix}/csp/{i}"), &[("cookie", &cookie)])
                    .await;
                let result = if r.status != 200 {
                    Err(format!("status {} {}", r.status, r.text()))
                } else {
                    framing_check(&r.headers, own, Some(kept))
                };
                if let Err(why) = result {
                    failures.push(format!("{name} over {p:?} on app {app}: {why}"));
                }
            }
        }
    }
    assert_all_passed(count, &failures);
}

/// In Chromium: a portal whose origin is not in an app's `frame_ancestors`
/// frames a live session of it whose upstream sends `default-src 'self'
/// 'unsafe-inline', frame-ancestors *`; the browser refuses the frame
/// (a frame-ancestors violation), while beside it an app that lists the
/// portal, on the same upstream, is framed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_refuses_a_frame_the_upstreams_comma_joined_csp_would_allow() {
    let Some(chromium) = devtools::chromium() else { return };
    const REFUSED: &str = "0f0f0000-0000-4000-8000-00000000f001";
    const ALLOWED: &str = "0f0f0000-0000-4000-8000-00000000f002";
    // The app's page tells its parent which app it is (by the upstream's
    // base path), from an inline script its own CSP allows.
    let up = scripted_upstream(|target, _| {
        let which = if target.starts_with("/allowed") {
            "allowed"
        } else {
            "refused"
        };
        let body = format!(
            "<!doctype html><title>{which}</title><p>{which}</p>\
             <script>parent.postMessage({{app: '{which}'}}, '*');</script>"
        );
        format!(
            "HTTP/1.1 200 OK\r\n\
             Content-Security-Policy: default-src 'self' 'unsafe-inline', frame-ancestors *\r\n\
             X-Frame-Options: ALLOWALL\r\n\
             Content-Type: text/html; charset=utf-8\r\nCache-Control: no-store\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    })
    .await;
    let free_port = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let (gw_port, portal_port) = (free_port(), free_port());
    let portal_origin = format!("http://127.0.0.1:{portal_port}");
    let gw_origin = format!("http://localhost:{gw_port}");
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{gw_port}\"\npublic_url = \"{gw_origin}\"\n\n\
         [api]\ntoken_sha256 = [\"{}\"]\n\n\
         [[users]]\nemail = \"demo@example.com\"\ngroups = []\n\n\
         {}{}",
        sha256_hex(API_TOKEN),
        prefix_app(
            REFUSED,
            &format!("{}/refused", up.url()),
            &["https://portal.example.com"]
        ),
        prefix_app(ALLOWED, &format!("{}/allowed", up.url()), &[&portal_origin]),
    );
    let gw = Gateway::start(new_dir(), &config).await;
    let refused_pat = mint_pat(gw.public_addr, "demo@example.com", REFUSED).await;
    let allowed_pat = mint_pat(gw.public_addr, "demo@example.com", ALLOWED).await;
    let page = format!(
        "<!doctype html><title>portal</title>\
         <p id=\"refused\">waiting</p><p id=\"allowed\">waiting</p>\
         <script>addEventListener('message', (e) => {{\
           const el = document.getElementById(e.data && e.data.app);\
           if (el) el.textContent = 'framed';\
         }});</script>\
         <iframe src=\"{gw_origin}/embed-apps/{REFUSED}?personal-access-token={refused_pat}\"></iframe>\
         <iframe src=\"{gw_origin}/embed-apps/{ALLOWED}?personal-access-token={allowed_pat}\"></iframe>"
    );
    let portal = TcpListener::bind(("127.0.0.1", portal_port))
        .await
        .expect("bind the portal");
    let served = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = portal.accept().await else { return };
            let page = page.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while find(&buf, b"\r\n\r\n").is_none() {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{page}",
                    page.len()
                );
                let _ = s.write_all(response.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });

    let browser = devtools::Devtools::launch(&chromium).await;
    let tab = browser.open("about:blank").await;
    for method in ["Audits.enable", "Log.enable"] {
        browser.call(Some(&tab), method, json!({})).await;
    }
    browser
        .call(Some(&tab), "Page.navigate", json!({"url": format!("{portal_origin}/")}))
        .await;
    // Chromium names only the blocked frame's origin (both apps share the
    // gateway's): the console line names the policy obeyed, the refused
    // app's own list, and not the upstream's `*`.
    let refusal = |browser: &devtools::Devtools| {
        let issue = browser
            .events(&tab, "Audits.issueAdded")
            .into_iter()
            .map(|event| event["issue"].clone())
            .find(|issue| {
                let d = &issue["details"]["contentSecurityPolicyIssueDetails"];
                issue["code"] == "ContentSecurityPolicyIssue"
                    && d["violatedDirective"] == "frame-ancestors"
                    && d["isReportOnly"] == false
                    && d["blockedURL"].as_str().is_some_and(|u| u.starts_with(&gw_origin))
            });
        let policy = "Content Security Policy directive: \"frame-ancestors https://portal.example.com\"";
        let logged = browser
            .events(&tab, "Log.entryAdded")
            .iter()
            .any(|event| event["entry"]["text"].as_str().is_some_and(|t| t.contains(policy)));
        issue.filter(|_| logged)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let (issue, refused, allowed) = loop {
        let refused = browser.text_of(&tab, "refused").await;
        let allowed = browser.text_of(&tab, "allowed").await;
        let issue = refusal(&browser);
        let settled = (issue.is_some() || refused == "framed") && allowed == "framed";
        if settled || Instant::now() > deadline {
            break (issue, refused, allowed);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // A moment more, for a frame that would report in after the refusal.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let refused = if refused == "framed" {
        refused
    } else {
        browser.text_of(&tab, "refused").await
    };
    served.abort();
    let log = gw.stderr();
    assert_eq!(
        allowed, "framed",
        "the app that lists the portal was not framed; gateway log:\n{log}"
    );
    // The gateway served the refused app's page (so the browser refused it
    // for its policy, not for a failure); access lines come in batches.
    let page = format!("path=/embed-apps/{REFUSED}/");
    let is_page = |l: &str| {
        let fields: Vec<&str> = l.split_whitespace().collect();
        ["method=GET", page.as_str(), "status=200"]
            .iter()
            .all(|f| fields.contains(f))
    };
    let served = eventually(T, || async { gw.stderr().lines().any(is_page) }).await;
    assert!(served, "the refused app's page was not served:\n{}", gw.stderr());
    assert!(
        issue.is_some() && refused != "framed",
        "Chromium framed an app whose frame_ancestors do not list the portal (its upstream sent \
         `default-src 'self' 'unsafe-inline', frame-ancestors *`): status {refused:?}, issue {issue:?}"
    );
}

/// The framing check itself: it takes the fixed shape (the upstream's
/// policies, then the app's alone in a field) and refuses what the old
/// gateway sent, so that a pass above means the rule holds.
#[test]
fn the_framing_check_tells_a_fixed_csp_from_a_widened_one() {
    let headers = |fields: &[&str], xfo: bool| {
        let mut h = hyper::HeaderMap::new();
        for f in fields {
            h.append("content-security-policy", f.parse().unwrap());
        }
        if xfo {
            h.append("x-frame-options", "DENY".parse().unwrap());
        }
        h
    };
    let own = ["https://a.example", "https://b.example"];
    let kept: &[&str] = &["default-src 'self'"];
    let fixed = headers(
        &[
            "default-src 'self'",
            "frame-ancestors https://b.example  https://a.example",
        ],
        false,
    );
    assert_eq!(framing_check(&fixed, &own, Some(kept)), Ok(()));
    let emptied = headers(
        &[
            "default-src 'self',",
            "frame-ancestors https://a.example https://b.example;",
        ],
        false,
    );
    assert_eq!(framing_check(&emptied, &own, Some(kept)), Ok(()));
    let none = headers(&["frame-ancestors 'none'"], false);
    assert_eq!(framing_check(&none, &[], Some(&[])), Ok(()));
    let wrong: [(&str, hyper::HeaderMap); 7] = [
        (
            "the old comma-joined answer",
            headers(
                &["default-src 'self', frame-ancestors *; frame-ancestors https://a.example https://b.example"],
                false,
            ),
        ),
        (
            "the app's beside another directive",
            headers(
                &["default-src 'self'; frame-ancestors https://a.example https://b.example"],
                false,
            ),
        ),
        (
            "a second frame-ancestors policy",
            headers(
                &[
                    "frame-ancestors *",
                    "frame-ancestors https://a.example https://b.example",
                ],
                false,
            ),
        ),
        (
            "a source missing",
            headers(&["default-src 'self'", "frame-ancestors https://a.example"], false),
        ),
        (
            "a source more",
            headers(
                &[
                    "default-src 'self'",
                    "frame-ancestors https://a.example https://b.example *",
                ],
                false,
            ),
        ),
        (
            "X-Frame-Options kept",
            headers(
                &[
                    "default-src 'self'",
                    "frame-ancestors https://a.example https://b.example",
                ],
                true,
            ),
        ),
        (
            "the upstream's directive dropped",
            headers(&["frame-ancestors https://a.example https://b.example"], false),
        ),
    ];
    for (name, h) in wrong {
        assert!(framing_check(&h, &own, Some(kept)).is_err(), "{name} passed the check");
    }
}

/// The `Set-Cookie` check itself.
#[test]
fn the_set_cookie_check_tells_impersonation_from_ordinary_cookies() {
    for bad in IMPERSONATING {
        // As a client receives it: the field value's leading whitespace is
        // not part of it.
        assert!(impersonates(bad.trim_start()), "{bad:?}");
    }
    for ok in [
        "ordinary=1; Path=/",
        "embedgate_session_x=1",
        "x=embedgate_session",
        "__Host-pref=1; Path=/; Secure",
    ] {
        assert!(!impersonates(ok), "{ok:?}");
    }
}

// ---------------------------------------------------------------------------
// 3. A 101 without a WebSocket handshake is no tunnel
// ---------------------------------------------------------------------------

const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for `key` (RFC 6455 §4.2.2).
fn ws_accept(key: &str) -> String {
    use base64::Engine as _;
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{}{WS_GUID}", key.trim()).as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// An upstream that answers `101` on demand, by the path's last segments:
///
/// - `/ws/right`: a correct WebSocket handshake, then echoes what it reads;
/// - `/ws/no-accept`, `/ws/wrong-accept` (the accept of another key),
///   `/ws/accept-garbage` (the right one with a byte more),
///   `/ws/other-upgrade` (`Upgrade: something-else`, right accept),
///   `/ws/no-upgrade` (no `Upgrade`, right accept);
/// - `/h2c-101`, `/foo-101`: `101` to `h2c`, `foo`;
/// - anything else: `200` with the request's fields as JSON.
///
/// After any `101`, every byte it reads is recorded in `after_101` (by
/// path): what went through a tunnel.
/// What reached a [`Switching`] upstream after each `101`, by path.
type Tunnelled = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

struct Switching {
    up: Upstream,
    after_101: Tunnelled,
    /// Target and fields of every request head.
    heads: Arc<Mutex<Vec<(String, Fields)>>>,
    /// The path of each connection that switched protocols and was then
    /// closed by the gateway, in order.
    closed_after_101: Arc<Mutex<Vec<String>>>,
}

async fn switching_upstream() -> Switching {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sw = Switching {
        up: Upstream {
            addr: listener.local_addr().unwrap(),
            connections: Arc::default(),
            requests: Arc::default(),
            seen: Arc::default(),
        },
        after_101: Arc::default(),
        heads: Arc::default(),
        closed_after_101: Arc::default(),
    };
    let (conns, after, heads) = (sw.up.connections.clone(), sw.after_101.clone(), sw.heads.clone());
    let closed = sw.closed_after_101.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            conns.fetch_add(1, Ordering::SeqCst);
            let (after, heads, closed) = (after.clone(), heads.clone(), closed.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = find(&buf, b"\r\n\r\n") else {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end + 4);
                    let target = head.split_whitespace().nth(1).unwrap_or("").to_string();
                    let fields = parse_fields(&head);
                    heads.lock().unwrap().push((target.clone(), fields.clone()));
                    let key = fields
                        .iter()
                        .find(|(k, _)| k == "sec-websocket-key")
                        .map_or("", |(_, v)| v.as_str());
                    let right = ws_accept(key);
                    let path = target.split('?').next().unwrap_or("");
                    let switch = |lines: &[&str]| {
                        let mut r = String::from("HTTP/1.1 101 Switching Protocols\r\n");
                        for l in lines {
                            r.push_str(l);
                            r.push_str("\r\n");
                        }
                        r.push_str("\r\n");
                        Some(r)
                    };
                    let accept = format!("Sec-WebSocket-Accept: {right}");
                    let upgrade_ws = "Upgrade: websocket";
                    let conn_up = "Connection: Upgrade";
                    let switched = if path.ends_with("/ws/right") {
                        switch(&[upgrade_ws, conn_up, &accept])
                    } else if path.ends_with("/ws/no-accept") {
                        switch(&[upgrade_ws, conn_up])
                    } else if path.ends_with("/ws/wrong-accept") {
                        // The accept of RFC 6455's sample key, not this one.
                        switch(&[
                            upgrade_ws,
                            conn_up,
                            "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
                        ])
                    } else if path.ends_with("/ws/accept-garbage") {
                        switch(&[upgrade_ws, conn_up, &format!("{accept}x")])
                    } else if path.ends_with("/ws/other-upgrade") {
                        switch(&["Upgrade: something-else", conn_up, &accept])
                    } else if path.ends_with("/ws/no-upgrade") {
                        switch(&[conn_up, &accept])
                    } else if path.ends_with("/h2c-101") {
                        switch(&["Upgrade: h2c", conn_up])
                    } else if path.ends_with("/foo-101") {
                        switch(&["Upgrade: foo", conn_up])
                    } else {
                        None
                    };
                    let Some(response) = switched else {
                        let body = json!({"target": target, "fields": fields}).to_string();
                        let r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(r.as_bytes()).await.is_err() {
                            return;
                        }
                        continue;
                    };
                    if s.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                    // A tunnel now, as far as this upstream knows.
                    let echo = path.ends_with("/ws/right");
                    let slot = {
                        let mut after = after.lock().unwrap();
                        after.push((path.to_string(), std::mem::take(&mut buf)));
                        after.len() - 1
                    };
                    if echo {
                        let early = after.lock().unwrap()[slot].1.clone();
                        if !early.is_empty() && s.write_all(&early).await.is_err() {
                            return;
                        }
                    }
                    loop {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => {
                                closed.lock().unwrap().push(path.to_string());
                                return;
                            }
                            Ok(n) => {
                                after.lock().unwrap()[slot].1.extend_from_slice(&chunk[..n]);
                                if echo && s.write_all(&chunk[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                }
            });
        }
    });
    sw
}

impl Switching {
    fn url(&self) -> String {
        self.up.url()
    }

    /// How many requests for `path` (a case's, the prefix left out) this
    /// upstream has read.
    fn asked(&self, path: &str) -> usize {
        self.heads
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| t.split('?').next().unwrap_or("").ends_with(path))
            .count()
    }

    /// How many connections that switched protocols for `path` (a case's,
    /// the prefix left out) were closed so far.
    fn closed(&self, path: &str) -> usize {
        self.closed_after_101
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.ends_with(path))
            .count()
    }

    /// What reached this upstream through a tunnel since the last call, by
    /// path (connections whose tunnel carried nothing left out).
    fn take_tunnelled(&self) -> Vec<(String, String)> {
        std::mem::take(&mut *self.after_101.lock().unwrap())
            .into_iter()
            .filter(|(_, bytes)| !bytes.is_empty())
            .map(|(path, bytes)| (path, String::from_utf8_lossy(&bytes).into_owned()))
            .collect()
    }
}

/// What an HTTP/1.1 upgrade case must get.
#[derive(Debug, Clone, Copy)]
enum UpWant {
    /// 502 with the JSON error body, and nothing the client sends after it
    /// reaches the upstream through a tunnel.
    BadGateway,
    /// The upstream's own 200, to a request that carried no `Upgrade` or
    /// `HTTP2-Settings`.
    Plain,
    /// 101, then bytes flow both ways (the upstream echoes them).
    Tunnel,
}

/// The fields of a WebSocket opening handshake (RFC 6455 §4.1).
const WS_FIELDS: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\n\
                         Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\nSec-WebSocket-Version: 13\r\n";

/// Name, the upstream's path, the upgrade fields, what the client gets.
type UpgradeCase = (&'static str, &'static str, &'static str, UpWant);

const UPGRADE_CASES: &[UpgradeCase] = &[
    (
        "101 without Sec-WebSocket-Accept",
        "/ws/no-accept",
        WS_FIELDS,
        UpWant::BadGateway,
    ),
    (
        "101 with a wrong Sec-WebSocket-Accept",
        "/ws/wrong-accept",
        WS_FIELDS,
        UpWant::BadGateway,
    ),
    (
        "101 with the accept and a byte more",
        "/ws/accept-garbage",
        WS_FIELDS,
        UpWant::BadGateway,
    ),
    (
        "101 to Upgrade: something-else",
        "/ws/other-upgrade",
        WS_FIELDS,
        UpWant::BadGateway,
    ),
    ("101 without Upgrade", "/ws/no-upgrade", WS_FIELDS, UpWant::BadGateway),
    (
        "Upgrade: h2c, answered normally",
        "/plain",
        "Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n",
        UpWant::Plain,
    ),
    (
        "Upgrade: h2c, answered 101 anyway",
        "/h2c-101",
        "Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n",
        UpWant::BadGateway,
    ),
    (
        "Upgrade: foo, answered normally",
        "/plain",
        "Upgrade: foo\r\nConnection: Upgrade\r\n",
        UpWant::Plain,
    ),
    (
        "Upgrade: foo, answered 101 anyway",
        "/foo-101",
        "Upgrade: foo\r\nConnection: Upgrade\r\n",
        UpWant::BadGateway,
    ),
    (
        "Upgrade: websocket, foo to a 101 of foo",
        "/foo-101",
        "Upgrade: websocket, foo\r\nConnection: Upgrade\r\nSec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n\
         Sec-WebSocket-Version: 13\r\n",
        UpWant::BadGateway,
    ),
    (
        "Upgrade: websocket not named by Connection",
        "/plain",
        "Upgrade: websocket\r\nSec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\nSec-WebSocket-Version: 13\r\n",
        UpWant::Plain,
    ),
    ("a right handshake (control)", "/ws/right", WS_FIELDS, UpWant::Tunnel),
    (
        "Upgrade: WebSocket in capitals, a right handshake (control)",
        "/ws/right",
        "Upgrade: WebSocket\r\nConnection: upgrade\r\nSec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n\
         Sec-WebSocket-Version: 13\r\n",
        UpWant::Tunnel,
    ),
];

/// One HTTP/1.1 upgrade case on `prefix` (with `cookie`); `Err` says what
/// went wrong.
async fn upgrade_case(
    addr: SocketAddr,
    sw: &Switching,
    prefix: &str,
    cookie: &str,
    (_, path, fields, want): &UpgradeCase,
) -> Result<(), String> {
    sw.take_tunnelled();
    let (asked_before, closed_before) = (sw.asked(path), sw.closed(path));
    let mut c = RawConn::connect(addr).await;
    let request = format!("GET {prefix}{path} HTTP/1.1\r\nHost: gw\r\n{cookie}{fields}\r\n");
    c.send(request.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
    let r = c.read_response(false).await.map_err(|e| format!("no answer: {e}"))?;
    match want {
        UpWant::BadGateway => {
            // What a client (or an attacker) sends next on its connection.
            let next = format!(
                "GET {prefix}/after-101 HTTP/1.1\r\nHost: gw\r\nX-Embed-User: mallory@evil.example\r\n{cookie}\r\n"
            );
            let _ = c.send(next.as_bytes()).await;
            let _ = c.wait_closed(Duration::from_millis(400)).await;
            let tunnelled = sw.take_tunnelled();
            let mut problems = Vec::new();
            if r.status != 502 {
                problems.push(format!("status {} ({})", r.status, r.head.replace("\r\n", " | ")));
            } else {
                let json: Option<Value> = serde_json::from_slice(&r.body).ok();
                let ct = r.header("content-type").unwrap_or("");
                if !ct.starts_with("application/json")
                    || json.as_ref().map(|j| j["statusCode"].clone()) != Some(json!(502))
                {
                    problems.push(format!(
                        "a 502 without the JSON error body: {ct:?} {:?}",
                        String::from_utf8_lossy(&r.body)
                    ));
                }
            }
            if !tunnelled.is_empty() {
                problems.push(format!("bytes reached the upstream through a tunnel: {tunnelled:?}"));
            }
            // The connection that switched protocols is not kept (nor
            // pooled): the gateway closes it.
            let switched = sw.asked(path) > asked_before;
            if switched && !eventually(Duration::from_secs(3), || async { sw.closed(path) > closed_before }).await {
                problems.push("the upstream connection that answered 101 was not closed".to_string());
            }
            let spoofed: Vec<Fields> = sw
                .heads
                .lock()
                .unwrap()
                .iter()
                .filter(|(t, f)| t.contains("after-101") && f.iter().any(|(_, v)| v.contains("mallory")))
                .map(|(_, f)| f.clone())
                .collect();
            if !spoofed.is_empty() {
                problems.push(format!(
                    "the next request went up with the client's X-Embed-User: {spoofed:?}"
                ));
            }
            if problems.is_empty() {
                Ok(())
            } else {
                Err(problems.join("; "))
            }
        }
        UpWant::Plain => {
            if r.status != 200 {
                return Err(format!("status {} {:?}", r.status, String::from_utf8_lossy(&r.body)));
            }
            let j: Value = serde_json::from_slice(&r.body).map_err(|e| format!("not the upstream's JSON: {e}"))?;
            let names: Vec<String> = j["fields"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|kv| kv[0].as_str().unwrap_or("").to_string())
                .collect();
            if names.iter().any(|n| n == "upgrade" || n == "http2-settings") {
                return Err(format!("the upstream got {names:?}"));
            }
            Ok(())
        }
        UpWant::Tunnel => {
            if r.status != 101 {
                return Err(format!("status {} ({})", r.status, r.head.replace("\r\n", " | ")));
            }
            c.send(b"through-the-tunnel").await.map_err(|e| format!("send: {e}"))?;
            let mut back = vec![0u8; 18];
            tokio::time::timeout(T, c.stream.read_exact(&mut back))
                .await
                .map_err(|_| "no echo through the tunnel".to_string())?
                .map_err(|e| format!("echo: {e}"))?;
            if back != b"through-the-tunnel" {
                return Err(format!("echoed {:?}", String::from_utf8_lossy(&back)));
            }
            Ok(())
        }
    }
}

/// Over HTTP/1.1, a `101` is a tunnel only when it completes the client's
/// WebSocket handshake; otherwise 502, and whatever the client sends next
/// on that connection never reaches the upstream raw. Other `Upgrade`s go
/// up as plain requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_101_without_the_websocket_handshake_is_no_tunnel_over_http1() {
    let sw = switching_upstream().await;
    let mut opts = EmbedOpts::new(&sw.url(), &sw.url());
    opts.extra = passthrough(&sw.url());
    let gw = opts.start().await;
    let session = open_session(gw.public_addr, "alice@example.com", APP_A).await;
    let embed_cookie = format!("Cookie: embedgate_session={session}\r\n");
    let routes = [
        ("prefix app", format!("/embed-apps/{APP_A}"), embed_cookie.as_str()),
        ("passthrough", String::new(), ""),
    ];
    let mut failures = Vec::new();
    for (route, prefix, cookie) in &routes {
        for case in UPGRADE_CASES {
            if let Err(why) = upgrade_case(gw.public_addr, &sw, prefix, cookie, case).await {
                failures.push(format!("{} on the {route}: {why}", case.0));
            }
        }
    }
    assert_all_passed(routes.len() * UPGRADE_CASES.len(), &failures);
}

/// An extended CONNECT (RFC 8441) on a connection over `io`, to `uri`;
/// the status, and the stream when it opened.
async fn extended_connect<I>(io: I, uri: &str, cookie: Option<&str>) -> (u16, Option<TokioIo<hyper::upgrade::Upgraded>>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
        .await
        .expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = Request::builder()
        .method(Method::CONNECT)
        .version(hyper::Version::HTTP_2)
        .uri(uri)
        .header("sec-websocket-version", "13");
    if let Some(cookie) = cookie {
        req = req.header("cookie", cookie);
    }
    let mut req = req.body(empty()).unwrap();
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let resp = tokio::time::timeout(T, async {
        sender.ready().await?;
        sender.send_request(req).await
    })
    .await
    .expect("CONNECT timed out")
    .expect("CONNECT failed");
    let status = resp.status().as_u16();
    if status != 200 {
        return (status, None);
    }
    let upgraded = tokio::time::timeout(T, hyper::upgrade::on(resp))
        .await
        .expect("upgrade timed out")
        .expect("upgrade");
    (status, Some(TokioIo::new(upgraded)))
}

/// An extended CONNECT over `p` to `path` of `pair`'s gateway.
async fn connect_over(
    pair: &Pair,
    p: Proto,
    path: &str,
    cookie: Option<&str>,
) -> (u16, Option<TokioIo<hyper::upgrade::Upgraded>>) {
    match p {
        Proto::H2 => {
            let addr = pair.tls.public_addr;
            let (tls, _) = pair.ca.connect(addr, &[b"h2"]).await;
            extended_connect(tls, &format!("https://localhost:{}{path}", addr.port()), cookie).await
        }
        Proto::H2c | Proto::H1 => {
            let addr = pair.plain.public_addr;
            let tcp = TcpStream::connect(addr).await.expect("connect");
            extended_connect(tcp, &format!("http://{addr}{path}"), cookie).await
        }
    }
}

/// Over HTTP/2, an extended CONNECT opens its stream only when the
/// upstream completed the gateway's WebSocket handshake; else 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_101_without_the_websocket_handshake_is_no_tunnel_over_http2() {
    let sw = switching_upstream().await;
    let mut opts = EmbedOpts::new(&sw.url(), &sw.url());
    opts.extra = passthrough(&sw.url());
    let pair = Pair::start(&opts).await;
    let cases: [(&str, &str, u16); 6] = [
        ("101 without Sec-WebSocket-Accept", "/ws/no-accept", 502),
        ("101 with a wrong Sec-WebSocket-Accept", "/ws/wrong-accept", 502),
        ("101 with the accept and a byte more", "/ws/accept-garbage", 502),
        ("101 to Upgrade: something-else", "/ws/other-upgrade", 502),
        ("101 without Upgrade", "/ws/no-upgrade", 502),
        ("a right handshake (control)", "/ws/right", 200),
    ];
    let mut failures = Vec::new();
    let mut count = 0;
    for p in [Proto::H2c, Proto::H2] {
        let session = pair.session(p, "alice@example.com", APP_A, None).await;
        let cookie = format!("embedgate_session={session}");
        let routes = [
            ("prefix app", format!("/embed-apps/{APP_A}"), Some(cookie.as_str())),
            ("passthrough", String::new(), None),
        ];
        for (route, prefix, cookie) in &routes {
            for (name, path, want) in cases {
                count += 1;
                sw.take_tunnelled();
                let (status, stream) = connect_over(&pair, p, &format!("{prefix}{path}"), *cookie).await;
                let mut problems = Vec::new();
                if status != want {
                    problems.push(format!("status {status}, want {want}"));
                }
                if let Some(mut stream) = stream {
                    // A WebSocket frame's worth of bytes, as a client would.
                    let sent = stream.write_all(b"\x81\x05hello").await.is_ok();
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    let tunnelled = sw.take_tunnelled();
                    if want == 200 && (!sent || tunnelled.is_empty()) {
                        problems.push("nothing went through the tunnel".to_string());
                    }
                    if want != 200 && !tunnelled.is_empty() {
                        problems.push(format!("bytes reached the upstream through a tunnel: {tunnelled:?}"));
                    }
                }
                if !problems.is_empty() {
                    failures.push(format!("{name} over {p:?} on the {route}: {}", problems.join("; ")));
                }
            }
        }
    }
    assert_all_passed(count, &failures);
}

/// So that the rule cannot be met by refusing every upgrade: a real
/// WebSocket tunnels over HTTP/1.1 and over HTTP/2 (RFC 8441), with and
/// without TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_websockets_still_tunnel_over_http1_and_http2() {
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_tungstenite::tungstenite::Message;
    let ws_up = websocket_upstream().await;
    let pair = Pair::start(&EmbedOpts::new(&ws_up.url(), &ws_up.url())).await;
    let addr = pair.plain.public_addr;
    let session = open_session(addr, "alice@example.com", APP_B).await;
    let mut ws = embed_websocket(addr, APP_B, "/ws", &session).await;
    ws.send(Message::text("over http/1.1")).await.expect("send");
    let back = tokio::time::timeout(T, ws.next()).await.expect("echo timed out");
    assert_eq!(back.and_then(Result::ok), Some(Message::text("over http/1.1")));

    for p in [Proto::H2c, Proto::H2] {
        let session = pair.session(p, "alice@example.com", APP_B, None).await;
        let cookie = format!("embedgate_session={session}");
        let (status, stream) = connect_over(&pair, p, &format!("/embed-apps/{APP_B}/ws"), Some(&cookie)).await;
        assert_eq!(status, 200, "extended CONNECT over {p:?}");
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(stream.unwrap(), Role::Client, None).await;
        let text = format!("over {p:?}");
        ws.send(Message::text(text.clone())).await.expect("send");
        let back = tokio::time::timeout(T, ws.next()).await.expect("echo timed out");
        assert_eq!(back.and_then(Result::ok), Some(Message::text(text)), "over {p:?}");
    }
}

// ---------------------------------------------------------------------------
// 4. Base-path escapes
// ---------------------------------------------------------------------------

/// Paths a server, a framework or a URL parser could read as leaving the
/// app's base path (or as a slash, a backslash or a NUL): refused before
/// routing.
const ESCAPES: &[&str] = &[
    "/..\\admin",
    "/..;/admin",
    "/.;/admin",
    "/%c0%ae%c0%ae/admin",
    "/%e0%80%ae%e0%80%ae/admin",
    "/%2e%2e%5cadmin",
    "/..%5cadmin",
    "/a%2fb",
    "/a%252fb",
    "/%00",
    "/%2500",
    "/.%2e/admin",
    "/%252e%252e/admin",
    "/x//y",
    "/%ef%bc%8e%ef%bc%8e/admin",
    "/%u002e%u002e/admin",
    // Beyond the issue's list.
    "/%2E%2E/admin",
    "/..%2fadmin",
    "/..%2Fadmin",
    "/%2e%2e%2fadmin",
    "/..%255cadmin",
    "/a%5cb",
    "/a\\b",
    "/.\\admin",
    "/..;jsessionid=x/admin",
    "/%2e%2e;/admin",
    "/..%c0%afadmin",
    "/%c0%ae%c0%ae%c0%afadmin",
    "/%uff0e%uff0e/admin",
    "/%U002E%U002E/admin",
    "/%25%32%65%25%32%65/admin",
    "/a/..%00/admin",
    "/%2e%00/admin",
    "//admin",
];

/// Ordinary paths that look a little like the above: still forwarded.
const ORDINARY: &[&str] = &["/a/b.c", "/...", "/a..b", "/.hidden", "/a/b..", "/a%20b"];

/// On an app with its own host (base path `/base`, a Node upstream that
/// resolves `..\`, `%2e%2e` and fullwidth dots as a browser would) and on a
/// prefix app, path spellings that leave the base path are 400 over every
/// protocol, and the upstream sees nothing of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_path_escapes_are_refused_before_a_node_upstream() {
    let Some(node) = ScriptApp::node().await else { return };
    let mut opts = EmbedOpts::new(&node.url(), &node.url());
    opts.extra = host_app(APP_SHOP, SHOP_HOST, &format!("{}/base", node.url()), &[SHOP_ANCESTOR]);
    let pair = Pair::start(&opts).await;
    let mut failures = Vec::new();
    let mut count = 0;
    for p in PROTOS {
        let shop = pair.session(p, "alice@example.com", APP_SHOP, Some(SHOP_HOST)).await;
        let a = pair.session(p, "alice@example.com", APP_A, None).await;
        let routes = [
            ("the shop's host", SHOP_HOST, String::new(), "/base", shop),
            ("app A's prefix", "gw", format!("/embed-apps/{APP_A}"), "", a),
        ];
        for (route, host, prefix, base, session) in &routes {
            let cookie = format!("embedgate_session={session}");
            for (path, escape) in ESCAPES
                .iter()
                .map(|p| (p, true))
                .chain(ORDINARY.iter().map(|p| (p, false)))
            {
                count += 1;
                let target = format!("{prefix}{path}");
                let before = node.count().await;
                let got = match p {
                    Proto::H1 => {
                        let request = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\n\r\n");
                        match raw_h1(pair.plain.public_addr, request.as_bytes()).await {
                            Ok(r) => {
                                let url = serde_json::from_slice::<Value>(&r.body).ok().map(|j| j["url"].clone());
                                Ok((Some(r.status), url))
                            }
                            Err(e) => Err(format!("no answer: {e}")),
                        }
                    }
                    Proto::H2c | Proto::H2 => {
                        match raw_h2_get(&pair, p, host, target.as_bytes(), &[(b"cookie", cookie.as_bytes())]).await {
                            Outcome::Response { first_byte, .. } => Ok((h2_status(first_byte), None)),
                            // The HTTP/2 layer refused the stream before the
                            // gateway saw it: nothing forwarded either.
                            Outcome::Reset(_) if escape => Ok((Some(400), None)),
                            other => Err(format!("{other:?}")),
                        }
                    }
                };
                let after = node.count().await;
                let result = match (escape, got) {
                    (_, Err(why)) => Err(why),
                    (true, Ok((status, _))) => {
                        if status != Some(400) || after != before {
                            Err(format!(
                                "status {status:?}; the upstream got {} requests",
                                after - before
                            ))
                        } else {
                            Ok(())
                        }
                    }
                    (false, Ok((status, url))) => {
                        let want = format!("{base}{path}");
                        if status != Some(200) || after != before + 1 {
                            Err(format!(
                                "status {status:?}; the upstream got {} requests",
                                after - before
                            ))
                        } else if url.is_some_and(|u| u != json!(want)) {
                            Err(format!("the upstream was asked for something else than {want}"))
                        } else {
                            Ok(())
                        }
                    }
                };
                if let Err(why) = result {
                    failures.push(format!("{path} over {p:?} on {route}: {why}"));
                }
            }
        }
    }
    assert_all_passed(count, &failures);
}

// ---------------------------------------------------------------------------
// 5. Clients that never read
// ---------------------------------------------------------------------------

/// One upstream connection's life, as the upstream saw it.
#[derive(Debug, Clone)]
struct ConnLife {
    opened: Instant,
    /// When the body last moved (hyper pulled a chunk of it).
    progress: Instant,
    sent: u64,
    closed: Option<Instant>,
}

/// An upstream that answers `/big/<n>` with `n` zero bytes and keeps, for
/// each connection that asked for one, its life; other paths get `ok` and
/// are not counted.
struct Counting {
    up: Upstream,
    lives: Arc<Mutex<Vec<ConnLife>>>,
    open: Arc<AtomicUsize>,
    max_open: Arc<AtomicUsize>,
}

async fn counting_upstream() -> Counting {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let c = Counting {
        up: Upstream {
            addr: listener.local_addr().unwrap(),
            connections: Arc::default(),
            requests: Arc::default(),
            seen: Arc::default(),
        },
        lives: Arc::default(),
        open: Arc::default(),
        max_open: Arc::default(),
    };
    let (lives, open, max_open) = (c.lives.clone(), c.open.clone(), c.max_open.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (lives, open, max_open) = (lives.clone(), open.clone(), max_open.clone());
            // This connection's index in `lives`, from its first `/big`.
            let slot: Arc<Mutex<Option<usize>>> = Arc::default();
            tokio::spawn(async move {
                let svc = {
                    let (lives, slot, open, max_open) = (lives.clone(), slot.clone(), open.clone(), max_open.clone());
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let n: Option<u64> = req.uri().path().strip_prefix("/big/").and_then(|n| n.parse().ok());
                        let (lives, slot, open, max_open) =
                            (lives.clone(), slot.clone(), open.clone(), max_open.clone());
                        async move {
                            let Some(n) = n else {
                                return Ok::<_, std::convert::Infallible>(hyper::Response::new(full("ok")));
                            };
                            let idx = {
                                let mut slot = slot.lock().unwrap();
                                *slot.get_or_insert_with(|| {
                                    let now = Instant::now();
                                    let mut lives = lives.lock().unwrap();
                                    lives.push(ConnLife {
                                        opened: now,
                                        progress: now,
                                        sent: 0,
                                        closed: None,
                                    });
                                    let o = open.fetch_add(1, Ordering::SeqCst) + 1;
                                    max_open.fetch_max(o, Ordering::SeqCst);
                                    lives.len() - 1
                                })
                            };
                            let body = futures_util::stream::unfold(n, move |rem| {
                                let lives = lives.clone();
                                async move {
                                    if rem == 0 {
                                        return None;
                                    }
                                    let len = rem.min(ZEROS.len() as u64) as usize;
                                    {
                                        let mut lives = lives.lock().unwrap();
                                        lives[idx].progress = Instant::now();
                                        lives[idx].sent += len as u64;
                                    }
                                    Some((
                                        Ok::<_, BoxError>(hyper::body::Frame::data(Bytes::from_static(&ZEROS[..len]))),
                                        rem - len as u64,
                                    ))
                                }
                            });
                            use http_body_util::BodyExt as _;
                            let mut resp = hyper::Response::new(http_body_util::StreamBody::new(body).boxed_unsync());
                            resp.headers_mut().insert("content-length", n.into());
                            Ok(resp)
                        }
                    })
                };
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
                if let Some(idx) = *slot.lock().unwrap() {
                    lives.lock().unwrap()[idx].closed = Some(Instant::now());
                    open.fetch_sub(1, Ordering::SeqCst);
                }
            });
        }
    });
    c
}

/// `send_timeout_seconds` in the configs below.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long after its body stalled an upstream connection may stay open.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// What is wrong with the upstream connections' lives at `now`: any still
/// open more than send_timeout + 3 s after its body stalled, or closed
/// later than that.
fn stalled_lives_problems(lives: &[ConnLife], total: u64, now: Instant) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, life) in lives.iter().enumerate() {
        if life.sent >= total {
            continue;
        }
        let end = life.closed.unwrap_or(now);
        let open_for = end.duration_since(life.progress);
        if open_for > CLOSE_GRACE {
            problems.push(format!(
                "upstream connection {i} ({} bytes sent, opened {:.1} s before it stalled) {} {:.1} s after it stalled",
                life.sent,
                life.progress.duration_since(life.opened).as_secs_f64(),
                if life.closed.is_some() { "closed" } else { "still open" },
                open_for.as_secs_f64()
            ));
        }
    }
    problems
}

/// The gateway of the stalled-client tests: app A on an echo upstream,
/// the passthrough on `counting`, over `tls` when given. Its
/// `upstream_timeout_seconds` is long on purpose: an upstream body the
/// gateway stops reading looks silent to it, and that timer alone would
/// close the connection in time, whatever the client does.
async fn stall_gateway(counting: &Counting, echo: &Upstream, tls: bool) -> (Gateway, Option<TestTls>) {
    let mut opts = EmbedOpts::new(&echo.url(), &echo.url());
    opts.server_extra = format!(
        "send_timeout_seconds = {}\nmax_upstream_per_connection = 4\nupstream_timeout_seconds = 30\n",
        SEND_TIMEOUT.as_secs()
    );
    opts.extra = passthrough(&counting.up.url());
    if !tls {
        return (opts.start().await, None);
    }
    let dir = new_dir();
    let ca = TestTls::generate(dir.path());
    opts.extra = format!("{}\n{}", opts.extra, tls_section());
    (Gateway::start(dir, &opts.config()).await, Some(ca))
}

/// An HTTP/2 client over `stream` that says `INITIAL_WINDOW_SIZE = 0`,
/// opens `streams` GETs of `path`, and from then on only answers PINGs and
/// SETTINGS. Returns the task (abort it to hang up) and how many
/// RST_STREAMs and GOAWAYs it got.
async fn closed_window_client(
    mut stream: Box<dyn Io>,
    authority: &[u8],
    scheme: &[u8],
    path: &[u8],
    streams: u32,
) -> (tokio::task::JoinHandle<()>, Arc<AtomicUsize>) {
    const PING: u8 = 0x6;
    const ACK: u8 = 0x1;
    let mut hello = PREFACE.to_vec();
    // SETTINGS_INITIAL_WINDOW_SIZE (0x4) = 0.
    hello.extend(frame(SETTINGS, 0, 0, &[0x00, 0x04, 0, 0, 0, 0]));
    for i in 0..streams {
        let fields: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"GET"),
            (b":scheme", scheme),
            (b":authority", authority),
            (b":path", path),
        ];
        hello.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1 + 2 * i, &block(&fields)));
    }
    stream.write_all(&hello).await.expect("send the streams");
    stream.flush().await.expect("flush");
    let ended = Arc::new(AtomicUsize::new(0));
    let counter = ended.clone();
    let task = tokio::spawn(async move {
        let mut buf: Vec<u8> = Vec::new();
        let mut chunk = [0u8; 16384];
        loop {
            while buf.len() >= 9 {
                let len = (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
                if buf.len() < 9 + len {
                    break;
                }
                let (kind, flags) = (buf[3], buf[4]);
                let payload: Vec<u8> = buf[9..9 + len].to_vec();
                buf.drain(..9 + len);
                let answer = match kind {
                    PING if flags & ACK == 0 => Some(frame(PING, ACK, 0, &payload)),
                    SETTINGS if flags & ACK == 0 => Some(frame(SETTINGS, ACK, 0, &[])),
                    RST_STREAM | GOAWAY => {
                        counter.fetch_add(1, Ordering::SeqCst);
                        None
                    }
                    _ => None,
                };
                if let Some(answer) = answer {
                    if stream.write_all(&answer).await.is_err() || stream.flush().await.is_err() {
                        return;
                    }
                }
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    });
    (task, ended)
}

/// 32 MiB: more than the gateway's buffers and both sockets' together.
const BIG_H2: u64 = 32 * MIB;

/// A raw HTTP/2 client (TLS or h2c) that sets its initial window to 0,
/// answers PINGs and opens 20 streams for large responses gets at most 4
/// upstream connections at once, each closed within send_timeout + 3 s of
/// stalling; meanwhile other clients are served.
async fn closed_window_case(tls: bool) {
    let counting = counting_upstream().await;
    let echo = echo_upstream("a").await;
    let (gw, ca) = stall_gateway(&counting, &echo, tls).await;
    let addr = gw.public_addr;
    let dial = match &ca {
        Some(ca) => Dial::Tls(ca),
        None => Dial::Tcp,
    };
    let stream = dial.stream(addr, b"h2").await;
    let scheme: &[u8] = if tls { b"https" } else { b"http" };
    let path = format!("/big/{BIG_H2}");
    let (client, ended) = closed_window_client(stream, b"gw", scheme, path.as_bytes(), 20).await;

    let start = Instant::now();
    let mut others = Vec::new();
    while start.elapsed() < Duration::from_secs(12) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Others are served meanwhile, once the streams are stalled.
        if others.is_empty() && start.elapsed() > Duration::from_secs(3) {
            let t0 = Instant::now();
            let status = match &ca {
                Some(ca) => {
                    let (s, _) = ca.connect(addr, &[b"http/1.1"]).await;
                    let mut h1 = H1::handshake(s, "gw".into()).await;
                    h1.get("/embed-apps/x").await.status
                }
                None => H1::connect(addr).await.get("/embed-apps/x").await.status,
            };
            let up = match &ca {
                Some(ca) => {
                    let (s, _) = ca.connect(addr, &[b"http/1.1"]).await;
                    let mut h1 = H1::handshake(s, "gw".into()).await;
                    h1.get("/small").await.status
                }
                None => H1::connect(addr).await.get("/small").await.status,
            };
            others.push((status.as_u16(), up.as_u16(), t0.elapsed()));
        }
    }
    let now = Instant::now();
    let lives = counting.lives.lock().unwrap().clone();
    client.abort();
    let max_open = counting.max_open.load(Ordering::SeqCst);
    let mut problems = Vec::new();
    if lives.is_empty() {
        problems.push("no upstream connection was opened for the streams".to_string());
    }
    if !lives.iter().any(|l| l.sent < BIG_H2) {
        problems.push("no response stalled (the test did not test anything)".to_string());
    }
    if max_open > 4 {
        problems.push(format!(
            "{max_open} upstream connections were open at once for one client connection (max_upstream_per_connection = 4)"
        ));
    }
    let stalled = stalled_lives_problems(&lives, BIG_H2, now);
    if !stalled.is_empty() {
        problems.push(format!(
            "{} of {} upstream connections outlived send_timeout + 3 s, e.g. {}",
            stalled.len(),
            lives.len(),
            stalled[..stalled.len().min(2)].join("; ")
        ));
    }
    match others.first() {
        Some((404, 200, took)) if *took < Duration::from_secs(3) => {}
        other => problems.push(format!("another client was not served normally: {other:?}")),
    }
    assert!(
        problems.is_empty(),
        "over {}: {} (the client got {} RST_STREAM/GOAWAY frames)",
        if tls { "TLS" } else { "h2c" },
        problems.join("\n"),
        ended.load(Ordering::SeqCst)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_that_never_opens_its_window_holds_few_upstreams_briefly_over_tls() {
    closed_window_case(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_that_never_opens_its_window_holds_few_upstreams_briefly_over_h2c() {
    closed_window_case(false).await;
}

/// An HTTP/1.1 client that asks for a large body and stops reading: its
/// upstream connection is closed within send_timeout + 3 s of stalling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_client_that_stops_reading_frees_its_upstream() {
    // 64 MiB: more than what both sockets' buffers and the gateway's hold,
    // so that the upstream's writes stall.
    const BIG: u64 = 64 * MIB;
    let counting = counting_upstream().await;
    let echo = echo_upstream("a").await;
    let (gw, _) = stall_gateway(&counting, &echo, false).await;
    let mut c = RawConn::connect(gw.public_addr).await;
    c.send(format!("GET /big/{BIG} HTTP/1.1\r\nHost: gw\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(12) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let lives = counting.lives.lock().unwrap().clone();
        if !lives.is_empty() && lives.iter().all(|l| l.closed.is_some()) {
            break;
        }
    }
    let lives = counting.lives.lock().unwrap().clone();
    assert_eq!(lives.len(), 1, "{lives:?}");
    assert!(lives[0].sent < BIG, "the whole body was sent: nothing stalled");
    let problems = stalled_lives_problems(&lives, BIG, Instant::now());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    drop(c);
}

// ---------------------------------------------------------------------------
// 6. Two session cookies
// ---------------------------------------------------------------------------

/// What a cookie case must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CookieWant {
    /// 200 from app A's upstream, as alice.
    Alice,
    /// 401, and an `ambiguous_session` audit line.
    Ambiguous,
}

/// One valid session beside garbage is used; two different valid sessions
/// of the app are refused as ambiguous (401, audited); the same one twice is
/// fine. In one `Cookie` header, in two, and in HTTP/2's split `cookie`
/// fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_session_cookies_are_one_session_or_none() {
    let a = echo_upstream("a").await;
    let pair = Pair::start(&EmbedOpts::new(&a.url(), &a.url())).await;
    let unknown = format!("embedgate_session={}", "ab".repeat(32));
    let mut failures = Vec::new();
    let mut count = 0;
    for p in PROTOS {
        let alice = format!(
            "embedgate_session={}",
            pair.session(p, "alice@example.com", APP_A, None).await
        );
        let alice2 = format!(
            "embedgate_session={}",
            pair.session(p, "alice@example.com", APP_A, None).await
        );
        let carol = format!(
            "embedgate_session={}",
            pair.session(p, "carol@partner.example", APP_A, None).await
        );
        let cases: Vec<(&str, Vec<&str>, CookieWant)> = vec![
            (
                "garbage, then valid",
                vec!["embedgate_session=garbage", &alice],
                CookieWant::Alice,
            ),
            (
                "valid, then garbage",
                vec![&alice, "embedgate_session=garbage"],
                CookieWant::Alice,
            ),
            ("unknown, then valid", vec![&unknown, &alice], CookieWant::Alice),
            ("valid, then unknown", vec![&alice, &unknown], CookieWant::Alice),
            (
                "empty, then valid",
                vec!["embedgate_session=", &alice],
                CookieWant::Alice,
            ),
            ("the same valid twice", vec![&alice, &alice], CookieWant::Alice),
            ("two valid of one user", vec![&alice, &alice2], CookieWant::Ambiguous),
            ("two valid of two users", vec![&alice, &carol], CookieWant::Ambiguous),
            (
                "two valid of two users, reversed",
                vec![&carol, &alice],
                CookieWant::Ambiguous,
            ),
            (
                "two valid around garbage",
                vec![&alice2, "embedgate_session=garbage", &alice],
                CookieWant::Ambiguous,
            ),
        ];
        for (name, cookies, want) in &cases {
            // HTTP/1.1: one Cookie header, and two; HTTP/2: split fields.
            let layouts: Vec<(&str, Vec<String>)> = match p {
                Proto::H1 => vec![
                    ("one Cookie field", vec![cookies.join("; ")]),
                    ("a Cookie field each", cookies.iter().map(|c| c.to_string()).collect()),
                ],
                Proto::H2c | Proto::H2 => vec![(
                    "a cookie field each",
                    cookies.iter().map(|c| format!("pref=1; {c}")).collect(),
                )],
            };
            for (layout, fields) in layouts {
                count += 1;
                let audited_before = pair
                    .gw(p)
                    .stderr()
                    .lines()
                    .filter(|l| l.contains("embedgate::audit") && l.contains("ambiguous_session"))
                    .count();
                let headers: Vec<(&str, &str)> = fields.iter().map(|f| ("cookie", f.as_str())).collect();
                let r = pair.get(p, None, &format!("/embed-apps/{APP_A}/who"), &headers).await;
                let result = match want {
                    CookieWant::Alice if r.status == 200 => {
                        let e = r.echo();
                        let cookie = e.headers("cookie").join("; ");
                        if e.headers("x-embed-user") != ["alice@example.com"] {
                            Err(format!("the upstream got X-Embed-User {:?}", e.headers("x-embed-user")))
                        } else if cookie.contains("embedgate_session") {
                            Err(format!("the upstream got the session cookie: {cookie:?}"))
                        } else {
                            Ok(())
                        }
                    }
                    CookieWant::Ambiguous if r.status == 401 => {
                        let gw = pair.gw(p);
                        let audited = eventually(Duration::from_secs(3), || async {
                            gw.stderr()
                                .lines()
                                .filter(|l| l.contains("embedgate::audit") && l.contains("ambiguous_session"))
                                .count()
                                > audited_before
                        })
                        .await;
                        if audited {
                            Ok(())
                        } else {
                            Err("no embedgate::audit line with ambiguous_session".to_string())
                        }
                    }
                    _ => Err(format!(
                        "status {}{}",
                        r.status,
                        if r.status == 200 {
                            format!(" as {:?}", r.echo().headers("x-embed-user"))
                        } else {
                            String::new()
                        }
                    )),
                };
                if let Err(why) = result {
                    failures.push(format!("{name} over {p:?} ({layout}): {why}"));
                }
            }
        }
    }
    assert_all_passed(count, &failures);
}

/// A cookie whose value is not ASCII (`pref=café`, raw UTF-8) beside a
/// valid session: the session works, and the upstream still gets the
/// cookie as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_ascii_cookie_beside_the_session_passes() {
    let a = echo_upstream("a").await;
    let pair = Pair::start(&EmbedOpts::new(&a.url(), &a.url())).await;
    let mut failures = Vec::new();
    let session = pair.session(Proto::H1, "alice@example.com", APP_A, None).await;
    let layouts = [
        format!("embedgate_session={session}; pref=café"),
        format!("pref=café; embedgate_session={session}"),
        format!("pref=café; embedgate_session={session}; theme=dark"),
    ];
    for cookie in &layouts {
        let request = format!("GET /embed-apps/{APP_A}/who HTTP/1.1\r\nHost: gw\r\nCookie: {cookie}\r\n\r\n");
        match raw_h1(pair.plain.public_addr, request.as_bytes()).await {
            Ok(r) if r.status == 200 => {
                let j: Value = serde_json::from_slice(&r.body).unwrap_or_default();
                let got: Vec<String> = j["headers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|kv| kv[0] == "cookie")
                    .map(|kv| kv[1].as_str().unwrap_or("").to_string())
                    .collect();
                if !got.iter().any(|c| c.contains("pref=café")) || got.iter().any(|c| c.contains("embedgate_session"))
                {
                    failures.push(format!("{cookie:?} over H1: the upstream got Cookie {got:?}"));
                }
            }
            Ok(r) => failures.push(format!("{cookie:?} over H1: status {}", r.status)),
            Err(e) => failures.push(format!("{cookie:?} over H1: {e}")),
        }
    }
    for p in [Proto::H2c, Proto::H2] {
        let session = pair.session(p, "alice@example.com", APP_A, None).await;
        let ours = format!("embedgate_session={session}");
        let authority = if p == Proto::H2 { "localhost" } else { "gw" };
        let path = format!("/embed-apps/{APP_A}/who");
        let fields: [(&[u8], &[u8]); 2] = [(b"cookie", "pref=café".as_bytes()), (b"cookie", ours.as_bytes())];
        let outcome = raw_h2_get(&pair, p, authority, path.as_bytes(), &fields).await;
        if !matches!(outcome, Outcome::Response { ok: true, .. }) {
            failures.push(format!("pref=café in its own cookie field over {p:?}: {outcome:?}"));
        }
    }
    assert_all_passed(layouts.len() + 2, &failures);
}

// ---------------------------------------------------------------------------
// 7. Upstream Set-Cookie
// ---------------------------------------------------------------------------

/// `Set-Cookie` values an upstream could use to plant a cookie a browser
/// would send as the gateway's (a nameless cookie is sent as its value
/// alone: `=embedgate_session=evil` arrives as `embedgate_session=evil`).
const IMPERSONATING: &[&str] = &[
    "=embedgate_session=evil",
    "=evil",
    "embedgate_session",
    "EMBEDGATE_SESSION=x",
    "__Host-embedgate_session=x",
    "__Secure-embedgate_session=x",
    "__HOST-Embedgate_Session=x",
    " embedgate_session =x",
    // Beyond the issue's list.
    "embedgate_session=x; Path=/",
    "=embedgate_session=evil; Path=/; Secure",
    "embedgate_session; Path=/",
    "\tembedgate_session\t=x",
    "__secure-EMBEDGATE_SESSION=x",
    "=",
    " =evil; Path=/",
    "embedgate_session=",
];

/// Whether a `Set-Cookie` the client got would plant a cookie named as the
/// gateway's, or a nameless one.
fn impersonates(set_cookie: &str) -> bool {
    let pair = set_cookie.split(';').next().unwrap_or("");
    let Some((name, _)) = pair.split_once('=') else {
        return true;
    };
    let name = name.trim_matches([' ', '\t']).to_ascii_lowercase();
    let bare = name
        .strip_prefix("__host-")
        .or_else(|| name.strip_prefix("__secure-"))
        .unwrap_or(&name);
    name.is_empty() || bare == "embedgate_session"
}

/// Answers `/set-cookie/<i>` with [`IMPERSONATING`]`[i]` and an ordinary
/// cookie, and `/domain/<i>` with [`DOMAINS`]`[i]`.
async fn set_cookie_upstream() -> Upstream {
    scripted_upstream(|target, _| {
        let index = |prefix: &str| target.rsplit_once(prefix).and_then(|(_, i)| i.parse::<usize>().ok());
        if let Some(i) = index("/set-cookie/") {
            ok_with(&[
                &format!("Set-Cookie: {}", IMPERSONATING[i.min(IMPERSONATING.len() - 1)]),
                "Set-Cookie: ordinary=1; Path=/; Secure",
            ])
        } else if let Some(i) = index("/domain/") {
            ok_with(&[&format!("Set-Cookie: {}", DOMAINS[i.min(DOMAINS.len() - 1)].0)])
        } else {
            ok_with(&[])
        }
    })
    .await
}

/// An upstream's `Set-Cookie` that a browser would store under the session
/// cookie's name (any case, `__Host-`/`__Secure-` prefixed, padded) or
/// nameless never reaches the client; ordinary cookies do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_cookies_that_impersonate_the_session_cookie_are_dropped() {
    let up = set_cookie_upstream().await;
    let mut opts = EmbedOpts::new(&up.url(), &up.url());
    opts.extra = host_app(APP_SHOP, SHOP_HOST, &up.url(), &[SHOP_ANCESTOR]);
    let pair = Pair::start(&opts).await;
    let mut failures = Vec::new();
    let mut count = 0;
    for p in PROTOS {
        for route in [Route::Prefix, Route::Host] {
            let session = route.session(&pair, p).await.unwrap();
            let cookie = format!("embedgate_session={session}");
            for (i, value) in IMPERSONATING.iter().enumerate() {
                count += 1;
                let r = pair
                    .get(
                        p,
                        route.host(),
                        &route.path(&format!("/set-cookie/{i}")),
                        &[("cookie", &cookie)],
                    )
                    .await;
                let got = all_values(&r.headers, "set-cookie");
                let result = if r.status != 200 {
                    Err(format!("status {}", r.status))
                } else if got.iter().any(|c| impersonates(c)) {
                    Err(format!("the client got Set-Cookie {got:?}"))
                } else if !got.iter().any(|c| c.starts_with("ordinary=1")) {
                    Err(format!("the ordinary cookie was dropped too: {got:?}"))
                } else {
                    Ok(())
                };
                if let Err(why) = result {
                    failures.push(format!("{value:?} over {p:?} on the {route:?} route: {why}"));
                }
            }
        }
    }
    assert_all_passed(count, &failures);
}

/// An upstream cookie with `Domain=`, and what the client must get of it
/// on an app with its own host: the same attributes without `Domain`.
const DOMAINS: &[(&str, &str)] = &[
    ("pref=1; Domain=apps.example; Path=/; Secure", "pref=1; Path=/; Secure"),
    ("pref=1; Domain=.apps.example; Path=/", "pref=1; Path=/"),
    ("pref=1; domain=shop.apps.example; HttpOnly", "pref=1; HttpOnly"),
    (
        "pref=1; Path=/; DOMAIN = apps.example ; SameSite=Lax",
        "pref=1; Path=/; SameSite=Lax",
    ),
    ("pref=1; Domain=; Path=/", "pref=1; Path=/"),
    (
        "pref=1; Domain=example; Domain=apps.example; Max-Age=60",
        "pref=1; Max-Age=60",
    ),
];

/// On an app with its own host, an upstream cookie's `Domain=` is removed
/// (it would reach the app's sibling hosts), the rest kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_apps_upstream_cookie_loses_its_domain() {
    let up = set_cookie_upstream().await;
    let mut opts = EmbedOpts::new(&up.url(), &up.url());
    opts.extra = host_app(APP_SHOP, SHOP_HOST, &up.url(), &[SHOP_ANCESTOR]);
    let pair = Pair::start(&opts).await;
    let mut failures = Vec::new();
    for p in PROTOS {
        let session = Route::Host.session(&pair, p).await.unwrap();
        let cookie = format!("embedgate_session={session}");
        for (i, (sent, want)) in DOMAINS.iter().enumerate() {
            let r = pair
                .get(p, Some(SHOP_HOST), &format!("/domain/{i}"), &[("cookie", &cookie)])
                .await;
            let got = all_values(&r.headers, "set-cookie");
            let normal = |v: &str| {
                let mut parts: Vec<String> = v
                    .split(';')
                    .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
                    .filter(|p| !p.is_empty())
                    .collect();
                parts.sort();
                parts
            };
            if r.status != 200 || got.len() != 1 || normal(&got[0]) != normal(want) {
                failures.push(format!(
                    "{sent:?} over {p:?}: status {}, the client got {got:?}, want [{want:?}]",
                    r.status
                ));
            }
        }
    }
    assert_all_passed(DOMAINS.len() * PROTOS.len(), &failures);
}

// ---------------------------------------------------------------------------
// 8. Connection naming what the gateway sets
// ---------------------------------------------------------------------------

/// Route, host, target, cookie, the upstream's authority, the fields the
/// gateway sets there.
type ConnRoute<'a> = (&'a str, &'a str, String, &'a str, SocketAddr, Vec<&'a str>);

/// `Connection` may name hop-by-hop fields of the client's, never `Host`
/// or a field the gateway sets: those still reach the upstream with the
/// gateway's values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cannot_remove_what_the_gateway_sets() {
    let a = echo_upstream("a").await;
    let shop = echo_upstream("shop").await;
    let pass = echo_upstream("pass").await;
    let mut opts = EmbedOpts::new(&a.url(), &a.url());
    opts.extra = format!(
        "{}{}",
        host_app(APP_SHOP, SHOP_HOST, &shop.url(), &[SHOP_ANCESTOR]),
        passthrough(&pass.url())
    );
    let gw = opts.start().await;
    let addr = gw.public_addr;
    let a_session = open_session(addr, "alice@example.com", APP_A).await;
    let shop_session = {
        let pat = mint_pat(addr, "alice@example.com", APP_SHOP).await;
        let r = get_with(
            addr,
            &format!("/embed-apps/{APP_SHOP}?personal-access-token={pat}"),
            &[("host", SHOP_HOST)],
        )
        .await;
        set_cookie_value(&r, "embedgate_session").expect("a shop session")
    };
    let connections: &[&str] = &[
        "Connection: Host\r\n",
        "Connection: X-Request-Id\r\n",
        "Connection: X-Forwarded-For\r\n",
        "Connection: X-Embed-User\r\n",
        "Connection: close, Host\r\n",
        // Beyond the issue's list.
        "Connection: HOST\r\n",
        "Connection: x-embed-assertion, x-embed-groups, x-embed-app\r\n",
        "Connection: X-Forwarded-Proto, X-Forwarded-Host, X-Forwarded-Prefix\r\n",
        "Connection: keep-alive, X-Request-Id, Host\r\n",
        "Connection: keep-alive\r\nConnection: Host, X-Embed-User\r\n",
    ];
    let a_cookie = format!("Cookie: embedgate_session={a_session}\r\n");
    let shop_cookie = format!("Cookie: embedgate_session={shop_session}\r\n");
    let identity = ["x-embed-user", "x-embed-groups", "x-embed-app", "x-embed-assertion"];
    let forwarding = ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"];
    let routes: [ConnRoute; 3] = [
        (
            "prefix app",
            "gw",
            format!("/embed-apps/{APP_A}/who"),
            a_cookie.as_str(),
            a.addr,
            [&identity[..], &forwarding[..], &["x-forwarded-prefix"]].concat(),
        ),
        (
            "host app",
            SHOP_HOST,
            "/who".to_string(),
            shop_cookie.as_str(),
            shop.addr,
            [&identity[..], &forwarding[..]].concat(),
        ),
        (
            "passthrough",
            "gw",
            "/who".to_string(),
            "",
            pass.addr,
            forwarding.to_vec(),
        ),
    ];
    let mut failures = Vec::new();
    for (route, host, target, cookie, upstream, set) in &routes {
        let request = |connection: &str| format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n{cookie}{connection}\r\n");
        let baseline = raw_h1(addr, request("").as_bytes()).await.expect("baseline");
        let baseline: Value = serde_json::from_slice(&baseline.body).expect("baseline echo");
        let values = |j: &Value, name: &str| -> Vec<String> {
            j["headers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|kv| kv[0] == name)
                .map(|kv| kv[1].as_str().unwrap_or("").to_string())
                .collect()
        };
        for connection in connections {
            let name = connection.trim_end().replace("\r\n", " + ");
            let result = match raw_h1(addr, request(connection).as_bytes()).await {
                Err(e) => Err(format!("no answer: {e}")),
                Ok(r) if r.status != 200 => Err(format!("status {}", r.status)),
                Ok(r) => {
                    let j: Value = serde_json::from_slice(&r.body).unwrap_or_default();
                    let mut problems = Vec::new();
                    if values(&j, "host") != [upstream.to_string()] {
                        problems.push(format!("Host {:?}", values(&j, "host")));
                    }
                    let id = r.header("x-request-id").unwrap_or("").to_string();
                    if values(&j, "x-request-id") != [id.clone()] {
                        problems.push(format!(
                            "X-Request-Id {:?}, answered {id:?}",
                            values(&j, "x-request-id")
                        ));
                    }
                    for field in set {
                        let got = values(&j, field);
                        let want = values(&baseline, field);
                        let same = if *field == "x-embed-assertion" {
                            got.len() == 1
                        } else {
                            got == want
                        };
                        if !same {
                            problems.push(format!("{field} {got:?}, want {want:?}"));
                        }
                    }
                    if problems.is_empty() {
                        Ok(())
                    } else {
                        Err(format!("the upstream got {}", problems.join(", ")))
                    }
                }
            };
            if let Err(why) = result {
                failures.push(format!("{name} on the {route}: {why}"));
            }
        }
    }
    assert_all_passed(connections.len() * routes.len(), &failures);
}

// ---------------------------------------------------------------------------
// 9. Error answers carry the framing policy
// ---------------------------------------------------------------------------

const DEAD_PREFIX: &str = "dead0000-0000-4000-8000-000000000e01";
const HUNG_PREFIX: &str = "4a960000-0000-4000-8000-000000000e02";
const DEAD_HOST_APP: &str = "dead0000-0000-4000-8000-000000000e03";
const HUNG_HOST_APP: &str = "4a960000-0000-4000-8000-000000000e04";
const DEAD_HOST: &str = "dead.apps.example";
const HUNG_HOST: &str = "hung.apps.example";

/// Name, host, path, session, `Accept`, status, the app's list.
type ErrorCase<'a> = (
    &'a str,
    Option<&'a str>,
    String,
    Option<&'a str>,
    &'a str,
    u16,
    &'a [&'a str],
);

/// Every error answer on an app's tree (400, 401, 404, 502, 504, on a
/// prefix app and on an app with its own host) carries the app's
/// `frame-ancestors`, as its pages do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_answers_on_an_apps_tree_carry_its_framing_policy() {
    let up = scripted_upstream(|target, _| {
        if target.ends_with("/status/404") {
            b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nnot found".to_vec()
        } else {
            ok_with(&[])
        }
    })
    .await;
    let hung = hung_upstream().await;
    let dead = format!("http://{}", closed_port().await);
    let mut opts = EmbedOpts::new(&up.url(), &up.url());
    opts.server_extra = "upstream_timeout_seconds = 1\nupstream_connect_timeout_seconds = 1".to_string();
    opts.extra = [
        host_app(APP_SHOP, SHOP_HOST, &up.url(), &[SHOP_ANCESTOR]),
        prefix_app(DEAD_PREFIX, &dead, &["https://dead.portal.example"]),
        prefix_app(HUNG_PREFIX, &hung.url(), &["https://hung.portal.example"]),
        host_app(DEAD_HOST_APP, DEAD_HOST, &dead, &["https://dead-host.portal.example"]),
        host_app(
            HUNG_HOST_APP,
            HUNG_HOST,
            &hung.url(),
            &["https://hung-host.portal.example"],
        ),
    ]
    .concat();
    let pair = Pair::start(&opts).await;
    let mut failures = Vec::new();
    let mut count = 0;
    for p in PROTOS {
        let s_a = pair.session(p, "alice@example.com", APP_A, None).await;
        let s_b = pair.session(p, "alice@example.com", APP_B, None).await;
        let s_shop = pair.session(p, "alice@example.com", APP_SHOP, Some(SHOP_HOST)).await;
        let s_dead = pair.session(p, "alice@example.com", DEAD_PREFIX, None).await;
        let s_hung = pair.session(p, "alice@example.com", HUNG_PREFIX, None).await;
        let s_dead_host = pair
            .session(p, "alice@example.com", DEAD_HOST_APP, Some(DEAD_HOST))
            .await;
        let s_hung_host = pair
            .session(p, "alice@example.com", HUNG_HOST_APP, Some(HUNG_HOST))
            .await;
        let a = format!("/embed-apps/{APP_A}");
        let cases: Vec<ErrorCase> = vec![
            (
                "400 on a prefix app",
                None,
                format!("{a}/a%2fb"),
                Some(&s_a),
                "*/*",
                400,
                &FRAME_ANCESTORS_A,
            ),
            (
                "400 on a host app",
                Some(SHOP_HOST),
                "/a%2fb".into(),
                Some(&s_shop),
                "*/*",
                400,
                &[SHOP_ANCESTOR],
            ),
            (
                "401 (JSON) on a prefix app",
                None,
                format!("{a}/x"),
                None,
                "application/json",
                401,
                &FRAME_ANCESTORS_A,
            ),
            (
                "401 (page) on a prefix app",
                None,
                format!("{a}/x"),
                None,
                "text/html",
                401,
                &FRAME_ANCESTORS_A,
            ),
            (
                "401 on app B (no ancestors)",
                None,
                format!("/embed-apps/{APP_B}/x"),
                None,
                "application/json",
                401,
                &[],
            ),
            (
                "401 (JSON) on a host app",
                Some(SHOP_HOST),
                "/x".into(),
                None,
                "application/json",
                401,
                &[SHOP_ANCESTOR],
            ),
            (
                "401 (page) on a host app",
                Some(SHOP_HOST),
                "/x".into(),
                None,
                "text/html",
                401,
                &[SHOP_ANCESTOR],
            ),
            (
                "the upstream's 404 on a prefix app",
                None,
                format!("{a}/status/404"),
                Some(&s_a),
                "*/*",
                404,
                &FRAME_ANCESTORS_A,
            ),
            (
                "the upstream's 404 on app B",
                None,
                format!("/embed-apps/{APP_B}/status/404"),
                Some(&s_b),
                "*/*",
                404,
                &[],
            ),
            (
                "the upstream's 404 on a host app",
                Some(SHOP_HOST),
                "/status/404".into(),
                Some(&s_shop),
                "*/*",
                404,
                &[SHOP_ANCESTOR],
            ),
            (
                "502 on a prefix app",
                None,
                format!("/embed-apps/{DEAD_PREFIX}/x"),
                Some(&s_dead),
                "*/*",
                502,
                &["https://dead.portal.example"],
            ),
            (
                "502 on a host app",
                Some(DEAD_HOST),
                "/x".into(),
                Some(&s_dead_host),
                "*/*",
                502,
                &["https://dead-host.portal.example"],
            ),
            (
                "504 on a prefix app",
                None,
                format!("/embed-apps/{HUNG_PREFIX}/x"),
                Some(&s_hung),
                "*/*",
                504,
                &["https://hung.portal.example"],
            ),
            (
                "504 on a host app",
                Some(HUNG_HOST),
                "/x".into(),
                Some(&s_hung_host),
                "*/*",
                504,
                &["https://hung-host.portal.example"],
            ),
        ];
        for (name, host, path, session, accept, status, own) in &cases {
            count += 1;
            let cookie = session.map(|s| format!("embedgate_session={s}"));
            let mut headers = vec![("accept", *accept)];
            if let Some(cookie) = &cookie {
                headers.push(("cookie", cookie));
            }
            let r = pair.get(p, *host, path, &headers).await;
            let result = if r.status != *status {
                Err(format!("status {}, want {status}", r.status))
            } else {
                framing_check(&r.headers, own, None)
            };
            if let Err(why) = result {
                failures.push(format!("{name} over {p:?}: {why}"));
            }
        }
    }

    // The exchange's own 404, once the user is gone (one reload, HTTP/1.1).
    let gw = &pair.plain;
    let dave_pat = mint_pat(gw.public_addr, "dave@other.example", APP_A).await;
    let carol_pat = mint_pat(gw.public_addr, "carol@partner.example", APP_SHOP).await;
    let mut reloaded = opts.clone();
    reloaded.users = DEFAULT_USERS
        .replace("[[users]]\nemail = \"dave@other.example\"\ngroups = [\"sales\"]\n", "")
        .replace("[[users]]\nemail = \"carol@partner.example\"\ngroups = []\n", "");
    assert!(!reloaded.users.contains("dave") && !reloaded.users.contains("carol"));
    gw.write_config(&reloaded.config());
    gw.signal("HUP");
    let addr = gw.public_addr;
    let landed = eventually(T, || async move {
        mint(addr, &json!({"email": "dave@other.example", "appId": APP_A}))
            .await
            .status
            == 404
    })
    .await;
    assert!(landed, "the reload never took effect");
    let gone: [(&str, Option<&str>, String, &[&str]); 2] = [
        (
            "404 of an exchange on a prefix app",
            None,
            format!("/embed-apps/{APP_A}?personal-access-token={dave_pat}"),
            &FRAME_ANCESTORS_A,
        ),
        (
            "404 of an exchange on a host app",
            Some(SHOP_HOST),
            format!("/embed-apps/{APP_SHOP}?personal-access-token={carol_pat}"),
            &[SHOP_ANCESTOR],
        ),
    ];
    for (name, host, path, own) in &gone {
        count += 1;
        let r = pair.get(Proto::H1, *host, path, &[]).await;
        let result = if r.status != 404 {
            Err(format!("status {}", r.status))
        } else {
            framing_check(&r.headers, own, None)
        };
        if let Err(why) = result {
            failures.push(format!("{name} over H1: {why}"));
        }
    }
    assert_all_passed(count, &failures);
}

// ---------------------------------------------------------------------------
// 10. A live PAT is never forwarded
// ---------------------------------------------------------------------------

/// Route, host, path, cookie, the PAT used, the path upstream.
type PatRoute<'a> = (&'a str, Option<&'a str>, String, Option<&'a str>, &'a str, &'a str);

/// A PAT in the query of any path but the exchange's is removed before the
/// request goes up (whatever the spelling of its name), and it is neither
/// checked nor spent there: the same PAT exchanges afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_pat_is_never_forwarded_nor_spent_off_the_exchange() {
    let a = echo_upstream("a").await;
    let shop = echo_upstream("shop").await;
    let pass = echo_upstream("pass").await;
    let mut opts = EmbedOpts::new(&a.url(), &a.url());
    opts.extra = format!(
        "{}{}",
        host_app(APP_SHOP, SHOP_HOST, &shop.url(), &[SHOP_ANCESTOR]),
        passthrough(&pass.url())
    );
    let pair = Pair::start(&opts).await;
    // The query (with {pat}) and what the upstream must get of it.
    let queries: &[(&str, &str)] = &[
        ("personal-access-token={pat}&x=1", "x=1"),
        ("x=1&personal-access-token={pat}", "x=1"),
        ("x=1&personal-access-token={pat}&y=a%20b", "x=1&y=a%20b"),
        ("Personal-Access-Token={pat}&x=1", "x=1"),
        ("PERSONAL-ACCESS-TOKEN={pat}&x=1", "x=1"),
        ("personal%2Daccess%2Dtoken={pat}&x=1", "x=1"),
        ("personal%2daccess%2dtoken={pat}&x=1", "x=1"),
        ("%70ersonal-access-token={pat}&x=1", "x=1"),
        ("x=1&personal-access-token={pat}&personal-access-token={pat}", "x=1"),
        ("personal-access-token={pat}", ""),
    ];
    let mut failures = Vec::new();
    let mut count = 0;
    for p in PROTOS {
        let a_session = pair.session(p, "alice@example.com", APP_A, None).await;
        let shop_session = pair.session(p, "alice@example.com", APP_SHOP, Some(SHOP_HOST)).await;
        let a_pat = pair.mint_pat(p, "alice@example.com", APP_A).await;
        let shop_pat = pair.mint_pat(p, "alice@example.com", APP_SHOP).await;
        let a_cookie = format!("embedgate_session={a_session}");
        let shop_cookie = format!("embedgate_session={shop_session}");
        let routes: [PatRoute; 6] = [
            (
                "app A's root",
                None,
                format!("/embed-apps/{APP_A}/"),
                Some(&a_cookie),
                &a_pat,
                "/",
            ),
            (
                "a page of app A",
                None,
                format!("/embed-apps/{APP_A}/page"),
                Some(&a_cookie),
                &a_pat,
                "/page",
            ),
            (
                "the shop's root",
                Some(SHOP_HOST),
                "/".into(),
                Some(&shop_cookie),
                &shop_pat,
                "/",
            ),
            (
                "a page of the shop",
                Some(SHOP_HOST),
                "/any/page".into(),
                Some(&shop_cookie),
                &shop_pat,
                "/any/page",
            ),
            ("the passthrough, app A's PAT", None, "/x".into(), None, &a_pat, "/x"),
            (
                "the passthrough, the shop's PAT",
                None,
                "/y".into(),
                None,
                &shop_pat,
                "/y",
            ),
        ];
        for (route, host, path, cookie, pat, up_path) in &routes {
            for (query, want) in queries {
                count += 1;
                let query = query.replace("{pat}", pat);
                let headers: Vec<(&str, &str)> = cookie.iter().map(|c| ("cookie", *c)).collect();
                let r = pair.get(p, *host, &format!("{path}?{query}"), &headers).await;
                let result = if r.status != 200 {
                    Err(format!("status {} {}", r.status, r.text()))
                } else {
                    let uri = r.echo().uri().to_string();
                    let ok = if want.is_empty() {
                        uri == *up_path || uri == format!("{up_path}?")
                    } else {
                        uri == format!("{up_path}?{want}")
                    };
                    if uri.contains(*pat) || !ok {
                        Err(format!("the upstream was asked for {uri:?}"))
                    } else {
                        Ok(())
                    }
                };
                if let Err(why) = result {
                    // The PAT itself is long and says nothing.
                    let shown = query.replace(*pat, "pat_…");
                    failures.push(format!(
                        "{shown:?} over {p:?} on {route}: {}",
                        why.replace(*pat, "pat_…")
                    ));
                }
            }
        }
        // Neither PAT was spent (nor counted as a bad one).
        for (app, host, pat) in [(APP_A, None, &a_pat), (APP_SHOP, Some(SHOP_HOST), &shop_pat)] {
            count += 1;
            let r = pair
                .get(p, host, &format!("/embed-apps/{app}?personal-access-token={pat}"), &[])
                .await;
            if r.status != 303 {
                failures.push(format!(
                    "the PAT of {app}, seen off the exchange over {p:?}, no longer exchanges: status {}",
                    r.status
                ));
            }
        }
    }
    assert_all_passed(count, &failures);
}

// ---------------------------------------------------------------------------
// 11. The bad-PAT limiter counts IPv6 by /64
// ---------------------------------------------------------------------------

/// Behind a trusted proxy, failed exchanges from addresses of one IPv6 /64
/// (however written) share one budget; another /64 has its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pat_limiter_counts_ipv6_clients_by_their_64() {
    let a = echo_upstream("a").await;
    let mut opts = EmbedOpts::new(&a.url(), &a.url());
    opts.server_extra = "trusted_proxies = [\"127.0.0.1/32\"]".to_string();
    opts.rate_limit =
        "pat_create_per_minute = 10000\npat_create_per_user_per_minute = 10000\nbad_pat_per_minute = 3\n".into();
    let gw = opts.start().await;
    let bad = format!("/embed-apps/{APP_A}?personal-access-token=pat_{}", "0".repeat(64));
    let steps: &[(&str, u16)] = &[
        ("2001:db8:1:2::1", 401),
        ("2001:db8:1:2::2", 401),
        ("2001:db8:1:2::3", 401),
        ("2001:db8:1:2::4", 429),
        ("2001:db8:1:2:0:0:0:5", 429),
        ("2001:0db8:0001:0002::6", 429),
        ("2001:DB8:1:2:ffff:ffff:ffff:ffff", 429),
        ("2001:db8:1:3::1", 401),
        ("2001:db8:1:2::1, 10.0.0.1", 429),
        ("203.0.113.7", 401),
    ];
    let mut failures = Vec::new();
    for (xff, want) in steps {
        let r = get_with(gw.public_addr, &bad, &[("x-forwarded-for", xff)]).await;
        if r.status != *want {
            failures.push(format!("X-Forwarded-For: {xff}: status {}, want {want}", r.status));
        }
    }
    assert_all_passed(steps.len(), &failures);
}
