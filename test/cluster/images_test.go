package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/lockmigrate/lockmigrate/internal/bintest"
)

// imageRepo is the repository of the test images; their tags are the
// variants' names. Nothing is pulled: the chart runs them with
// image.pullPolicy Never.
const imageRepo = "localhost/lockmigrate-cluster"

// The migrations the variants add to (or edit in) the embedded set of
// migrations/, as a release of an application would.
const (
	// A new migration for the upgrade.
	addNote    = "0006_orders_note.sql"
	addNoteSQL = `ALTER TABLE orders ADD COLUMN note text NOT NULL DEFAULT '';

INSERT INTO schema_audit (version, note) VALUES (6, 'add orders.note');
`
	// A migration that fails half way: the CHECK constraint on
	// total_cents refuses the UPDATE after the ALTER succeeded, so the
	// rollback must take the column away again.
	failing    = "0007_orders_shipped_at.sql"
	failingSQL = `ALTER TABLE orders ADD COLUMN shipped_at timestamptz;

UPDATE orders SET total_cents = total_cents - 1000000;

INSERT INTO schema_audit (version, note) VALUES (7, 'add orders.shipped_at');
`
	// A slow migration: it records itself, then sleeps as long as the
	// test's gate table says (the test creates the table, sets 600 s for
	// the first run and 0 before the run that must finish).
	slow    = "0006_slow_backfill.sql"
	slowSQL = `INSERT INTO schema_audit (version, note) VALUES (6, 'slow backfill');

SELECT pg_sleep(coalesce((SELECT seconds FROM cluster_test_gate), 0));
`
	// An expand file and a contract file for one upgrade: the contract one
	// drops a column that only the previous version of the application
	// reads, so it must wait for the rollout.
	expandNickname    = "0006_users_nickname.sql"
	expandNicknameSQL = `ALTER TABLE users ADD COLUMN nickname text;

INSERT INTO schema_audit (version, note) VALUES (6, 'expand: add users.nickname');
`
	contractDrop    = "0007_drop_users_last_name.sql"
	contractDropSQL = `-- lockmigrate:phase contract
ALTER TABLE users DROP COLUMN last_name;

INSERT INTO schema_audit (version, note) VALUES (7, 'contract: drop users.last_name');
`
	// The first migration of the set, as the tampered variant edits it.
	tamperedFile = "0001_create_schema_audit.sql"
)

// variant is one image: the repository's binary with a migration set of its
// own embedded, as the Dockerfile's MIGRATIONS build argument makes it.
type variant struct {
	tag string
	// add are the migrations it adds to migrations/: name → content.
	add map[string]string
	// tamper are files of migrations/ it edits (a comment appended: the
	// checksum changes, the SQL does not).
	tamper []string
}

// variants are the images every test may use.
var variants = []variant{
	{tag: "v1"},
	{tag: "v2", add: map[string]string{addNote: addNoteSQL}},
	{tag: "tampered", add: map[string]string{addNote: addNoteSQL}, tamper: []string{tamperedFile}},
	{tag: "failing", add: map[string]string{addNote: addNoteSQL, failing: failingSQL}},
	{tag: "slow", add: map[string]string{slow: slowSQL}},
	{tag: "contract", add: map[string]string{expandNickname: expandNicknameSQL, contractDrop: contractDropSQL}},
}

// buildImages builds every variant's binary on the host (the Dockerfile's
// build command: CGO_ENABLED=0, -trimpath, -s -w) with the migration set
// swapped in through a go build overlay, puts it in an image laid out as
// the Dockerfile's final stage (scratch, /lockmigrate and its lint parser
// /lockmigrate-pgparse, built once for all variants, passwd/group, the CA
// bundle, USER 65532, ENTRYPOINT) and imports it into the cluster's
// containerd with `scripts/k8s-cluster.sh image`. scripts/image-test.sh
// checks that the Dockerfile's image carries exactly these binaries.
func buildImages(ctx context.Context) error {
	root, err := bintest.ModuleRoot()
	if err != nil {
		return err
	}
	helper, err := bintest.BuildParser(workDir)
	if err != nil {
		return err
	}
	for _, v := range variants {
		dir := filepath.Join(workDir, "image-"+v.tag)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := buildBinary(ctx, root, dir, v); err != nil {
			return err
		}
		if err := os.Link(helper, filepath.Join(dir, filepath.Base(helper))); err != nil {
			return err
		}
		if err := writeImageContext(dir); err != nil {
			return err
		}
		cmd := exec.CommandContext(ctx, "bash", clusterScript, "image", dir, imageRepo+":"+v.tag, env.dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("image %s: %w\n%s", v.tag, err, out)
		}
	}
	return nil
}

// buildBinary builds dir/lockmigrate for v.
func buildBinary(ctx context.Context, root, dir string, v variant) error {
	files := map[string]string{}
	for name, content := range v.add {
		files[name] = content
	}
	for _, name := range v.tamper {
		orig, err := os.ReadFile(filepath.Join(root, "migrations", name))
		if err != nil {
			return err
		}
		files[name] = string(orig) + "\n-- edited after it was applied\n"
	}
	replace := map[string]string{}
	for name, content := range files {
		src := filepath.Join(dir, "migration-"+name)
		if err := os.WriteFile(src, []byte(content), 0o644); err != nil {
			return err
		}
		replace[filepath.Join(root, "migrations", name)] = src
	}
	overlay, err := json.Marshal(map[string]any{"Replace": replace})
	if err != nil {
		return err
	}
	overlayFile := filepath.Join(dir, "overlay.json")
	if err := os.WriteFile(overlayFile, overlay, 0o644); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-overlay", overlayFile,
		"-ldflags", "-s -w -X main.version=cluster-test-"+v.tag, "-o", filepath.Join(dir, "lockmigrate"), ".")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build of variant %s: %w\n%s", v.tag, err, out.String())
	}
	return nil
}

// writeImageContext writes the final stage of the Dockerfile as a
// Containerfile, with the files it copies.
func writeImageContext(dir string) error {
	files := map[string]string{
		"passwd": "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
		"group":  "root:x:0:\nnonroot:x:65532:\n",
		"Containerfile": "FROM scratch\n" +
			"COPY passwd group /etc/\n" +
			"COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt\n" +
			"COPY lockmigrate lockmigrate-pgparse /\n" +
			"USER 65532:65532\n" +
			"ENTRYPOINT [\"/lockmigrate\"]\n",
	}
	ca, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt")
	if err != nil {
		return fmt.Errorf("CA bundle for the image (install ca-certificates): %w", err)
	}
	files["ca-certificates.crt"] = string(ca)
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}
