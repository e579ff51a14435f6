//! Identity vouched for by the portal (issue 7): `[identity] users =
//! "portal"`, `groups` and `attributes` in the mint body, the upstream's
//! `X-Embed-Groups`, `X-Embed-Attr-*` and the assertion's `groups` and
//! `attrs`; API tokens scoped to apps and emails (`[[api.tokens]]`); the
//! raised `sessionExpiry` maximum.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use crate::common::*;
use serde_json::{json, Value};

const MINT: &str = "/api/ext/users/personal-access-token";
const REVOKE: &str = "/api/ext/users/sessions/revoke";

/// Admits `*@portal.example` and alice; sends `department`, `level`, `vip`,
/// `city`, `note` and `absent` as `X-Embed-Attr-*` when present and
/// header-safe.
const APP_ATTR: &str = "a77a0000-0000-4000-8000-0000000000a1";
/// Admits group `sales` only.
const APP_SALES: &str = "5a1e5000-0000-4000-8000-0000000000b2";
const ATTRIBUTE_HEADERS: [&str; 6] = ["department", "level", "vip", "city", "note", "absent"];

/// `[[api.tokens]]` `acme-portal`: app A only, `*@partner.example` only.
const ACME_TOKEN: &str = "eg-test-scoped-acme-3c9d0e1f2a4b5c6d";
const ACME: &str = "acme-portal";
/// `[[api.tokens]]` `globex-portal`: apps A and B, alice and carol.
const GLOBEX_TOKEN: &str = "eg-test-scoped-globex-7e8f9a0b1c2d3e";
const GLOBEX: &str = "globex-portal";

/// The embed config on `up` plus [`APP_ATTR`] and [`APP_SALES`], in portal
/// mode or not (then `[identity]` is absent: config mode by default).
fn opts(up: &Upstream, portal: bool) -> EmbedOpts {
    let mut o = EmbedOpts::new(&up.url(), &up.url());
    let headers: Vec<String> = ATTRIBUTE_HEADERS.iter().map(|h| format!("\"{h}\"")).collect();
    o.extra = format!(
        "[[apps]]\n\
         id = \"{APP_ATTR}\"\n\
         upstream = \"{u}\"\n\
         allow_users = [\"*@portal.example\", \"alice@example.com\"]\n\
         allow_groups = []\n\
         frame_ancestors = []\n\
         attribute_headers = [{headers}]\n\n\
         [[apps]]\n\
         id = \"{APP_SALES}\"\n\
         upstream = \"{u}\"\n\
         allow_users = []\n\
         allow_groups = [\"sales\"]\n\
         frame_ancestors = []\n\n\
         {identity}",
        u = up.url(),
        headers = headers.join(", "),
        identity = if portal { "[identity]\nusers = \"portal\"\n" } else { "" },
    );
    o
}

/// [`opts`] plus the two scoped tokens.
fn scoped_opts(up: &Upstream) -> EmbedOpts {
    let mut o = opts(up, false);
    o.api_extra = format!(
        "\n[[api.tokens]]\n\
         name = \"{ACME}\"\n\
         sha256 = \"{acme}\"\n\
         apps = [\"{APP_A}\"]\n\
         emails = [\"*@partner.example\"]\n\n\
         [[api.tokens]]\n\
         name = \"{GLOBEX}\"\n\
         sha256 = \"{globex}\"\n\
         apps = [\"{APP_A}\", \"{APP_B}\"]\n\
         emails = [\"alice@example.com\", \"carol@partner.example\"]\n",
        acme = sha256_hex(ACME_TOKEN),
        globex = sha256_hex(GLOBEX_TOKEN),
    );
    o
}

async fn mint_as(addr: SocketAddr, token: &str, body: &Value) -> Reply {
    post_json(addr, MINT, Some(token), &body.to_string()).await
}

async fn revoke_as(addr: SocketAddr, token: &str, body: &Value) -> Reply {
    post_json(addr, REVOKE, Some(token), &body.to_string()).await
}

/// Mints `body` with [`API_TOKEN`] (asserting the 201), exchanges the PAT
/// (asserting the 303) and returns the session cookie's value.
async fn session_for(addr: SocketAddr, body: &Value) -> String {
    let r = mint(addr, body).await;
    assert_eq!(r.status, 201, "mint {body}: {r:?} {}", r.text());
    let pat = r.json()["personalAccessToken"].as_str().unwrap().to_string();
    let app = body["appId"].as_str().unwrap();
    let r = exchange(addr, app, &pat).await;
    assert_eq!(r.status, 303, "exchange for {body}: {r:?} {}", r.text());
    set_cookie_value(&r, "embedgate_session").expect("the exchange set no embedgate_session cookie")
}

