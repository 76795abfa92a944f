// Package config reads lockmigrate's configuration from environment
// variables. Every variable is declared once, in Config's struct tags, which
// also feed --help; so the documentation cannot drift from the parser.
package config

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/lockmigrate/lockmigrate/internal/dbconn"
	"github.com/lockmigrate/lockmigrate/internal/fleet"
	"github.com/lockmigrate/lockmigrate/internal/lint"
	"github.com/lockmigrate/lockmigrate/internal/rollout"
	"github.com/lockmigrate/lockmigrate/runner"
)

// Config is the whole configuration. Tags: env (variable), envDefault,
// oneof (accepted values), help (one line for --help).
type Config struct {
	DatabaseURL     string `env:"DATABASE_URL" help:"libpq URL or keyword/value DSN; empty: the libpq PG* variables (PGHOST, PGUSER, PGPASSWORD, PGPASSFILE, PGSSLMODE, ...)"`
	DatabaseURLFile string `env:"DATABASE_URL_FILE" help:"file holding the URL (a mounted Secret); conflicts with DATABASE_URL"`

	OnLocked       string        `env:"LOCKMIGRATE_ON_LOCKED" envDefault:"skip" oneof:"skip,wait" help:"when another replica holds the lock: skip (exit 0 at once) or wait until the schema is current"`
	WaitTimeout    time.Duration `env:"LOCKMIGRATE_WAIT_TIMEOUT" help:"longest wait for the lock in wait mode (exit 4 after it)"`
	ConnectTimeout time.Duration `env:"LOCKMIGRATE_CONNECT_TIMEOUT" envDefault:"60s" help:"total budget for connecting, retries included (exit 3 after it)"`
	LockKey        string        `env:"LOCKMIGRATE_LOCK_KEY" help:"advisory lock key: an int64, or any string (hashed); default derived from schema and table"`
	Schema         string        `env:"LOCKMIGRATE_SCHEMA" envDefault:"public" help:"schema of the history table (created if missing)"`
	Table          string        `env:"LOCKMIGRATE_TABLE" envDefault:"lockmigrate_history" help:"history table name"`
	Dir            string        `env:"LOCKMIGRATE_DIR" help:"read migrations from this directory instead of the embedded set"`
	Format         string        `env:"LOCKMIGRATE_FORMAT" envDefault:"auto" oneof:"auto,lockmigrate,goose,dbmate,tern,golang-migrate" help:"migration file format: auto (each file as its markers show; a set mixing tools is refused) or one forced for every file; only the up section of goose, dbmate and tern files runs"`

	Transaction      string        `env:"LOCKMIGRATE_TRANSACTION" envDefault:"each" oneof:"each,all" help:"each: one transaction per migration; all: every pending migration in one transaction"`
	LockTimeout      time.Duration `env:"LOCKMIGRATE_LOCK_TIMEOUT" envDefault:"0" help:"lock_timeout for migration statements (0 = off); on 55P03 the transaction is rolled back and retried"`
	LockRetries      int           `env:"LOCKMIGRATE_LOCK_RETRIES" envDefault:"3" help:"retries after a lock_timeout (55P03)"`
	StatementTimeout time.Duration `env:"LOCKMIGRATE_STATEMENT_TIMEOUT" envDefault:"0" help:"statement_timeout for migration statements (0 = off)"`
	AllowOutOfOrder  bool          `env:"LOCKMIGRATE_ALLOW_OUT_OF_ORDER" envDefault:"false" help:"apply a pending migration older than the newest applied one"`
	BaselineVersion  int64         `env:"LOCKMIGRATE_BASELINE_VERSION" envDefault:"0" help:"0 = off; when the history is empty, record every migration up to this version as applied (state baseline) without running it, then apply the newer ones; ignored once the history has rows"`

	Lint               string `env:"LOCKMIGRATE_LINT" envDefault:"warn" oneof:"off,warn,error" help:"lint the pending files before applying them (the lock holder only): off; warn: log each finding; error: refuse with exit 5, nothing applied, when a finding is at error"`
	LintSmallTableRows int64  `env:"LOCKMIGRATE_LINT_SMALL_TABLE_ROWS" help:"online lint: a size-dependent finding on a table estimated (pg_class.reltuples) under this many rows is a warning"`
	LintPGVersion      int    `env:"LOCKMIGRATE_LINT_PG_VERSION" help:"server major version an offline lint assumes (online: the server's own)"`
	LintEnable         string `env:"LOCKMIGRATE_LINT_ENABLE" help:"comma-separated rules that are off by default to turn on (style: every style rule)"`
	LintDisable        string `env:"LOCKMIGRATE_LINT_DISABLE" help:"comma-separated rules to turn off"`

	TCPKeepalivesIdle     time.Duration `env:"LOCKMIGRATE_TCP_KEEPALIVES_IDLE" envDefault:"10s" help:"silence before the first TCP keepalive probe, both ends (server: tcp_keepalives_idle); 0 = system defaults"`
	TCPKeepalivesInterval time.Duration `env:"LOCKMIGRATE_TCP_KEEPALIVES_INTERVAL" envDefault:"5s" help:"interval between keepalive probes (tcp_keepalives_interval)"`
	TCPKeepalivesCount    int           `env:"LOCKMIGRATE_TCP_KEEPALIVES_COUNT" envDefault:"3" help:"unanswered probes before the connection is dropped (tcp_keepalives_count)"`
	TCPUserTimeout        time.Duration `env:"LOCKMIGRATE_TCP_USER_TIMEOUT" envDefault:"20s" help:"unacknowledged data older than this drops the connection (tcp_user_timeout)"`

	PushgatewayURL          string        `env:"LOCKMIGRATE_PUSHGATEWAY_URL" help:"Pushgateway base URL (http:// or https://); empty: no metrics push"`
	PushgatewayJob          string        `env:"LOCKMIGRATE_PUSHGATEWAY_JOB" envDefault:"lockmigrate" help:"job label of the pushed group"`
	PushgatewayTimeout      time.Duration `env:"LOCKMIGRATE_PUSHGATEWAY_TIMEOUT" envDefault:"5s" help:"deadline for the push; a failed push is logged, never changes the exit code"`
	PushgatewayUsername     string        `env:"LOCKMIGRATE_PUSHGATEWAY_USERNAME" help:"basic auth user for the Pushgateway"`
	PushgatewayPassword     string        `env:"LOCKMIGRATE_PUSHGATEWAY_PASSWORD" help:"basic auth password for the Pushgateway"`
	PushgatewayPasswordFile string        `env:"LOCKMIGRATE_PUSHGATEWAY_PASSWORD_FILE" help:"file holding the basic auth password; conflicts with _PASSWORD"`
	PushgatewayGrouping     string        `env:"LOCKMIGRATE_PUSHGATEWAY_GROUPING" help:"extra grouping labels, k=v,k=v (never a pod name: the Pushgateway keeps every group forever)"`
	// Grouping is PushgatewayGrouping parsed.
	Grouping map[string]string `env:"-"`

	TenantsQuery       string `env:"LOCKMIGRATE_TENANTS_QUERY" help:"multi-tenant mode: SQL returning one text column of schema names; the migrations are applied to each, with its own history table and lock"`
	TenantConcurrency  int    `env:"LOCKMIGRATE_TENANT_CONCURRENCY" help:"multi-tenant mode: tenants migrated at once, one connection each (1 to 256)"`
	TenantFailFast     bool   `env:"LOCKMIGRATE_TENANT_FAIL_FAST" envDefault:"false" help:"multi-tenant mode: start no tenant after the first failure"`
	Shards             int    `env:"LOCKMIGRATE_SHARDS" envDefault:"1" help:"multi-tenant mode: split the tenants into this many shards (FNV-1a of the name); this runner takes shard JOB_COMPLETION_INDEX"`
	JobCompletionIndex string `env:"JOB_COMPLETION_INDEX" help:"set by Kubernetes in an Indexed Job: the shard this runner takes (0 to LOCKMIGRATE_SHARDS-1)"`
	// ShardIndex is JobCompletionIndex parsed (0 when unset).
	ShardIndex int `env:"-"`

	Phase               string        `env:"LOCKMIGRATE_PHASE" envDefault:"all" oneof:"all,expand,contract" help:"which migrations a run applies: all (every file in version order), expand (files without -- lockmigrate:phase contract: init containers, pre-upgrade Job) or contract (the contract files, each once every lower expand file is applied: the post-rollout Job)"`
	ContractWaitFor     string        `env:"LOCKMIGRATE_CONTRACT_WAIT_FOR" help:"contract runs: before applying anything, wait for the rollout of these workloads of the namespace, kind/name,kind/name (deployment or statefulset); needs a ServiceAccount token allowed to get them and list pods"`
	ContractWaitTimeout time.Duration `env:"LOCKMIGRATE_CONTRACT_WAIT_TIMEOUT" envDefault:"5m" help:"longest wait for that rollout (exit 4 after it, nothing applied)"`
	ServiceAccountDir   string        `env:"LOCKMIGRATE_SERVICEACCOUNT_DIR" envDefault:"/var/run/secrets/kubernetes.io/serviceaccount" help:"directory of the pod's service account token, ca.crt and namespace, for the rollout wait"`
	KubernetesHost      string        `env:"KUBERNETES_SERVICE_HOST" help:"set by Kubernetes in every pod: the API server, for the rollout wait"`
	KubernetesPort      string        `env:"KUBERNETES_SERVICE_PORT" help:"set by Kubernetes in every pod: the API server's port"`
	// WaitFor is ContractWaitFor parsed.
	WaitFor []rollout.Workload `env:"-"`

	BackfillSleep    time.Duration `env:"LOCKMIGRATE_BACKFILL_SLEEP" envDefault:"0" help:"least pause after each batch of a backfill (-- lockmigrate:backfill); a file's sleep= may ask for more"`
	BackfillMaxLag   time.Duration `env:"LOCKMIGRATE_BACKFILL_MAX_LAG" envDefault:"0" help:"0 = off; pause a backfill's batches while a standby's replay_lag (pg_stat_replication, on the primary) exceeds this; needs pg_read_all_stats"`
	BackfillProgress time.Duration `env:"LOCKMIGRATE_BACKFILL_PROGRESS" envDefault:"10s" help:"least time between two backfill progress events (rows, rows/s)"`

	LogFormat string `env:"LOCKMIGRATE_LOG_FORMAT" envDefault:"json" oneof:"json,text" help:"log format (one event per line on stderr)"`
	LogLevel  string `env:"LOCKMIGRATE_LOG_LEVEL" envDefault:"info" oneof:"debug,info,warn,error" help:"lowest level logged"`

	TerminationLog string `env:"LOCKMIGRATE_TERMINATION_LOG" help:"file for a one-line JSON summary of the run (Kubernetes termination message); skipped when not writable"`

	PodName      string `env:"POD_NAME" help:"recorded as applied_by and sent as application_name; default: the hostname"`
	PodNamespace string `env:"POD_NAMESPACE" help:"logged with every run"`

	// Libpq holds the libpq variables (PGHOST, PGUSER, PGPASSWORD, ...;
	// dbconn.LibpqVariables) as Load found them, so that nothing reads the
	// environment again after Load.
	Libpq map[string]string `env:"-"`
}

