//! API request bodies: JSON into `#[derive(Deserialize)]` structs that deny
//! unknown fields, with every refusal a 400 that names its field.
//!
//! The body is parsed as JSON first (so malformed JSON, and anything but
//! an object, is one clear answer), then mapped onto the struct with
//! `serde_path_to_error`, which says which key an unknown field is. A known
//! field keeps what was sent ([`Text`], [`WholeNumber`]) even when it is the
//! wrong type, so the endpoint checks its fields in a fixed order and the
//! first problem it names is always the same one for the same body.

use serde::de::{DeserializeOwned, Deserializer};
use serde::Deserialize;
use serde_json::Value;

use crate::error::GatewayError;

/// A body mapped onto `T`, or the 400 naming what is wrong.
pub(crate) fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, GatewayError> {
    let Unique(value) = serde_json::from_slice(bytes).map_err(|error| {
        GatewayError::Invalid(match error.classify() {
            serde_json::error::Category::Data => "body: an object repeats a key".into(),
            _ => "body: malformed JSON".into(),
        })
    })?;
    if !value.is_object() {
        return Err(GatewayError::Invalid("body: expected a JSON object".into()));
    }
    serde_path_to_error::deserialize(value).map_err(|error| {
        // Known fields never fail to map (they keep what was sent), so a
        // failure is an unknown field, and the path is its name.
        let name: String = error
            .path()
            .iter()
            .next_back()
            .map(|segment| match segment {
                serde_path_to_error::Segment::Map { key } => key.clone(),
                other => other.to_string(),
            })
            .unwrap_or_default();
        GatewayError::Invalid(format!("{}: unknown field", clip(&name)))
    })
}

/// A JSON value in which no object repeats a key. Parsers disagree on
/// which of two equal keys wins (serde_json keeps the last, others the
/// first), so a body that a portal's own checks read one way must not be
/// read another way here: it is refused instead.
struct Unique(Value);

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueVisitor).map(Unique)
    }
}

struct UniqueVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Unique(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Unique(value) = map.next_value()?;
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom("repeated key"));
            }
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// A field name as echoed back: short and printable.
fn clip(name: &str) -> String {
    name.chars().filter(|c| !c.is_control()).take(64).collect()
}

/// `#[serde(default, deserialize_with = "present")]`: an absent field is
/// `None` but an explicit `null` reaches the field's own type (which calls
/// it the wrong type), unlike plain `Option`.
pub(crate) fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// A string field as sent: its text, trimmed, or `None` when it is not a
/// string.
#[derive(Debug)]
pub(crate) struct Text(Option<String>);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Text(match Value::deserialize(deserializer)? {
            Value::String(s) => Some(s.trim().to_owned()),
            _ => None,
        }))
    }
}

impl Text {
    /// The non-empty text of field `name`, or the 400 naming it.
    pub(crate) fn get(self, name: &str) -> Result<String, GatewayError> {
        match self.0 {
            None => Err(GatewayError::Invalid(format!("{name}: must be a string"))),
            Some(s) if s.is_empty() => Err(GatewayError::Invalid(format!("{name}: must not be empty"))),
            Some(s) => Ok(s),
        }
    }

    /// The text of field `name`, empty or not, or the 400 naming it.
    pub(crate) fn get_any(self, name: &str) -> Result<String, GatewayError> {
        self.0
            .ok_or_else(|| GatewayError::Invalid(format!("{name}: must be a string")))
    }
}

/// The text of a required string field `name`.
pub(crate) fn required(field: Option<Text>, name: &str) -> Result<String, GatewayError> {
    field
        .ok_or_else(|| GatewayError::Invalid(format!("{name}: required")))?
        .get(name)
}

/// A whole-number field as sent.
#[derive(Debug)]
pub(crate) enum WholeNumber {
    /// Zero or more.
    Unsigned(u64),
    /// Below zero: never in range.
    Negative,
    /// A float (even `60.0`), a string, `null`, …: not an integer at all.
    NotAnInteger,
}

