//! The manifest a customer uploads beside an encrypted file: JSON or YAML with
//! `fileName`, `type`, `columns`, `clientEmail` and `keyId`.
//!
//! ```json
//! {
//!   "fileName": "events.csv.asc",
//!   "type": "event",
//!   "columns": {
//!     "event_name": { "ctName": "evtName", "dataType": "String" },
//!     "time_stamp": { "ctName": "ts", "dataType": "Integer" },
//!     "item_price": { "dataType": "Integer" }
//!   },
//!   "clientEmail": "user@example.com",
//!   "keyId": "ec491319-9823-48cd-b6a1-6bb0bc666d75"
//! }
//! ```
//!
//! Every problem is reported with the field and the reason, all at once.

use std::collections::BTreeMap;

use serde::Deserialize;

/// What a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordType {
    /// User profiles.
    Profile,
    /// Events.
    Event,
}

impl RecordType {
    /// The name used in manifests and in the upload API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Profile => "profile",
            Self::Event => "event",
        }
    }
}

/// The type a column's values are converted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    /// Kept as text.
    String,
    /// A whole number.
    Integer,
    /// A number with a fraction.
    Float,
    /// `true`/`false` (also `1`/`0`, `yes`/`no`).
    Boolean,
}

/// How one source column maps to the upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The name in the upload (`ctName`; the source name when absent).
    pub target: String,
    /// The value type.
    pub data_type: DataType,
}

/// A checked manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The encrypted file's name in the upload directory (a plain name, no path).
    pub file_name: String,
    /// Profiles or events.
    pub record_type: RecordType,
    /// Source column name to mapping, in the manifest's order.
    pub columns: Vec<(String, Column)>,
    /// Where notifications go.
    pub client_email: String,
    /// The key id that selects the decryption key.
    pub key_id: String,
}

/// One problem in a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestProblem {
    /// The field (`fileName`, `columns.item_price.dataType`, ...), or `manifest`.
    pub field: String,
    /// Why.
    pub reason: String,
}

impl std::fmt::Display for ManifestProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    file_name: Option<serde_json::Value>,
    #[serde(rename = "type")]
    record_type: Option<serde_json::Value>,
    columns: Option<serde_json::Value>,
    client_email: Option<serde_json::Value>,
    key_id: Option<serde_json::Value>,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

