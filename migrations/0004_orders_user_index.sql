-- Orders are listed per user, newest first.
CREATE INDEX orders_user_id_created_at_idx ON orders (user_id, created_at DESC);

INSERT INTO schema_audit (version, note) VALUES (4, 'index orders by user');
