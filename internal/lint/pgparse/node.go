package pgparse

import (
	"strings"
	"unicode"
)

// Node is one node of libpg_query's JSON parse tree. A field of a node
// type (Node* in PostgreSQL's structs) is written {"TypeName": {fields}};
// a field of a fixed struct type (a RangeVar relation, a TypeName) is
// written {fields} alone, and has an empty Type here.
type Node struct {
	Type   string
	Fields map[string]any
}

// wrapped reads a node written {"Type": {fields}}, or a plain struct.
func wrapped(v any) Node {
	m, ok := v.(map[string]any)
	if !ok {
		return Node{}
	}
	if len(m) == 1 {
		for k, inner := range m {
			if f, ok := inner.(map[string]any); ok && k != "" && unicode.IsUpper(rune(k[0])) {
				return Node{Type: k, Fields: f}
			}
		}
	}
	return Node{Fields: m}
}

// Valid reports whether the node is present.
func (n Node) Valid() bool { return n.Fields != nil }

// Str is a string field ("" when absent).
func (n Node) Str(key string) string {
	s, _ := n.Fields[key].(string)
	return s
}

// Bool is a boolean field (false when absent: the JSON omits defaults).
func (n Node) Bool(key string) bool {
	b, _ := n.Fields[key].(bool)
	return b
}

// Int is a numeric field (0 when absent).
func (n Node) Int(key string) int {
	f, _ := n.Fields[key].(float64)
	return int(f)
}

// Child is a node-valued field.
func (n Node) Child(key string) Node { return wrapped(n.Fields[key]) }

// List is a list-valued field.
func (n Node) List(key string) []Node {
	l, _ := n.Fields[key].([]any)
	out := make([]Node, 0, len(l))
	for _, v := range l {
		out = append(out, wrapped(v))
	}
	return out
}

// Location is the node's byte offset in the parsed text, -1 when unknown.
func (n Node) Location() int {
	if f, ok := n.Fields["location"].(float64); ok {
		return int(f)
	}
	return -1
}

// Strings is a list of String nodes (a qualified name, a type name) as
// its values.
func (n Node) Strings(key string) []string {
	var out []string
	for _, s := range n.List(key) {
		out = append(out, s.Str("sval"))
	}
	return out
}

// Walk calls fn for n and every node below it, depth first, until fn
// returns false for a node (its children are then skipped).
func (n Node) Walk(fn func(Node) bool) {
	if !n.Valid() || !fn(n) {
		return
	}
	for _, v := range n.Fields {
		switch x := v.(type) {
		case map[string]any:
			wrapped(x).Walk(fn)
		case []any:
			for _, e := range x {
				wrapped(e).Walk(fn)
			}
		}
	}
}

// QualifiedName joins a RangeVar's schema and relation name.
func (n Node) QualifiedName() string {
	if s := n.Str("schemaname"); s != "" {
		return s + "." + n.Str("relname")
	}
	return n.Str("relname")
}

// TypeName is a TypeName node's last name part, lower case ("int4",
// "varchar", "serial"), and its type modifiers.
func (n Node) TypeName() (name string, mods []int) {
	names := n.Strings("names")
	if len(names) > 0 {
		name = strings.ToLower(names[len(names)-1])
	}
	for _, m := range n.List("typmods") {
		if c := m.Child("ival"); m.Type == "A_Const" && c.Valid() {
			mods = append(mods, c.Int("ival"))
		}
	}
	return name, mods
}