/// Parses a manifest, JSON or YAML (JSON is tried first; a JSON file with a syntax error
/// is reported as JSON). Returns every problem found.
pub fn parse(text: &[u8]) -> Result<Manifest, Vec<ManifestProblem>> {
    let problem = |field: &str, reason: String| ManifestProblem {
        field: field.to_owned(),
        reason,
    };
    let text = std::str::from_utf8(text)
        .map_err(|_| vec![problem("manifest", "is not UTF-8 text".into())])?;
    // The vendor's sample carries a `// comment` after a value: C-style comments
    // outside strings become spaces (json_comments), so serde_json's line and column
    // still point into the file as written.
    let looks_json = text.trim_start().starts_with('{');
    let raw: RawManifest = if looks_json {
        serde_json::from_reader(
            json_comments::CommentSettings::c_style().strip_comments(text.as_bytes()),
        )
        .map_err(|e| {
            vec![problem(
                "manifest",
                format!(
                    "is not valid JSON: {e} (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            )]
        })?
    } else {
        serde_norway::from_str(text).map_err(|e| {
            vec![problem(
                "manifest",
                format!("is neither JSON nor valid YAML: {e}"),
            )]
        })?
    };
    check(raw)
}

fn check(raw: RawManifest) -> Result<Manifest, Vec<ManifestProblem>> {
    let mut problems = Vec::new();
    let mut add = |field: &str, reason: String| {
        problems.push(ManifestProblem {
            field: field.to_owned(),
            reason,
        });
    };
    for name in raw.other.keys() {
        add(
            name,
            "is not a manifest field (fileName, type, columns, clientEmail, keyId)".into(),
        );
    }
    let file_name = required_string(raw.file_name.as_ref(), "fileName", &mut add);
    if let Some(name) = &file_name
        && let Err(reason) = check_file_name(name)
    {
        add("fileName", reason);
    }
    let record_type = match required_string(raw.record_type.as_ref(), "type", &mut add).as_deref() {
        Some("profile") => Some(RecordType::Profile),
        Some("event") => Some(RecordType::Event),
        Some(other) => {
            add(
                "type",
                format!("{other:?} is neither \"profile\" nor \"event\""),
            );
            None
        }
        None => None,
    };
    let client_email = required_string(raw.client_email.as_ref(), "clientEmail", &mut add);
    if let Some(email) = &client_email
        && email.parse::<lettre::Address>().is_err()
    {
        add("clientEmail", format!("{email:?} is not an email address"));
    }
    let key_id = required_string(raw.key_id.as_ref(), "keyId", &mut add);
    let columns = match raw.columns {
        None => {
            add("columns", "is missing".into());
            None
        }
        Some(serde_json::Value::Object(map)) if map.is_empty() => {
            add("columns", "names no column".into());
            None
        }
        Some(serde_json::Value::Object(map)) => {
            let mut columns = Vec::new();
            for (source, spec) in map {
                match column(&source, &spec) {
                    Ok(c) => columns.push((source, c)),
                    Err((field, reason)) => add(&field, reason),
                }
            }
            Some(columns)
        }
        Some(_) => {
            add("columns", "must be an object of column mappings".into());
            None
        }
    };
    if let (Some(columns), Some(kind)) = (&columns, record_type) {
        let targets: Vec<&str> = columns.iter().map(|(_, c)| c.target.as_str()).collect();
        let mut need = vec!["identity"];
        if kind == RecordType::Event {
            need.push("evtName");
        }
        for name in need {
            if !targets.contains(&name) {
                add(
                    "columns",
                    format!(
                        "no column maps to {name:?}, which a {} upload needs",
                        kind.as_str()
                    ),
                );
            }
        }
        let mut seen = std::collections::HashSet::new();
        for t in &targets {
            if !seen.insert(*t) {
                add("columns", format!("two columns map to {t:?}"));
            }
        }
    }
    match (file_name, record_type, columns, client_email, key_id) {
        (Some(file_name), Some(record_type), Some(columns), Some(client_email), Some(key_id))
            if problems.is_empty() =>
        {
            Ok(Manifest {
                file_name,
                record_type,
                columns,
                client_email,
                key_id,
            })
        }
        _ => Err(problems),
    }
}

fn required_string(
    value: Option<&serde_json::Value>,
    field: &str,
    add: &mut impl FnMut(&str, String),
) -> Option<String> {
    match value {
        None => {
            add(field, "is missing".into());
            None
        }
        Some(serde_json::Value::String(s)) if s.trim().is_empty() => {
            add(field, "is empty".into());
            None
        }
        Some(serde_json::Value::String(s)) => Some(s.trim().to_owned()),
        Some(other) => {
            add(field, format!("must be a string, not {other}"));
            None
        }
    }
}

/// A file name must be a plain name in the upload directory.
pub fn check_file_name(name: &str) -> Result<(), String> {
    if name.starts_with('/') || name.starts_with('\\') {
        return Err(format!(
            "{name:?} is an absolute path; give the file's name only"
        ));
    }
    if name.contains('/') || name.contains('\\') {
        return Err(format!("{name:?} has a path; give the file's name only"));
    }
    if name == "." || name == ".." || name.starts_with('.') {
        return Err(format!(
            "{name:?} is not a file name (hidden or a directory)"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("{name:?} has control characters"));
    }
    Ok(())
}

fn column(source: &str, spec: &serde_json::Value) -> Result<Column, (String, String)> {
    let field = |f: &str| format!("columns.{source}.{f}");
    let serde_json::Value::Object(spec) = spec else {
        return Err((
            format!("columns.{source}"),
            "must be an object with dataType and optional ctName".into(),
        ));
    };
    for key in spec.keys() {
        if key != "ctName" && key != "dataType" {
            return Err((
                field(key),
                "is not a column field (ctName, dataType)".into(),
            ));
        }
    }
    let target = match spec.get("ctName") {
        None => source.to_owned(),
        Some(serde_json::Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
        Some(_) => return Err((field("ctName"), "must be a non-empty string".into())),
    };
    let data_type = match spec.get("dataType").and_then(|v| v.as_str()) {
        None => return Err((field("dataType"), "is missing".into())),
        Some(t) => match t.to_ascii_lowercase().as_str() {
            "string" => DataType::String,
            "integer" | "int" | "long" => DataType::Integer,
            "float" | "double" | "number" => DataType::Float,
            "boolean" | "bool" => DataType::Boolean,
            _ => {
                return Err((
                    field("dataType"),
                    format!("{t:?} is not String, Integer, Float or Boolean"),
                ));
            }
        },
    };
    Ok(Column { target, data_type })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{
  "fileName": "parastest31.csv.asc",
  "type": "event",
  "columns": {
    "event_name": { "ctName": "evtName", "dataType": "String" },
    "time_stamp": {"ctName": "ts", "dataType": "Integer"},
    "identity": {"ctName": "identity", "dataType": "String"},
    "item_name": { "ctName": "Name", "dataType": "String" },
    "item_price": {"dataType": "Integer"},
    "item_delivery_date": { "ctName": "DeliveryDate", "dataType": "String" }
  },
  "clientEmail": "user@example.com",
  "keyId": "ec491319-9823-48cd-b6a1-6bb0bc666d75"// Mention the KeyID here
}"#;

    #[test]
    fn the_vendors_sample_parses() {
        let m = parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(m.file_name, "parastest31.csv.asc");
        assert_eq!(m.record_type, RecordType::Event);
        assert_eq!(m.key_id, "ec491319-9823-48cd-b6a1-6bb0bc666d75");
        let price = m.columns.iter().find(|(s, _)| s == "item_price").unwrap();
        assert_eq!(price.1.target, "item_price", "no ctName keeps the name");
        assert_eq!(price.1.data_type, DataType::Integer);
    }

    #[test]
    fn comments_go_but_slashes_inside_strings_stay() {
        let text = SAMPLE
            .replace(
                "\"type\": \"event\",",
                "/* block\n comment */ \"type\": \"event\", // line",
            )
            .replace("user@example.com", "a//b@example.com");
        let m = parse(text.as_bytes()).unwrap();
        assert_eq!(m.record_type, RecordType::Event);
        assert_eq!(m.client_email, "a//b@example.com");
        // An error after a comment is placed on the file's own line.
        let broken = SAMPLE.replace("\"clientEmail\"", "// c\n\"clientEmail\" oops");
        let err = format!("{:?}", parse(broken.as_bytes()).unwrap_err());
        assert!(err.contains("line 13"), "{err}");
    }

    #[test]
    fn yaml_works_too() {
        let yaml = "fileName: users.csv.pgp\ntype: profile\ncolumns:\n  email:\n    ctName: identity\n    dataType: String\nclientEmail: a@b.example\nkeyId: k1\n";
        let m = parse(yaml.as_bytes()).unwrap();
        assert_eq!(m.record_type, RecordType::Profile);
        assert_eq!(m.columns[0].1.target, "identity");
    }

    #[test]
    fn every_problem_names_its_field() {
        let bad = r#"{"fileName": "../etc/passwd", "type": "events",
            "columns": {"a": {"dataType": "Decimal"}, "b": {"ctName": "identity"}},
            "clientEmail": "nope", "extra": 1}"#;
        let problems = parse(bad.as_bytes()).unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        for f in [
            "extra",
            "fileName",
            "type",
            "clientEmail",
            "keyId",
            "columns.a.dataType",
            "columns.b.dataType",
        ] {
            assert!(fields.contains(&f), "{f} not in {problems:?}");
        }
    }

    #[test]
    fn file_names_are_plain() {
        for bad in [
            "/abs.csv.asc",
            "a/b.csv.asc",
            "..",
            ".hidden.asc",
            "x\\y.asc",
        ] {
            assert!(check_file_name(bad).is_err(), "{bad}");
        }
        assert!(check_file_name("users_data.csv.asc").is_ok());
    }
}
