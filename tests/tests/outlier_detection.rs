//! Passive outlier detection through a real Envoy: an endpoint failing half
//! its requests is ejected by the failure-percentage test and by the
//! success-rate test, and comes back once fixed (issue 20).

use std::time::{Duration, Instant};

use gatehouse_e2e::{
    Behaviour, Stack, Upstream, client, eventually, probe, service_over as service,
};
use serde_json::json;

#[tokio::test]
async fn a_failing_endpoint_is_ejected_and_comes_back() {
    let g = Stack::new().start().await;
    let good = Upstream::start("good").await;
    let bad = Upstream::start("bad").await;
    g.cp.apply(
        "/v1/services/pair",
        service(
            &[(&good, 0), (&bad, 0)],
            json!({"outlier_detection": {
                "failure_percentage": {"threshold": 50, "minimum_requests": 10},
                "interval_ms": 500, "base_ejection_ms": 2000, "max_ejection_percent": 50}}),
        ),
    )
    .await;
    let version =
        g.cp.apply(
            "/v1/routes/pair",
            json!({"match": {"path_prefix": "/"}, "destination": {"service": "pair"},
                   "retries": {"on": ["5xx"], "attempts": 2}}),
        )
        .await;
    g.cp.until_converged(version).await;
    // Half of the bad endpoint's answers are 500 from now on.
    bad.behave(Behaviour::failing(2, 500));
    let http = client();
    let (mut sent, mut failed) = (0, 0);
    let started = Instant::now();
    let mut ejected_at = None;
    while started.elapsed() < Duration::from_secs(4) {
        let before = bad.hit_count();
        sent += 1;
        if probe(&http, &g.envoy.url("/x")).await.0 != 200 {
            failed += 1;
        }
        let quiet = bad.hit_count() == before;
        if quiet && ejected_at.is_none() && sent > 40 {
            ejected_at = Some(started.elapsed());
        }
    }
    assert!(
        failed * 100 <= sent,
        "{failed} of {sent} failed with retries on"
    );
    let ejections = g
        .envoy
        .stat("cluster.pair.outlier_detection.ejections_enforced_failure_percentage")
        .await
        .unwrap_or_default();
    assert!(ejections >= 1, "the bad endpoint was ejected");
    // Fixed, it comes back after the ejection time.
    bad.behave(Behaviour::default());
    let before = bad.hit_count();
    eventually(
        Duration::from_secs(15),
        "the endpoint back in rotation",
        || async {
            probe(&http, &g.envoy.url("/x")).await;
            bad.hit_count() > before + 3
        },
    )
    .await;
}

#[tokio::test]
async fn the_success_rate_test_ejects_the_endpoint_below_the_others() {
    let g = Stack::new().start().await;
    let ups = [
        Upstream::start("a").await,
        Upstream::start("b").await,
        Upstream::start("c").await,
    ];
    g.cp.apply(
        "/v1/services/trio",
        service(
            &[(&ups[0], 0), (&ups[1], 0), (&ups[2], 0)],
            json!({"outlier_detection": {
                "success_rate": {"minimum_hosts": 3, "minimum_requests": 10, "stdev_factor": 1000},
                "interval_ms": 500, "base_ejection_ms": 5000}}),
        ),
    )
    .await;
    let version =
        g.cp.apply(
            "/v1/routes/trio",
            json!({"match": {"path_prefix": "/"}, "destination": {"service": "trio"}}),
        )
        .await;
    g.cp.until_converged(version).await;
    ups[2].behave(Behaviour::failing(2, 500));
    let http = client();
    eventually(
        Duration::from_secs(10),
        "a success-rate ejection",
        || async {
            for _ in 0..20 {
                probe(&http, &g.envoy.url("/x")).await;
            }
            g.envoy
                .stat("cluster.trio.outlier_detection.ejections_enforced_success_rate")
                .await
                .unwrap_or_default()
                >= 1
        },
    )
    .await;
    // Ejected: the failing endpoint gets nothing, the client sees no error.
    let before = ups[2].hit_count();
    for _ in 0..30 {
        assert_eq!(probe(&http, &g.envoy.url("/x")).await.0, 200);
    }
    assert_eq!(
        ups[2].hit_count(),
        before,
        "the ejected endpoint got traffic"
    );
}
