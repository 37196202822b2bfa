//! Reading runs in bulk: the filters of a run query with their bounds on
//! `started_at`, paging by offset, and the counts per query, per status
//! and per minute. Each test runs on both back ends (see `store::suite`).

use super::*;

/// `secs` (with `micros` more) into minute `minute` of a fixed hour, in UTC.
fn in_minute(minute: i64, secs: i64, micros: i64) -> DateTime<Utc> {
    let hour = DateTime::from_timestamp(1_700_000_040, 0).expect("valid time");
    hour + chrono::Duration::minutes(minute) + chrono::Duration::seconds(secs) + chrono::Duration::microseconds(micros)
}

/// Six runs over three minutes, two SOPs, two sources, mixed statuses;
/// `b` starts one microsecond before minute 1, `e` and `f` at the same
/// instant (`f` written later).
async fn three_minutes(store: &Opened) {
    let rows = [
        ("a", "deploy", RunStatus::Completed, Source::Mqtt, in_minute(0, 0, 0)),
        ("b", "deploy", RunStatus::Running, Source::Webhook, in_minute(0, 59, 999_999)),
        ("c", "backup", RunStatus::Running, Source::Mqtt, in_minute(1, 0, 0)),
        ("d", "deploy", RunStatus::Failed, Source::Webhook, in_minute(1, 30, 0)),
        ("e", "deploy", RunStatus::Running, Source::Mqtt, in_minute(2, 10, 0)),
        ("f", "backup", RunStatus::WaitingAgent, Source::Webhook, in_minute(2, 10, 0)),
    ];
    for (id, sop, status, source, started_at) in rows {
        let mut r = run(id, sop, status, started_at);
        r.source = source;
        store.commit(start(r)).await.unwrap();
    }
}

async fn run_filters_combine_and_bound_the_start_time(b: Backend) {
    let store = b.open().await;
    three_minutes(&store).await;

    let cases: Vec<(RunQuery, Vec<&str>)> = vec![
        (all_runs(), vec!["f", "e", "d", "c", "b", "a"]),
        (RunQuery { source: Some(Source::Mqtt), ..all_runs() }, vec!["e", "c", "a"]),
        (RunQuery { source: Some(Source::Webhook), ..all_runs() }, vec!["f", "d", "b"]),
        (RunQuery { source: Some(Source::Cron), ..all_runs() }, vec![]),
        // `since` is inclusive: c starts exactly at it, b a microsecond before.
        (RunQuery { since: Some(in_minute(1, 0, 0)), ..all_runs() }, vec!["f", "e", "d", "c"]),
        (RunQuery { since: Some(in_minute(0, 59, 999_999)), ..all_runs() }, vec!["f", "e", "d", "c", "b"]),
        // `until` is exclusive: c starts exactly at it.
        (RunQuery { until: Some(in_minute(1, 0, 0)), ..all_runs() }, vec!["b", "a"]),
        (RunQuery { until: Some(in_minute(1, 0, 1)), ..all_runs() }, vec!["c", "b", "a"]),
        (RunQuery { since: Some(in_minute(1, 0, 0)), until: Some(in_minute(2, 10, 0)), ..all_runs() }, vec!["d", "c"]),
        (RunQuery { since: Some(in_minute(1, 0, 0)), until: Some(in_minute(1, 0, 0)), ..all_runs() }, vec![]),
        (RunQuery { sop: Some("deploy".into()), source: Some(Source::Webhook), ..all_runs() }, vec!["d", "b"]),
        (
            RunQuery {
                status: Some(RunStatus::Running),
                source: Some(Source::Mqtt),
                since: Some(in_minute(0, 30, 0)),
                ..all_runs()
            },
            vec!["e", "c"],
        ),
    ];
    for (query, expected) in cases {
        let listed = store.list_runs(&query).await.unwrap();
        assert_eq!(ids(&listed), expected, "{query:?}");
        assert_eq!(store.count_runs(&query).await.unwrap(), expected.len() as u64, "{query:?}");
        // A page of the query counts as the whole query.
        let page = RunQuery { limit: 1, offset: 1, ..query.clone() };
        assert_eq!(store.count_runs(&page).await.unwrap(), expected.len() as u64, "{page:?}");
    }
}

