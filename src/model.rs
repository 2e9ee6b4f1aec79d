//! Views, batch sources, fields and entities in the shapes the Snowplow Signals
//! SDK (0.1.x) sends as JSON.
//!
//! Promises: a `View` that passed [`View::validate`] names a known entity, a
//! timestamp field, at least one field with a known type, a usable table, and a
//! well-formed `ttl` / `refresh_rate` within [`MIN_TTL`]`..=`[`MAX_TTL`] and
//! [`MIN_REFRESH_RATE`]`..=`[`MAX_REFRESH_RATE`]; durations are parsed with
//! integer arithmetic and never panic, whatever their size. Unknown JSON keys are tolerated (newer SDKs
//! add some) but an unknown field *type* is an error that names the field.
//! Names and free text are bounded (see [`MAX_VIEW_NAME_CHARS`] and the
//! constants after it), and a problem never quotes a value longer than
//! [`MAX_QUOTED_CHARS`] or with control characters verbatim ([`quoted`]).
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
    /// Extension (the Signals SDK ignores it): the IANA zone of this table's
    /// TIMESTAMP_NTZ wall times, overriding `warehouse.ntz_time_zone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ntz_time_zone: Option<String>,
    /// Extension (the Signals SDK ignores it): a boolean column; a row whose
    /// flag is true removes the view's values of its entity (newest-wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_delete_column: Option<String>,
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
            Some((name, v)) if !name.is_empty() => Some(v)
                .filter(|v| v.bytes().all(|b| b.is_ascii_digit()) && !v.starts_with('0'))
                .and_then(|v| v.parse::<u32>().ok())
                .map(|v| (name.to_string(), Some(v)))
                .ok_or_else(|| {
                    format!("`{s}`: version after ':' must be a whole number from 1, without sign or leading zero")
                }),
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

    /// The `ttl`, or `None` when absent, zero (Feast's "never expires", which
    /// the Signals SDK sends as `PT0S`) or invalid (unparsable, or outside
    /// [`MIN_TTL`]`..=`[`MAX_TTL`]).
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl
            .as_deref()
            .filter(|s| !is_zero_duration(s))
            .and_then(|s| duration_in_range("ttl", s, MIN_TTL, MAX_TTL).ok())
    }

    /// The `refresh_rate`, or `None` when absent or invalid (unparsable, or
    /// outside [`MIN_REFRESH_RATE`]`..=`[`MAX_REFRESH_RATE`]).
    pub fn refresh_rate(&self) -> Option<Duration> {
        self.refresh_rate.as_deref().and_then(|s| {
            duration_in_range("refresh_rate", s, MIN_REFRESH_RATE, MAX_REFRESH_RATE).ok()
        })
    }

    /// Every problem with the view, each naming the offending key. Empty means valid.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        p.extend(view_name_problem(&self.name));
        if self.version == 0 {
            p.push("version: must be 1 or more".to_string());
        }
        p.extend(identifier_problem("entity.name", &self.entity.name));
        p.extend(opt_text("entity.description", &self.entity.description));
        let b = &self.batch_source;
        for (key, value) in [
            ("batch_source.table", Some(&b.table)),
            ("batch_source.timestamp_field", Some(&b.timestamp_field)),
            ("batch_source.name", b.name.as_ref()),
            ("batch_source.database", b.database.as_ref()),
            ("batch_source.schema", b.schema.as_ref()),
            (
                "batch_source.created_timestamp_column",
                b.created_timestamp_column.as_ref(),
            ),
            (
                "batch_source.date_partition_column",
                b.date_partition_column.as_ref(),
            ),
            (
                "batch_source.soft_delete_column",
                b.soft_delete_column.as_ref(),
            ),
        ] {
            p.extend(value.and_then(|v| identifier_problem(key, v)));
        }
        p.extend(opt_text("batch_source.owner", &b.owner));
        p.extend(opt_text("batch_source.description", &b.description));
        p.extend(
            b.tags
                .as_ref()
                .and_then(|t| tags_problem("batch_source.tags", t)),
        );
        let ntz = self.batch_source.ntz_time_zone.as_deref();
        if let Some(problem) = ntz.and_then(|z| identifier_problem("batch_source.ntz_time_zone", z))
        {
            p.push(problem);
        } else if let Some(Err(e)) = ntz.map(crate::time::parse_zone) {
            p.push(format!("batch_source.ntz_time_zone: {e}"));
        }
        if self.fields.is_empty() {
            p.push("fields: a view needs at least one field".to_string());
        }
        if self.fields.len() > MAX_FIELDS {
            p.push(format!(
                "fields: {} fields; the limit is {MAX_FIELDS} per view",
                self.fields.len()
            ));
        }
        let mut seen = std::collections::HashSet::new();
        // Past the limit the fields are not looked at one by one: that could
        // make a reply of megabytes.
        for (i, f) in self.fields.iter().enumerate().take(MAX_FIELDS) {
            let name_problem = identifier_problem(&format!("fields[{i}].name"), &f.name);
            let name_ok = name_problem.is_none();
            p.extend(name_problem);
            if name_ok && !seen.insert(f.name.to_ascii_uppercase()) {
                p.push(format!(
                    "fields[{i}].name: `{}` appears twice",
                    quoted(&f.name)
                ));
            }
            if FieldType::parse(&f.type_name).is_none() {
                p.push(format!(
                    "fields[{i}] `{}`: unknown type `{}` (expected one of: {})",
                    quoted(&f.name),
                    quoted(&f.type_name),
                    FieldType::ALL.map(|t| t.name()).join(", ")
                ));
            }
            if name_ok
                && (f.name.eq_ignore_ascii_case(&self.entity.name)
                    || f.name
                        .eq_ignore_ascii_case(&self.batch_source.timestamp_field))
            {
                p.push(format!(
                    "fields[{i}] `{}`: the entity and timestamp columns are not fields",
                    f.name
                ));
            }
            p.extend(opt_text(
                &format!("fields[{i}].description"),
                &f.description,
            ));
            let tags_key = format!("fields[{i}].tags");
            p.extend(f.tags.as_ref().and_then(|t| tags_problem(&tags_key, t)));
        }
        if let Some(owner) = &self.owner {
            if let Some(problem) = text_problem("owner", owner) {
                p.push(problem);
            } else if !looks_like_email(owner) {
                p.push(format!(
                    "owner: `{}` is not an email address (the Signals SDK requires one)",
                    quoted(owner)
                ));
            }
        }
        p.extend(opt_text("description", &self.description));
        p.extend(self.tags.as_ref().and_then(|t| tags_problem("tags", t)));
        let ttl = self.ttl.clone().filter(|s| !is_zero_duration(s));
        let durations = [
            ("ttl", &ttl, MIN_TTL, MAX_TTL),
            (
                "refresh_rate",
                &self.refresh_rate,
                MIN_REFRESH_RATE,
                MAX_REFRESH_RATE,
            ),
        ];
        for (key, value, min, max) in durations {
            if let Some(Err(e)) = value
                .as_deref()
                .map(|v| duration_in_range(key, v, min, max))
            {
                p.push(e);
            }
        }
        if p.len() > MAX_PROBLEMS {
            let more = p.len() - (MAX_PROBLEMS - 1);
            p.truncate(MAX_PROBLEMS - 1);
            p.push(format!("... and {more} more problems"));
        }
        p
    }

    pub fn validate(&self) -> Result<(), String> {
        let p = self.problems();
        if p.is_empty() {
            Ok(())
        } else {
            Err(format!("view `{}`: {}", quoted(&self.name), p.join("; ")))
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

/// Longest view `name`, in characters: ASCII letters, digits, `_` and `-`
/// only (Feast feature view names). The name goes into every profile hash
/// (`_ts:{name}_v{version}`), metric label and Redis key (inside a Redis
/// Cluster hash tag, hence no `{`, `}` or `:`).
pub const MAX_VIEW_NAME_CHARS: usize = 128;
/// Longest warehouse identifier, in bytes: `entity.name`, `fields[i].name`,
/// and `batch_source.name`, `database`, `schema`, `table`, `timestamp_field`,
/// `created_timestamp_column`, `date_partition_column`, `ntz_time_zone`. Any
/// character but control characters (spaces and quotes are fine: identifiers
/// are quoted in SQL).
pub const MAX_IDENTIFIER_BYTES: usize = 255;
/// Longest free text (`owner`, `description`, at every level), in bytes; no NUL.
pub const MAX_TEXT_BYTES: usize = 4096;
/// Largest `tags` (of the view, its batch source or a field) as compact JSON, in bytes.
pub const MAX_TAGS_BYTES: usize = 16 * 1024;
/// Most fields in one view.
pub const MAX_FIELDS: usize = 1_000;
/// Most characters of a value a problem quotes; the rest is cut and counted.
pub const MAX_QUOTED_CHARS: usize = 64;

/// `value` as a problem may quote it: control characters escaped (`\u{0}`),
/// cut after [`MAX_QUOTED_CHARS`] characters (escapes included) with the
/// total length appended,
/// so a huge or binary value never ends up verbatim in a reply or a log line.
/// Short printable values come back unchanged.
pub fn quoted(value: &str) -> String {
    let (mut out, mut shown) = (String::new(), 0);
    for c in value.chars() {
        let piece = escaped(c);
        shown += piece.chars().count();
        if shown > MAX_QUOTED_CHARS {
            out.push_str(&format!("... ({} bytes in all)", value.len()));
            break;
        }
        out.push_str(&piece);
    }
    out
}

/// `value` safe for a terminal or a log line, whole: control characters
/// (newlines, ANSI escapes) shown escaped, so a name cannot forge a line.
pub fn printable(value: &str) -> String {
    value.chars().map(escaped).collect()
}

fn escaped(c: char) -> String {
    if c.is_control() {
        c.escape_unicode().collect()
    } else {
        c.into()
    }
}

/// The problem with identifier `value` of `key`, if any: empty (or blank),
/// over [`MAX_IDENTIFIER_BYTES`], or holding a control character.
pub fn identifier_problem(key: &str, value: &str) -> Option<String> {
    if value.trim().is_empty() {
        Some(format!("{key}: must not be empty"))
    } else if value.len() > MAX_IDENTIFIER_BYTES {
        Some(format!(
            "{key}: `{}` is {} bytes long; the limit is {MAX_IDENTIFIER_BYTES}",
            quoted(value),
            value.len()
        ))
    } else if value.chars().any(char::is_control) {
        Some(format!(
            "{key}: `{}` holds a control character; none are allowed",
            quoted(value)
        ))
    } else {
        None
    }
}

/// The problem with view name `value`, if any: see [`MAX_VIEW_NAME_CHARS`].
fn view_name_problem(value: &str) -> Option<String> {
    if value.is_empty() {
        Some("name: must not be empty".into())
    } else if value.chars().count() > MAX_VIEW_NAME_CHARS {
        Some(format!(
            "name: `{}` is {} characters long; the limit is {MAX_VIEW_NAME_CHARS}",
            quoted(value),
            value.chars().count()
        ))
    } else {
        let odd = |c: &char| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-');
        value.chars().find(odd).map(|c| {
            format!(
                "name: `{}` holds `{}`; a view name is ASCII letters, digits, `_` and `-` only",
                quoted(value),
                quoted(&c.to_string())
            )
        })
    }
}

/// The problem with free text `value` of `key`, if any: over
/// [`MAX_TEXT_BYTES`] or holding a NUL.
pub fn text_problem(key: &str, value: &str) -> Option<String> {
    if value.len() > MAX_TEXT_BYTES {
        Some(format!(
            "{key}: is {} bytes long; the limit is {MAX_TEXT_BYTES}",
            value.len()
        ))
    } else if value.contains('\0') {
        Some(format!("{key}: `{}` holds a NUL character", quoted(value)))
    } else {
        None
    }
}

/// [`text_problem`] of an optional value.
fn opt_text(key: &str, value: &Option<String>) -> Option<String> {
    value.as_deref().and_then(|v| text_problem(key, v))
}

/// Most problems one view reports; the rest are counted in a last line.
pub const MAX_PROBLEMS: usize = 50;

/// The problem with `tags` of `key`, if any: larger than [`MAX_TAGS_BYTES`] as JSON.
fn tags_problem(key: &str, tags: &serde_json::Value) -> Option<String> {
    let size = serde_json::to_vec(tags).map_or(usize::MAX, |v| v.len());
    (size > MAX_TAGS_BYTES)
        .then(|| format!("{key}: is {size} bytes as JSON; the limit is {MAX_TAGS_BYTES}"))
}

/// Shortest `ttl`: one second. Profile keys expire with millisecond precision,
/// but a profile that is gone before anyone can read it is a mistake.
pub const MIN_TTL: Duration = Duration::from_secs(1);
/// Longest `ttl`: 3650 days (`P3650D`, about ten years). Longer values are
/// typos (or overflow attempts) and would make Redis refuse every write.
pub const MAX_TTL: Duration = Duration::from_secs(3650 * 86_400);
/// Shortest `refresh_rate`: 10 seconds, so a typo cannot make the daemon run a
/// view back to back and hammer the warehouse.
pub const MIN_REFRESH_RATE: Duration = Duration::from_secs(10);
/// Longest `refresh_rate`: 366 days (`P366D`); the schedule adds it to the
/// current instant, which must never overflow.
pub const MAX_REFRESH_RATE: Duration = Duration::from_secs(366 * 86_400);

/// `d` as the shortest ISO-8601 duration that names it (`P3650D`, `PT10S`), for
/// messages about the limits above.
fn iso8601(d: Duration) -> String {
    let (secs, nanos) = (d.as_secs(), d.subsec_nanos());
    if nanos == 0 && secs > 0 && secs % 86_400 == 0 {
        format!("P{}D", secs / 86_400)
    } else if nanos == 0 {
        format!("PT{secs}S")
    } else {
        let frac = format!("{nanos:09}");
        format!("PT{secs}.{}S", frac.trim_end_matches('0'))
    }
}

/// Whether `s` is a well-formed duration of zero (`PT0S`, `P0D`).
fn is_zero_duration(s: &str) -> bool {
    parse_iso8601_duration(s).is_ok_and(|d| d.is_zero())
}

/// `value` of `key` parsed and within `min..=max`, or the problem naming the
/// key and the limit it breaks.
fn duration_in_range(
    key: &str,
    value: &str,
    min: Duration,
    max: Duration,
) -> Result<Duration, String> {
    let d = parse_iso8601_duration(value).map_err(|e| format!("{key}: {e}"))?;
    if d < min {
        Err(format!(
            "{key}: `{}` is shorter than the minimum of {}",
            quoted(value),
            iso8601(min)
        ))
    } else if d > max {
        Err(format!(
            "{key}: `{}` is longer than the maximum of {}",
            quoted(value),
            iso8601(max)
        ))
    } else {
        Ok(d)
    }
}

/// Parses an ISO-8601 duration: `PnW` alone, or `P[nD][T[nH][nM][n[.f]S]]`
/// with each unit at most once and in that order, `T` followed by at least
/// one component, whole numbers everywhere except seconds (up to 9 fractional
/// digits). Designators may be lower-case, as earlier versions accepted.
/// Years and months are refused: their length is ambiguous. Never panics: a
/// value too large for [`Duration`] is an error.
pub fn parse_iso8601_duration(s: &str) -> Result<Duration, String> {
    let bad = |why: &str| {
        format!(
            "`{}` is not an ISO-8601 duration such as P1DT12H ({why})",
            quoted(s)
        )
    };
    let upper = s.to_ascii_uppercase();
    let rest = upper
        .strip_prefix('P')
        .ok_or_else(|| bad("must start with P"))?;
    if rest.is_empty() {
        return Err(bad("nothing after P"));
    }
    let (date, time) = match rest.split_once('T') {
        Some((date, time)) => (date, Some(time)),
        None => (rest, None),
    };
    let date = iso8601_components(date).map_err(|why| bad(&why))?;
    let time = match time {
        Some("") => return Err(bad("T must be followed by hours, minutes or seconds")),
        Some(t) if t.contains('T') => return Err(bad("`T` appears twice")),
        Some(t) => iso8601_components(t).map_err(|why| bad(&why))?,
        None => Vec::new(),
    };
    if let Some(w) = date.iter().position(|c| c.unit == 'W') {
        if date.len() > 1 || !time.is_empty() {
            return Err(bad("weeks cannot be combined with other units"));
        }
        let c = &date[w];
        if c.nanos.is_some() {
            return Err(bad("only seconds may have a fraction"));
        }
        return c
            .whole
            .checked_mul(7 * 86_400)
            .map(Duration::from_secs)
            .ok_or_else(|| bad("too long"));
    }
    let mut secs = 0u64;
    let mut nanos = 0u32;
    for (part, order) in [(&date, &['D'][..]), (&time, &['H', 'M', 'S'][..])] {
        let mut next = 0;
        for c in part.iter() {
            let Some(pos) = order.iter().position(|u| *u == c.unit) else {
                return Err(bad(&match (c.unit, order.len()) {
                    ('Y' | 'M', 1) => "years and months are not supported".to_string(),
                    ('H' | 'S', 1) => format!("`{}` must come after T", c.unit),
                    ('D' | 'W', _) => format!("`{}` must come before T", c.unit),
                    (u, _) => format!("unexpected unit `{u}`"),
                }));
            };
            if pos < next {
                return Err(bad(&if pos + 1 == next {
                    format!("`{}` appears twice", c.unit)
                } else {
                    "units out of order (the order is D, T, H, M, S)".to_string()
                }));
            }
            next = pos + 1;
            if c.nanos.is_some() && c.unit != 'S' {
                return Err(bad("only seconds may have a fraction"));
            }
            let unit_secs = match c.unit {
                'D' => 86_400,
                'H' => 3_600,
                'M' => 60,
                _ => 1,
            };
            secs = c
                .whole
                .checked_mul(unit_secs)
                .and_then(|n| secs.checked_add(n))
                .ok_or_else(|| bad("too long"))?;
            nanos = c.nanos.unwrap_or(0);
        }
    }
    Ok(Duration::new(secs, nanos))
}

/// One `n[.f]U` of an ISO-8601 duration.
struct Iso8601Component {
    whole: u64,
    /// The fraction in nanoseconds, when one was written.
    nanos: Option<u32>,
    unit: char,
}

/// Splits `nU nU ...` (upper-case, no `P` or `T`) into components; the unit
/// order is checked by the caller.
fn iso8601_components(s: &str) -> Result<Vec<Iso8601Component>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while chars.peek().is_some() {
        let mut whole: Option<u64> = None;
        while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
            chars.next();
            whole = Some(
                whole
                    .unwrap_or(0)
                    .checked_mul(10)
                    .and_then(|n| n.checked_add(u64::from(d)))
                    .ok_or("too long")?,
            );
        }
        let mut nanos = None;
        if chars.peek() == Some(&'.') {
            chars.next();
            let (mut n, mut digits) = (0u32, 0u32);
            while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                chars.next();
                digits += 1;
                if digits > 9 {
                    return Err("at most 9 digits after the decimal point".into());
                }
                n = n * 10 + d;
            }
            if digits == 0 || whole.is_none() {
                return Err("digits expected on both sides of the decimal point".into());
            }
            nanos = Some(n * 10u32.pow(9 - digits));
        }
        let Some(whole) = whole else {
            return Err(match chars.peek() {
                Some(c) if c.is_alphabetic() => format!("number expected before `{c}`"),
                Some(c) => format!("unexpected character `{}`", quoted(&c.to_string())),
                None => "number expected".into(),
            });
        };
        match chars.next() {
            Some(unit) if unit.is_ascii_alphabetic() => {
                out.push(Iso8601Component { whole, nanos, unit })
            }
            Some(c) => return Err(format!("unexpected character `{}`", quoted(&c.to_string()))),
            None => return Err("number without unit".into()),
        }
    }
    Ok(out)
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
    fn every_allowed_duration_form_parses_exactly() {
        let s = Duration::from_secs;
        for (text, want) in [
            ("P1D", s(86_400)),
            ("PT1H30M", s(5_400)),
            ("P1DT1H2M3S", s(86_400 + 3_723)),
            ("P1DT30S", s(86_430)),
            ("PT1.123456789S", Duration::new(1, 123_456_789)),
            ("PT0.000001S", Duration::from_micros(1)),
            ("PT90S", s(90)),
            ("P0D", Duration::ZERO),
            ("p1dt12h", s(36 * 3_600)),
            ("P3650D", s(3_650 * 86_400)),
        ] {
            assert_eq!(parse_iso8601_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn loose_durations_are_refused_saying_why() {
        for (text, why) in [
            ("", "must start with P"),
            ("P", "nothing after P"),
            ("P1DT", "T must be followed by"),
            ("P1D1D", "`D` appears twice"),
            ("PT1H1H", "`H` appears twice"),
            ("PT1S1H", "out of order"),
            ("PT1M1H", "out of order"),
            ("PT1.5H", "only seconds may have a fraction"),
            ("P1.5D", "only seconds may have a fraction"),
            ("PT1.5M30S", "only seconds may have a fraction"),
            ("P1.5W", "only seconds may have a fraction"),
            ("P1W1D", "weeks cannot be combined"),
            ("P1WT1H", "weeks cannot be combined"),
            ("PT1.0123456789S", "at most 9 digits"),
            ("PT.5S", "digits expected on both sides"),
            ("PT5.S", "digits expected on both sides"),
            ("P1DT1H2", "number without unit"),
            ("PTS", "number expected before `S`"),
            ("P-1D", "unexpected character `-`"),
            ("P1D ", "unexpected character ` `"),
            ("P1 D", "unexpected character ` `"),
            ("PT1HT1M", "`T` appears twice"),
            ("P1H", "`H` must come after T"),
            ("PT1D", "`D` must come before T"),
            ("P1Y", "years and months are not supported"),
            ("P1M", "years and months are not supported"),
            ("P1X", "unexpected unit `X`"),
        ] {
            let e = parse_iso8601_duration(text).expect_err(text);
            assert!(
                e.starts_with(&format!(
                    "`{text}` is not an ISO-8601 duration such as P1DT12H ("
                )) && e.contains(why),
                "{text}: {e}"
            );
        }
    }

    #[test]
    fn durations_too_long_for_a_duration_are_errors_not_panics() {
        for text in [
            "P99999999999999999999D",
            "PT99999999999999999999S",
            "P213503982334602D",
            "P1000000000000000W",
            "PT18446744073709551615H",
        ] {
            let e = parse_iso8601_duration(text).expect_err(text);
            assert!(e.contains("too long"), "{text}: {e}");
        }
        assert_eq!(
            parse_iso8601_duration("PT18446744073709551615.999999999S"),
            Ok(Duration::MAX)
        );
    }

    #[test]
    fn parsing_never_panics_on_any_short_input() {
        let alphabet: Vec<char> = "PTDHMSWY.9-".chars().collect();
        let n = alphabet.len();
        for len in 0..=5u32 {
            for mut i in 0..n.pow(len) {
                let mut text = String::new();
                for _ in 0..len {
                    text.push(alphabet[i % n]);
                    i /= n;
                }
                let _ = parse_iso8601_duration(&text);
                let _ = parse_iso8601_duration(&format!("P{}{text}", "9".repeat(25)));
            }
        }
    }

    fn with_durations(ttl: Option<&str>, refresh_rate: Option<&str>) -> View {
        let mut v = seed_view();
        v.ttl = ttl.map(Into::into);
        v.refresh_rate = refresh_rate.map(Into::into);
        v
    }

    #[test]
    fn ttl_outside_one_second_to_3650_days_is_a_problem_naming_the_key_and_limit() {
        for (text, limit) in [
            ("PT18446744073709552S", "maximum of P3650D"),
            ("P10000000000D", "maximum of P3650D"),
            ("P3651D", "maximum of P3650D"),
            ("P3650DT0.000000001S", "maximum of P3650D"),
            ("PT0.999999999S", "minimum of PT1S"),
        ] {
            let p = with_durations(Some(text), None).problems();
            assert_eq!(p.len(), 1, "{text}: {p:?}");
            assert!(
                p[0].starts_with(&format!("ttl: `{text}` is ")) && p[0].contains(limit),
                "{text}: {p:?}"
            );
            assert_eq!(with_durations(Some(text), None).ttl(), None, "{text}");
        }
        let p = with_durations(Some("P99999999999999999999D"), None).problems();
        assert!(
            p.len() == 1 && p[0].starts_with("ttl: `P99999999999999999999D` is not an ISO-8601"),
            "{p:?}"
        );
        for (text, want) in [
            ("PT1S", MIN_TTL),
            ("P3650D", MAX_TTL),
            ("P1D", Duration::from_secs(86_400)),
        ] {
            let v = with_durations(Some(text), None);
            assert_eq!(v.validate(), Ok(()), "{text}");
            assert_eq!(v.ttl(), Some(want), "{text}");
        }
        // Zero is Feast's "never expires", as the Signals SDK sends it.
        let v = with_durations(Some("PT0S"), None);
        assert_eq!((v.validate(), v.ttl()), (Ok(()), None));
    }

    #[test]
    fn refresh_rate_outside_10_seconds_to_366_days_is_a_problem_naming_the_key_and_limit() {
        for (text, limit) in [
            ("PT10000000000000000000S", "maximum of P366D"),
            ("P367D", "maximum of P366D"),
            ("P53W", "maximum of P366D"),
            ("PT0.000000001S", "minimum of PT10S"),
            ("PT9.999999999S", "minimum of PT10S"),
            ("PT0S", "minimum of PT10S"),
        ] {
            let p = with_durations(None, Some(text)).problems();
            assert_eq!(p.len(), 1, "{text}: {p:?}");
            assert!(
                p[0].starts_with(&format!("refresh_rate: `{text}` is ")) && p[0].contains(limit),
                "{text}: {p:?}"
            );
            assert_eq!(
                with_durations(None, Some(text)).refresh_rate(),
                None,
                "{text}"
            );
        }
        let p = with_durations(None, Some("P99999999999999999999D")).problems();
        assert!(
            p.len() == 1 && p[0].starts_with("refresh_rate: `P99999999999999999999D` is not an"),
            "{p:?}"
        );
        for (text, want) in [("PT10S", MIN_REFRESH_RATE), ("P366D", MAX_REFRESH_RATE)] {
            let v = with_durations(None, Some(text));
            assert_eq!(v.validate(), Ok(()), "{text}");
            assert_eq!(v.refresh_rate(), Some(want), "{text}");
        }
    }

    #[test]
    fn both_bad_durations_are_reported_together() {
        let e = with_durations(Some("P1D1D"), Some("PT1S1H"))
            .validate()
            .unwrap_err();
        assert!(
            e.contains("ttl: `P1D1D`") && e.contains("refresh_rate: `PT1S1H`"),
            "{e}"
        );
    }

    /// The only problem of `v`, which must have exactly one.
    fn one_problem(v: &View) -> String {
        let p = v.problems();
        assert_eq!(p.len(), 1, "{p:?}");
        p.into_iter().next().unwrap()
    }

    #[test]
    fn view_names_are_1_to_128_ascii_letters_digits_underscores_and_dashes() {
        let mut v = seed_view();
        for ok in ["a", "A-b_9", &"n".repeat(MAX_VIEW_NAME_CHARS)] {
            v.name = ok.to_string();
            assert_eq!(v.validate(), Ok(()), "{ok}");
        }
        let megabyte = "n".repeat(1 << 20);
        for (bad, want) in [
            ("", "name: must not be empty".to_string()),
            (
                &"n".repeat(MAX_VIEW_NAME_CHARS + 1)[..],
                "is 129 characters long; the limit is 128".to_string(),
            ),
            (&megabyte[..], "the limit is 128".to_string()),
            ("a:b", "holds `:`".to_string()),
            ("a{b}", "holds `{`".to_string()),
            ("a b", "holds ` `".to_string()),
            ("a.b", "holds `.`".to_string()),
            ("a\0b", "holds `\\u{0}`".to_string()),
            ("naïve", "holds `ï`".to_string()),
        ] {
            v.name = bad.to_string();
            let p = one_problem(&v);
            assert!(p.starts_with("name: ") && p.contains(&want), "{p}");
            assert!(p.len() < 400 && !p.contains('\0'), "{p}");
            let e = v.validate().unwrap_err();
            assert!(e.len() < 800 && !e.contains('\0'), "{e}");
        }
    }

    #[test]
    fn identifiers_are_1_to_255_bytes_without_control_characters_naming_the_key() {
        fn set(v: &mut View, key: &str, value: &str) {
            let b = &mut v.batch_source;
            let s = Some(value.to_string());
            match key {
                "entity.name" => v.entity.name = value.into(),
                "fields[0].name" => v.fields[0].name = value.into(),
                "batch_source.name" => b.name = s,
                "batch_source.database" => b.database = s,
                "batch_source.schema" => b.schema = s,
                "batch_source.table" => b.table = value.into(),
                "batch_source.timestamp_field" => b.timestamp_field = value.into(),
                "batch_source.created_timestamp_column" => b.created_timestamp_column = s,
                "batch_source.date_partition_column" => b.date_partition_column = s,
                "batch_source.ntz_time_zone" => b.ntz_time_zone = s,
                _ => unreachable!("{key}"),
            }
        }
        for key in [
            "entity.name",
            "fields[0].name",
            "batch_source.name",
            "batch_source.database",
            "batch_source.schema",
            "batch_source.table",
            "batch_source.timestamp_field",
            "batch_source.created_timestamp_column",
            "batch_source.date_partition_column",
            "batch_source.ntz_time_zone",
        ] {
            // Warehouse identifiers may hold spaces, quotes and any letter.
            if key != "batch_source.ntz_time_zone" {
                let mut v = seed_view();
                set(&mut v, key, "Ünïcode \"quoted\" name");
                assert_eq!(v.validate(), Ok(()), "{key}");
                let mut v = seed_view();
                set(&mut v, key, &"x".repeat(MAX_IDENTIFIER_BYTES));
                assert_eq!(v.validate(), Ok(()), "{key}");
            }
            for (bad, want) in [
                ("", "must not be empty".to_string()),
                (" ", "must not be empty".to_string()),
                (
                    &"x".repeat(MAX_IDENTIFIER_BYTES + 1)[..],
                    "is 256 bytes long; the limit is 255".to_string(),
                ),
                (
                    &"é".repeat(100_000)[..],
                    "is 200000 bytes long; the limit is 255".to_string(),
                ),
                ("a\0b", "`a\\u{0}b` holds a control character".to_string()),
                ("a\nb", "`a\\u{a}b` holds a control character".to_string()),
                ("a\u{7f}", "holds a control character".to_string()),
            ] {
                let mut v = seed_view();
                set(&mut v, key, bad);
                let p = v.problems();
                assert!(
                    p.iter()
                        .any(|p| p.starts_with(&format!("{key}: ")) && p.contains(&want)),
                    "{key} = {:?}: {p:?}",
                    quoted(bad)
                );
                assert!(
                    p.iter().all(|p| p.len() < 400 && !p.contains(['\0', '\n'])),
                    "{key}: {p:?}"
                );
            }
        }
    }

    #[test]
    fn free_text_and_tags_are_bounded_naming_the_key() {
        let big_text = "x".repeat(MAX_TEXT_BYTES + 1);
        let big_tags = serde_json::json!({ "k": "v".repeat(MAX_TAGS_BYTES) });
        let mut v = seed_view();
        v.description = Some("x".repeat(MAX_TEXT_BYTES));
        v.tags = Some(serde_json::json!({ "k": "v".repeat(MAX_TAGS_BYTES - 20) }));
        assert_eq!(v.validate(), Ok(()));
        type Set = fn(&mut View, String, serde_json::Value);
        let cases: [(&str, Set); 8] = [
            ("description", |v, t, _| v.description = Some(t)),
            ("owner", |v, t, _| v.owner = Some(t)),
            ("entity.description", |v, t, _| {
                v.entity.description = Some(t)
            }),
            ("batch_source.owner", |v, t, _| {
                v.batch_source.owner = Some(t)
            }),
            ("batch_source.description", |v, t, _| {
                v.batch_source.description = Some(t)
            }),
            ("fields[0].description", |v, t, _| {
                v.fields[0].description = Some(t)
            }),
            ("tags", |v, _, j| v.tags = Some(j)),
            ("batch_source.tags", |v, _, j| v.batch_source.tags = Some(j)),
        ];
        for (key, set) in cases {
            let mut v = seed_view();
            set(&mut v, big_text.clone(), big_tags.clone());
            let p = one_problem(&v);
            let limit = if key.ends_with("tags") {
                MAX_TAGS_BYTES
            } else {
                MAX_TEXT_BYTES
            };
            assert!(
                p.starts_with(&format!("{key}: is "))
                    && p.contains(&format!("the limit is {limit}")),
                "{p}"
            );
            if !key.ends_with("tags") {
                let mut v = seed_view();
                set(&mut v, "a@b.co\0".into(), serde_json::Value::Null);
                let p = one_problem(&v);
                assert!(
                    p.starts_with(&format!("{key}: `a@b.co\\u{{0}}` holds a NUL")),
                    "{p}"
                );
            }
        }
        let mut v = seed_view();
        v.fields[0].tags = Some(big_tags);
        assert!(one_problem(&v).starts_with("fields[0].tags: is "));
    }

    #[test]
    fn more_than_1000_fields_is_one_problem_naming_the_limit() {
        let mut v = seed_view();
        v.fields = (0..MAX_FIELDS)
            .map(|i| Field {
                name: format!("F{i}"),
                type_name: "int64".into(),
                description: None,
                tags: None,
            })
            .collect();
        assert_eq!(v.validate(), Ok(()));
        v.fields.push(Field {
            name: "ONE_TOO_MANY".into(),
            type_name: "int64".into(),
            description: None,
            tags: None,
        });
        assert_eq!(
            one_problem(&v),
            "fields: 1001 fields; the limit is 1000 per view"
        );
        // Thousands of bad fields make one bounded list of problems.
        for f in &mut v.fields {
            f.type_name = "int128".into();
        }
        v.fields.extend(v.fields.clone());
        let p = v.problems();
        assert_eq!(p.len(), MAX_PROBLEMS, "{p:?}");
        assert!(p[0].starts_with("fields: 2002 fields"), "{p:?}");
        assert!(p[MAX_PROBLEMS - 1].ends_with("more problems"), "{p:?}");
    }

    #[test]
    fn version_zero_is_a_problem() {
        let mut v = seed_view();
        v.version = 0;
        assert_eq!(one_problem(&v), "version: must be 1 or more");
    }

    #[test]
    fn quoted_values_are_cut_and_escaped_but_short_printable_ones_unchanged() {
        assert_eq!(quoted("P1D1D"), "P1D1D");
        assert_eq!(quoted("a b\"c`"), "a b\"c`");
        assert_eq!(quoted("a\0b\n\u{1b}"), "a\\u{0}b\\u{a}\\u{1b}");
        let long = "é".repeat(1000);
        assert_eq!(
            quoted(&long),
            format!("{}... (2000 bytes in all)", "é".repeat(MAX_QUOTED_CHARS))
        );
        assert_eq!(
            quoted(&"x".repeat(MAX_QUOTED_CHARS)).len(),
            MAX_QUOTED_CHARS
        );
        // Duration messages quote the same way.
        let mut v = seed_view();
        v.ttl = Some(format!("P{}", "\0".repeat(1 << 20)));
        let p = one_problem(&v);
        assert!(p.len() < 400 && p.starts_with("ttl: `P\\u{0}"), "{p}");
    }

    #[test]
    fn selectors() {
        assert_eq!(ViewId::parse_selector("a").unwrap(), ("a".into(), None));
        assert_eq!(
            ViewId::parse_selector("a:3").unwrap(),
            ("a".into(), Some(3))
        );
        assert!(ViewId::parse_selector("a:x").is_err());
        for loose in ["a:+1", "a:01", "a:0", "a:-1", "a:4294967296", "a:"] {
            assert!(ViewId::parse_selector(loose).is_err(), "{loose}");
        }
    }
}
