//! Resources nodes refused (NACKs), kept so a restarted control plane does
//! not roll them out again, and so replicas sharing the store keep their
//! nodes off them too. Written by the rollout; read at start, on a
//! notification (Postgres) and when the periodic check finds more.

use sqlx::Row;

use super::{Backend, Committed, NOTIFY_CHANNEL, Source, Store, StoreError, rows::now_ms};

/// One refused resource content, with the NACK that refused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedResource {
    /// `cds`, `eds`, `lds`, `rds`, `auth` or `ratelimit`.
    pub r#type: String,
    pub name: String,
    pub content_version: String,
    /// The snapshot version the node was sent.
    pub version: String,
    pub node: String,
    pub error_detail: String,
    pub at_ms: i64,
}

/// What a release forgot, and the version that records it.
#[derive(Debug, Clone)]
pub struct Released {
    pub version: u64,
    pub released: Vec<RejectedResource>,
}

impl Store {
    /// Forgets every recorded refusal, after an operator investigated them,
    /// so the newest version rolls out again. Recorded in the history as a
    /// version of its own (source `release`, no resource changed, a note
    /// naming what was released and `reason`). Fails with
    /// [`StoreError::NothingHeld`] when no refusal is recorded.
    pub async fn release_rejections(&self, reason: Option<&str>) -> Result<Released, StoreError> {
        let released = self.rejections().await?;
        if released.is_empty() {
            return Err(StoreError::NothingHeld);
        }
        let _turn = self.write_turn().await?;
        let mut tx = self.pool.begin().await?;
        let version = super::bump_version(&mut tx).await?;
        // Only what was read above: a refusal recorded since stays.
        for r in &released {
            sqlx::query(
                "DELETE FROM rejected_resources WHERE type = $1 AND name = $2 AND content_version = $3",
            )
            .bind(&r.r#type)
            .bind(&r.name)
            .bind(&r.content_version)
            .execute(&mut *tx)
            .await?;
        }
        let what = released
            .iter()
            .map(|r| {
                format!(
                    "{} {:?} (version {}, refused by {})",
                    r.r#type, r.name, r.version, r.node
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let note = match reason {
            Some(reason) => format!("released {what}: {reason}"),
            None => format!("released {what}"),
        };
        sqlx::query(
            "INSERT INTO config_versions (version, at_ms, actor, source, note) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(version as i64)
        .bind(now_ms())
        .bind(&self.origin.actor)
        .bind(Source::Release.as_str())
        .bind(&note)
        .execute(&mut *tx)
        .await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(NOTIFY_CHANNEL)
                .bind(version.to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.committed.send_replace(Committed {
            version,
            prepared: None,
        });
        Ok(Released { version, released })
    }

    /// Records refused resources; one already recorded is kept as it was.
    pub async fn record_rejections(&self, rejected: &[RejectedResource]) -> Result<(), StoreError> {
        let _turn = self.write_turn().await?;
        let mut tx = self.pool.begin().await?;
        for r in rejected {
            sqlx::query(
                "INSERT INTO rejected_resources \
                 (type, name, content_version, version, node, error_detail, at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (type, name, content_version) DO NOTHING",
            )
            .bind(&r.r#type)
            .bind(&r.name)
            .bind(&r.content_version)
            .bind(&r.version)
            .bind(&r.node)
            .bind(&r.error_detail)
            .bind(r.at_ms)
            .execute(&mut *tx)
            .await?;
        }
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_notify($1, 'rejection')")
                .bind(NOTIFY_CHANNEL)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// How many refusals are recorded (the periodic check's cheap probe).
    pub async fn rejection_count(&self) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM rejected_resources")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(count).unwrap_or_default())
    }

    /// Every recorded refusal, oldest first.
    pub async fn rejections(&self) -> Result<Vec<RejectedResource>, StoreError> {
        let rows = sqlx::query(
            "SELECT type, name, content_version, version, node, error_detail, at_ms \
             FROM rejected_resources ORDER BY at_ms",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(RejectedResource {
                    r#type: row.try_get(0)?,
                    name: row.try_get(1)?,
                    content_version: row.try_get(2)?,
                    version: row.try_get(3)?,
                    node: row.try_get(4)?,
                    error_detail: row.try_get(5)?,
                    at_ms: row.try_get(6)?,
                })
            })
            .collect()
    }
}
