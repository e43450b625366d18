//! Admin tokens: only a hash and a prefix are kept; listing never shows
//! either the token or its hash. A token may be scoped to one owner.

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
    /// Writes only this owner's resources (`None`: any).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Reads only its owner's resources (and shared ones).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub read_own_only: bool,
}

/// Who a token is: what the admin API's authentication needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenIdentity {
    pub name: String,
    pub role: String,
    pub owner: Option<String>,
    pub read_own_only: bool,
}

/// A token to create (the hash of its secret, never the secret).
#[derive(Debug, Clone)]
pub struct NewAdminToken<'a> {
    pub name: &'a str,
    pub role: &'a str,
    pub token_hash: &'a str,
    pub prefix: &'a str,
    pub owner: Option<&'a str>,
    pub read_own_only: bool,
}

impl Store {
    /// Whether any admin token exists (authentication is then enforced).
    pub async fn has_admin_tokens(&self) -> Result<bool, StoreError> {
        let found: Option<String> = sqlx::query_scalar("SELECT name FROM admin_tokens LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    /// Who the token with this hash is, recording its use.
    pub async fn find_admin_token(
        &self,
        token_hash: &str,
    ) -> Result<Option<TokenIdentity>, StoreError> {
        let row = sqlx::query(
            "SELECT name, role, owner, read_own_only FROM admin_tokens WHERE token_hash = $1",
        )
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
        let read_own_only: i64 = row.try_get(3)?;
        Ok(Some(TokenIdentity {
            name,
            role: row.try_get(1)?,
            owner: row.try_get(2)?,
            read_own_only: read_own_only != 0,
        }))
    }

    /// Stores a token; one scoped to an owner needs the owner to exist.
    pub async fn create_admin_token(
        &self,
        token: NewAdminToken<'_>,
    ) -> Result<AdminTokenRecord, StoreError> {
        let created_at_ms = now_ms();
        let mut tx = self.pool.begin().await?;
        if let Some(owner) = token.owner {
            super::ownership::ensure_owner(&mut tx, owner).await?;
        }
        let inserted = sqlx::query(
            "INSERT INTO admin_tokens (name, role, token_hash, prefix, created_at_ms, owner, read_own_only) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(token.name)
        .bind(token.role)
        .bind(token.token_hash)
        .bind(token.prefix)
        .bind(created_at_ms)
        .bind(token.owner)
        .bind(i64::from(token.read_own_only))
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::TokenExists(token.name.to_owned()));
        }
        tx.commit().await?;
        Ok(AdminTokenRecord {
            name: token.name.to_owned(),
            role: token.role.to_owned(),
            prefix: token.prefix.to_owned(),
            created_at_ms,
            last_used_at_ms: None,
            owner: token.owner.map(str::to_owned),
            read_own_only: token.read_own_only,
        })
    }

    pub async fn list_admin_tokens(&self) -> Result<Vec<AdminTokenRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, role, prefix, created_at_ms, last_used_at_ms, owner, read_own_only \
             FROM admin_tokens ORDER BY name",
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
                    owner: row.try_get(5)?,
                    read_own_only: row.try_get::<i64, _>(6)? != 0,
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
