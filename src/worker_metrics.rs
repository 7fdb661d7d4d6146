//! Workers' own Prometheus metrics (apps with `metrics_path`), scraped when `/metrics` is
//! and served with rtsup's, each sample labelled `app` and `instance` (the slot), so one
//! scrape covers the cluster (what PM2 users install pm2 modules for).
//!
//! Workers speak the Prometheus text format (prom-client's default) or OpenMetrics; the
//! families of every worker are merged (one `# HELP` / `# TYPE` each, as a valid exposition
//! needs) and written as OpenMetrics, the format of rtsup's own `/metrics`. A worker that does
//! not answer within [`SCRAPE_TIMEOUT`] is left out of that scrape and counted in
//! `rtsup_worker_metrics_failed`.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::task::JoinSet;

/// How long one worker may take to answer.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// The most a worker's exposition may weigh.
const MAX_BODY: usize = 8 << 20;

/// One worker to scrape.
#[derive(Debug, Clone)]
pub struct Target {
    /// Its app.
    pub app: String,
    /// Its slot (the `instance` label).
    pub slot: u16,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// `metrics_path`.
    pub path: String,
}

/// Scrape every target at once: the merged families, how many workers failed (no answer, or
/// nothing usable), and how many samples were left out.
pub async fn scrape(targets: Vec<Target>) -> (String, usize, usize) {
    let mut set = JoinSet::new();
    for (i, t) in targets.iter().cloned().enumerate() {
        set.spawn(async move {
            let got = tokio::time::timeout(SCRAPE_TIMEOUT, fetch(t.port, &t.path)).await;
            (i, got.ok().and_then(Result::ok))
        });
    }
    let mut bodies: Vec<Option<String>> = vec![None; targets.len()];
    while let Some(joined) = set.join_next().await {
        if let Ok((i, body)) = joined {
            bodies[i] = body;
        }
    }
    let failed = bodies.iter().filter(|b| b.is_none()).count();
    let sources: Vec<(Vec<(String, String)>, String)> = targets
        .iter()
        .zip(bodies)
        .filter_map(|(t, b)| {
            let labels = vec![
                ("app".to_string(), t.app.clone()),
                ("instance".to_string(), t.slot.to_string()),
            ];
            b.map(|b| (labels, b))
        })
        .collect();
    let merged = merge(&sources);
    (merged.text, failed + merged.unusable, merged.dropped)
}

