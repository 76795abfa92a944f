-- Contract, step 1: declare the rule for new rows only. NOT VALID takes a
-- brief lock and skips the scan of existing rows.
ALTER TABLE accounts
    ADD CONSTRAINT accounts_plan_not_null CHECK (plan IS NOT NULL) NOT VALID;
