-- A custom migration set for scripts/image-test.sh: the image built with
-- --build-arg MIGRATIONS=scripts/image/testdata/custom must embed these two
-- files and none of the example set in migrations/.
CREATE TABLE image_test_widgets (
    id   integer PRIMARY KEY,
    name text    NOT NULL
);