/// `GET path` from `127.0.0.1:port`: the body of a 2xx answer.
async fn fetch(port: u16, path: &str) -> anyhow::Result<String> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(conn);
    let req = Request::get(path)
        .header(hyper::header::HOST, format!("127.0.0.1:{port}"))
        .header(hyper::header::ACCEPT, "text/plain;version=0.0.4")
        .body(Empty::<Bytes>::new())?;
    let res = sender.send_request(req).await?;
    let status = res.status();
    let body = Limited::new(res.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the metrics: {e}"))?
        .to_bytes();
    driver.abort();
    if !status.is_success() {
        anyhow::bail!("{path} answered {status}");
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// One metric family across workers.
#[derive(Debug, Default)]
struct Family {
    name: String,
    kind: String,
    help: Option<String>,
    samples: Vec<String>,
}

/// Suffixes a sample of a family may add to its name.
const SUFFIXES: &[&str] = &[
    "_total", "_bucket", "_sum", "_count", "_created", "_info", "_gsum", "_gcount",
];

/// What a merge produced.
#[derive(Debug, Default, PartialEq)]
pub struct Merged {
    /// The families, as OpenMetrics text without `# EOF` (it goes before rtsup's own).
    pub text: String,
    /// Samples left out: malformed, named `rtsup_…`, of a type that disagrees with another
    /// worker's, or clashing with another family's names.
    pub dropped: usize,
    /// Sources with a body but not one usable sample (an HTML page at `metrics_path`).
    pub unusable: usize,
}

/// Metric types carried (OpenMetrics' `info`, `stateset` and the like are left out).
const KINDS: &[&str] = &["counter", "gauge", "histogram", "summary", "unknown"];

/// Merge expositions, each with the labels to add to its samples, into one valid OpenMetrics
/// text: whatever would make it invalid is left out and counted.
pub fn merge(sources: &[(Vec<(String, String)>, String)]) -> Merged {
    let mut families: Vec<Family> = Vec::new();
    let mut merged = Merged::default();
    for (labels, text) in sources {
        let mut kept = 0usize;
        let mut current: Option<(String, String)> = None;
        // HELP lines waiting for their family's TYPE line (or first sample).
        let mut helps: HashMap<&str, &str> = HashMap::new();
        for line in text.lines() {
            let line = line.trim_end();
            // OpenMetrics ends there; anything after it is not part of the exposition.
            if line == "# EOF" {
                break;
            }
            if let Some(rest) = line.strip_prefix("# HELP ") {
                if let Some((name, help)) = rest.split_once(' ')
                    && valid_name(name)
                {
                    match &current {
                        Some((n, k)) if n == name && KINDS.contains(&k.as_str()) => {
                            let f = family(&mut families, &om_name(n, k));
                            f.help.get_or_insert_with(|| help.to_string());
                        }
                        _ => {
                            helps.insert(name, help);
                        }
                    }
                }
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let Some((name, kind)) = rest.split_once(' ') else {
                    current = None;
                    continue;
                };
                let kind = match kind.trim() {
                    "untyped" => "unknown",
                    k => k,
                };
                // A type not carried still claims its samples (so they are dropped).
                current = Some((name.to_string(), kind.to_string()));
                if valid_name(name) && KINDS.contains(&kind) {
                    let f = family(&mut families, &om_name(name, kind));
                    if f.kind.is_empty() {
                        f.kind = kind.to_string();
                    }
                    if let Some(h) = helps.remove(name) {
                        f.help.get_or_insert_with(|| h.to_string());
                    }
                }
                continue;
            }
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some(sample) = Sample::parse(line).filter(Sample::valid) else {
                merged.dropped += 1;
                continue;
            };
            // The family of the last TYPE line, when the sample belongs to it.
            let (fname, kind) = match &current {
                Some((n, k))
                    if sample.name == n
                        || SUFFIXES
                            .iter()
                            .any(|s| sample.name.strip_suffix(s) == Some(n)) =>
                {
                    (om_name(n, k), k.clone())
                }
                _ => (sample.name.to_string(), "unknown".to_string()),
            };
            if !KINDS.contains(&kind.as_str()) || fname.starts_with("rtsup_") {
                merged.dropped += 1;
                continue;
            }
            let f = family(&mut families, &fname);
            if f.kind.is_empty() {
                f.kind = kind.clone();
            }
            // Another worker said this family is of another type.
            if f.kind != kind {
                merged.dropped += 1;
                continue;
            }
            if let Some(h) = helps.remove(fname.as_str()) {
                f.help.get_or_insert_with(|| h.to_string());
            }
            // An OpenMetrics counter's sample is NAME_total.
            let name = if kind == "counter" && sample.name == fname {
                format!("{}_total", sample.name)
            } else {
                sample.name.to_string()
            };
            f.samples.push(sample.render(&name, labels));
            kept += 1;
        }
        if kept == 0 && !text.trim().is_empty() {
            merged.unusable += 1;
        }
    }
    // Every sample name belongs to one family only (a counter `x` owns `x_total`): a later
    // family that would claim a taken name is left out.
    let mut claimed: std::collections::HashSet<String> = std::collections::HashSet::new();
    for f in families.iter().filter(|f| !f.samples.is_empty()) {
        let claims = claims(f);
        if claims.iter().any(|c| claimed.contains(c)) {
            merged.dropped += f.samples.len();
            continue;
        }
        claimed.extend(claims);
        if let Some(h) = &f.help {
            merged.text.push_str(&format!("# HELP {} {h}\n", f.name));
        }
        merged
            .text
            .push_str(&format!("# TYPE {} {}\n", f.name, f.kind));
        for s in &f.samples {
            merged.text.push_str(s);
            merged.text.push('\n');
        }
    }
    merged
}

/// The sample names a family owns.
fn claims(f: &Family) -> Vec<String> {
    let with = |suffixes: &[&str]| suffixes.iter().map(|s| format!("{}{s}", f.name)).collect();
    match f.kind.as_str() {
        "counter" => with(&["_total", "_created"]),
        "histogram" => with(&["_bucket", "_sum", "_count", "_created"]),
        "summary" => with(&["", "_sum", "_count", "_created"]),
        _ => with(&[""]),
    }
}

/// A metric or label name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// The `name="value"` pairs of a label set (each value with its quotes, escapes inside),
/// `None` when it is malformed; an empty set has none.
fn label_pairs(labels: &str) -> Option<Vec<(&str, &str)>> {
    let mut pairs = Vec::new();
    let mut rest = labels.trim();
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=')?;
        let name = name.trim();
        if !valid_name(name) {
            return None;
        }
        let after = after.trim_start();
        let body = after.strip_prefix('"')?;
        let mut escaped = false;
        let end = body.char_indices().find_map(|(i, c)| {
            let closes = c == '"' && !escaped;
            escaped = c == '\\' && !escaped;
            closes.then_some(i)
        })?;
        // The value with both quotes: `after` starts with the opening one.
        pairs.push((name, &after[..end + 2]));
        rest = body[end + 1..].trim_start();
        rest = match rest.strip_prefix(',') {
            Some(r) => r.trim_start(),
            None if rest.is_empty() => rest,
            None => return None,
        };
    }
    Some(pairs)
}

/// The OpenMetrics family name: a counter's without `_total`.
fn om_name(name: &str, kind: &str) -> String {
    match (kind, name.strip_suffix("_total")) {
        ("counter", Some(base)) => base.to_string(),
        _ => name.to_string(),
    }
}

fn family<'a>(families: &'a mut Vec<Family>, name: &str) -> &'a mut Family {
    let i = match families.iter().position(|f| f.name == name) {
        Some(i) => i,
        None => {
            families.push(Family {
                name: name.to_string(),
                ..Family::default()
            });
            families.len() - 1
        }
    };
    &mut families[i]
}

