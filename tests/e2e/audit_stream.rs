//! StreamEvents end to end: a consumer that disconnects and resumes from
//! its last sequence receives every event exactly once while writers keep
//! writing; a consumer that stops reading does not hold up reveals and
//! catches up when it reads again; a replica follows events written
//! through another server (Postgres); a reader confined to environments
//! sees only theirs; streams end with UNAVAILABLE when the server shuts
//! down and with PERMISSION_DENIED once their reader is disabled; the JSON
//! form matches the event.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use strongroom_client::Client;
use strongroom_e2e::{
    Backend, Options, TenantAdmin, TestServer, assert_free_of, audit_events, expect_code, grant,
    path,
};
use strongroom_proto::v1 as pb;
use tokio_stream::StreamExt;
use tonic::Code;

on_both_backends!(
    resumes_exactly_once_while_writers_write,
    a_stalled_consumer_does_not_hold_up_reveals,
    confined_readers_and_permissions,
    shutdown_ends_streams_unavailable,
);

const SECRETS: [&str; 2] = ["sk-stream-alpha-6c1d", "sk-stream-prod-0e7a"];

type Events = tonic::Streaming<pb::StreamEventsResponse>;

async fn reveal(client: &Client, environment: &str, name: &str) {
    client
        .credentials()
        .reveal_credential(pb::RevealCredentialRequest {
            credential: path(environment, name),
            purpose: "stream e2e".into(),
            ..Default::default()
        })
        .await
        .expect("reveal");
}

async fn stream(client: &Client, from: u64, follow: bool, json: bool) -> Events {
    client
        .audit()
        .stream_events(pb::StreamEventsRequest {
            from_sequence: from,
            follow,
            json,
        })
        .await
        .expect("open the stream")
        .into_inner()
}

/// The next event of `events`, within `within`.
async fn next(events: &mut Events, within: Duration) -> pb::StreamEventsResponse {
    tokio::time::timeout(within, events.next())
        .await
        .expect("no event in time")
        .expect("the stream ended")
        .expect("a stream error")
}

/// The tenant's newest sequence, as QueryEvents sees it.
async fn head(client: &Client) -> u64 {
    client
        .audit()
        .query_events(pb::QueryEventsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("query")
        .into_inner()
        .events
        .first()
        .map_or(0, |e| e.sequence)
}

/// Reveals by `agent` in a loop until `stop`, counting them.
fn writer(
    agent: Client,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            reveal(&agent, "dev", "svc/alpha").await;
            count.fetch_add(1, Ordering::Relaxed);
        }
    })
}

/// A tenant with an agent allowed to reveal `svc/alpha` in dev.
async fn setup(server: &TestServer) -> (TenantAdmin, Client) {
    let acme = server.tenant("acme").await;
    acme.create_api_key("dev", "svc/alpha", SECRETS[0]).await;
    let (agent_id, agent) = server.principal(&acme, "agent", pb::Role::Agent).await;
    grant(
        &acme,
        &agent_id,
        "svc/*",
        &["dev"],
        &[pb::Capability::Reveal],
        None,
    )
    .await;
    (acme, agent)
}

async fn resumes_exactly_once_while_writers_write(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (acme, agent) = setup(&server).await;
    let (_, viewer) = server.principal(&acme, "siem", pb::Role::Viewer).await;

    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..2)
        .map(|_| writer(agent.clone(), Arc::clone(&stop), Arc::clone(&written)))
        .collect();

    // Read a few events at a time, disconnect, resume after the last one
    // received, while the writers keep writing.
    let mut received: BTreeMap<u64, pb::AuditEvent> = BTreeMap::new();
    let mut duplicates = 0;
    let mut from = 1;
    for round in 0..6 {
        let mut events = stream(&viewer, from, true, round % 2 == 0).await;
        for _ in 0..25 {
            let r = next(&mut events, Duration::from_secs(20)).await;
            let e = r.event.expect("an event");
            if round % 2 == 0 {
                check_json(&r.json, &e);
            } else {
                assert!(r.json.is_empty(), "no JSON unless asked for");
            }
            from = e.sequence + 1;
            if received.insert(e.sequence, e).is_some() {
                duplicates += 1;
            }
        }
        drop(events);
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    assert!(
        written.load(Ordering::Relaxed) > 0,
        "the writers wrote meanwhile"
    );
    // Then up to the head, which no longer moves.
    let last = head(&acme.client).await;
    let mut events = stream(&viewer, from, true, false).await;
    while from <= last {
        let e = next(&mut events, Duration::from_secs(20))
            .await
            .event
            .expect("an event");
        assert_eq!(e.sequence, from, "in chain order, without gaps");
        from = e.sequence + 1;
        if received.insert(e.sequence, e).is_some() {
            duplicates += 1;
        }
    }
    drop(events);
    assert_eq!(duplicates, 0, "every event exactly once");
    let sequences: Vec<u64> = received.keys().copied().collect();
    assert_eq!(
        sequences,
        (1..=last).collect::<Vec<_>>(),
        "every event of the chain, once"
    );
    // The stream carries the events as QueryEvents returns them.
    let queried = audit_events(&acme.client, pb::QueryEventsRequest::default()).await;
    for q in queried.iter().filter(|q| q.sequence <= last) {
        assert_eq!(received.get(&q.sequence), Some(q), "event {}", q.sequence);
    }
    for e in received.values() {
        assert_free_of(e, &SECRETS, "a streamed event");
    }
    // Without follow, the stream ends at the head as it was.
    let mut events = stream(&viewer, last.saturating_sub(4), false, false).await;
    let mut n = 0;
    while let Some(r) = tokio::time::timeout(Duration::from_secs(20), events.next())
        .await
        .expect("the stream ends")
    {
        r.expect("an event");
        n += 1;
    }
    assert!(n >= 5, "the last five events at least: {n}");
    server.stop().await;
}

