//! The OpenAPI document of `/api/ext/*` (`src/api/openapi.json`) held to the
//! real gateway.
//!
//! Each operation is driven into every status its document lists, and each
//! real answer is checked against the document: the status is listed for
//! that operation, every header the document calls required is there and
//! matches its schema, the media type is the documented one, and the body
//! validates against the documented schema (JSON Schema 2020-12, with every
//! `$ref` resolved inside the document). The bodies sent for successes are
//! checked against the documented request schemas, bodies those schemas
//! refuse are shown to be 400s, and the gateway serves the document byte
//! for byte as committed.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use crate::common::*;
use hyper::Request;
use jsonschema::{Draft, Registry, Validator};
use serde_json::{json, Value};

/// The document as committed.
const DOCUMENT: &str = include_str!("../../src/api/openapi.json");
/// The document's URI in the validators' registry: a schema of the document
/// is `{"$ref": "<BASE>#<its JSON pointer>"}`, so its own `#/components/…`
/// references resolve against the whole document.
const BASE: &str = "urn:embedgate:openapi";

const MINT: &str = "/api/ext/users/personal-access-token";
const REVOKE: &str = "/api/ext/users/sessions/revoke";
const DOC: &str = "/api/ext/openapi.json";

/// An `[[api.tokens]]` token scoped to app B and `*@partner.example`.
const SCOPED_TOKEN: &str = "eg-test-scoped-openapi-4d5e6f708192a3b4";

/// Statuses the document lists that no test can bring about: the
/// operating system's random number generator failing.
const UNREACHABLE: [(Op, u16); 1] = [(Op::Mint, 500)];

// ---------------------------------------------------------------------------
// The document as a contract.

/// An operation of the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Mint,
    Revoke,
    GetDocument,
    HeadDocument,
}

impl Op {
    fn path(self) -> &'static str {
        match self {
            Op::Mint => MINT,
            Op::Revoke => REVOKE,
            Op::GetDocument | Op::HeadDocument => DOC,
        }
    }

    /// The operation's key in its path item.
    fn method(self) -> &'static str {
        match self {
            Op::Mint | Op::Revoke => "post",
            Op::GetDocument => "get",
            Op::HeadDocument => "head",
        }
    }

    fn id(self) -> &'static str {
        match self {
            Op::Mint => "mintPersonalAccessToken",
            Op::Revoke => "revokeSessions",
            Op::GetDocument => "getOpenApiDocument",
            Op::HeadDocument => "headOpenApiDocument",
        }
    }

    /// The JSON pointer of the operation in the document.
    fn pointer(self) -> String {
        format!("/paths/{}/{}", escape(self.path()), self.method())
    }
}

/// A JSON pointer token (RFC 6901 §3).
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// A real answer, as the document speaks of it.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// Names lowercased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// It answers a `HEAD`: there is no body to check.
    to_head: bool,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn from_reply(r: Reply, to_head: bool) -> Answer {
        let headers = r
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        Answer {
            status: r.status.as_u16(),
            headers,
            body: r.body.to_vec(),
            to_head,
        }
    }

    fn from_raw(r: RawResponse) -> Answer {
        Answer {
            status: r.status,
            headers: r.headers,
            body: r.body,
            to_head: false,
        }
    }
}

/// The document, and validators for the schemas in it.
struct Contract {
    doc: Value,
    registry: Registry<'static>,
}

impl Contract {
    fn committed() -> Contract {
        Contract::new(serde_json::from_str(DOCUMENT).expect("src/api/openapi.json is not JSON"))
    }

    fn new(doc: Value) -> Contract {
        let registry = Registry::new()
            .add(BASE, Draft::Draft202012.create_resource(doc.clone()))
            .and_then(|builder| builder.prepare())
            .expect("the document as a JSON Schema resource");
        Contract { doc, registry }
    }

    /// The object at `pointer`, following Reference Objects (`$ref` to
    /// `#/…`) to where it is defined; with its own pointer.
    fn resolve(&self, pointer: &str) -> Result<(String, &Value), String> {
        let mut at = pointer.to_owned();
        for _ in 0..8 {
            let value = self
                .doc
                .pointer(&at)
                .ok_or_else(|| format!("nothing at {at} in the document"))?;
            match value.get("$ref").and_then(Value::as_str) {
                Some(target) => {
                    at = target
                        .strip_prefix('#')
                        .ok_or_else(|| format!("{at}: $ref {target:?} leaves the document"))?
                        .to_owned();
                }
                None => return Ok((at, value)),
            }
        }
        Err(format!("{pointer}: too many $refs in a row"))
    }

