//! Several `fanin daemon` replicas on one PostgreSQL schema: each its own
//! process, config directory (the same SOPs, `[cluster]` with its own
//! `node_id`) and port, as an operator runs them. Without
//! `FANIN_TEST_POSTGRES_URL` a test skips, saying so.

use super::postgres::TestSchema;
use super::{Daemon, Setup};

/// Short enough that a takeover after a SIGKILL shows within a test.
pub const LEASE_SECS: u64 = 3;

/// One set of replicas at a time in a test binary: in a burst a replica
/// holds up to 15 PostgreSQL connections (reads, admission holds, writer,
/// listener, lock), so several sets at once could pass a server's default
/// `max_connections` (100) and see their store refuse.
static ONE_SET_AT_A_TIME: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

pub struct Replicas {
    /// Declared first: the daemons stop before their schema is dropped.
    pub daemons: Vec<Daemon>,
    pub setups: Vec<Setup>,
    pub schema: TestSchema,
    _turn: tokio::sync::SemaphorePermit<'static>,
}

impl Replicas {
    /// `count` replicas `r1`, `r2`, … with `gateway_extra` in `[gateway]`,
    /// `rest` after it and `sops` (name, SOP.toml) in each.
    pub async fn start(
        test: &str,
        count: usize,
        gateway_extra: &str,
        rest: &str,
        sops: &[(&str, &str)],
    ) -> Option<Replicas> {
        let schema = TestSchema::from_env(test).await?;
        let turn = ONE_SET_AT_A_TIME.acquire().await.expect("never closed");
        let setups: Vec<Setup> = (1..=count)
            .map(|i| {
                let cluster = format!("{rest}\n[cluster]\nnode_id = \"r{i}\"\nlease_secs = {LEASE_SECS}\n");
                let setup = Setup::new(gateway_extra, &cluster).store_url(&schema.url);
                sops.iter().fold(setup, |setup, (name, toml)| setup.sop(name, toml))
            })
            .collect();
        // The first start writes the pairing key; every replica reads the same one.
        let mut daemons = vec![setups[0].start()];
        let key = std::fs::read(setups[0].dir.path().join("pairing.key")).expect("the first replica's pairing key");
        for setup in &setups[1..] {
            write_private(&setup.dir.path().join("pairing.key"), &key);
            daemons.push(setup.start());
        }
        Some(Replicas { daemons, setups, schema, _turn: turn })
    }

    /// A token every replica takes: paired on the first replica with the
    /// code it printed at start.
    pub async fn pair(&self) -> String {
        self.daemons[0].pair().await
    }

    /// Waits until exactly one replica holds the singleton duty `duty` (its
    /// `/ready` source is not `standby`) and the others show it `standby`;
    /// returns that replica's index. Every replica must be running.
    pub async fn holder(&self, duty: &str) -> usize {
        super::eventually(&format!("one replica to hold {duty}"), async || {
            let mut states = Vec::new();
            for d in &self.daemons {
                let (_, ready) = d.get("/ready").await;
                states.push(ready["sources"][duty]["status"].as_str().unwrap_or("absent").to_string());
            }
            let holders: Vec<usize> = (0..states.len()).filter(|&i| states[i] != "standby").collect();
            match (holders.as_slice(), states.iter().filter(|s| *s == "standby").count()) {
                ([one], standby) if standby == states.len() - 1 && states[*one] != "absent" => Ok(*one),
                _ => Err(format!("{duty}: {states:?}")),
            }
        })
        .await
    }

    /// Restarts replica `index` (after a kill), on its port.
    pub fn restart(&mut self, index: usize) {
        self.daemons[index] = self.setups[index].start();
    }
}

fn write_private(path: &std::path::Path, bytes: &[u8]) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).expect("pairing key");
    file.write_all(bytes).expect("write the pairing key");
}
