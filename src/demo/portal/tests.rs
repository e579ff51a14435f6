use std::net::SocketAddr;

use http::{header, Method, StatusCode};
use serde_json::{json, Value};

use crate::demo::testing::{
    dead_base, fake_gateway, get, request, Log, Recorded, API_TOKEN, APP_ID, EMAIL, SECOND_APP_ID,
};
use crate::demo::{spawn_portal, Portal};

fn portal_for(gateway_api: String) -> Portal {
    Portal {
        gateway_api,
        api_token: API_TOKEN.to_owned(),
        email: EMAIL.to_owned(),
        app_ids: vec![APP_ID.to_owned()],
    }
}

async fn start_portal(gateway_api: String) -> SocketAddr {
    spawn_portal("127.0.0.1:0".parse().unwrap(), portal_for(gateway_api))
        .await
        .unwrap()
}

/// Whether the fake saw the portal's credentials and a JSON body.
fn authorized(req: &Recorded) -> bool {
    req.method == Method::POST
        && req
            .headers
            .get(header::AUTHORIZATION)
            .is_some_and(|v| v == "Basic tok_secret_123")
        && req
            .headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v == "application/json")
}

const REDIRECT: &str = "http://localhost:8443/embed-apps/8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc?personal-access-token=pat_0123abcd&next=\"<x>";

