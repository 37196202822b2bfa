//! SIGHUP reloads the SOP directory: new SOPs (webhook and cron) take effect
//! without a restart, and a set with an error is refused whole.

mod common;

use common::*;
use serde_json::json;

fn hangup(d: &Daemon) {
    let status = std::process::Command::new("kill").arg("-HUP").arg(d.child.id().to_string()).status().unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn sighup_loads_new_sops_and_refuses_a_broken_set_whole() {
    let setup = Setup::new("", "").sop("a", &webhook_sop("a", "/sop/a", ""));
    let d = setup.start_logged();
    let token = d.pair().await;
    assert_eq!(d.post("/sop/b", Some(&token), "{}", &[]).await.0, 404);

    let setup = setup
        .sop("b", &webhook_sop("b", "/sop/b", ""))
        .sop("tick", "[sop]\nname = \"tick\"\ndescription = \"x\"\nexecution_mode = \"auto\"\nmax_concurrent = 1000\n[[triggers]]\ntype = \"cron\"\nexpression = \"* * * * * *\"\n");
    hangup(&d);
    eventually("the reloaded SOP b to answer", || async { d.post("/sop/b", Some(&token), "{}", &[]).await.0 == 200 })
        .await;
    eventually("a run of the cron trigger added by the reload", || async {
        let (_, runs) = d.get("/admin/runs?sop=tick").await;
        !runs["runs"].as_array().unwrap().is_empty()
    })
    .await;

    // A broken SOP refuses the whole new set: `c` does not appear, `b` stays.
    let setup = setup.sop("c", &webhook_sop("c", "/sop/c", "")).sop(
        "broken",
        "[sop]\nname = \"broken\"\ndescription = \"x\"\n[[triggers]]\ntype = \"mqtt\"\ntopic = \"a/#/b\"\n",
    );
    hangup(&d);
    // The refusal is only logged: once it is, the daemon is done with this
    // reload, and what it left in place can be checked.
    eventually("the daemon to log the refused reload", || async { setup.log().contains("SOP reload refused") }).await;
    assert_eq!(
        d.post("/sop/c", Some(&token), "{}", &[]).await.1,
        json!({"error": "no_matching_sop", "path": "/sop/c"})
    );
    assert_eq!(d.post("/sop/b", Some(&token), "{}", &[]).await.0, 200);
    assert_eq!(d.get("/health").await.0, 200);
    drop(setup);
}
