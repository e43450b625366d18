//! API keys under their consumer: create, list, revoke, rotate.
//!
//! Every change is a config version (so the new key set reaches ext-authz
//! through the usual snapshot), recorded in history without the hash.
//! Rollbacks skip keys: restoring old configuration never revives a revoked key.

use sqlx::Row;

use super::{ChangeOp, Kind, Store, StoreError, bump_version, now_ms, record_change};
use crate::model::auth::StoredApiKey;

impl Store {
    /// Stores a new key for an existing consumer; returns the new version.
    pub async fn create_api_key(&self, key: &StoredApiKey) -> Result<u64, StoreError> {
        let _turn = self.write_turn().await?;
        let mut tx = self.pool.begin().await?;
        let version = bump_version(&mut tx).await?;
        require_consumer(&mut tx, &key.consumer).await?;
        insert_key(&mut tx, key).await?;
        record_key(&mut tx, version, 0, ChangeOp::Create, None, key).await?;
        self.commit(tx, version).await?;
        Ok(version)
    }

    /// A consumer's keys, newest first, with when each was last used.
    pub async fn list_api_keys(
        &self,
        consumer: &str,
    ) -> Result<Vec<(StoredApiKey, Option<i64>)>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        require_consumer(&mut conn, consumer).await?;
        let rows =
            sqlx::query("SELECT id, spec, last_used_at_ms FROM api_keys WHERE consumer = $1")
                .bind(consumer)
                .fetch_all(&mut *conn)
                .await?;
        let mut keys = rows
            .iter()
            .map(|row| {
                let id: String = row.try_get(0)?;
                let spec: String = row.try_get(1)?;
                Ok((decode_key(&id, &spec)?, row.try_get(2)?))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        keys.sort_by_key(|k| std::cmp::Reverse(k.0.created_at_ms));
        Ok(keys)
    }

    /// Revokes a key at once. Revoking a revoked key changes nothing.
    pub async fn revoke_api_key(&self, consumer: &str, id: &str) -> Result<u64, StoreError> {
        let _turn = self.write_turn().await?;
        let mut tx = self.pool.begin().await?;
        let version = bump_version(&mut tx).await?;
        let before = find_key(&mut tx, consumer, id).await?;
        if before.revoked_at_ms.is_some() {
            tx.rollback().await?;
            return Ok(version - 1);
        }
        let after = StoredApiKey {
            revoked_at_ms: Some(now_ms()),
            ..before.clone()
        };
        update_key(&mut tx, &after).await?;
        record_key(&mut tx, version, 0, ChangeOp::Update, Some(&before), &after).await?;
        self.commit(tx, version).await?;
        Ok(version)
    }

    /// Replaces a key with `new`: the old one keeps working until
    /// `grace_until_ms` (or its own earlier expiry), then only the new one does.
    pub async fn rotate_api_key(
        &self,
        id: &str,
        grace_until_ms: i64,
        new: &StoredApiKey,
    ) -> Result<u64, StoreError> {
        let _turn = self.write_turn().await?;
        let mut tx = self.pool.begin().await?;
        let version = bump_version(&mut tx).await?;
        let before = find_key(&mut tx, &new.consumer, id).await?;
        if before.revoked_at_ms.is_some() || before.expires_at_ms.is_some_and(|at| at <= now_ms()) {
            return Err(StoreError::KeyNotActive(id.to_owned()));
        }
        let after = StoredApiKey {
            expires_at_ms: Some(
                before
                    .expires_at_ms
                    .map_or(grace_until_ms, |at| at.min(grace_until_ms)),
            ),
            ..before.clone()
        };
        update_key(&mut tx, &after).await?;
        insert_key(&mut tx, new).await?;
        record_key(&mut tx, version, 0, ChangeOp::Update, Some(&before), &after).await?;
        record_key(&mut tx, version, 1, ChangeOp::Create, None, new).await?;
        self.commit(tx, version).await?;
        Ok(version)
    }

    /// Records when keys were last used, as reported by ext-authz. Not a
    /// config change: no version, no history.
    pub async fn record_key_usage(&self, used: &[(String, i64)]) -> Result<(), StoreError> {
        for (id, at_ms) in used {
            sqlx::query(
                "UPDATE api_keys SET last_used_at_ms = $1 WHERE id = $2 \
                 AND (last_used_at_ms IS NULL OR last_used_at_ms < $1)",
            )
            .bind(at_ms)
            .bind(id)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }
}

async fn require_consumer(conn: &mut sqlx::AnyConnection, name: &str) -> Result<(), StoreError> {
    let found: Option<String> =
        sqlx::query_scalar("SELECT name FROM resources WHERE kind = $1 AND name = $2")
            .bind(Kind::Consumer.as_str())
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?;
    found.map(|_| ()).ok_or_else(|| StoreError::NotFound {
        kind: Kind::Consumer,
        name: name.to_owned(),
    })
}

async fn find_key(
    conn: &mut sqlx::AnyConnection,
    consumer: &str,
    id: &str,
) -> Result<StoredApiKey, StoreError> {
    require_consumer(conn, consumer).await?;
    let spec: Option<String> =
        sqlx::query_scalar("SELECT spec FROM api_keys WHERE id = $1 AND consumer = $2")
            .bind(id)
            .bind(consumer)
            .fetch_optional(&mut *conn)
            .await?;
    let spec = spec.ok_or_else(|| StoreError::NotFound {
        kind: Kind::ApiKey,
        name: id.to_owned(),
    })?;
    decode_key(id, &spec)
}

async fn insert_key(conn: &mut sqlx::AnyConnection, key: &StoredApiKey) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO api_keys (id, consumer, spec) VALUES ($1, $2, $3)")
        .bind(&key.id)
        .bind(&key.consumer)
        .bind(super::encode(key))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn update_key(conn: &mut sqlx::AnyConnection, key: &StoredApiKey) -> Result<(), StoreError> {
    sqlx::query("UPDATE api_keys SET spec = $1 WHERE id = $2")
        .bind(super::encode(key))
        .bind(&key.id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// History shows what changed about a key, never its hash.
async fn record_key(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    version: u64,
    seq: i64,
    op: ChangeOp,
    before: Option<&StoredApiKey>,
    after: &StoredApiKey,
) -> Result<(), StoreError> {
    let redacted = |key: &StoredApiKey| {
        let mut value = serde_json::to_value(key).unwrap_or_default();
        if let Some(object) = value.as_object_mut() {
            object.remove("sha256");
        }
        value.to_string()
    };
    let name = format!("{}/{}", after.consumer, after.id);
    let before = before.map(redacted);
    let after = redacted(after);
    record_change(
        tx,
        version,
        seq,
        op,
        Kind::ApiKey,
        &name,
        (before.as_deref(), Some(after.as_str())),
    )
    .await
}

fn decode_key(id: &str, spec: &str) -> Result<StoredApiKey, StoreError> {
    serde_json::from_str(spec).map_err(|source| StoreError::Corrupt {
        kind: Kind::ApiKey,
        name: id.to_owned(),
        source,
    })
}
