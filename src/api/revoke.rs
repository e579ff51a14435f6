//! `POST /api/ext/users/sessions/revoke` (SPEC §6): ends every session and
//! unused PAT of a user (for one app, when `appId` is given). The user need
//! not still be configured: a removed user's sessions must be revocable.

use http::{Response, StatusCode};
use serde_json::{json, Value};

use crate::body::Body;
use crate::config;
use crate::error::GatewayError;
use crate::state::State;

/// Serves a revocation.
pub fn handle(body: Value, state: &State) -> Result<Response<Body>, GatewayError> {
    let (email, app_id) = parse(&body)?;
    let revoked = state.store.revoke(&email, app_id.as_deref());
    tracing::info!(
        user = %email,
        app = app_id.as_deref().unwrap_or("*"),
        sessions = revoked.sessions,
        tokens = revoked.tokens,
        "revoked"
    );
    Ok(super::json_response(
        StatusCode::OK,
        &json!({"revokedSessions": revoked.sessions, "revokedTokens": revoked.tokens}),
    ))
}

fn parse(body: &Value) -> Result<(String, Option<String>), GatewayError> {
    let Value::Object(fields) = body else {
        return Err(GatewayError::Invalid("body: expected a JSON object".into()));
    };
    if let Some(unknown) = fields.keys().find(|k| !matches!(k.as_str(), "email" | "appId")) {
        let name: String = unknown.chars().filter(|c| !c.is_control()).take(64).collect();
        return Err(GatewayError::Invalid(format!("{name}: unknown field")));
    }
    let email = match fields.get("email") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_ascii_lowercase(),
        Some(Value::String(_)) => return Err(GatewayError::Invalid("email: must not be empty".into())),
        Some(_) => return Err(GatewayError::Invalid("email: must be a string".into())),
        None => return Err(GatewayError::Invalid("email: required".into())),
    };
    let app_id = match fields.get("appId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if config::is_uuid(s.trim()) => Some(s.trim().to_ascii_lowercase()),
        Some(Value::String(_)) => return Err(GatewayError::Invalid("appId: must be a UUID".into())),
        Some(_) => return Err(GatewayError::Invalid("appId: must be a string".into())),
    };
    Ok((email, app_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_id_is_optional_and_checked() {
        let ok = parse(&json!({"email": "A@x.io"})).ok();
        assert_eq!(ok, Some(("a@x.io".to_string(), None)));
        let scoped = parse(&json!({"email": "a@x.io", "appId": "8BA8BF0E-6B8F-4E07-ABB9-6FD2D816FABC"})).ok();
        assert_eq!(
            scoped.and_then(|(_, a)| a).as_deref(),
            Some("8ba8bf0e-6b8f-4e07-abb9-6fd2d816fabc")
        );
        let msg = |v: Value| parse(&v).err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(msg(json!({"appId": "x"})), "email: required");
        assert_eq!(msg(json!({"email": "a@x.io", "appId": "x"})), "appId: must be a UUID");
        assert_eq!(msg(json!({"email": "a@x.io", "other": 1})), "other: unknown field");
    }
}
