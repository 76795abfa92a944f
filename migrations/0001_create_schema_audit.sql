-- An append-only log of schema changes. Every migration of this example set
-- adds one row, and the table has no unique constraint on purpose: a
-- migration applied twice would show up as two rows for one version.
CREATE TABLE schema_audit (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version    bigint      NOT NULL,
    note       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    backend    integer     NOT NULL DEFAULT pg_backend_pid()
);

INSERT INTO schema_audit (version, note) VALUES (1, 'create schema_audit');
