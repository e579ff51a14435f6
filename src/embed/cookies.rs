//! The gateway's session cookie in a request's `Cookie` fields (RFC 6265
//! §5.4). HTTP/2 clients may split `Cookie` into several fields (RFC 9113
//! §8.2.3): all of them are read.
//!
//! Read as bytes, pair by pair, as browsers write them (`name=value`
//! joined by `; `): a cookie the gateway cannot make sense of (an app's
//! own `pref=café` in raw UTF-8, a fragment with no `=`) never hides the
//! gateway's own in the same field. The `cookie` crate parses only text,
//! and would give up on the whole field.

use http::header::{self, HeaderMap, HeaderValue};

/// Takes the cookie `name` out of the request: returns every value it had
/// (a browser may hold one per matching path) and leaves the other cookies
/// in one `Cookie` field, as an HTTP/1.1 upstream expects, so the upstream
/// never sees the gateway's session.
///
/// Fields without that cookie are left exactly as they came. Where it is
/// taken out, the other pairs are written back as they came (trimmed); a
/// fragment that is no cookie pair at all (no `=`, or no name) is not kept.
#[cfg(any(test, feature = "internals"))]
pub(crate) fn take(headers: &mut HeaderMap, name: &str) -> Vec<Vec<u8>> {
    let mut ours = Vec::new();
    take_each(headers, name, |value| ours.push(value.to_owned()));
    ours
}

/// [`take`], handing each value to `each` as it is found (nothing is
/// copied or allocated for them); returns how many there were.
pub(crate) fn take_each(headers: &mut HeaderMap, name: &str, mut each: impl FnMut(&[u8])) -> usize {
    let name = name.as_bytes();
    let mut ours = 0;
    let mut rest = Vec::new();
    for field in headers.get_all(header::COOKIE) {
        let start = rest.len();
        let taken = ours;
        if !rest.is_empty() {
            rest.extend_from_slice(b"; ");
        }
        let separated = rest.len();
        for (pair_name, value, pair) in pairs(field.as_bytes()) {
            if pair_name == name {
                each(value);
                ours += 1;
            } else if !pair_name.is_empty() {
                if rest.len() > separated {
                    rest.extend_from_slice(b"; ");
                }
                rest.extend_from_slice(pair);
            }
        }
        if ours == taken {
            // None of ours in this field: passed on exactly as it came.
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

/// The `name=value` pairs of one `Cookie` field: each pair's name and
/// value (trimmed of spaces and tabs), and the pair as written (trimmed).
/// A fragment without `=` has an empty name.
pub(crate) fn pairs(field: &[u8]) -> impl Iterator<Item = (&[u8], &[u8], &[u8])> {
    field
        .split(|&b| b == b';')
        .map(trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (trim(&pair[..eq]), trim(&pair[eq + 1..]), pair),
            None => (&pair[..0], pair, pair),
        })
}

/// `bytes` without leading and trailing spaces and tabs (RFC 6265 §5.2's
/// whitespace).
fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(h: &mut HeaderMap) -> Vec<String> {
        take(h, "embedgate_session")
            .into_iter()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .collect()
    }

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
        assert_eq!(taken(&mut h), vec!["secret", "again"]);
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(h[header::COOKIE], "a=1; b=2; c=3");

        let mut only = HeaderMap::new();
        only.insert(header::COOKIE, HeaderValue::from_static("embedgate_session=secret"));
        assert_eq!(taken(&mut only), vec!["secret"]);
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
        assert_eq!(taken(&mut h), vec!["one", "two"]);
        assert_eq!(h[header::COOKIE], "x=\"q v\"");
    }

    #[test]
    fn requests_without_the_cookie_are_untouched() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1;;  b=2"));
        h.append(header::COOKIE, HeaderValue::from_static("embedgate_sessionx=3"));
        assert!(taken(&mut h).is_empty());
        let fields: Vec<_> = h.get_all(header::COOKIE).iter().collect();
        assert_eq!(fields, ["a=1;;  b=2", "embedgate_sessionx=3"]);
    }

    #[test]
    fn a_cookie_that_is_not_text_never_hides_ours() {
        let mut h = HeaderMap::new();
        let field = HeaderValue::from_bytes("pref=café; embedgate_session=secret; lang=fr".as_bytes())
            .expect("obs-text is a valid header value");
        h.append(header::COOKIE, field);
        assert_eq!(taken(&mut h), vec!["secret"]);
        assert_eq!(h[header::COOKIE].as_bytes(), "pref=café; lang=fr".as_bytes());

        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("junk; =x; embedgate_session=s"),
        );
        assert_eq!(taken(&mut h), vec!["s"]);
        assert!(
            !h.contains_key(header::COOKIE),
            "fragments that are no pair are not kept"
        );
    }
}
