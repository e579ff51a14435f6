//! Query strings (`application/x-www-form-urlencoded` pairs, as browsers
//! send them): split, percent-decode, and recognise the PAT parameter the
//! same way everywhere — the exchange that reads it and the log redaction
//! that hides it must never disagree about what it is.

use std::borrow::Cow;

/// The query parameter that carries a PAT (SPEC §4).
pub(crate) const PAT_PARAM: &str = "personal-access-token";

/// One `name=value` pair: decoded name and value, and the raw text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pair<'a> {
    pub(crate) name: Cow<'a, str>,
    pub(crate) value: Cow<'a, str>,
    pub(crate) raw: &'a str,
}

impl Pair<'_> {
    /// Whether this pair carries a PAT.
    pub(crate) fn is_pat(&self) -> bool {
        self.name.eq_ignore_ascii_case(PAT_PARAM)
    }
}

/// The non-empty pairs of `query`, in order.
pub(crate) fn pairs(query: &str) -> impl Iterator<Item = Pair<'_>> {
    query.split('&').filter(|raw| !raw.is_empty()).map(|raw| {
        let (name, value) = raw.split_once('=').unwrap_or((raw, ""));
        Pair {
            name: decode(name),
            value: decode(value),
            raw,
        }
    })
}

/// `query` without its PAT parameters (in any spelling [`Pair::is_pat`]
/// knows), the other pairs as they came; `None` when it has none, so that
/// most queries are not copied. An upstream never gets a PAT: it would log
/// a working credential.
pub(crate) fn without_pat(query: &str) -> Option<String> {
    if !pairs(query).any(|p| p.is_pat()) {
        return None;
    }
    let kept: Vec<&str> = pairs(query).filter(|p| !p.is_pat()).map(|p| p.raw).collect();
    Some(kept.join("&"))
}

/// Percent-decodes `s` (`+` is a space); invalid escapes stay as they are,
/// invalid UTF-8 is replaced.
pub(crate) fn decode(s: &str) -> Cow<'_, str> {
    if !s.contains(['%', '+']) {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_names_and_values() {
        let p: Vec<Pair<'_>> = pairs("a=1&personal%2Daccess%2Dtoken=pat_x&&b=hello+w%6Frld&c").collect();
        assert_eq!(p.len(), 4);
        assert!(p[1].is_pat());
        assert_eq!(p[1].value, "pat_x");
        assert_eq!(p[2].value, "hello world");
        assert_eq!(p[3].name, "c");
        assert_eq!(p[3].value, "");
    }

    #[test]
    fn pat_parameters_are_taken_out_in_every_spelling() {
        assert_eq!(without_pat("a=1&b=2"), None);
        assert_eq!(without_pat(""), None);
        assert_eq!(without_pat("personal-access-token=pat_x&x=1").as_deref(), Some("x=1"));
        assert_eq!(
            without_pat("x=1&Personal-Access-Token=pat_x&y=%20&personal%2Daccess%2Dtoken=pat_y").as_deref(),
            Some("x=1&y=%20")
        );
        assert_eq!(without_pat("personal-access-token").as_deref(), Some(""));
        assert_eq!(without_pat("%70ersonal-access-token=pat_x&&z").as_deref(), Some("z"));
    }

    #[test]
    fn bad_escapes_are_kept_and_never_panic() {
        assert_eq!(decode("%"), "%");
        assert_eq!(decode("%4"), "%4");
        assert_eq!(decode("%zz"), "%zz");
        assert_eq!(decode("a%41"), "aA");
        assert_eq!(decode("%ff"), "\u{fffd}");
    }
}