/// The JSON form: the same event, in the documented keys.
fn check_json(json: &str, e: &pb::AuditEvent) {
    let v: serde_json::Value = serde_json::from_str(json).expect("JSON");
    assert_eq!(v["schema"], 1);
    assert_eq!(v["sequence"], e.sequence);
    assert_eq!(v["id"], e.id.as_str());
    assert_eq!(v["tenant_id"], e.tenant_id.as_str());
    assert_eq!(v["hash"], hex::encode(&e.hash));
    assert_eq!(v["prev_hash"], hex::encode(&e.prev_hash));
    let time = e.time.as_ref().expect("a time");
    assert_eq!(
        v["time_micros"],
        time.seconds * 1_000_000 + i64::from(time.nanos / 1_000)
    );
    assert!(
        v["time"].as_str().expect("time").ends_with('Z'),
        "{}",
        v["time"]
    );
    let action = v["action"].as_str().expect("an action");
    match pb::AuditAction::try_from(e.action).expect("action") {
        pb::AuditAction::CredentialReveal => {
            assert_eq!(action, "credential.reveal");
            assert_eq!(v["lease_id"], e.lease_id.as_str());
            assert_eq!(v["detail"]["kind"], "lease", "{json}");
            assert_eq!(v["credential_name"], "svc/alpha");
            assert_eq!(v["environment"], "dev");
            assert_eq!(v["outcome"], "allowed");
        }
        _ => assert!(action.contains('.') || action == "rate_limited", "{action}"),
    }
    for secret in SECRETS {
        assert!(!json.contains(secret), "a value in the JSON form");
    }
}

async fn a_stalled_consumer_does_not_hold_up_reveals(backend: Backend) {
    const REVEALS: usize = 600;
    let server = TestServer::start_with(Options {
        log_level: "info".into(),
        ..Options::new(backend)
    })
    .await;
    let (acme, agent) = setup(&server).await;

    // Reveals with no stream open, for comparison.
    let baseline = timed_reveals(&agent, REVEALS / 2).await;

    // A consumer that reads one event and then stops reading.
    let mut stalled = stream(&acme.client, 1, true, true).await;
    next(&mut stalled, Duration::from_secs(10)).await;
    let before = head(&acme.client).await;
    let with_stalled = timed_reveals(&agent, REVEALS).await;
    let after = head(&acme.client).await;
    assert!(
        after - before >= REVEALS as u64,
        "every reveal committed while the consumer did not read"
    );
    println!(
        "reveals at 8 in flight: {:.0}/s without a stream, {:.0}/s with a stalled consumer",
        (REVEALS / 2) as f64 / baseline.as_secs_f64(),
        REVEALS as f64 / with_stalled.as_secs_f64()
    );
    // Far more events than a stream buffers were written; the writers went
    // on at their pace (generous bound: shared CI machines vary).
    let per_reveal_base = baseline.as_secs_f64() / (REVEALS / 2) as f64;
    let per_reveal_stalled = with_stalled.as_secs_f64() / REVEALS as f64;
    assert!(
        per_reveal_stalled < per_reveal_base * 3.0 + 0.002,
        "reveals slowed by a stalled consumer: {per_reveal_base:.5}s -> {per_reveal_stalled:.5}s"
    );

    // When it reads again, it receives everything, in order.
    let mut expected = 2;
    while expected <= after {
        let e = next(&mut stalled, Duration::from_secs(20))
            .await
            .event
            .expect("an event");
        assert_eq!(e.sequence, expected, "caught up without gaps");
        expected += 1;
    }
    server.stop().await;
}

