-- lockmigrate:no-transaction
-- CREATE INDEX CONCURRENTLY cannot run in a transaction block; this file
-- runs statement by statement. Semicolons in comments; or strings ';' are
-- not statement ends, and neither are those in dollar-quoted bodies.
CREATE INDEX CONCURRENTLY IF NOT EXISTS accounts_plan_idx ON accounts (plan);

/* A helper the application calls; its body has semicolons; it is one
   statement. /* Block comments nest. */ Still a comment; */
CREATE OR REPLACE FUNCTION accounts_on_plan(p text) RETURNS bigint
LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    n bigint;
BEGIN
    SELECT count(*) INTO n FROM accounts WHERE plan = p;
    RETURN n;
END;
$fn$;
