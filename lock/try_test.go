package lock_test

import (
	"context"
	"net/url"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/lockmigrate/lockmigrate/internal/pgtest"
	"github.com/lockmigrate/lockmigrate/lock"
)

// pgConnQuerier is a connection the lock may use below pgx (it has
// PgConn), counting the statements it sends through pgx.
type pgConnQuerier struct {
	countingQuerier
	conn *pgx.Conn
}

func (q *pgConnQuerier) PgConn() *pgconn.PgConn { return q.conn.PgConn() }

// TestTryOnPgConnAgrees: a try-lock on the protocol connection (the path a
// dbconn.Session takes, so that a losing replica never makes its pgx
// layer) returns what the pgx path returns: the same holder, column for
// column, for a holder this role may see in full and for one of another
// role whose query and query start pg_stat_activity hides (NULL); no
// statement goes through pgx for a lost try, and a won try is verified.
func TestTryOnPgConnAgrees(t *testing.T) {
	ctx := context.Background()
	admin := pgtest.Shared().NewDB(t)
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatal(err)
	}
	db := strings.TrimPrefix(u.Path, "/")
	role := "locktest_" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "_"))
	pgtest.Shared().CreateRole(t, role+"_a", "pw-a")
	pgtest.Shared().CreateRole(t, role+"_b", "pw-b")
	tests := []struct {
		name             string
		holderURL, byURL string
		hidden           bool
	}{
		{"same role", admin, admin, false},
		{"other role", pgtest.Shared().URLFor(db, role+"_a", "pw-a"), pgtest.Shared().URLFor(db, role+"_b", "pw-b"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := connect(t, tt.holderURL), connect(t, tt.byURL)
			for _, key := range []int64{7, -5822053114866441799} {
				la := lock.New(a, key, nil)
				if ok, err := la.TryLock(ctx); err != nil || !ok {
					t.Fatalf("key %d: first TryLock = %v, %v", key, ok, err)
				}
				viaPgx := lock.New(&countingQuerier{Querier: b}, key, nil)
				viaPgx.HolderOnConflict = true
				raw := &pgConnQuerier{countingQuerier: countingQuerier{Querier: b}, conn: b}
				viaPg := lock.New(raw, key, nil)
				viaPg.HolderOnConflict = true
				for _, l := range []*lock.Advisory{viaPgx, viaPg} {
					if ok, err := l.TryLock(ctx); err != nil || ok {
						t.Fatalf("key %d: second session TryLock = %v, %v; want false", key, ok, err)
					}
				}
				if raw.n != 0 {
					t.Fatalf("key %d: the lost try on the protocol connection sent %d statement(s) through pgx, want 0", key, raw.n)
				}
				want, got := viaPgx.ConflictHolder(), viaPg.ConflictHolder()
				if want == nil || got == nil {
					t.Fatalf("key %d: holders %+v (pgx), %+v (protocol)", key, want, got)
				}
				if got.ObservedAt.Before(want.ObservedAt) || got.ObservedAt.IsZero() {
					t.Fatalf("key %d: observed at %v (protocol) before %v (pgx)", key, got.ObservedAt, want.ObservedAt)
				}
				w, g := *want, *got
				w.ObservedAt, g.ObservedAt = got.ObservedAt, got.ObservedAt
				if (w.QueryStart == nil) != (g.QueryStart == nil) || w.QueryStart != nil && !w.QueryStart.Equal(*g.QueryStart) {
					t.Fatalf("key %d: query start %v (pgx), %v (protocol)", key, w.QueryStart, g.QueryStart)
				}
				w.QueryStart, g.QueryStart = nil, nil
				if !w.Since.Equal(g.Since) || !w.StateChange.Equal(g.StateChange) || w.Since.Location() != g.Since.Location() {
					t.Fatalf("key %d: since/state change %v, %v (pgx), %v, %v (protocol)", key, w.Since, w.StateChange, g.Since, g.StateChange)
				}
				w.Since, w.StateChange = g.Since, g.StateChange
				if w != g || g.PID != int32(a.PgConn().PID()) {
					t.Fatalf("key %d: holder\npgx      %+v\nprotocol %+v", key, w, g)
				}
				if hidden := want.QueryStart == nil; hidden != tt.hidden {
					t.Fatalf("key %d: query start hidden = %v, want %v", key, hidden, tt.hidden)
				}

				if err := la.Unlock(ctx); err != nil {
					t.Fatal(err)
				}
				if ok, err := viaPg.TryLock(ctx); err != nil || !ok || viaPg.ConflictHolder() != nil {
					t.Fatalf("key %d: TryLock after release = %v, %v, holder %+v", key, ok, err, viaPg.ConflictHolder())
				}
				if raw.n != 1 {
					t.Fatalf("key %d: a won try sent %d statement(s) through pgx, want 1 (the verification)", key, raw.n)
				}
				if h, err := la.Holder(ctx); err != nil || h == nil || h.PID != int32(b.PgConn().PID()) {
					t.Fatalf("key %d: holder after the protocol try won = %+v, %v", key, h, err)
				}
				if err := viaPg.Unlock(ctx); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