// DefaultTerminationLog is where Kubernetes reads a container's termination
// message.
const DefaultTerminationLog = "/dev/termination-log"

// defaults holds the defaults that belong to the libraries: each is stated
// once, where the library that applies it declares it, and only shown here
// (--help prints them like the envDefault tags).
func defaults() Config {
	return Config{
		WaitTimeout:        runner.DefaultWaitTimeout,
		TenantConcurrency:  fleet.DefaultConcurrency,
		LintSmallTableRows: lint.DefaultSmallTableRows,
		LintPGVersion:      lint.DefaultPGVersion,
		TerminationLog:     DefaultTerminationLog,
	}
}

// DatabaseConfigured reports whether any connection setting is present, so
// that validate and plan can stay offline when none is.
func (c *Config) DatabaseConfigured() bool {
	if c.DatabaseURL != "" {
		return true
	}
	for _, v := range []string{"PGHOST", "PGDATABASE", "PGSERVICE", "PGPORT", "PGUSER"} {
		if c.Libpq[v] != "" {
			return true
		}
	}
	return false
}

// Lookup returns the libpq variable name as Load read it (the form
// dbconn.Config takes).
func (c *Config) Lookup(name string) string { return c.Libpq[name] }

// Error is an invalid variable. Its message names the variable and what it
// accepts; the caller maps it to the usage exit code.
type Error struct {
	Var    string
	Value  string // empty for secrets
	Accept string
	Err    error // the underlying parse error, if any
}

