//! Credentials of the department API's principals (migration 0013): API keys, kept only as
//! the SHA-256 of their secret, and registered client certificates, kept as the SHA-256 of
//! their DER. The node decides what a credential may do; the store only keeps them.

use sqlx::{QueryBuilder, Row};

use super::{Backend, Store, StoreError};

/// One credential and the principal it stands for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Credential {
    pub credential_id: String,
    /// `api_key` or `certificate`.
    pub kind: String,
    /// The name audit entries carry (a department, an officer, an operator, a system).
    pub principal: String,
    pub role: String,
    /// The principal's unit: 统一社会信用代码.
    pub unit_uscc: Option<String>,
    /// The unit's department category (e.g. `market_regulation`).
    pub category: Option<String>,
    /// Other units this principal may report for (USCCs).
    pub report_for: Vec<String>,
    /// Extra grants, e.g. `authorized_query`.
    pub grants: Vec<String>,
    /// Never shown: the SHA-256 (hex) of the key's secret or of the certificate.
    #[serde(skip)]
    pub secret_sha256: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub last_used_at: Option<String>,
}

const COLUMNS: &str = "credential_id, kind, principal, role, unit_uscc, category, report_for, grants, \
                       secret_sha256, created_at, expires_at, revoked_at, last_used_at";

fn credential<R: Row>(row: &R) -> Result<Credential, StoreError>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database>,
{
    let list = |s: String| serde_json::from_str::<Vec<String>>(&s).map_err(|e| StoreError::Corrupt(e.to_string()));
    Ok(Credential {
        credential_id: row.try_get(0)?,
        kind: row.try_get(1)?,
        principal: row.try_get(2)?,
        role: row.try_get(3)?,
        unit_uscc: row.try_get(4)?,
        category: row.try_get(5)?,
        report_for: list(row.try_get(6)?)?,
        grants: list(row.try_get(7)?)?,
        secret_sha256: row.try_get(8)?,
        created_at: row.try_get(9)?,
        expires_at: row.try_get(10)?,
        revoked_at: row.try_get(11)?,
        last_used_at: row.try_get(12)?,
    })
}

impl Store {
    /// Keeps a new credential. Fails if its secret (or certificate) is registered already.
    pub async fn add_credential(&self, c: &Credential) -> Result<(), StoreError> {
        let list = |v: &[String]| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
        let _serialised = self.write_lock.lock().await;
        dispatch!(self, pool => {
            let mut qb = QueryBuilder::new(format!("INSERT INTO credentials ({COLUMNS}) "));
            qb.push_values([c], |mut b, c| {
                b.push_bind(c.credential_id.as_str())
                    .push_bind(c.kind.as_str())
                    .push_bind(c.principal.as_str())
                    .push_bind(c.role.as_str())
                    .push_bind(c.unit_uscc.as_deref())
                    .push_bind(c.category.as_deref())
                    .push_bind(list(&c.report_for))
                    .push_bind(list(&c.grants))
                    .push_bind(c.secret_sha256.as_str())
                    .push_bind(c.created_at.as_str())
                    .push_bind(c.expires_at.as_deref())
                    .push_bind(c.revoked_at.as_deref())
                    .push_bind(c.last_used_at.as_deref());
            });
            qb.build().execute(pool).await?;
        });
        Ok(())
    }

    /// The credential whose secret (or certificate) hashes to `secret_sha256`, revoked or not.
    pub async fn credential_by_secret(&self, secret_sha256: &str) -> Result<Option<Credential>, StoreError> {
        dispatch!(self, pool => {
            let sql = format!("SELECT {COLUMNS} FROM credentials WHERE secret_sha256 = $1");
            let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(secret_sha256).fetch_optional(pool).await?;
            row.as_ref().map(credential).transpose()
        })
    }

    /// Every credential, oldest first.
    pub async fn credentials(&self) -> Result<Vec<Credential>, StoreError> {
        dispatch!(self, pool => {
            let sql = format!("SELECT {COLUMNS} FROM credentials ORDER BY created_at, credential_id");
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await?;
            rows.iter().map(credential).collect()
        })
    }

    /// Revokes a credential at `at`. Returns whether there was one (already revoked ones keep
    /// their first revocation time).
    pub async fn revoke_credential(&self, credential_id: &str, at: &str) -> Result<bool, StoreError> {
        let _serialised = self.write_lock.lock().await;
        dispatch!(self, pool => {
            let found = sqlx::query("SELECT 1 FROM credentials WHERE credential_id = $1")
                .bind(credential_id)
                .fetch_optional(pool)
                .await?
                .is_some();
            sqlx::query("UPDATE credentials SET revoked_at = $1 WHERE credential_id = $2 AND revoked_at IS NULL")
                .bind(at)
                .bind(credential_id)
                .execute(pool)
                .await?;
            Ok(found)
        })
    }

    /// Notes when credentials were last used.
    pub async fn touch_credentials(&self, used: &[(String, String)]) -> Result<(), StoreError> {
        let _serialised = self.write_lock.lock().await;
        dispatch!(self, pool => {
            for (id, at) in used {
                sqlx::query("UPDATE credentials SET last_used_at = $1 WHERE credential_id = $2")
                    .bind(at.as_str())
                    .bind(id.as_str())
                    .execute(pool)
                    .await?;
            }
        });
        Ok(())
    }
}
