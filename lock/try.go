package lock

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// pgConner is a Querier that also gives its low-level connection, as
// *pgx.Conn and internal/dbconn's Session do.
type pgConner interface {
	PgConn() *pgconn.PgConn
}

// tryResult is what one try-lock statement returns.
type tryResult struct {
	heldBefore, ok bool
	pid            int32
	holder         *Holder // only with the holder columns, when the try lost
}

// PostgreSQL type OIDs of the try's columns.
const (
	oidBool        = 16
	oidInt8        = 20
	oidInt4        = 23
	oidText        = 25
	oidTimestamptz = 1184
)

// tryColumns and holderColumns are the types of tryLockSQL's columns and of
// the holder columns tryLockOrHolderSQL adds.
var (
	tryColumns    = []uint32{oidBool, oidBool, oidInt4}
	holderColumns = []uint32{oidInt4, oidText, oidText, oidText, oidText,
		oidTimestamptz, oidTimestamptz, oidTimestamptz, oidText, oidTimestamptz}
)

// tryStatement is a try-lock statement with the types of its columns and
// the format asked for each: binary for timestamps, which does not depend
// on the session's DateStyle or TimeZone, text for the rest.
type tryStatement struct {
	sql     string
	cols    []uint32
	formats []int16
}

func newTryStatement(sql string, cols []uint32) tryStatement {
	formats := make([]int16, len(cols))
	for i, oid := range cols {
		if oid == oidTimestamptz {
			formats[i] = pgx.BinaryFormatCode
		}
	}
	return tryStatement{sql, cols, formats}
}

var (
	plainTry  = newTryStatement(tryLockSQL, tryColumns)
	holderTry = newTryStatement(tryLockOrHolderSQL, slices.Concat(tryColumns, holderColumns))
)

// tryPgConn runs the try-lock statement on the protocol connection, its
// values decoded here rather than by pgx: a replica that loses the try
// then exits without ever making the pgx layer of its connection (the
// type map alone is about 1.4 M instructions), and a storm is mostly
// losers.
func tryPgConn(ctx context.Context, pc *pgconn.PgConn, withHolder bool, key, hi, lo int64) (tryResult, error) {
	st := plainTry
	if withHolder {
		st = holderTry
	}
	params := [][]byte{strconv.AppendInt(nil, key, 10), strconv.AppendInt(nil, hi, 10), strconv.AppendInt(nil, lo, 10)}
	res := pc.ExecParams(ctx, st.sql, params, []uint32{oidInt8, oidInt8, oidInt8}, nil, st.formats).Read()
	if res.Err != nil {
		return tryResult{}, res.Err
	}
	if len(res.Rows) != 1 || len(res.FieldDescriptions) != len(st.cols) {
		return tryResult{}, fmt.Errorf("try-lock returned %d row(s) of %d column(s), want 1 of %d", len(res.Rows), len(res.FieldDescriptions), len(st.cols))
	}
	for i, fd := range res.FieldDescriptions {
		if fd.DataTypeOID != st.cols[i] {
			return tryResult{}, fmt.Errorf("try-lock column %q has type %d, want %d", fd.Name, fd.DataTypeOID, st.cols[i])
		}
	}
	d := rowDecoder{row: res.Rows[0]}
	r := tryResult{heldBefore: d.bool(), ok: d.bool(), pid: d.int4()}
	if withHolder && d.row[len(tryColumns)] != nil {
		r.holder = &Holder{PID: d.int4(), ApplicationName: d.text(), ClientAddr: d.text(), User: d.text(),
			State: d.text(), Since: d.time(), StateChange: d.time(), QueryStart: d.nullTime(),
			Query: d.text(), ObservedAt: d.time()}
	}
	return r, d.err
}

// rowDecoder reads a row's values in order; the first bad value is kept
// in err and zero values are returned from then on.
type rowDecoder struct {
	row [][]byte
	i   int
	err error
}

func (d *rowDecoder) next() []byte {
	v := d.row[d.i]
	d.i++
	if v == nil && d.err == nil {
		d.err = fmt.Errorf("try-lock column %d is NULL", d.i)
	}
	return v
}

func (d *rowDecoder) bool() bool {
	v := d.next()
	if len(v) != 1 || v[0] != 't' && v[0] != 'f' {
		d.fail("a boolean", v)
		return false
	}
	return v[0] == 't'
}

func (d *rowDecoder) int4() int32 {
	v := d.next()
	n, err := strconv.ParseInt(string(v), 10, 32)
	if err != nil {
		d.fail("an integer", v)
	}
	return int32(n)
}

func (d *rowDecoder) text() string { return string(d.next()) }

// pgEpochMicros is the zero of PostgreSQL's binary timestamps,
// 2000-01-01 00:00 UTC, in Unix microseconds.
const pgEpochMicros = 946_684_800_000_000

func (d *rowDecoder) time() time.Time {
	v := d.next()
	if len(v) != 8 {
		d.fail("a binary timestamp", v)
		return time.Time{}
	}
	// In the local time zone, as pgx returns a timestamptz.
	return time.UnixMicro(pgEpochMicros + int64(binary.BigEndian.Uint64(v)))
}

// nullTime is time for a column that may be NULL.
func (d *rowDecoder) nullTime() *time.Time {
	if d.row[d.i] == nil {
		d.i++
		return nil
	}
	t := d.time()
	return &t
}

func (d *rowDecoder) fail(want string, v []byte) {
	if d.err == nil {
		d.err = errors.New("try-lock column " + strconv.Itoa(d.i) + ": " + strconv.Quote(string(v)) + " is not " + want)
	}
}
