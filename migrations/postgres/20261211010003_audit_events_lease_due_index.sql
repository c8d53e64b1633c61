-- no-transaction
-- The expiries of leases recorded in their reveal events (migration
-- 20261211010001), for the sweeper's search past its mark and the
-- revocations' search for active leases. Built without blocking the audit
-- log's writers; if the build is interrupted, drop the invalid index it
-- leaves (`DROP INDEX CONCURRENTLY audit_events_lease_due`) and run the
-- migration again.
CREATE INDEX CONCURRENTLY audit_events_lease_due ON audit_events (tenant_id, lease_expires_at)
    WHERE lease_id IS NOT NULL;
