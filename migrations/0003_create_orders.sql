CREATE TYPE order_status AS ENUM ('pending', 'paid', 'shipped', 'cancelled');

CREATE TABLE orders (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     bigint       NOT NULL REFERENCES users (id),
    status      order_status NOT NULL DEFAULT 'pending',
    total_cents bigint       NOT NULL CHECK (total_cents >= 0),
    created_at  timestamptz  NOT NULL DEFAULT now()
);

INSERT INTO orders (user_id, status, total_cents)
SELECT u.id, 'paid', 1000 * u.id FROM users u;

INSERT INTO schema_audit (version, note) VALUES (3, 'create orders');
