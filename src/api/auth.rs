//! `Authorization: Basic <token>` as ToolJet's PAT API takes it: the token
//! itself follows `Basic`, not a base64 `user:password`. The token is
//! hashed and compared with every configured hash in constant time.

use http::header::{self, HeaderMap};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use crate::config::ApiToken;
use crate::error::GatewayError;
use crate::telemetry::audit;
use crate::token;

/// The token after `Basic`, if one was sent, in the one `Authorization`
/// field (two are no credentials: which one counts would be a guess).
fn presented(headers: &HeaderMap) -> Option<&str> {
    let mut fields = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(field), None) = (fields.next(), fields.next()) else {
        return None;
    };
    Some(field)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("basic").then(|| token.trim())
        })
        .filter(|t| !t.is_empty())
}

/// How the audit log names the token a request presented: its name when
/// accepted, else the fingerprint of its hash (never the token), or `none`.
pub(crate) fn label(headers: &HeaderMap, accepted: &[ApiToken]) -> String {
    match authenticate(headers, accepted) {
        Ok(token) => token.name.clone(),
        Err(_) => presented(headers).map_or_else(|| "none".to_owned(), |t| audit::fingerprint(&token::hash(t))),
    }
}

/// The accepted token that was presented, with its name and scope.
pub(crate) fn authenticate<'a>(headers: &HeaderMap, accepted: &'a [ApiToken]) -> Result<&'a ApiToken, GatewayError> {
    let presented = presented(headers).ok_or(GatewayError::Unauthorized)?;
    let hash = token::hash(presented);
    // Compare against every entry, without stopping at a match.
    let mut matched = u64::MAX;
    for (i, known) in accepted.iter().enumerate() {
        matched.conditional_assign(&(i as u64), known.hash.ct_eq(&hash));
    }
    usize::try_from(matched)
        .ok()
        .and_then(|i| accepted.get(i))
        .ok_or(GatewayError::Unauthorized)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
        h
    }

    fn tokens(secrets: &[&str]) -> Vec<ApiToken> {
        secrets
            .iter()
            .map(|s| ApiToken::unscoped(format!("name-of-{s}"), token::hash(s)))
            .collect()
    }

    #[test]
    fn accepts_a_configured_token_in_either_scheme_case() {
        let accepted = tokens(&["other", "s3cret", "third"]);
        let found = authenticate(&headers("Basic s3cret"), &accepted).ok();
        assert_eq!(found.map(|t| t.name.as_str()), Some("name-of-s3cret"));
        assert!(authenticate(&headers("basic s3cret"), &accepted).is_ok());
    }

    #[test]
    fn the_audit_label_is_the_name_or_a_fingerprint_never_the_token() {
        let accepted = tokens(&["s3cret"]);
        assert_eq!(label(&headers("Basic s3cret"), &accepted), "name-of-s3cret");
        let unknown = label(&headers("Basic wrong-token"), &accepted);
        assert_eq!(unknown, hex::encode(token::hash("wrong-token"))[..8]);
        assert_eq!(label(&HeaderMap::new(), &accepted), "none");
    }

    #[test]
    fn refuses_missing_wrong_or_other_scheme() {
        let accepted = tokens(&["s3cret"]);
        assert!(authenticate(&HeaderMap::new(), &accepted).is_err());
        assert!(authenticate(&headers("Basic nope"), &accepted).is_err());
        assert!(authenticate(&headers("Bearer s3cret"), &accepted).is_err());
        assert!(authenticate(&headers("Basic "), &accepted).is_err());
        assert!(authenticate(&headers("Basic s3cret"), &[]).is_err());
    }
}
