//! Human output: coloured diffs of resource specs and short summaries.

use std::fmt::Write;

use serde_json::Value;
use similar::{ChangeTag, TextDiff};

pub struct Style {
    pub color: bool,
}

impl Style {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
}

/// YAML for people; JSON if it cannot be rendered as YAML.
pub fn yaml(value: &Value) -> String {
    serde_saphyr::to_string(value)
        .unwrap_or_else(|_| serde_json::to_string_pretty(value).unwrap_or_default() + "\n")
}

/// The changes of a (dry-run) apply as a diff, one block per resource.
pub fn diff(changes: &[Value], style: &Style) -> String {
    let mut out = String::new();
    for change in changes {
        let op = change["op"].as_str().unwrap_or_default();
        let kind = change["kind"].as_str().unwrap_or_default();
        let name = change["name"].as_str().unwrap_or_default();
        let (mark, code) = match op {
            "create" => ("+", "32"),
            "delete" => ("-", "31"),
            _ => ("~", "33"),
        };
        let _ = writeln!(
            out,
            "{}",
            style.paint(code, &format!("{mark} {op} {kind} {name}"))
        );
        let before = change.get("before").map(yaml).unwrap_or_default();
        let after = change.get("after").map(yaml).unwrap_or_default();
        let text = TextDiff::from_lines(&before, &after);
        for line in text.iter_all_changes() {
            let content = line.value().trim_end_matches('\n');
            let rendered = match line.tag() {
                ChangeTag::Delete => style.paint("31", &format!("    - {content}")),
                ChangeTag::Insert => style.paint("32", &format!("    + {content}")),
                ChangeTag::Equal if op == "update" => format!("      {content}"),
                ChangeTag::Equal => continue,
            };
            let _ = writeln!(out, "{rendered}");
        }
    }
    out
}

/// The diff of an apply's changes followed by a one-line summary.
pub fn applied(applied: &Value, verb: &str, style: &Style) -> String {
    let changes = applied["changes"].as_array().map_or(&[][..], Vec::as_slice);
    format!("{}{}\n", diff(changes, style), summary(applied, verb))
}

fn summary(applied: &Value, verb: &str) -> String {
    let changes = applied["changes"].as_array().map_or(0, Vec::len);
    let version = applied["version"].as_u64().unwrap_or_default();
    match changes {
        0 => format!("no changes (config version {version})"),
        n => format!(
            "{verb} {n} change{} (config version {version})",
            if n == 1 { "" } else { "s" }
        ),
    }
}

