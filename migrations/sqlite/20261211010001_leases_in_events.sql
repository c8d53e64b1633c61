-- The lease store reads a lease either from its row in `leases` or, until
-- something changes it, from the reveal event that opened it (see the
-- Postgres migration of the same name). SQLite's batches store every
-- lease's row with its reveal, so here the event's lease columns stay
-- empty; they exist so that both backends run the same lease statements.
ALTER TABLE audit_events ADD COLUMN lease_id BLOB;
ALTER TABLE audit_events ADD COLUMN lease_grant BLOB;
ALTER TABLE audit_events ADD COLUMN lease_ttl_secs INTEGER;
ALTER TABLE audit_events ADD COLUMN lease_issued_at INTEGER;
ALTER TABLE audit_events ADD COLUMN lease_expires_at INTEGER;
ALTER TABLE audit_events ADD COLUMN lease_max_expires_at INTEGER;
CREATE UNIQUE INDEX audit_events_lease ON audit_events (tenant_id, lease_id)
    WHERE lease_id IS NOT NULL;
CREATE INDEX audit_events_lease_due ON audit_events (tenant_id, lease_expires_at)
    WHERE lease_id IS NOT NULL;

ALTER TABLE audit_heads ADD COLUMN leases_swept_through INTEGER NOT NULL DEFAULT 0;
ALTER TABLE audit_heads ADD COLUMN leases_due_at INTEGER;
