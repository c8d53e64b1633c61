//! The store conformance suite: one body of cases, every case run against
//! both backends, in one test binary.
//!
//! * `cases`: the `Store` contract through the public API, the way the
//!   server uses it (tenants created through a platform scope, tenant data
//!   reached through an authenticated admin's scope).
//! * `isolation_model`: tenant isolation as a property against a model.
//! * `rls`: Postgres row-level security on its own, with raw SQL.
//! * `chains`: chain heads and the platform-level chain (`ChainStore`).
//! * `idempotency`: the records of idempotent retries.
//! * `notifications`: the notifier sender's claims and attempt records.
//! * `group_commit`: reveal checks, the group committer under concurrent
//!   and failing jobs, and change notices (`changes()`).
//!
//! Postgres cases connect as a login role that is a plain member of
//! `strongroom_app` (never the superuser `#[sqlx::test]` hands out), so
//! row-level security is in force exactly as in production. They need
//! `DATABASE_URL` pointing at a Postgres superuser; `#[sqlx::test]` creates
//! a fresh database per test and applies the migrations.

use std::sync::Arc;

use sqlx::{PgPool, SqlitePool};
use strongroom_store::SqliteStore;

mod access_requests;
mod cases;
mod chains;
mod credential_ops;
mod export;
mod formats;
mod group_commit;
mod idempotency;
mod isolation_level;
mod isolation_model;
mod keys;
mod leases;
mod notifications;
mod rls;
mod rotation;
mod shred;
mod support;

/// Emits, for each `module::case`, a Postgres test and a SQLite test running
/// it on a fresh, migrated database.
macro_rules! conformance {
    ($($module:ident :: $case:ident => $postgres:ident, $sqlite:ident;)*) => {$(
        #[sqlx::test(migrator = "strongroom_store::PG_MIGRATOR")]
        async fn $postgres(pool: PgPool) {
            let store = support::pg_store(pool).await;
            $module::$case(store.clone()).await;
            store.pool().close().await;
        }

        #[sqlx::test(migrator = "strongroom_store::SQLITE_MIGRATOR")]
        async fn $sqlite(pool: SqlitePool) {
            $module::$case(Arc::new(SqliteStore::new(pool))).await;
        }
    )*};
}

