//! The Grafana dashboard (`deploy/grafana/dashboards/ferrolive.json`) against a running
//! cluster: real redis-server, control API, an origin (recording, with a relay pull) and an
//! edge, ffmpeg publishing and an HTTP-FLV viewer on the edge. Every `ferrolive_*` metric
//! the dashboard queries is one a node exports (its `# TYPE` line is on an origin's or an
//! edge's `/metrics`), every label it selects or groups by is one the nodes' series carry or
//! one Prometheus adds (`deploy/prometheus.yml`), every literal label value it selects is
//! one that occurs, and it has panels for each group issue 21 asks for.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Every query of the dashboard with where it is: panel targets (rows included, collapsed
/// or not) and template variables.
fn queries(dashboard: &Value) -> Vec<(String, String)> {
    fn panels(list: &Value, out: &mut Vec<(String, String)>) {
        for panel in list.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?");
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push((format!("panel {title:?}"), expr.to_owned()));
                }
            }
            panels(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if var["type"] != "query" {
            continue;
        }
        let query = match &var["query"] {
            Value::String(q) => q.as_str(),
            q => q["query"].as_str().unwrap_or_default(),
        };
        out.push((format!("variable {}", var["name"]), query.to_owned()));
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The `ferrolive_*` metric names in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("ferrolive_") {
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

/// A label matcher `name op "value"` inside `{...}`.
struct Matcher {
    label: String,
    op: String,
    value: String,
}

/// The label matchers of a PromQL expression (quoted values may hold `,` and `}`) and the
/// labels of its `by (...)`, `without (...)`, `on (...)`, `ignoring (...)` and
/// `group_left/right (...)` clauses, and of `label_values(..., label)`.
fn labels(expr: &str) -> (Vec<Matcher>, BTreeSet<String>) {
    let mut matchers = Vec::new();
    let mut grouped = BTreeSet::new();
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '{' => {
                i += 1;
                loop {
                    while i < chars.len() && (chars[i].is_whitespace() || chars[i] == ',') {
                        i += 1;
                    }
                    if i >= chars.len() || chars[i] == '}' {
                        break;
                    }
                    let start = i;
                    while i < chars.len() && is_ident(chars[i]) {
                        i += 1;
                    }
                    let label: String = chars[start..i].iter().collect();
                    while i < chars.len() && chars[i].is_whitespace() {
                        i += 1;
                    }
                    let start = i;
                    while i < chars.len() && "=!~".contains(chars[i]) {
                        i += 1;
                    }
                    let op: String = chars[start..i].iter().collect();
                    while i < chars.len() && chars[i].is_whitespace() {
                        i += 1;
                    }
                    assert!(
                        !label.is_empty() && !op.is_empty() && chars.get(i) == Some(&'"'),
                        "cannot read the label matchers of {expr:?}"
                    );
                    i += 1;
                    let mut value = String::new();
                    while i < chars.len() && chars[i] != '"' {
                        if chars[i] == '\\' {
                            i += 1;
                        }
                        value.extend(chars.get(i));
                        i += 1;
                    }
                    i += 1;
                    matchers.push(Matcher { label, op, value });
                }
            }
            c if c.is_ascii_alphabetic() && (i == 0 || !is_ident(chars[i - 1])) => {
                let start = i;
                while i < chars.len() && is_ident(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let grouping = [
                    "by",
                    "without",
                    "on",
                    "ignoring",
                    "group_left",
                    "group_right",
                    "label_values",
                ];
                if !grouping.contains(&word.as_str()) {
                    continue;
                }
                while i < chars.len() && chars[i].is_whitespace() {
                    i += 1;
                }
                if chars.get(i) != Some(&'(') {
                    continue;
                }
                let close = (i..chars.len())
                    .find(|&j| chars[j] == ')')
                    .expect("a closing parenthesis");
                let inner: String = chars[i + 1..close].iter().collect();
                let names: Vec<&str> = inner.split(',').map(str::trim).collect();
                if word == "label_values" {
                    // label_values(label) or label_values(selector, label): only the label.
                    grouped.insert(names.last().unwrap().to_string());
                    let (inner_matchers, _) = labels(&inner);
                    matchers.extend(inner_matchers);
                } else {
                    grouped.extend(
                        names
                            .iter()
                            .filter(|n| !n.is_empty())
                            .map(|n| n.to_string()),
                    );
                }
                i = close + 1;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    (matchers, grouped)
}

/// One node's `/metrics`, parsed: the declared types, and each metric's label values.
#[derive(Default)]
struct Exposition {
    types: BTreeMap<String, String>,
    /// metric -> label -> values seen.
    samples: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
}

impl Exposition {
    fn add(&mut self, text: &str) {
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split_whitespace();
                let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
                self.types.insert(name.to_owned(), kind.to_owned());
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let name = &line[..name_end];
            let labels = self.samples.entry(name.to_owned()).or_default();
            if line[name_end..].starts_with('{') {
                let selector = format!("x{}", &line[name_end..]);
                let close = selector.rfind('}').unwrap();
                for m in self::labels(&selector[..=close]).0 {
                    labels.entry(m.label).or_default().insert(m.value);
                }
            }
        }
    }

    /// Whether `name` is exported: declared, or the `_bucket`, `_sum` or `_count` series
    /// of a declared histogram or summary.
    fn exports(&self, name: &str) -> bool {
        if self.types.contains_key(name) {
            return true;
        }
        ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix).is_some_and(|base| {
                matches!(
                    self.types.get(base).map(String::as_str),
                    Some("histogram" | "summary")
                )
            })
        })
    }

    /// Every label name any series carries, with the values seen.
    fn label_values(&self) -> BTreeMap<&str, BTreeSet<&str>> {
        let mut all: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for labels in self.samples.values() {
            for (label, values) in labels {
                let seen = all.entry(label.as_str()).or_default();
                seen.extend(values.iter().map(String::as_str));
            }
        }
        all
    }
}

