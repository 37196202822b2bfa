//! A store that fails on demand, wrapped around a real one: how tests (unit
//! and whole-daemon) show that a source loses nothing when the store cannot
//! take a write — the same errors a full disk or a lost database gives.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::*;

pub struct FaultyStore {
    inner: Arc<dyn Store>,
    /// While set, every call fails.
    down: AtomicBool,
    /// This many next commits fail.
    refuse_commits: AtomicUsize,
    /// Calls refused so far.
    refused: AtomicUsize,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn Store>) -> FaultyStore {
        FaultyStore {
            inner,
            down: AtomicBool::new(false),
            refuse_commits: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
        }
    }

    /// Every call fails while `down` is true.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// The next `n` commits fail; later ones go through.
    pub fn refuse_next_commits(&self, n: usize) {
        self.refuse_commits.store(n, Ordering::SeqCst);
    }

    /// How many of the refusals asked for are still to come.
    pub fn refusals_left(&self) -> usize {
        self.refuse_commits.load(Ordering::SeqCst)
    }

    /// How many calls (reads and writes) were refused so far.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }

    pub fn inner(&self) -> &Arc<dyn Store> {
        &self.inner
    }

    fn check(&self) -> Result<(), StoreError> {
        match self.down.load(Ordering::SeqCst) {
            true => {
                self.refused.fetch_add(1, Ordering::SeqCst);
                Err(StoreError::Unavailable(INJECTED.into()))
            }
            false => Ok(()),
        }
    }

    /// `check` for a write: a refusal is recorded as `refuse` does.
    fn check_write(&self) -> Result<(), StoreError> {
        match self.down.load(Ordering::SeqCst) {
            true => self.refuse(),
            false => Ok(()),
        }
    }

    /// A write refused here is seen by the inner store's watch, as a
    /// refusal of the inner store itself would be.
    fn refuse<T>(&self) -> Result<T, StoreError> {
        self.refused.fetch_add(1, Ordering::SeqCst);
        let _ = self.inner.watch().refused(INJECTED, Utc::now());
        Err(StoreError::Unavailable(INJECTED.into()))
    }
}

const INJECTED: &str = "disk full (injected fault)";

