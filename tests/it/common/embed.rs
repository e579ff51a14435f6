//! The PAT API and the embed flow (SPEC §3–§6): the fixed apps, users and
//! API tokens of the embed configs, [`EmbedOpts`] to render them, and
//! helpers to mint, exchange, use a session and check the JSON error body.

use std::net::SocketAddr;

use hyper::header::HeaderValue;
use hyper::Request;
use tokio::net::TcpStream;

use super::client::{get, get_with, Reply, H1};
use super::gateway::{new_dir, Gateway};
use super::{full, T};

/// The API token the embed configs accept (`[api] token_sha256`).
pub const API_TOKEN: &str = "eg-test-api-token-7f3a9c0d1e2b4a6f";
/// A second accepted API token, for per-token limits.
pub const API_TOKEN_2: &str = "eg-test-api-token-second-5b8e21d4";
/// `server.public_url` of the embed configs: never the address the tests dial,
/// so that a URL built from `Host` shows.
pub const PUBLIC_URL: &str = "https://gw.public.example";
/// Admits alice by address, `*@partner.example` by domain, group `sales`.
pub const APP_A: &str = "8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc";
/// Admits every user (`*`); no `frame_ancestors`.
pub const APP_B: &str = "2f4c6e8a-1b3d-4f5a-9c7e-0d2b4a6c8e1f";
/// Admits nobody the tests mint for.
pub const APP_C: &str = "c0ffee00-1234-4abc-8def-0123456789ab";
/// A well-formed UUID that no app has.
pub const UNKNOWN_APP: &str = "00000000-0000-4000-8000-000000000000";
pub const FRAME_ANCESTORS_A: [&str; 2] = ["https://portal.example.com", "https://portal2.example.com"];