/// Every `x-embed-attr-*` header the upstream saw, by lowercased name.
fn attr_headers(e: &Echo) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for name in e.header_names() {
        let lower = name.to_ascii_lowercase();
        if lower.starts_with("x-embed-attr-") && !out.contains_key(&lower) {
            out.insert(lower.clone(), e.headers(&lower));
        }
    }
    out
}

/// The `groups` claim as a set.
fn groups_claim(claims: &Value) -> BTreeSet<String> {
    claims["groups"]
        .as_array()
        .unwrap_or_else(|| panic!("no groups array in the assertion: {claims}"))
        .iter()
        .map(|g| {
            g.as_str()
                .unwrap_or_else(|| panic!("a non-string group: {claims}"))
                .to_string()
        })
        .collect()
}

/// The upstream's `X-Embed-Assertion`, verified against the gateway's JWKS;
/// returns its claims.
async fn verified_claims(addr: SocketAddr, e: &Echo) -> Value {
    let values = e.headers("x-embed-assertion");
    assert_eq!(values.len(), 1, "X-Embed-Assertion: {values:?}");
    let jwks = fetch_jwks(addr).await;
    verify_jwt(&jwks, &values[0]).unwrap_or_else(|why| panic!("the assertion does not verify: {why}"))
}

/// Mints `body` with [`API_TOKEN`] and asserts the SPEC §3 400 whose message
/// starts with one of `prefixes`.
async fn assert_400_starting(addr: SocketAddr, what: &str, body: &Value, prefixes: &[String]) {
    let r = mint(addr, body).await;
    assert_eq!(r.status, 400, "{what}: body {body}: {r:?} {}", r.text());
    let msg = assert_error_body(&r, 400, "Bad Request");
    assert!(
        prefixes.iter().any(|p| msg.starts_with(p.as_str())),
        "{what}: the message {msg:?} does not start with any of {prefixes:?}"
    );
}

