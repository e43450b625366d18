//! Envoy is the judge of which regexes it accepts: for a corpus of ordinary
//! and adversarial patterns, Envoy reports each one's real RE2 program size,
//! and Gatehouse's estimate (which validation enforces) must never be lower.
//! So a regex Gatehouse accepts can never make Envoy NACK a route table.

use gatehouse_control_plane::model::{
    MAX_RE2_PROGRAM_SIZE, check_re2_regex, re2_program_size_estimate,
};
use gatehouse_e2e::{envoy_bin, scratch_dir};

const CORPUS: &[&str] = &[
    "^/users$",
    "^/users/[0-9]+$",
    r"^/users/\d+/orders/[a-z0-9-]+$",
    "/a.b",
    "(?i)^/users$",
    r"^/\w+$",
    r"^/\pL+$",
    "^/items/[^/]+/x$",
    "^(GET|POST)$",
    ".*",
    ".+",
    "(?s).",
    "[^a]",
    r"\S+",
    r"\W",
    r"\D",
    "[[:alpha:]]+",
    r"\p{Greek}",
    "(?i)[a-z]+",
    "^/é+$",
    "a{0,5}",
    "a{3}",
    "(ab|cd){2,4}",
    "(a|b|c|d|e|f|g|h)",
    "^/v[0-9]+/.*$",
    r"\b/x\b",
    "^$",
    "(?:a|b)*c",
    "x*?y+?",
    r"[\x00-\x7f]",
    r"[^\n]+",
    "(?m)^a$",
    "^/(?P<id>[0-9]+)$",
    r"\.",
    "[☃-♥]",
    "(?i)é",
    "(.)(.)(.)(.)",
    "[^/]{1,8}",
    ".{0,3}",
    "(?i)(get|put|post|delete|patch)",
    r"^/api/v1/customers/\d+/invoices/[0-9a-f-]+/lines/\d+$",
    "^/(alpha|beta|gamma|delta|epsilon|zeta|eta|theta|iota|kappa){1,30}$",
    "[ĀĂĄĆĈĊČĎĐĒĔĖĘĚĜĞĠĢĤĦĨĪĬĮİĲĴĶĹĻĽĿŁŃŅŇŊŌŎŐŒŔŖŘŚŜŞŠŢŤŦŨŪŬŮŰŲŴŶŹŻŽ]",
    "[一-龥]",
    "[α-ωа-я]",
    "(?i)[α-ω]",
    r"\pN",
    "[^a-z]",
    r"\p{Lu}{1,10}",
    "(?i)ǅ",
];

/// The RE2 program size Envoy computes for `regex`.
async fn envoy_program_size(regex: &str, dir: &std::path::Path, index: usize) -> usize {
    let config = format!(
        r#"static_resources:
  listeners:
  - name: l
    address: {{socket_address: {{address: 127.0.0.1, port_value: 1}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: x
          http_filters: [{{name: envoy.filters.http.router, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}}}]
          route_config:
            virtual_hosts:
            - name: v
              domains: ["*"]
              routes:
              - match: {{safe_regex: {{regex: {regex}}}}}
                direct_response: {{status: 200}}
layered_runtime:
  layers: [{{name: s, static_layer: {{re2.max_program_size.error_level: 1}}}}]
"#,
        regex = serde_json::to_string(regex).expect("json string")
    );
    let path = dir.join(format!("regex-{index}.yaml"));
    std::fs::write(&path, config).expect("write config");
    let output = tokio::process::Command::new(envoy_bin())
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(&path)
        .output()
        .await
        .expect("envoy runs");
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    if output.status.success() {
        // Accepted even with a limit of 1: a program of at most one instruction.
        return 1;
    }
    text.split("program size of ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("Envoy rejected {regex:?} for another reason:\n{text}"))
}

#[tokio::test]
async fn regex_size_estimate_is_never_below_envoys() {
    let dir = scratch_dir("gatehouse_regex");
    let mut checks = tokio::task::JoinSet::new();
    for (index, regex) in CORPUS.iter().enumerate() {
        let dir = dir.clone();
        checks.spawn(async move { (*regex, envoy_program_size(regex, &dir, index).await) });
    }
    let mut report = Vec::new();
    while let Some(result) = checks.join_next().await {
        let (regex, actual) = result.expect("check ran");
        let estimate = re2_program_size_estimate(regex).expect("parses");
        report.push(format!("{regex:?}: envoy {actual}, estimate {estimate}"));
        assert!(
            estimate >= actual,
            "under-estimated {regex:?}: Envoy {actual}, estimate {estimate}"
        );
        if check_re2_regex(regex).is_ok() {
            assert!(
                actual <= MAX_RE2_PROGRAM_SIZE,
                "accepted {regex:?} that Envoy rejects ({actual})"
            );
        }
    }
    report.sort();
    println!("{}", report.join("\n"));
}
