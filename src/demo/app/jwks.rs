//! The gateway's JWK Set as the demo app keeps it: fetched on first need,
//! trusted for a minute, and fetched again early when a token names a key
//! it does not hold (the gateway may have restarted with a new key).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, StatusCode};
use serde_json::Value;

use crate::demo::client::GatewayClient;
use crate::demo::verify::{verify, VerifyError};

/// Where the gateway publishes its assertion keys (SPEC §5).
pub(crate) const JWKS_PATH: &str = "/.well-known/embedgate/jwks.json";
/// How long the app trusts a fetched JWK Set before fetching it again.
const JWKS_TTL: Duration = Duration::from_secs(60);
/// The whole JWKS fetch, connection included, must take less than this.
const JWKS_TIMEOUT: Duration = Duration::from_secs(2);

/// The gateway's JWK Set and how to fetch it.
pub(crate) struct Jwks {
    gateway: GatewayClient,
    cached: Mutex<Option<Fetched>>,
}

/// The JWK Set as last fetched.
struct Fetched {
    text: Arc<str>,
    at: Instant,
}

impl Jwks {
    /// Nothing fetched yet.
    pub(crate) fn new(gateway: GatewayClient) -> Jwks {
        Jwks {
            gateway,
            cached: Mutex::new(None),
        }
    }

    /// [`verify`] against the cached JWK Set, fetched again once when the
    /// token names a key it does not hold. The error is for display.
    pub(crate) async fn verify(&self, token: &str) -> Result<Value, String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let (jwks, fresh) = match self.cached() {
            Some(jwks) => (jwks, false),
            None => (self.fetch().await?, true),
        };
        let verified = match verify(&jwks, token, now) {
            Err(VerifyError::UnknownKid) if !fresh => {
                let jwks = self.fetch().await?;
                verify(&jwks, token, now)
            }
            other => other,
        };
        verified.map_err(|e| e.to_string())
    }

    fn cached(&self) -> Option<Arc<str>> {
        let cache = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
        cache
            .as_ref()
            .filter(|c| c.at.elapsed() < JWKS_TTL)
            .map(|c| c.text.clone())
    }

    async fn fetch(&self) -> Result<Arc<str>, String> {
        let accept = (header::ACCEPT, HeaderValue::from_static("application/json"));
        let answer = self
            .gateway
            .call(Method::GET, JWKS_PATH, vec![accept], Bytes::new(), JWKS_TIMEOUT)
            .await
            .map_err(|e| format!("cannot fetch the gateway's JWKS: {e}"))?;
        if answer.status != StatusCode::OK {
            return Err(format!("the gateway's JWKS answered {}", answer.status));
        }
        let text: Arc<str> = String::from_utf8(answer.body.to_vec())
            .map_err(|_| "the gateway's JWKS is not UTF-8".to_owned())?
            .into();
        *self.cached.lock().unwrap_or_else(PoisonError::into_inner) = Some(Fetched {
            text: text.clone(),
            at: Instant::now(),
        });
        Ok(text)
    }
}
