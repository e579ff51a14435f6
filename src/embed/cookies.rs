//! The gateway's session cookie in a request's `Cookie` fields (RFC 6265
//! §5.4), read with the `cookie` crate. HTTP/2 clients may split `Cookie`
//! into several fields (RFC 9113 §8.2.3): all of them are read.

use cookie::Cookie;
use http::header::{self, HeaderMap, HeaderValue};

/// Takes the cookie `name` out of the request: returns every value it had
/// (a browser may hold one per matching path) and leaves the other cookies
/// in one `Cookie` field, as an HTTP/1.1 upstream expects, so the upstream
/// never sees the gateway's session.
///
/// Fields without that cookie are left exactly as they came. Where it is
/// taken out, the other pairs are written back as `name=value`; a fragment
/// that is no cookie pair at all (no `=`, or no name) is not kept.
pub(crate) fn take(headers: &mut HeaderMap, name: &str) -> Vec<String> {
    let mut ours = Vec::new();
    take_each(headers, name, |value| ours.push(value.to_owned()));
    ours
}

/// [`take`], handing each value to `each` as it is found (nothing is
/// copied or allocated for them); returns how many there were.
pub(crate) fn take_each(headers: &mut HeaderMap, name: &str, mut each: impl FnMut(&str)) -> usize {
    let mut ours = 0;
    let mut rest = Vec::new();
    for field in headers.get_all(header::COOKIE) {
        let start = rest.len();
        let taken = ours;
        if !rest.is_empty() {
            rest.extend_from_slice(b"; ");
        }
        let separated = rest.len();
        if let Ok(text) = field.to_str() {
            for cookie in Cookie::split_parse(text).flatten() {
                if cookie.name() == name {
                    each(cookie.value());
                    ours += 1;
                } else {
                    if rest.len() > separated {
                        rest.extend_from_slice(b"; ");
                    }
                    rest.extend_from_slice(cookie.name().as_bytes());
                    rest.push(b'=');
                    rest.extend_from_slice(cookie.value().as_bytes());
                }
            }
        }
        if ours == taken {
            // None of ours in this field (or it is not visible ASCII, so it
            // cannot hold ours): passed on exactly as it came.
            rest.truncate(separated);
            rest.extend_from_slice(field.as_bytes());
        } else if rest.len() == separated {
            // Only ours: no separator for nothing.
            rest.truncate(start);
        }
    }
    if ours == 0 {
        return 0;
    }
    headers.remove(header::COOKIE);
    if let Ok(value) = HeaderValue::from_bytes(&rest) {
        if !rest.is_empty() {
            headers.insert(header::COOKIE, value);
        }
    }
    ours
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_cookie_is_taken_and_others_joined() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; embedgate_session=secret"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        h.append(header::COOKIE, HeaderValue::from_static("embedgate_session=again"));
        h.append(header::COOKIE, HeaderValue::from_static("c=3"));
        assert_eq!(take(&mut h, "embedgate_session"), vec!["secret", "again"]);
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(h[header::COOKIE], "a=1; b=2; c=3");

        let mut only = HeaderMap::new();
        only.insert(header::COOKIE, HeaderValue::from_static("embedgate_session=secret"));
        assert_eq!(take(&mut only, "embedgate_session"), vec!["secret"]);
        assert!(!only.contains_key(header::COOKIE));
    }

    #[test]
    fn every_value_is_found_across_fields_and_spacing() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static(" embedgate_session = one ;x=\"q v\""),
        );
        h.append(header::COOKIE, HeaderValue::from_static("embedgate_session=two"));
        assert_eq!(take(&mut h, "embedgate_session"), vec!["one", "two"]);
        assert_eq!(h[header::COOKIE], "x=\"q v\"");
    }

    #[test]
    fn requests_without_the_cookie_are_untouched() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1;;  b=2"));
        h.append(header::COOKIE, HeaderValue::from_static("embedgate_sessionx=3"));
        assert!(take(&mut h, "embedgate_session").is_empty());
        let fields: Vec<_> = h.get_all(header::COOKIE).iter().collect();
        assert_eq!(fields, ["a=1;;  b=2", "embedgate_sessionx=3"]);
    }
}
