-- Contract, step 3: SET NOT NULL normally scans the table under ACCESS
-- EXCLUSIVE; since PostgreSQL 12 it skips the scan when a validated CHECK
-- (plan IS NOT NULL) constraint already proves it. Then the check can go.
ALTER TABLE accounts ALTER COLUMN plan SET NOT NULL;
ALTER TABLE accounts DROP CONSTRAINT accounts_plan_not_null;
