-- The starting point: users.email holds addresses as they were typed,
-- mixed case. The change this set walks through: a normalised (lower-case)
-- email column, NOT NULL, under the same name, without stopping the
-- application. The steps are spread over one `helm upgrade`; see
-- docs/zero-downtime.md, "Expand and contract across a rollout".
CREATE TABLE users (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email      text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO users (email)
SELECT 'User' || g || '@Example.COM' FROM generate_series(1, 20000) AS g;