/// alice: admitted to A by address; carol: by `*@partner.example`; dave: by
/// group `sales`; eve: by nothing on A.
pub const DEFAULT_USERS: &str = "\
[[users]]
email = \"alice@example.com\"
groups = [\"sales\", \"eng\"]

[[users]]
email = \"carol@partner.example\"
groups = []

[[users]]
email = \"dave@other.example\"
groups = [\"sales\"]

[[users]]
email = \"eve@other.example\"
groups = [\"support\"]
";

/// Lowercase hex SHA-256 of `s`.
pub fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// The knobs of an embed test config; [`EmbedOpts::config`] renders it.
#[derive(Debug, Clone)]
pub struct EmbedOpts {
    /// Upstream URL of app A (and C).
    pub app_a: String,
    /// Upstream URL of app B.
    pub app_b: String,
    /// Extra lines in `[server]`.
    pub server_extra: String,
    /// Extra lines in `[api]`.
    pub api_extra: String,
    /// Lines of `[pat]`.
    pub pat: String,
    /// Lines of `[session]`.
    pub session: String,
    /// Lines of `[rate_limit]` (default: high enough never to bite).
    pub rate_limit: String,
    /// The `[[users]]` tables.
    pub users: String,
    /// More sections (e.g. [`tls_section`](super::tls_section)).
    pub extra: String,
}

impl EmbedOpts {
    pub fn new(app_a: &str, app_b: &str) -> EmbedOpts {
        EmbedOpts {
            app_a: app_a.to_string(),
            app_b: app_b.to_string(),
            server_extra: String::new(),
            api_extra: String::new(),
            pat: String::new(),
            session: String::new(),
            rate_limit: "pat_create_per_minute = 10000\n\
                         pat_create_per_user_per_minute = 10000\n\
                         bad_pat_per_minute = 10000\n"
                .to_string(),
            users: DEFAULT_USERS.to_string(),
            extra: String::new(),
        }
    }

    pub fn config(&self) -> String {
        format!(
            "[server]\n\
             listen = \"127.0.0.1:0\"\n\
             public_url = \"{PUBLIC_URL}\"\n\
             admin_listen = \"127.0.0.1:0\"\n\
             {server_extra}\n\n\
             [api]\n\
             token_sha256 = [\"{h1}\", \"{h2}\"]\n\
             {api_extra}\n\n\
             [pat]\n{pat}\n\n\
             [session]\n{session}\n\n\
             [rate_limit]\n{rate_limit}\n\n\
             {users}\n\n\
             [[apps]]\n\
             id = \"{APP_A}\"\n\
             upstream = \"{app_a}\"\n\
             allow_users = [\"alice@example.com\", \"*@partner.example\"]\n\
             allow_groups = [\"sales\"]\n\
             frame_ancestors = [\"{fa0}\", \"{fa1}\"]\n\n\
             [[apps]]\n\
             id = \"{APP_B}\"\n\
             upstream = \"{app_b}\"\n\
             allow_users = [\"*\"]\n\
             allow_groups = []\n\
             frame_ancestors = []\n\n\
             [[apps]]\n\
             id = \"{APP_C}\"\n\
             upstream = \"{app_a}\"\n\
             allow_users = [\"nobody@example.com\"]\n\
             allow_groups = [\"admins\"]\n\
             frame_ancestors = []\n\n\
             {extra}\n",
            server_extra = self.server_extra,
            h1 = sha256_hex(API_TOKEN),
            h2 = sha256_hex(API_TOKEN_2),
            api_extra = self.api_extra,
            pat = self.pat,
            session = self.session,
            rate_limit = self.rate_limit,
            users = self.users,
            app_a = self.app_a,
            app_b = self.app_b,
            fa0 = FRAME_ANCESTORS_A[0],
            fa1 = FRAME_ANCESTORS_A[1],
            extra = self.extra,
        )
    }

    pub async fn start(&self) -> Gateway {
        Gateway::start(new_dir(), &self.config()).await
    }
}

/// `POST path` with `Authorization: Basic <token>` (when given) and a JSON
/// body, on a fresh connection.
pub async fn post_json(addr: SocketAddr, path: &str, token: Option<&str>, body: &str) -> Reply {
    let mut req = Request::post(path).header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Basic {t}"));
    }
    H1::connect(addr)
        .await
        .request(req.body(full(body.to_string())).unwrap())
        .await
}

/// Mints with [`API_TOKEN`].
pub async fn mint(addr: SocketAddr, body: &serde_json::Value) -> Reply {
    post_json(
        addr,
        "/api/ext/users/personal-access-token",
        Some(API_TOKEN),
        &body.to_string(),
    )
    .await
}

/// Mints a PAT for `email` on `app` (asserting the 201) and returns it.
pub async fn mint_pat(addr: SocketAddr, email: &str, app: &str) -> String {
    let r = mint(addr, &serde_json::json!({"email": email, "appId": app})).await;
    assert_eq!(r.status, 201, "mint for {email} on {app} failed: {r:?} {}", r.text());
    r.json()["personalAccessToken"].as_str().unwrap().to_string()
}

/// `GET /embed-apps/<app>?<query>` on a fresh connection.
pub async fn exchange_query(addr: SocketAddr, app: &str, query: &str) -> Reply {
    get(addr, &format!("/embed-apps/{app}?{query}")).await
}

/// `GET /embed-apps/<app>?personal-access-token=<pat>`.
pub async fn exchange(addr: SocketAddr, app: &str, pat: &str) -> Reply {
    exchange_query(addr, app, &format!("personal-access-token={pat}")).await
}

/// The value of the `name=` cookie set by a reply.
pub fn set_cookie_value(r: &Reply, name: &str) -> Option<String> {
    r.headers.get_all("set-cookie").iter().find_map(|v| {
        // Not skipped: a negative check would pass on a cookie it cannot read.
        let v = v.to_str().expect("a Set-Cookie that is not visible ASCII");
        let first = v.split(';').next()?.trim();
        let (k, val) = first.split_once('=')?;
        (k == name).then(|| val.to_string())
    })
}

/// Mints for `email` on `app`, exchanges it (asserting the 303) and returns
/// the session cookie's value (cookie `embedgate_session`).
pub async fn open_session(addr: SocketAddr, email: &str, app: &str) -> String {
    let pat = mint_pat(addr, email, app).await;
    let r = exchange(addr, app, &pat).await;
    assert_eq!(
        r.status,
        303,
        "exchange for {email} on {app} failed: {r:?} {}",
        r.text()
    );
    set_cookie_value(&r, "embedgate_session").expect("the exchange set no embedgate_session cookie")
}

/// `GET /embed-apps/<app><rest>` with the gateway's session cookie.
pub async fn embed_get(addr: SocketAddr, app: &str, rest: &str, session: &str) -> Reply {
    let cookie = format!("embedgate_session={session}");
    get_with(addr, &format!("/embed-apps/{app}{rest}"), &[("cookie", &cookie)]).await
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Parses an RFC 3339 timestamp (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`) to
/// seconds since the Unix epoch.
pub fn parse_rfc3339(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    let mut frac = 0.0;
    if let Some(r) = rest.strip_prefix('.') {
        let digits = r.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        frac = format!("0.{}", &r[..digits]).parse().ok()?;
        rest = &r[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                return None;
            }
            sign * (rest[1..3].parse::<i64>().ok()? * 3600 + rest[4..6].parse::<i64>().ok()? * 60)
        }
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some((days * 86400 + h * 3600 + mi * 60 + sec - offset) as f64 + frac)
}

/// Asserts the SPEC §3 error body: `{"statusCode", "error", "message"}`.
pub fn assert_error_body(r: &Reply, status: u16, error: &str) -> String {
    assert_eq!(r.status, status, "{r:?} {}", r.text());
    let ct = r.header("content-type").unwrap_or("");
    assert!(
        ct.starts_with("application/json"),
        "error content-type {ct:?}, body {}",
        r.text()
    );
    let j = r.json();
    assert_eq!(j["statusCode"], status, "{j}");
    assert_eq!(j["error"], error, "{j}");
    let msg = j["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no string message: {j}"));
    assert!(!msg.is_empty(), "empty message: {j}");
    msg.to_string()
}

/// A `Retry-After` header as whole seconds, asserting it is one.
pub fn retry_after_secs(r: &Reply) -> u64 {
    let v = r
        .header("retry-after")
        .unwrap_or_else(|| panic!("429 without Retry-After: {r:?}"));
    v.parse::<u64>()
        .unwrap_or_else(|_| panic!("Retry-After {v:?} is not whole seconds"))
}

/// Opens a WebSocket to `/embed-apps/<app><rest>` through the gateway with the
/// session cookie.
pub async fn embed_websocket(
    addr: SocketAddr,
    app: &str,
    rest: &str,
    session: &str,
) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{addr}/embed-apps/{app}{rest}")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "cookie",
        HeaderValue::from_str(&format!("embedgate_session={session}")).unwrap(),
    );
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (ws, resp) = tokio::time::timeout(T, tokio_tungstenite::client_async(req, tcp))
        .await
        .expect("websocket handshake timed out")
        .expect("websocket handshake through the gateway");
    assert_eq!(resp.status(), 101);
    ws
}

/// The `;`-separated parts of a `Set-Cookie` value, trimmed and sorted.
pub fn cookie_parts(v: &str) -> Vec<String> {
    let mut parts: Vec<String> = v.split(';').map(|p| p.trim().to_string()).collect();
    parts.sort_unstable();
    parts
}

/// The directives of a CSP value, whitespace normalised, sorted: their order
/// carries no meaning, but a repeat does (a browser obeys the first only).
pub fn csp_directives(v: &str) -> Vec<String> {
    let mut directives: Vec<String> = v
        .split(';')
        .map(|d| d.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|d| !d.is_empty())
        .collect();
    directives.sort_unstable();
    directives
}

/// Owned strings, as a set.
pub fn set_of(items: &[&str]) -> std::collections::BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The comma-separated groups of the one `X-Embed-Groups` an upstream got,
/// as a set.
pub fn groups_header(e: &super::client::Echo) -> std::collections::BTreeSet<String> {
    let values = e.headers("x-embed-groups");
    assert_eq!(values.len(), 1, "X-Embed-Groups: {values:?}");
    values[0]
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(str::to_string)
        .collect()
}
