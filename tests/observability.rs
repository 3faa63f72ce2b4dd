//! The Grafana dashboard (deploy/grafana/hpke-gateway.json) and the Prometheus alert
//! rules (deploy/prometheus/alerts.yaml): well-formed, and every metric their queries
//! name is one a running gateway exposes on `/metrics`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use hpke_gateway::envelope::PrivateKey;
use support::served::Served;
use support::{Upstream, write_private};

const DASHBOARD: &str = "deploy/grafana/hpke-gateway.json";
const ALERTS: &str = "deploy/prometheus/alerts.yaml";
/// The prefix `Metrics` registers every metric under.
const PREFIX: &str = "hpke_gateway_";

fn read(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {file}: {e}"))
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

fn alerts() -> serde_norway::Value {
    serde_norway::from_str(&read(ALERTS)).unwrap_or_else(|e| panic!("{ALERTS}: {e}"))
}

/// Every panel, rows' collapsed panels included.
fn panels(dashboard: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        out.push(panel);
        out.extend(panel["panels"].as_array().into_iter().flatten());
    }
    out
}

/// The PromQL the dashboard runs: each target's `expr` and each query variable's query.
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<String> {
    let mut queries: Vec<String> = panels(dashboard)
        .into_iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if variable["type"] == "query" {
            let query = &variable["query"];
            let text = query["query"].as_str().or(query.as_str());
            queries.extend(text.map(str::to_owned));
        }
    }
    queries
}

/// Each alerting rule, as (name, rule).
fn rules(alerts: &serde_norway::Value) -> Vec<(String, &serde_norway::Value)> {
    alerts["groups"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_sequence().into_iter().flatten())
        .map(|r| (r["alert"].as_str().unwrap_or_default().to_owned(), r))
        .collect()
}

/// The metric names a PromQL expression mentions: identifiers that start with
/// [`PREFIX`].
fn metric_names(expr: &str) -> BTreeSet<String> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find(PREFIX) {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at..];
        let end = tail.find(|c: char| !is_ident(c)).unwrap_or(tail.len());
        if !before.is_some_and(is_ident) {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// The exposition's metric families (`# TYPE name type`).
fn families(exposition: &str) -> BTreeMap<String, String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let (name, kind) = l.split_once(' ')?;
            Some((name.to_owned(), kind.trim().to_owned()))
        })
        .collect()
}

/// Why a name used in a query is not a series of the exposition, or `None` if it is:
/// `X_total` of a counter `X`, `X_bucket`, `X_sum` and `X_count` of a histogram `X`,
/// or a gauge by its own name.
fn missing(name: &str, families: &BTreeMap<String, String>) -> Option<String> {
    let family = |base: &str, want: &str| match families.get(base) {
        Some(kind) if kind == want => None,
        Some(kind) => Some(format!("{base} is a {kind}, not a {want}")),
        None => Some(format!("no metric family {base}")),
    };
    if let Some(base) = name.strip_suffix("_total") {
        return family(base, "counter");
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && families.contains_key(base)
        {
            return family(base, "histogram");
        }
    }
    match families.get(name).map(String::as_str) {
        Some("gauge") => None,
        Some("counter") => Some(format!("{name} is a counter: query {name}_total")),
        Some("histogram") => Some(format!(
            "{name} is a histogram: query {name}_bucket, _sum or _count"
        )),
        Some(kind) => Some(format!("{name} is a {kind}")),
        None => Some(format!("no metric family {name}")),
    }
}

#[test]
fn the_dashboard_is_a_grafana_dashboard_on_a_prometheus_variable() {
    let d = dashboard();
    let schema = d["schemaVersion"].as_u64().unwrap_or(0);
    assert!(
        (36..=41).contains(&schema),
        "{DASHBOARD}: schemaVersion {schema}"
    );
    let variables = d["templating"]["list"].as_array().unwrap();
    assert!(
        variables
            .iter()
            .any(|v| v["name"] == "DS_PROMETHEUS" && v["type"] == "datasource"),
        "{DASHBOARD}: no datasource variable DS_PROMETHEUS"
    );
    let mut ids = BTreeSet::new();
    for panel in panels(&d) {
        let title = panel["title"].as_str().unwrap_or_default();
        let id = panel["id"].as_u64().unwrap();
        assert!(ids.insert(id), "{DASHBOARD}: panel id {id} twice");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${DS_PROMETHEUS}",
            "{DASHBOARD}: panel {title:?} does not use ${{DS_PROMETHEUS}}"
        );
        let targets = panel["targets"].as_array().unwrap();
        assert!(
            !targets.is_empty(),
            "{DASHBOARD}: panel {title:?} has no query"
        );
        for t in targets {
            assert!(
                t["expr"].as_str().is_some_and(|e| !e.trim().is_empty()),
                "{DASHBOARD}: panel {title:?} has a target without expr"
            );
        }
        let grid = &panel["gridPos"];
        let right = grid["x"].as_u64().unwrap() + grid["w"].as_u64().unwrap();
        assert!(
            right <= 24,
            "{DASHBOARD}: panel {title:?} is wider than the grid"
        );
    }
}

