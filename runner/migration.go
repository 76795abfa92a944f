package runner

import (
	"crypto/sha256"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/lockmigrate/lockmigrate/internal/dirfs"
	"github.com/lockmigrate/lockmigrate/internal/sqlsplit"
	"github.com/lockmigrate/lockmigrate/runner/internal/format"
)

// NoTransactionDirective, at the top of a file, makes the file run outside
// any transaction, one statement at a time, as CREATE INDEX CONCURRENTLY and
// similar statements require.
const NoTransactionDirective = "-- lockmigrate:no-transaction"

// directivePrefix marks a leading comment line meant for lockmigrate; an unknown
// directive is refused rather than ignored, so a typo cannot silently turn a
// no-transaction file into a transactional one.
const directivePrefix = "-- lockmigrate:"

// Migration is one migration file.
type Migration struct {
	Version  int64
	Name     string // the part of the file name after "<version>_", without the suffix
	File     string // the file name inside the migration set
	SQL      string // the part of the file that runs (the up section), without a byte order mark
	Checksum string // hex SHA-256 of the bytes of that part (of the whole file in lockmigrate's format)
	// Format is the format the file was read as.
	Format Format
	// NoTransaction is set by the no-transaction directive, by the
	// backfill directive, or by the format's own marker (goose NO
	// TRANSACTION, dbmate transaction:false, tern disable-tx).
	NoTransaction bool
	// Phase is set by the phase directive (phase.go); empty means expand.
	Phase Phase
	// Backfill is set by the backfill directive (backfill.go): the file's
	// one statement is run in batches until it changes no row.
	Backfill *BackfillOptions
	// statements of a no-transaction file, split when it is loaded so a
	// malformed file is refused before anything runs.
	statements []sqlsplit.Statement
}

// splitFileName splits "<version>_<name>.sql" and "<version>_<name>.up.sql"
// into the version's digits and the name, as the regular expression
// ^([0-9]+)_([^/]+?)(\.up)?\.sql$ would (the tests hold it to that). It is
// written out because every start reads every file name, and the
// expression's backtracking cost more than the rest of loading a no-op's
// 200 files.
func splitFileName(name string) (digits, base string, ok bool) {
	rest, ok := strings.CutSuffix(name, ".sql")
	if !ok || strings.ContainsRune(rest, '/') {
		return "", "", false
	}
	i := 0
	for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
		i++
	}
	if i == 0 || i == len(rest) || rest[i] != '_' {
		return "", "", false
	}
	digits, base = rest[:i], rest[i+1:]
	// The name is the shortest that fits: a trailing ".up" belongs to the
	// suffix unless nothing would be left of the name.
	if b, up := strings.CutSuffix(base, ".up"); up && b != "" {
		base = b
	}
	return digits, base, base != ""
}

// LoadFormat reads the migration set from the top level of fsys, each file
// as format f (FormatAuto: as its markers show). Files not ending in ".sql"
// are ignored (READMEs, embed helpers), as are ".down.sql" files: lockmigrate
// only moves forward. Of a file written for a tool that keeps its down
// section in the file, only the up section is run and checksummed. Every
// problem found is reported at once, as *ValidationError values joined with
// errors.Join, so a CI run lists all broken files instead of one per push.
func LoadFormat(fsys fs.FS, f Format) ([]*Migration, error) {
	if !format.Name(f).Valid() {
		return nil, fmt.Errorf("unknown migration file format %q", f)
	}
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("read migration directory: %w", err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".sql") || strings.HasSuffix(name, ".down.sql") {
			continue
		}
		names = append(names, name)
	}
	// The migrations are allocated together, one slot per file.
	slab := make([]Migration, len(names))
	sums := make([][sha256.Size]byte, len(names))
	errs := loadFiles(fsys, names, f, slab, sums)
	setChecksums(slab, sums, errs)
	var (
		migs     = make([]*Migration, 0, len(names))
		problems []error
		dups     dupCheck
	)
	for i, name := range names {
		if errs != nil && errs[i] != nil {
			problems = append(problems, errs[i])
			continue
		}
		m := &slab[i]
		if prev := dups.add(migs, m); prev != nil {
			problems = append(problems, &ValidationError{
				Kind: KindDuplicateVersion, Version: m.Version, File: name,
				Detail: fmt.Sprintf("version %d is used by both %s and %s", m.Version, prev.File, name),
			})
			continue
		}
		migs = append(migs, m)
	}
	if err := checkMixed(f, migs); err != nil {
		problems = append(problems, err)
	}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}
	if !dups.ascending() {
		slices.SortFunc(migs, func(a, b *Migration) int { return cmpInt64(a.Version, b.Version) })
	}
	return migs, nil
}

