CREATE TABLE users (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email      text        NOT NULL,
    first_name text        NOT NULL DEFAULT '',
    last_name  text        NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX users_email_key ON users (lower(email));

INSERT INTO users (email, first_name, last_name) VALUES
    ('ada@example.com', 'Ada', 'Lovelace'),
    ('grace@example.com', 'Grace', 'Hopper'),
    ('edsger@example.com', 'Edsger', 'Dijkstra');

INSERT INTO schema_audit (version, note) VALUES (2, 'create users');
