-- The webhook notifier's delivery log: one row per notice to send (a new
-- access request now, rotation reminders later), written in the same
-- transaction as what it notifies about, then updated by the sender with
-- each attempt. `payload` is the notice's data as JSON (never a value);
-- `last_error` never echoes the receiver's body. `next_attempt_at` is NULL
-- once the delivery succeeded or gave up.
CREATE TABLE notification_deliveries (
    tenant_id       BLOB NOT NULL REFERENCES tenants (id),
    id              BLOB NOT NULL,
    event           TEXT NOT NULL,
    payload         TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_status     INTEGER,
    last_error      TEXT NOT NULL DEFAULT '',
    next_attempt_at INTEGER,
    delivered_at    INTEGER,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, id)
) STRICT;

CREATE INDEX notification_deliveries_due ON notification_deliveries (next_attempt_at)
    WHERE next_attempt_at IS NOT NULL;