async fn offset_pages_are_disjoint_and_in_order(b: Backend) {
    let store = b.open().await;
    three_minutes(&store).await;

    let mut pages = Vec::new();
    for offset in [0, 2, 4, 6] {
        let page = store.list_runs(&RunQuery { limit: 2, offset, ..all_runs() }).await.unwrap();
        pages.push(ids(&page).into_iter().map(str::to_owned).collect::<Vec<_>>());
    }
    assert_eq!(pages, [vec!["f", "e"], vec!["d", "c"], vec!["b", "a"], vec![]]);

    let cases: Vec<(RunQuery, Vec<&str>)> = vec![
        // An offset without a limit: the rest.
        (RunQuery { offset: 4, ..all_runs() }, vec!["b", "a"]),
        (RunQuery { offset: 7, ..all_runs() }, vec![]),
        // The offset counts matching runs only.
        (RunQuery { source: Some(Source::Mqtt), limit: 2, offset: 1, ..all_runs() }, vec!["c", "a"]),
        (RunQuery { sop: Some("backup".into()), limit: 1, offset: 1, ..all_runs() }, vec!["c"]),
    ];
    for (query, expected) in cases {
        let listed = store.list_runs(&query).await.unwrap();
        assert_eq!(ids(&listed), expected, "{query:?}");
    }
}

async fn run_counts_cover_every_status_in_order(b: Backend) {
    let store = b.open().await;
    let zeros: Vec<(RunStatus, u64)> = RunStatus::ALL.iter().map(|&status| (status, 0)).collect();
    assert_eq!(store.run_counts().await.unwrap(), zeros);

    three_minutes(&store).await;
    store.commit(set_status("e", RunStatus::Running, RunStatus::Cancelled, in_minute(3, 0, 0))).await.unwrap();
    assert_eq!(
        store.run_counts().await.unwrap(),
        vec![
            (RunStatus::Deferred, 0),
            (RunStatus::PendingApproval, 0),
            (RunStatus::Running, 2),
            (RunStatus::WaitingAgent, 1),
            (RunStatus::Completed, 1),
            (RunStatus::Failed, 1),
            (RunStatus::Cancelled, 1),
        ]
    );
}

async fn runs_per_minute_counts_from_since_by_utc_minute(b: Backend) {
    let store = b.open().await;
    assert_eq!(store.runs_per_minute(in_minute(0, 0, 0)).await.unwrap(), vec![]);
    three_minutes(&store).await;
    // Minute 3 has no runs; minute 4 has one.
    store.commit(start(run("g", "deploy", RunStatus::Running, in_minute(4, 59, 0)))).await.unwrap();
    // Before 1970, whose minutes start below it too.
    let before_1970 = DateTime::from_timestamp(-30, 0).expect("valid time");
    store.commit(start(run("old", "deploy", RunStatus::Completed, before_1970))).await.unwrap();

    let minutes = |counts: &[(i64, u64)]| -> Vec<(DateTime<Utc>, u64)> {
        counts.iter().map(|&(minute, n)| (in_minute(minute, 0, 0), n)).collect()
    };
    let cases = [
        (in_minute(-5, 0, 0), minutes(&[(0, 2), (1, 2), (2, 2), (4, 1)])),
        (DateTime::from_timestamp(-31, 0).expect("valid time"), {
            let mut all = vec![(DateTime::from_timestamp(-60, 0).expect("valid time"), 1)];
            all.extend(minutes(&[(0, 2), (1, 2), (2, 2), (4, 1)]));
            all
        }),
        (in_minute(0, 0, 0), minutes(&[(0, 2), (1, 2), (2, 2), (4, 1)])),
        // `since` is inclusive; of the minute it falls in, only the runs
        // from `since` on count.
        (in_minute(0, 0, 1), minutes(&[(0, 1), (1, 2), (2, 2), (4, 1)])),
        (in_minute(0, 59, 999_999), minutes(&[(0, 1), (1, 2), (2, 2), (4, 1)])),
        (in_minute(1, 0, 0), minutes(&[(1, 2), (2, 2), (4, 1)])),
        (in_minute(2, 10, 1), minutes(&[(4, 1)])),
        (in_minute(5, 0, 0), vec![]),
    ];
    for (since, expected) in cases {
        assert_eq!(store.runs_per_minute(since).await.unwrap(), expected, "since {since}");
    }
}

suite!(
    run_filters_combine_and_bound_the_start_time,
    offset_pages_are_disjoint_and_in_order,
    run_counts_cover_every_status_in_order,
    runs_per_minute_counts_from_since_by_utc_minute,
);
