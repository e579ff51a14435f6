use super::*;

fn get(target: &str, host: Option<&str>) -> Request<()> {
    let mut req = Request::builder().uri(target);
    if let Some(host) = host {
        req = req.header(header::HOST, host);
    }
    req.body(()).unwrap_or_default()
}

fn check(req: &Request<()>) -> Result<(), GatewayError> {
    super::check(req, 65_536, false)
}

fn refused(target: &str) -> bool {
    check(&get(target, Some("gw"))).is_err()
}

/// Refused on an app's own host.
fn refused_on_app_host(target: &str) -> bool {
    super::check(&get(target, Some("shop.example")), 65_536, true).is_err()
}

#[test]
fn dot_segments_are_refused_plain_and_encoded_once_or_twice() {
    for target in [
        "/../x",
        "/a/./b",
        "/a/..",
        "/a/%2e%2E/b",
        "/a/.%2e/b",
        "/a/%252e%252e/b",
        "/embed-apps/app/../../api/ext/x",
        "/x?y=1/../..&z",
    ] {
        let is_query = target.starts_with("/x?");
        assert_eq!(refused(target), !is_query, "{target}");
    }
    for target in ["/a/..b/c.d", "/a/...", "/.well-known/x", "/a.b/.c"] {
        assert!(!refused(target), "{target}");
    }
}

#[test]
fn dot_segments_are_refused_in_every_spelling_a_server_reads() {
    for target in [
        "/..;/admin",
        "/.;/admin",
        "/..;jsessionid=x/admin",
        "/a/..%3B/admin",
        "/a/..%253b/admin",
        "/%c0%ae%c0%ae/admin",
        "/%C0%AE/admin",
        "/%e0%80%ae%e0%80%ae/admin",
        "/%f0%80%80%ae%f0%80%80%ae/admin",
        "/%25c0%25ae%25c0%25ae/admin",
        "/%ef%bc%8e%ef%bc%8e/admin",
        "/%e2%80%a5/admin",
        "/%u002e%u002e/admin",
        "/%U002E/admin",
        "/..%20/admin",
        "/.%09/admin",
    ] {
        assert!(refused(target), "{target}");
        assert!(refused_on_app_host(target), "{target}");
    }
    for target in [
        "/a/b.c",
        "/...",
        "/a..b",
        "/..a/b",
        "/a;b/c",
        "/%e2%82%ac",
        "/caf%c3%a9",
        "/%u00e9t%u00e9",
    ] {
        assert!(!refused(target), "{target}");
        assert!(!refused_on_app_host(target), "{target}");
    }
}

#[test]
fn an_apps_own_host_gets_the_gateway_trees_rules() {
    for target in [
        "/..\\admin",
        "/a\\b",
        "/%2e%2e%5cadmin",
        "/..%5cadmin",
        "/a%2fb",
        "/a%252fb",
        "/a%5Cb",
        "/x//y",
        "/%c0%af",
        "/%c1%9c",
        "/%ef%bc%8fadmin",
        "/%ef%bc%bcadmin",
        "/%00",
        "/%2500",
    ] {
        assert!(refused_on_app_host(target), "{target}");
    }
    // The passthrough keeps its slashes and backslashes.
    for target in ["/a%2fb", "/x//y", "/a\\b", "/%ef%bc%8fadmin"] {
        assert!(!refused(target), "{target}");
    }
    assert!(
        !refused_on_app_host("/x/y/"),
        "a trailing slash is no empty segment before the last"
    );
}

#[test]
fn encoded_nul_is_refused_everywhere() {
    assert!(refused("/x%00y"));
    assert!(refused("/x%2500y"));
    assert!(refused("/embed-apps/a/%00"));
}

#[test]
fn the_gateway_trees_refuse_what_could_split_a_segment_elsewhere() {
    for target in [
        "/embed-apps/app//x",
        "/embed-apps/app/a%2Fb",
        "/embed-apps/app/a%252fb",
        "/embed-apps/app/a%5Cb",
        "/embed-apps/app/a\\b",
        "/api/ext//users",
    ] {
        assert!(refused(target), "{target}");
    }
    // The passthrough forwards them as sent.
    for target in ["/files/a%2Fb", "/a//b", "/a%5Cb", "/a\\b", "/embed-apps/app/"] {
        assert!(!refused(target), "{target}");
    }
}

