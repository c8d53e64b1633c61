-- The notifier's sender finds the tenants with deliveries due as the lease
-- sweeper finds those with leases that ran out (migration
-- 20261207002001): a transaction that sets `strongroom.lease_sweep` may
-- read (never write) every tenant's deliveries. It claims and records each
-- tenant's in a transaction bound to that tenant.
CREATE POLICY notification_sweep_read ON notification_deliveries FOR SELECT
    USING (current_setting('strongroom.lease_sweep', true) = 'on');

-- A tenant's due deliveries, oldest due first (the sender's claim).
CREATE INDEX notification_deliveries_tenant_due
    ON notification_deliveries (tenant_id, next_attempt_at)
    WHERE next_attempt_at IS NOT NULL;
