//! Joint reward-and-punishment cases (migration 0014; ADR 0007): one per subject × measure ×
//! implementing department. Opening is idempotent: a list entry that comes again opens no
//! second case. The node decides which cases a list entry opens; the store keeps them.
//!
//! Every write here holds the store's write lock, as every writer of this process does.

use sqlx::{QueryBuilder, Row};

use super::{Backend, Store, StoreError};

/// A case to open.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NewCase {
    pub case_id: String,
    /// USCC, or SHA-256 (hex) of a natural person's normalised identity number.
    pub subject_key: String,
    pub subject_name: String,
    pub measure_id: String,
    pub catalogue: String,
    /// The implementing department (统一社会信用代码).
    pub department_uscc: String,
    pub entry_origin: String,
    pub entry_record_id: String,
    pub list_type: String,
    pub opened_at: String,
    pub response_due: Option<String>,
    pub feedback_due: Option<String>,
}

/// A stored case and its state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Case {
    #[serde(flatten)]
    pub case: NewCase,
    pub state: String,
}

const COLUMNS: &str = "case_id, subject_key, subject_name, measure_id, catalogue, department_uscc, entry_origin, \
                       entry_record_id, list_type, opened_at, response_due, feedback_due, state";
/// 13 columns: 2,000 rows stay under SQLite's bound-parameter limit.
const CHUNK: usize = 2_000;

fn case<R: Row>(row: &R) -> Result<Case, StoreError>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database>,
{
    Ok(Case {
        case: NewCase {
            case_id: row.try_get(0)?,
            subject_key: row.try_get(1)?,
            subject_name: row.try_get(2)?,
            measure_id: row.try_get(3)?,
            catalogue: row.try_get(4)?,
            department_uscc: row.try_get(5)?,
            entry_origin: row.try_get(6)?,
            entry_record_id: row.try_get(7)?,
            list_type: row.try_get(8)?,
            opened_at: row.try_get(9)?,
            response_due: row.try_get(10)?,
            feedback_due: row.try_get(11)?,
        },
        state: row.try_get(12)?,
    })
}

impl Store {
    /// Opens the cases not held yet (by subject × measure × department), in one transaction;
    /// returns how many were opened. With `read_up_to`, the opener's cursor moves there in the
    /// same transaction.
    pub async fn open_cases(&self, cases: &[NewCase], read_up_to: Option<i64>) -> Result<u64, StoreError> {
        let _serialised = self.write_lock.lock().await;
        let (verb, tail) = self.skip_held();
        let mut opened = 0;
        dispatch!(self, pool => {
            let mut tx = pool.begin().await?;
            for chunk in cases.chunks(CHUNK) {
                let mut qb = QueryBuilder::new(format!("{verb} joint_cases ({COLUMNS}) "));
                qb.push_values(chunk, |mut b, c| {
                    b.push_bind(c.case_id.as_str())
                        .push_bind(c.subject_key.as_str())
                        .push_bind(c.subject_name.as_str())
                        .push_bind(c.measure_id.as_str())
                        .push_bind(c.catalogue.as_str())
                        .push_bind(c.department_uscc.as_str())
                        .push_bind(c.entry_origin.as_str())
                        .push_bind(c.entry_record_id.as_str())
                        .push_bind(c.list_type.as_str())
                        .push_bind(c.opened_at.as_str())
                        .push_bind(c.response_due.as_deref())
                        .push_bind(c.feedback_due.as_deref())
                        .push_bind("opened");
                });
                qb.push(tail);
                opened += qb.build().execute(&mut *tx).await?.rows_affected();
            }
            if let Some(seq) = read_up_to {
                sqlx::query(
                    "INSERT INTO joint_cursor (id, after_seq) VALUES (1, $1) \
                     ON CONFLICT (id) DO UPDATE SET after_seq = excluded.after_seq",
                )
                .bind(seq)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(opened)
    }

    /// How far the case opener has read `records` (0 before its first pass).
    pub async fn joint_cursor(&self) -> Result<i64, StoreError> {
        dispatch!(self, pool => {
            let row = sqlx::query("SELECT after_seq FROM joint_cursor WHERE id = 1").fetch_optional(pool).await?;
            Ok(row.map(|r| r.try_get::<i64, _>(0)).transpose()?.unwrap_or(0))
        })
    }

    /// Cases of one implementing department (or of all, with `None`), optionally in one state,
    /// oldest first, after `after` (a case id, for paging), at most `limit`.
    pub async fn cases(
        &self,
        department: Option<&str>,
        state: Option<&str>,
        after: &str,
        limit: i64,
    ) -> Result<Vec<Case>, StoreError> {
        dispatch!(self, pool => {
            let mut qb = QueryBuilder::new(format!("SELECT {COLUMNS} FROM joint_cases WHERE case_id > "));
            qb.push_bind(after);
            if let Some(d) = department {
                qb.push(" AND department_uscc = ").push_bind(d);
            }
            if let Some(s) = state {
                qb.push(" AND state = ").push_bind(s);
            }
            qb.push(" ORDER BY case_id LIMIT ").push_bind(limit);
            let rows = qb.build().fetch_all(pool).await?;
            rows.iter().map(case).collect()
        })
    }
}
