//! Duties handed between replicas over a real PostgreSQL store: one runs
//! a duty at a time, a stopping owner hands it on at once, a dead one when
//! its lease lapses. Skipped, saying so, without `FANIN_TEST_POSTGRES_URL`.

use std::path::Path;
use std::sync::Mutex;

use super::*;
use crate::store::postgres::PostgresStore;
use crate::store::suite::Backend;
use crate::test_support::eventually;

/// Who is running the duty now, as the bodies say.
#[derive(Default)]
struct Running {
    now: Mutex<Vec<String>>,
    /// The most that ever ran at once.
    most: Mutex<usize>,
}

impl Running {
    fn enter(&self, node: &str) {
        let mut now = self.now.lock().unwrap();
        now.push(node.to_string());
        let mut most = self.most.lock().unwrap();
        *most = (*most).max(now.len());
    }

    fn leave(&self, node: &str) {
        self.now.lock().unwrap().retain(|n| n != node);
    }

    fn who(&self) -> Vec<String> {
        self.now.lock().unwrap().clone()
    }
}

fn replica(node: &str, lease_secs: u64, store: Arc<dyn Store>) -> Arc<Cluster> {
    Arc::new(Cluster::new(node, lease_secs, store))
}

/// Runs `cluster`'s side of the duty `filesystem` until `shutdown`;
/// `states` gets every report.
fn spawn(
    cluster: Arc<Cluster>,
    running: Arc<Running>,
    states: Arc<Mutex<Vec<DutyState>>>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let node = cluster.node_id().to_string();
        let report = move |state: &DutyState| states.lock().unwrap().push(state.clone());
        cluster
            .run_duty("filesystem", &shutdown, report, |token: CancellationToken| {
                let (running, node) = (running.clone(), node.clone());
                async move {
                    running.enter(&node);
                    token.cancelled().await;
                    running.leave(&node);
                }
            })
            .await
    })
}

#[tokio::test]
async fn one_replica_runs_a_duty_and_another_takes_over_when_it_stops_or_dies() {
    let Some(Backend::Postgres(schema)) = Backend::postgres("one_replica_runs_a_duty").await else { return };
    let store: Arc<dyn Store> = Arc::new(PostgresStore::open(&schema.url, Path::new("/")).await.unwrap());
    let running = Arc::new(Running::default());
    let states: Vec<_> = (0..3).map(|_| Arc::new(Mutex::new(Vec::new()))).collect();
    let stops: Vec<_> = (0..3).map(|_| CancellationToken::new()).collect();
    let a = spawn(replica("a", 3, store.clone()), running.clone(), states[0].clone(), stops[0].clone());
    eventually("a holds the duty", || async { running.who() == ["a"] }).await;
    let b = spawn(replica("b", 3, store.clone()), running.clone(), states[1].clone(), stops[1].clone());
    eventually("b stands by", || async { states[1].lock().unwrap().last().is_some() }).await;
    assert_eq!(states[1].lock().unwrap()[..], [DutyState::Standby { owner: "a".into() }]);

    // A stop hands the duty on at once: a's lease is released.
    stops[0].cancel();
    a.await.unwrap();
    eventually("b holds the duty", || async { running.who() == ["b"] }).await;
    assert!(store.leases().await.unwrap().iter().all(|l| l.owner != "a"));

    // A death does not: c waits for b's lease to lapse, then takes over.
    let c = spawn(replica("c", 3, store.clone()), running.clone(), states[2].clone(), stops[2].clone());
    eventually("c stands by", || async { states[2].lock().unwrap().last().is_some() }).await;
    b.abort();
    let _ = b.await;
    running.leave("b");
    let died = Instant::now();
    eventually("c holds the duty", || async { running.who() == ["c"] }).await;
    let took = died.elapsed();
    assert!(took < Duration::from_secs(3), "taken over within lease_secs of the owner's death, not {took:?}");
    assert_eq!(*running.most.lock().unwrap(), 1, "never two at once");
    assert_eq!(states[2].lock().unwrap().last(), Some(&DutyState::Held));
    stops[2].cancel();
    c.await.unwrap();
    assert!(store.leases().await.unwrap().is_empty(), "every lease released");
}

#[tokio::test]
async fn an_owner_that_loses_its_lease_stops_its_duty() {
    let Some(Backend::Postgres(schema)) = Backend::postgres("an_owner_that_loses_its_lease").await else { return };
    let store: Arc<dyn Store> = Arc::new(PostgresStore::open(&schema.url, Path::new("/")).await.unwrap());
    let running = Arc::new(Running::default());
    let states = Arc::new(Mutex::new(Vec::new()));
    let stop = CancellationToken::new();
    let a = spawn(replica("a", 3, store.clone()), running.clone(), states.clone(), stop.clone());
    eventually("a holds the duty", || async { running.who() == ["a"] }).await;
    // Behind a's back (an operator, or a's lease lapsing while it was
    // paused): another owner is written in.
    let client = schema.client().await;
    client.execute("UPDATE leases SET owner = 'z' WHERE name = 'filesystem'", &[]).await.unwrap();
    eventually("a stopped the duty", || async { running.who().is_empty() }).await;
    assert!(states.lock().unwrap().contains(&DutyState::Standby { owner: "z".into() }), "{:?}", states.lock().unwrap());
    stop.cancel();
    a.await.unwrap();
}

#[test]
fn the_default_node_id_names_the_host_and_the_process() {
    let id = node_id_of(&ClusterConfig::default());
    assert!(id.ends_with(&format!("-{}", std::process::id())), "{id}");
    assert!(crate::config::is_node_id(&id), "{id} is a valid node id");
    assert_eq!(node_id_of(&ClusterConfig { node_id: "eu-1".into(), lease_secs: 15 }), "eu-1");
}
