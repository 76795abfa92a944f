-- lockmigrate:phase contract
-- Contract, step 1: the rule for new rows, NOT VALID (a brief lock, no
-- scan). The trigger already guarantees it for every write.
ALTER TABLE users
    ADD CONSTRAINT users_email_new_not_null CHECK (email_new IS NOT NULL) NOT VALID;
