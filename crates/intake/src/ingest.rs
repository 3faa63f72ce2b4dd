//! From a decrypted file to upload records: CSV with a header row, a JSON array of
//! objects, or JSON lines; gzip-compressed or not. The manifest's columns select and
//! rename the fields and give their types; columns the manifest does not name are left
//! out.
//!
//! Records have the upload API's shape:
//!
//! - profile: `{"type":"profile","identity":..,"ts":..,"profileData":{..}}`
//! - event: `{"type":"event","identity":..,"ts":..,"evtName":..,"evtData":{..}}`
//!
//! A row that cannot be converted (a value that is not of its column's type, a missing
//! identity, a CSV row with too many or too few fields) is skipped and reported with its
//! line, column, value and reason; the other rows are uploaded. A file fails as a whole
//! when the header lacks a column the manifest names, when its structure cannot be
//! parsed at all, or when no row is good.
//!
//! The reader runs on its own thread and hands items over a bounded channel, so memory
//! stays constant whatever the file's size.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde_json::{Map, Value};

use super::manifest::{Column, DataType, Manifest, RecordType};

/// A row that was skipped.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BadRow {
    /// 1-based line (CSV: the header is line 1) or, for a JSON array, 1-based element.
    pub line: u64,
    /// The source column, or `-` for the whole row.
    pub column: String,
    /// The value as found (cut at 100 characters).
    pub value: String,
    /// Why it was skipped.
    pub reason: String,
}

/// Why a file failed as a whole. `reason` names nothing read from the decrypted file
/// and may go to the log and the journal; `detail` (the file's header row, say) is for
/// the customer only: their notice and the job's `error.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    /// What went wrong, without the file's content.
    pub reason: String,
    /// Content of the file that explains it, for the customer.
    pub detail: Option<String>,
}

