//! Envoy is the judge of which regexes it accepts: for a corpus of ordinary
//! and adversarial patterns, Envoy reports each one's real RE2 program size,
//! and Gatehouse's estimate (which validation enforces) must never be lower.
//! So a regex Gatehouse accepts can never make Envoy NACK a route table.

use gatehouse_control_plane::model::{
    MAX_RE2_PROGRAM_SIZE, RE2_UNICODE_CLASSES, check_re2_regex, re2_program_size_estimate,
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

/// A static config with one route per regex, under an RE2 program size limit.
fn config(regexes: &[&str], limit: usize) -> String {
    let routes: String = regexes
        .iter()
        .map(|regex| {
            format!(
                "              - match: {{safe_regex: {{regex: {}}}}}\n                direct_response: {{status: 200}}\n",
                serde_json::to_string(regex).expect("json string")
            )
        })
        .collect();
    format!(
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
{routes}layered_runtime:
  layers: [{{name: s, static_layer: {{re2.max_program_size.error_level: {limit}}}}}]
"#
    )
}

/// `envoy --mode validate`: whether Envoy accepts `config`, and its output.
async fn validate(config: &str, path: &std::path::Path) -> (bool, String) {
    std::fs::write(path, config).expect("write config");
    let output = tokio::process::Command::new(envoy_bin())
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(path)
        .output()
        .await
        .expect("envoy runs");
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

/// The RE2 program size Envoy computes for `regex`.
async fn envoy_program_size(regex: &str, dir: &std::path::Path, index: usize) -> usize {
    let path = dir.join(format!("regex-{index}.yaml"));
    let (accepted, text) = validate(&config(&[regex], 1), &path).await;
    if accepted {
        // Accepted even with a limit of 1: a program of at most one instruction.
        return 1;
    }
    text.split("program size of ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("Envoy rejected {regex:?} for another reason:\n{text}"))
}

/// Every Unicode class name validation lets through is one Envoy's RE2
/// knows; and a name Rust's syntax takes but RE2 does not is refused by both.
#[tokio::test]
async fn unicode_classes_gatehouse_accepts_are_known_to_envoy() {
    let dir = scratch_dir("gatehouse_regex_classes");
    let regexes: Vec<String> = RE2_UNICODE_CLASSES
        .iter()
        .map(|name| format!(r"^/\p{{{name}}}$"))
        .collect();
    let regexes: Vec<&str> = regexes.iter().map(String::as_str).collect();
    let (accepted, text) = validate(&config(&regexes, 1_000_000), &dir.join("all.yaml")).await;
    assert!(accepted, "Envoy refuses one of them:\n{text}");
    for name in ["ASCII_Hex_Digit", "greek", "Grek", "Garay"] {
        let regex = format!(r"^/\p{{{name}}}$");
        assert!(check_re2_regex(&regex).is_err(), "{regex} is refused");
        let (accepted, _) = validate(&config(&[&regex], 1_000_000), &dir.join("one.yaml")).await;
        assert!(!accepted, "and Envoy refuses {regex} too");
    }
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
