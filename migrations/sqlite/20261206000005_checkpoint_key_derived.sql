-- The checkpoint signing key is derived from the root key and no longer
-- stored: drop the wrapped key an earlier version kept here. Nothing reads
-- the row any more, so a row written by an older server is harmless.
DELETE FROM server_meta WHERE key = 'checkpoint_signing_key';