#[test]
fn host_must_be_one_valid_authority() {
    assert!(check(&get("/", None)).is_err(), "HTTP/1.1 without Host");
    let mut two = get("/", Some("a"));
    two.headers_mut()
        .append(header::HOST, http::HeaderValue::from_static("b"));
    assert!(check(&two).is_err());
    for bad in [
        "a b",
        "user@host",
        "host:port",
        "[::1",
        "gw:http",
        "gw:65536",
        "gw:1:2",
        "[::1]x",
        ":80",
    ] {
        assert!(check(&get("/", Some(bad))).is_err(), "{bad}");
    }
    for good in [
        "gw",
        "gw.example.com:8443",
        "[::1]:80",
        "[::1]",
        "127.0.0.1",
        "",
        "gw:",
        "gw:65535",
    ] {
        assert!(check(&get("/", Some(good))).is_ok(), "{good}");
    }
    let mut old = get("/", None);
    *old.version_mut() = Version::HTTP_10;
    assert!(check(&old).is_ok(), "HTTP/1.0 may leave Host out");
}

#[test]
fn a_head_over_the_limit_is_431() {
    let mut big = get("/", Some("gw"));
    big.headers_mut().insert(
        "x-big",
        http::HeaderValue::from_str(&"a".repeat(70_000)).unwrap_or(http::HeaderValue::from_static("")),
    );
    assert!(matches!(check(&big), Err(GatewayError::HeadTooLarge)));
}

#[test]
fn only_origin_and_absolute_form_are_routed() {
    assert!(!refused("http://gw/x"));
    assert!(refused("http://user@gw/x"));
    assert!(refused("http://gw:99999/x"));
    assert!(refused("ftp://gw/x"));
    let mut connect = get("gw:443", Some("gw:443"));
    *connect.method_mut() = Method::CONNECT;
    assert!(matches!(check(&connect), Err(GatewayError::MethodNotAllowed(_))));
    // HTTP/2's extended CONNECT: WebSockets only.
    let mut extended = get("https://gw/embed-apps/a/ws", None);
    *extended.method_mut() = Method::CONNECT;
    *extended.version_mut() = Version::HTTP_2;
    extended
        .extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    assert!(check(&extended).is_ok());
    extended
        .extensions_mut()
        .insert(hyper::ext::Protocol::from_static("connect-udp"));
    assert!(matches!(check(&extended), Err(GatewayError::MethodNotAllowed(_))));
    assert!(refused("*"));
}

#[test]
fn gateway_trees_match_whole_segments() {
    assert_eq!(
        route("/api/ext/users/personal-access-token", false),
        Route::Api("users/personal-access-token")
    );
    assert_eq!(route("/api/ext", false), Route::Api(""));
    assert_eq!(route("/api/extra", true), Route::Passthrough);
    assert_eq!(route("/embed-apps/abc/x", true), Route::Embed("abc/x"));
    assert_eq!(route("/embed-appsx", false), Route::NotFound);
    assert_eq!(
        route("/.well-known/embedgate/jwks.json", true),
        Route::WellKnown("jwks.json")
    );
}

#[test]
fn the_helper_has_two_paths_of_its_own() {
    assert_eq!(route("/embedgate.js", true), Route::Helper { module: false });
    assert_eq!(route("/embedgate.mjs", false), Route::Helper { module: true });
    assert_eq!(route("/embedgate.json", true), Route::Passthrough);
    assert_eq!(route("/x/embedgate.js", false), Route::NotFound);
}

#[test]
fn other_paths_go_to_passthrough_only_when_configured() {
    assert_eq!(route("/", true), Route::Passthrough);
    assert_eq!(route("/", false), Route::NotFound);
    assert_eq!(route("/api", true), Route::Passthrough);
}