/// The labels Prometheus adds to every scraped series: `job`, `instance` and the target
/// labels of `deploy/prometheus.yml` (the `labels: {k: v, ...}` of its static configs),
/// with their values.
fn target_labels() -> BTreeMap<String, BTreeSet<String>> {
    let config = std::fs::read_to_string(format!("{ROOT}/deploy/prometheus.yml")).unwrap();
    let mut labels: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in config.lines() {
        let line = line.trim();
        if let Some(job) = line.strip_prefix("- job_name:") {
            labels
                .entry("job".into())
                .or_default()
                .insert(job.trim().to_owned());
        }
        let Some(map) = line.strip_prefix("labels:") else {
            continue;
        };
        let map = map.trim().trim_start_matches('{').trim_end_matches('}');
        for pair in map.split(',') {
            let (k, v) = pair.split_once(':').expect("labels: {key: value, ...}");
            labels
                .entry(k.trim().to_owned())
                .or_default()
                .insert(v.trim().to_owned());
        }
    }
    labels.entry("instance".into()).or_default();
    assert!(
        ["role", "node"].iter().all(|l| labels.contains_key(*l)),
        "deploy/prometheus.yml labels its targets with role and node: {labels:?}"
    );
    labels
}

fn metrics_of(server: &Server) -> String {
    let r = http_get(server.http, "/metrics").expect("/metrics");
    assert_eq!(r.status, 200);
    String::from_utf8(r.body).unwrap()
}

