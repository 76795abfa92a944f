-- scripts/image-test.sh: two files with version 1. The image build must fail
-- at its `lockmigrate validate` step (duplicate_version).
SELECT 1;