/// Connected nodes and what they acknowledged, as a table.
pub fn status(body: &Value) -> String {
    let version = |field: &str| {
        body[field]
            .as_u64()
            .map_or("-".into(), |v: u64| v.to_string())
    };
    let mut out = format!("served config version: {}\n", version("served_version"));
    if body["held_back"].as_bool() == Some(true) {
        let _ = writeln!(
            out,
            "newest version {} is held back: a node rejected it",
            version("latest_version")
        );
    }
    for r in body["rejections"].as_array().into_iter().flatten().take(5) {
        let _ = writeln!(
            out,
            "  rejected: version {} by {} ({} {}): {}",
            r["version"].as_str().unwrap_or_default(),
            r["node"].as_str().unwrap_or_default(),
            r["type"].as_str().unwrap_or_default(),
            r["resources"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(","),
            r["error_detail"].as_str().unwrap_or_default(),
        );
    }
    let owner = &body["owner"];
    if let Some(name) = owner["name"].as_str() {
        let _ = match owner["latest_version"].as_u64() {
            None => writeln!(out, "owner {name}: no version changed its resources"),
            Some(v) => writeln!(
                out,
                "owner {name}: newest change version {v}, {} ({} of {} nodes have it)",
                if owner["served"] == true {
                    "served"
                } else {
                    "not served yet (held back, or still rolling out)"
                },
                owner["nodes_current"].as_u64().unwrap_or_default(),
                owner["nodes"].as_u64().unwrap_or_default(),
            ),
        };
    }
    let canary = &body["canary"];
    match canary["phase"].as_str() {
        Some("running") => {
            let _ = writeln!(
                out,
                "canary running: version {} on its nodes, the rest stay on {} (gatehousectl rollout status)",
                canary["canary_version"]
                    .as_u64()
                    .map_or("-".into(), |v| v.to_string()),
                canary["stable_version"].as_u64().unwrap_or_default(),
            );
        }
        Some("aborted") => {
            let _ = writeln!(
                out,
                "last canary aborted: {}",
                canary["reason"].as_str().unwrap_or_default()
            );
        }
        _ => {}
    }
    for node in body["nodes"].as_array().into_iter().flatten() {
        if let Some(why) = node["held"].as_str() {
            let _ = writeln!(
                out,
                "  HELD: {} keeps its own configuration: {why} (gatehousectl confirm serves it this store's)",
                node["id"].as_str().unwrap_or_default()
            );
        }
    }
    const TYPES: [&str; 7] = ["cds", "eds", "ecds", "lds", "rds", "auth", "ratelimit"];
    let _ = writeln!(
        out,
        "{:<32} {:<20} {:<6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}  NACK",
        "NODE", "CLUSTER", "XDS", "CDS", "EDS", "ECDS", "LDS", "RDS", "AUTH", "RLS"
    );
    for node in body["nodes"].as_array().into_iter().flatten() {
        let acked: Vec<&str> = TYPES
            .iter()
            .map(|t| node["types"][t]["acked_version"].as_str().unwrap_or("-"))
            .collect();
        let nack = node["types"]
            .as_object()
            .into_iter()
            .flatten()
            .find_map(|(_, t)| t["last_nack"]["error_detail"].as_str())
            .unwrap_or("");
        let _ = writeln!(
            out,
            "{:<32} {:<20} {:<6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}  {nack}",
            node["id"].as_str().unwrap_or_default(),
            node["cluster"].as_str().unwrap_or_default(),
            node["variant"].as_str().unwrap_or_default(),
            acked[0],
            acked[1],
            acked[2],
            acked[3],
            acked[4],
            acked[5],
            acked[6],
        );
    }
    out
}

/// The version history as a table, newest first.
/// The owners a version touched; `-` for only the operators' resources.
fn owners(owners: &Value) -> String {
    let names: Vec<&str> = owners
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if names.is_empty() {
        "-".into()
    } else {
        names.join(",")
    }
}

pub fn history(versions: &[Value]) -> String {
    let mut out = format!(
        "{:>8}  {:<20}  {:<20}  {:<8}  {:<12}  CHANGES\n",
        "VERSION", "WHEN (UTC)", "ACTOR", "SOURCE", "OWNERS"
    );
    for v in versions {
        let changes: Vec<String> = v["changes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                format!(
                    "{} {} {}",
                    c["op"].as_str().unwrap_or_default(),
                    c["kind"].as_str().unwrap_or_default(),
                    c["name"].as_str().unwrap_or_default()
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "{:>8}  {:<20}  {:<20}  {:<8}  {:<12}  {}",
            v["version"].as_u64().unwrap_or_default(),
            utc(v["at_ms"].as_i64().unwrap_or_default()),
            v["actor"].as_str().unwrap_or_default(),
            v["source"].as_str().unwrap_or_default(),
            owners(&v["owners"]),
            v["note"]
                .as_str()
                .map_or_else(|| changes.join(", "), str::to_owned)
        );
    }
    out
}

/// Usage rows as a table: per route and consumer, or per hour too.
pub fn usage(body: &Value) -> String {
    let rows = body["rows"].as_array().map_or(&[][..], Vec::as_slice);
    let hourly = body["by"] == "hour";
    let mut out = String::new();
    if hourly {
        let _ = write!(out, "{:<20}  ", "HOUR (UTC)");
    }
    let _ = writeln!(
        out,
        "{:<24}  {:<24}  {:>10}  {:>7}  {:>7}  {:>7}  {:>7}  {:>7}  {:>12}  {:>12}",
        "ROUTE", "CONSUMER", "REQUESTS", "401", "403", "429", "4XX", "5XX", "BYTES IN", "BYTES OUT"
    );
    for r in rows {
        if hourly {
            let _ = write!(
                out,
                "{:<20}  ",
                utc(r["hour_ms"].as_i64().unwrap_or_default())
            );
        }
        let n = |field: &str| r[field].as_i64().unwrap_or_default();
        let consumer = match r["consumer"].as_str().unwrap_or_default() {
            "" => "(none)",
            name => name,
        };
        let _ = writeln!(
            out,
            "{:<24}  {:<24}  {:>10}  {:>7}  {:>7}  {:>7}  {:>7}  {:>7}  {:>12}  {:>12}",
            r["route"].as_str().unwrap_or_default(),
            consumer,
            n("requests"),
            n("unauthorized"),
            n("forbidden"),
            n("rate_limited"),
            n("client_errors"),
            n("server_errors"),
            n("bytes_in"),
            n("bytes_out"),
        );
    }
    if rows.is_empty() {
        out.push_str("no requests in this span\n");
    } else if body["truncated"] == true {
        out.push_str("(more rows: narrow with --consumer, --route or --since)\n");
    }
    out
}

/// What a release forgot, and the version that records it.
pub fn released(released: &Value) -> String {
    let mut out = format!(
        "released at version {}; the newest version rolls out again:\n",
        released["version"].as_u64().unwrap_or_default()
    );
    for r in released["released"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  {} {} (version {}, refused by {}: {})",
            r["type"].as_str().unwrap_or_default(),
            r["name"].as_str().unwrap_or_default(),
            r["version"].as_str().unwrap_or_default(),
            r["node"].as_str().unwrap_or_default(),
            r["error_detail"].as_str().unwrap_or_default()
        );
    }
    out
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) from Unix milliseconds.
fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_formats_unix_milliseconds() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00");
        assert_eq!(super::utc(1_795_456_116_180), "2026-11-23 17:48:36");
        assert_eq!(super::utc(951_782_400_000), "2000-02-29 00:00:00");
    }

    #[test]
    fn status_names_a_held_back_version_and_every_type() {
        let body = serde_json::json!({
            "latest_version": 7, "served_version": 6, "held_back": true,
            "rejections": [{"version": "7", "node": "edge-2", "type": "rds",
                            "resources": ["http_routes"], "error_detail": "bad regex"}],
            "nodes": [{"id": "authz-1", "cluster": "gatehouse", "variant": "sotw",
                       "types": {"auth": {"acked_version": "6"}}}],
        });
        let text = super::status(&body);
        assert!(text.contains("served config version: 6"), "{text}");
        assert!(text.contains("newest version 7 is held back"), "{text}");
        assert!(
            text.contains("version 7 by edge-2 (rds http_routes): bad regex"),
            "{text}"
        );
        let row = text
            .lines()
            .find(|l| l.starts_with("authz-1"))
            .unwrap_or("");
        assert!(
            row.contains("     6"),
            "the auth column shows the ack: {row}"
        );
    }
}
