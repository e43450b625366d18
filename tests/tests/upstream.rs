//! The test upstream's behaviours, which resilience tests rely on: it fails
//! a chosen share of requests with a chosen status, answers late, hangs,
//! resets the connection, and counts what it received.

use std::time::{Duration, Instant};

use gatehouse_e2e::{Behaviour, Upstream, client};

fn url(up: &Upstream, path: &str) -> String {
    format!("http://{}{path}", up.addr)
}

#[tokio::test]
async fn fails_a_share_with_the_chosen_status_and_counts_every_request() {
    let up = Upstream::start_with("flaky", Behaviour::failing(3, 503)).await;
    let http = client();
    let mut statuses = Vec::new();
    for i in 0..6 {
        let response = http
            .get(url(&up, &format!("/r{i}")))
            .header("x-test", "yes")
            .send()
            .await
            .expect("answered");
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 503, 200, 200, 503]);
    assert_eq!(up.hit_count(), 6);
    let received = up.received();
    assert_eq!(received.len(), 6);
    assert_eq!(received[0].path, "/r0");
    assert!(
        received[0]
            .headers
            .iter()
            .any(|(k, v)| k == "x-test" && v == "yes")
    );
    up.behave(Behaviour::default());
    let ok = http.get(url(&up, "/")).send().await.expect("answered");
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn delays_hangs_and_resets() {
    let up = Upstream::start_with("slow", Behaviour::delayed(Duration::from_millis(300))).await;
    let http = client();
    let started = Instant::now();
    let slow = http.get(url(&up, "/")).send().await.expect("answered");
    assert_eq!(slow.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(300));

    up.behave(Behaviour::hanging());
    let hung = http
        .get(url(&up, "/"))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(hung.is_err_and(|e| e.is_timeout()), "no answer");

    up.behave(Behaviour::resetting());
    let reset = http.get(url(&up, "/")).send().await;
    assert!(reset.is_err(), "connection reset");
    assert_eq!(up.hit_count(), 3, "the reset connection counts too");
}
