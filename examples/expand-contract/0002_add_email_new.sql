-- Expand (the pre-upgrade Job and the init containers, before any new pod
-- serves traffic): the new column, nullable, so adding it is a catalog-only
-- change, and a trigger that fills it from email on every write. Pods of
-- both versions run during the rollout; the trigger keeps email_new right
-- for the rows any of them writes, so the application itself never names
-- email_new (the contract step renames it away).
-- Run with LOCKMIGRATE_LOCK_TIMEOUT (e.g. 2s): ALTER TABLE and CREATE
-- TRIGGER take brief locks that must not queue behind a long transaction.
ALTER TABLE users ADD COLUMN email_new text;

CREATE FUNCTION users_email_new_sync() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.email_new := lower(NEW.email);
    RETURN NEW;
END
$$;

CREATE TRIGGER users_email_new_sync
    BEFORE INSERT OR UPDATE OF email ON users
    FOR EACH ROW EXECUTE FUNCTION users_email_new_sync();
