//! The docs' snippets are the code the tests run: each block marked
//! `<!-- snippet: PATH -->` in docs/clients.md (the interop clients) and
//! docs/intake-customers.md (the customer's upload script) must equal the region of
//! PATH between its `snippet: begin` and `snippet: end` marker lines;
//! `<!-- snippet: PATH#NAME -->`, the region between `snippet: begin NAME` and
//! `snippet: end NAME`.

/// The pages that carry snippets, by name.
const DOCS: [(&str, &str); 2] = [
    ("docs/clients.md", include_str!("../docs/clients.md")),
    (
        "docs/intake-customers.md",
        include_str!("../docs/intake-customers.md"),
    ),
];

fn region(reference: &str) -> String {
    let (path, name) = match reference.split_once('#') {
        Some((path, name)) => (path, format!(" {name}")),
        None => (reference, String::new()),
    };
    let text = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let lines: Vec<&str> = text.lines().collect();
    let marker = |what: &str| {
        let marker = format!("--- snippet: {what}{name} ---");
        lines
            .iter()
            .position(|l| l.contains(&marker))
            .unwrap_or_else(|| panic!("{path} has no `{marker}` line"))
    };
    lines[marker("begin") + 1..marker("end")].join("\n")
}

#[test]
fn doc_snippets_match_the_interop_clients() {
    let mut checked = Vec::new();
    for (doc, text) in DOCS {
        let mut rest = text;
        while let Some(at) = rest.find("<!-- snippet: ") {
            let after = &rest[at + "<!-- snippet: ".len()..];
            let path = after[..after.find(" -->").unwrap()].trim();
            let fence_start = after.find("```").unwrap();
            let code_start = fence_start + after[fence_start..].find('\n').unwrap() + 1;
            let code_len = after[code_start..].find("\n```").unwrap();
            let code = &after[code_start..code_start + code_len];
            assert_eq!(
                code,
                region(path),
                "{doc}: the snippet of {path} is out of date"
            );
            checked.push(path.to_owned());
            rest = &after[code_start + code_len..];
        }
    }
    checked.sort();
    assert_eq!(
        checked,
        [
            "tests/intake/customer_upload.sh",
            "tests/interop/js/client.mjs",
            "tests/interop/js/client.mjs#pq",
            "tests/interop/python/pyhpke_client.py",
            "tests/interop/python/tink_client.py",
            "tests/interop/python/tink_client.py#pq",
        ],
        "each interop client and the intake's customer script has its snippet in the docs"
    );
}
