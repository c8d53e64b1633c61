//! Summary end to end: totals, failures, activity per credential and per
//! principal and the last access agree with the events QueryEvents returns
//! for the same range; lease use (time in use, released, expired, revoked,
//! still open) matches the lease history ListLeases reports, over the whole
//! chain, a clipped range and with credential and principal filters; a
//! reader confined to environments summarises only theirs. Time moves by
//! the server's test clock, never by sleeping.

use std::time::Duration;

use strongroom_client::Client;
use strongroom_e2e::{
    Backend, Options, TenantAdmin, TestServer, audit_events, expect_code, expect_invalid, grant,
    path,
};
use strongroom_proto::v1 as pb;
use tonic::Code;

on_both_backends!(summary_matches_events_and_lease_history);

const SECRETS: [&str; 2] = ["sk-summary-a-3e8b", "sk-summary-b-5d20"];

async fn server(backend: Backend) -> TestServer {
    TestServer::start_with(Options {
        test_clock: true,
        env: vec![
            ("STRONGROOM_DEFAULT_LEASE_TTL_SECS".into(), "60".into()),
            ("STRONGROOM_MAX_LEASE_TTL_SECS".into(), "600".into()),
            ("STRONGROOM_LEASE_SWEEP_INTERVAL_MS".into(), "100".into()),
        ],
        ..Options::new(backend)
    })
    .await
}

async fn reveal(client: &Client, name: &str, ttl: Option<i64>) -> pb::Lease {
    client
        .credentials()
        .reveal_credential(pb::RevealCredentialRequest {
            credential: path("dev", name),
            purpose: "summary e2e".into(),
            lease_ttl: ttl.map(|seconds| prost_types::Duration { seconds, nanos: 0 }),
            ..Default::default()
        })
        .await
        .expect("reveal")
        .into_inner()
        .lease
        .expect("a lease")
}

fn micros(t: Option<&prost_types::Timestamp>) -> i64 {
    let t = t.expect("a time");
    t.seconds * 1_000_000 + i64::from(t.nanos / 1_000)
}

fn timestamp(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: i32::try_from(micros.rem_euclid(1_000_000) * 1_000).expect("nanos"),
    }
}

fn duration_micros(d: Option<&prost_types::Duration>) -> i64 {
    let d = d.expect("a duration");
    d.seconds * 1_000_000 + i64::from(d.nanos / 1_000)
}

/// Every lease of the tenant, as listed.
async fn leases(admin: &TenantAdmin) -> Vec<pb::Lease> {
    admin
        .client
        .credentials()
        .list_leases(pb::ListLeasesRequest {
            page_size: 500,
            ..Default::default()
        })
        .await
        .expect("list leases")
        .into_inner()
        .leases
}

/// Expected lease use of `leases` over `since..until`, from their history:
/// each lease from its issue (or `since`) to its end (or, open, the earlier
/// of `until` and its expiry).
fn expected(leases: &[&pb::Lease], since: i64, until: i64) -> (i64, [u64; 5]) {
    let mut in_use = 0;
    let mut counts = [0u64; 5]; // started, released, expired, revoked, open
    for l in leases {
        let issued = micros(l.issued_at.as_ref());
        let ended = l.ended_at.as_ref().map(|t| micros(Some(t)));
        if issued >= until || ended.is_some_and(|e| e < since) {
            continue;
        }
        if issued >= since {
            counts[0] += 1;
        }
        let stop = match ended.filter(|e| *e < until) {
            Some(e) => {
                match l.end_reason.as_str() {
                    "released" => counts[1] += 1,
                    "expired" => counts[2] += 1,
                    _ => counts[3] += 1,
                }
                e
            }
            None => {
                counts[4] += 1;
                micros(l.expires_at.as_ref()).min(until)
            }
        };
        in_use += stop - issued.max(since);
    }
    (in_use, counts)
}

fn check_usage(what: &str, usage: Option<&pb::LeaseUsage>, want: (i64, [u64; 5]), leases: u64) {
    let u = usage.unwrap_or_else(|| panic!("{what}: lease usage"));
    assert_eq!(
        [u.started, u.released, u.expired, u.revoked, u.open],
        want.1,
        "{what}: started, released, expired, revoked, open"
    );
    // The lease's issue and its reveal event are stamped by two readings
    // of the clock in the same call: at most a millisecond apart each.
    let got = duration_micros(u.time_in_use.as_ref());
    let slack = 1_000 * i64::try_from(leases).expect("count");
    assert!(
        (got - want.0).abs() <= slack,
        "{what}: time in use {got} µs, lease history says {} µs",
        want.0
    );
}

async fn summary(client: &Client, request: pb::SummaryRequest) -> pb::SummaryResponse {
    client
        .audit()
        .summary(request)
        .await
        .expect("summary")
        .into_inner()
}