conformance! {
    rotation::reminders_once_per_window => rotation_reminders_once_per_window_postgres, rotation_reminders_once_per_window_sqlite;
    rotation::expiry_marks_the_credential_once => rotation_expiry_marks_the_credential_once_postgres, rotation_expiry_marks_the_credential_once_sqlite;
    keys::replicas_report_and_expire => keys_replicas_report_and_expire_postgres, keys_replicas_report_and_expire_sqlite;
    keys::kek_rotation_and_retirement => keys_kek_rotation_and_retirement_postgres, keys_kek_rotation_and_retirement_sqlite;
    keys::notifier_secret_is_swapped_from_the_value_read => keys_notifier_secret_is_swapped_postgres, keys_notifier_secret_is_swapped_sqlite;
    export::export_then_import_round_trips => export_then_import_round_trips_postgres, export_then_import_round_trips_sqlite;
    export::refused_imports_write_nothing => refused_imports_write_nothing_postgres, refused_imports_write_nothing_sqlite;
    access_requests::file_collapses_duplicates => access_requests_file_collapses_duplicates_postgres, access_requests_file_collapses_duplicates_sqlite;
    access_requests::approval_commits_grant_and_event => access_requests_approval_commits_grant_and_event_postgres, access_requests_approval_commits_grant_and_event_sqlite;
    access_requests::denial_and_expiry => access_requests_denial_and_expiry_postgres, access_requests_denial_and_expiry_sqlite;
    access_requests::list_filters_and_pages => access_requests_list_filters_and_pages_postgres, access_requests_list_filters_and_pages_sqlite;
    access_requests::filing_enqueues_a_delivery => access_requests_filing_enqueues_a_delivery_postgres, access_requests_filing_enqueues_a_delivery_sqlite;
    notifications::claims_count_hold_and_record => notifications_claims_count_hold_and_record_postgres, notifications_claims_count_hold_and_record_sqlite;
    notifications::due_tenants_oldest_first => notifications_due_tenants_oldest_first_postgres, notifications_due_tenants_oldest_first_sqlite;
    notifications::concurrent_claims_take_each_once => notifications_concurrent_claims_take_each_once_postgres, notifications_concurrent_claims_take_each_once_sqlite;
    cases::identity_resolution => identity_resolution_postgres, identity_resolution_sqlite;
    cases::disabled_principal_is_denied => disabled_principal_is_denied_postgres, disabled_principal_is_denied_sqlite;
    cases::identity_belongs_to_one_tenant => identity_belongs_to_one_tenant_postgres, identity_belongs_to_one_tenant_sqlite;
    cases::identity_namespaces_are_exclusive => identity_namespaces_are_exclusive_postgres, identity_namespaces_are_exclusive_sqlite;
    cases::platform_operator_has_no_tenant => platform_operator_has_no_tenant_postgres, platform_operator_has_no_tenant_sqlite;
    cases::duplicate_tenant_name_is_rejected => duplicate_tenant_name_is_rejected_postgres, duplicate_tenant_name_is_rejected_sqlite;
    cases::tenants_list_in_pages => tenants_list_in_pages_postgres, tenants_list_in_pages_sqlite;
    cases::suspended_tenant_loses_its_scope => suspended_tenant_loses_its_scope_postgres, suspended_tenant_loses_its_scope_sqlite;
    cases::environments_lifecycle => environments_lifecycle_postgres, environments_lifecycle_sqlite;
    cases::principals_and_bindings => principals_and_bindings_postgres, principals_and_bindings_sqlite;
    cases::credential_create_get_find => credential_create_get_find_postgres, credential_create_get_find_sqlite;
    cases::credential_names_are_unique_per_environment => credential_names_are_unique_per_environment_postgres, credential_names_are_unique_per_environment_sqlite;
    cases::failed_create_leaves_nothing => failed_create_leaves_nothing_postgres, failed_create_leaves_nothing_sqlite;
    cases::credential_list_filters => credential_list_filters_postgres, credential_list_filters_sqlite;
    cases::credential_list_pages => credential_list_pages_postgres, credential_list_pages_sqlite;
    cases::retention_keeps_the_last_n => retention_keeps_the_last_n_postgres, retention_keeps_the_last_n_sqlite;
    cases::stale_add_version_writes_nothing => stale_add_version_writes_nothing_postgres, stale_add_version_writes_nothing_sqlite;
    cases::rollback_to_retained_versions_only => rollback_to_retained_versions_only_postgres, rollback_to_retained_versions_only_sqlite;
    cases::revoke_lifecycle => revoke_lifecycle_postgres, revoke_lifecycle_sqlite;
    cases::destroy_keeps_metadata => destroy_keeps_metadata_postgres, destroy_keeps_metadata_sqlite;
    shred::shred_destroys_keys_and_sealed_values => shred_destroys_keys_and_sealed_values_postgres, shred_destroys_keys_and_sealed_values_sqlite;
    shred::shred_with_purge_deletes_metadata_and_chain => shred_with_purge_deletes_metadata_and_chain_postgres, shred_with_purge_deletes_metadata_and_chain_sqlite;
    shred::shred_of_a_missing_tenant_is_not_found => shred_of_a_missing_tenant_is_not_found_postgres, shred_of_a_missing_tenant_is_not_found_sqlite;
    cases::grants_lifecycle_and_filters => grants_lifecycle_and_filters_postgres, grants_lifecycle_and_filters_sqlite;
    cases::grants_for_direct_and_role => grants_for_direct_and_role_postgres, grants_for_direct_and_role_sqlite;
    cases::audit_chain_records_every_mutation => audit_chain_records_every_mutation_postgres, audit_chain_records_every_mutation_sqlite;
    cases::audit_query_filters_and_pages => audit_query_filters_and_pages_postgres, audit_query_filters_and_pages_sqlite;
    cases::audit_chains_are_per_tenant => audit_chains_are_per_tenant_postgres, audit_chains_are_per_tenant_sqlite;
    cases::cross_tenant_credentials_are_invisible => cross_tenant_credentials_are_invisible_postgres, cross_tenant_credentials_are_invisible_sqlite;
    cases::cross_tenant_principals_grants_and_audit_are_invisible => cross_tenant_principals_grants_and_audit_are_invisible_postgres, cross_tenant_principals_grants_and_audit_are_invisible_sqlite;
    cases::foreign_page_tokens_return_only_own_rows => foreign_page_tokens_return_only_own_rows_postgres, foreign_page_tokens_return_only_own_rows_sqlite;
    cases::concurrent_writers_stay_consistent => concurrent_writers_stay_consistent_postgres, concurrent_writers_stay_consistent_sqlite;
    cases::server_meta_is_written_once => server_meta_is_written_once_postgres, server_meta_is_written_once_sqlite;
    credential_ops::update_credential_sets_named_fields_only => update_credential_sets_named_fields_only_postgres, update_credential_sets_named_fields_only_sqlite;
    credential_ops::emergency_revoke_credential_cuts_once => emergency_revoke_credential_cuts_once_postgres, emergency_revoke_credential_cuts_once_sqlite;
    chains::chain_heads_and_the_platform_chain => chain_heads_and_the_platform_chain_postgres, chain_heads_and_the_platform_chain_sqlite;
    chains::chain_event_at_reads_one_event => chain_event_at_reads_one_event_postgres, chain_event_at_reads_one_event_sqlite;
    isolation_model::tenant_isolation_matches_the_model => tenant_isolation_matches_the_model_postgres, tenant_isolation_matches_the_model_sqlite;
    group_commit::reveal_with_a_holding_check_is_recorded => reveal_with_a_holding_check_is_recorded_postgres, reveal_with_a_holding_check_is_recorded_sqlite;
    group_commit::stale_reveal_checks_append_nothing => stale_reveal_checks_append_nothing_postgres, stale_reveal_checks_append_nothing_sqlite;
    group_commit::read_only_reveal_checks_judge_as_commit_does => read_only_reveal_checks_judge_as_commit_does_postgres, read_only_reveal_checks_judge_as_commit_does_sqlite;
    group_commit::concurrent_group_commit_stays_exact => concurrent_group_commit_stays_exact_postgres, concurrent_group_commit_stays_exact_sqlite;
    group_commit::leases_commit_with_their_reveals => leases_commit_with_their_reveals_postgres, leases_commit_with_their_reveals_sqlite;
    group_commit::failing_jobs_do_not_poison_their_batch => failing_jobs_do_not_poison_their_batch_postgres, failing_jobs_do_not_poison_their_batch_sqlite;
    group_commit::concurrent_rotations_keep_retention => concurrent_rotations_keep_retention_postgres, concurrent_rotations_keep_retention_sqlite;
    group_commit::text_is_stored_as_sealed => text_is_stored_as_sealed_postgres, text_is_stored_as_sealed_sqlite;
    idempotency::idempotency_claims_complete_and_release => idempotency_claims_complete_and_release_postgres, idempotency_claims_complete_and_release_sqlite;
    idempotency::idempotency_keys_are_per_tenant_caller_and_call => idempotency_keys_are_per_tenant_caller_and_call_postgres, idempotency_keys_are_per_tenant_caller_and_call_sqlite;
    idempotency::idempotency_records_expire_and_are_purged => idempotency_records_expire_and_are_purged_postgres, idempotency_records_expire_and_are_purged_sqlite;
    idempotency::idempotency_concurrent_claims_have_one_winner => idempotency_concurrent_claims_have_one_winner_postgres, idempotency_concurrent_claims_have_one_winner_sqlite;
}

