-- Expand, step 1: a nullable column without a default is a catalog-only
-- change. (A constant default is catalog-only too since PostgreSQL 11; a
-- volatile one rewrites the table under ACCESS EXCLUSIVE.)
-- Run with LOCKMIGRATE_LOCK_TIMEOUT (e.g. 2s) so that, should a long
-- transaction hold a lock on accounts, this ALTER gives up and retries
-- instead of queueing and blocking every query behind it.
ALTER TABLE accounts ADD COLUMN plan text;