#[async_trait]
impl Store for FaultyStore {
    async fn commit(&self, batch: Batch) -> Result<Committed, StoreError> {
        self.check_write()?;
        if self.refuse_commits.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            return self.refuse();
        }
        self.inner.commit(batch).await
    }
    async fn idempotency_response(
        &self,
        scope: &str,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Value>, StoreError> {
        self.check()?;
        self.inner.idempotency_response(scope, key, now).await
    }
    async fn purge_idempotency(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        self.check_write()?;
        self.inner.purge_idempotency(now).await
    }
    async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        self.check()?;
        self.inner.get_run(run_id).await
    }
    async fn list_runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>, StoreError> {
        self.check()?;
        self.inner.list_runs(query).await
    }
    async fn count_runs(&self, query: &RunQuery) -> Result<u64, StoreError> {
        self.check()?;
        self.inner.count_runs(query).await
    }
    async fn run_counts(&self) -> Result<Vec<(RunStatus, u64)>, StoreError> {
        self.check()?;
        self.inner.run_counts().await
    }
    async fn runs_per_minute(&self, since: DateTime<Utc>) -> Result<Vec<(DateTime<Utc>, u64)>, StoreError> {
        self.check()?;
        self.inner.runs_per_minute(since).await
    }
    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        self.check()?;
        self.inner.audit(query).await
    }
    async fn sop_loads(&self) -> Result<Vec<SopLoad>, StoreError> {
        self.check()?;
        self.inner.sop_loads().await
    }
    async fn add_pairing_code(
        &self,
        code_hash: &str,
        created_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.check_write()?;
        self.inner.add_pairing_code(code_hash, created_at, expires_at).await
    }
    async fn pairing_lookup(&self, code_mac: &str, now: DateTime<Utc>) -> Result<PairingLookup, StoreError> {
        self.check()?;
        self.inner.pairing_lookup(code_mac, now).await
    }
    async fn charge_pairing_guess(&self, now: DateTime<Utc>, budget: u32) -> Result<usize, StoreError> {
        self.check()?;
        self.inner.charge_pairing_guess(now, budget).await
    }
    async fn redeem_pairing_code(
        &self,
        code_hash: &str,
        now: DateTime<Utc>,
        token: &TokenRecord,
    ) -> Result<bool, StoreError> {
        self.check_write()?;
        self.inner.redeem_pairing_code(code_hash, now, token).await
    }
    async fn find_token(&self, prefix: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.check()?;
        self.inner.find_token(prefix).await
    }
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.check()?;
        self.inner.list_tokens().await
    }
    async fn revoke_tokens(&self, prefix: &str, at: DateTime<Utc>) -> Result<usize, StoreError> {
        self.check_write()?;
        self.inner.revoke_tokens(prefix, at).await
    }
    async fn cron_last_check(&self, key: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.check()?;
        self.inner.cron_last_check(key).await
    }
    async fn cursor(&self, source: &str) -> Result<Option<Cursor>, StoreError> {
        self.check()?;
        self.inner.cursor(source).await
    }
    async fn file_states(&self, source: &str) -> Result<Vec<(String, FileState)>, StoreError> {
        self.check()?;
        self.inner.file_states(source).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.check()?;
        self.inner.ping().await
    }
    async fn hold_lease(&self, duty: &str, owner: &str, term: std::time::Duration) -> Result<DutyLease, StoreError> {
        self.check()?;
        self.inner.hold_lease(duty, owner, term).await
    }
    async fn hold_admission(&self, sops: &[String]) -> Result<AdmissionHold, StoreError> {
        self.check()?;
        self.inner.hold_admission(sops).await
    }
    async fn release_lease(&self, duty: &str, owner: &str) -> Result<(), StoreError> {
        self.check()?;
        self.inner.release_lease(duty, owner).await
    }
    async fn leases(&self) -> Result<Vec<DutyLease>, StoreError> {
        self.check()?;
        self.inner.leases().await
    }
    async fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>, StoreError> {
        self.check()?;
        self.inner.steps(run_id).await
    }
    async fn next_leasable_step(&self, now: DateTime<Utc>) -> Result<Option<StepRecord>, StoreError> {
        self.check()?;
        self.inner.next_leasable_step(now).await
    }
    async fn agent_steps(&self, limit: usize) -> Result<Vec<StepRecord>, StoreError> {
        self.check()?;
        self.inner.agent_steps(limit).await
    }
    async fn outbox_due(
        &self,
        destination: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DueEntry>, StoreError> {
        self.check()?;
        self.inner.outbox_due(destination, now, limit).await
    }
    async fn outbox_next_due(&self, destination: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.check()?;
        self.inner.outbox_next_due(destination).await
    }
    async fn outbox_list(&self, status: Option<OutboxStatus>, limit: usize) -> Result<Vec<OutboxRecord>, StoreError> {
        self.check()?;
        self.inner.outbox_list(status, limit).await
    }
    async fn count_outbox(&self, status: Option<OutboxStatus>) -> Result<u64, StoreError> {
        self.check()?;
        self.inner.count_outbox(status).await
    }
    async fn outbox_get(&self, id: &str) -> Result<Option<OutboxRecord>, StoreError> {
        self.check()?;
        self.inner.outbox_get(id).await
    }
    async fn outbox_pending_of_run(&self, run_id: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.check()?;
        self.inner.outbox_pending_of_run(run_id).await
    }
    async fn tallies(&self) -> Result<Tallies, StoreError> {
        self.check()?;
        self.inner.tallies().await
    }
    fn watch(&self) -> &StoreWatch {
        self.inner.watch()
    }

    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn wakeups(&self) -> Option<tokio::sync::broadcast::Receiver<Wakeup>> {
        self.inner.wakeups()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    fn audit(n: i64) -> Batch {
        let at = DateTime::from_timestamp(1_700_000_000 + n, 0).unwrap();
        let record = NewAudit { at, kind: AuditKind::CronMissed, run_id: None, sop: None, detail: Value::Null };
        Batch { idempotency: None, writes: vec![Write::Audit(record)] }
    }

    #[tokio::test]
    async fn a_refused_write_shows_in_the_watch_until_a_write_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("fanin.db")).unwrap());
        let store = FaultyStore::new(inner);
        store.commit(audit(0)).await.unwrap();
        assert_eq!(store.watch().write_state(), WriteState::Ok);

        store.refuse_next_commits(2);
        assert!(store.commit(audit(1)).await.is_err());
        assert!(store.commit(audit(2)).await.is_err());
        match store.watch().write_state() {
            WriteState::Failing { reason, refused, .. } => assert_eq!((reason.as_str(), refused), (INJECTED, 2)),
            WriteState::Ok => panic!("two refused writes, and the watch says ok"),
        }
        // A read succeeding proves nothing about writes.
        store.ping().await.unwrap();
        assert_ne!(store.watch().write_state(), WriteState::Ok);

        store.commit(audit(3)).await.unwrap();
        assert_eq!(store.watch().write_state(), WriteState::Ok, "a write went through");
        assert_eq!(store.refused(), 2);
    }
}
