//! UpdateCredential and the emergency revoke of a credential, through the
//! store: only the named metadata columns change, each write commits with
//! its one event (and a `lease.revoke` per lease it ended), a refused write
//! leaves nothing, and a repeat of an emergency revoke with nothing left to
//! cut writes nothing.

use std::sync::Arc;
use std::time::Duration;

use strongroom_core::audit::{Action, AuditDetail};
use strongroom_core::credential::{
    CredentialStatus, CredentialUpdate, InjectionTemplate, RotationPolicy,
};
use strongroom_core::ids::CredentialId;
use strongroom_core::lease::{LeaseEnd, LeaseFilter, LeaseState};
use strongroom_core::principal::Role;
use strongroom_core::store::{EmergencyRotation, Store};
use strongroom_core::time::Timestamp;

use crate::group_commit::{leases_of, reveal, reveal_grant, verified_log};
use crate::support::{AuditTrail, Code, about, code, create_tenant, credential, service, tag};

fn on(filter_credential: CredentialId) -> LeaseFilter {
    LeaseFilter {
        credential: Some(filter_credential),
        ..LeaseFilter::default()
    }
}

/// Every masked field changes, and nothing else: not the value, version,
/// status or the fields the update does not name; clearing works; a
/// narrowing update ends the credential's leases with `credential_narrowed`;
/// an unknown credential is `NotFound` with nothing written.
pub async fn update_credential_sets_named_fields_only(store: Arc<dyn Store>) {
    let store = &*store;
    let acme = create_tenant(store, "acme").await;
    let scope = acme.scope();
    let agent = acme.add_principal(store, "agent", Role::Agent).await;
    let g = reveal_grant(&acme, &agent, None);
    acme.add_grant(store, &g).await;
    let mut c = credential(&scope, "dev", "llm/openai");
    c.description = "before".into();
    c.scopes = vec!["read".into()];
    acme.store(store, &c).await.expect("create");
    let rotated = acme.rotate(store, &c, 1).await.expect("v2");
    reveal(store, &acme, &c, 2, &agent, Some(g.id))
        .await
        .expect("reveal");
    let mut trail = AuditTrail::start(store, scope).await;

    let policy = RotationPolicy {
        period_days: 30,
        reminder_days: 7,
    };
    let update = CredentialUpdate {
        description: Some("after".into()),
        tags: Some(vec![tag("team:a")]),
        rotation: Some(Some(policy)),
        ..CredentialUpdate::default()
    };
    let mut d = about(&scope, Action::CredentialUpdate, &c);
    d.detail = Some(AuditDetail::CredentialUpdated {
        fields: update.fields(),
        narrowed: false,
    });
    let at = d.at;
    let (after, ended) = store
        .update_credential(&scope, c.id, &update, false, d)
        .await
        .expect("update");
    let event = trail.expect(Action::CredentialUpdate).await;
    assert_eq!(ended, 0);
    assert_eq!(after.description, "after");
    assert_eq!(after.tags, vec![tag("team:a")]);
    assert_eq!(after.rotation, Some(policy));
    assert_eq!(after.updated_at, at);
    // Untouched: what the update does not name.
    assert_eq!(after.scopes, vec!["read".to_owned()]);
    assert_eq!(after.service, c.service);
    assert_eq!(after.current_version, 2);
    assert_eq!(after.rotated_at, rotated.rotated_at);
    assert_eq!(after.status, CredentialStatus::Active);
    assert_eq!(
        event.draft.detail,
        Some(AuditDetail::CredentialUpdated {
            fields: vec![
                "description".into(),
                "tags".into(),
                "rotation_policy".into()
            ],
            narrowed: false,
        })
    );
    assert_eq!(
        store.get_credential(&scope, c.id).await.expect("get"),
        after
    );
    assert_eq!(
        leases_of(store, &acme, on(c.id)).await[0].state,
        LeaseState::Active
    );

    // A narrowing update: owner, service, template, an expiry in the past.
    let past = Timestamp::now().minus(Duration::from_secs(60));
    let narrowing = CredentialUpdate {
        owner: Some(Some("alice".into())),
        service: Some(service("openai-eu")),
        injection: Some(Some(InjectionTemplate::Header {
            name: "X-Api-Key".into(),
            field: "api_key".into(),
            prefix: String::new(),
        })),
        expires_at: Some(Some(past)),
        ..CredentialUpdate::default()
    };
    assert!(narrowing.narrows(&after));
    let (narrowed, ended) = store
        .update_credential(
            &scope,
            c.id,
            &narrowing,
            true,
            about(&scope, Action::CredentialUpdate, &c),
        )
        .await
        .expect("narrowing update");
    trail.expect(Action::CredentialUpdate).await;
    assert_eq!(ended, 1);
    assert_eq!(narrowed.owner.as_deref(), Some("alice"));
    assert_eq!(narrowed.service, service("openai-eu"));
    assert_eq!(narrowed.expires_at, Some(past));
    assert_eq!(narrowed.description, "after");
    let lease = &leases_of(store, &acme, on(c.id)).await[0];
    assert_eq!(lease.state, LeaseState::Revoked);
    assert_eq!(lease.end, Some(LeaseEnd::CredentialNarrowed));
    assert_eq!(
        code(reveal(store, &acme, &c, 2, &agent, Some(g.id)).await),
        Code::FailedPrecondition,
        "an expiry in the past fails reveals at commit"
    );
    trail = AuditTrail::start(store, scope).await;

    // Clearing the optional fields.
    let clear = CredentialUpdate {
        owner: Some(None),
        expires_at: Some(None),
        rotation: Some(None),
        injection: Some(None),
        ..CredentialUpdate::default()
    };
    let (cleared, _) = store
        .update_credential(
            &scope,
            c.id,
            &clear,
            false,
            about(&scope, Action::CredentialUpdate, &c),
        )
        .await
        .expect("clearing update");
    trail.expect(Action::CredentialUpdate).await;
    assert_eq!(
        (
            cleared.owner,
            cleared.expires_at,
            cleared.rotation,
            cleared.injection
        ),
        (None, None, None, None)
    );
    assert_eq!(cleared.service, service("openai-eu"));

    // An unknown credential: nothing written.
    let ghost = credential(&scope, "dev", "llm/ghost");
    assert_eq!(
        code(
            store
                .update_credential(
                    &scope,
                    ghost.id,
                    &clear,
                    true,
                    about(&scope, Action::CredentialUpdate, &ghost),
                )
                .await
        ),
        Code::NotFound
    );
    trail.expect_none().await;
    verified_log(store, &scope).await;
}

