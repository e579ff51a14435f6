//! stub until the assertion module lands
use std::path::Path;
pub const LIFETIME_SECONDS: u64 = 60;
#[derive(Debug, thiserror::Error)]
pub enum AssertionError {
    #[error("x")]
    X,
}
#[derive(Debug)]
pub struct Signer;
impl Signer {
    pub fn generate() -> Result<Signer, AssertionError> {
        Ok(Signer)
    }
    pub fn from_pem_file(_p: &Path) -> Result<Signer, AssertionError> {
        Ok(Signer)
    }
    pub fn jwks_json(&self) -> &str {
        "{}"
    }
}
pub struct Claims<'a> {
    pub iss: &'a str,
    pub aud: &'a str,
    pub sub: &'a str,
    pub groups: &'a [String],
    pub iat: u64,
    pub exp: u64,
}
#[derive(Debug)]
pub struct Cached {
    token: String,
}
pub fn reuse_or_sign(
    cache: &mut Option<Cached>,
    _s: &Signer,
    _c: &Claims<'_>,
    _now: u64,
) -> Result<String, AssertionError> {
    Ok(cache.as_ref().map(|c| c.token.clone()).unwrap_or_default())
}