func (e *Error) Error() string {
	msg := "invalid " + e.Var
	if e.Value != "" {
		msg += fmt.Sprintf(" %q", e.Value)
	}
	if e.Accept != "" {
		msg += ": accepted: " + e.Accept
	}
	if e.Err != nil {
		msg += fmt.Sprintf(" (%v)", e.Err)
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// Load reads the configuration through getenv (os.Getenv in production, a
// map in tests) and validates every value. All invalid variables are
// reported together.
func Load(getenv func(string) string) (*Config, error) {
	environ := map[string]string{}
	for _, name := range variables {
		if v := getenv(name); v != "" {
			environ[name] = v
		}
	}
	// env parses every field even when some fail, so the values checks
	// below still run and every invalid variable is reported at once. It
	// keeps the values of fields whose variable is unset: the defaults.
	cfg := defaults()
	err := env.ParseWithOptions(&cfg, env.Options{Environment: environ})
	errs := []error{}
	failed := map[string]bool{}
	if err != nil {
		for _, e := range translate(err, environ) {
			errs = append(errs, e)
			var ce *Error
			if errors.As(e, &ce) {
				failed[ce.Var] = true
			}
		}
	}
	for _, e := range cfg.validate() {
		if !failed[e.Var] {
			errs = append(errs, e)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	cfg.Libpq = map[string]string{}
	for _, name := range dbconn.LibpqVariables() {
		if v := getenv(name); v != "" {
			cfg.Libpq[name] = v
		}
	}
	if cfg.PushgatewayPasswordFile != "" {
		b, err := os.ReadFile(cfg.PushgatewayPasswordFile)
		if err != nil {
			return nil, &Error{Var: "LOCKMIGRATE_PUSHGATEWAY_PASSWORD_FILE", Accept: "a readable file holding the password", Err: err}
		}
		cfg.PushgatewayPassword = strings.TrimRight(string(b), "\r\n")
	}
	if cfg.DatabaseURLFile != "" {
		b, err := os.ReadFile(cfg.DatabaseURLFile)
		if err != nil {
			return nil, &Error{Var: "DATABASE_URL_FILE", Accept: "a readable file holding the database URL", Err: err}
		}
		cfg.DatabaseURL = strings.TrimSpace(string(b))
		if cfg.DatabaseURL == "" {
			return nil, &Error{Var: "DATABASE_URL_FILE", Accept: "a file holding a non-empty database URL"}
		}
	}
	return &cfg, nil
}

// translate turns env's errors, which name struct fields, into errors that
// name the variables.
func translate(err error, environ map[string]string) []error {
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return []error{fmt.Errorf("config: %w", err)}
	}
	t := reflect.TypeFor[Config]()
	var out []error
	for _, e := range agg.Errors {
		var pe env.ParseError
		if !errors.As(e, &pe) {
			out = append(out, fmt.Errorf("config: %w", e))
			continue
		}
		f, _ := t.FieldByName(pe.Name)
		key := f.Tag.Get("env")
		out = append(out, &Error{Var: key, Value: environ[key], Accept: acceptFor(f), Err: errors.Unwrap(e)})
	}
	return out
}

func acceptFor(f reflect.StructField) string {
	if o := f.Tag.Get("oneof"); o != "" {
		return strings.ReplaceAll(o, ",", ", ")
	}
	switch f.Type {
	case reflect.TypeFor[time.Duration]():
		return "a Go duration such as 90s, 5m or 1h30m"
	case reflect.TypeFor[bool]():
		return "true or false"
	case reflect.TypeFor[int](), reflect.TypeFor[int64]():
		return "a whole number"
	}
	return ""
}

// validate checks the loaded values, always in the same order, and
// returns every problem, not only the first: an operator fixes a manifest
// in one go.
func (c *Config) validate() []*Error {
	var errs []*Error
	errs = append(errs, c.validateFields()...)
	errs = append(errs, c.validateKeepalives()...)
	errs = append(errs, c.validateNumbers()...)
	errs = append(errs, c.validatePushgateway()...)
	errs = append(errs, c.validateTenants()...)
	errs = append(errs, c.validateLint()...)
	errs = append(errs, c.validatePhase()...)
	if c.DatabaseURL != "" && c.DatabaseURLFile != "" {
		errs = append(errs, &Error{Var: "DATABASE_URL_FILE", Accept: "only one of DATABASE_URL and DATABASE_URL_FILE"})
	}
	return errs
}

// validateFields checks what the struct tags say (oneof) and that no
// duration is negative, then the durations that must be positive.
func (c *Config) validateFields() []*Error {
	var errs []*Error
	t := reflect.TypeFor[Config]()
	v := reflect.ValueOf(c).Elem()
	for i := range t.NumField() {
		f := t.Field(i)
		key := f.Tag.Get("env")
		if o := f.Tag.Get("oneof"); o != "" {
			s := v.Field(i).String()
			if !slices.Contains(strings.Split(o, ","), s) {
				errs = append(errs, &Error{Var: key, Value: s, Accept: acceptFor(f)})
			}
		}
		if f.Type == reflect.TypeFor[time.Duration]() && v.Field(i).Int() < 0 {
			errs = append(errs, &Error{Var: key, Value: time.Duration(v.Field(i).Int()).String(), Accept: "a duration that is not negative"})
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"LOCKMIGRATE_WAIT_TIMEOUT", c.WaitTimeout}, {"LOCKMIGRATE_CONNECT_TIMEOUT", c.ConnectTimeout}} {
		if d.v == 0 {
			errs = append(errs, &Error{Var: d.name, Value: "0", Accept: "a positive Go duration such as 90s or 5m"})
		}
	}
	return errs
}

// validateKeepalives checks the TCP keepalive settings, when keepalives
// are on (LOCKMIGRATE_TCP_KEEPALIVES_IDLE > 0).
func (c *Config) validateKeepalives() []*Error {
	if c.TCPKeepalivesIdle <= 0 {
		return nil
	}
	var errs []*Error
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"LOCKMIGRATE_TCP_KEEPALIVES_IDLE", c.TCPKeepalivesIdle}, {"LOCKMIGRATE_TCP_KEEPALIVES_INTERVAL", c.TCPKeepalivesInterval}, {"LOCKMIGRATE_TCP_USER_TIMEOUT", c.TCPUserTimeout}} {
		if d.v < time.Second || d.v%time.Second != 0 && d.name != "LOCKMIGRATE_TCP_USER_TIMEOUT" {
			errs = append(errs, &Error{Var: d.name, Value: d.v.String(), Accept: "a whole number of seconds, at least 1s"})
		}
	}
	// Linux refuses larger values with setsockopt, and PostgreSQL then
	// silently keeps its defaults (2 hours idle): bound them here.
	if c.TCPKeepalivesCount < 1 || c.TCPKeepalivesCount > 127 {
		errs = append(errs, &Error{Var: "LOCKMIGRATE_TCP_KEEPALIVES_COUNT", Value: fmt.Sprint(c.TCPKeepalivesCount), Accept: "a whole number from 1 to 127"})
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"LOCKMIGRATE_TCP_KEEPALIVES_IDLE", c.TCPKeepalivesIdle}, {"LOCKMIGRATE_TCP_KEEPALIVES_INTERVAL", c.TCPKeepalivesInterval}} {
		if d.v > 32767*time.Second {
			errs = append(errs, &Error{Var: d.name, Value: d.v.String(), Accept: "at most 32767s"})
		}
	}
	if c.TCPUserTimeout > (1<<31-1)*time.Millisecond {
		errs = append(errs, &Error{Var: "LOCKMIGRATE_TCP_USER_TIMEOUT", Value: c.TCPUserTimeout.String(), Accept: "at most 2147483647ms (about 596h)"})
	}
	return errs
}

