-- Reveal checks include the caller's identity binding. On SQLite the check
-- runs in the server's batch transaction (`States::violation`); the schema
-- needs no change. This migration keeps the two backends' histories alike.
SELECT 1;
