package main

import "regexp"

const lm = "github.com/lockmigrate/lockmigrate/"

// Milestone starts a phase of the no-op: from the first entry of Enter to
// the first entry of the next milestone that runs, every instruction of
// every thread is the phase's. A milestone whose function never ran shows
// as "phase not found", so a renamed function cannot pass for a free phase.
type Milestone struct {
	Name  string // the row in the table
	Enter string // the function, as callgrind names it
}

// milestones follow the no-op (internal/cli: runMigrate, setup, migrate,
// finish). Each is a function callgrind sees entered: some small ones
// (cli.(*app).connectEarly, cli.(*app).migrate, slog.(*Logger).LogAttrs)
// never trigger a dump, so they cannot serve. The early connection runs in
// its own goroutine while the files load, in an order the scheduler
// decides: one phase holds both (the self-cost groups tell them apart).
var milestones = []Milestone{
	{"CLI start: signal handler, redactor, run id, first logger", "main.main"},
	{"configuration: config.Load", lm + "internal/config.Load"},
	{"options: pgx configuration, lock key, pusher; the early connection's goroutine starts", lm + "internal/cli.newOptions"},
	{"loading the migration files (hashing included), \"run started\" log, and the early connection (dial, start-up) concurrently", lm + "runner.LoadFormat"},
	{"runner set-up", lm + "runner.New"},
	{"fast path: brief history query and comparison (runner.(*Runner).Migrate)", lm + "runner.(*Runner).Migrate"},
	{"report: metrics push (when configured), \"run finished\" log, exit", lm + "internal/cli.(*app).singleReport"},
}

// Group gathers functions by what they are for; a function's self cost
// goes to the first group whose pattern matches "FILE FUNCTION".
type Group struct {
	Name    string
	Pattern *regexp.Regexp
}

func group(name, pattern string) Group { return Group{name, regexp.MustCompile(pattern)} }

// groups split the instructions from main.main on by the code that
// executed them (self cost: a runtime function's instructions are the
// runtime's, whoever called it).
var groups = []Group{
	group("hashing (crypto/sha256)", ` crypto/(internal/fips140/)?sha256\.`),
	group("loading the files (runner load functions, format, dirfs, io/fs)",
		` `+lm+`(runner\.(LoadFormat|Load|loadFile|parseFileName|splitFileName|readSection|checkMixed|\(\*Migration\)\.parseDirective)|runner/internal/format\.|internal/dirfs\.)| (io/fs|embed|path/filepath|internal/filepathlite)\.`),
	group("configuration (internal/config, caarlos0/env)", ` (`+lm+`internal/config|github\.com/caarlos0/env/v[0-9]+)\.`),
	group("database (pgx, dbconn, lock, net)", ` (github\.com/jackc/|`+lm+`(internal/dbconn|lock)\.|net\.|net/netip\.|internal/poll\.)`),
	group("fast path and the rest of the runner", ` `+lm+`runner\.`),
	group("logging (log/slog, redactor, log gate)", ` (log/slog\.|`+lm+`internal/cli\.(\(\*)?(redactor|gatedHandler|logGate)|encoding/json\.)`),
	group("metrics (internal/metrics, client_golang)", ` (`+lm+`internal/metrics|github\.com/prometheus/)`),
	group("CLI and other lockmigrate code", ` (`+lm+`|main\.|github\.com/google/uuid\.)`),
	group("runtime: memory allocation and GC", `^\./runtime/(malloc|mgc[a-z]*|mheap|mcache|mcentral|mbitmap|mbarrier|mspanset|mpagealloc|mpagecache|mfixalloc|mranges|msize|mstats|mwbbuf|mfinal|mcleanup|stack|slice|string|arena|iface|memclr_[a-z0-9]*|memmove_[a-z0-9]*)\.(go|s) `),
	group("runtime: maps and hashing of keys", `^\./internal/runtime/maps/| runtime\.(map|mapaccess|mapassign|mapdelete|strhash|memhash|interhash|typehash|nilinterhash)|^\./runtime/(alg|map[a-z_]*)\.go | aeshashbody`),
	group("runtime: scheduler, timers, system calls", `^\./runtime/(proc|lock_[a-z]+|os_linux[a-z_]*|sys_linux_amd64|netpoll[a-z_]*|time|chan|select|sema|signal_unix|sigqueue|preempt|runtime2?|tracestatus|cgocall|mgclimit)\.(go|s) | (syscall|internal/runtime/syscall[a-z/]*|internal/runtime/atomic)\.`),
	group("runtime: other (start-up, symbol tables, type data)", `^\./runtime/| runtime\.|^\./internal/runtime/`),
	group("reflection (reflect, reflectlite, internal/abi)", ` (reflect|internal/reflectlite|internal/abi)\.`),
	group("other standard library (strings, strconv, errors, fmt, time, context, sync …)", ``),
}
