package lint

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/lockmigrate/lockmigrate/internal/lint/pgparse"
)

// sampleReport has findings of both severities, one on a line with
// multi-byte characters before it.
func sampleReport(t *testing.T) *Report {
	t.Helper()
	if !pgparse.Available() {
		t.Skip("built without cgo: no parser")
	}
	rep := lintOffline(t, []File{tx("SELECT 'é'; CREATE INDEX i ON accounts (plan);\nALTER TABLE accounts DROP COLUMN plan;")}, Options{})
	if rep.Count(SeverityError) != 1 || rep.Count(SeverityWarning) != 1 {
		t.Fatalf("sample findings: %q", findingKeys(rep))
	}
	return rep
}

// TestSARIFSchema validates the SARIF output against the SARIF 2.1.0
// schema (testdata/sarif-2.1.0-rtm.5.json, the OASIS 2.1.0 schema as
// shipped in @microsoft/jest-sarif, MIT) with santhosh-tekuri/jsonschema,
// a draft-04 capable validator.
func TestSARIFSchema(t *testing.T) {
	rep := sampleReport(t)
	var out bytes.Buffer
	if err := WriteSARIF(&out, rep, "test"); err != nil {
		t.Fatal(err)
	}
	schemaFile, err := os.Open("testdata/sarif-2.1.0-rtm.5.json")
	if err != nil {
		t.Fatal(err)
	}
	defer schemaFile.Close()
	doc, err := jsonschema.UnmarshalJSON(schemaFile)
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("sarif.json", doc); err != nil {
		t.Fatal(err)
	}
	schema, err := c.Compile("sarif.json")
	if err != nil {
		t.Fatal(err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(out.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if err := schema.Validate(inst); err != nil {
		t.Fatalf("SARIF output does not validate: %v\n%s", err, out.String())
	}
	// The schema must be able to fail: a result without a message.
	broken := strings.Replace(out.String(), `"message"`, `"massage"`, 1)
	inst, _ = jsonschema.UnmarshalJSON(strings.NewReader(broken))
	if err := schema.Validate(inst); err == nil {
		t.Fatal("a SARIF log with a misspelled result property validated")
	}
	var log struct {
		Runs []struct {
			Results []struct {
				RuleID    string `json:"ruleId"`
				Level     string `json:"level"`
				Locations []struct {
					PhysicalLocation struct {
						Region struct{ StartLine, StartColumn int } `json:"region"`
					} `json:"physicalLocation"`
				} `json:"locations"`
			} `json:"results"`
		} `json:"runs"`
	}
	if err := json.Unmarshal(out.Bytes(), &log); err != nil {
		t.Fatal(err)
	}
	r := log.Runs[0].Results[0]
	if r.RuleID != RuleIndexConcurrently || r.Level != "error" || r.Locations[0].PhysicalLocation.Region.StartLine != 1 ||
		r.Locations[0].PhysicalLocation.Region.StartColumn != 13 {
		t.Fatalf("first result %+v, want index-concurrently at 1:13 (code points)", r)
	}
}

// TestJSONShape pins the documented JSON shape (docs/lint.md).
func TestJSONShape(t *testing.T) {
	rep := sampleReport(t)
	var out bytes.Buffer
	if err := WriteJSON(&out, rep); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	f := got["findings"].([]any)[0].(map[string]any)
	for _, k := range []string{"file", "line", "column", "rule", "severity", "message", "fix", "example"} {
		if _, ok := f[k]; !ok {
			t.Errorf("finding lacks %q: %v", k, f)
		}
	}
	sum := got["summary"].(map[string]any)
	if sum["errors"] != 1.0 || sum["warnings"] != 1.0 || sum["files"] != 1.0 || sum["pg_version"] != float64(DefaultPGVersion) || sum["online"] != false {
		t.Errorf("summary %v", sum)
	}
	var text bytes.Buffer
	if err := WriteText(&text, rep); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "2_change.sql:1:13: error [index-concurrently] CREATE INDEX on accounts") ||
		!strings.Contains(text.String(), "fix: use CREATE INDEX CONCURRENTLY") || !strings.Contains(text.String(), "1 error(s), 1 warning(s)") {
		t.Errorf("text output:\n%s", text.String())
	}
}

// TestParserIdleUntilLint: linting is the only thing that parses.
func TestParserIdleUntilLint(t *testing.T) {
	before := pgparse.Parses()
	_, _ = LookupRule(RuleCluster)
	if pgparse.Parses() != before {
		t.Fatal("looking up a rule parsed")
	}
	if !pgparse.Available() {
		t.Skip("built without cgo: no parser")
	}
	if _, err := Lint(context.Background(), []File{tx("SELECT 1")}, Options{}); err != nil {
		t.Fatal(err)
	}
	if pgparse.Parses() != before+1 {
		t.Fatalf("Parses went from %d to %d, want one parse", before, pgparse.Parses())
	}
}