// validateNumbers checks the counts, the baseline version and the
// identifiers of the history table.
func (c *Config) validateNumbers() []*Error {
	var errs []*Error
	if c.LockRetries < 0 {
		errs = append(errs, &Error{Var: "LOCKMIGRATE_LOCK_RETRIES", Value: fmt.Sprint(c.LockRetries), Accept: "a whole number, 0 or more"})
	}
	if c.BaselineVersion < 0 {
		errs = append(errs, &Error{Var: "LOCKMIGRATE_BASELINE_VERSION", Value: fmt.Sprint(c.BaselineVersion), Accept: "a migration version, or 0 (off)"})
	}
	for _, id := range []struct{ name, v string }{{"LOCKMIGRATE_SCHEMA", c.Schema}, {"LOCKMIGRATE_TABLE", c.Table}} {
		if id.v == "" || len(id.v) > 63 || strings.ContainsRune(id.v, 0) {
			errs = append(errs, &Error{Var: id.name, Value: id.v, Accept: "a PostgreSQL identifier of 1 to 63 bytes"})
		}
	}
	return errs
}

// validatePushgateway checks the metrics push settings and parses the
// grouping labels into c.Grouping (which validateTenants then reads).
func (c *Config) validatePushgateway() []*Error {
	var errs []*Error
	if c.PushgatewayURL != "" {
		u, err := url.Parse(c.PushgatewayURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, &Error{Var: "LOCKMIGRATE_PUSHGATEWAY_URL", Accept: "an http:// or https:// URL such as http://pushgateway:9091"})
		}
	}
	if c.PushgatewayJob == "" || strings.ContainsAny(c.PushgatewayJob, spaces) {
		errs = append(errs, &Error{Var: "LOCKMIGRATE_PUSHGATEWAY_JOB", Value: c.PushgatewayJob, Accept: "a non-empty job name without spaces" + spaceReason})
	}
	if c.PushgatewayTimeout == 0 {
		errs = append(errs, &Error{Var: "LOCKMIGRATE_PUSHGATEWAY_TIMEOUT", Value: "0", Accept: "a positive Go duration such as 5s"})
	}
	if c.PushgatewayPassword != "" && c.PushgatewayPasswordFile != "" {
		errs = append(errs, &Error{Var: "LOCKMIGRATE_PUSHGATEWAY_PASSWORD_FILE", Accept: "only one of LOCKMIGRATE_PUSHGATEWAY_PASSWORD and LOCKMIGRATE_PUSHGATEWAY_PASSWORD_FILE"})
	}
	var err error
	if c.Grouping, err = parseGrouping(c.PushgatewayGrouping); err != nil {
		errs = append(errs, &Error{Var: "LOCKMIGRATE_PUSHGATEWAY_GROUPING", Value: c.PushgatewayGrouping,
			Accept: "comma-separated name=value pairs of label names other than job and instance", Err: err})
	}
	return errs
}