// parallelLoad is the smallest set whose files are loaded by several
// goroutines: below it, starting them costs more than they save. Reading,
// hashing and parsing a file are independent of every other file, so on
// two cores a set of 10,000 loads in about half the wall time.
const parallelLoad = 512

// maxLoaders bounds the goroutines that load files.
const maxLoaders = 4

// loadFiles loads names[i] into slab[i], and returns each file's error at
// its index (a nil slice when one goroutine loaded them all and none
// failed). The results, and so the errors a run
// reports and their order, do not depend on how the work was shared.
func loadFiles(fsys fs.FS, names []string, f Format, slab []Migration, sums [][sha256.Size]byte) []error {
	workers := min(runtime.GOMAXPROCS(0), maxLoaders)
	if len(names) < parallelLoad || workers < 2 || !concurrentFS(fsys) {
		var errs []error // allocated on the first failure: the usual set has none
		for i, name := range names {
			if err := loadFile(fsys, name, f, &slab[i], &sums[i]); err != nil {
				if errs == nil {
					errs = make([]error, len(names))
				}
				errs[i] = err
			}
		}
		return errs
	}
	errs := make([]error, len(names))
	const batch = 64 // files a goroutine takes at a time
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				start := int(next.Add(batch)) - batch
				if start >= len(names) {
					return
				}
				for i := start; i < min(start+batch, len(names)); i++ {
					errs[i] = loadFile(fsys, names[i], f, &slab[i], &sums[i])
				}
			}
		})
	}
	wg.Wait()
	return errs
}

// setChecksums sets each loaded migration's Checksum, the hex of its
// sum: all of them in one string, of which each Checksum is a slice, so
// a set costs one allocation instead of two per file (the hex encoding
// and its string), which were most of what a no-op start allocated.
func setChecksums(slab []Migration, sums [][sha256.Size]byte, errs []error) {
	const n = 2 * sha256.Size
	var b strings.Builder
	b.Grow(n * len(slab))
	var h [n]byte
	for i := range slab {
		hexSum(&h, &sums[i])
		b.Write(h[:])
	}
	all := b.String()
	for i := range slab {
		if errs == nil || errs[i] == nil {
			slab[i].Checksum = all[i*n : (i+1)*n]
		}
	}
}

// hexPairs holds the two lower-case hex digits of every byte value.
var hexPairs = func() (t [256][2]byte) {
	const digits = "0123456789abcdef"
	for i := range t {
		t[i] = [2]byte{digits[i>>4], digits[i&15]}
	}
	return t
}()

// hexSum is hex.Encode for a SHA-256 sum, a byte pair at a time: every
// start encodes every file's sum, and encoding/hex's digit-at-a-time loop
// cost more instructions than the rest of the comparison
// (TestHexSumIsHexEncode holds it to encoding/hex).
func hexSum(dst *[2 * sha256.Size]byte, sum *[sha256.Size]byte) {
	for i, v := range sum {
		p := hexPairs[v]
		dst[2*i], dst[2*i+1] = p[0], p[1]
	}
}

// concurrentFS reports whether fsys is known to be safe for concurrent
// reads: fs.FS does not promise it, so a file system of the caller's is
// read by one goroutine.
func concurrentFS(fsys fs.FS) bool {
	switch fsys.(type) {
	case embed.FS, *embed.FS, *dirfs.FS:
		return true
	}
	return false
}

// dupCheck finds a version already loaded. Zero-padded names list in
// version order, and then a version above every one before it cannot be a
// duplicate: the map of versions is built only when a set's names are not
// in version order, so the usual set is neither hashed nor sorted.
type dupCheck struct {
	last     int64
	unsorted bool
	byVer    map[int64]*Migration
}

// add returns the migration of loaded (the migrations kept so far) with
// m's version, or records m's version and returns nil.
func (d *dupCheck) add(loaded []*Migration, m *Migration) (prev *Migration) {
	if !d.unsorted && m.Version > d.last {
		d.last = m.Version
		return nil
	}
	if !d.unsorted {
		d.unsorted = true
		d.byVer = make(map[int64]*Migration, 2*len(loaded))
		for _, l := range loaded {
			d.byVer[l.Version] = l
		}
	}
	if prev = d.byVer[m.Version]; prev == nil {
		d.byVer[m.Version] = m
	}
	return prev
}

// ascending reports whether every version came above the ones before it.
func (d *dupCheck) ascending() bool { return !d.unsorted }

