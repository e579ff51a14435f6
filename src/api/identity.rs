//! What a portal may vouch for at mint time besides the email: `groups`
//! (with `[identity] users = "portal"`) and `attributes` — the shapes
//! Looker's `group_ids`/`user_attributes` and Retool's `groupIds`/`metadata`
//! take. Every refusal is a 400 naming the field (and the attribute).

use serde_json::Value;

use crate::config;
use crate::error::GatewayError;
use crate::session::Attributes;

/// At most this many groups in one mint.
pub(crate) const MAX_GROUPS: usize = 32;
/// A group is 1 to this many characters.
pub(crate) const MAX_GROUP_LEN: usize = 64;
/// At most this many attributes in one mint.
pub(crate) const MAX_ATTRIBUTES: usize = 32;
/// The attributes object, serialised as JSON, is at most this many bytes.
pub(crate) const MAX_ATTRIBUTES_BYTES: usize = 2048;
/// The longest email address (RFC 5321 §4.5.3.1.3's path, less its brackets).
pub(crate) const MAX_EMAIL_BYTES: usize = 254;

fn invalid(message: String) -> GatewayError {
    GatewayError::Invalid(message)
}

/// A portal-vouched email: an address with one `@`, at most
/// [`MAX_EMAIL_BYTES`], whose local part is RFC 5322 `atext` and dots and
/// whose domain is letters, digits, `-` and dots; lowercased. No quoted
/// local parts, no address literals: nothing that reads differently in
/// `X-Embed-User` (no `,`, `;`, `"`, spaces or brackets).
pub(crate) fn email(text: &str) -> Result<String, GatewayError> {
    if text.len() > MAX_EMAIL_BYTES {
        return Err(invalid(format!("email: at most {MAX_EMAIL_BYTES} bytes")));
    }
    config::check_email(text).map_err(|_| invalid("email: must be an email address".into()))?;
    let (local, domain) = text.split_once('@').unwrap_or_default();
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c);
    let domain_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
    if !local.chars().all(atext) || !domain.chars().all(domain_char) {
        return Err(invalid("email: must be an email address".into()));
    }
    Ok(text.to_ascii_lowercase())
}

/// `groups`: an array of at most [`MAX_GROUPS`] strings of 1 to
/// [`MAX_GROUP_LEN`] characters of `[A-Za-z0-9._:@-]` (safe in the
/// comma-separated `X-Embed-Groups`); repeats are dropped.
pub(crate) fn groups(value: Value) -> Result<Vec<String>, GatewayError> {
    let Value::Array(items) = value else {
        return Err(invalid("groups: must be an array of strings".into()));
    };
    if items.len() > MAX_GROUPS {
        return Err(invalid(format!("groups: at most {MAX_GROUPS} entries")));
    }
    let mut groups: Vec<String> = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let Value::String(group) = item else {
            return Err(invalid(format!("groups: entry {i} must be a string")));
        };
        let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'-');
        if group.is_empty() || group.len() > MAX_GROUP_LEN || !group.bytes().all(allowed) {
            return Err(invalid(format!(
                "groups: entry {i} must be 1 to {MAX_GROUP_LEN} of A-Z a-z 0-9 . _ : @ -"
            )));
        }
        if !groups.contains(&group) {
            groups.push(group);
        }
    }
    Ok(groups)
}