impl From<String> for FileError {
    fn from(reason: String) -> Self {
        Self {
            reason,
            detail: None,
        }
    }
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.detail {
            Some(detail) => write!(f, "{} ({detail})", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

/// What the reader produces.
#[derive(Debug)]
pub enum Item {
    /// A record to upload.
    Good(Value),
    /// A skipped row.
    Bad(BadRow),
}

/// The file's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated with a header row.
    Csv,
    /// A JSON array of objects, or one object per line.
    Json,
}

impl Format {
    /// From the decrypted file's name (`.csv`, `.json`, `.jsonl`, `.ndjson`, each maybe
    /// followed by `.gz`), else from its first byte.
    pub fn guess(name: &str, first: Option<u8>) -> Self {
        let name = name
            .strip_suffix(".gz")
            .unwrap_or(name)
            .to_ascii_lowercase();
        let json_name = [".json", ".jsonl", ".ndjson"]
            .iter()
            .any(|s| name.ends_with(s));
        if name.ends_with(".csv") {
            Self::Csv
        } else if json_name || matches!(first, Some(b'[' | b'{')) {
            Self::Json
        } else {
            Self::Csv
        }
    }
}

/// A reader that fails once more than `limit` bytes went through it: the bound on a
/// gzip layer inside the decrypted file.
struct Limited<R> {
    inner: R,
    left: u64,
    limit: u64,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            return Err(std::io::Error::other(format!(
                "the decompressed content is larger than the limit of {} bytes",
                self.limit
            )));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// The longest line read from a CSV or JSON-lines file: one line is held in memory
/// whole, so a file that is one huge line fails instead of filling the memory.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// A reader that fails on a line longer than [`MAX_LINE_BYTES`].
struct LineLimited<R> {
    inner: R,
    run: usize,
}

impl<R: Read> Read for LineLimited<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        for &b in &buf[..n] {
            if b == b'\n' {
                self.run = 0;
            } else {
                self.run += 1;
                if self.run > MAX_LINE_BYTES {
                    return Err(std::io::Error::other(format!(
                        "a line is longer than {MAX_LINE_BYTES} bytes"
                    )));
                }
            }
        }
        Ok(n)
    }
}

pub(crate) fn line_limited(reader: Box<dyn BufRead + Send>) -> Box<dyn BufRead + Send> {
    Box::new(BufReader::with_capacity(
        64 * 1024,
        LineLimited {
            inner: reader,
            run: 0,
        },
    ))
}

/// Opens the decrypted file, through gzip when it starts with gzip's magic bytes.
fn open(path: &Path, limit: u64) -> std::io::Result<Box<dyn BufRead + Send>> {
    let mut file = BufReader::with_capacity(64 * 1024, std::fs::File::open(path)?);
    let gzip = file.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    let inner: Box<dyn Read + Send> = if gzip {
        Box::new(flate2::bufread::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    Ok(Box::new(BufReader::with_capacity(
        64 * 1024,
        Limited {
            inner,
            left: limit,
            limit,
        },
    )))
}

/// Reads `path` on a new thread and sends each item to `tx`; a structural failure of the
/// whole file is sent as `Err` and ends the stream.
pub fn spawn_reader(
    path: &Path,
    name: &str,
    manifest: Manifest,
    limit: u64,
    tx: tokio::sync::mpsc::Sender<Result<Item, FileError>>,
) -> std::thread::JoinHandle<()> {
    let (path, name) = (path.to_path_buf(), name.to_owned());
    std::thread::spawn(move || {
        let result = open(&path, limit)
            .map_err(|e| FileError::from(e.to_string()))
            .and_then(|mut r| {
                let first = r
                    .fill_buf()
                    .ok()
                    .and_then(|b| b.iter().copied().find(|c| !c.is_ascii_whitespace()));
                let send = |item| tx.blocking_send(Ok(item)).is_ok();
                match Format::guess(&name, first) {
                    Format::Csv => read_csv(line_limited(r), &manifest, send),
                    Format::Json => read_json(r, &manifest, send),
                }
            });
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(e));
        }
    })
}

pub(crate) fn read_csv(
    reader: Box<dyn BufRead + Send>,
    manifest: &Manifest,
    mut send: impl FnMut(Item) -> bool,
) -> Result<(), FileError> {
    let mut csv = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(reader);
    let header: Vec<String> = csv
        .headers()
        .map_err(|e| format!("the CSV header cannot be read: {e}"))?
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').to_owned())
        .collect();
    let mut positions = Vec::new();
    let mut missing = Vec::new();
    for (source, column) in &manifest.columns {
        match header.iter().position(|h| h == source) {
            Some(i) => positions.push((i, source.as_str(), column)),
            None => missing.push(source.as_str()),
        }
    }
    if !missing.is_empty() {
        // The names missing are the manifest's; the header is the file's own content.
        return Err(FileError {
            reason: format!(
                "column(s) {} named in the manifest are not in the file's header",
                missing.join(", ")
            ),
            detail: Some(header.join(",")),
        });
    }
    let mut record = csv::StringRecord::new();
    loop {
        let line = csv.position().line();
        match csv.read_record(&mut record) {
            Ok(false) => return Ok(()),
            Ok(true) => {}
            Err(e) => {
                return Err(match e.kind() {
                    // A limit reached, or a damaged gzip layer.
                    csv::ErrorKind::Io(io) => format!("cannot read the file at line {line}: {io}"),
                    // A broken quote and the like: the reader cannot go on.
                    _ => format!("malformed CSV at line {line}: {e}"),
                }
                .into());
            }
        }
        if record.iter().all(str::is_empty) {
            continue;
        }
        let item = if record.len() != header.len() {
            Item::Bad(BadRow {
                line,
                column: "-".into(),
                value: cut(record.as_slice()),
                reason: format!(
                    "the row has {} fields, the header {}",
                    record.len(),
                    header.len()
                ),
            })
        } else {
            let fields = positions.iter().map(|(i, source, column)| {
                (*source, *column, Value::String(record[*i].to_owned()))
            });
            build(manifest.record_type, fields, line)
        };
        if !send(item) {
            return Ok(());
        }
    }
}

pub(crate) fn read_json(
    mut reader: Box<dyn BufRead + Send>,
    manifest: &Manifest,
    mut send: impl FnMut(Item) -> bool,
) -> Result<(), FileError> {
    let first = reader
        .fill_buf()
        .map_err(|e| e.to_string())?
        .iter()
        .copied()
        .find(|c| !c.is_ascii_whitespace());
    let mut handle = |n: u64, value: Result<Value, String>, raw: &str| -> bool {
        let item = match value {
            Err(e) => Item::Bad(BadRow {
                line: n,
                column: "-".into(),
                value: cut(raw),
                reason: format!("not valid JSON: {e}"),
            }),
            Ok(value) => match value {
                Value::Object(object) => {
                    let fields = manifest.columns.iter().filter_map(|(source, column)| {
                        object
                            .get(source)
                            .map(|v| (source.as_str(), column, v.clone()))
                    });
                    build(manifest.record_type, fields, n)
                }
                other => Item::Bad(BadRow {
                    line: n,
                    column: "-".into(),
                    value: cut(&other.to_string()),
                    reason: "not a JSON object".into(),
                }),
            },
        };
        send(item)
    };
    if first == Some(b'[') {
        json_array(reader, &mut |n, v| handle(n, Ok(v), "")).map_err(FileError::from)
    } else {
        // JSON lines: one object per line; a bad line is a bad row.
        for (i, line) in line_limited(reader).lines().enumerate() {
            let n = i as u64 + 1;
            let line = line.map_err(|e| FileError::from(format!("cannot read line {n}: {e}")))?;
            if line.trim().is_empty() {
                continue;
            }
            let parsed = serde_json::from_str::<Value>(&line).map_err(|e| e.to_string());
            if !handle(n, parsed, &line) {
                break;
            }
        }
        Ok(())
    }
}

/// Streams the elements of a top-level JSON array one at a time.
fn json_array(
    reader: Box<dyn BufRead + Send>,
    handle: &mut dyn FnMut(u64, Value) -> bool,
) -> Result<(), String> {
    use serde::de::{Deserializer as _, SeqAccess, Visitor};
    struct Elements<'a>(&'a mut dyn FnMut(u64, Value) -> bool);
    impl<'de> Visitor<'de> for Elements<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON array of objects")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut n = 0;
            while let Some(v) = seq.next_element::<Value>()? {
                n += 1;
                if !(self.0)(n, v) {
                    break;
                }
            }
            Ok(())
        }
    }
    let mut de = serde_json::Deserializer::from_reader(reader);
    de.deserialize_seq(Elements(handle))
        .map_err(|e| format!("malformed JSON: {e}"))
}

