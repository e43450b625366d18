//! Traffic usage rows: requests per route and consumer per hour, added up
//! from ext-authz's reports, read back by `GET /v1/usage`, and dropped once
//! past the retention. Not configuration: no version, no history.

use sqlx::{Row, any::AnyRow};

use super::{Store, StoreError};

/// What a route and consumer did: requests by outcome, and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TrafficCounts {
    pub requests: i64,
    pub unauthorized: i64,
    pub forbidden: i64,
    pub rate_limited: i64,
    pub client_errors: i64,
    pub server_errors: i64,
    pub bytes_in: i64,
    pub bytes_out: i64,
}

const COUNT_COLUMNS: [&str; 8] = [
    "requests",
    "unauthorized",
    "forbidden",
    "rate_limited",
    "client_errors",
    "server_errors",
    "bytes_in",
    "bytes_out",
];

impl TrafficCounts {
    fn values(&self) -> [i64; 8] {
        [
            self.requests,
            self.unauthorized,
            self.forbidden,
            self.rate_limited,
            self.client_errors,
            self.server_errors,
            self.bytes_in,
            self.bytes_out,
        ]
    }

    fn read(row: &AnyRow, first: usize) -> Result<Self, sqlx::Error> {
        Ok(Self {
            requests: row.try_get(first)?,
            unauthorized: row.try_get(first + 1)?,
            forbidden: row.try_get(first + 2)?,
            rate_limited: row.try_get(first + 3)?,
            client_errors: row.try_get(first + 4)?,
            server_errors: row.try_get(first + 5)?,
            bytes_in: row.try_get(first + 6)?,
            bytes_out: row.try_get(first + 7)?,
        })
    }
}

/// One route and consumer in one hour (or over the whole query when
/// `hour_ms` is `None`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TrafficRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hour_ms: Option<i64>,
    pub route: String,
    /// Empty for requests without an authenticated consumer.
    pub consumer: String,
    #[serde(flatten)]
    pub counts: TrafficCounts,
}

/// Which rows `traffic` reads.
#[derive(Debug, Clone, Default)]
pub struct TrafficQuery {
    pub consumer: Option<String>,
    pub route: Option<String>,
    /// Hours starting at or after this.
    pub since_ms: i64,
    /// Hours starting before this.
    pub until_ms: i64,
    /// One row per hour, or one per route and consumer for the whole span.
    pub by_hour: bool,
    pub limit: u32,
}

impl Store {
    /// Adds reported counts to their hours' rows, in one transaction.
    pub async fn record_traffic(&self, rows: &[TrafficRow]) -> Result<(), StoreError> {
        let columns = COUNT_COLUMNS.join(", ");
        let placeholders = (4..4 + COUNT_COLUMNS.len())
            .map(|n| format!("${n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sums = COUNT_COLUMNS
            .iter()
            .map(|c| format!("{c} = traffic_usage.{c} + excluded.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO traffic_usage (hour_ms, route, consumer, {columns}) \
             VALUES ($1, $2, $3, {placeholders}) \
             ON CONFLICT (hour_ms, route, consumer) DO UPDATE SET {sums}"
        );
        let mut tx = self.pool.begin().await?;
        for row in rows {
            let mut query = sqlx::query(&sql)
                .bind(row.hour_ms.unwrap_or(0))
                .bind(&row.route)
                .bind(&row.consumer);
            for value in row.counts.values() {
                query = query.bind(value);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The rows `query` asks for: by hour (newest first), or summed per
    /// route and consumer (busiest first).
    pub async fn traffic(&self, query: &TrafficQuery) -> Result<Vec<TrafficRow>, StoreError> {
        let mut filters = vec!["hour_ms >= $1".to_owned(), "hour_ms < $2".to_owned()];
        let mut texts = Vec::new();
        for (column, value) in [("consumer", &query.consumer), ("route", &query.route)] {
            if let Some(value) = value {
                texts.push(value.clone());
                filters.push(format!("{column} = ${}", 2 + texts.len()));
            }
        }
        let filter = filters.join(" AND ");
        let limit = query.limit;
        let sql = if query.by_hour {
            format!(
                "SELECT hour_ms, route, consumer, {} FROM traffic_usage WHERE {filter} \
                 ORDER BY hour_ms DESC, requests DESC, route, consumer LIMIT {limit}",
                COUNT_COLUMNS.join(", ")
            )
        } else {
            let sums = COUNT_COLUMNS
                .iter()
                .map(|c| format!("CAST(SUM({c}) AS BIGINT)"))
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "SELECT route, consumer, {sums} FROM traffic_usage WHERE {filter} \
                 GROUP BY route, consumer ORDER BY 3 DESC, route, consumer LIMIT {limit}"
            )
        };
        let mut select = sqlx::query(&sql).bind(query.since_ms).bind(query.until_ms);
        for text in &texts {
            select = select.bind(text);
        }
        let rows = select.fetch_all(&self.pool).await?;
        let first = if query.by_hour { 1 } else { 0 };
        rows.iter()
            .map(|row| {
                Ok(TrafficRow {
                    hour_ms: if query.by_hour {
                        Some(row.try_get(0)?)
                    } else {
                        None
                    },
                    route: row.try_get(first)?,
                    consumer: row.try_get(first + 1)?,
                    counts: TrafficCounts::read(row, first + 2)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Drops the hours that started before `before_ms`; how many rows went.
    pub async fn prune_traffic(&self, before_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM traffic_usage WHERE hour_ms < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
