-- The webhook notifier's delivery log: one row per notice to send (a new
-- access request now, rotation reminders later), written in the same
-- transaction as what it notifies about, then updated by the sender with
-- each attempt. `payload` is the notice's data as JSON (ids, names,
-- selectors, reasons; never a value); the signed envelope is built at send
-- time. `last_error` says why the last attempt failed (a status code or a
-- connection error), never the receiver's body. `next_attempt_at` is NULL
-- once the delivery succeeded or gave up.
CREATE TABLE notification_deliveries (
    tenant_id       UUID NOT NULL REFERENCES tenants (id),
    id              UUID NOT NULL,
    event           TEXT NOT NULL,
    payload         TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_status     INTEGER,
    last_error      TEXT NOT NULL DEFAULT '',
    next_attempt_at BIGINT,
    delivered_at    BIGINT,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX notification_deliveries_due ON notification_deliveries (next_attempt_at)
    WHERE next_attempt_at IS NOT NULL;

ALTER TABLE notification_deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE notification_deliveries FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON notification_deliveries
    USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid);

GRANT SELECT, INSERT, UPDATE ON notification_deliveries TO strongroom_app;
