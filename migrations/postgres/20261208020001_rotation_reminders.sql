-- The rotation monitor's reminders: one row per (credential, reminder,
-- window), written in the same transaction as the reminder's notifier
-- delivery and audit events, so a restarted monitor, or another server's,
-- never sends the same reminder twice. `reminder` is `due_soon`, `overdue`
-- or `expired`; `window_at` is the date it is about (the rotation due date,
-- or the expiry), so a rotation opens a new window. `delivery_id` is the
-- notifier delivery enqueued with it (none without a notifier).
CREATE TABLE rotation_reminders (
    tenant_id     UUID NOT NULL,
    credential_id UUID NOT NULL,
    reminder      TEXT NOT NULL,
    window_at     BIGINT NOT NULL,
    delivery_id   UUID,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, credential_id, reminder, window_at),
    FOREIGN KEY (tenant_id, credential_id) REFERENCES credentials (tenant_id, id) ON DELETE CASCADE
);

ALTER TABLE rotation_reminders ENABLE ROW LEVEL SECURITY;
ALTER TABLE rotation_reminders FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON rotation_reminders
    USING (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('strongroom.tenant_id', true), '')::uuid);

GRANT SELECT, INSERT, DELETE ON rotation_reminders TO strongroom_app;
