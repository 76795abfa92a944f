-- lockmigrate:phase contract
-- lockmigrate:backfill sleep=50ms max_batches=1000
-- Backfill (the contract Job, after the rollout): the rows written before
-- the trigger existed, 1000 per batch, each batch its own transaction (row
-- locks held for one batch only, readers and writers go on in between), a
-- pause between batches. It runs until a batch changes no row: the
-- predicate excludes what earlier batches did, so a batch repeated after an
-- interruption is harmless and the next run simply continues. In the
-- contract phase, because a long backfill in the pre-upgrade Job would hold
-- the migration lock while pods start; here no init container waits for
-- it (they run the expand phase, which ignores contract files).
UPDATE users SET email_new = lower(email)
 WHERE id IN (SELECT id FROM users WHERE email_new IS NULL ORDER BY id LIMIT 1000);
