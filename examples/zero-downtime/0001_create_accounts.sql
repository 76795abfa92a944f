-- A table with live traffic. The rest of this set changes it without ever
-- blocking its readers and writers for longer than a catalog update.
CREATE TABLE accounts (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email      text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO accounts (email)
SELECT 'user' || g || '@example.com' FROM generate_series(1, 5000) AS g;