    /// A validator for the schema at `pointer`, with format assertions on
    /// (`uri`, `date-time`, …) and no retrieval from anywhere.
    fn validator(&self, pointer: &str) -> Validator {
        jsonschema::options()
            .with_draft(Draft::Draft202012)
            .with_registry(&self.registry)
            .should_validate_formats(true)
            .offline()
            .build(&json!({"$ref": format!("{BASE}#{pointer}")}))
            .unwrap_or_else(|e| panic!("the schema at {pointer} does not compile: {e}"))
    }

    /// Every way `instance` breaks the schema at `pointer`.
    fn validate(&self, pointer: &str, instance: &Value) -> Result<(), String> {
        let validator = self.validator(pointer);
        let errors: Vec<String> = validator
            .iter_errors(instance)
            .map(|e| format!("at {:?}: {e}", e.instance_path().as_str()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{instance} breaks the schema at {pointer}: {}",
                errors.join("; ")
            ))
        }
    }

    /// The pointer of the request body schema of `op` (JSON).
    fn request_schema(&self, op: Op) -> String {
        format!("{}/requestBody/content/application~1json/schema", op.pointer())
    }

    /// Checks `body` against the request schema of `op`.
    fn check_request(&self, op: Op, body: &Value) -> Result<(), String> {
        self.validate(&self.request_schema(op), body)
    }

    /// The statuses the document lists for `op`.
    fn statuses(&self, op: Op) -> BTreeSet<u16> {
        self.doc
            .pointer(&format!("{}/responses", op.pointer()))
            .and_then(Value::as_object)
            .map(|responses| responses.keys().filter_map(|k| k.parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Whether `answer` is one the document allows `op` to give.
    fn check(&self, op: Op, answer: &Answer) -> Result<(), String> {
        let operation = op.pointer();
        let Some(documented) = self.doc.pointer(&operation) else {
            return Err(format!("{} {} is not in the document", op.method(), op.path()));
        };
        if documented["operationId"] != op.id() {
            return Err(format!("{operation}: operationId is not {:?}", op.id()));
        }
        let status = answer.status.to_string();
        let listed = format!("{operation}/responses/{status}");
        if self.doc.pointer(&listed).is_none() {
            return Err(format!("status {status} is not documented for {}", op.id()));
        }
        let (response, definition) = self.resolve(&listed)?;

        let headers = definition.get("headers").and_then(Value::as_object);
        for name in headers.into_iter().flat_map(|h| h.keys()) {
            let (header, spec) = self.resolve(&format!("{response}/headers/{}", escape(name)))?;
            match answer.header(name) {
                None if spec["required"] == json!(true) => {
                    return Err(format!("{status}: the required header {name} is missing"));
                }
                None => {}
                Some(value) => {
                    let schema = format!("{header}/schema");
                    // A header's value is text; the document types it.
                    let typed = match self.resolve(&schema)?.1["type"].as_str() {
                        Some("integer") => match value.trim().parse::<i64>() {
                            Ok(n) => json!(n),
                            Err(_) => return Err(format!("{status}: header {name}: {value:?} is not an integer")),
                        },
                        _ => json!(value),
                    };
                    self.validate(&schema, &typed)
                        .map_err(|e| format!("{status}: header {name}: {e}"))?;
                }
            }
        }

        let Some(content) = definition.get("content").and_then(Value::as_object) else {
            if !answer.body.is_empty() {
                return Err(format!("{status}: a body where the document has none"));
            }
            return Ok(());
        };
        let media = answer
            .header("content-type")
            .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
            .ok_or_else(|| format!("{status}: no Content-Type"))?;
        if !content.contains_key(&media) {
            let documented: Vec<&String> = content.keys().collect();
            return Err(format!("{status}: Content-Type {media:?}, documented {documented:?}"));
        }
        if answer.to_head {
            if !answer.body.is_empty() {
                return Err(format!("{status}: a body in the answer to HEAD"));
            }
            return Ok(());
        }
        let body: Value = serde_json::from_slice(&answer.body).map_err(|e| {
            format!(
                "{status}: the body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&answer.body)
            )
        })?;
        let schema = format!("{response}/content/{}/schema", escape(&media));
        self.validate(&schema, &body).map_err(|e| format!("{status}: {e}"))
    }
}

/// What a test saw: each operation's statuses, each checked against the
/// document as it came.
struct Seen<'c> {
    contract: &'c Contract,
    statuses: BTreeSet<(Op, u16)>,
}

impl<'c> Seen<'c> {
    fn new(contract: &'c Contract) -> Seen<'c> {
        Seen {
            contract,
            statuses: BTreeSet::new(),
        }
    }

    /// Asserts that `answer` (to `what`) has the status the scenario is
    /// built to bring about, and that the document allows it; returns its
    /// body.
    fn expect(&mut self, what: &str, op: Op, answer: &Answer, status: u16) -> Value {
        assert_eq!(
            answer.status,
            status,
            "{what}: the gateway answered {} {:?}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
        if let Err(e) = self.contract.check(op, answer) {
            panic!(
                "{what}: the answer disagrees with the document ({}): {e}\n{answer:?}",
                op.id()
            );
        }
        self.statuses.insert((op, status));
        answer.json()
    }

    /// Asserts that every status the document lists for `op` was seen,
    /// and nothing else.
    fn assert_every_status_of(&self, op: Op) {
        let documented: BTreeSet<u16> = self
            .contract
            .statuses(op)
            .into_iter()
            .filter(|s| !UNREACHABLE.contains(&(op, *s)))
            .collect();
        let seen: BTreeSet<u16> = self
            .statuses
            .iter()
            .filter(|(o, _)| *o == op)
            .map(|(_, s)| *s)
            .collect();
        assert_eq!(
            seen,
            documented,
            "{}: the statuses brought about are not the ones documented",
            op.id()
        );
    }
}

// ---------------------------------------------------------------------------
// The gateways and the requests.

/// A user of the config that the document's own examples name (admitted to
/// app A through group `sales`).
const EXAMPLE_USER: &str = "\n[[users]]\nemail = \"user@example.com\"\ngroups = [\"sales\"]\n";

/// The embed config with [`SCOPED_TOKEN`] and [`EXAMPLE_USER`].
fn opts(up: &Upstream) -> EmbedOpts {
    let mut o = EmbedOpts::new(&up.url(), &up.url());
    o.users.push_str(EXAMPLE_USER);
    o.api_extra = format!(
        "\n[[api.tokens]]\n\
         name = \"scoped-portal\"\n\
         sha256 = \"{}\"\n\
         apps = [\"{APP_B}\"]\n\
         emails = [\"*@partner.example\"]\n",
        sha256_hex(SCOPED_TOKEN)
    );
    o
}

/// The gateways one operation's statuses need.
struct Gateways {
    _up: Upstream,
    /// The default: users from the config, roomy limits.
    main: Gateway,
    /// `[identity] users = "portal"`.
    portal: Gateway,
    /// Two mints a minute per API token, one per user.
    limited: Gateway,
    /// A body must arrive within a second.
    impatient: Gateway,
    /// On a Redis store that is not there.
    storeless: Gateway,
    _key_dir: tempfile::TempDir,
}

impl Gateways {
    async fn start() -> Gateways {
        let up = echo_upstream("app").await;
        let base = opts(&up);

        let mut portal = base.clone();
        portal.extra.push_str("\n[identity]\nusers = \"portal\"\n");

        let mut limited = base.clone();
        limited.rate_limit =
            "pat_create_per_minute = 2\npat_create_per_user_per_minute = 1\nbad_pat_per_minute = 1000\n".into();

        let mut impatient = base.clone();
        impatient.server_extra = "header_read_timeout_seconds = 1".into();

        // A port nothing listens on: bound, then let go.
        let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let dead_port = dead.local_addr().expect("local addr").port();
        drop(dead);
        let key_dir = new_dir();
        let key = AssertionKey::ed25519(key_dir.path(), "assertion-key.pem");
        let mut storeless = base.clone();
        storeless.extra.push_str(&format!(
            "\n[assertion]\nkey = \"{}\"\n\n[store]\nkind = \"redis\"\n\
             url = \"redis://127.0.0.1:{dead_port}/0\"\ntimeout_ms = 250\n",
            key.path.display()
        ));

        let (main, portal, limited, impatient, storeless) = tokio::join!(
            base.start(),
            portal.start(),
            limited.start(),
            impatient.start(),
            storeless.start()
        );
        Gateways {
            _up: up,
            main,
            portal,
            limited,
            impatient,
            storeless,
            _key_dir: key_dir,
        }
    }
}

/// `method path` with `headers` and `body`, on a fresh connection.
async fn call(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: Body) -> Answer {
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let reply = H1::connect(addr).await.request(req.body(body).unwrap()).await;
    Answer::from_reply(reply, method == "HEAD")
}

/// `POST path` as `token` with a JSON body given as text.
async fn post_text(addr: SocketAddr, path: &str, token: &str, body: &str) -> Answer {
    let auth = format!("Basic {token}");
    let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
    call(addr, "POST", path, &headers, full(body.to_owned())).await
}

/// `POST path` as [`API_TOKEN`] with `body`.
async fn post(addr: SocketAddr, path: &str, body: &Value) -> Answer {
    post_text(addr, path, API_TOKEN, &body.to_string()).await
}

/// `POST path` as [`API_TOKEN`] whose declared body never arrives whole.
async fn post_stalled(addr: SocketAddr, path: &str) -> Answer {
    let mut conn = RawConn::connect(addr).await;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Basic {API_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 64\r\n\r\n{{\"email\": "
    );
    conn.send(head.as_bytes()).await.expect("send");
    Answer::from_raw(conn.read_response(false).await.expect("an answer to a stalled body"))
}

/// The answers every `POST` operation gives before it reads a body: no or
/// a wrong API token, another method, no JSON, too large, too slow.
async fn refusals_before_the_body(seen: &mut Seen<'_>, op: Op, gw: &Gateways) {
    let addr = gw.main.public_addr;
    let path = op.path();
    let valid = json!({"email": "alice@example.com", "appId": APP_A}).to_string();
    let json_ct = ("content-type", "application/json");
    let auth = format!("Basic {API_TOKEN}");
    let auth = ("authorization", auth.as_str());

    for (what, headers) in [
        ("no Authorization", vec![json_ct]),
        ("a wrong token", vec![("authorization", "Basic not-the-token"), json_ct]),
        ("the token as Bearer", vec![("authorization", "Bearer x"), json_ct]),
    ] {
        let a = call(addr, "POST", path, &headers, full(valid.clone())).await;
        seen.expect(what, op, &a, 401);
    }
    for method in ["GET", "PUT", "DELETE", "PATCH", "HEAD"] {
        let a = call(addr, method, path, &[auth], empty()).await;
        seen.expect(&format!("{method} {path}"), op, &a, 405);
    }
    for (what, headers) in [
        ("no Content-Type", vec![auth]),
        ("text/plain", vec![auth, ("content-type", "text/plain")]),
    ] {
        let a = call(addr, "POST", path, &headers, full(valid.clone())).await;
        seen.expect(what, op, &a, 415);
    }
    let declared = call(addr, "POST", path, &[auth, json_ct], full(vec![b' '; 70_000])).await;
    seen.expect("a 70 000-byte body", op, &declared, 413);
    let chunked = call(addr, "POST", path, &[auth, json_ct], zeros_body(70_000)).await;
    seen.expect("a 70 000-byte chunked body", op, &chunked, 413);
    let stalled = post_stalled(gw.impatient.public_addr, path).await;
    seen.expect("a body that stops arriving", op, &stalled, 408);
}

/// The bodies the request schema of `op` refuses: each must be refused by
/// the document and be a 400 at `addr`.
async fn schema_refusals_are_400s(seen: &mut Seen<'_>, op: Op, addr: SocketAddr, bodies: &[Value]) {
    for body in bodies {
        assert!(
            seen.contract.check_request(op, body).is_err(),
            "{}: the request schema accepts {body}, which this test expects it to refuse",
            op.id()
        );
        let a = post(addr, op.path(), body).await;
        let answer = seen.expect(&format!("{body}"), op, &a, 400);
        assert!(
            answer["message"].as_str().is_some_and(|m| m.contains(": ")),
            "a 400 names its field: {answer}"
        );
    }
}

/// Mints `body` as `token` at `addr`, after checking that the body is one
/// the document accepts, and returns the 201's body.
async fn mint_valid(seen: &mut Seen<'_>, addr: SocketAddr, token: &str, body: &Value) -> Value {
    if let Err(e) = seen.contract.check_request(Op::Mint, body) {
        panic!("a body sent for a success breaks the documented request schema: {e}");
    }
    let a = post_text(addr, MINT, token, &body.to_string()).await;
    seen.expect(&format!("mint {body}"), Op::Mint, &a, 201)
}

/// Revokes `body` as `token` at `addr`, after checking that the body is one
/// the document accepts, and returns the 200's body.
async fn revoke_valid(seen: &mut Seen<'_>, addr: SocketAddr, token: &str, body: &Value) -> Value {
    if let Err(e) = seen.contract.check_request(Op::Revoke, body) {
        panic!("a body sent for a success breaks the documented request schema: {e}");
    }
    let a = post_text(addr, REVOKE, token, &body.to_string()).await;
    seen.expect(&format!("revoke {body}"), Op::Revoke, &a, 200)
}

/// The request body examples of `op` in the document.
fn request_examples(contract: &Contract, op: Op) -> Vec<Value> {
    let pointer = format!("{}/requestBody/content/application~1json/examples", op.pointer());
    let examples = contract.doc.pointer(&pointer).and_then(Value::as_object);
    examples
        .into_iter()
        .flat_map(|e| e.values())
        .map(|example| example["value"].clone())
        .collect()
}

// ---------------------------------------------------------------------------
// The tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_mint_status_is_what_the_gateway_answers() {
    let contract = Contract::committed();
    let mut seen = Seen::new(&contract);
    let gw = Gateways::start().await;
    let (main, portal) = (gw.main.public_addr, gw.portal.public_addr);

    // 201: ToolJet's fields, the additions, a scoped token in its scope,
    // and the document's own examples.
    let minted = mint_valid(
        &mut seen,
        main,
        API_TOKEN,
        &json!({"email": "alice@example.com", "appId": APP_A}),
    )
    .await;
    let pat = minted["personalAccessToken"].as_str().unwrap_or_default();
    assert_eq!(
        minted["redirectUrl"],
        format!("{PUBLIC_URL}/embed-apps/{APP_A}?personal-access-token={pat}")
    );
    for body in [
        json!({"email": "Alice@Example.com", "appId": APP_A.to_uppercase(), "sessionExpiry": 30, "patExpiry": 600}),
        json!({"email": "alice@example.com", "appId": APP_A, "attributes": {"dept": "ops", "level": 3, "vip": true}}),
    ] {
        mint_valid(&mut seen, main, API_TOKEN, &body).await;
    }
    mint_valid(
        &mut seen,
        main,
        SCOPED_TOKEN,
        &json!({"email": "carol@partner.example", "appId": APP_B}),
    )
    .await;
    let vouched = json!({
        "email": "zoe@customer.example",
        "appId": APP_A,
        "sessionExpiry": 60,
        "patExpiry": 300,
        "groups": ["sales", "org:customer-42"],
        "attributes": {"department": "Sales EMEA", "seats": 25, "ratio": 0.5, "beta": true}
    });
    mint_valid(&mut seen, portal, API_TOKEN, &vouched).await;
    let examples = request_examples(&contract, Op::Mint);
    assert_eq!(examples.len(), 2, "the mint examples of the document");
    for example in &examples {
        let at = if example.get("groups").is_some() { portal } else { main };
        mint_valid(&mut seen, at, API_TOKEN, example).await;
    }

    // 400: bodies the schema refuses.
    let a = APP_A;
    let many_keys: serde_json::Map<String, Value> = (0..33).map(|i| (format!("k{i}"), json!(i))).collect();
    schema_refusals_are_400s(
        &mut seen,
        Op::Mint,
        main,
        &[
            json!({"email": "alice@example.com", "appId": a, "extra": 1}),
            json!({"email": "alice@example.com", "appId": a, "session_expiry": 5}),
            json!({"appId": a}),
            json!({"email": "alice@example.com"}),
            json!({"email": 5, "appId": a}),
            json!({"email": null, "appId": a}),
            json!({"email": "alice@example.com", "appId": "nope"}),
            json!({"email": "alice@example.com", "appId": ""}),
            json!({"email": "alice@example.com", "appId": a, "sessionExpiry": 0}),
            json!({"email": "alice@example.com", "appId": a, "sessionExpiry": -5}),
            json!({"email": "alice@example.com", "appId": a, "sessionExpiry": 1.5}),
            json!({"email": "alice@example.com", "appId": a, "sessionExpiry": "60"}),
            json!({"email": "alice@example.com", "appId": a, "patExpiry": null}),
            json!({"email": "alice@example.com", "appId": a, "patExpiry": true}),
            json!({"email": "alice@example.com", "appId": a, "groups": "sales"}),
            json!({"email": "alice@example.com", "appId": a, "attributes": []}),
            json!({"email": "alice@example.com", "appId": a, "attributes": {"a b": 1}}),
            json!({"email": "alice@example.com", "appId": a, "attributes": {"a": null}}),
            json!({"email": "alice@example.com", "appId": a, "attributes": {"a": {"b": 1}}}),
            json!({"email": "alice@example.com", "appId": a, "attributes": many_keys}),
            json!([1]),
            json!("alice@example.com"),
        ],
    )
    .await;
    let many_groups: Vec<String> = (0..33).map(|i| format!("g{i}")).collect();
    schema_refusals_are_400s(
        &mut seen,
        Op::Mint,
        portal,
        &[
            json!({"email": "not an address", "appId": a}),
            json!({"email": "zoe@customer.example", "appId": a, "groups": many_groups}),
            json!({"email": "zoe@customer.example", "appId": a, "groups": ["a b"]}),
            json!({"email": "zoe@customer.example", "appId": a, "groups": ["g".repeat(65)]}),
            json!({"email": "zoe@customer.example", "appId": a, "groups": [5]}),
        ],
    )
    .await;
    // 400s that the document describes beyond its schema, for bodies the
    // schema accepts: limits that are settings, the identity mode, the size
    // of the attributes, and expiries with a fraction or an exponent (JSON
    // Schema counts `60.0` as an integer; the gateway does not).
    for (what, at, body) in [
        (
            "sessionExpiry past its configured maximum",
            main,
            body_with(", \"sessionExpiry\": 43201"),
        ),
        (
            "patExpiry past its configured maximum",
            main,
            body_with(", \"patExpiry\": 86401"),
        ),
        (
            "sessionExpiry written 60.0",
            main,
            body_with(", \"sessionExpiry\": 60.0"),
        ),
        ("patExpiry written 1e2", main, body_with(", \"patExpiry\": 1e2")),
        (
            "groups with users = \"config\"",
            main,
            body_with(", \"groups\": [\"sales\"]"),
        ),
        (
            "attributes over 2048 bytes",
            main,
            body_with(&format!(", \"attributes\": {{\"a\": \"{}\"}}", "x".repeat(2048))),
        ),
        (
            "an email over 254 bytes with users = \"portal\"",
            portal,
            format!(
                "{{\"email\": \"{}@example.com\", \"appId\": \"{APP_A}\"}}",
                "a".repeat(243)
            ),
        ),
    ] {
        let parsed: Value = serde_json::from_str(&body).expect("a JSON body");
        let accepted = contract.check_request(Op::Mint, &parsed);
        assert!(
            accepted.is_ok(),
            "{what}: belongs with the schema's refusals: {accepted:?}"
        );
        let r = post_text(at, MINT, API_TOKEN, &body).await;
        seen.expect(what, Op::Mint, &r, 400);
    }
    // And bodies that are no JSON at all.
    for (what, body) in [("malformed JSON", "{\"email\": "), ("an empty body", "")] {
        let r = post_text(main, MINT, API_TOKEN, body).await;
        seen.expect(what, Op::Mint, &r, 400);
    }

    // 403: a scoped token outside its scope; a user the app does not admit.
    for (what, token, body) in [
        (
            "a scoped token, another app",
            SCOPED_TOKEN,
            json!({"email": "carol@partner.example", "appId": APP_A}),
        ),
        (
            "a scoped token, another email",
            SCOPED_TOKEN,
            json!({"email": "alice@example.com", "appId": APP_B}),
        ),
        (
            "a user app A does not admit",
            API_TOKEN,
            json!({"email": "eve@other.example", "appId": APP_A}),
        ),
    ] {
        let r = post_text(main, MINT, token, &body.to_string()).await;
        seen.expect(what, Op::Mint, &r, 403);
    }

    // 404: no such user, no such app.
    for body in [
        json!({"email": "nobody@example.com", "appId": APP_A}),
        json!({"email": "alice@example.com", "appId": UNKNOWN_APP}),
    ] {
        let r = post(main, MINT, &body).await;
        seen.expect(&format!("{body}"), Op::Mint, &r, 404);
    }

    refusals_before_the_body(&mut seen, Op::Mint, &gw).await;

    // 429: per user, then per API token.
    let limited = gw.limited.public_addr;
    let alice = json!({"email": "alice@example.com", "appId": APP_A}).to_string();
    let carol = json!({"email": "carol@partner.example", "appId": APP_A}).to_string();
    let dave = json!({"email": "dave@other.example", "appId": APP_A}).to_string();
    seen.expect(
        "alice's first mint",
        Op::Mint,
        &post_text(limited, MINT, API_TOKEN, &alice).await,
        201,
    );
    let r = post_text(limited, MINT, API_TOKEN_2, &alice).await;
    seen.expect("alice's second mint in a minute", Op::Mint, &r, 429);
    seen.expect(
        "carol's mint",
        Op::Mint,
        &post_text(limited, MINT, API_TOKEN, &carol).await,
        201,
    );
    let r = post_text(limited, MINT, API_TOKEN, &dave).await;
    seen.expect("the token's third mint in a minute", Op::Mint, &r, 429);

    // 503: the store is not there.
    let r = post(
        gw.storeless.public_addr,
        MINT,
        &json!({"email": "alice@example.com", "appId": APP_A}),
    )
    .await;
    seen.expect("a mint without the store", Op::Mint, &r, 503);

    seen.assert_every_status_of(Op::Mint);
}

/// A mint body for alice on app A, with `extra` JSON members appended.
fn body_with(extra: &str) -> String {
    format!("{{\"email\": \"alice@example.com\", \"appId\": \"{APP_A}\"{extra}}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_revoke_status_is_what_the_gateway_answers() {
    let contract = Contract::committed();
    let mut seen = Seen::new(&contract);
    let gw = Gateways::start().await;
    let main = gw.main.public_addr;

    // 200, with counts that say what was ended.
    mint_pat(main, "alice@example.com", APP_A).await;
    mint_pat(main, "alice@example.com", APP_B).await;
    let one = revoke_valid(
        &mut seen,
        main,
        API_TOKEN,
        &json!({"email": "alice@example.com", "appId": APP_A}),
    )
    .await;
    assert_eq!(one, json!({"revokedSessions": 0, "revokedTokens": 1}));
    let rest = revoke_valid(
        &mut seen,
        main,
        API_TOKEN,
        &json!({"email": "Alice@Example.com", "appId": null}),
    )
    .await;
    assert_eq!(rest, json!({"revokedSessions": 0, "revokedTokens": 1}));
    let session = open_session(main, "carol@partner.example", APP_B).await;
    assert!(!session.is_empty());
    let scoped = revoke_valid(
        &mut seen,
        main,
        SCOPED_TOKEN,
        &json!({"email": "carol@partner.example"}),
    )
    .await;
    assert_eq!(scoped, json!({"revokedSessions": 1, "revokedTokens": 0}));
    revoke_valid(&mut seen, main, API_TOKEN, &json!({"email": "gone@nowhere.example"})).await;
    for example in request_examples(&contract, Op::Revoke) {
        revoke_valid(&mut seen, main, API_TOKEN, &example).await;
    }

    // 400: bodies the schema refuses, and bodies that are no JSON object.
    schema_refusals_are_400s(
        &mut seen,
        Op::Revoke,
        main,
        &[
            json!({"appId": APP_A}),
            json!({"email": "alice@example.com", "extra": 1}),
            json!({"email": 5}),
            json!({"email": ""}),
            json!({"email": "  "}),
            json!({"email": "alice@example.com", "appId": "x"}),
            json!({"email": "alice@example.com", "appId": ""}),
            json!({"email": "alice@example.com", "appId": 7}),
            json!([1]),
        ],
    )
    .await;
    for (what, body) in [("malformed JSON", "{\"email\": "), ("an empty body", "")] {
        let r = post_text(main, REVOKE, API_TOKEN, body).await;
        seen.expect(what, Op::Revoke, &r, 400);
    }

    // 403: a scoped token outside its scope.
    for (what, body) in [
        ("another email", json!({"email": "alice@example.com"})),
        ("another app", json!({"email": "carol@partner.example", "appId": APP_A})),
    ] {
        let r = post_text(main, REVOKE, SCOPED_TOKEN, &body.to_string()).await;
        seen.expect(&format!("a scoped token, {what}"), Op::Revoke, &r, 403);
    }

    refusals_before_the_body(&mut seen, Op::Revoke, &gw).await;

    // 503: the store is not there.
    let r = post(gw.storeless.public_addr, REVOKE, &json!({"email": "alice@example.com"})).await;
    seen.expect("a revocation without the store", Op::Revoke, &r, 503);

    seen.assert_every_status_of(Op::Revoke);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_document_is_the_committed_file_and_needs_no_token() {
    let contract = Contract::committed();
    let mut seen = Seen::new(&contract);
    let up = echo_upstream("app").await;
    let gw = opts(&up).start().await;
    let addr = gw.public_addr;

    for (what, headers) in [
        ("without Authorization", vec![]),
        ("with a wrong token", vec![("authorization", "Basic not-the-token")]),
    ] {
        let a = call(addr, "GET", DOC, &headers, empty()).await;
        seen.expect(what, Op::GetDocument, &a, 200);
        assert!(
            a.body == DOCUMENT.as_bytes(),
            "{what}: the served document is not the committed src/api/openapi.json"
        );
    }
    let head = call(addr, "HEAD", DOC, &[], empty()).await;
    seen.expect("HEAD", Op::HeadDocument, &head, 200);
    assert_eq!(head.header("content-length"), Some(DOCUMENT.len().to_string().as_str()));
    for method in ["POST", "PUT", "DELETE"] {
        let a = call(addr, method, DOC, &[], full("{}")).await;
        seen.expect(method, Op::GetDocument, &a, 405);
    }
    seen.assert_every_status_of(Op::GetDocument);
    seen.assert_every_status_of(Op::HeadDocument);
    assert_eq!(up.requests(), 0, "the document was asked of an upstream");
}

#[test]
fn every_schema_compiles_and_every_example_fits_its_schema() {
    let contract = Contract::committed();
    let schemas = contract.doc["components"]["schemas"]
        .as_object()
        .expect("components.schemas");
    for name in schemas.keys() {
        contract.validator(&format!("/components/schemas/{}", escape(name)));
    }
    // Examples beside a schema: in a media type (`examples: {name: {value}}`)
    // or in the schema itself (`examples: [..]`).
    let mut checked = 0;
    let mut stack = vec![(String::new(), &contract.doc)];
    while let Some((at, value)) = stack.pop() {
        let Some(object) = value.as_object() else {
            if let Some(items) = value.as_array() {
                stack.extend(items.iter().enumerate().map(|(i, v)| (format!("{at}/{i}"), v)));
            }
            continue;
        };
        if let (Some(_), Some(examples)) = (object.get("schema"), object.get("examples").and_then(Value::as_object)) {
            for (name, example) in examples {
                let result = contract.validate(&format!("{at}/schema"), &example["value"]);
                assert!(result.is_ok(), "{at}: example {name}: {result:?}");
                checked += 1;
            }
        }
        if let Some(examples) = object.get("examples").and_then(Value::as_array) {
            if !at.ends_with("/properties") {
                for example in examples {
                    let result = contract.validate(&at, example);
                    assert!(result.is_ok(), "{at}: example {example}: {result:?}");
                    checked += 1;
                }
            }
        }
        stack.extend(object.iter().map(|(k, v)| (format!("{at}/{}", escape(k)), v)));
    }
    assert!(checked >= 10, "only {checked} examples were found to check");
    // Formats are asserted, not only annotations: a PAT response whose
    // `expiresAt` and `redirectUrl` only match their patterns is refused.
    let pat = format!("pat_{}", "a".repeat(64));
    let almost = json!({
        "personalAccessToken": pat,
        "redirectUrl": format!("relative/embed-apps/{APP_A}?personal-access-token={pat}"),
        "expiresAt": "2026-13-45T99:99:99Z",
    });
    let refused = contract.validate("/components/schemas/MintCreated", &almost);
    let message = refused.err().unwrap_or_default();
    assert!(
        message.contains("date-time") && message.contains("uri"),
        "formats are not asserted: {message:?}"
    );
}

/// The check is only worth its passes if it fails where the document and
/// the gateway part: real answers, read against documents changed in one
/// way each, must each be refused (and pass against the committed one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_that_the_document_does_not_describe_are_refused() {
    let up = echo_upstream("app").await;
    let gw = opts(&up).start().await;
    let addr = gw.public_addr;
    let created = post(addr, MINT, &json!({"email": "alice@example.com", "appId": APP_A})).await;
    let unauthorized = post_text(addr, MINT, "not-the-token", "{}").await;
    let revoked = post(addr, REVOKE, &json!({"email": "alice@example.com"})).await;
    let document = call(addr, "GET", DOC, &[], empty()).await;
    let answers = [
        (Op::Mint, &created),
        (Op::Mint, &unauthorized),
        (Op::Revoke, &revoked),
        (Op::GetDocument, &document),
    ];
    let committed = Contract::committed();
    for (op, answer) in answers {
        assert_eq!(committed.check(op, answer), Ok(()), "{answer:?}");
    }

    // Each change: the value at a JSON pointer replaced.
    let doc = &committed.doc;
    let at = |pointer: &str| doc.pointer(pointer).cloned().unwrap_or(Value::Null);
    let mint = Op::Mint.pointer();
    let revoke = Op::Revoke.pointer();
    let mut without_401 = at(&format!("{mint}/responses"));
    if let Some(responses) = without_401.as_object_mut() {
        responses.remove("401");
    }
    let mut one_more_header = at(&format!("{revoke}/responses/200/headers"));
    one_more_header["X-Never-Sent"] = json!({"required": true, "schema": {"type": "string"}});
    let problem = json!({
        "application/problem+json": at("/components/responses/Unauthorized/content/application~1json")
    });
    let changes = [
        (
            "the 401 is not listed",
            Op::Mint,
            &unauthorized,
            format!("{mint}/responses"),
            without_401,
        ),
        (
            "the PAT is 32 hex digits",
            Op::Mint,
            &created,
            "/components/schemas/MintCreated/properties/personalAccessToken/pattern".to_owned(),
            json!("^pat_[0-9a-f]{32}$"),
        ),
        (
            "the 201 has one more required field",
            Op::Mint,
            &created,
            "/components/schemas/MintCreated/required".to_owned(),
            json!(["personalAccessToken", "redirectUrl", "expiresAt", "sessionExpiresAt"]),
        ),
        (
            "another challenge",
            Op::Mint,
            &unauthorized,
            "/components/headers/WwwAuthenticate/schema/const".to_owned(),
            json!("Bearer"),
        ),
        (
            "a required header the gateway does not send",
            Op::Revoke,
            &revoked,
            format!("{revoke}/responses/200/headers"),
            one_more_header,
        ),
        (
            "counts as strings",
            Op::Revoke,
            &revoked,
            "/components/schemas/RevokeResult/properties/revokedTokens".to_owned(),
            json!({"type": "string"}),
        ),
        (
            "errors as problem+json",
            Op::Mint,
            &unauthorized,
            "/components/responses/Unauthorized/content".to_owned(),
            problem,
        ),
        (
            "a shorter cache lifetime",
            Op::GetDocument,
            &document,
            "/components/headers/PublicFiveMinutes/schema/const".to_owned(),
            json!("public, max-age=60"),
        ),
    ];
    for (what, op, answer, pointer, value) in changes {
        let mut changed = doc.clone();
        let slot = changed
            .pointer_mut(&pointer)
            .unwrap_or_else(|| panic!("{what}: nothing at {pointer}"));
        assert_ne!(*slot, value, "{what}: the change changes nothing");
        *slot = value;
        let refused = Contract::new(changed).check(op, answer);
        assert!(
            refused.is_err(),
            "{what}: a document that disagrees with the gateway passed"
        );
    }
}