/// One sample line: `name{labels} value [timestamp]`.
#[derive(Debug, PartialEq)]
struct Sample<'a> {
    name: &'a str,
    /// The label pairs (values with their quotes), read once.
    labels: Vec<(&'a str, &'a str)>,
    value: &'a str,
}

impl<'a> Sample<'a> {
    fn parse(line: &'a str) -> Option<Self> {
        let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
        let name = &line[..name_end];
        if name.is_empty() {
            return None;
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            let close = closing_brace(&line[name_end..])?;
            (
                &line[name_end + 1..name_end + close],
                &line[name_end + close + 1..],
            )
        } else {
            ("", &line[name_end..])
        };
        // The value; a timestamp or exemplar after it is dropped.
        let value = rest.split_whitespace().next()?;
        Some(Self {
            name,
            labels: label_pairs(labels)?,
            value,
        })
    }

    /// A valid name and value (a number, `+Inf`, `-Inf` or `NaN`); the labels were checked
    /// when read.
    fn valid(&self) -> bool {
        valid_name(self.name)
            && (self.value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&self.value))
    }

    /// With `name`, rtsup's labels first, then the worker's; one of its own that collides is kept as
    /// `exported_<name>` (Prometheus's convention).
    fn render(&self, name: &str, add: &[(String, String)]) -> String {
        let mut parts: Vec<String> = add.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        for &(label, value) in &self.labels {
            if add.iter().any(|(k, _)| k == label) {
                parts.push(format!("exported_{label}={value}"));
            } else {
                parts.push(format!("{label}={value}"));
            }
        }
        format!("{name}{{{}}} {}", parts.join(","), self.value)
    }
}

