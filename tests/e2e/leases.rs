//! Leases end to end: every reveal opens a stored lease, listed for admins;
//! its holder (and no one else) renews it, within and up to its maximum
//! lifetime, or releases it; the sweeper expires it once the server's
//! (test) clock passes its expiry; revoking its credential or its grant, or
//! disabling its principal, ends it at once. The audit chain records each
//! step with the lease's id and still verifies.

use std::time::Duration;

use strongroom_client::Client;
use strongroom_e2e::{
    Backend, Options, TenantAdmin, TestServer, api_key, assert_free_of, audit_events, expect_code,
    grant, path, verified_event_count,
};
use strongroom_proto::v1 as pb;
use tonic::Code;

on_both_backends!(
    lease_lifecycle,
    a_lease_ends_no_later_than_its_grant,
    revocations_end_leases
);

/// Values stored by these tests: never in a lease, an event or a log line.
const SECRETS: [&str; 4] = [
    "sk-lease-openai-4f9a",
    "sk-lease-stripe-77c1",
    "sk-lease-db-0b2e",
    "sk-lease-mail-91d3",
];

/// A server with a clock the test moves, short leases (60 s by default,
/// at most 600 s renewals included) and a sweeper every 100 ms.
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

async fn create(admin: &TenantAdmin, name: &str, secret: &str) -> String {
    admin
        .client
        .credentials()
        .create_credential(pb::CreateCredentialRequest {
            environment: "dev".into(),
            name: name.into(),
            service: name.split('/').next().unwrap_or("svc").into(),
            value: api_key(secret),
            ..Default::default()
        })
        .await
        .expect("create a credential")
        .into_inner()
        .credential
        .expect("credential")
        .id
}

