package runner

import (
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"regexp"
	"testing"
)

// fileNameRE is the file-name rule as a regular expression: splitFileName
// must agree with it on every name.
var fileNameRE = regexp.MustCompile(`^([0-9]+)_([^/]+?)(\.up)?\.sql$`)

func checkSplit(t *testing.T, name string) {
	t.Helper()
	digits, base, ok := splitFileName(name)
	sub := fileNameRE.FindStringSubmatch(name)
	if ok != (sub != nil) || (ok && (digits != sub[1] || base != sub[2])) {
		t.Fatalf("splitFileName(%q) = %q, %q, %v; the expression says %q", name, digits, base, ok, sub)
	}
}

func TestSplitFileNameAgreesWithTheExpression(t *testing.T) {
	for _, name := range []string{
		"1_a.sql", "0001_create_users.sql", "1_a.up.sql", "1_.up.sql", "1_.sql", "1_..up.sql",
		"1_a.up.up.sql", "1_a.down.sql", "12_3_x.sql", "_a.sql", "a_1.sql", "1a_b.sql", "1_a.SQL",
		"1_a.sql.sql", "1_a/b.sql", "1_a.up", "1_a", ".sql", "1_ .sql", "1_a\n.sql", "1_é.sql",
		"99999999999999999999_big.sql", "1_a.Up.sql", "1__.sql", "1_.up.up.sql",
	} {
		checkSplit(t, name)
	}
	// Random names over the characters that matter to the rule.
	alphabet := []byte("0123456789_./upsqlaU \n")
	r := rand.New(rand.NewPCG(1, 2))
	for range 200000 {
		b := make([]byte, r.IntN(12))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		name := string(b)
		if r.IntN(2) == 0 {
			name += ".sql"
		}
		checkSplit(t, name)
	}
}

// TestHexSumIsHexEncode: hexSum encodes as encoding/hex does, for sums
// that hold every byte value.
func TestHexSumIsHexEncode(t *testing.T) {
	for start := 0; start < 256; start += sha256.Size {
		var sum [sha256.Size]byte
		for i := range sum {
			sum[i] = byte(start + i)
		}
		var got [2 * sha256.Size]byte
		hexSum(&got, &sum)
		if want := hex.EncodeToString(sum[:]); string(got[:]) != want {
			t.Fatalf("hexSum(%x) = %s, want %s", sum, got, want)
		}
	}
}
