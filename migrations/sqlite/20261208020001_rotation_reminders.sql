-- The rotation monitor's reminders: one row per (credential, reminder,
-- window), written in the same transaction as the reminder's notifier
-- delivery and audit events, so a restarted monitor never sends the same
-- reminder twice. `window_at` is the date it is about (the rotation due
-- date, or the expiry), so a rotation opens a new window.
CREATE TABLE rotation_reminders (
    tenant_id     BLOB NOT NULL,
    credential_id BLOB NOT NULL,
    reminder      TEXT NOT NULL,
    window_at     INTEGER NOT NULL,
    delivery_id   BLOB,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, credential_id, reminder, window_at),
    FOREIGN KEY (tenant_id, credential_id) REFERENCES credentials (tenant_id, id) ON DELETE CASCADE
) STRICT;