#[test]
fn every_metric_the_dashboard_queries_is_exported() {
    let path = format!("{ROOT}/deploy/grafana/dashboards/ferrolive.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("dashboard JSON");
    let queries = queries(&dashboard);
    assert!(queries.len() > 20, "only {} queries", queries.len());

    // The groups issue 21 asks for each have a panel.
    let exprs: Vec<&str> = queries.iter().map(|(_, e)| e.as_str()).collect();
    for (group, needles) in [
        ("live streams", &["ferrolive_streams"][..]),
        ("publishers", &["ferrolive_publishes_total"]),
        ("viewers by protocol", &["ferrolive_protocol_viewers"]),
        ("egress", &["ferrolive_bytes_out_total"]),
        ("ingest", &["ferrolive_bytes_in_total"]),
        (
            "dropped and skipped viewers",
            &[
                "ferrolive_viewers_dropped_slow_total",
                "ferrolive_frames_skipped_total",
            ],
        ),
        (
            "connections and rejections",
            &[
                "ferrolive_rtmp_connections",
                "ferrolive_http_connections",
                "ferrolive_connections_rejected_total",
                "ferrolive_connections_refused_total",
            ],
        ),
        (
            "edge upstreams",
            &[
                "ferrolive_upstreams",
                "ferrolive_upstream_pulls_total",
                "ferrolive_upstream_repulls_total",
            ],
        ),
        (
            "relays",
            &[
                "ferrolive_relay_up",
                "ferrolive_relays_live",
                "ferrolive_relay_stream_bytes_total",
                "ferrolive_relay_frames_skipped_total",
            ],
        ),
        (
            "recordings",
            &["ferrolive_recordings", "ferrolive_record_errors_total"],
        ),
        ("HLS", &["protocol=\"hls\""]),
    ] {
        for needle in needles {
            assert!(
                exprs.iter().any(|e| {
                    // A metric name as a whole name, not the prefix of a longer one.
                    e.match_indices(needle)
                        .any(|(at, _)| !e[at + needle.len()..].starts_with(is_ident))
                }),
                "no panel of the dashboard shows {group}: nothing queries {needle}"
            );
        }
    }

    // A cluster with something in every metric family: a stream published to the origin
    // (recorded) and watched on the edge (which pulls it), and a relay pull on the origin
    // (of a source that is not there: it stays retrying, which is enough for its series).
    require_ffmpeg();
    let redis = Redis::start();
    let url = redis.url();
    let api = Server::spawn("control-api", &["--redis-url", &url]);
    let record = temp_dir("grafana-record");
    let missing_source = format!("live/absent=rtmp://127.0.0.1:{}/live/absent", free_port());
    let node = |role: &str, id: &str, extra: &[&str]| Server::in_cluster(role, id, &url, extra);
    let origin = node(
        "origin",
        "origin-g",
        &[
            "--record-dir",
            record.to_str().unwrap(),
            "--relay-pull",
            &missing_source,
        ],
    );
    let edge = node("edge", "edge-g", &[]);
    let (status, body) = api.api("GET", "/control/get?room=tv", None);
    assert_eq!(status, 200, "{body}");
    let key = livego_data(&body);
    let (accepted, _publisher) = publish_accepted(&origin.rtmp_url(&key), Duration::from_secs(3));
    assert!(accepted, "origin refused the publish");
    origin.wait_live("tv");
    let mut viewer = FlvViewer::connect(edge.http, "tv");
    viewer.set_timeout(Duration::from_secs(10));
    while viewer.next_tag().expect("the edge's stream ended").tag_type != 9 {}

    // Wait for the relay's and the viewers' series (the relay's appear once it has tried).
    let deadline = Instant::now() + Duration::from_secs(20);
    let (origin_text, edge_text) = loop {
        let (o, e) = (metrics_of(&origin), metrics_of(&edge));
        if o.contains("ferrolive_relay_up{") && e.contains("ferrolive_stream_viewers{") {
            break (o, e);
        }
        assert!(
            Instant::now() < deadline,
            "no relay or stream series yet:\n{o}\n{e}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut exposition = Exposition::default();
    exposition.add(&origin_text);
    exposition.add(&edge_text);
    // The control API has no /metrics (deploy/prometheus.yml does not scrape it); should
    // it get one, its metrics count too.
    if let Some(r) = http_get(api.api, "/metrics").filter(|r| r.status == 200) {
        exposition.add(&String::from_utf8_lossy(&r.body));
    }

    let targets = target_labels();
    let series_labels = exposition.label_values();
    let mut problems = Vec::new();
    let mut queried = BTreeSet::new();
    for (place, expr) in &queries {
        for name in metric_names(expr) {
            if !exposition.exports(&name) {
                problems.push(format!("{place}: {name} is exported by no node ({expr})"));
            }
            queried.insert(name);
        }
        let (matchers, grouped) = labels(expr);
        let known = |label: &str| {
            targets.contains_key(label) || series_labels.contains_key(label) || label == "__name__"
        };
        for label in grouped.iter().chain(matchers.iter().map(|m| &m.label)) {
            if !known(label) {
                problems.push(format!("{place}: no series has a label {label} ({expr})"));
            }
        }
        // A literal `label="value"` must select something that occurs.
        for m in matchers
            .iter()
            .filter(|m| m.op == "=" && !m.value.contains('$'))
        {
            let seen = targets
                .get(&m.label)
                .into_iter()
                .flatten()
                .any(|v| *v == m.value)
                || (series_labels.get(m.label.as_str()))
                    .is_some_and(|values| values.contains(m.value.as_str()));
            if !seen {
                problems.push(format!(
                    "{place}: {}=\"{}\" selects no series ({expr})",
                    m.label, m.value
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // And the other way round, for the record: what the nodes export that no panel shows.
    let unused: Vec<&String> = exposition
        .types
        .keys()
        .filter(|name| name.starts_with("ferrolive_") && !queried.contains(*name))
        .collect();
    println!(
        "{} metrics queried, all exported; exported but not on the dashboard: {unused:?}",
        queried.len()
    );
}

#[test]
fn promql_reading() {
    let expr = r#"sum by (node, kind) (rate(ferrolive_relay_stream_bytes_total{kind="pull",role=~"$role", url="a,}b"}[$__rate_interval])) / on(node) ferrolive_viewers"#;
    assert_eq!(
        metric_names(expr).into_iter().collect::<Vec<_>>(),
        ["ferrolive_relay_stream_bytes_total", "ferrolive_viewers"]
    );
    let (matchers, grouped) = labels(expr);
    let read: Vec<_> = (matchers.iter())
        .map(|m| format!("{}{}{}", m.label, m.op, m.value))
        .collect();
    assert_eq!(read, ["kind=pull", "role=~$role", "url=a,}b"]);
    assert_eq!(grouped.into_iter().collect::<Vec<_>>(), ["kind", "node"]);
    let (matchers, grouped) = labels(r#"label_values(ferrolive_streams{role=~"$role"}, node)"#);
    assert_eq!(matchers.len(), 1);
    assert_eq!(grouped.into_iter().collect::<Vec<_>>(), ["node"]);
    assert!(metric_names("xferrolive_a + ferrolive_b").contains("ferrolive_b"));
    assert_eq!(metric_names("xferrolive_a").len(), 0);
}