// loadFile reads one migration file of format f: its name, the part that
// runs (checksummed as written), its directives and, outside a
// transaction, its statements.
func loadFile(fsys fs.FS, name string, f Format, m *Migration, sum *[sha256.Size]byte) error {
	if err := parseFileName(name, m); err != nil {
		return err
	}
	data, err := fs.ReadFile(fsys, name)
	if err != nil {
		// A broken symlink, a loop, a permission problem: the set as
		// deployed is unusable, whatever a retry does.
		return &ValidationError{Kind: KindUnreadable, Version: m.Version, File: name,
			Detail: fmt.Sprintf("cannot read the file: %v", err)}
	}
	sec, err := readSection(m, data, f)
	if err != nil {
		return err
	}
	*sum = sha256.Sum256(sec.Up)
	// The checksum covers the bytes that run, as written; the server gets
	// them without a UTF-8 byte order mark, which it would reject.
	m.SQL = sec.SQL
	if err := m.parseDirective(sec.SQL); err != nil {
		return err
	}
	m.NoTransaction = m.NoTransaction || sec.NoTransaction
	if !m.NoTransaction {
		return nil
	}
	if m.statements, err = sec.Statements(); err != nil {
		return &ValidationError{Kind: KindMalformedSQL, Version: m.Version, File: name,
			Detail: fmt.Sprintf("cannot split into statements: %v", err)}
	}
	if err := m.checkBackfill(); err != nil {
		return err
	}
	return nil
}

func parseFileName(name string, m *Migration) error {
	bad := func(why string) error {
		return &ValidationError{Kind: KindMalformedName, File: name,
			Detail: why + `; expected "<version>_<name>.sql" or "<version>_<name>.up.sql" with a positive integer version`}
	}
	digits, base, ok := splitFileName(name)
	if !ok {
		return bad("file name does not match")
	}
	v, err := parseVersion(digits)
	if err != nil {
		return bad("version does not fit in a signed 64-bit integer")
	}
	if v <= 0 {
		return bad("version must be positive")
	}
	m.Version, m.Name, m.File = v, base, name
	return nil
}

// parseVersion is strconv.ParseInt(digits, 10, 64) for the ASCII digits
// that splitFileName found, written out for the versions of up to 18 digits,
// which cannot overflow: ParseInt's generality cost more than a file's name
// is worth.
func parseVersion(digits string) (int64, error) {
	if len(digits) > 18 {
		return strconv.ParseInt(digits, 10, 64)
	}
	var v int64
	for i := 0; i < len(digits); i++ {
		v = v*10 + int64(digits[i]-'0')
	}
	return v, nil
}

// parseDirective reads the directives in the comment lines at the top of
// the file (up to its first line that is neither blank nor a "--"
// comment): each line starting with "-- lockmigrate:" is one directive
// (no-transaction, phase, backfill), each at most once. An unknown
// directive is refused rather than ignored, and one below an ordinary
// comment still counts, so neither a typo nor a comment can silently turn a
// contract file into an expand one.
func (m *Migration) parseDirective(text string) error {
	text = strings.TrimPrefix(text, "\xef\xbb\xbf")
	seen := map[string]bool{}
	for len(text) > 0 {
		var first string
		first, text, _ = strings.Cut(text, "\n")
		line := strings.TrimSpace(first)
		if line == "" || strings.HasPrefix(line, "--") && !strings.HasPrefix(line, directivePrefix) {
			continue
		}
		if !strings.HasPrefix(line, directivePrefix) {
			return nil
		}
		name, arg, _ := strings.Cut(strings.TrimPrefix(line, directivePrefix), " ")
		arg = strings.TrimSpace(arg)
		if line == lintIgnorePrefix || strings.HasPrefix(line, lintIgnorePrefix+" ") {
			continue // a lint suppression for the first statement, not a directive; there may be several
		}
		if seen[name] {
			return &ValidationError{Kind: KindMalformedName, Version: m.Version, File: m.File,
				Detail: fmt.Sprintf("directive %q given twice", directivePrefix+name)}
		}
		seen[name] = true
		var err error
		switch {
		case line == NoTransactionDirective:
			m.NoTransaction = true
		case name == "phase":
			err = m.parsePhase(arg)
		case name == "backfill":
			err = m.parseBackfill(arg)
		default:
			err = &ValidationError{Kind: KindMalformedName, Version: m.Version, File: m.File,
				Detail: fmt.Sprintf("unknown directive %q on the first lines; the directives are %q, %q and %q",
					line, NoTransactionDirective, PhaseDirective, BackfillDirective)}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
