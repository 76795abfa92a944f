package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name, in string
		total    int64
		self     map[string]int64
		file     map[string]string
	}{
		{"compressed names, a call's cost skipped", `positions: line
events: Ir
summary: 12
fl=(1) ./a.go
fn=(1) a.F
1 5
cfn=(2) b.G
calls=3 7
2 100
fl=(2) ./b.go
fn=(2)
7 7
`, 12, map[string]int64{"a.F": 5, "b.G": 7}, map[string]string{"a.F": "./a.go", "b.G": "./b.go"}},
		{"instr and line positions, relative positions, two events", `positions: instr line
events: Ir Dr
totals: 9 4
fl=(1) x.go
fn=(1) x.F
0x10 3 4 2
+2 +1 5 2
* * 0
`, 9, map[string]int64{"x.F": 9}, nil},
		{"recursion levels merged, plain names", `summary: 6
fl=./r.go
fn=r.F'2
1 2
fn=r.F'3
1 1
fn=r.F
1 3
`, 6, map[string]int64{"r.F": 6}, map[string]string{"r.F": "./r.go"}},
		{"function and file ids are separate", `summary: 3
fl=(1) ./one.go
fn=(1) one.F
1 1
fl=(2) ./two.go
fn=(2) two.G
1 2
`, 3, map[string]int64{"one.F": 1, "two.G": 2}, map[string]string{"one.F": "./one.go", "two.G": "./two.go"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse(strings.NewReader(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if p.Total != tt.total || p.SelfSum() != tt.total {
				t.Errorf("total %d, self sum %d; want %d", p.Total, p.SelfSum(), tt.total)
			}
			if len(p.Self) != len(tt.self) {
				t.Errorf("self = %v, want %v", p.Self, tt.self)
			}
			for f, c := range tt.self {
				if p.Self[f] != c {
					t.Errorf("self[%s] = %d, want %d", f, p.Self[f], c)
				}
			}
			for f, file := range tt.file {
				if p.File[f] != file {
					t.Errorf("file[%s] = %q, want %q", f, p.File[f], file)
				}
			}
		})
	}
}

func TestParseBadCost(t *testing.T) {
	if _, err := Parse(strings.NewReader("fn=a.F\n1 x\n")); err == nil {
		t.Fatal("a cost that is not a number parsed")
	}
}

func TestPkgInit(t *testing.T) {
	tests := []struct{ fn, pkg string }{
		{"fmt.init", "fmt"},
		{"runtime.init.5", "runtime"},
		{"github.com/prometheus/procfs.init", "github.com/prometheus/procfs"},
		{"net/http.map.init.0", "net/http"},
		{"fmt.init.func1", ""},              // a package-level func literal
		{"runtime.(*mspan).init", ""},       // a method
		{"syscall.init.OnceFunc.func3", ""}, // a closure
		{"main.main", ""},
	}
	for _, tt := range tests {
		got := ""
		if m := pkgInit.FindStringSubmatch(tt.fn); m != nil {
			got = m[1]
		}
		if got != tt.pkg {
			t.Errorf("%s: package %q, want %q", tt.fn, got, tt.pkg)
		}
	}
}

func fixture(t *testing.T) []string {
	t.Helper()
	paths, err := filepath.Glob("testdata/run/callgrind.out*")
	if err != nil || len(paths) != 7 {
		t.Fatalf("fixture: %v, %d files", err, len(paths))
	}
	return paths
}

func TestLoad(t *testing.T) {
	r, err := Load(fixture(t))
	if err != nil {
		t.Fatal(err)
	}
	if r.Total != 275 {
		t.Errorf("total %d, want 275", r.Total)
	}
	cfg := milestones[1].Name
	want := map[string]int64{phaseStart: 120, phaseInit: 87, milestones[0].Name: 5, cfg: 63}
	for phase, n := range want {
		if r.Phases[phase] != n {
			t.Errorf("%s: %d, want %d", phase, r.Phases[phase], n)
		}
	}
	var sum int64
	for _, n := range r.Phases {
		sum += n
	}
	if sum != r.Total {
		t.Errorf("phases add up to %d, the total is %d", sum, r.Total)
	}
	if r.Inits["runtime"] != 30 || r.Inits["fmt"] != 57 || len(r.Inits) != 2 {
		t.Errorf("inits %v, want runtime 30, fmt 57", r.Inits)
	}
	if got := strings.Join(r.Order, " | "); got != strings.Join([]string{phaseStart, phaseInit, milestones[0].Name, cfg}, " | ") {
		t.Errorf("order: %s", got)
	}
	if len(r.Main) != 4 {
		t.Errorf("main: %v, want main.main, config.Load, sha256.block, mallocgc", r.Main)
	}
}

func TestLoadRejectsAnInconsistentPart(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "callgrind.out")
	if err := os.WriteFile(path, []byte("summary: 10\nfn=a.F\n1 9\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load([]string{path}); err == nil || !strings.Contains(err.Error(), "add up to 9") {
		t.Fatalf("err = %v, want the mismatch", err)
	}
}

func TestWrite(t *testing.T) {
	r, err := Load(fixture(t))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := Write(&b, []*Run{r}, 10); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"| " + phaseStart + " | 120 | 43.6 % | – |",
		"| &nbsp;&nbsp;fmt | 57 | 20.7 % | – |",
		"| " + milestones[1].Name + " | 63 | 22.9 % | – |",
		"| " + milestones[len(milestones)-1].Name + " | phase not found | – | – |",
		"| **total** | 275 | 100.0 % | – |",
		"| hashing (crypto/sha256) | 9 |",
		"| configuration (internal/config, caarlos0/env) | 43 |",
		"| runtime: memory allocation and GC | 11 |",
		"| CLI and other lockmigrate code | 5 |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestGroups(t *testing.T) {
	tests := []struct{ fn, group string }{
		{"./crypto/internal/fips140/sha256/sha256block_amd64.s crypto/internal/fips140/sha256.blockAVX2.abi0", "hashing (crypto/sha256)"},
		{"./github.com/lockmigrate/lockmigrate/runner/migration.go github.com/lockmigrate/lockmigrate/runner.loadFile", "loading the files (runner load functions, format, dirfs, io/fs)"},
		{"./github.com/lockmigrate/lockmigrate/runner/fastpath.go github.com/lockmigrate/lockmigrate/runner.makePlan", "fast path and the rest of the runner"},
		{"./github.com/jackc/pgx/v5@v5.12.0/pgtype/pgtype.go github.com/jackc/pgx/v5/pgtype.(*Map).RegisterType", "database (pgx, dbconn, lock, net)"},
		{"./log/slog/json_handler.go log/slog.appendEscapedJSONString", "logging (log/slog, redactor, log gate)"},
		{"./github.com/lockmigrate/lockmigrate/internal/cli/redact.go github.com/lockmigrate/lockmigrate/internal/cli.(*redactor).Write", "logging (log/slog, redactor, log gate)"},
		{"./runtime/malloc.go runtime.mallocgcSmallScanNoHeader", "runtime: memory allocation and GC"},
		{"./internal/runtime/maps/table.go internal/runtime/maps.(*table).grow", "runtime: maps and hashing of keys"},
		{"./runtime/proc.go runtime.schedule", "runtime: scheduler, timers, system calls"},
		{"./runtime/symtab.go runtime.pcvalue", "runtime: other (start-up, symbol tables, type data)"},
		{"./reflect/type.go reflect.StructTag.Lookup", "reflection (reflect, reflectlite, internal/abi)"},
		{"./strings/strings.go strings.ToLower", "other standard library (strings, strconv, errors, fmt, time, context, sync …)"},
	}
	for _, tt := range tests {
		got := ""
		for _, g := range groups {
			if g.Pattern.MatchString(tt.fn) {
				got = g.Name
				break
			}
		}
		if got != tt.group {
			t.Errorf("%s: group %q, want %q", tt.fn, got, tt.group)
		}
	}
}

func TestDumpArgsNameEveryMilestone(t *testing.T) {
	args := strings.Join(DumpArgs(), "\n")
	for _, m := range milestones {
		if !strings.Contains(args, "--dump-before="+m.Enter+"\n") && !strings.HasSuffix(args, "--dump-before="+m.Enter) {
			t.Errorf("no dump before %s", m.Enter)
		}
	}
}

func TestWriteMedianAndRange(t *testing.T) {
	run := func(start int64) *Run {
		return &Run{Total: start + 10, Order: []string{phaseStart}, Phases: map[string]int64{phaseStart: start, "x": 10},
			Inits: map[string]int64{}, Main: map[string]int64{}}
	}
	var b strings.Builder
	if err := Write(&b, []*Run{run(100), run(90), run(130)}, 10); err != nil {
		t.Fatal(err)
	}
	if want := "| " + phaseStart + " | 100 | 90.9 % | 90–130 |"; !strings.Contains(b.String(), want) {
		t.Errorf("output lacks %q:\n%s", want, b.String())
	}
}
