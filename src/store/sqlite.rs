//! The embedded SQLite store (WAL) with a group-committing writer.
//! (Skeleton: being written.)

use std::path::Path;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::*;

pub struct SqliteStore {}

impl SqliteStore {
    pub fn open(_path: &Path) -> Result<SqliteStore, StoreError> {
        todo!()
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn commit(&self, _batch: Batch) -> Result<Committed, StoreError> {
        todo!()
    }
    async fn idempotency_response(
        &self,
        _scope: &str,
        _key: &str,
        _now: DateTime<Utc>,
    ) -> Result<Option<Value>, StoreError> {
        todo!()
    }
    async fn purge_idempotency(&self, _now: DateTime<Utc>) -> Result<usize, StoreError> {
        todo!()
    }
    async fn get_run(&self, _run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        todo!()
    }
    async fn list_runs(&self, _query: &RunQuery) -> Result<Vec<RunRecord>, StoreError> {
        todo!()
    }
    async fn audit(&self, _query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        todo!()
    }
    async fn sop_loads(&self) -> Result<Vec<SopLoad>, StoreError> {
        todo!()
    }
    async fn add_pairing_code(
        &self,
        _code_hash: &str,
        _created_at: DateTime<Utc>,
        _expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        todo!()
    }
    async fn redeem_pairing_code(
        &self,
        _code_hash: &str,
        _now: DateTime<Utc>,
        _token: &TokenRecord,
    ) -> Result<bool, StoreError> {
        todo!()
    }
    async fn find_token(&self, _prefix: &str) -> Result<Option<TokenRecord>, StoreError> {
        todo!()
    }
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        todo!()
    }
    async fn revoke_tokens(&self, _prefix: &str, _at: DateTime<Utc>) -> Result<usize, StoreError> {
        todo!()
    }
    async fn cron_last_check(&self, _key: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        todo!()
    }
    async fn ping(&self) -> Result<(), StoreError> {
        todo!()
    }
}
