//! Admin tokens: only a hash and a prefix are kept; listing never shows
//! either the token or its hash.

use serde::Serialize;
use sqlx::Row;

use super::{Store, StoreError, rows::now_ms};

/// An admin token as listed (never the secret or its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct AdminTokenRecord {
    pub name: String,
    pub role: String,
    /// The first characters of the token, to recognise it.
    pub prefix: String,
    pub created_at_ms: i64,
    pub last_used_at_ms: Option<i64>,
}

impl Store {
    /// Whether any admin token exists (authentication is then enforced).
    pub async fn has_admin_tokens(&self) -> Result<bool, StoreError> {
        let found: Option<String> = sqlx::query_scalar("SELECT name FROM admin_tokens LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    /// The name and role of the token with this hash, recording its use.
    pub async fn find_admin_token(
        &self,
        token_hash: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        let row = sqlx::query("SELECT name, role FROM admin_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let name: String = row.try_get(0)?;
        sqlx::query("UPDATE admin_tokens SET last_used_at_ms = $1 WHERE name = $2")
            .bind(now_ms())
            .bind(&name)
            .execute(&self.pool)
            .await?;
        Ok(Some((name, row.try_get(1)?)))
    }

    pub async fn create_admin_token(
        &self,
        name: &str,
        role: &str,
        token_hash: &str,
        prefix: &str,
    ) -> Result<AdminTokenRecord, StoreError> {
        let created_at_ms = now_ms();
        let inserted = sqlx::query(
            "INSERT INTO admin_tokens (name, role, token_hash, prefix, created_at_ms) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT DO NOTHING",
        )
        .bind(name)
        .bind(role)
        .bind(token_hash)
        .bind(prefix)
        .bind(created_at_ms)
        .execute(&self.pool)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::TokenExists(name.to_owned()));
        }
        Ok(AdminTokenRecord {
            name: name.to_owned(),
            role: role.to_owned(),
            prefix: prefix.to_owned(),
            created_at_ms,
            last_used_at_ms: None,
        })
    }

    pub async fn list_admin_tokens(&self) -> Result<Vec<AdminTokenRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, role, prefix, created_at_ms, last_used_at_ms FROM admin_tokens ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(AdminTokenRecord {
                    name: row.try_get(0)?,
                    role: row.try_get(1)?,
                    prefix: row.try_get(2)?,
                    created_at_ms: row.try_get(3)?,
                    last_used_at_ms: row.try_get(4)?,
                })
            })
            .collect()
    }

    /// Revokes a token at once; returns whether it existed.
    pub async fn delete_admin_token(&self, name: &str) -> Result<bool, StoreError> {
        let deleted = sqlx::query("DELETE FROM admin_tokens WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(deleted.rows_affected() > 0)
    }
}