func (c *Config) validateTenants() []*Error {
	var errs []*Error
	if c.TenantConcurrency < 1 || c.TenantConcurrency > 256 {
		errs = append(errs, &Error{Var: "LOCKMIGRATE_TENANT_CONCURRENCY", Value: fmt.Sprint(c.TenantConcurrency), Accept: "a whole number from 1 to 256"})
	}
	if c.Shards < 1 {
		errs = append(errs, &Error{Var: "LOCKMIGRATE_SHARDS", Value: fmt.Sprint(c.Shards), Accept: "a whole number, 1 or more"})
		return errs
	}
	if c.TenantsQuery == "" {
		if c.Shards > 1 {
			errs = append(errs, &Error{Var: "LOCKMIGRATE_SHARDS", Value: fmt.Sprint(c.Shards), Accept: "1 unless LOCKMIGRATE_TENANTS_QUERY is set (shards split tenants)"})
		}
		return errs
	}
	if c.LockKey != "" {
		errs = append(errs, &Error{Var: "LOCKMIGRATE_LOCK_KEY", Value: c.LockKey, Accept: "unset with LOCKMIGRATE_TENANTS_QUERY (every tenant has its own key, derived from <tenant>.<table>)"})
	}
	if strings.TrimSpace(c.JobCompletionIndex) == "" {
		if c.Shards > 1 {
			errs = append(errs, &Error{Var: "JOB_COMPLETION_INDEX", Accept: fmt.Sprintf("a shard index from 0 to %d, required with LOCKMIGRATE_SHARDS=%d (Kubernetes sets it in an Indexed Job)", c.Shards-1, c.Shards)})
		}
		return errs
	}
	i, err := strconv.Atoi(strings.TrimSpace(c.JobCompletionIndex))
	if err != nil || i < 0 || i >= c.Shards {
		errs = append(errs, &Error{Var: "JOB_COMPLETION_INDEX", Value: c.JobCompletionIndex,
			Accept: fmt.Sprintf("a whole number from 0 to %d (LOCKMIGRATE_SHARDS=%d)", c.Shards-1, c.Shards)})
		return errs
	}
	c.ShardIndex = i
	if _, ok := c.Grouping["shard"]; ok && c.Shards > 1 {
		// A sharded run adds shard=<index> to its group itself.
		errs = append(errs, &Error{Var: "LOCKMIGRATE_PUSHGATEWAY_GROUPING", Value: c.PushgatewayGrouping,
			Accept: "labels other than shard with LOCKMIGRATE_SHARDS > 1 (each shard pushes to its own group, shard=<index>)"})
	}
	return errs
}

