//! Per-node and per-fleet xDS tokens: create, list, revoke. Each change is
//! a config version, so the token set reaches every replica's xDS port with
//! the configuration (and a revocation cuts the streams using the token).

use sqlx::Row;

use super::{Store, StoreError, bump_version};
use crate::model::node_token::StoredNodeToken;

impl Store {
    /// Stores a new token; returns the version that carries it.
    pub async fn create_node_token(&self, token: &StoredNodeToken) -> Result<u64, StoreError> {
        let _turn = self.write_turn().await?;
        let mut tx = self.pool.begin().await?;
        let version = bump_version(&mut tx).await?;
        let exists: Option<String> =
            sqlx::query_scalar("SELECT name FROM xds_tokens WHERE name = $1")
                .bind(&token.name)
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_some() {
            return Err(StoreError::TokenExists(token.name.clone()));
        }
        sqlx::query("INSERT INTO xds_tokens (name, spec) VALUES ($1, $2)")
            .bind(&token.name)
            .bind(super::encode(token))
            .execute(&mut *tx)
            .await?;
        self.commit(tx, version).await?;
        Ok(version)
    }

    /// Every token, without hashes, by name.
    pub async fn list_node_tokens(&self) -> Result<Vec<StoredNodeToken>, StoreError> {
        let rows = sqlx::query("SELECT name, spec FROM xds_tokens ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let name: String = row.try_get(0)?;
                let spec: String = row.try_get(1)?;
                let mut token: StoredNodeToken =
                    serde_json::from_str(&spec).map_err(|source| StoreError::Corrupt {
                        kind: crate::model::Kind::ApiKey,
                        name,
                        source,
                    })?;
                token.sha256.clear();
                Ok(token)
            })
            .collect()
    }

    /// Revokes (deletes) a token; `None` when there is none of that name.
    pub async fn revoke_node_token(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let _turn = self.write_turn().await?;
        let mut tx = self.pool.begin().await?;
        let version = bump_version(&mut tx).await?;
        let deleted = sqlx::query("DELETE FROM xds_tokens WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        self.commit(tx, version).await?;
        Ok(Some(version))
    }
}