/// Builds one record from `(source column, mapping, raw value)` triples.
fn build<'a>(
    kind: RecordType,
    fields: impl Iterator<Item = (&'a str, &'a Column, Value)>,
    line: u64,
) -> Item {
    let mut record = Map::new();
    let mut data = Map::new();
    for (source, column, raw) in fields {
        let value = match convert(&raw, column.data_type) {
            Ok(Some(v)) => v,
            Ok(None) => continue,
            Err(reason) => {
                return Item::Bad(BadRow {
                    line,
                    column: source.to_owned(),
                    value: cut(&display(&raw)),
                    reason,
                });
            }
        };
        match (kind, column.target.as_str()) {
            (_, "identity") => {
                record.insert("identity".into(), Value::String(display(&value)));
            }
            (_, "ts") => {
                record.insert("ts".into(), value);
            }
            (RecordType::Event, "evtName") => {
                record.insert("evtName".into(), value);
            }
            (_, target) => {
                data.insert(target.to_owned(), value);
            }
        }
    }
    let mut need = vec!["identity"];
    if kind == RecordType::Event {
        need.push("evtName");
    }
    for field in need {
        if record
            .get(field)
            .is_none_or(|v| v.as_str().is_some_and(str::is_empty))
        {
            return Item::Bad(BadRow {
                line,
                column: field.to_owned(),
                value: String::new(),
                reason: format!("the {field} is empty"),
            });
        }
    }
    record.insert("type".into(), Value::String(kind.as_str().to_owned()));
    let key = match kind {
        RecordType::Profile => "profileData",
        RecordType::Event => "evtData",
    };
    record.insert(key.into(), Value::Object(data));
    Item::Good(Value::Object(record))
}

/// Converts a raw value; `Ok(None)` for an empty value, which is left out.
fn convert(raw: &Value, to: DataType) -> Result<Option<Value>, String> {
    let text = match raw {
        Value::Null => return Ok(None),
        Value::String(s) if s.is_empty() => return Ok(None),
        Value::String(s) => s.clone(),
        Value::Number(_) | Value::Bool(_) => raw.to_string(),
        Value::Array(_) | Value::Object(_) => {
            return Err("a nested value where a plain value was expected".into());
        }
    };
    match to {
        DataType::String => Ok(Some(Value::String(text))),
        DataType::Integer => text
            .parse::<i64>()
            .map(|n| Some(Value::from(n)))
            .map_err(|_| "not an Integer".into()),
        DataType::Float => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(|n| Some(Value::Number(n)))
            .ok_or_else(|| "not a Float".into()),
        DataType::Boolean => match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(Some(Value::Bool(true))),
            "false" | "0" | "no" => Ok(Some(Value::Bool(false))),
            _ => Err("not a Boolean (true/false, 1/0, yes/no)".into()),
        },
    }
}