// validatePhase checks the phase settings and parses the workloads to
// wait for into c.WaitFor.
func (c *Config) validatePhase() []*Error {
	var errs []*Error
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"LOCKMIGRATE_CONTRACT_WAIT_TIMEOUT", c.ContractWaitTimeout}, {"LOCKMIGRATE_BACKFILL_PROGRESS", c.BackfillProgress}} {
		if d.v == 0 {
			errs = append(errs, &Error{Var: d.name, Value: "0", Accept: "a positive Go duration such as 90s or 5m"})
		}
	}
	var err error
	if c.WaitFor, err = rollout.ParseWorkloads(c.ContractWaitFor); err != nil {
		errs = append(errs, &Error{Var: "LOCKMIGRATE_CONTRACT_WAIT_FOR", Value: c.ContractWaitFor,
			Accept: "comma-separated kind/name pairs, kind deployment or statefulset, e.g. deployment/web,statefulset/worker", Err: err})
	}
	if len(c.WaitFor) > 0 && c.Phase != "contract" {
		errs = append(errs, &Error{Var: "LOCKMIGRATE_CONTRACT_WAIT_FOR", Value: c.ContractWaitFor,
			Accept: "unset unless LOCKMIGRATE_PHASE=contract (only the post-rollout contract run waits for the rollout)"})
	}
	return errs
}

