//! `POST /api/ext/users/personal-access-token` (SPEC §3): validate, check
//! access and limits, mint a PAT, keep only its hash.

use std::time::{Duration, Instant, SystemTime};

use http::{Response, StatusCode};
use serde_json::{json, Map, Value};

use crate::body::Body;
use crate::config::{self, Pat};
use crate::error::GatewayError;
use crate::session::PatRecord;
use crate::state::State;
use crate::token;

/// A validated mint request.
#[derive(Debug, PartialEq, Eq)]
pub struct MintRequest {
    /// Lowercased.
    pub email: String,
    /// Lowercased.
    pub app_id: String,
    pub session_expiry_minutes: u64,
    pub pat_expiry_seconds: u64,
}

const FIELDS: [&str; 4] = ["email", "appId", "sessionExpiry", "patExpiry"];

/// Checks the body against the table of SPEC §3; the error names the field.
pub fn parse(body: Value, limits: &Pat) -> Result<MintRequest, GatewayError> {
    let Value::Object(fields) = body else {
        return Err(invalid("body: expected a JSON object"));
    };
    if let Some(unknown) = fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(GatewayError::Invalid(format!("{}: unknown field", clip(unknown))));
    }
    let email = string(&fields, "email")?.to_ascii_lowercase();
    let app_id = string(&fields, "appId")?;
    if !config::is_uuid(app_id) {
        return Err(invalid("appId: must be a UUID"));
    }
    let session_expiry_minutes = integer(
        &fields,
        "sessionExpiry",
        limits.max_session_expiry_minutes,
        limits.default_session_expiry_minutes,
    )?;
    let pat_expiry_seconds = integer(
        &fields,
        "patExpiry",
        limits.max_pat_expiry_seconds,
        limits.default_pat_expiry_seconds,
    )?;
    Ok(MintRequest {
        email,
        app_id: app_id.to_ascii_lowercase(),
        session_expiry_minutes,
        pat_expiry_seconds,
    })
}

fn invalid(message: &str) -> GatewayError {
    GatewayError::Invalid(message.to_owned())
}

/// An unknown field's name as echoed back: short and printable.
fn clip(name: &str) -> String {
    name.chars().filter(|c| !c.is_control()).take(64).collect()
}

fn string<'a>(fields: &'a Map<String, Value>, name: &str) -> Result<&'a str, GatewayError> {
    match fields.get(name) {
        None => Err(GatewayError::Invalid(format!("{name}: required"))),
        Some(Value::String(s)) if s.trim().is_empty() => {
            Err(GatewayError::Invalid(format!("{name}: must not be empty")))
        }
        Some(Value::String(s)) => Ok(s.trim()),
        Some(_) => Err(GatewayError::Invalid(format!("{name}: must be a string"))),
    }
}

/// An optional whole number in `1..=max`; absent: `default`.
fn integer(fields: &Map<String, Value>, name: &str, max: u64, default: u64) -> Result<u64, GatewayError> {
    let out_of_range = || GatewayError::Invalid(format!("{name}: must be between 1 and {max}"));
    match fields.get(name) {
        None => Ok(default),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_i64()) {
            (Some(v), _) if (1..=max).contains(&v) => Ok(v),
            (Some(_), _) | (None, Some(_)) => Err(out_of_range()),
            // A float, even one spelled `60.0`: the field is an integer.
            (None, None) => Err(GatewayError::Invalid(format!("{name}: must be an integer"))),
        },
        Some(_) => Err(GatewayError::Invalid(format!("{name}: must be an integer"))),
    }
}

/// Serves a mint.
pub fn handle(body: Value, state: &State) -> Result<Response<Body>, GatewayError> {
    let request = parse(body, &state.config.pat)?;
    state
        .limits
        .mint_for_user(&request.email)
        .map_err(GatewayError::TooManyRequests)?;

    let user = state
        .user(&request.email)
        .ok_or_else(|| GatewayError::Unknown("email: no such user".into()))?;
    let app = state
        .app(&request.app_id)
        .ok_or_else(|| GatewayError::Unknown("appId: no such app".into()))?;
    if !app.admits(user) {
        return Err(GatewayError::Forbidden("this user may not open this app"));
    }

    let pat = token::new_pat().map_err(|e| GatewayError::Internal(Box::new(e)))?;
    let ttl = Duration::from_secs(request.pat_expiry_seconds);
    state.store.insert_pat(
        token::hash(&pat),
        PatRecord {
            email: user.email.clone(),
            app_id: app.id.clone(),
            session_idle: Duration::from_secs(request.session_expiry_minutes * 60),
            expires_at: Instant::now() + ttl,
        },
    );
    tracing::info!(user = %user.email, app = %app.id, pat_expiry_seconds = request.pat_expiry_seconds, "minted a PAT");
    let redirect_url = format!(
        "{}/embed-apps/{}?personal-access-token={}",
        state.config.server.public_url, app.id, pat
    );
    let body = json!({
        "personalAccessToken": pat,
        "redirectUrl": redirect_url,
        "expiresAt": rfc3339(SystemTime::now() + ttl),
    });
    Ok(super::json_response(StatusCode::CREATED, &body))
}

/// `2026-11-23T20:42:48Z` (RFC 3339, UTC, whole seconds).
pub fn rfc3339(time: SystemTime) -> String {
    let secs = time.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        (rem % 3_600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let value = serde_json::from_str(body).unwrap_or(Value::Null);
        match parse(value, &limits()) {
            Ok(_) => "ok".into(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn absent_expiries_take_the_defaults_and_ids_are_lowercased() {
        let value = json!({"email": "Ann@Example.com", "appId": APP});
        let parsed = parse(value, &limits()).ok();
        assert_eq!(
            parsed,
            Some(MintRequest {
                email: "ann@example.com".into(),
                app_id: APP.to_ascii_lowercase(),
                session_expiry_minutes: 60,
                pat_expiry_seconds: 3_600,
            })
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
    }
}
