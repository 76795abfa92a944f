-- lockmigrate:no-transaction
-- Expand, step 2: backfill in batches, committing after each one, so no
-- transaction holds row locks on the whole table or bloats it in one go.
-- COMMIT inside DO is allowed because this file runs outside a transaction.
DO $$
DECLARE
    batch int;
BEGIN
    LOOP
        UPDATE accounts SET plan = 'free'
         WHERE id IN (SELECT id FROM accounts WHERE plan IS NULL
                      ORDER BY id LIMIT 1000 FOR UPDATE SKIP LOCKED);
        GET DIAGNOSTICS batch = ROW_COUNT;
        EXIT WHEN batch = 0;
        COMMIT; -- one batch; readers and writers proceed in between
    END LOOP;
END
$$;
