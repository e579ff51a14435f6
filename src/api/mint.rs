//! `POST /api/ext/users/personal-access-token` (SPEC §3): validate, check
//! access and limits, mint a PAT, keep only its hash.

use std::time::{Duration, SystemTime};

use http::{Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::fields::{self, Text, WholeNumber};
use super::identity;
use crate::body::Body;
use crate::config::{self, ApiToken, Pat, UserSource};
use crate::error::GatewayError;
use crate::session::{self, Attributes, PatRecord};
use crate::state::State;
use crate::token;

/// The body as sent (SPEC §3).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MintBody {
    #[serde(default, deserialize_with = "fields::present")]
    email: Option<Text>,
    #[serde(rename = "appId", default, deserialize_with = "fields::present")]
    app_id: Option<Text>,
    #[serde(rename = "sessionExpiry", default, deserialize_with = "fields::present")]
    session_expiry: Option<WholeNumber>,
    #[serde(rename = "patExpiry", default, deserialize_with = "fields::present")]
    pat_expiry: Option<WholeNumber>,
    #[serde(default, deserialize_with = "fields::present")]
    groups: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "fields::present")]
    attributes: Option<serde_json::Value>,
}

/// A validated mint request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct MintRequest {
    /// Lowercased.
    pub(crate) email: String,
    /// Lowercased.
    pub(crate) app_id: String,
    pub(crate) session_expiry_minutes: u64,
    pub(crate) pat_expiry_seconds: u64,
    /// Vouched for by the portal (`[identity] users = "portal"` only).
    pub(crate) groups: Vec<String>,
    /// Vouched for by the portal.
    pub(crate) attributes: Attributes,
}

/// Checks the body against the table of SPEC §3, field by field in the
/// table's order, then the portal's `groups` and `attributes`; the error
/// names the field.
pub(crate) fn parse(body: &[u8], limits: &Pat, users: UserSource) -> Result<MintRequest, GatewayError> {
    let body: MintBody = fields::parse(body)?;
    let email = fields::required(body.email, "email")?;
    let email = match users {
        UserSource::Portal => identity::email(&email)?,
        // The directory decides: an address it does not list is a 404.
        UserSource::Config => email.to_ascii_lowercase(),
    };
    let app_id = fields::required(body.app_id, "appId")?;
    if !config::is_uuid(&app_id) {
        return Err(GatewayError::Invalid("appId: must be a UUID".into()));
    }
    let session_expiry_minutes = fields::in_range(
        body.session_expiry,
        "sessionExpiry",
        limits.max_session_expiry_minutes,
        limits.default_session_expiry_minutes,
    )?;
    let pat_expiry_seconds = fields::in_range(
        body.pat_expiry,
        "patExpiry",
        limits.max_pat_expiry_seconds,
        limits.default_pat_expiry_seconds,
    )?;
    let groups = match (body.groups, users) {
        (None, _) => Vec::new(),
        (Some(_), UserSource::Config) => {
            return Err(GatewayError::Invalid(
                "groups: not accepted with [identity] users = \"config\" (the configured users' groups apply)".into(),
            ))
        }
        (Some(value), UserSource::Portal) => identity::groups(value)?,
    };
    let attributes = body
        .attributes
        .map(identity::attributes)
        .transpose()?
        .unwrap_or_default();
    Ok(MintRequest {
        email,
        app_id: app_id.to_ascii_lowercase(),
        session_expiry_minutes,
        pat_expiry_seconds,
        groups,
        attributes,
    })
}

/// Serves a mint by the API token `caller`.
pub(crate) async fn handle(
    body: &[u8],
    caller: &ApiToken,
    state: &State,
    asked: &mut super::Asked,
) -> Result<Response<Body>, GatewayError> {
    let request = parse(body, &state.config.pat, state.config.identity)?;
    asked.user = Some(request.email.clone());
    asked.app = Some(request.app_id.clone());
    // Before anything is looked up or counted: a scoped token learns
    // nothing of the users and apps outside its scope, and cannot spend
    // their per-user quota.
    if !caller.reaches_app(&request.app_id) {
        return Err(GatewayError::Forbidden("this API token may not mint for this app"));
    }
    if !caller.reaches_email(&request.email) {
        return Err(GatewayError::Forbidden("this API token may not mint for this user"));
    }
    state
        .limits
        .mint_for_user(&request.email)
        .map_err(GatewayError::TooManyRequests)?;

    let groups = state
        .identify(&request.email, &request.groups)
        .ok_or_else(|| GatewayError::NotFound("email: no such user".into()))?;
    let app = state
        .app(&request.app_id)
        .ok_or_else(|| GatewayError::NotFound("appId: no such app".into()))?;
    if !app.admits(&request.email, &groups) {
        return Err(GatewayError::Forbidden("this user may not open this app"));
    }

    let pat = token::new_pat().map_err(|e| GatewayError::Internal(Box::new(e)))?;
    let ttl = Duration::from_secs(request.pat_expiry_seconds);
    let now = session::now_ms();
    let record = PatRecord {
        email: request.email.clone(),
        groups,
        attributes: request.attributes,
        app_id: app.id.to_string(),
        session_idle_ms: request.session_expiry_minutes * 60_000,
        expires_ms: now.saturating_add(session::millis(ttl)),
    };
    state.store.insert_pat(token::hash(&pat), record, now).await?;
    crate::metrics::global().pat_minted(&caller.name);
    tracing::info!(
        user = %request.email,
        app = %app.id,
        token = %caller.name,
        pat_expiry_seconds = request.pat_expiry_seconds,
        "minted a PAT"
    );
    let redirect_url = format!(
        "{}/embed-apps/{}?personal-access-token={}",
        app.public_base(&state.config.server.public_url),
        app.id,
        pat
    );
    let body = json!({
        "personalAccessToken": pat,
        "redirectUrl": redirect_url,
        "expiresAt": rfc3339(SystemTime::now() + ttl),
    });
    Ok(super::json_response(StatusCode::CREATED, &body))
}