/// Byte offset of the `}` that closes the `{` at the start of `s` (quotes and escapes
/// respected).
fn closing_brace(s: &str) -> Option<usize> {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in s.char_indices().skip(1) {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '}' if !in_quotes => return Some(i),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(app: &str, slot: u16, text: &str) -> (Vec<(String, String)>, String) {
        (
            vec![
                ("app".into(), app.into()),
                ("instance".into(), slot.to_string()),
            ],
            text.to_string(),
        )
    }

    #[test]
    fn families_of_every_worker_are_merged_and_labelled() {
        let prom = "# HELP http_requests_total Requests.\n# TYPE http_requests_total counter\n\
                    http_requests_total{route=\"/a\"} 3\nhttp_requests_total{route=\"/b\"} 1\n\
                    # HELP heap Heap.\n# TYPE heap gauge\nheap 123 1700000000000\n";
        let text = merge(&[src("api", 0, prom), src("api", 1, prom)]).text;
        let want = "# HELP http_requests Requests.\n# TYPE http_requests counter\n\
                    http_requests_total{app=\"api\",instance=\"0\",route=\"/a\"} 3\n\
                    http_requests_total{app=\"api\",instance=\"0\",route=\"/b\"} 1\n\
                    http_requests_total{app=\"api\",instance=\"1\",route=\"/a\"} 3\n\
                    http_requests_total{app=\"api\",instance=\"1\",route=\"/b\"} 1\n\
                    # HELP heap Heap.\n# TYPE heap gauge\n\
                    heap{app=\"api\",instance=\"0\"} 123\nheap{app=\"api\",instance=\"1\"} 123\n";
        assert_eq!(text, want);
    }

    #[test]
    fn odd_expositions_stay_valid() {
        let cases = [
            // A counter without _total gets the suffix OpenMetrics requires.
            (
                "# TYPE hits counter\nhits 2\n",
                "# TYPE hits counter\nhits_total{app=\"a\",instance=\"0\"} 2\n",
            ),
            // Untyped samples become `unknown` families.
            (
                "loose 1\n",
                "# TYPE loose unknown\nloose{app=\"a\",instance=\"0\"} 1\n",
            ),
            // A histogram keeps its suffixed samples in one family.
            (
                "# TYPE lat histogram\nlat_bucket{le=\"+Inf\"} 1\nlat_sum 0.5\nlat_count 1\n",
                "# TYPE lat histogram\nlat_bucket{app=\"a\",instance=\"0\",le=\"+Inf\"} 1\n\
                 lat_sum{app=\"a\",instance=\"0\"} 0.5\nlat_count{app=\"a\",instance=\"0\"} 1\n",
            ),
            // The worker's own `app` label is kept as exported_app; braces in values are fine.
            (
                "# TYPE g gauge\ng{app=\"x}\",k=\"v\"} 1\n",
                "# TYPE g gauge\ng{app=\"a\",instance=\"0\",exported_app=\"x}\",k=\"v\"} 1\n",
            ),
            // Non-ASCII values are renamed the same.
            (
                "# TYPE g gauge\ng{app=\"café\"} 1\n",
                "# TYPE g gauge\ng{app=\"a\",instance=\"0\",exported_app=\"café\"} 1\n",
            ),
            // OpenMetrics input: EOF and exemplars dropped.
            (
                "# TYPE c counter\nc_total 1 # {trace=\"t\"} 1\n# EOF\nafter 1\n",
                "# TYPE c counter\nc_total{app=\"a\",instance=\"0\"} 1\n",
            ),
            // Garbage lines are skipped.
            ("{broken\n\n", ""),
        ];
        for (input, want) in cases {
            assert_eq!(merge(&[src("a", 0, input)]).text, want, "{input}");
        }
    }

    #[test]
    fn what_would_break_the_exposition_is_left_out_and_counted() {
        // An HTML page at metrics_path: nothing usable.
        let html = merge(&[src(
            "a",
            0,
            "<!doctype html>\n<html><body>app</body></html>\n",
        )]);
        assert_eq!((html.text.as_str(), html.unusable), ("", 1));
        // Bad names, values and labels; rtsup's own names.
        let bad = merge(&[src(
            "a",
            0,
            "9bad 1\nok 1\nv{l=\"x\"} notanumber\nl{=\"x\"} 1\nrtsup_worker_up 1\ninf +Inf\n",
        )]);
        assert_eq!(
            bad.text,
            "# TYPE ok unknown\nok{app=\"a\",instance=\"0\"} 1\n# TYPE inf unknown\ninf{app=\"a\",instance=\"0\"} +Inf\n"
        );
        assert_eq!(bad.dropped, 4);
        // Two workers that disagree on a type; a counter and an untyped NAME_total.
        let a = "# TYPE x gauge\nx 1\n# TYPE foo_total counter\nfoo_total 2\n";
        let b = "# TYPE x counter\nx_total 5\nfoo_total 3\n";
        let m = merge(&[src("a", 0, a), src("b", 0, b)]);
        assert_eq!(
            m.text,
            "# TYPE x gauge\nx{app=\"a\",instance=\"0\"} 1\n# TYPE foo counter\nfoo_total{app=\"a\",instance=\"0\"} 2\n"
        );
        assert_eq!(m.dropped, 2);
        // Types rtsup does not carry.
        let info = merge(&[src("a", 0, "# TYPE build info\nbuild_info{v=\"1\"} 1\n")]);
        assert_eq!((info.text.as_str(), info.dropped), ("", 1));
    }
}