impl<'de> Deserialize<'de> for WholeNumber {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match Value::deserialize(deserializer)? {
            Value::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(v), _) => WholeNumber::Unsigned(v),
                (None, Some(_)) => WholeNumber::Negative,
                (None, None) => WholeNumber::NotAnInteger,
            },
            _ => WholeNumber::NotAnInteger,
        })
    }
}

/// An optional whole-number field `name` in `1..=max`; absent: `default`.
pub(crate) fn in_range(field: Option<WholeNumber>, name: &str, max: u64, default: u64) -> Result<u64, GatewayError> {
    let out_of_range = || GatewayError::Invalid(format!("{name}: must be between 1 and {max}"));
    match field {
        None => Ok(default),
        Some(WholeNumber::Unsigned(v)) if (1..=max).contains(&v) => Ok(v),
        Some(WholeNumber::Unsigned(_) | WholeNumber::Negative) => Err(out_of_range()),
        Some(WholeNumber::NotAnInteger) => Err(GatewayError::Invalid(format!("{name}: must be an integer"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Probe {
        #[serde(default, deserialize_with = "present")]
        name: Option<Text>,
        #[serde(default, deserialize_with = "present")]
        count: Option<WholeNumber>,
    }

    fn message(body: &str) -> String {
        match parse::<Probe>(body.as_bytes()) {
            Ok(p) => match (required(p.name, "name"), in_range(p.count, "count", 10, 5)) {
                (Ok(n), Ok(c)) => format!("ok {n} {c}"),
                (Err(e), _) | (_, Err(e)) => e.to_string(),
            },
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn fields_are_named_and_absent_differs_from_null() {
        assert_eq!(message(r#"{"name": " x "}"#), "ok x 5");
        assert_eq!(message(r#"{"count": 3}"#), "name: required");
        assert_eq!(message(r#"{"name": null}"#), "name: must be a string");
        assert_eq!(message(r#"{"name": "  "}"#), "name: must not be empty");
        assert_eq!(message(r#"{"name": "x", "count": null}"#), "count: must be an integer");
        assert_eq!(message(r#"{"name": "x", "count": 1e3}"#), "count: must be an integer");
        assert_eq!(
            message(r#"{"name": "x", "count": -1}"#),
            "count: must be between 1 and 10"
        );
        assert_eq!(
            message(r#"{"name": "x", "count": 100000000000000000000000}"#),
            "count: must be an integer"
        );
    }

    #[test]
    fn unknown_fields_come_first_and_are_clipped() {
        assert_eq!(message(r#"{"name": 5, "zzz": 1}"#), "zzz: unknown field");
        let long = format!(r#"{{"{}\u0007": 1}}"#, "k".repeat(100));
        assert_eq!(message(&long), format!("{}: unknown field", "k".repeat(64)));
    }

    #[test]
    fn only_json_objects_are_bodies() {
        assert_eq!(message("[1]"), "body: expected a JSON object");
        assert_eq!(message("\"x\""), "body: expected a JSON object");
        assert_eq!(message("{"), "body: malformed JSON");
        assert_eq!(message(""), "body: malformed JSON");
    }

    #[test]
    fn an_object_that_repeats_a_key_is_refused_at_any_depth() {
        assert_eq!(message(r#"{"name": 1, "name": "y"}"#), "body: an object repeats a key");
        assert_eq!(
            message(r#"{"name": "x", "name": "x"}"#),
            "body: an object repeats a key"
        );
        assert_eq!(
            message(r#"{"name": "x", "zzz": [{"a": 1, "a": 2}]}"#),
            "body: an object repeats a key"
        );
        assert_eq!(
            message(r#"{"name": "x", "zzz": {"a": {"b": 1}}}"#),
            "zzz: unknown field"
        );
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(message(&format!(r#"{{"name": {deep}}}"#)), "body: malformed JSON");
    }
}
