//! From TOML text to [`RawConfig`], reporting every unknown key and every badly typed
//! value at once, each with its line and, for a misspelling, the nearest valid name.
//!
//! serde stops at the first problem (`deny_unknown_fields` included). So after each
//! problem found at a place in the file, that key (or table) is blanked out, keeping
//! every line where it was, and the text is parsed again, until it parses or a problem
//! has no place. The line numbers are therefore always the file's own.

use super::RawConfig;

/// The most problems reported from one file.
const MAX_PROBLEMS: usize = 50;

/// Parses `text`: every problem found, one per entry, and the configuration the rest
/// of the file makes when the problems could be set aside (so that its semantic
/// problems can be reported in the same run).
pub(super) fn parse(text: &str) -> (Option<RawConfig>, Vec<String>) {
    let mut text = text.to_owned();
    // (line, problem): serde finds them in its own order; they are reported by line.
    let mut found: Vec<(usize, String)> = Vec::new();
    let raw = loop {
        let err = match toml::from_str::<RawConfig>(&text) {
            Ok(raw) => break Some(raw),
            Err(err) => err,
        };
        let Some(span) = err.span() else {
            found.push((usize::MAX, one_line(err.message())));
            break None;
        };
        let line = text[..span.start].matches('\n').count() + 1;
        found.push((line, format!("line {line}: {}", describe(err.message()))));
        if found.len() >= MAX_PROBLEMS || !blank_out(&mut text, span.start) {
            break None;
        }
    };
    found.sort_by_key(|(line, _)| *line);
    (raw, found.into_iter().map(|(_, problem)| problem).collect())
}

/// The problem, with the nearest valid name for an unknown field.
fn describe(message: &str) -> String {
    let message = one_line(message);
    let Some(field) = between(&message, "unknown field `", "`") else {
        return message;
    };
    let expected: Vec<&str> = message
        .split_once("expected ")
        .map(|(_, rest)| rest.split('`').skip(1).step_by(2).collect())
        .unwrap_or_default();
    let nearest = expected
        .iter()
        .map(|name| (strsim::damerau_levenshtein(field, name), *name))
        .filter(|(distance, name)| *distance <= name.len().max(field.len()) / 2 + 1)
        .min();
    match nearest {
        Some((_, name)) => format!("unknown key `{field}` (did you mean `{name}`?)"),
        None if expected.is_empty() => format!("unknown key `{field}`"),
        None => format!(
            "unknown key `{field}` (valid here: {})",
            expected.join(", ")
        ),
    }
}

fn one_line(message: &str) -> String {
    message.trim().replace('\n', " ")
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

/// Blanks out the key-value or table at byte `at` (spaces for every character but
/// newlines, so no line moves). False if nothing could be blanked, so that a problem
/// the blanking cannot remove does not loop.
fn blank_out(text: &mut String, at: usize) -> bool {
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let header = text[start..].trim_start().starts_with('[');
    // A table runs to the next table header; a key-value to the next line that starts a
    // key-value, a table or a comment (a multi-line array's lines do not).
    let mut end = text.len();
    let mut offset = text[start..]
        .find('\n')
        .map_or(text.len(), |i| start + i + 1);
    while offset < text.len() {
        let line = text[offset..].trim_start();
        let next_item = line.starts_with('[')
            || (!header && (line.starts_with('#') || starts_key_value(line) || line.is_empty()));
        if next_item {
            end = offset;
            break;
        }
        offset = text[offset..]
            .find('\n')
            .map_or(text.len(), |i| offset + i + 1);
    }
    let blanked: String = text[start..end]
        .chars()
        .map(|c| if c == '\n' { '\n' } else { ' ' })
        .collect();
    if blanked == text[start..end] {
        return false;
    }
    text.replace_range(start..end, &blanked);
    true
}

/// `name =`, `"quoted name" =` or `dotted.name =` at the start of `line`.
fn starts_key_value(line: &str) -> bool {
    let key_len = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"')))
        .unwrap_or(line.len());
    key_len > 0 && line[key_len..].trim_start().starts_with('=')
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "listen = \"127.0.0.1:8080\"\nupstream = \"http://127.0.0.1:9000\"\n";

    #[test]
    fn every_unknown_key_is_reported_with_its_line_and_nearest_name() {
        let text = format!(
            "{BASE}upstrem_timeout_ms = 5\nmax_header_byte = 10\n\n[[accounts]]\nid = \"A\"\npublic_kyes = [\n  \"a.pem\",\n]\nzzzzzzzz = 1\n"
        );
        let problems = parse(&text).1;
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(
            problems[0].starts_with(
                "line 3: unknown key `upstrem_timeout_ms` (did you mean `upstream_timeout_ms`?)"
            ),
            "{problems:#?}"
        );
        assert!(
            problems[1].starts_with(
                "line 4: unknown key `max_header_byte` (did you mean `max_header_bytes`?)"
            ),
            "{problems:#?}"
        );
        assert!(
            problems[2]
                .starts_with("line 8: unknown key `public_kyes` (did you mean `public_keys`?)"),
            "{problems:#?}"
        );
        assert!(
            problems[3].starts_with("line 11: unknown key `zzzzzzzz` (valid here:"),
            "{problems:#?}"
        );
    }

    #[test]
    fn a_bad_value_and_an_unknown_table_are_reported_beside_unknown_keys() {
        let text =
            format!("{BASE}header_timeout_ms = \"soon\"\nlisten_port = 1\n[tsl]\ncert = \"x\"\n");
        let problems = parse(&text).1;
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(problems[0].starts_with("line 3: "), "{problems:#?}");
        assert!(
            problems[1].starts_with("line 4: unknown key `listen_port`"),
            "{problems:#?}"
        );
        assert!(
            problems[2].starts_with("line 5: unknown key `tsl` (did you mean `tls`?)"),
            "{problems:#?}"
        );
    }

    #[test]
    fn a_valid_file_parses() {
        assert!(matches!(parse(BASE), (Some(_), p) if p.is_empty()));
    }
}
