-- lockmigrate:phase contract
-- Contract, step 3, once no pod of the old version is left (the contract
-- Job waited for the rollout): in one short transaction, the normalised
-- column takes the old one's place. SET NOT NULL skips its scan because
-- the validated check proves it (PostgreSQL 12+). The application of this
-- release reads and writes "email" only, so it works before this step (the
-- old column, with email_new kept in step by the trigger) and after it (the
-- normalised column under the same name).
DROP TRIGGER users_email_new_sync ON users;
DROP FUNCTION users_email_new_sync();
ALTER TABLE users ALTER COLUMN email_new SET NOT NULL;
ALTER TABLE users DROP CONSTRAINT users_email_new_not_null;
ALTER TABLE users DROP COLUMN email;
ALTER TABLE users RENAME COLUMN email_new TO email;