// ---------------------------------------------------------------------------
// Portal mode: the identity the portal vouches for
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_mode_mints_for_unconfigured_email_with_vouched_identity() {
    let up = echo_upstream("attr").await;
    let gw = opts(&up, true).start().await;
    let addr = gw.public_addr;
    let attributes = json!({
        "department": "R&D",
        "level": 3,
        "vip": true,
        "city": "Zürich",
        "note": "line one\nline two",
        "tier": "gold",
    });
    let body = json!({
        "email": "Zoe@Portal.Example",
        "appId": APP_ATTR,
        "groups": ["sales", "team:red"],
        "attributes": attributes,
    });
    let s = session_for(addr, &body).await;

    // What the client claims about itself is dropped, attribute headers too.
    let cookie = format!("embedgate_session={s}");
    let e = get_with(
        addr,
        &format!("/embed-apps/{APP_ATTR}/who"),
        &[
            ("cookie", &cookie),
            ("x-embed-user", "mallory@evil.example"),
            ("x-embed-groups", "admins"),
            ("x-embed-attr-department", "Spoofed"),
            ("x-embed-attr-role", "admin"),
        ],
    )
    .await
    .echo();
    assert_eq!(e.uri(), "/who");
    assert_eq!(e.headers("x-embed-user"), ["zoe@portal.example"]);
    assert_eq!(e.headers("x-embed-app"), [APP_ATTR]);
    assert_eq!(groups_header(&e), set_of(&["sales", "team:red"]));
    // department (a string), level (a number) and vip (a boolean) as text;
    // city (non-ASCII) and note (a newline) are not header-safe; tier is no
    // header of this app; absent is not given; role was the client's.
    let mut want = BTreeMap::new();
    want.insert("x-embed-attr-department".to_string(), vec!["R&D".to_string()]);
    want.insert("x-embed-attr-level".to_string(), vec!["3".to_string()]);
    want.insert("x-embed-attr-vip".to_string(), vec!["true".to_string()]);
    assert_eq!(attr_headers(&e), want, "the X-Embed-Attr-* headers: {:?}", e.0);

    let claims = verified_claims(addr, &e).await;
    assert_eq!(claims["sub"], "zoe@portal.example", "{claims}");
    assert_eq!(claims["aud"], APP_ATTR, "{claims}");
    assert_eq!(claims["iss"], PUBLIC_URL, "{claims}");
    assert_eq!(groups_claim(&claims), set_of(&["sales", "team:red"]), "{claims}");
    // Every attribute, header-safe or not, exactly as given.
    assert_eq!(claims["attrs"], attributes, "{claims}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_mode_adds_configured_groups_to_vouched_groups() {
    let up = echo_upstream("attr").await;
    let gw = opts(&up, true).start().await;
    let addr = gw.public_addr;
    // alice is configured with sales and eng; the portal vouches support.
    let s = session_for(
        addr,
        &json!({"email": "alice@example.com", "appId": APP_ATTR, "groups": ["support"]}),
    )
    .await;
    let e = embed_get(addr, APP_ATTR, "/", &s).await.echo();
    assert_eq!(e.headers("x-embed-user"), ["alice@example.com"]);
    let want = set_of(&["support", "sales", "eng"]);
    assert_eq!(groups_header(&e), want);
    let claims = verified_claims(addr, &e).await;
    assert_eq!(groups_claim(&claims), want, "{claims}");

    // The same address spelled otherwise is the same configured user.
    let s = session_for(
        addr,
        &json!({"email": "ALICE@Example.com", "appId": APP_ATTR, "groups": ["ops"]}),
    )
    .await;
    let e = embed_get(addr, APP_ATTR, "/", &s).await.echo();
    assert_eq!(e.headers("x-embed-user"), ["alice@example.com"]);
    assert_eq!(groups_header(&e), set_of(&["ops", "sales", "eng"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vouched_groups_feed_allow_groups() {
    let up = echo_upstream("sales").await;
    let gw = opts(&up, true).start().await;
    let addr = gw.public_addr;

    // Vouched into sales: admitted, and the upstream is told so.
    let s = session_for(
        addr,
        &json!({"email": "sam@portal.example", "appId": APP_SALES, "groups": ["sales"]}),
    )
    .await;
    let e = embed_get(addr, APP_SALES, "/x", &s).await.echo();
    assert_eq!(e.headers("x-embed-user"), ["sam@portal.example"]);
    assert_eq!(groups_header(&e), set_of(&["sales"]));

    // Vouched into another group, or none: refused.
    for (what, body) in [
        (
            "vouched into support",
            json!({"email": "sue@portal.example", "appId": APP_SALES, "groups": ["support"]}),
        ),
        (
            "vouched into no group",
            json!({"email": "sue@portal.example", "appId": APP_SALES, "groups": []}),
        ),
        (
            "no groups field",
            json!({"email": "sue@portal.example", "appId": APP_SALES}),
        ),
        (
            "a group that only contains sales",
            json!({"email": "sue@portal.example", "appId": APP_SALES, "groups": ["sales-eu", "presales"]}),
        ),
    ] {
        let r = mint(addr, &body).await;
        assert_eq!(r.status, 403, "{what}: {r:?} {}", r.text());
        assert_error_body(&r, 403, "Forbidden");
    }

    // A configured user's own groups still count: dave is in sales.
    let s = session_for(addr, &json!({"email": "dave@other.example", "appId": APP_SALES})).await;
    assert_eq!(embed_get(addr, APP_SALES, "/", &s).await.status, 200);
    assert_eq!(up.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attributes_reach_the_assertion_only_when_given() {
    let up = echo_upstream("attr").await;
    let gw = opts(&up, true).start().await;
    let addr = gw.public_addr;

    // No attributes: no attrs claim, no attribute header.
    let s = session_for(
        addr,
        &json!({"email": "zoe@portal.example", "appId": APP_ATTR, "groups": ["sales"]}),
    )
    .await;
    let e = embed_get(addr, APP_ATTR, "/", &s).await.echo();
    assert!(attr_headers(&e).is_empty(), "{:?}", e.0);
    let claims = verified_claims(addr, &e).await;
    assert!(
        claims.get("attrs").is_none(),
        "an attrs claim without attributes: {claims}"
    );

    // An app without attribute_headers gets them in the assertion only.
    let attributes = json!({"department": "Sales", "level": 2});
    let s = session_for(
        addr,
        &json!({"email": "sam@portal.example", "appId": APP_SALES, "groups": ["sales"], "attributes": attributes}),
    )
    .await;
    let e = embed_get(addr, APP_SALES, "/", &s).await.echo();
    assert!(attr_headers(&e).is_empty(), "{:?}", e.0);
    let claims = verified_claims(addr, &e).await;
    assert_eq!(claims["attrs"], attributes, "{claims}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_limits_are_inclusive() {
    let up = echo_upstream("attr").await;
    let gw = opts(&up, true).start().await;
    let addr = gw.public_addr;
    let groups: Vec<String> = (0..32).map(|i| format!("g{i:02}")).collect();
    let mut many_keys = serde_json::Map::new();
    for i in 0..32 {
        many_keys.insert(format!("k{i:02}"), json!(i));
    }
    let long_key = "k".repeat(64);
    // One value that brings the object to about 2000 bytes serialised.
    let big = json!({"blob": "x".repeat(1980)});
    assert!(big.to_string().len() <= 2048 && big.to_string().len() > 1900);
    let email_254 = format!("{}@portal.example", "z".repeat(254 - "@portal.example".len()));
    assert_eq!(email_254.len(), 254);
    for (what, body) in [
        (
            "32 groups",
            json!({"email": "zoe@portal.example", "appId": APP_ATTR, "groups": groups}),
        ),
        (
            "a 64-character group of every allowed character",
            json!({"email": "zoe@portal.example", "appId": APP_ATTR,
                   "groups": [format!("Az09._:@-{}", "g".repeat(55))]}),
        ),
        (
            "32 attributes",
            json!({"email": "zoe@portal.example", "appId": APP_ATTR, "attributes": many_keys}),
        ),
        (
            "a 64-character key of every allowed character",
            json!({"email": "zoe@portal.example", "appId": APP_ATTR,
                   "attributes": {format!("Az09_-{}", &long_key[6..]): "v"}}),
        ),
        (
            "about 2000 bytes of attributes",
            json!({"email": "zoe@portal.example", "appId": APP_ATTR, "attributes": big}),
        ),
        (
            "an empty attributes object",
            json!({"email": "zoe@portal.example", "appId": APP_ATTR, "attributes": {}}),
        ),
        ("a 254-byte email", json!({"email": email_254, "appId": APP_ATTR})),
    ] {
        let r = mint(addr, &body).await;
        assert_eq!(r.status, 201, "{what}: {r:?} {}", r.text());
    }
    // The 32 groups arrive whole.
    let s = session_for(
        addr,
        &json!({"email": "zoe@portal.example", "appId": APP_ATTR, "groups": groups}),
    )
    .await;
    let e = embed_get(addr, APP_ATTR, "/", &s).await.echo();
    let want: BTreeSet<String> = groups.iter().cloned().collect();
    assert_eq!(groups_header(&e), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_groups_are_400_naming_groups() {
    let up = echo_upstream("attr").await;
    let gw = opts(&up, true).start().await;
    let too_many: Vec<String> = (0..33).map(|i| format!("g{i:02}")).collect();
    let cases: Vec<(&str, Value)> = vec![
        ("a string, not an array", json!("sales")),
        ("an object, not an array", json!({"sales": true})),
        ("a number, not an array", json!(5)),
        ("null", Value::Null),
        ("33 entries", json!(too_many)),
        ("an empty string", json!([""])),
        ("65 characters", json!(["g".repeat(65)])),
        ("a space", json!(["two words"])),
        ("a comma", json!(["a,b"])),
        ("a slash", json!(["a/b"])),
        ("a newline", json!(["a\nb"])),
        ("non-ASCII", json!(["vertrieb-zürich"])),
        ("a number entry", json!([5])),
        ("a null entry", json!([null])),
        ("a boolean entry", json!([true])),
        ("a nested array", json!([["sales"]])),
    ];
    for (what, groups) in cases {
        let body = json!({"email": "zoe@portal.example", "appId": APP_ATTR, "groups": groups});
        assert_400_starting(gw.public_addr, what, &body, &["groups:".to_string()]).await;
    }
    assert_eq!(up.requests(), 0);
}

/// How a bad attributes value must be named: the whole field, or (for a
/// problem of one key) `attributes.<key>:`, or either (a bad key name).
enum Names {
    Field,
    Key(&'static str),
    FieldOrKey(String),
}

fn attribute_cases() -> Vec<(&'static str, Value, Names)> {
    let mut too_many = serde_json::Map::new();
    for i in 0..33 {
        too_many.insert(format!("k{i:02}"), json!(i));
    }
    let mut spread = serde_json::Map::new();
    for i in 0..20 {
        spread.insert(format!("k{i:02}"), json!("y".repeat(110)));
    }
    assert!(Value::Object(spread.clone()).to_string().len() > 2048);
    let long_key = "k".repeat(65);
    vec![
        ("a string, not an object", json!("dept=sales"), Names::Field),
        (
            "an array, not an object",
            json!([{"department": "Sales"}]),
            Names::Field,
        ),
        ("a number, not an object", json!(7), Names::Field),
        (
            "an array value",
            json!({"department": ["Sales"]}),
            Names::Key("department"),
        ),
        (
            "a nested object",
            json!({"department": {"name": "Sales"}}),
            Names::Key("department"),
        ),
        ("a null value", json!({"department": null}), Names::Key("department")),
        ("33 keys", Value::Object(too_many), Names::Field),
        (
            "a key with a space",
            json!({"bad key": "v"}),
            Names::FieldOrKey("bad key".into()),
        ),
        ("a key with a dot", json!({"a.b": "v"}), Names::FieldOrKey("a.b".into())),
        (
            "a key with a colon",
            json!({"a:b": "v"}),
            Names::FieldOrKey("a:b".into()),
        ),
        (
            "a non-ASCII key",
            json!({"schlüssel": "v"}),
            Names::FieldOrKey("schlüssel".into()),
        ),
        ("an empty key", json!({"": "v"}), Names::FieldOrKey(String::new())),
        (
            "a 65-character key",
            json!({long_key.clone(): "v"}),
            Names::FieldOrKey(long_key),
        ),
        (
            "one value past 2048 bytes",
            json!({"blob": "x".repeat(2100)}),
            Names::FieldOrKey("blob".into()),
        ),
        (
            "20 values past 2048 bytes together",
            Value::Object(spread),
            Names::Field,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_attributes_are_400_naming_attributes() {
    let up = echo_upstream("attr").await;
    // Attributes are read in both modes: the same refusals in each.
    for portal in [true, false] {
        let gw = opts(&up, portal).start().await;
        for (what, attributes, names) in attribute_cases() {
            let prefixes = match names {
                Names::Field => vec!["attributes:".to_string()],
                Names::Key(k) => vec![format!("attributes.{k}:")],
                Names::FieldOrKey(k) => vec!["attributes:".to_string(), format!("attributes.{k}:")],
            };
            let email = if portal {
                "zoe@portal.example"
            } else {
                "alice@example.com"
            };
            let body = json!({"email": email, "appId": APP_ATTR, "attributes": attributes});
            let what = format!("{what} (portal mode: {portal})");
            assert_400_starting(gw.public_addr, &what, &body, &prefixes).await;
        }
    }
    assert_eq!(up.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_mode_refuses_malformed_emails() {
    let up = echo_upstream("attr").await;
    let gw = opts(&up, true).start().await;
    let too_long = format!("{}@portal.example", "z".repeat(255 - "@portal.example".len()));
    assert_eq!(too_long.len(), 255);
    for (what, email) in [
        ("no @", "zoe.portal.example".to_string()),
        ("two @", "zoe@home@portal.example".to_string()),
        ("255 bytes", too_long),
        ("a space", "zoe smith@portal.example".to_string()),
        ("a tab", "zoe\t@portal.example".to_string()),
        // Inside the address: the API trims string fields at their ends.
        ("a newline", "zoe\n@portal.example".to_string()),
        ("non-ASCII", "zoë@portal.example".to_string()),
        ("empty", String::new()),
    ] {
        let body = json!({"email": email, "appId": APP_ATTR, "groups": ["sales"]});
        assert_400_starting(gw.public_addr, what, &body, &["email:".to_string()]).await;
    }
}

// ---------------------------------------------------------------------------
// Config mode (the default)
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_mode_refuses_unknown_user_with_404() {
    let up = echo_upstream("attr").await;
    let explicit = {
        let mut o = opts(&up, false);
        o.extra.push_str("[identity]\nusers = \"config\"\n");
        o
    };
    for (what, o) in [("default", opts(&up, false)), ("users = \"config\"", explicit)] {
        let gw = o.start().await;
        // Whatever the portal says about them.
        for body in [
            json!({"email": "zoe@portal.example", "appId": APP_ATTR}),
            json!({"email": "zoe@portal.example", "appId": APP_ATTR, "attributes": {"level": 1}}),
        ] {
            let r = mint(gw.public_addr, &body).await;
            let msg = assert_error_body(&r, 404, "Not Found");
            assert!(msg.starts_with("email:"), "{what}: {msg:?}");
        }
        // A configured user still mints.
        let r = mint(
            gw.public_addr,
            &json!({"email": "alice@example.com", "appId": APP_ATTR}),
        )
        .await;
        assert_eq!(r.status, 201, "{what}: {r:?} {}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_mode_refuses_groups_naming_the_field() {
    let up = echo_upstream("attr").await;
    let gw = opts(&up, false).start().await;
    for groups in [json!(["sales"]), json!([]), json!(["admins", "sales"])] {
        // For a configured user, on an app that admits them.
        let body = json!({"email": "alice@example.com", "appId": APP_ATTR, "groups": groups});
        assert_400_starting(gw.public_addr, "groups in config mode", &body, &["groups:".to_string()]).await;
    }
    // A group vouched in config mode never reaches allow_groups: eve is in
    // support only, and APP_SALES wants sales.
    let body = json!({"email": "eve@other.example", "appId": APP_SALES, "groups": ["sales"]});
    assert_400_starting(
        gw.public_addr,
        "eve vouched into sales",
        &body,
        &["groups:".to_string()],
    )
    .await;
    let r = mint(
        gw.public_addr,
        &json!({"email": "eve@other.example", "appId": APP_SALES}),
    )
    .await;
    assert_error_body(&r, 403, "Forbidden");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_mode_accepts_attributes() {
    let up = echo_upstream("attr").await;
    let gw = opts(&up, false).start().await;
    let addr = gw.public_addr;
    let attributes = json!({"department": "Sales", "level": 4.5, "vip": false});
    let s = session_for(
        addr,
        &json!({"email": "alice@example.com", "appId": APP_ATTR, "attributes": attributes}),
    )
    .await;
    let e = embed_get(addr, APP_ATTR, "/", &s).await.echo();
    assert_eq!(e.headers("x-embed-user"), ["alice@example.com"]);
    // Her configured groups, nothing else.
    assert_eq!(groups_header(&e), set_of(&["sales", "eng"]));
    let mut want = BTreeMap::new();
    want.insert("x-embed-attr-department".to_string(), vec!["Sales".to_string()]);
    want.insert("x-embed-attr-level".to_string(), vec!["4.5".to_string()]);
    want.insert("x-embed-attr-vip".to_string(), vec!["false".to_string()]);
    assert_eq!(attr_headers(&e), want, "{:?}", e.0);
    let claims = verified_claims(addr, &e).await;
    assert_eq!(claims["attrs"], attributes, "{claims}");
    assert_eq!(groups_claim(&claims), set_of(&["sales", "eng"]), "{claims}");
}

/// ToolJet's sample portal sends `sessionExpiry: 10000` (minutes); the
/// default maximum is 30 days (43200 minutes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tooljet_sample_session_expiry_is_accepted_by_default() {
    let up = echo_upstream("app").await;
    let gw = EmbedOpts::new(&up.url(), &up.url()).start().await;
    for minutes in [10000, 43200] {
        let body = json!({"email": "alice@example.com", "appId": APP_A, "sessionExpiry": minutes, "patExpiry": 3600});
        let r = mint(gw.public_addr, &body).await;
        assert_eq!(r.status, 201, "sessionExpiry {minutes}: {r:?} {}", r.text());
    }
    let pat = {
        let r = mint(
            gw.public_addr,
            &json!({"email": "alice@example.com", "appId": APP_A, "sessionExpiry": 10000}),
        )
        .await;
        r.json()["personalAccessToken"].as_str().unwrap().to_string()
    };
    assert_eq!(exchange(gw.public_addr, APP_A, &pat).await.status, 303);
    let body = json!({"email": "alice@example.com", "appId": APP_A, "sessionExpiry": 43201});
    assert_400_starting(
        gw.public_addr,
        "sessionExpiry 43201",
        &body,
        &["sessionExpiry:".to_string()],
    )
    .await;
}

// ---------------------------------------------------------------------------
// Scoped API tokens
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_token_mints_only_within_its_apps_and_emails() {
    let up = echo_upstream("app").await;
    let gw = scoped_opts(&up).start().await;
    let addr = gw.public_addr;
    // Inside: carol on A (her domain is acme's), however her address is spelled.
    for email in ["carol@partner.example", "Carol@PARTNER.example"] {
        let r = mint_as(addr, ACME_TOKEN, &json!({"email": email, "appId": APP_A})).await;
        assert_eq!(r.status, 201, "{email} on A with {ACME}: {r:?} {}", r.text());
    }
    // The PAT works like any other.
    let r = mint_as(
        addr,
        ACME_TOKEN,
        &json!({"email": "carol@partner.example", "appId": APP_A}),
    )
    .await;
    let pat = r.json()["personalAccessToken"].as_str().unwrap().to_string();
    assert_eq!(exchange(addr, APP_A, &pat).await.status, 303);

    // Outside its apps (B admits everyone) and outside its emails (A admits
    // alice): 403, though the unscoped token mints both.
    for (what, body) in [
        (
            "carol on B: outside apps",
            json!({"email": "carol@partner.example", "appId": APP_B}),
        ),
        (
            "alice on A: outside emails",
            json!({"email": "alice@example.com", "appId": APP_A}),
        ),
        (
            "dave on A: outside emails",
            json!({"email": "dave@other.example", "appId": APP_A}),
        ),
    ] {
        let r = mint_as(addr, ACME_TOKEN, &body).await;
        assert_eq!(r.status, 403, "{what}: {r:?} {}", r.text());
        assert_error_body(&r, 403, "Forbidden");
        let r = mint_as(addr, API_TOKEN, &body).await;
        assert_eq!(r.status, 201, "{what} with the unscoped token: {r:?} {}", r.text());
    }

    // globex: A and B, alice and carol.
    for (body, status) in [
        (json!({"email": "alice@example.com", "appId": APP_B}), 201),
        (json!({"email": "carol@partner.example", "appId": APP_A}), 201),
        (json!({"email": "dave@other.example", "appId": APP_A}), 403),
        (json!({"email": "eve@other.example", "appId": APP_B}), 403),
    ] {
        let r = mint_as(addr, GLOBEX_TOKEN, &body).await;
        assert_eq!(r.status, status, "{GLOBEX} {body}: {r:?} {}", r.text());
    }
    // A wrong token is still a 401, not a 403.
    let r = mint_as(
        addr,
        "eg-test-scoped-acme-3c9d0e1f2a4b5c6e",
        &json!({"email": "carol@partner.example", "appId": APP_A}),
    )
    .await;
    assert_error_body(&r, 401, "Unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_token_revokes_only_within_its_apps_and_emails() {
    let up = echo_upstream("app").await;
    let gw = scoped_opts(&up).start().await;
    let addr = gw.public_addr;
    let carol_a = open_session(addr, "carol@partner.example", APP_A).await;
    let carol_b = open_session(addr, "carol@partner.example", APP_B).await;
    let alice_a = open_session(addr, "alice@example.com", APP_A).await;

    for (what, body) in [
        (
            "appId outside its apps",
            json!({"email": "carol@partner.example", "appId": APP_B}),
        ),
        ("email outside its emails", json!({"email": "alice@example.com"})),
        (
            "email outside its emails, app inside",
            json!({"email": "alice@example.com", "appId": APP_A}),
        ),
    ] {
        let r = revoke_as(addr, ACME_TOKEN, &body).await;
        assert_eq!(r.status, 403, "{what}: {r:?} {}", r.text());
        assert_error_body(&r, 403, "Forbidden");
    }
    // Nothing was revoked by the refusals.
    assert_eq!(embed_get(addr, APP_B, "/", &carol_b).await.status, 200);
    assert_eq!(embed_get(addr, APP_A, "/", &alice_a).await.status, 200);

    // No appId: only within its apps (A), not carol's session on B.
    let r = revoke_as(addr, ACME_TOKEN, &json!({"email": "carol@partner.example"})).await;
    assert_eq!(r.status, 200, "{r:?} {}", r.text());
    assert_eq!(r.json(), json!({"revokedSessions": 1, "revokedTokens": 0}));
    assert_eq!(embed_get(addr, APP_A, "/", &carol_a).await.status, 401);
    assert_eq!(embed_get(addr, APP_B, "/", &carol_b).await.status, 200);

    // Inside, with its app named.
    let carol_a = open_session(addr, "carol@partner.example", APP_A).await;
    let r = revoke_as(
        addr,
        ACME_TOKEN,
        &json!({"email": "carol@partner.example", "appId": APP_A}),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?} {}", r.text());
    assert_eq!(r.json(), json!({"revokedSessions": 1, "revokedTokens": 0}));
    assert_eq!(embed_get(addr, APP_A, "/", &carol_a).await.status, 401);

    // The unscoped token still revokes everywhere.
    let r = revoke_as(addr, API_TOKEN, &json!({"email": "carol@partner.example"})).await;
    assert_eq!(r.status, 200, "{r:?} {}", r.text());
    assert_eq!(r.json(), json!({"revokedSessions": 1, "revokedTokens": 0}));
    assert_eq!(embed_get(addr, APP_B, "/", &carol_b).await.status, 401);
    assert_eq!(embed_get(addr, APP_A, "/", &alice_a).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mint_rate_limit_is_per_token_name() {
    let up = echo_upstream("app").await;
    let mut o = scoped_opts(&up);
    o.rate_limit =
        "pat_create_per_minute = 2\npat_create_per_user_per_minute = 1000\nbad_pat_per_minute = 1000\n".into();
    let gw = o.start().await;
    let addr = gw.public_addr;
    let body = json!({"email": "carol@partner.example", "appId": APP_A});
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..3 {
        let r = mint_as(addr, ACME_TOKEN, &body).await;
        statuses.push(r.status.as_u16());
        last = Some(r);
    }
    assert_eq!(statuses, [201, 201, 429], "{ACME} with pat_create_per_minute = 2");
    let r = last.unwrap();
    assert_error_body(&r, 429, "Too Many Requests");
    let secs = retry_after_secs(&r);
    assert!((1..=60).contains(&secs), "Retry-After {secs} for 2/minute");
    // The other scoped token and the unscoped ones each have their own bucket.
    for (name, token) in [(GLOBEX, GLOBEX_TOKEN), ("token_sha256[0]", API_TOKEN)] {
        let r = mint_as(addr, token, &body).await;
        assert_eq!(r.status, 201, "{name} shares {ACME}'s bucket: {r:?} {}", r.text());
    }
    let r = mint_as(addr, GLOBEX_TOKEN, &body).await;
    assert_eq!(r.status, 201, "{GLOBEX}'s second mint: {r:?} {}", r.text());
    let r = mint_as(addr, GLOBEX_TOKEN, &body).await;
    assert_eq!(r.status, 429, "{GLOBEX}'s third mint: {r:?} {}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mint_log_names_the_token_never_the_token_itself() {
    let up = echo_upstream("app").await;
    let gw = scoped_opts(&up).start().await;
    let addr = gw.public_addr;
    // One mint per token, each for its own user so that its line is known.
    for (token, email, app) in [
        (ACME_TOKEN, "carol@partner.example", APP_A),
        (API_TOKEN, "dave@other.example", APP_A),
        (API_TOKEN_2, "eve@other.example", APP_B),
        (GLOBEX_TOKEN, "alice@example.com", APP_B),
    ] {
        let r = mint_as(addr, token, &json!({"email": email, "appId": app})).await;
        assert_eq!(r.status, 201, "{email}: {r:?} {}", r.text());
    }
    let expected = [
        ("carol@partner.example", ACME),
        ("dave@other.example", "token_sha256[0]"),
        ("eve@other.example", "token_sha256[1]"),
        ("alice@example.com", GLOBEX),
    ];
    let logged = eventually(T, || async {
        let log = gw.stderr();
        expected
            .iter()
            .all(|(email, name)| log.lines().any(|l| l.contains(email) && l.contains(name)))
    })
    .await;
    let log = gw.stderr();
    assert!(
        logged,
        "no mint line names both the user and the token's name ({expected:?}):\n{log}"
    );
    // The capture holds the mint lines, so that no token in it means something.
    for secret in [ACME_TOKEN, GLOBEX_TOKEN, API_TOKEN, API_TOKEN_2] {
        assert!(!log.contains(secret), "`{secret}` appears in the logs:\n{log}");
    }
}
