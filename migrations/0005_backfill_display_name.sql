-- Expand: add the column, backfill it, then make it required. Small tables
-- only: a large table would backfill in batches from the application.
ALTER TABLE users ADD COLUMN display_name text;

UPDATE users
   SET display_name = trim(first_name || ' ' || last_name)
 WHERE display_name IS NULL;

ALTER TABLE users ALTER COLUMN display_name SET NOT NULL;

INSERT INTO schema_audit (version, note) VALUES (5, 'backfill users.display_name');
