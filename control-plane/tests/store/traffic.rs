//! Usage rows: reports add up per hour, read back by hour or summed, and
//! old hours are dropped.

use gatehouse_control_plane::store::{Store, TrafficCounts, TrafficQuery, TrafficRow};

use crate::support::*;

const HOUR: i64 = 3_600_000;

fn row(hour: i64, route: &str, consumer: &str, requests: i64, limited: i64) -> TrafficRow {
    TrafficRow {
        hour_ms: Some(hour * HOUR),
        route: route.into(),
        consumer: consumer.into(),
        counts: TrafficCounts {
            requests,
            rate_limited: limited,
            bytes_out: requests * 100,
            ..TrafficCounts::default()
        },
    }
}

fn query(by_hour: bool) -> TrafficQuery {
    TrafficQuery {
        since_ms: 0,
        until_ms: 100 * HOUR,
        by_hour,
        limit: 100,
        ..TrafficQuery::default()
    }
}

async fn usage_rows_add_up_and_read_back_by_hour_or_total(store: Store) {
    store
        .record_traffic(&[
            row(10, "orders", "alice", 3, 1),
            row(10, "orders", "", 2, 0),
            row(11, "orders", "alice", 1, 0),
        ])
        .await
        .unwrap();
    // A second instance's report for the same hour adds to it.
    store
        .record_traffic(&[row(10, "orders", "alice", 4, 2)])
        .await
        .unwrap();
    let hourly = store.traffic(&query(true)).await.unwrap();
    assert_eq!(
        hourly,
        [
            row(11, "orders", "alice", 1, 0),
            row(10, "orders", "alice", 7, 3),
            row(10, "orders", "", 2, 0),
        ]
    );
    let total = store
        .traffic(&TrafficQuery {
            consumer: Some("alice".into()),
            ..query(false)
        })
        .await
        .unwrap();
    assert_eq!(
        total,
        [TrafficRow {
            hour_ms: None,
            ..row(0, "orders", "alice", 8, 3)
        }]
    );
    let anonymous = store
        .traffic(&TrafficQuery {
            consumer: Some(String::new()),
            route: Some("orders".into()),
            ..query(true)
        })
        .await
        .unwrap();
    assert_eq!(anonymous, [row(10, "orders", "", 2, 0)]);

    assert_eq!(store.prune_traffic(11 * HOUR).await.unwrap(), 2);
    assert_eq!(
        store.traffic(&query(true)).await.unwrap(),
        [row(11, "orders", "alice", 1, 0)]
    );
}

store_suite!(usage_rows_add_up_and_read_back_by_hour_or_total);
