//! Views, batch sources, fields and entities in the shapes the Snowplow Signals
//! SDK (0.1.x) sends as JSON.
//!
//! Promises: a `View` that passed [`View::validate`] names a known entity, a
//! timestamp field, at least one field with a known type, a usable table, and a
//! well-formed `ttl` / `refresh_rate`. Unknown JSON keys are tolerated (newer SDKs
//! add some) but an unknown field *type* is an error that names the field.
//! Assumes nothing about the warehouse: column existence is checked by `check`.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Entities the Signals SDK defines client-side and sends as `{"name": ...}`.
/// Their join key is their name.
pub const BUILTIN_ENTITIES: [&str; 4] = [
    "domain_userid",
    "domain_sessionid",
    "user_id",
    "network_userid",
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entity {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl Entity {
    /// The column / Feast join key the entity is keyed by.
    pub fn join_key(&self) -> &str {
        &self.name
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    pub table: String,
    pub timestamp_field: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_timestamp_column: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_partition_column: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<serde_json::Value>,
}

/// The 16 value types of Signals / Feast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    Bytes,
    String,
    Int32,
    Int64,
    Double,
    Float,
    Bool,
    UnixTimestamp,
    BytesList,
    StringList,
    Int32List,
    Int64List,
    DoubleList,
    FloatList,
    BoolList,
    UnixTimestampList,
}

impl FieldType {
    pub const ALL: [FieldType; 16] = [
        FieldType::Bytes,
        FieldType::String,
        FieldType::Int32,
        FieldType::Int64,
        FieldType::Double,
        FieldType::Float,
        FieldType::Bool,
        FieldType::UnixTimestamp,
        FieldType::BytesList,
        FieldType::StringList,
        FieldType::Int32List,
        FieldType::Int64List,
        FieldType::DoubleList,
        FieldType::FloatList,
        FieldType::BoolList,
        FieldType::UnixTimestampList,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FieldType::Bytes => "bytes",
            FieldType::String => "string",
            FieldType::Int32 => "int32",
            FieldType::Int64 => "int64",
            FieldType::Double => "double",
            FieldType::Float => "float",
            FieldType::Bool => "bool",
            FieldType::UnixTimestamp => "unix_timestamp",
            FieldType::BytesList => "bytes_list",
            FieldType::StringList => "string_list",
            FieldType::Int32List => "int32_list",
            FieldType::Int64List => "int64_list",
            FieldType::DoubleList => "double_list",
            FieldType::FloatList => "float_list",
            FieldType::BoolList => "bool_list",
            FieldType::UnixTimestampList => "unix_timestamp_list",
        }
    }

    pub fn parse(s: &str) -> Option<FieldType> {
        FieldType::ALL.into_iter().find(|t| t.name() == s)
    }

    /// The scalar type of a list type, or `None` for scalars.
    pub fn element(self) -> Option<FieldType> {
        Some(match self {
            FieldType::BytesList => FieldType::Bytes,
            FieldType::StringList => FieldType::String,
            FieldType::Int32List => FieldType::Int32,
            FieldType::Int64List => FieldType::Int64,
            FieldType::DoubleList => FieldType::Double,
            FieldType::FloatList => FieldType::Float,
            FieldType::BoolList => FieldType::Bool,
            FieldType::UnixTimestampList => FieldType::UnixTimestamp,
            _ => return None,
        })
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A field as sent by the SDK. `type` is kept as text so that an unknown type
/// is reported by [`View::validate`] with the field's name instead of failing
/// deserialisation with a serde message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<serde_json::Value>,
}

impl Field {
    /// The parsed type; only call on a validated view.
    pub fn field_type(&self) -> FieldType {
        FieldType::parse(&self.type_name).expect("view was validated")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct View {
    pub name: String,
    #[serde(default = "default_version")]
    pub version: u32,
    pub entity: Entity,
    pub batch_source: BatchSource,
    pub fields: Vec<Field>,
    #[serde(default = "default_true")]
    pub online: bool,
    #[serde(default)]
    pub offline: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// ISO-8601 duration (`P1DT12H`): profile keys written for this view expire
    /// this long after their last write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// ISO-8601 duration overriding the scheduler interval for this view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_rate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<serde_json::Value>,
}

fn default_version() -> u32 {
    1
}
fn default_true() -> bool {
    true
}

/// `name:version`, the identity of a view everywhere in logs, keys and the CLI.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ViewId {
    pub name: String,
    pub version: u32,
}

impl fmt::Display for ViewId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.version)
    }
}