// WriteHelp lists every variable with its default and meaning.
func WriteHelp(w io.Writer) {
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  VARIABLE\tDEFAULT\tMEANING")
	t := reflect.TypeFor[Config]()
	d := reflect.ValueOf(defaults())
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Tag.Get("help") == "" {
			continue
		}
		def := f.Tag.Get("envDefault")
		if def == "" && !d.Field(i).IsZero() {
			def = formatDefault(d.Field(i).Interface())
		}
		if def == "" {
			def = "-"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", f.Tag.Get("env"), def, f.Tag.Get("help"))
	}
	tw.Flush()
}

// formatDefault writes a default as an envDefault tag would: 10m, not
// 10m0s.
func formatDefault(v any) string {
	d, ok := v.(time.Duration)
	if !ok {
		return fmt.Sprint(v)
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// spaces are refused in the job name and grouping values: client_golang's
// push package escapes the group's URL path with url.QueryEscape, which
// turns a space into "+", and the Pushgateway keeps the "+": the group
// would not be the one configured.
const (
	spaces      = " \t"
	spaceReason = " (the Pushgateway would record it as \"+\")"
)

// labelName is compiled when a grouping is configured, not at every start.
var labelName = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`) })

// parseGrouping parses "k=v,k=v" into grouping labels. job has its own
// variable, and instance is refused: it would be a per-pod label in disguise.
func parseGrouping(s string) (map[string]string, error) {
	out := map[string]string{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		k = strings.TrimSpace(k)
		switch {
		case !ok || v == "":
			return nil, fmt.Errorf("%q is not name=value", part)
		case !labelName().MatchString(k) || strings.HasPrefix(k, "__"):
			return nil, fmt.Errorf("%q is not a label name", k)
		case k == "job" || k == "instance":
			return nil, fmt.Errorf("%q cannot be a grouping label", k)
		case strings.ContainsAny(v, spaces):
			return nil, fmt.Errorf("the value of %q has a space%s", k, spaceReason)
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("label %q given twice", k)
		}
		out[k] = v
	}
	return out, nil
}

// LintRules splits a LOCKMIGRATE_LINT_ENABLE / _DISABLE list.
func LintRules(list string) []string {
	var out []string
	for _, id := range strings.Split(list, ",") {
		if id = strings.TrimSpace(id); id != "" {
			out = append(out, id)
		}
	}
	return out
}

// validateLint checks the lint variables: rule ids must exist (a typo
// would silently keep a rule on or off).
func (c *Config) validateLint() []*Error {
	var errs []*Error
	if c.LintSmallTableRows < 0 {
		errs = append(errs, &Error{Var: "LOCKMIGRATE_LINT_SMALL_TABLE_ROWS", Value: fmt.Sprint(c.LintSmallTableRows), Accept: "a whole number, 0 or more"})
	}
	if c.LintPGVersion < 10 || c.LintPGVersion > 99 {
		errs = append(errs, &Error{Var: "LOCKMIGRATE_LINT_PG_VERSION", Value: fmt.Sprint(c.LintPGVersion), Accept: "a PostgreSQL major version such as 14 or 17"})
	}
	for _, v := range []struct{ name, list string }{{"LOCKMIGRATE_LINT_ENABLE", c.LintEnable}, {"LOCKMIGRATE_LINT_DISABLE", c.LintDisable}} {
		for _, id := range LintRules(v.list) {
			if _, ok := lint.LookupRule(id); !ok && !(id == "style" && v.name == "LOCKMIGRATE_LINT_ENABLE") {
				errs = append(errs, &Error{Var: v.name, Value: v.list, Accept: "comma-separated rule ids of docs/lint.md (" + id + " is none)"})
				break
			}
		}
	}
	return errs
}