/// Time for `n` reveals by `agent`, 8 in flight.
async fn timed_reveals(agent: &Client, n: usize) -> Duration {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let agent = agent.clone();
        let share = n / 8 + usize::from(i < n % 8);
        tasks.spawn(async move {
            for _ in 0..share {
                reveal(&agent, "dev", "svc/alpha").await;
            }
        });
    }
    let all = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(t) = tasks.join_next().await {
            t.expect("reveals");
        }
    })
    .await;
    assert!(all.is_ok(), "reveals stalled");
    started.elapsed()
}

async fn confined_readers_and_permissions(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (acme, agent) = setup(&server).await;
    acme.create_api_key("production", "svc/prod", SECRETS[1])
        .await;
    let (prod_agent_id, prod_agent) = server
        .principal_in(&acme, "prod-agent", pb::Role::Agent, &["production"])
        .await;
    grant(
        &acme,
        &prod_agent_id,
        "svc/*",
        &["production"],
        &[pb::Capability::Reveal],
        None,
    )
    .await;
    let (prod_viewer_id, prod_viewer) = server
        .principal_in(&acme, "prod-siem", pb::Role::Viewer, &["production"])
        .await;

    // Agents and operators may not stream.
    let refused = agent
        .audit()
        .stream_events(pb::StreamEventsRequest::default())
        .await;
    expect_code(refused, Code::PermissionDenied, "an agent streams");

    let mut confined = stream(&prod_viewer, 1, true, false).await;
    for _ in 0..3 {
        reveal(&agent, "dev", "svc/alpha").await;
        reveal(&prod_agent, "production", "svc/prod").await;
    }
    // Only prod events, as QueryEvents shows the same reader.
    let shown = audit_events(&prod_viewer, pb::QueryEventsRequest::default()).await;
    assert!(
        shown.len() >= 4,
        "the prod create and reveals: {}",
        shown.len()
    );
    let mut expected: Vec<u64> = shown.iter().map(|e| e.sequence).collect();
    expected.sort_unstable();
    for sequence in expected {
        let e = next(&mut confined, Duration::from_secs(20))
            .await
            .event
            .expect("an event");
        assert_eq!(e.sequence, sequence, "the events QueryEvents shows it");
        assert_eq!(e.environment, "production");
    }

    // Disabled: its open stream ends.
    acme.client
        .admin()
        .disable_principal(pb::DisablePrincipalRequest {
            principal_id: prod_viewer_id,
            reason: "offboarded".into(),
        })
        .await
        .expect("disable");
    reveal(&prod_agent, "production", "svc/prod").await;
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match confined.next().await {
                Some(Ok(_)) => {}
                Some(Err(status)) => return Some(status),
                None => return None,
            }
        }
    })
    .await
    .expect("the stream of a disabled reader ends");
    let status = ended.expect("ends with a status");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    server.stop().await;
}

async fn shutdown_ends_streams_unavailable(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (acme, agent) = setup(&server).await;
    reveal(&agent, "dev", "svc/alpha").await;
    let last = head(&acme.client).await;
    let mut events = stream(&acme.client, 1, true, false).await;
    for _ in 0..last {
        next(&mut events, Duration::from_secs(10)).await;
    }
    let started = Instant::now();
    let stopping = tokio::spawn(server.stop());
    let status = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("the stream ends at shutdown")
        .expect("with a status")
        .expect_err("not an event");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let exit = stopping.await.expect("stop");
    assert!(exit.success(), "clean exit: {exit:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the open stream did not hold up the shutdown"
    );
}

/// A replica follows what is written through the primary (Postgres).
#[tokio::test]
async fn a_replica_follows_events_written_through_another_server() {
    let primary = TestServer::start(Backend::Postgres).await;
    let (acme, agent) = setup(&primary).await;
    let replica = TestServer::start_with(primary.replica_options()).await;
    let on_replica = replica.client(&acme.identity).await;
    let first = head(&acme.client).await + 1;
    let mut events = stream(&on_replica, first, true, false).await;
    let mut latencies = Vec::new();
    for i in 0..5 {
        let written = Instant::now();
        reveal(&agent, "dev", "svc/alpha").await;
        let e = next(&mut events, Duration::from_secs(10))
            .await
            .event
            .expect("an event");
        latencies.push(written.elapsed());
        assert_eq!(e.sequence, first + i, "in order, once");
        assert_eq!(
            pb::AuditAction::try_from(e.action).expect("action"),
            pb::AuditAction::CredentialReveal
        );
    }
    latencies.sort();
    println!(
        "replica follow latency: median {:?}, max {:?}",
        latencies[2], latencies[4]
    );
    drop(events);
    replica.stop().await;
    primary.stop().await;
}
