INSERT INTO image_test_widgets (id, name) VALUES (1, 'baked into the image');