impl ViewId {
    /// Parses `NAME` (version `None`) or `NAME:VERSION`.
    pub fn parse_selector(s: &str) -> Result<(String, Option<u32>), String> {
        match s.rsplit_once(':') {
            Some((name, v)) if !name.is_empty() => v
                .parse::<u32>()
                .map(|v| (name.to_string(), Some(v)))
                .map_err(|_| format!("`{s}`: version after ':' must be a whole number")),
            _ if s.is_empty() => Err("empty view name".into()),
            _ => Ok((s.to_string(), None)),
        }
    }
}

impl View {
    pub fn id(&self) -> ViewId {
        ViewId {
            name: self.name.clone(),
            version: self.version,
        }
    }

    /// Feast feature view name: `{name}_v{version}`.
    pub fn feast_name(&self) -> String {
        format!("{}_v{}", self.name, self.version)
    }

    pub fn ttl(&self) -> Option<Duration> {
        self.ttl
            .as_deref()
            .and_then(|s| parse_iso8601_duration(s).ok())
    }

    pub fn refresh_rate(&self) -> Option<Duration> {
        self.refresh_rate
            .as_deref()
            .and_then(|s| parse_iso8601_duration(s).ok())
    }

    /// Every problem with the view, each naming the offending key. Empty means valid.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.name.trim().is_empty() {
            p.push("name: must not be empty".to_string());
        }
        if self.name.contains(':') {
            p.push(format!("name: `{}` must not contain ':'", self.name));
        }
        if self.entity.name.trim().is_empty() {
            p.push("entity.name: must not be empty".to_string());
        }
        if self.batch_source.table.trim().is_empty() {
            p.push("batch_source.table: must not be empty".to_string());
        }
        if self.batch_source.timestamp_field.trim().is_empty() {
            p.push("batch_source.timestamp_field: must not be empty".to_string());
        }
        if self.fields.is_empty() {
            p.push("fields: a view needs at least one field".to_string());
        }
        let mut seen = std::collections::HashSet::new();
        for (i, f) in self.fields.iter().enumerate() {
            if f.name.trim().is_empty() {
                p.push(format!("fields[{i}].name: must not be empty"));
            }
            if !seen.insert(f.name.to_ascii_uppercase()) {
                p.push(format!("fields[{i}].name: `{}` appears twice", f.name));
            }
            if FieldType::parse(&f.type_name).is_none() {
                p.push(format!(
                    "fields[{i}] `{}`: unknown type `{}` (expected one of: {})",
                    f.name,
                    f.type_name,
                    FieldType::ALL.map(|t| t.name()).join(", ")
                ));
            }
            if f.name.eq_ignore_ascii_case(&self.entity.name)
                || f.name
                    .eq_ignore_ascii_case(&self.batch_source.timestamp_field)
            {
                p.push(format!(
                    "fields[{i}] `{}`: the entity and timestamp columns are not fields",
                    f.name
                ));
            }
        }
        if let Some(owner) = &self.owner {
            if !looks_like_email(owner) {
                p.push(format!(
                    "owner: `{owner}` is not an email address (the Signals SDK requires one)"
                ));
            }
        }
        for (key, value) in [("ttl", &self.ttl), ("refresh_rate", &self.refresh_rate)] {
            if let Some(v) = value {
                match parse_iso8601_duration(v) {
                    Ok(d) if d.is_zero() && key == "refresh_rate" => {
                        p.push(format!("{key}: `{v}` must be longer than zero"))
                    }
                    Ok(_) => {}
                    Err(e) => p.push(format!("{key}: {e}")),
                }
            }
        }
        p
    }

    pub fn validate(&self) -> Result<(), String> {
        let p = self.problems();
        if p.is_empty() {
            Ok(())
        } else {
            Err(format!("view `{}`: {}", self.name, p.join("; ")))
        }
    }
}

/// `local@domain.tld` without spaces: the shape the SDK's `EmailStr` insists on,
/// so a view this server accepts is one the SDK can read back.
fn looks_like_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.contains('@')
                && domain.split('.').count() >= 2
                && domain.split('.').all(|p| !p.is_empty())
                && !s.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

