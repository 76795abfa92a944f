-- Contract, step 2: check the existing rows. VALIDATE CONSTRAINT takes SHARE
-- UPDATE EXCLUSIVE, which lets reads and writes continue during the scan.
ALTER TABLE accounts VALIDATE CONSTRAINT accounts_plan_not_null;
