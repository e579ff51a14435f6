//! The shop: the demo's second app, served by the same server under
//! `/shop/`. Unlike the first app it knows nothing of `X-Forwarded-Prefix`:
//! its page links its stylesheet and script and calls its API by absolute
//! paths (`/static/shop.css`, `/static/shop.js`, `/api/whoami`), as an app
//! written for the root of a host does. It works embedded only where the
//! gateway serves it at the root of a host of its own (an `[[apps]]` entry
//! with `public_url`, upstream `http://127.0.0.1:3000/shop`), so that
//! `/static/shop.css` on that host reaches `/shop/static/shop.css` here.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

use crate::demo::html::Html;
use crate::demo::html_response;

/// Where the shop is mounted on the demo app's server.
pub(crate) const MOUNT: &str = "/shop";

/// The page: static markup, since everything it shows about the user it
/// learns from `/api/whoami`.
const PAGE: &str = include_str!("../pages/shop.html");
/// Linked as `/static/shop.css`.
const STYLE: &str = include_str!("../pages/shop.css");
/// Loaded as `/static/shop.js`: checks the stylesheet, calls `/api/whoami`
/// and reports to a framing portal.
const SCRIPT: &str = include_str!("../pages/shop.js");

/// A route of the shop, by its path below [`MOUNT`].
pub(crate) enum ShopPage {
    /// `/` (or the mount itself): the page.
    Page,
    /// `/static/shop.css`.
    Style,
    /// `/static/shop.js`.
    Script,
    /// `/api/whoami`: the app's own `whoami`, which the caller answers.
    Whoami,
}

impl ShopPage {
    /// The route for `path` (the request's whole path), if it is the shop's.
    pub(crate) fn of(path: &str) -> Option<ShopPage> {
        match path.strip_prefix(MOUNT)? {
            "" | "/" => Some(ShopPage::Page),
            "/static/shop.css" => Some(ShopPage::Style),
            "/static/shop.js" => Some(ShopPage::Script),
            "/api/whoami" => Some(ShopPage::Whoami),
            _ => None,
        }
    }
}

/// `GET /shop/`.
pub(crate) fn page() -> Response<Full<Bytes>> {
    html_response(StatusCode::OK, Html::trusted(PAGE))
}

/// `GET /shop/static/shop.css`.
pub(crate) fn style() -> Response<Full<Bytes>> {
    asset("text/css; charset=utf-8", STYLE)
}

/// `GET /shop/static/shop.js`.
pub(crate) fn script() -> Response<Full<Bytes>> {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// A file of the program with its type. Not cached, so that every load of
/// the page shows its requests going through the gateway; `nosniff`, so
/// that a browser takes it as a stylesheet or script only with the right
/// type (as it must, for the page's check to mean anything).
fn asset(content_type: &'static str, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}