/// Emits a Postgres-only test per `module::check`, on the superuser pool the
/// check needs (each connects as the app role itself).
macro_rules! postgres_only {
    ($($module:ident :: $check:ident),* $(,)?) => {$(
        #[sqlx::test(migrator = "strongroom_store::PG_MIGRATOR")]
        async fn $check(pool: PgPool) {
            $module::$check(pool).await;
        }
    )*};
}

postgres_only! {
    rls::rls_hides_other_tenants_rows,
    rls::rls_rejects_writes_into_another_tenant,
    rls::rls_without_a_tenant_sees_nothing,
    rls::rls_platform_mode_reads_only_the_registry,
    rls::rls_lease_sweep_reads_only_leases,
    rls::rls_idempotency_records_are_confined,
    rls::rls_audit_log_is_append_only,
    rls::rls_platform_tables_are_platform_only,
    rls::pg_derived_namespace_review_runs_as_the_app_role,
    isolation_level::pg_overlap_check_holds_under_repeatable_read,
    rls::check_role_refuses_a_superuser,
    rls::check_role_refuses_bypassrls,
    group_commit::pg_changes_announce_other_servers_mutations,
    group_commit::pg_changes_skip_reveals,
    group_commit::pg_changes_reach_a_later_subscriber,
    group_commit::pg_changes_announce_a_lost_listener,
    group_commit::pg_two_committers_do_not_deadlock,
    group_commit::pg_dropped_store_releases_its_connections,
    group_commit::pg_failed_head_lock_spoils_no_connection,
    group_commit::pg_busy_committers_leave_connections_to_others,
    group_commit::pg_closed_connection_is_retried,
    group_commit::pg_batch_resent_after_a_lost_reply_is_chained_once,
    group_commit::pg_refused_job_fails_alone,
    group_commit::pg_short_path_refuses_what_the_rule_refuses,
    group_commit::pg_malformed_reveal_checks_are_refused,
    leases::pg_reveal_leases_live_in_their_events,
    leases::pg_sweeper_finds_recorded_leases_of_every_tenant,
}