/// Without a rotation: revoked, every lease ended, the grants behind them
/// reported (and kept), one event counting it; a repeat writes nothing.
/// With a rotation: the generated version current, the revoked version's
/// value destroyed, the leases ended; a stale latest version or a revoked
/// credential refuses the rotation with nothing written.
pub async fn emergency_revoke_credential_cuts_once(store: Arc<dyn Store>) {
    let store = &*store;
    let acme = create_tenant(store, "acme").await;
    let scope = acme.scope();
    let agent = acme.add_principal(store, "agent", Role::Agent).await;
    let g = reveal_grant(&acme, &agent, None);
    acme.add_grant(store, &g).await;
    let c = credential(&scope, "dev", "llm/openai");
    acme.store(store, &c).await.expect("create");
    let d = credential(&scope, "dev", "llm/other");
    acme.store(store, &d).await.expect("create");
    for _ in 0..2 {
        reveal(store, &acme, &c, 1, &agent, Some(g.id))
            .await
            .expect("reveal c");
        reveal(store, &acme, &d, 1, &agent, Some(g.id))
            .await
            .expect("reveal d");
    }
    let mut trail = AuditTrail::start(store, scope).await;

    let cut = store
        .emergency_revoke_credential(
            &scope,
            c.id,
            "found in a public repo",
            None,
            about(&scope, Action::CredentialEmergencyRevoke, &c),
        )
        .await
        .expect("emergency revoke");
    let event = trail.expect(Action::CredentialEmergencyRevoke).await;
    assert_eq!(cut.credential.status, CredentialStatus::Revoked);
    assert_eq!(
        cut.credential.revoke_reason.as_deref(),
        Some("found in a public repo")
    );
    assert_eq!(
        (cut.revoked_version, cut.new_version, cut.leases_ended),
        (1, None, 2)
    );
    assert_eq!(cut.grants, vec![g.id]);
    assert_eq!(event.draft.version, Some(1));
    assert_eq!(
        event.draft.detail,
        Some(AuditDetail::CredentialEmergencyRevoke {
            reason: "found in a public repo".into(),
            revoked_version: 1,
            new_version: None,
            leases_ended: 2,
            grants: vec![g.id],
        })
    );
    assert!(
        leases_of(store, &acme, on(c.id)).await.iter().all(|l| {
            l.state == LeaseState::Revoked && l.end == Some(LeaseEnd::CredentialRevoked)
        })
    );
    assert!(
        leases_of(store, &acme, on(d.id))
            .await
            .iter()
            .all(|l| l.state == LeaseState::Active),
        "another credential's leases are untouched"
    );
    store
        .get_grant(&scope, g.id)
        .await
        .expect("the grant is kept");
    assert_eq!(
        code(reveal(store, &acme, &c, 1, &agent, Some(g.id)).await),
        Code::FailedPrecondition
    );
    trail = AuditTrail::start(store, scope).await;

    // A repeat: nothing left to cut, nothing written.
    let again = store
        .emergency_revoke_credential(
            &scope,
            c.id,
            "again",
            None,
            about(&scope, Action::CredentialEmergencyRevoke, &c),
        )
        .await
        .expect("repeat");
    assert_eq!((again.leases_ended, again.grants.len()), (0, 0));
    assert_eq!(
        again.credential.revoke_reason.as_deref(),
        Some("found in a public repo")
    );
    trail.expect_none().await;

    // Rotating a revoked credential is refused.
    let rotation = |latest: u32| EmergencyRotation {
        version: acme.seal(&d, latest + 1, "generated-replacement-value"),
        expected_latest: latest,
        retention: 10,
    };
    let c_rotation = EmergencyRotation {
        version: acme.seal(&c, 2, "generated"),
        expected_latest: 1,
        retention: 10,
    };
    assert_eq!(
        code(
            store
                .emergency_revoke_credential(
                    &scope,
                    c.id,
                    "rotate",
                    Some(c_rotation),
                    about(&scope, Action::CredentialEmergencyRevoke, &c),
                )
                .await
        ),
        Code::FailedPrecondition
    );
    // A stale latest version is a version race.
    assert_eq!(
        code(
            store
                .emergency_revoke_credential(
                    &scope,
                    d.id,
                    "rotate",
                    Some(rotation(5)),
                    about(&scope, Action::CredentialEmergencyRevoke, &d),
                )
                .await
        ),
        Code::FailedPrecondition
    );
    trail.expect_none().await;

    // Rotating: a new current version, the old value destroyed.
    let cut = store
        .emergency_revoke_credential(
            &scope,
            d.id,
            "rotate",
            Some(rotation(1)),
            about(&scope, Action::CredentialEmergencyRevoke, &d),
        )
        .await
        .expect("rotating emergency revoke");
    trail.expect(Action::CredentialEmergencyRevoke).await;
    assert_eq!(cut.credential.status, CredentialStatus::Active);
    assert_eq!(cut.credential.current_version, 2);
    assert_eq!(
        (cut.revoked_version, cut.new_version, cut.leases_ended),
        (1, Some(2), 2)
    );
    assert_eq!(cut.grants, vec![g.id]);
    let v1 = store.get_version(&scope, d.id, 1).await.expect("v1 kept");
    assert!(
        v1.envelope.is_none(),
        "the revoked version's value is destroyed"
    );
    let v2 = store.get_version(&scope, d.id, 2).await.expect("v2");
    assert_eq!(
        acme.open(&cut.credential, &v2),
        "generated-replacement-value"
    );
    assert!(
        leases_of(store, &acme, on(d.id))
            .await
            .iter()
            .all(|l| l.state == LeaseState::Revoked)
    );
    assert_eq!(
        code(reveal(store, &acme, &d, 1, &agent, Some(g.id)).await),
        Code::FailedPrecondition,
        "the revoked version is no longer revealed"
    );
    reveal(store, &acme, &d, 2, &agent, Some(g.id))
        .await
        .expect("the new version is");
    verified_log(store, &scope).await;
}