/// `2026-11-23T20:42:48Z`: RFC 3339 in UTC, whole seconds.
pub(crate) fn rfc3339(time: SystemTime) -> String {
    let whole = time::OffsetDateTime::from(time)
        .replace_nanosecond(0)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    whole
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const APP: &str = "8BA8BF0E-6B8F-4E07-ABB9-6FD2D816FABC";

    fn limits() -> Pat {
        Pat {
            max_pat_expiry_seconds: 86_400,
            max_session_expiry_minutes: 1_440,
            default_pat_expiry_seconds: 3_600,
            default_session_expiry_minutes: 60,
            single_use: true,
        }
    }

    fn message(body: &str) -> String {
        match parse(body.as_bytes(), &limits(), UserSource::Config) {
            Ok(_) => "ok".into(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn absent_expiries_take_the_defaults_and_ids_are_lowercased() {
        let value = json!({"email": "Ann@Example.com", "appId": APP}).to_string();
        let parsed = parse(value.as_bytes(), &limits(), UserSource::Config).ok();
        assert_eq!(
            parsed,
            Some(MintRequest {
                email: "ann@example.com".into(),
                app_id: APP.to_ascii_lowercase(),
                session_expiry_minutes: 60,
                pat_expiry_seconds: 3_600,
                groups: Vec::new(),
                attributes: Attributes::new(),
            })
        );
    }

    #[test]
    fn groups_are_the_portals_only_in_portal_mode() {
        let body = json!({"email": "x@y.z", "appId": APP, "groups": ["sales"]}).to_string();
        let config = parse(body.as_bytes(), &limits(), UserSource::Config).err();
        assert!(
            config.is_some_and(|e| e.to_string().starts_with("groups: not accepted")),
            "the directory owns groups in config mode"
        );
        let portal = parse(body.as_bytes(), &limits(), UserSource::Portal).ok();
        assert_eq!(portal.map(|r| r.groups), Some(vec!["sales".to_string()]));
        let attrs = json!({"email": "x@y.z", "appId": APP, "attributes": {"dept": "ops"}}).to_string();
        let parsed = parse(attrs.as_bytes(), &limits(), UserSource::Config).ok();
        assert_eq!(parsed.map(|r| r.attributes.len()), Some(1), "attributes in either mode");
        let bad = json!({"email": "not an address", "appId": APP}).to_string();
        let refused = parse(bad.as_bytes(), &limits(), UserSource::Portal).err();
        assert_eq!(
            refused.map(|e| e.to_string()).as_deref(),
            Some("email: must be an email address")
        );
    }

    #[test]
    fn every_invalid_field_is_named() {
        let a = format!("\"appId\": \"{APP}\"");
        let cases = [
            (format!("{{{a}}}"), "email: required"),
            ("{\"email\": \"a@b.c\"}".to_string(), "appId: required"),
            (format!("{{\"email\": 5, {a}}}"), "email: must be a string"),
            (
                "{\"email\": \"a@b.c\", \"appId\": \"nope\"}".to_string(),
                "appId: must be a UUID",
            ),
            (
                format!("{{\"email\": \"a@b.c\", {a}, \"sessionExpiry\": 1.5}}"),
                "sessionExpiry: must be an integer",
            ),
            (
                format!("{{\"email\": \"a@b.c\", {a}, \"sessionExpiry\": 60.0}}"),
                "sessionExpiry: must be an integer",
            ),
            (
                format!("{{\"email\": \"a@b.c\", {a}, \"sessionExpiry\": \"60\"}}"),
                "sessionExpiry: must be an integer",
            ),
            (
                format!("{{\"email\": \"a@b.c\", {a}, \"sessionExpiry\": 0}}"),
                "sessionExpiry: must be between 1 and 1440",
            ),
            (
                format!("{{\"email\": \"a@b.c\", {a}, \"sessionExpiry\": -5}}"),
                "sessionExpiry: must be between 1 and 1440",
            ),
            (
                format!("{{\"email\": \"a@b.c\", {a}, \"sessionExpiry\": 1441}}"),
                "sessionExpiry: must be between 1 and 1440",
            ),
            (
                format!("{{\"email\": \"a@b.c\", {a}, \"patExpiry\": 86401}}"),
                "patExpiry: must be between 1 and 86400",
            ),
            (
                format!("{{\"email\": \"a@b.c\", {a}, \"patExpiry\": null}}"),
                "patExpiry: must be an integer",
            ),
            (
                format!("{{\"email\": \"a@b.c\", {a}, \"extra\": 1}}"),
                "extra: unknown field",
            ),
            ("[1]".to_string(), "body: expected a JSON object"),
        ];
        for (body, expected) in cases {
            assert_eq!(message(&body), expected, "{body}");
        }
        assert_eq!(
            message(&format!(
                "{{\"email\": \"a@b.c\", {a}, \"sessionExpiry\": 1440, \"patExpiry\": 1}}"
            )),
            "ok"
        );
    }

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_466_568);
        assert_eq!(rfc3339(t), "2026-11-23T20:42:48Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
        let fraction = t + Duration::from_millis(999);
        assert_eq!(
            rfc3339(fraction),
            "2026-11-23T20:42:48Z",
            "whole seconds, never rounded up"
        );
    }
}