/// SQLite: a job the database refuses fails alone in its batch.
#[sqlx::test(migrator = "strongroom_store::SQLITE_MIGRATOR")]
async fn sqlite_refused_job_fails_alone(pool: SqlitePool) {
    group_commit::sqlite_refused_job_fails_alone(pool).await;
}

/// SQLite: busy committers keep no connection the pool has no other of.
#[sqlx::test(migrator = "strongroom_store::SQLITE_MIGRATOR")]
async fn sqlite_busy_committers_leave_connections_to_others(pool: SqlitePool) {
    group_commit::sqlite_busy_committers_leave_connections_to_others(pool).await;
}

/// SQLite: the short path refuses what the reveal-check rule refuses.
#[sqlx::test(migrator = "strongroom_store::SQLITE_MIGRATOR")]
async fn sqlite_short_path_refuses_what_the_rule_refuses(pool: SqlitePool) {
    group_commit::sqlite_short_path_refuses_what_the_rule_refuses(pool).await;
}

/// Postgres: format-1 events (as earlier versions wrote them) followed by
/// format-2 events verify; tampering with either is detected.
#[sqlx::test(migrator = "strongroom_store::PG_MIGRATOR")]
async fn pg_format_1_then_format_2_chains_verify(pool: PgPool) {
    formats::pg_format_1_then_format_2_chains_verify(pool).await;
}

/// SQLite: format-1 events (as earlier versions wrote them) followed by
/// format-2 events verify; tampering with either is detected.
#[sqlx::test(migrator = "strongroom_store::SQLITE_MIGRATOR")]
async fn sqlite_format_1_then_format_2_chains_verify(pool: SqlitePool) {
    formats::sqlite_format_1_then_format_2_chains_verify(pool).await;
}

/// SQLite has one server per database: its change notices stay silent.
#[sqlx::test(migrator = "strongroom_store::SQLITE_MIGRATOR")]
async fn sqlite_changes_stay_silent(pool: SqlitePool) {
    group_commit::sqlite_changes_stay_silent(Arc::new(SqliteStore::new(pool))).await;
}
