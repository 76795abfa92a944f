package lock

import (
	"crypto/sha256"
	"encoding/binary"
	"strconv"
	"strings"
)

// KeyFromString hashes an arbitrary string to an advisory-lock key: the first
// eight bytes of its SHA-256, read big-endian as a signed int64. Hashing lets
// operators name locks with readable strings while PostgreSQL only accepts
// 64-bit keys; SHA-256 keeps the value identical across languages and tools,
// so a psql session can compute the same key to inspect or release the lock.
func KeyFromString(s string) int64 {
	sum := sha256.Sum256([]byte(s))
	return int64(binary.BigEndian.Uint64(sum[:8]))
}

// DefaultKey is the key used when none is configured. It is derived from the
// history table's qualified name, so two applications that keep separate
// history tables in one database never block each other, while every replica
// of one application agrees on the key without configuration.
func DefaultKey(schema, table string) int64 {
	return KeyFromString("lockmigrate:" + schema + "." + table)
}

// ParseKey turns a configured key into an int64: a decimal integer is used as
// is (so keys shared with other tools keep working), anything else is hashed
// with KeyFromString.
func ParseKey(s string) int64 {
	if n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64); err == nil {
		return n
	}
	return KeyFromString(s)
}
