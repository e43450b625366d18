//! Envoy's JSON access log and the security event logs from a real run
//! (issue 21): one object per request with the fields operators search by;
//! auth failures and rate-limit hits as events, the first of a kind at once
//! and the rest summarised; no credential from the run in any log.

use std::time::Duration;

use gatehouse_e2e::{Stack, eventually};
use serde_json::{Value, json};

fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[tokio::test]
async fn every_request_is_one_json_line_and_no_secret_is_logged() {
    let g = Stack::new()
        .ext_authz(&[
            ("GATEHOUSE_LOG_FORMAT", "json"),
            ("GATEHOUSE_EVENT_SUMMARY_MS", "1000"),
        ])
        .ratelimit(&["--log-format", "json", "--event-summary-ms", "1000"])
        .orders()
        .access_log()
        .start()
        .await;
    let key = g.limited_orders(3).await;
    let token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJtYWxsb3J5In0.c2VjcmV0LXNpZ25hdHVyZQ";
    let with_query = format!("/orders/2?api_key={key}&page=3");
    let bearer = format!("Bearer {token}");
    let sent = [
        ("/orders/1", vec![("x-api-key", key.as_str())], 200),
        (&with_query, vec![], 200),
        ("/orders/3", vec![("x-api-key", "gh_wrong_key_value")], 401),
        ("/orders/4", vec![("authorization", &bearer)], 401),
    ];
    for (path, headers, status) in &sent {
        let answer = g.envoy.send(path, headers).await;
        assert_eq!(answer.status, *status, "{path}");
    }
    // An attack: the same bad key twenty times, and alice over her limit.
    for _ in 0..20 {
        g.envoy
            .send("/orders/5", &[("x-api-key", "gh_wrong_key_value")])
            .await;
    }
    for _ in 0..5 {
        g.envoy.send("/orders/6", &[("x-api-key", &key)]).await;
    }
    let log = g.envoy.access_log.clone().expect("an access log");
    // Envoy writes its buffer every 10 s (or when 64 KiB fill up).
    eventually(
        Duration::from_secs(25),
        "the access log flushed",
        || async {
            let logged = lines(&log);
            (1..=4).all(|n| {
                logged
                    .iter()
                    .any(|e| e["path"] == json!(format!("/orders/{n}")))
            })
        },
    )
    .await;
    let entries = lines(&log);
    let of = |path: &str| {
        entries
            .iter()
            .find(|e| e["path"] == json!(path))
            .unwrap_or_else(|| panic!("no line for {path}: {entries:#?}"))
    };
    let ok = of("/orders/1");
    for field in [
        "timestamp",
        "trace_id",
        "request_id",
        "consumer",
        "route",
        "service",
        "method",
        "path",
        "protocol",
        "status",
        "response_flags",
        "details",
        "duration_ms",
        "upstream_ms",
        "bytes_in",
        "bytes_out",
        "upstream_host",
        "client_ip",
        "user_agent",
    ] {
        assert!(ok.get(field).is_some(), "{field} missing: {ok}");
    }
    assert_eq!(ok["status"], json!(200));
    assert_eq!(ok["consumer"], json!("alice"));
    assert_eq!(ok["route"], json!("orders"));
    assert_eq!(ok["service"], json!("orders"));
    assert_eq!(ok["method"], json!("GET"));
    assert_eq!(ok["client_ip"], json!("127.0.0.1"));
    assert!(
        ok["request_id"].as_str().is_some_and(|id| id.len() >= 16),
        "{ok}"
    );
    assert!(ok["bytes_out"].as_u64().is_some_and(|b| b > 0), "{ok}");
    assert!(
        ok["upstream_host"]
            .as_str()
            .is_some_and(|h| h.starts_with("127.0.0.1:")),
        "{ok}"
    );
    // The query (where an API key may travel) is never logged.
    assert_eq!(of("/orders/2")["status"], json!(200));
    let refused = of("/orders/3");
    assert_eq!(refused["status"], json!(401));
    assert_eq!(refused["response_flags"], json!("UAEX"), "{refused}");

    // 21 failures with a bad key: the first at once, then a summary whose
    // count covers its interval (all of them, unless they straddled two).
    let failures = events(&g.ext_authz().log, "auth_failure", "invalid_credentials").await;
    let first = &failures[0];
    assert_eq!(first["route"], json!("orders"), "{first}");
    assert_eq!(first["client_ip"], json!("127.0.0.1"), "{first}");
    assert!(first["trace_id"].is_string(), "{first}");
    let summarised: u64 = failures.iter().filter_map(|e| e["count"].as_u64()).sum();
    assert!((20..=21).contains(&summarised), "{failures:#?}");
    assert!(
        failures.len() <= 6,
        "summarised, not one line each: {failures:#?}"
    );
    // Alice over her limit: rate_limited events naming the policy.
    let hits = events(&g.limiter().log, "rate_limited", "policy:per-consumer").await;
    assert_eq!(hits[0]["consumer"], json!("alice"), "{hits:#?}");

    // No credential of the run in any log file.
    let files = [
        log.clone(),
        g.envoy.log.clone(),
        g.cp.log.clone(),
        g.ext_authz().log.clone(),
        g.limiter().log.clone(),
    ];
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for secret in [key.as_str(), "gh_wrong_key_value", token] {
            assert!(!text.contains(secret), "{} holds a secret", file.display());
        }
    }
}

/// The `event` lines with `reason` of a service's JSON log (their fields),
/// once a summary has been written.
async fn events(log: &std::path::Path, event: &str, reason: &str) -> Vec<Value> {
    let read = || {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["target"] == json!("gatehouse::events"))
            .map(|l| l["fields"].clone())
            .filter(|f| f["event"] == json!(event) && f["reason"] == json!(reason))
            .collect::<Vec<_>>()
    };
    eventually(Duration::from_secs(10), "a summary line", || async {
        read().iter().any(|f| f["count"].is_u64())
    })
    .await;
    read()
}
