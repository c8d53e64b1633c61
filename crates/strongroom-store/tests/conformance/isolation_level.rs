//! The store's Postgres transactions run at READ COMMITTED whatever the
//! database's default: under a `repeatable read` default, a snapshot taken
//! before `LOCK TABLE identity_namespaces` would miss an assignment
//! committed while the lock was awaited, and overlapping namespaces of two
//! tenants could both commit.

use strongroom_core::audit::{Action, Outcome};
use strongroom_core::store::{IdentityStore, Store};

use crate::support::{create_tenant, operator, pg_store};

/// With the database's default isolation set to repeatable read, rounds of
/// concurrent overlapping assignments to different tenants: exactly one of
/// each round succeeds.
pub async fn pg_overlap_check_holds_under_repeatable_read(admin: sqlx::PgPool) {
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&admin)
        .await
        .expect("current database");
    sqlx::query(&format!(
        "ALTER DATABASE \"{database}\" SET default_transaction_isolation = 'repeatable read'"
    ))
    .execute(&admin)
    .await
    .expect("set the default isolation");
    // New connections (the app role's pool) take the new default.
    let store = pg_store(admin.clone()).await;
    let default: String = sqlx::query_scalar("SHOW default_transaction_isolation")
        .fetch_one(store.pool())
        .await
        .expect("show");
    assert_eq!(default, "repeatable read");
    let s: &dyn Store = &*store;
    let mut tenants = Vec::new();
    for i in 0..4 {
        tenants.push(create_tenant(s, &format!("racer-{i}")).await);
    }
    for round in 0..8 {
        // Nested prefixes: every two of them overlap, none is equal.
        let mut attempts = tokio::task::JoinSet::new();
        for (i, t) in tenants.iter().enumerate() {
            let namespace = strongroom_core::principal::IdentityPattern::Prefix(format!(
                "spiffe://race.test/round-{round}/{}",
                "s/".repeat(i + 1)
            ));
            let (store, tenant) = (store.clone(), t.id());
            attempts.spawn(async move {
                let op = operator(&*store).await;
                let platform = op.platform_scope().expect("platform scope");
                store
                    .set_identity_namespaces(
                        &platform,
                        tenant,
                        &[namespace],
                        platform.audit(
                            Action::TenantNamespaces,
                            Outcome::Allowed,
                            "PLATFORM_OPERATOR",
                        ),
                    )
                    .await
            });
        }
        let results = attempts.join_all().await;
        let won = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "round {round}: {results:?}");
        for r in results.iter().filter_map(|r| r.as_ref().err()) {
            assert!(
                r.to_string()
                    .contains(strongroom_core::principal::NAMESPACE_OVERLAP),
                "round {round}: {r}"
            );
        }
    }
    store.pool().close().await;
}