/// Parses an ISO-8601 duration of the form `PnDTnHnMnS` (also `PnW`; fractional
/// seconds allowed). Years and months are refused: their length is ambiguous.
pub fn parse_iso8601_duration(s: &str) -> Result<Duration, String> {
    let bad = |why: &str| format!("`{s}` is not an ISO-8601 duration such as P1DT12H ({why})");
    let rest = s
        .strip_prefix('P')
        .or_else(|| s.strip_prefix('p'))
        .ok_or_else(|| bad("must start with P"))?;
    if rest.is_empty() {
        return Err(bad("nothing after P"));
    }
    let mut total = 0f64;
    let mut in_time = false;
    let mut num = String::new();
    let mut any = false;
    for c in rest.chars() {
        match c.to_ascii_uppercase() {
            'T' if !in_time && num.is_empty() => in_time = true,
            d if d.is_ascii_digit() || d == '.' => num.push(d),
            unit => {
                let n: f64 = num
                    .parse()
                    .map_err(|_| bad("number expected before unit"))?;
                num.clear();
                any = true;
                let secs = match (unit, in_time) {
                    ('W', false) => 7.0 * 86400.0,
                    ('D', false) => 86400.0,
                    ('H', true) => 3600.0,
                    ('M', true) => 60.0,
                    ('S', true) => 1.0,
                    ('Y' | 'M', false) => return Err(bad("years and months are not supported")),
                    _ => return Err(bad("unexpected unit")),
                };
                total += n * secs;
            }
        }
    }
    if !num.is_empty() || !any {
        return Err(bad("number without unit"));
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed_view() -> View {
        serde_json::from_str(
            r#"{"name":"ecommerce_transaction_interactions_features","version":1,
            "entity":{"name":"domain_userid"},
            "batch_source":{"name":"src","timestamp_field":"UPDATED_AT","owner":"user@company.com",
              "database":"SNOWPLOW_DEV1","schema":"SIGNALS","table":"T"},
            "online":true,"offline":true,"owner":"user@company.com",
            "fields":[{"name":"TOTAL_TRANSACTIONS","type":"int32"}]}"#,
        )
        .unwrap()
    }

    #[test]
    fn seed_view_is_valid_and_named_for_feast() {
        let v = seed_view();
        assert_eq!(v.validate(), Ok(()));
        assert_eq!(
            v.feast_name(),
            "ecommerce_transaction_interactions_features_v1"
        );
    }

    #[test]
    fn unknown_field_type_is_named() {
        let mut v = seed_view();
        v.fields[0].type_name = "int128".into();
        let e = v.validate().unwrap_err();
        assert!(
            e.contains("TOTAL_TRANSACTIONS") && e.contains("int128"),
            "{e}"
        );
    }

    #[test]
    fn owner_must_be_an_email() {
        let mut v = seed_view();
        v.owner = Some("not an email".into());
        let e = v.validate().unwrap_err();
        assert!(e.contains("owner") && e.contains("not an email"), "{e}");
        v.owner = Some("a@b".into());
        assert!(v.validate().is_err());
        v.owner = Some("data.team@example.co.uk".into());
        assert_eq!(v.validate(), Ok(()));
    }

    #[test]
    fn all_sixteen_types_parse() {
        for t in FieldType::ALL {
            assert_eq!(FieldType::parse(t.name()), Some(t));
        }
        assert_eq!(FieldType::ALL.len(), 16);
    }

    #[test]
    fn iso_durations() {
        assert_eq!(
            parse_iso8601_duration("P1DT12H").unwrap(),
            Duration::from_secs(36 * 3600)
        );
        assert_eq!(
            parse_iso8601_duration("PT5M").unwrap(),
            Duration::from_secs(300)
        );
        assert_eq!(
            parse_iso8601_duration("PT0.5S").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(
            parse_iso8601_duration("P2W").unwrap(),
            Duration::from_secs(14 * 86400)
        );
        assert!(parse_iso8601_duration("P1M").is_err());
        assert!(parse_iso8601_duration("5m").is_err());
        assert!(parse_iso8601_duration("PT").is_err());
        assert!(parse_iso8601_duration("PT5").is_err());
    }

    #[test]
    fn selectors() {
        assert_eq!(ViewId::parse_selector("a").unwrap(), ("a".into(), None));
        assert_eq!(
            ViewId::parse_selector("a:3").unwrap(),
            ("a".into(), Some(3))
        );
        assert!(ViewId::parse_selector("a:x").is_err());
    }
}