#[tokio::test]
async fn portal_mints_a_pat_and_frames_its_redirect_url() {
    let (base, log) = fake_gateway(|req| {
        let expected = json!({"email": EMAIL, "appId": APP_ID, "sessionExpiry": 60, "patExpiry": 300});
        if req.path == "/api/ext/users/personal-access-token" && authorized(req) && req.json() == expected {
            let body = json!({
                "personalAccessToken": "pat_0123abcd",
                "redirectUrl": REDIRECT,
                "expiresAt": "2030-01-01T00:00:00Z",
            });
            (StatusCode::CREATED, body.to_string())
        } else {
            (
                StatusCode::BAD_REQUEST,
                json!({"message": "unexpected request"}).to_string(),
            )
        }
    })
    .await;
    let addr = start_portal(base).await;
    let (status, headers, body) = get(addr, "/", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    assert!(body.contains("Acme customer portal (embedgate demo)"));
    assert!(body.contains("<strong>user@example.com</strong>"));
    let src = "http://localhost:8443/embed-apps/8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc\
               ?personal-access-token=pat_0123abcd&amp;next=&quot;&lt;x&gt;";
    assert!(
        body.contains(&format!("<iframe id=\"app-frame\" src=\"{src}\"")),
        "{body}"
    );
    assert!(body.contains("<form id=\"revoke\" method=\"post\" action=\"/revoke\">"));
    assert!(body.contains("Revoke session"));
    assert!(body.contains("'embedgate:session-expired'"));
    assert!(body.contains("'TJ_EMBED_APP_LOGOUT'"));
    assert!(body.contains("<a href=\"/\">Reload</a>"));
    assert!(!body.contains(API_TOKEN));
    assert!(!format!("{headers:?}").contains(API_TOKEN));
    assert_eq!(log.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn portal_renders_the_gateways_refusal_to_mint() {
    let (base, _) = fake_gateway(|_| {
        let body = json!({"statusCode": 403, "error": "Forbidden", "message": "user may not <use> this app"});
        (StatusCode::FORBIDDEN, body.to_string())
    })
    .await;
    let addr = start_portal(base).await;
    let (status, _, body) = get(addr, "/", &[]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(body.contains("Acme customer portal (embedgate demo)"));
    assert!(body.contains("<strong>403 Forbidden</strong>"), "{body}");
    assert!(body.contains("<code>user may not &lt;use&gt; this app</code>"));
    assert!(!body.contains("<iframe"));
    assert!(!body.contains(API_TOKEN));
}

#[tokio::test]
async fn portal_never_shows_the_token_even_if_echoed() {
    let (base, _) = fake_gateway(|_| {
        (
            StatusCode::UNAUTHORIZED,
            json!({"message": format!("bad token {API_TOKEN}")}).to_string(),
        )
    })
    .await;
    let addr = start_portal(base).await;
    let (status, _, body) = get(addr, "/", &[]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(body.contains("bad token [redacted]"), "{body}");
    assert!(!body.contains(API_TOKEN));
}

#[tokio::test]
async fn portal_reports_an_unreachable_gateway() {
    let addr = start_portal(dead_base().await).await;
    let (status, _, body) = get(addr, "/", &[]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(
        body.contains("could not reach the gateway: cannot connect to 127.0.0.1:"),
        "{body}"
    );
    assert!(!body.contains("<iframe"));
}

#[tokio::test]
async fn portal_frames_only_web_urls() {
    let (base, _) = fake_gateway(|_| {
        (
            StatusCode::CREATED,
            json!({"redirectUrl": "javascript:alert(1)"}).to_string(),
        )
    })
    .await;
    let addr = start_portal(base).await;
    let (status, _, body) = get(addr, "/", &[]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(!body.contains("<iframe"));
    assert!(!body.contains("javascript:alert"));
}

async fn revoking_gateway() -> (String, Log) {
    fake_gateway(|req| {
        if req.path == "/api/ext/users/sessions/revoke"
            && authorized(req)
            && req.json() == json!({"email": EMAIL, "appId": APP_ID})
        {
            (
                StatusCode::OK,
                json!({"revokedSessions": 2, "revokedTokens": 1}).to_string(),
            )
        } else {
            (
                StatusCode::BAD_REQUEST,
                json!({"message": "unexpected request"}).to_string(),
            )
        }
    })
    .await
}

#[tokio::test]
async fn portal_revoke_calls_the_gateway_and_redirects() {
    let (base, log) = revoking_gateway().await;
    let addr = start_portal(base).await;
    let origin = format!("http://{addr}");
    let (status, headers, _) = request(addr, Method::POST, "/revoke", &[("origin", &origin)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/?revoked=2");
    assert_eq!(log.lock().unwrap().len(), 1);

    let (status, _, body) = get(addr, "/?revoked=2", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("revoked 2 session(s)"), "{body}");
    assert!(body.contains("<a href=\"/\">Open a new embedded session</a>"));
    assert!(!body.contains("<iframe"));
    assert_eq!(log.lock().unwrap().len(), 1, "the revoked page mints nothing");
}

#[tokio::test]
async fn portal_revoke_answers_json_to_fetch() {
    let (base, _) = revoking_gateway().await;
    let addr = start_portal(base).await;
    let (status, headers, body) = request(addr, Method::POST, "/revoke", &[("accept", "application/json")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"revokedSessions": 2, "revokedTokens": 1})
    );
}

#[tokio::test]
async fn portal_revoke_reports_a_failure() {
    let (base, _) = fake_gateway(|_| (StatusCode::UNAUTHORIZED, json!({"message": "no"}).to_string())).await;
    let addr = start_portal(base).await;
    let (status, _, body) = request(addr, Method::POST, "/revoke", &[]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(body.contains("<strong>401 Unauthorized</strong>"));
    let (status, _, body) = request(addr, Method::POST, "/revoke", &[("accept", "application/json")]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"message": "the gateway answered 401 Unauthorized: no"})
    );
}

#[tokio::test]
async fn portal_revoke_refuses_another_origin() {
    let (base, log) = revoking_gateway().await;
    let addr = start_portal(base).await;
    let (status, _, _) = request(addr, Method::POST, "/revoke", &[("origin", "http://evil.example")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(log.lock().unwrap().is_empty());
}

#[tokio::test]
async fn portal_other_routes() {
    let (base, log) = revoking_gateway().await;
    let addr = start_portal(base).await;
    assert_eq!(get(addr, "/nope", &[]).await.0, StatusCode::NOT_FOUND);
    assert_eq!(get(addr, "/revoke", &[]).await.0, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        request(addr, Method::POST, "/", &[]).await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert!(log.lock().unwrap().is_empty());
}

#[test]
fn portal_debug_hides_the_token() {
    let debug = format!("{:?}", portal_for("http://127.0.0.1:8443".to_owned()));
    assert!(debug.contains("<redacted>"));
    assert!(!debug.contains(API_TOKEN));
}

#[tokio::test]
async fn portal_views_leave_no_placeholder_unfilled() {
    let (base, _) = fake_gateway(|req| {
        if req.path == "/api/ext/users/personal-access-token" {
            (StatusCode::CREATED, json!({"redirectUrl": REDIRECT}).to_string())
        } else {
            (StatusCode::FORBIDDEN, json!({"message": "no"}).to_string())
        }
    })
    .await;
    let addr = start_portal(base).await;
    let embed = get(addr, "/", &[]).await;
    assert!(embed.2.contains("<iframe"), "{}", embed.2);
    let revoked = get(addr, "/?revoked=1", &[]).await;
    let error = request(addr, Method::POST, "/revoke", &[]).await;
    for (status, _, body) in [embed, revoked, error] {
        assert_ne!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("</html>") && !body.contains("{{"), "{body}");
    }
}

/// A portal embedding the test app, then [`SECOND_APP_ID`].
async fn start_portal_of_two(gateway_api: String) -> SocketAddr {
    let portal = Portal {
        app_ids: vec![APP_ID.to_owned(), SECOND_APP_ID.to_owned()],
        ..portal_for(gateway_api)
    };
    spawn_portal("127.0.0.1:0".parse().unwrap(), portal).await.unwrap()
}

/// The `redirectUrl` the fake gateway gives for `app`: the second app on a
/// host of its own, as an app with `public_url` is.
fn redirect_for(app: &str) -> String {
    let origin = if app == SECOND_APP_ID {
        "http://app.localhost:8443"
    } else {
        "http://localhost:8443"
    };
    format!("{origin}/embed-apps/{app}?personal-access-token=pat_{}", &app[..8])
}

/// The app ids the fake was asked to mint for, in order.
fn minted_for(log: &Log) -> Vec<String> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|req| req.path == "/api/ext/users/personal-access-token")
        .map(|req| req.json()["appId"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn portal_mints_one_pat_per_app_in_order_and_frames_each_with_its_status_line() {
    let (base, log) = fake_gateway(|req| {
        let app = req.json()["appId"].as_str().unwrap_or_default().to_owned();
        let expected = json!({"email": EMAIL, "appId": app, "sessionExpiry": 60, "patExpiry": 300});
        if req.path == "/api/ext/users/personal-access-token" && authorized(req) && req.json() == expected {
            (
                StatusCode::CREATED,
                json!({"redirectUrl": redirect_for(&app)}).to_string(),
            )
        } else {
            (StatusCode::BAD_REQUEST, json!({"message": "unexpected"}).to_string())
        }
    })
    .await;
    let addr = start_portal_of_two(base).await;
    let (status, _, body) = get(addr, "/", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(minted_for(&log), [APP_ID, SECOND_APP_ID]);
    assert!(
        body.contains(&format!(
            "embedded apps <code>{APP_ID}</code>, <code>{SECOND_APP_ID}</code>"
        )),
        "{body}"
    );
    let first = format!(
        "<p id=\"embed-status\" role=\"status\">waiting for the embedded app…</p>\n\
         <iframe id=\"app-frame\" src=\"{}\" data-status=\"embed-status\"",
        redirect_for(APP_ID)
    );
    let second = format!(
        "<p id=\"embed-status-2\" role=\"status\">waiting for the embedded app…</p>\n\
         <iframe id=\"app-frame-2\" src=\"{}\" data-status=\"embed-status-2\"",
        redirect_for(SECOND_APP_ID)
    );
    let (at_first, at_second) = (body.find(&first), body.find(&second));
    assert!(
        at_first.is_some() && at_second.is_some() && at_first < at_second,
        "{body}"
    );
    assert!(body.contains("at <code>http://localhost:8443</code>"), "{body}");
    assert!(body.contains("at <code>http://app.localhost:8443</code>"), "{body}");
    assert_eq!(body.matches("<iframe").count(), 2);
    assert!(body.contains("'embedgate-demo:shop'"));
    assert!(body.contains("</html>") && !body.contains("{{"), "{body}");
}

#[tokio::test]
async fn portal_frames_the_apps_it_could_mint_for_and_shows_the_refusal_of_the_others() {
    let (base, log) = fake_gateway(|req| {
        let app = req.json()["appId"].as_str().unwrap_or_default().to_owned();
        if app == SECOND_APP_ID {
            let body = json!({"statusCode": 403, "error": "Forbidden", "message": "not <yours>"});
            (StatusCode::FORBIDDEN, body.to_string())
        } else {
            (
                StatusCode::CREATED,
                json!({"redirectUrl": redirect_for(&app)}).to_string(),
            )
        }
    })
    .await;
    let addr = start_portal_of_two(base).await;
    let (status, _, body) = get(addr, "/", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(minted_for(&log), [APP_ID, SECOND_APP_ID]);
    assert!(body.contains("<iframe id=\"app-frame\""), "{body}");
    assert!(
        !body.contains("app-frame-2") && !body.contains("embed-status-2"),
        "{body}"
    );
    let refusal = format!(
        "<h2>App <code>{SECOND_APP_ID}</code></h2>\n\
         <p>The portal could not get a personal access token for this app.</p>\n\
         <p class=\"bad\">The gateway answered <strong>403 Forbidden</strong>: <code>not &lt;yours&gt;</code></p>"
    );
    assert!(body.contains(&refusal), "{body}");
    assert!(body.contains("</html>") && !body.contains("{{"), "{body}");
}

#[tokio::test]
async fn portal_shows_the_error_page_when_no_app_could_be_minted_for() {
    let (base, log) = fake_gateway(|req| {
        let message = format!("no app {}", req.json()["appId"].as_str().unwrap_or_default());
        (StatusCode::NOT_FOUND, json!({"message": message}).to_string())
    })
    .await;
    let addr = start_portal_of_two(base).await;
    let (status, _, body) = get(addr, "/", &[]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(minted_for(&log), [APP_ID, SECOND_APP_ID]);
    assert!(!body.contains("<iframe"));
    for app in [APP_ID, SECOND_APP_ID] {
        assert!(
            body.contains(&format!("<strong>404 Not Found</strong>: <code>no app {app}</code>")),
            "{body}"
        );
    }
}

#[tokio::test]
async fn portal_without_apps_says_so_and_calls_nothing() {
    let (base, log) = revoking_gateway().await;
    let portal = Portal {
        app_ids: Vec::new(),
        ..portal_for(base)
    };
    let addr = spawn_portal("127.0.0.1:0".parse().unwrap(), portal).await.unwrap();
    let (status, _, body) = get(addr, "/", &[]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(body.contains("There is no app to embed"), "{body}");
    assert!(!body.contains("The gateway answered"), "{body}");
    assert!(!body.contains("<iframe"));
    assert!(log.lock().unwrap().is_empty());
}

#[tokio::test]
async fn portal_revoke_revokes_each_app_and_sums_the_counts() {
    let (base, log) = fake_gateway(|req| {
        let counts = match req.json()["appId"].as_str() {
            Some(APP_ID) => json!({"revokedSessions": 2, "revokedTokens": 1}),
            Some(SECOND_APP_ID) => json!({"revokedSessions": 1, "revokedTokens": 3}),
            _ => return (StatusCode::BAD_REQUEST, json!({"message": "no appId"}).to_string()),
        };
        if req.path == "/api/ext/users/sessions/revoke" && authorized(req) && req.json()["email"] == EMAIL {
            (StatusCode::OK, counts.to_string())
        } else {
            (StatusCode::BAD_REQUEST, json!({"message": "unexpected"}).to_string())
        }
    })
    .await;
    let addr = start_portal_of_two(base).await;
    let (status, _, body) = request(addr, Method::POST, "/revoke", &[("accept", "application/json")]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"revokedSessions": 3, "revokedTokens": 4})
    );
    let asked: Vec<Value> = log.lock().unwrap().iter().map(Recorded::json).collect();
    assert_eq!(
        asked,
        [
            json!({"email": EMAIL, "appId": APP_ID}),
            json!({"email": EMAIL, "appId": SECOND_APP_ID}),
        ]
    );
}

#[test]
fn origin_of_keeps_scheme_and_authority() {
    use super::origin_of;
    assert_eq!(
        origin_of("http://app.localhost:8443/embed-apps/x?personal-access-token=pat_1"),
        "http://app.localhost:8443"
    );
    assert_eq!(origin_of("https://localhost?x=1"), "https://localhost");
    assert_eq!(origin_of("https://example.com"), "https://example.com");
}