/// Reveals `name` in `dev` and returns its lease.
async fn reveal(client: &Client, name: &str, ttl: Option<u64>) -> pb::Lease {
    client
        .credentials()
        .reveal_credential(pb::RevealCredentialRequest {
            credential: path("dev", name),
            purpose: "lease e2e".into(),
            lease_ttl: ttl.map(|s| prost_types::Duration {
                seconds: i64::try_from(s).expect("seconds"),
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .expect("reveal")
        .into_inner()
        .lease
        .expect("a lease")
}

async fn renew(
    client: &Client,
    lease: &pb::Lease,
    ttl: Option<u64>,
) -> Result<pb::Lease, tonic::Status> {
    client
        .credentials()
        .renew_lease(pb::RenewLeaseRequest {
            lease_id: lease.lease_id.clone(),
            ttl: ttl.map(|s| prost_types::Duration {
                seconds: i64::try_from(s).expect("seconds"),
                nanos: 0,
            }),
        })
        .await
        .map(|r| r.into_inner().lease.expect("lease"))
}

async fn release(client: &Client, lease: &pb::Lease) -> Result<pb::Lease, tonic::Status> {
    client
        .credentials()
        .release_lease(pb::ReleaseLeaseRequest {
            lease_id: lease.lease_id.clone(),
        })
        .await
        .map(|r| r.into_inner().lease.expect("lease"))
}

/// Every lease the admin lists with `request` (all pages).
async fn listed(admin: &TenantAdmin, request: pb::ListLeasesRequest) -> Vec<pb::Lease> {
    let mut leases = Vec::new();
    let mut token = String::new();
    loop {
        let page = admin
            .client
            .credentials()
            .list_leases(pb::ListLeasesRequest {
                page_size: 2,
                page_token: token,
                ..request.clone()
            })
            .await
            .expect("list leases")
            .into_inner();
        for l in &page.leases {
            assert_free_of(l, &SECRETS, "a listed lease");
        }
        leases.extend(page.leases);
        if page.next_page_token.is_empty() {
            return leases;
        }
        token = page.next_page_token;
    }
}

/// The lease `id` as the admin lists it.
async fn lease(admin: &TenantAdmin, id: &str) -> pb::Lease {
    listed(admin, pb::ListLeasesRequest::default())
        .await
        .into_iter()
        .find(|l| l.lease_id == id)
        .unwrap_or_else(|| panic!("lease {id} is not listed"))
}

fn state(l: &pb::Lease) -> pb::LeaseState {
    pb::LeaseState::try_from(l.state).expect("a lease state")
}

fn secs(t: Option<&prost_types::Timestamp>) -> i64 {
    t.expect("a time").seconds
}

/// The actions of the events about lease `id`, oldest first.
async fn lease_history(admin: &TenantAdmin, id: &str) -> Vec<pb::AuditAction> {
    let mut events: Vec<pb::AuditEvent> =
        audit_events(&admin.client, pb::QueryEventsRequest::default())
            .await
            .into_iter()
            .filter(|e| e.lease_id == id)
            .collect();
    events.sort_by_key(|e| e.sequence);
    for e in &events {
        assert_free_of(e, &SECRETS, "a lease event");
    }
    events
        .iter()
        .map(|e| pb::AuditAction::try_from(e.action).expect("an action"))
        .collect()
}

async fn lease_lifecycle(backend: Backend) {
    let server = server(backend).await;
    let acme = server.tenant("acme").await;
    let (agent_id, agent) = server.principal(&acme, "agent", pb::Role::Agent).await;
    let (other_id, other) = server.principal(&acme, "other", pb::Role::Agent).await;
    let credential_id = create(&acme, "llm/openai", SECRETS[0]).await;
    let g = grant(
        &acme,
        &agent_id,
        "llm/*",
        &["dev"],
        &[pb::Capability::Reveal],
        None,
    )
    .await;
    grant(
        &acme,
        &other_id,
        "llm/*",
        &["dev"],
        &[pb::Capability::Reveal],
        None,
    )
    .await;

    // The reveal's lease is stored and listed, as revealed.
    let first = reveal(&agent, "llm/openai", None).await;
    let stored = lease(&acme, &first.lease_id).await;
    assert_eq!(state(&stored), pb::LeaseState::Active);
    assert_eq!(stored.credential_id, credential_id);
    assert_eq!(stored.credential_name, "llm/openai");
    assert_eq!(stored.environment, "dev");
    assert_eq!(stored.version, 1);
    assert_eq!(stored.principal_id, agent_id);
    assert_eq!(stored.grant_id, g.id);
    assert_eq!(stored.purpose, "lease e2e");
    assert_eq!(stored.expires_at, first.expires_at);
    assert_eq!(stored.max_expires_at, first.max_expires_at);
    let issued = secs(stored.issued_at.as_ref());
    assert_eq!(
        secs(first.expires_at.as_ref()) - issued,
        60,
        "the default TTL"
    );
    assert_eq!(
        secs(first.max_expires_at.as_ref()) - issued,
        600,
        "the longest lease time"
    );
    let by_credential = listed(
        &acme,
        pb::ListLeasesRequest {
            credential: path("dev", "llm/openai"),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(by_credential.len(), 1);
    let by_other = listed(
        &acme,
        pb::ListLeasesRequest {
            principal_id: other_id.clone(),
            ..Default::default()
        },
    )
    .await;
    assert!(by_other.is_empty(), "the other agent holds no lease");
    expect_code(
        agent
            .credentials()
            .list_leases(pb::ListLeasesRequest::default())
            .await,
        Code::PermissionDenied,
        "an agent lists leases",
    );

    // Another principal may neither renew nor release it.
    expect_code(
        renew(&other, &first, None).await,
        Code::PermissionDenied,
        "renew by another",
    );
    expect_code(
        release(&other, &first).await,
        Code::PermissionDenied,
        "release by another",
    );

    // Within the maximum: extended by the time asked for.
    let renewed = renew(&agent, &first, Some(120)).await.expect("renew");
    let extended = secs(renewed.expires_at.as_ref()) - issued;
    assert!(
        (120..=140).contains(&extended),
        "renewed to now + 120 s: {extended}"
    );
    assert!(secs(renewed.expires_at.as_ref()) < secs(renewed.max_expires_at.as_ref()));
    // Beyond it: held to the maximum; then no further.
    let capped = renew(&agent, &first, Some(3600)).await.expect("renew");
    assert_eq!(
        capped.expires_at, first.max_expires_at,
        "held to the maximum"
    );
    let at_max = expect_code(
        renew(&agent, &first, None).await,
        Code::FailedPrecondition,
        "renew at the maximum",
    );
    assert!(at_max.message().contains("maximum"), "{at_max:?}");

    // Released: listed as such; a second release answers OK; renewal is
    // refused.
    let second = reveal(&agent, "llm/openai", None).await;
    let released = release(&agent, &second).await.expect("release");
    assert_eq!(state(&released), pb::LeaseState::Released);
    assert_eq!(released.end_reason, "released");
    let again = release(&agent, &second).await.expect("release again");
    assert_eq!(again.ended_at, released.ended_at, "nothing changed");
    expect_code(
        renew(&agent, &second, None).await,
        Code::FailedPrecondition,
        "renew a released lease",
    );

    // Expired by the sweeper once the server's clock passes the leases'
    // expiry (the first one's maximum too).
    let third = reveal(&agent, "llm/openai", Some(30)).await;
    server.advance_clock(Duration::from_secs(700));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let expired = listed(
            &acme,
            pb::ListLeasesRequest {
                state: pb::LeaseState::Expired as i32,
                ..Default::default()
            },
        )
        .await;
        if expired.len() == 2 {
            let third = expired
                .iter()
                .find(|l| l.lease_id == third.lease_id)
                .expect("the third lease expired");
            assert_eq!(third.end_reason, "expired");
            assert_eq!(third.ended_at, third.expires_at, "ended when it ran out");
            assert!(expired.iter().any(|l| l.lease_id == first.lease_id));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sweeper did not expire the leases: {expired:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    expect_code(
        renew(&agent, &third, None).await,
        Code::FailedPrecondition,
        "renew an expired lease",
    );
    expect_code(
        release(&agent, &third).await,
        Code::FailedPrecondition,
        "release an expired lease",
    );
    let active = listed(
        &acme,
        pb::ListLeasesRequest {
            state: pb::LeaseState::Active as i32,
            ..Default::default()
        },
    )
    .await;
    assert!(active.is_empty(), "no lease is left active: {active:?}");

    // The chain tells each lease's story, and verifies.
    use pb::AuditAction as A;
    assert_eq!(
        lease_history(&acme, &first.lease_id).await,
        [
            A::CredentialReveal,
            A::LeaseRenew,
            A::LeaseRenew,
            A::LeaseExpire
        ]
    );
    assert_eq!(
        lease_history(&acme, &second.lease_id).await,
        [A::CredentialReveal, A::LeaseRelease]
    );
    assert_eq!(
        lease_history(&acme, &third.lease_id).await,
        [A::CredentialReveal, A::LeaseExpire]
    );
    verified_event_count(&acme.client).await;
    for secret in SECRETS {
        assert!(!server.logs.contains(secret), "a value reached the logs");
    }
}

/// A lease never outlives the grant it was opened under: its maximum
/// lifetime is the grant's expiry when that comes before the server's
/// longest lease time, a longer TTL asked for is cut to it, and renewing
/// cannot pass it. A lease opened under a grant without expiry keeps the
/// longest lease time.
async fn a_lease_ends_no_later_than_its_grant(backend: Backend) {
    let server = server(backend).await;
    let acme = server.tenant("acme").await;
    let (agent_id, agent) = server.principal(&acme, "agent", pb::Role::Agent).await;
    let (other_id, other) = server.principal(&acme, "other", pb::Role::Agent).await;
    create(&acme, "mail/smtp", SECRETS[3]).await;
    // Five minutes: inside the server's longest lease time (600 s).
    let ends = std::time::SystemTime::now() + Duration::from_secs(300);
    let g = grant(
        &acme,
        &agent_id,
        "mail/*",
        &["dev"],
        &[pb::Capability::Reveal],
        Some(ends),
    )
    .await;
    assert!(g.expires_at.is_some(), "the grant expires");
    grant(
        &acme,
        &other_id,
        "mail/*",
        &["dev"],
        &[pb::Capability::Reveal],
        None,
    )
    .await;

    let leased = reveal(&agent, "mail/smtp", None).await;
    assert_eq!(
        leased.max_expires_at, g.expires_at,
        "the lease's maximum is the grant's expiry"
    );
    let issued = secs(leased.issued_at.as_ref());
    assert_eq!(
        secs(leased.expires_at.as_ref()) - issued,
        60,
        "the default TTL"
    );
    let stored = lease(&acme, &leased.lease_id).await;
    assert_eq!(stored.max_expires_at, g.expires_at, "as stored");

    // A TTL past the grant's expiry is cut to it.
    let long = reveal(&agent, "mail/smtp", Some(500)).await;
    assert_eq!(
        long.expires_at, g.expires_at,
        "a longer TTL ends with the grant"
    );
    assert_eq!(long.max_expires_at, g.expires_at);

    // Renewing for the longest time ends with the grant too.
    let renewed = renew(&agent, &leased, Some(600)).await.expect("renew");
    assert_eq!(
        renewed.expires_at, g.expires_at,
        "a renewal stops at the grant's expiry"
    );

    // Under a grant without expiry: the server's longest lease time.
    let unbounded = reveal(&other, "mail/smtp", None).await;
    let issued = secs(unbounded.issued_at.as_ref());
    assert_eq!(
        secs(unbounded.max_expires_at.as_ref()) - issued,
        600,
        "the longest lease time"
    );
}

async fn revocations_end_leases(backend: Backend) {
    let server = server(backend).await;
    let acme = server.tenant("acme").await;
    let (agent_id, agent) = server.principal(&acme, "agent", pb::Role::Agent).await;
    let (doomed_id, doomed) = server.principal(&acme, "doomed", pb::Role::Agent).await;
    create(&acme, "llm/openai", SECRETS[0]).await;
    create(&acme, "pay/stripe", SECRETS[1]).await;
    create(&acme, "db/main", SECRETS[2]).await;
    create(&acme, "mail/smtp", SECRETS[3]).await;
    grant(
        &acme,
        &agent_id,
        "llm/*",
        &["dev"],
        &[pb::Capability::Reveal],
        None,
    )
    .await;
    let pay = grant(
        &acme,
        &agent_id,
        "pay/*",
        &["dev"],
        &[pb::Capability::Reveal],
        None,
    )
    .await;
    grant(
        &acme,
        &agent_id,
        "mail/*",
        &["dev"],
        &[pb::Capability::Reveal],
        None,
    )
    .await;
    grant(
        &acme,
        &doomed_id,
        "db/*",
        &["dev"],
        &[pb::Capability::Reveal],
        None,
    )
    .await;

    // Revoking a credential ends its leases, and only its.
    let on_llm = reveal(&agent, "llm/openai", None).await;
    let on_mail = reveal(&agent, "mail/smtp", None).await;
    let revoked = acme
        .client
        .credentials()
        .revoke_credential(pb::RevokeCredentialRequest {
            credential: path("dev", "llm/openai"),
            reason: "rotated out".into(),
        })
        .await
        .expect("revoke the credential")
        .into_inner();
    assert_eq!(revoked.leases_ended, 1);
    let l = lease(&acme, &on_llm.lease_id).await;
    assert_eq!(state(&l), pb::LeaseState::Revoked);
    assert_eq!(l.end_reason, "credential_revoked");
    assert_eq!(
        state(&lease(&acme, &on_mail.lease_id).await),
        pb::LeaseState::Active
    );
    expect_code(
        renew(&agent, &on_llm, None).await,
        Code::FailedPrecondition,
        "renew after the credential was revoked",
    );

    // Revoking a grant ends the leases it allowed.
    let on_pay = reveal(&agent, "pay/stripe", None).await;
    let revoked = acme
        .client
        .policy()
        .revoke_grant(pb::RevokeGrantRequest {
            grant_id: pay.id.clone(),
            reason: "task done".into(),
        })
        .await
        .expect("revoke the grant")
        .into_inner();
    assert_eq!(revoked.leases_ended, 1);
    let l = lease(&acme, &on_pay.lease_id).await;
    assert_eq!(state(&l), pb::LeaseState::Revoked);
    assert_eq!(l.end_reason, "grant_revoked");
    expect_code(
        renew(&agent, &on_pay, None).await,
        Code::FailedPrecondition,
        "renew after the grant was revoked",
    );
    assert_eq!(
        state(&lease(&acme, &on_mail.lease_id).await),
        pb::LeaseState::Active,
        "the lease of another grant stays"
    );

    // Disabling a principal ends its leases.
    let on_db = reveal(&doomed, "db/main", None).await;
    let disabled = acme
        .client
        .admin()
        .disable_principal(pb::DisablePrincipalRequest {
            principal_id: doomed_id.clone(),
            reason: "compromised".into(),
        })
        .await
        .expect("disable the principal")
        .into_inner();
    assert_eq!(disabled.leases_ended, 1);
    let l = lease(&acme, &on_db.lease_id).await;
    assert_eq!(state(&l), pb::LeaseState::Revoked);
    assert_eq!(l.end_reason, "principal_disabled");
    assert!(
        renew(&doomed, &on_db, None).await.is_err(),
        "renew by a disabled principal"
    );

    // The one lease left is renewable still; the chain shows the rest
    // revoked, and verifies.
    renew(&agent, &on_mail, None)
        .await
        .expect("renew the untouched lease");
    use pb::AuditAction as A;
    for l in [&on_llm, &on_pay, &on_db] {
        assert_eq!(
            lease_history(&acme, &l.lease_id).await,
            [A::CredentialReveal, A::LeaseRevoke],
            "lease {}",
            l.lease_id
        );
    }
    verified_event_count(&acme.client).await;
    for secret in SECRETS {
        assert!(!server.logs.contains(secret), "a value reached the logs");
    }
}
