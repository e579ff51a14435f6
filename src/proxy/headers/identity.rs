//! `X-Embed-*` headers carry the identity the gateway vouches for (SPEC §5).
//! Whatever a client sent under that prefix is removed first, always, on
//! every route, so an upstream can trust what it finds there.

use http::header::{HeaderMap, HeaderName};

const PREFIX: &[u8] = b"x-embed-";

/// Removes every `X-Embed-*` field (header names are lowercase in `http`).
pub(crate) fn strip_client_identity(headers: &mut HeaderMap) {
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().as_bytes().starts_with(PREFIX))
        .cloned()
        .collect();
    for name in spoofed {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn removes_every_x_embed_field_whatever_its_case() {
        let mut h = HeaderMap::new();
        for name in [
            "X-Embed-User",
            "x-embed-groups",
            "X-EMBED-ASSERTION",
            "x-embed-anything",
        ] {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap_or(HeaderName::from_static("x-bad")),
                HeaderValue::from_static("evil"),
            );
        }
        h.insert("x-embedded", HeaderValue::from_static("kept"));
        strip_client_identity(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-embedded"], "kept");
    }
}
