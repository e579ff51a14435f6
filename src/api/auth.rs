//! `Authorization: Basic <token>` as ToolJet's PAT API takes it: the token
//! itself follows `Basic`, not a base64 `user:password`. The token is
//! hashed and compared with every configured hash in constant time.

use http::header::{self, HeaderMap};
use subtle::ConstantTimeEq;

use crate::error::GatewayError;
use crate::token::{self, TokenHash};

/// The hash of the presented API token, if it is one of `accepted`.
pub(crate) fn authenticate(headers: &HeaderMap, accepted: &[TokenHash]) -> Result<TokenHash, GatewayError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("basic").then(|| token.trim())
        })
        .filter(|t| !t.is_empty())
        .ok_or(GatewayError::Unauthorized)?;
    let hash = token::hash(presented);
    // Compare against every entry, without stopping at a match.
    let matched = accepted
        .iter()
        .fold(subtle::Choice::from(0), |found, known| found | known.ct_eq(&hash));
    if bool::from(matched) {
        Ok(hash)
    } else {
        Err(GatewayError::Unauthorized)
    }
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

    #[test]
    fn accepts_a_configured_token_in_either_scheme_case() {
        let accepted = [token::hash("other"), token::hash("s3cret")];
        assert_eq!(
            authenticate(&headers("Basic s3cret"), &accepted).ok(),
            Some(token::hash("s3cret"))
        );
        assert!(authenticate(&headers("basic s3cret"), &accepted).is_ok());
    }

    #[test]
    fn refuses_missing_wrong_or_other_scheme() {
        let accepted = [token::hash("s3cret")];
        assert!(authenticate(&HeaderMap::new(), &accepted).is_err());
        assert!(authenticate(&headers("Basic nope"), &accepted).is_err());
        assert!(authenticate(&headers("Bearer s3cret"), &accepted).is_err());
        assert!(authenticate(&headers("Basic "), &accepted).is_err());
        assert!(authenticate(&headers("Basic s3cret"), &[]).is_err());
    }
}