async fn summary_matches_events_and_lease_history(backend: Backend) {
    let server = server(backend).await;
    let acme = server.tenant("acme").await;
    let a = acme.create_api_key("dev", "svc-a/key", SECRETS[0]).await.id;
    let b = acme.create_api_key("dev", "svc-b/key", SECRETS[1]).await.id;
    acme.create_api_key("production", "svc-p/key", "sk-summary-prod-11aa")
        .await;
    let (agent_id, agent) = server.principal(&acme, "agent", pb::Role::Agent).await;
    grant(
        &acme,
        &agent_id,
        "svc-a/*",
        &["dev"],
        &[pb::Capability::Reveal],
        None,
    )
    .await;
    let grant_b = grant(
        &acme,
        &agent_id,
        "svc-b/*",
        &["dev"],
        &[pb::Capability::Reveal],
        None,
    )
    .await;

    // A: one lease released after 100 s, one left to expire after 30 s.
    let l1 = reveal(&agent, "svc-a/key", Some(300)).await;
    server.advance_clock(Duration::from_secs(100));
    agent
        .credentials()
        .release_lease(pb::ReleaseLeaseRequest {
            lease_id: l1.lease_id.clone(),
        })
        .await
        .expect("release");
    let l2 = reveal(&agent, "svc-a/key", Some(30)).await;
    server.advance_clock(Duration::from_secs(100));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !leases(&acme)
        .await
        .iter()
        .any(|l| l.lease_id == l2.lease_id && l.end_reason == "expired")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sweeper did not expire the lease"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // B: one lease ended by revoking its grant after 20 s, one still open.
    reveal(&agent, "svc-b/key", None).await;
    server.advance_clock(Duration::from_secs(20));
    acme.client
        .policy()
        .revoke_grant(pb::RevokeGrantRequest {
            grant_id: grant_b.id.clone(),
            reason: "summary e2e".into(),
        })
        .await
        .expect("revoke the grant");
    grant(
        &acme,
        &agent_id,
        "svc-b/*",
        &["dev"],
        &[pb::Capability::Reveal],
        None,
    )
    .await;
    reveal(&agent, "svc-b/key", None).await;
    server.advance_clock(Duration::from_secs(10));
    // A refusal: the agent may not reveal in prod.
    let refused = agent
        .credentials()
        .reveal_credential(pb::RevealCredentialRequest {
            credential: path("production", "svc-p/key"),
            purpose: "summary e2e".into(),
            ..Default::default()
        })
        .await;
    assert!(refused.is_err(), "a reveal in prod is refused");

    let history = leases(&acme).await;
    assert_eq!(history.len(), 4, "{history:?}");
    let events = audit_events(&acme.client, pb::QueryEventsRequest::default()).await;
    let newest = events
        .iter()
        .map(|e| micros(e.time.as_ref()))
        .max()
        .expect("events");
    let until = newest + 5_000_000;
    let first = events
        .iter()
        .map(|e| micros(e.time.as_ref()))
        .min()
        .expect("events");

    // The whole chain.
    let all = summary(
        &acme.client,
        pb::SummaryRequest {
            end_time: Some(timestamp(until)),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(all.total_events, events.len() as u64);
    let failed = events
        .iter()
        .filter(|e| e.outcome != pb::AuditOutcome::Allowed as i32)
        .count() as u64;
    assert!(failed >= 1, "the refused reveal");
    assert_eq!(all.failed_events, failed);
    let every: Vec<&pb::Lease> = history.iter().collect();
    check_usage(
        "all",
        all.leases.as_ref(),
        expected(&every, first, until),
        4,
    );
    let want = expected(&every, first, until);
    assert_eq!(want.1, [4, 1, 1, 1, 1], "the history as the test made it");
    let uses: Vec<&pb::AuditEvent> = events
        .iter()
        .filter(|e| {
            e.action == pb::AuditAction::CredentialReveal as i32
                && e.outcome == pb::AuditOutcome::Allowed as i32
        })
        .collect();
    assert_eq!(
        all.last_access_at.as_ref().map(|t| micros(Some(t))),
        uses.iter().map(|e| micros(e.time.as_ref())).max()
    );
    for (id, name, leases) in [(&a, "svc-a/key", 2), (&b, "svc-b/key", 2)] {
        let activity = all
            .by_credential
            .iter()
            .find(|c| &c.credential_id == id)
            .unwrap_or_else(|| panic!("{name} in the breakdown"));
        let of: Vec<&pb::AuditEvent> = events.iter().filter(|e| &e.credential_id == id).collect();
        assert_eq!(activity.credential_name, name);
        assert_eq!(activity.environment, "dev");
        assert_eq!(activity.events, of.len() as u64, "{name}: events");
        assert_eq!(activity.uses, 2, "{name}: two reveals");
        assert_eq!(activity.last_principal_id, agent_id);
        let own: Vec<&pb::Lease> = history.iter().filter(|l| &l.credential_id == id).collect();
        check_usage(
            name,
            activity.leases.as_ref(),
            expected(&own, first, until),
            leases,
        );
    }
    let agent_activity = all
        .by_principal
        .iter()
        .find(|p| p.principal_id == agent_id)
        .expect("the agent in the breakdown");
    let by_agent = events.iter().filter(|e| e.principal_id == agent_id).count() as u64;
    assert_eq!(agent_activity.events, by_agent);
    assert_eq!(agent_activity.failed, 1, "the refused reveal");
    assert_eq!(agent_activity.principal_name, "agent");
    // Most active first; top_n bounds each breakdown.
    assert!(
        all.by_principal
            .windows(2)
            .all(|w| w[0].events >= w[1].events)
    );
    let top1 = summary(
        &acme.client,
        pb::SummaryRequest {
            end_time: Some(timestamp(until)),
            top_n: 1,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(top1.by_credential.len(), 1);
    assert_eq!(top1.by_principal.len(), 1);

    // A range starting 50 s into the first lease: it counts from there.
    let l1_issued = history
        .iter()
        .find(|l| l.lease_id == l1.lease_id)
        .map(|l| micros(l.issued_at.as_ref()))
        .expect("the first lease");
    let since = l1_issued + 50_000_000;
    let clipped = summary(
        &acme.client,
        pb::SummaryRequest {
            start_time: Some(timestamp(since)),
            end_time: Some(timestamp(until)),
            ..Default::default()
        },
    )
    .await;
    let in_range = events
        .iter()
        .filter(|e| (since..until).contains(&micros(e.time.as_ref())))
        .count() as u64;
    assert_eq!(clipped.total_events, in_range);
    check_usage(
        "clipped",
        clipped.leases.as_ref(),
        expected(&every, since, until),
        4,
    );

    // Filters: one credential; one principal (the leases it held, even
    // those the sweeper ended).
    let only_b = summary(
        &acme.client,
        pb::SummaryRequest {
            end_time: Some(timestamp(until)),
            credential_id: b.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(only_b.by_credential.len(), 1);
    let of_b: Vec<&pb::Lease> = history.iter().filter(|l| l.credential_id == b).collect();
    check_usage(
        "credential b",
        only_b.leases.as_ref(),
        expected(&of_b, first, until),
        2,
    );
    let only_agent = summary(
        &acme.client,
        pb::SummaryRequest {
            end_time: Some(timestamp(until)),
            principal_id: agent_id.clone(),
            ..Default::default()
        },
    )
    .await;
    let agent_only = only_agent
        .by_principal
        .iter()
        .find(|p| p.principal_id == agent_id)
        .expect("the agent");
    assert_eq!(agent_only.events, by_agent);
    check_usage("the agent", only_agent.leases.as_ref(), want, 4);

    // Confined to prod: only prod events, as QueryEvents shows them.
    let (_, prod_viewer) = server
        .principal_in(&acme, "prod-viewer", pb::Role::Viewer, &["production"])
        .await;
    let confined = summary(
        &prod_viewer,
        pb::SummaryRequest {
            end_time: Some(timestamp(until)),
            ..Default::default()
        },
    )
    .await;
    let prod_events = audit_events(&prod_viewer, pb::QueryEventsRequest::default()).await;
    let prod_before = prod_events
        .iter()
        .filter(|e| micros(e.time.as_ref()) < until)
        .count() as u64;
    assert_eq!(confined.total_events, prod_before);
    assert!(confined.total_events >= 1, "the prod create");
    assert!(
        confined
            .by_credential
            .iter()
            .all(|c| c.environment == "production")
    );
    check_usage("production", confined.leases.as_ref(), (0, [0; 5]), 0);

    // Agents may not; bad input is refused naming the field.
    expect_code(
        agent.audit().summary(pb::SummaryRequest::default()).await,
        Code::PermissionDenied,
        "an agent's summary",
    );
    expect_invalid(
        acme.client
            .audit()
            .summary(pb::SummaryRequest {
                top_n: 501,
                ..Default::default()
            })
            .await,
        "top_n",
        "top_n beyond 500",
    );
    expect_invalid(
        acme.client
            .audit()
            .summary(pb::SummaryRequest {
                credential_id: "not-an-id".into(),
                ..Default::default()
            })
            .await,
        "credential_id",
        "a malformed credential id",
    );
    expect_invalid(
        acme.client
            .audit()
            .summary(pb::SummaryRequest {
                start_time: Some(timestamp(until)),
                end_time: Some(timestamp(first)),
                ..Default::default()
            })
            .await,
        "end_time",
        "a range ending before it starts",
    );
    server.stop().await;
}
