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

pub fn summary(applied: &Value, verb: &str) -> String {
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
    let served = body["served_version"]
        .as_u64()
        .map_or("-".into(), |v| v.to_string());
    let mut out = format!("served config version: {served}\n");
    let _ = writeln!(
        out,
        "{:<32} {:<12} {:<6} {:>6} {:>6} {:>6} {:>6}  NACK",
        "NODE", "CLUSTER", "XDS", "CDS", "EDS", "LDS", "RDS"
    );
    for node in body["nodes"].as_array().into_iter().flatten() {
        let acked = |t: &str| {
            node["types"][t]["acked_version"]
                .as_str()
                .unwrap_or("-")
                .to_owned()
        };
        let nack = ["cds", "eds", "lds", "rds"]
            .iter()
            .find_map(|t| node["types"][t]["last_nack"]["error_detail"].as_str())
            .unwrap_or("");
        let _ = writeln!(
            out,
            "{:<32} {:<12} {:<6} {:>6} {:>6} {:>6} {:>6}  {nack}",
            node["id"].as_str().unwrap_or_default(),
            node["cluster"].as_str().unwrap_or_default(),
            node["variant"].as_str().unwrap_or_default(),
            acked("cds"),
            acked("eds"),
            acked("lds"),
            acked("rds"),
        );
    }
    out
}
