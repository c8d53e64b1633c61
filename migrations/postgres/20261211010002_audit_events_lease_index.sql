-- no-transaction
-- The key of leases recorded in their reveal events (migration
-- 20261211010001): a lease is looked up by id, and no id is recorded
-- twice. Built without blocking the audit log's writers; if the build is
-- interrupted, drop the invalid index it leaves
-- (`DROP INDEX CONCURRENTLY audit_events_lease`) and run the migration again.
CREATE UNIQUE INDEX CONCURRENTLY audit_events_lease ON audit_events (tenant_id, lease_id)
    WHERE lease_id IS NOT NULL;
