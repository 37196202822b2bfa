//! A schema of its own in the PostgreSQL database `FANIN_TEST_POSTGRES_URL`
//! names, for a whole-daemon test whose store is there; dropped at the end.
//! Without the variable a test skips, saying so.

use tokio_postgres::NoTls;

pub struct TestSchema {
    base: String,
    /// `[store].url` for the daemon and the CLI: the server's URL, with the
    /// schema first on the `search_path` and its connections named after it.
    pub url: String,
    pub name: String,
}

impl TestSchema {
    pub async fn from_env(test: &str) -> Option<TestSchema> {
        let base = match std::env::var("FANIN_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => url,
            _ => {
                eprintln!("{test}: skipped: FANIN_TEST_POSTGRES_URL is not set (.ci/run sets it when 5432 answers)");
                return None;
            }
        };
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}options=-csearch_path%3D{name}&application_name={name}");
        connect(&base).await.batch_execute(&format!("CREATE SCHEMA {name}")).await.expect("create the test schema");
        Some(TestSchema { base, url, name })
    }

    /// A plain connection on the schema.
    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.expect("test database");
    tokio::spawn(connection);
    client
}

impl Drop for TestSchema {
    /// On a thread of its own, with its own runtime: this may run while a
    /// test unwinds inside one.
    fn drop(&mut self) {
        let (base, name) = (self.base.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async {
                let admin = connect(&base).await;
                // The daemon is gone; what a test left open goes too.
                let ended = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                             WHERE application_name = $1 AND pid <> pg_backend_pid()";
                admin.execute(ended, &[&name]).await?;
                admin.batch_execute(&format!("DROP SCHEMA {name} CASCADE")).await
            })
        })
        .join();
    }
}
