-- A tenant's due deliveries, oldest due first (the notifier sender's
-- claim). Nothing else: one server owns a SQLite database, and nothing
-- hides one tenant's rows from the sender's search for due tenants.
CREATE INDEX notification_deliveries_tenant_due
    ON notification_deliveries (tenant_id, next_attempt_at)
    WHERE next_attempt_at IS NOT NULL;
