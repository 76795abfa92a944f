-- lockmigrate:phase contract
-- Contract, step 2: check the existing rows under SHARE UPDATE EXCLUSIVE,
-- which lets reads and writes continue during the scan. Fails (exit 1) if
-- the backfill missed a row.
ALTER TABLE users VALIDATE CONSTRAINT users_email_new_not_null;
