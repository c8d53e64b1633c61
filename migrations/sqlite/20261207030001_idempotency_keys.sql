-- Idempotent retries: one row per mutating call that carried a client's
-- request_id, keyed by (scope, caller, call, request id), kept until
-- expires_at (the retention window, 24 hours by default). The request is
-- never stored: fingerprint is an HMAC-SHA256 of it under a key derived
-- from the root key, so a database reader cannot test guesses of a value
-- it carried. response is the first call's encoded response (metadata
-- only), NULL while the call is in progress. scope_id is the caller's
-- tenant, or the nil UUID for a platform operator's call.
CREATE TABLE idempotency_keys (
    scope_id    BLOB NOT NULL,
    principal   TEXT NOT NULL,
    rpc         TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    fingerprint BLOB NOT NULL,
    claimed_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    response    BLOB,
    PRIMARY KEY (scope_id, principal, rpc, request_id)
) STRICT;

CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
