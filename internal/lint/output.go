package lint

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
)

// WriteText writes one line per finding, then its fix, then a summary.
func WriteText(w io.Writer, rep *Report) error {
	var b strings.Builder
	for _, f := range rep.Findings {
		fmt.Fprintf(&b, "%s\n    fix: %s", f, f.Fix)
		if f.Example != "" {
			fmt.Fprintf(&b, " (see %s)", f.Example)
		}
		b.WriteString("\n")
	}
	mode := "offline"
	if rep.Online {
		mode = "against the database"
	}
	fmt.Fprintf(&b, "%d error(s), %d warning(s) in %d file(s), %d statement(s) (PostgreSQL %d, %s)\n",
		rep.Count(SeverityError), rep.Count(SeverityWarning), rep.Files, rep.Statements, rep.PGVersion, mode)
	_, err := io.WriteString(w, b.String())
	return err
}

// JSONReport is the shape of `lockmigrate lint --format json`
// (docs/lint.md documents it).
type JSONReport struct {
	Findings []Finding  `json:"findings"`
	Summary  JSONCounts `json:"summary"`
}

// JSONCounts is the summary of a JSON report.
type JSONCounts struct {
	Errors     int  `json:"errors"`
	Warnings   int  `json:"warnings"`
	Files      int  `json:"files"`
	Statements int  `json:"statements"`
	PGVersion  int  `json:"pg_version"`
	Online     bool `json:"online"`
}

// WriteJSON writes the report as one JSON document.
func WriteJSON(w io.Writer, rep *Report) error {
	out := JSONReport{Findings: rep.Findings, Summary: JSONCounts{Errors: rep.Count(SeverityError),
		Warnings: rep.Count(SeverityWarning), Files: rep.Files, Statements: rep.Statements, PGVersion: rep.PGVersion, Online: rep.Online}}
	if out.Findings == nil {
		out.Findings = []Finding{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// SARIF 2.1.0, the subset GitHub code scanning reads.
type (
	sarifLog struct {
		Schema  string     `json:"$schema"`
		Version string     `json:"version"`
		Runs    []sarifRun `json:"runs"`
	}
	sarifRun struct {
		Tool       sarifTool     `json:"tool"`
		Results    []sarifResult `json:"results"`
		ColumnKind string        `json:"columnKind"`
	}
	sarifTool struct {
		Driver sarifDriver `json:"driver"`
	}
	sarifDriver struct {
		Name           string      `json:"name"`
		Version        string      `json:"version,omitempty"`
		InformationURI string      `json:"informationUri"`
		Rules          []sarifRule `json:"rules"`
	}
	sarifRule struct {
		ID                   string       `json:"id"`
		ShortDescription     sarifMessage `json:"shortDescription"`
		Help                 sarifMessage `json:"help"`
		HelpURI              string       `json:"helpUri"`
		DefaultConfiguration struct {
			Level string `json:"level"`
		} `json:"defaultConfiguration"`
	}
	sarifMessage struct {
		Text string `json:"text"`
	}
	sarifResult struct {
		RuleID    string          `json:"ruleId"`
		RuleIndex int             `json:"ruleIndex"`
		Level     string          `json:"level"`
		Message   sarifMessage    `json:"message"`
		Locations []sarifLocation `json:"locations"`
	}
	sarifLocation struct {
		PhysicalLocation struct {
			ArtifactLocation struct {
				URI string `json:"uri"`
			} `json:"artifactLocation"`
			Region struct {
				StartLine   int `json:"startLine"`
				StartColumn int `json:"startColumn"`
			} `json:"region"`
		} `json:"physicalLocation"`
	}
)

// docsURL is where every rule is explained.
const docsURL = "https://github.com/lockmigrate/lockmigrate/blob/main/docs/lint.md"

// WriteSARIF writes the report as a SARIF 2.1.0 log, with every rule in
// the driver (so a viewer can show the help of rules that found nothing)
// and columns counted in Unicode code points. version is lockmigrate's.
func WriteSARIF(w io.Writer, rep *Report, version string) error {
	run := sarifRun{ColumnKind: "unicodeCodePoints", Results: []sarifResult{},
		Tool: sarifTool{Driver: sarifDriver{Name: "lockmigrate", Version: version, InformationURI: docsURL}}}
	for _, r := range Rules {
		sr := sarifRule{ID: r.ID, ShortDescription: sarifMessage{r.Summary}, HelpURI: docsURL + "#" + r.ID,
			Help: sarifMessage{r.Fix + exampleSuffix(r.Example)}}
		sr.DefaultConfiguration.Level = sarifLevel(r.Severity)
		run.Tool.Driver.Rules = append(run.Tool.Driver.Rules, sr)
	}
	for _, f := range rep.Findings {
		res := sarifResult{RuleID: f.Rule, Level: sarifLevel(f.Severity),
			RuleIndex: slices.IndexFunc(Rules, func(r Rule) bool { return r.ID == f.Rule }),
			Message:   sarifMessage{f.Message + ". Fix: " + f.Fix + exampleSuffix(f.Example)}}
		var loc sarifLocation
		loc.PhysicalLocation.ArtifactLocation.URI = f.File
		loc.PhysicalLocation.Region.StartLine, loc.PhysicalLocation.Region.StartColumn = f.Line, f.Column
		res.Locations = []sarifLocation{loc}
		run.Results = append(run.Results, res)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(sarifLog{Schema: "https://json.schemastore.org/sarif-2.1.0.json", Version: "2.1.0", Runs: []sarifRun{run}})
}

func sarifLevel(s Severity) string {
	if s == SeverityError {
		return "error"
	}
	return "warning"
}

func exampleSuffix(ex string) string {
	if ex == "" {
		return ""
	}
	return " (see " + ex + ")"
}
