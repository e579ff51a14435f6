//! `POST /api/ext/users/sessions/revoke` (SPEC §6): ends every session and
//! unused PAT of a user (for one app, when `appId` is given). The user need
//! not still be configured: a removed user's sessions must be revocable.

use http::{Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::fields::{self, Text};
use crate::body::Body;
use crate::config::{self, ApiToken};
use crate::error::GatewayError;
use crate::session::Revoked;
use crate::state::State;

/// The body as sent: `appId` may be absent or `null` (every app).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    #[serde(default, deserialize_with = "fields::present")]
    email: Option<Text>,
    #[serde(rename = "appId", default)]
    app_id: Option<Text>,
}

/// Serves a revocation by the API token `caller`. A token scoped to some
/// apps that names no app revokes within its apps only.
pub(crate) async fn handle(
    body: &[u8],
    caller: &ApiToken,
    state: &State,
    asked: &mut super::Asked,
) -> Result<Response<Body>, GatewayError> {
    let (email, app_id) = parse(body)?;
    asked.user = Some(email.clone());
    asked.app.clone_from(&app_id);
    if !caller.reaches_email(&email) {
        return Err(GatewayError::Forbidden("this API token may not revoke for this user"));
    }
    let mut revoked = Revoked::default();
    match (&app_id, &caller.apps) {
        (Some(app), _) if !caller.reaches_app(app) => {
            return Err(GatewayError::Forbidden("this API token may not revoke for this app"));
        }
        (None, Some(scope)) => {
            for app in scope {
                let one = state.store.revoke(&email, Some(app)).await?;
                revoked.sessions += one.sessions;
                revoked.tokens += one.tokens;
            }
        }
        (app, _) => revoked = state.store.revoke(&email, app.as_deref()).await?,
    }
    asked.revoked = Some(revoked);
    Ok(super::json_response(
        StatusCode::OK,
        &json!({"revokedSessions": revoked.sessions, "revokedTokens": revoked.tokens}),
    ))
}

/// The lowercased email and app id of a revocation.
fn parse(body: &[u8]) -> Result<(String, Option<String>), GatewayError> {
    let body: RevokeBody = fields::parse(body)?;
    let email = fields::required(body.email, "email")?.to_ascii_lowercase();
    let app_id = match body.app_id {
        None => None,
        Some(text) => {
            let id = text.get_any("appId")?;
            if !config::is_uuid(&id) {
                return Err(GatewayError::Invalid("appId: must be a UUID".into()));
            }
            Some(id.to_ascii_lowercase())
        }
    };
    Ok((email, app_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn parsed(v: Value) -> Result<(String, Option<String>), GatewayError> {
        parse(v.to_string().as_bytes())
    }

    #[test]
    fn app_id_is_optional_and_checked() {
        let ok = parsed(json!({"email": "A@x.io"})).ok();
        assert_eq!(ok, Some(("a@x.io".to_string(), None)));
        let null = parsed(json!({"email": "a@x.io", "appId": null})).ok();
        assert_eq!(null, Some(("a@x.io".to_string(), None)));
        let scoped = parsed(json!({"email": "a@x.io", "appId": "8BA8BF0E-6B8F-4E07-ABB9-6FD2D816FABC"})).ok();
        assert_eq!(
            scoped.and_then(|(_, a)| a).as_deref(),
            Some("8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc")
        );
        let msg = |v: Value| parsed(v).err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(msg(json!({"appId": "x"})), "email: required");
        assert_eq!(msg(json!({"email": "a@x.io", "appId": "x"})), "appId: must be a UUID");
        assert_eq!(msg(json!({"email": "a@x.io", "appId": 7})), "appId: must be a string");
        assert_eq!(msg(json!({"email": "a@x.io", "appId": ""})), "appId: must be a UUID");
        assert_eq!(msg(json!({"email": "a@x.io", "other": 1})), "other: unknown field");
        assert_eq!(msg(json!({"email": 5})), "email: must be a string");
        assert_eq!(msg(json!({"email": " "})), "email: must not be empty");
    }
}