/// `attributes`: a flat object of at most [`MAX_ATTRIBUTES`] keys of
/// `[A-Za-z0-9_-]` (1–64), each a string, number or boolean, at most
/// [`MAX_ATTRIBUTES_BYTES`] as JSON.
pub(crate) fn attributes(value: Value) -> Result<Attributes, GatewayError> {
    let Value::Object(map) = value else {
        return Err(invalid("attributes: must be a JSON object".into()));
    };
    if map.len() > MAX_ATTRIBUTES {
        return Err(invalid(format!("attributes: at most {MAX_ATTRIBUTES} keys")));
    }
    for (key, value) in &map {
        if config::check_attribute_key(key).is_err() {
            let shown: String = key.chars().filter(|c| !c.is_control()).take(64).collect();
            return Err(invalid(format!(
                "attributes: key {shown:?} must be 1 to 64 of A-Z a-z 0-9 _ -"
            )));
        }
        if !matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
            return Err(invalid(format!(
                "attributes.{key}: must be a string, a number or a boolean"
            )));
        }
    }
    let size = serde_json::to_vec(&map).map_or(usize::MAX, |bytes| bytes.len());
    if size > MAX_ATTRIBUTES_BYTES {
        return Err(invalid(format!(
            "attributes: at most {MAX_ATTRIBUTES_BYTES} bytes as JSON"
        )));
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message<T>(result: Result<T, GatewayError>) -> String {
        result.err().map(|e| e.to_string()).unwrap_or_else(|| "ok".into())
    }

    #[test]
    fn groups_are_bounded_strings_of_a_safe_alphabet() {
        assert_eq!(
            groups(json!(["sales", "org:acme", "a@b", "x.y_z-1", "sales"])).ok(),
            Some(vec!["sales".into(), "org:acme".into(), "a@b".into(), "x.y_z-1".into()])
        );
        assert_eq!(message(groups(json!([]))), "ok");
        assert_eq!(message(groups(json!("sales"))), "groups: must be an array of strings");
        assert_eq!(message(groups(Value::Null)), "groups: must be an array of strings");
        assert_eq!(message(groups(json!(["a", 5]))), "groups: entry 1 must be a string");
        assert_eq!(message(groups(json!([null]))), "groups: entry 0 must be a string");
        let alphabet = "groups: entry 0 must be 1 to 64 of A-Z a-z 0-9 . _ : @ -";
        for bad in ["", "a b", "a,b", "é", "a\n", &"g".repeat(65)] {
            assert_eq!(message(groups(json!([bad]))), alphabet, "{bad:?}");
        }
        assert_eq!(message(groups(json!(["g".repeat(64)]))), "ok");
        let many: Vec<String> = (0..33).map(|i| format!("g{i}")).collect();
        assert_eq!(message(groups(json!(many))), "groups: at most 32 entries");
        assert_eq!(message(groups(json!(many[..32]))), "ok");
    }

    #[test]
    fn attributes_are_a_flat_bounded_object() {
        let ok = attributes(json!({"department": "Sales", "level": 3, "beta": true, "ratio": 0.5}));
        assert_eq!(ok.map(|m| m.len()).ok(), Some(4));
        assert_eq!(message(attributes(json!([]))), "attributes: must be a JSON object");
        assert_eq!(message(attributes(Value::Null)), "attributes: must be a JSON object");
        for (value, name) in [
            (json!({"a": null}), "a"),
            (json!({"a": [1]}), "a"),
            (json!({"a": {"b": 1}}), "a"),
        ] {
            assert_eq!(
                message(attributes(value)),
                format!("attributes.{name}: must be a string, a number or a boolean")
            );
        }
        for key in ["", "a b", "a.b", "é", &"k".repeat(65)] {
            let got = message(attributes(json!({ key: 1 })));
            assert!(got.starts_with("attributes: key "), "{key:?}: {got}");
        }
        let many: serde_json::Map<String, Value> = (0..33).map(|i| (format!("k{i}"), json!(i))).collect();
        assert_eq!(message(attributes(Value::Object(many))), "attributes: at most 32 keys");
        let big = json!({"a": "x".repeat(2048)});
        assert_eq!(message(attributes(big)), "attributes: at most 2048 bytes as JSON");
        // {"a":"…"} is 8 bytes around the value.
        assert_eq!(message(attributes(json!({"a": "x".repeat(2040)}))), "ok");
    }

    #[test]
    fn portal_emails_are_addresses_of_at_most_254_bytes() {
        assert_eq!(email("Ann@Example.COM").ok().as_deref(), Some("ann@example.com"));
        for bad in ["ann", "a b@c", "é@b.c", "@b", "a@", "a@b@c"] {
            assert_eq!(message(email(bad)), "email: must be an email address", "{bad:?}");
        }
        let long = format!("{}@example.com", "a".repeat(243));
        assert_eq!(long.len(), 255);
        assert_eq!(message(email(&long)), "email: at most 254 bytes");
        assert_eq!(message(email(&long[1..])), "ok");
    }
}