fn display(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn cut(s: &str) -> String {
    if s.chars().count() <= 100 {
        s.to_owned()
    } else {
        s.chars().take(100).collect::<String>() + "…"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(kind: &str) -> Manifest {
        super::super::manifest::parse(
            format!(
                r#"{{"fileName":"f.csv.asc","type":"{kind}","clientEmail":"a@b.example","keyId":"k",
                "columns":{{"email":{{"ctName":"identity","dataType":"String"}},
                "name":{{"ctName":"evtName","dataType":"String"}},
                "price":{{"dataType":"Integer"}},"vip":{{"ctName":"VIP","dataType":"Boolean"}}}}}}"#
            )
            .as_bytes(),
        )
        .unwrap()
    }

    fn run(text: &str, format: Format) -> (Vec<Value>, Vec<BadRow>, Result<(), FileError>) {
        let m = manifest("event");
        let mut good = Vec::new();
        let mut bad = Vec::new();
        let reader: Box<dyn BufRead + Send> =
            Box::new(std::io::Cursor::new(text.as_bytes().to_vec()));
        let result = match format {
            Format::Csv => read_csv(reader, &m, |i| {
                match i {
                    Item::Good(v) => good.push(v),
                    Item::Bad(b) => bad.push(b),
                }
                true
            }),
            Format::Json => read_json(reader, &m, |i| {
                match i {
                    Item::Good(v) => good.push(v),
                    Item::Bad(b) => bad.push(b),
                }
                true
            }),
        };
        (good, bad, result)
    }

    #[test]
    fn csv_rows_are_mapped_typed_and_bad_rows_reported() {
        let (good, bad, result) = run(
            "email,name,price,vip,ignored\na@x.example,Bought,12,yes,zz\nb@x.example,Bought,twelve,no,zz\nc@x.example,Bought,3\n,Bought,1,no,zz\n",
            Format::Csv,
        );
        result.unwrap();
        assert_eq!(good.len(), 1);
        assert_eq!(
            good[0],
            serde_json::json!({"identity":"a@x.example","evtName":"Bought","type":"event",
                "evtData":{"price":12,"VIP":true}})
        );
        assert_eq!(bad.len(), 3);
        assert_eq!(
            (bad[0].line, bad[0].column.as_str(), bad[0].value.as_str()),
            (3, "price", "twelve")
        );
        assert_eq!(bad[0].reason, "not an Integer");
        assert_eq!(bad[1].line, 4);
        assert!(bad[1].reason.contains("fields"), "{:?}", bad[1]);
        assert_eq!((bad[2].line, bad[2].column.as_str()), (5, "identity"));
    }

    #[test]
    fn one_huge_line_fails_the_file_instead_of_filling_memory() {
        let mut text = String::from("email,name,price,vip\n");
        text.push_str(&"x".repeat(MAX_LINE_BYTES + 10));
        let m = manifest("event");
        let reader: Box<dyn BufRead + Send> =
            Box::new(std::io::Cursor::new(text.clone().into_bytes()));
        let err = read_csv(line_limited(reader), &m, |_| true).unwrap_err();
        assert!(err.reason.contains("longer than"), "{err}");
        let json_lines = format!("{{\"email\":\"{}\"}}\n", "x".repeat(MAX_LINE_BYTES + 10));
        let reader: Box<dyn BufRead + Send> =
            Box::new(std::io::Cursor::new(json_lines.into_bytes()));
        let err = read_json(reader, &m, |_| true).unwrap_err();
        assert!(err.reason.contains("longer than"), "{err}");
    }

    #[test]
    fn a_missing_mapped_column_fails_the_file() {
        let (_, _, result) = run("email,secret_header\na,b\n", Format::Csv);
        let err = result.unwrap_err();
        assert!(
            err.reason.contains("price") && err.reason.contains("vip"),
            "{err}"
        );
        // The file's own header is for the customer, not for the log.
        assert!(!err.reason.contains("secret_header"), "{err}");
        assert_eq!(err.detail.as_deref(), Some("email,secret_header"));
        assert!(err.to_string().ends_with("(email,secret_header)"), "{err}");
    }

    #[test]
    fn json_arrays_and_lines() {
        let (good, bad, r) = run(
            r#"[{"email":"a@x.example","name":"E","price":5},{"email":"b@x.example","name":"E","price":"x"}, 7]"#,
            Format::Json,
        );
        r.unwrap();
        assert_eq!(good.len(), 1);
        assert_eq!(bad.len(), 2);
        assert_eq!((bad[0].line, bad[0].column.as_str()), (2, "price"));
        let (good, bad, r) = run(
            "{\"email\":\"a@x.example\",\"name\":\"E\"}\nnot json\n",
            Format::Json,
        );
        r.unwrap();
        assert_eq!((good.len(), bad.len()), (1, 1));
        assert_eq!(bad[0].line, 2);
        let (_, _, r) = run("[{\"email\": ", Format::Json);
        assert!(r.unwrap_err().reason.contains("malformed JSON"));
    }
}