#[test]
fn every_alert_has_a_duration_a_severity_and_says_what_happened() {
    let alerts = alerts();
    let rules = rules(&alerts);
    assert!(!rules.is_empty(), "{ALERTS}: no rules");
    let mut names = BTreeSet::new();
    for (name, rule) in rules {
        assert!(!name.is_empty(), "{ALERTS}: a rule without alert: {rule:?}");
        assert!(names.insert(name.clone()), "{ALERTS}: {name} twice");
        assert!(
            rule["expr"].as_str().is_some_and(|e| !e.trim().is_empty()),
            "{ALERTS}: {name} has no expr"
        );
        let duration = rule["for"].as_str().unwrap_or_default();
        assert!(
            duration.len() > 1
                && duration.ends_with(['s', 'm', 'h'])
                && duration[..duration.len() - 1]
                    .chars()
                    .all(|c| c.is_ascii_digit()),
            "{ALERTS}: {name}: for {:?} is not a duration such as 5m",
            rule["for"]
        );
        let severity = rule["labels"]["severity"].as_str();
        assert!(
            matches!(severity, Some("critical" | "warning" | "info")),
            "{ALERTS}: {name}: labels.severity {severity:?}"
        );
        for field in ["summary", "description"] {
            assert!(
                rule["annotations"][field]
                    .as_str()
                    .is_some_and(|t| !t.trim().is_empty()),
                "{ALERTS}: {name}: no annotations.{field}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_alerts_query_is_exposed() {
    let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for expr in dashboard_queries(&dashboard()) {
        for name in metric_names(&expr) {
            used.entry(name).or_default().insert(DASHBOARD.to_owned());
        }
    }
    let alerts = alerts();
    for (alert, rule) in rules(&alerts) {
        for name in metric_names(rule["expr"].as_str().unwrap_or_default()) {
            used.entry(name)
                .or_default()
                .insert(format!("{ALERTS} ({alert})"));
        }
    }
    // The intake's counters among them: on a gateway that has seen no upload they exist
    // only because Metrics starts their series at 0 (prometheus-client leaves a family
    // without series out of the exposition altogether).
    for name in [
        "hpke_gateway_requests_total",
        "hpke_gateway_request_duration_seconds_bucket",
        "hpke_gateway_server_key_not_after_seconds",
        "hpke_gateway_intake_files_total",
        "hpke_gateway_intake_records_total",
        "hpke_gateway_intake_deferrals_total",
    ] {
        assert!(
            used.contains_key(name),
            "neither {DASHBOARD} nor {ALERTS} queries {name}"
        );
    }

    // A gateway with an intake, as the intake pod runs it, and a primary key with a
    // not_after (only such keys have hpke_gateway_server_key_not_after_seconds), after
    // one request (hpke_gateway_requests_total has a series per status and code, made
    // by the first request of each).
    let (_upstream, upstream_addr) = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key = write_private(dir.path(), "server-2.pem", &PrivateKey::generate());
    // One intake account pulls from a server that is never there: its first pull, at
    // start, fails at once and gives the pull metrics their series.
    let login = dir.path().join("login_ed25519");
    support::write_secret(&login, include_bytes!("fixtures/pull/login_ed25519"));
    let passcode = dir.path().join("passcode");
    support::write_secret(&passcode, b"pass");
    let (upload, download) = (dir.path().join("upload"), dir.path().join("download"));
    std::fs::create_dir(&upload).unwrap();
    let extra = format!(
        "[intake]\nstate_dir = {:?}\n\n[[intake.accounts]]\nid = \"PULL-1\"\n\
         passcode_file = {passcode:?}\nupload_dir = {upload:?}\ndownload_dir = {download:?}\n\
         require_encryption = false\n\n[intake.accounts.pull]\nhost = \"127.0.0.1\"\nport = 1\n\
         user = \"nobody\"\nremote_dir = \"/out\"\nssh_key = {login:?}\n\
         host_key = \"SHA256:7pQWpo0+bQwHrOLWUb+ctGVXPM0MvzOesWempQmJF08\"\n\
         schedule = \"every 1h\"\n\n[[server_keys]]\nid = 2\nprivate_key = {:?}\n\
         state = \"primary\"\nnot_after = \"2099-01-01T00:00:00Z\"\n",
        dir.path().join("intake"),
        key
    );
    let gateway = Served::start(upstream_addr, &extra).await;
    let (status, _) = gateway.get(format!("{}/anything", gateway.url)).await;
    assert_eq!(status, 200, "a plaintext request through the gateway");
    let mut exposition = gateway.metrics().await;
    for _ in 0..100 {
        if exposition.contains("hpke_gateway_intake_pull_failures_total{") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        exposition = gateway.metrics().await;
    }
    let families = families(&exposition);
    let problems: Vec<String> = used
        .iter()
        .filter_map(|(name, files)| {
            let why = missing(name, &families)?;
            Some(format!(
                "{name} ({}): {why}",
                files.iter().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
        .collect();
    assert!(
        problems.is_empty(),
        "queried but not exposed:\n{}\n--- /metrics ---\n{exposition}",
        problems.join("\n")
    );
}
