package lint

import (
	"fmt"
	"strings"

	"github.com/lockmigrate/lockmigrate/internal/lint/pgparse"
)

// statement checks one statement and records what it creates and proves.
func (l *linter) statement(p *parsedFile, st pgparse.Stmt) []raw {
	n := st.Node
	at := st.Start
	switch n.Type {
	case "IndexStmt":
		return l.createIndex(p, n, at)
	case "DropStmt":
		return l.drop(p, n, at)
	case "ReindexStmt":
		return l.reindex(p, n, at)
	case "AlterTableStmt":
		return l.alterTable(p, n, at)
	case "RenameStmt":
		return l.rename(p, n, at)
	case "VacuumStmt":
		return l.vacuum(p, n, at)
	case "ClusterStmt":
		return l.cluster(p, n, at)
	case "LockStmt":
		return l.lock(p, n, at)
	case "UpdateStmt", "DeleteStmt":
		return l.dml(p, n, at)
	case "AlterEnumStmt":
		if n.Str("newVal") != "" && inTx(p) && l.version < 12 {
			return []raw{{rule: RuleEnumAddValueTx, at: at, msg: fmt.Sprintf("ALTER TYPE ... ADD VALUE cannot run inside a transaction block on PostgreSQL %d (before 12)", l.version)}}
		}
	case "CreateStmt":
		return l.createTable(p, n)
	case "CreateTableAsStmt":
		if into := n.Child("into"); into.Valid() {
			l.create(p, tableKey(into.Child("rel")))
		}
	}
	if what := nonTransactional(n); what != "" && inTx(p) {
		return []raw{{rule: RuleNoTransaction, at: at, msg: what + " cannot run inside a transaction block" + txHint}}
	}
	return nil
}

// nonTransactional names the statements, other than those checked with
// their own rules, that PostgreSQL refuses inside a transaction block.
func nonTransactional(n pgparse.Node) string {
	switch n.Type {
	case "CreatedbStmt":
		return "CREATE DATABASE"
	case "DropdbStmt":
		return "DROP DATABASE"
	case "AlterSystemStmt":
		return "ALTER SYSTEM"
	case "CreateTableSpaceStmt":
		return "CREATE TABLESPACE"
	case "DropTableSpaceStmt":
		return "DROP TABLESPACE"
	case "CreateSubscriptionStmt":
		if !optionFalse(n.List("options"), "create_slot") && !optionFalse(n.List("options"), "connect") {
			return "CREATE SUBSCRIPTION (creating a replication slot)"
		}
	case "DropSubscriptionStmt":
		return "DROP SUBSCRIPTION (of a subscription with a replication slot)"
	case "AlterDatabaseStmt":
		for _, o := range n.List("options") {
			if o.Str("defname") == "tablespace" {
				return "ALTER DATABASE ... SET TABLESPACE"
			}
		}
	case "DiscardStmt":
		if n.Str("target") == "DISCARD_ALL" {
			return "DISCARD ALL"
		}
	}
	return ""
}

// optionFalse reports whether a WITH (...) list sets name to false.
func optionFalse(opts []pgparse.Node, name string) bool {
	for _, o := range opts {
		if o.Str("defname") == name {
			v := strings.ToLower(defString(o))
			return v == "false" || v == "off" || v == "0" || v == "none"
		}
	}
	return false
}

// optionSet reports whether a DefElem list has name set (alone, or to a
// true value).
func optionSet(opts []pgparse.Node, name string) bool {
	for _, o := range opts {
		if o.Str("defname") == name {
			v := strings.ToLower(defString(o))
			return v == "" || v == "true" || v == "on" || v == "1"
		}
	}
	return false
}

// defString is a DefElem's argument as text ("" when it has none).
func defString(o pgparse.Node) string {
	a := o.Child("arg")
	switch a.Type {
	case "String":
		return a.Str("sval")
	case "Boolean":
		return fmt.Sprint(a.Bool("boolval"))
	case "Integer":
		return fmt.Sprint(a.Int("ival"))
	case "A_Const":
		if b := a.Child("boolval"); b.Valid() {
			return fmt.Sprint(b.Bool("boolval"))
		}
		if s := a.Child("sval"); s.Valid() {
			return s.Str("sval")
		}
		if i := a.Child("ival"); i.Valid() {
			return fmt.Sprint(i.Int("ival"))
		}
	}
	return ""
}

func (l *linter) createIndex(p *parsedFile, n pgparse.Node, at int) []raw {
	rel := n.Child("relation")
	key := tableKey(rel)
	if idx := n.Str("idxname"); idx != "" {
		ikey := nameKey([]string{rel.Str("schemaname"), idx})
		if rel.Str("schemaname") == "" {
			ikey = idx
		}
		l.indexTable[ikey] = key
		if !p.Applied && !l.existing(key) {
			l.newIndex[ikey] = true
		}
	}
	if n.Bool("concurrent") {
		if inTx(p) {
			return []raw{{rule: RuleNoTransaction, at: at, msg: "CREATE INDEX CONCURRENTLY cannot run inside a transaction block" + txHint}}
		}
		return nil
	}
	if !l.existing(key) {
		return nil
	}
	return []raw{{rule: RuleIndexConcurrently, at: at, table: key,
		msg: fmt.Sprintf("CREATE INDEX on %s without CONCURRENTLY blocks its writes (SHARE lock) for the whole build", key)}}
}

func (l *linter) drop(p *parsedFile, n pgparse.Node, at int) []raw {
	var out []raw
	switch n.Str("removeType") {
	case "OBJECT_INDEX":
		if n.Bool("concurrent") {
			if inTx(p) {
				out = append(out, raw{rule: RuleNoTransaction, at: at, msg: "DROP INDEX CONCURRENTLY cannot run inside a transaction block" + txHint})
			}
			return out
		}
		for _, obj := range n.List("objects") {
			ikey := nameKey(obj.Strings("items"))
			table, known := l.indexTable[ikey]
			if l.newIndex[ikey] || (known && !l.existing(table)) || (l.cat.online && !l.cat.indexExists(ikey)) {
				continue
			}
			if !known {
				table = l.cat.indexTable[ikey]
			}
			out = append(out, raw{rule: RuleIndexConcurrently, at: at, table: table,
				msg: fmt.Sprintf("DROP INDEX %s without CONCURRENTLY blocks every read and write of its table (ACCESS EXCLUSIVE)", ikey)})
		}
	case "OBJECT_TABLE":
		for _, obj := range n.List("objects") {
			key := nameKey(obj.Strings("items"))
			if l.existing(key) {
				out = append(out, raw{rule: RuleDropTable, at: at,
					msg: fmt.Sprintf("DROP TABLE %s breaks the application version still running during the rollout", key)})
			}
			delete(l.created, key)
		}
	}
	return out
}

func (l *linter) reindex(p *parsedFile, n pgparse.Node, at int) []raw {
	kind := n.Str("kind")
	concurrent := optionSet(n.List("params"), "concurrently")
	if inTx(p) && (concurrent || kind == "REINDEX_OBJECT_SCHEMA" || kind == "REINDEX_OBJECT_DATABASE" || kind == "REINDEX_OBJECT_SYSTEM") {
		return []raw{{rule: RuleNoTransaction, at: at, msg: "REINDEX " + strings.TrimPrefix(kind, "REINDEX_OBJECT_") +
			map[bool]string{true: " CONCURRENTLY", false: ""}[concurrent] + " cannot run inside a transaction block" + txHint}}
	}
	if concurrent {
		return nil
	}
	var key string
	switch kind {
	case "REINDEX_OBJECT_TABLE":
		key = tableKey(n.Child("relation"))
	case "REINDEX_OBJECT_INDEX":
		ikey := tableKey(n.Child("relation"))
		if l.newIndex[ikey] {
			return nil
		}
		if key = l.indexTable[ikey]; key == "" {
			key = l.cat.indexTable[ikey]
		}
	}
	if key != "" && !l.existing(key) {
		return nil
	}
	return []raw{{rule: RuleIndexConcurrently, at: at, table: key,
		msg: "REINDEX without CONCURRENTLY blocks writes of the table and reads through its indexes (PostgreSQL 12+ has REINDEX CONCURRENTLY)"}}
}

func (l *linter) rename(p *parsedFile, n pgparse.Node, at int) []raw {
	rel := n.Child("relation")
	key := tableKey(rel)
	switch n.Str("renameType") {
	case "OBJECT_COLUMN":
		if l.existing(key) {
			return []raw{{rule: RuleRenameColumn, at: at, msg: fmt.Sprintf("renaming column %s.%s to %s breaks the application version still running", key, n.Str("subname"), n.Str("newname"))}}
		}
	case "OBJECT_TABLE":
		newKey := tableKey(pgparse.Node{Fields: map[string]any{"schemaname": rel.Str("schemaname"), "relname": n.Str("newname")}})
		existed := l.existing(key)
		if l.created[key] {
			l.created[newKey] = true
		}
		l.columns[newKey] = l.columns[key]
		if existed {
			return []raw{{rule: RuleRenameTable, at: at, msg: fmt.Sprintf("renaming table %s to %s breaks the application version still running", key, n.Str("newname"))}}
		}
	}
	return nil
}

func (l *linter) vacuum(p *parsedFile, n pgparse.Node, at int) []raw {
	if !n.Bool("is_vacuumcmd") {
		return nil // ANALYZE runs in a transaction and takes a light lock
	}
	if inTx(p) {
		return []raw{{rule: RuleNoTransaction, at: at, msg: "VACUUM cannot run inside a transaction block" + txHint}}
	}
	if !optionSet(n.List("options"), "full") {
		return nil
	}
	rels := n.List("rels")
	if len(rels) == 0 {
		return []raw{{rule: RuleVacuumFull, at: at, msg: "VACUUM FULL of the whole database rewrites every table under ACCESS EXCLUSIVE"}}
	}
	var out []raw
	for _, r := range rels {
		key := tableKey(r.Child("relation"))
		if l.existing(key) {
			out = append(out, raw{rule: RuleVacuumFull, at: at, table: key, msg: fmt.Sprintf("VACUUM FULL %s rewrites it under ACCESS EXCLUSIVE", key)})
		}
	}
	return out
}

func (l *linter) cluster(p *parsedFile, n pgparse.Node, at int) []raw {
	rel := n.Child("relation")
	if !rel.Valid() {
		if inTx(p) {
			return []raw{{rule: RuleNoTransaction, at: at, msg: "CLUSTER without a table cannot run inside a transaction block" + txHint}}
		}
		return []raw{{rule: RuleCluster, at: at, msg: "CLUSTER rewrites every clustered table under ACCESS EXCLUSIVE"}}
	}
	key := tableKey(rel)
	if !l.existing(key) {
		return nil
	}
	return []raw{{rule: RuleCluster, at: at, table: key, msg: fmt.Sprintf("CLUSTER %s rewrites it under ACCESS EXCLUSIVE", key)}}
}

// lockModes names LOCK TABLE's modes by PostgreSQL's numbers.
var lockModes = []string{"", "ACCESS SHARE", "ROW SHARE", "ROW EXCLUSIVE", "SHARE UPDATE EXCLUSIVE", "SHARE", "SHARE ROW EXCLUSIVE", "EXCLUSIVE", "ACCESS EXCLUSIVE"}

func (l *linter) lock(p *parsedFile, n pgparse.Node, at int) []raw {
	mode := n.Int("mode")
	if mode < 5 || mode >= len(lockModes) {
		return nil
	}
	var out []raw
	for _, r := range n.List("relations") {
		if key := tableKey(r); l.existing(key) {
			out = append(out, raw{rule: RuleLockTable, at: at, msg: fmt.Sprintf("LOCK TABLE %s IN %s MODE blocks its writers%s until the transaction ends",
				key, lockModes[mode], map[bool]string{true: " and readers", false: ""}[mode == 8])})
		}
	}
	return out
}

func (l *linter) dml(p *parsedFile, n pgparse.Node, at int) []raw {
	if !inTx(p) || n.Child("whereClause").Valid() {
		return nil
	}
	key := tableKey(n.Child("relation"))
	if !l.existing(key) {
		return nil
	}
	verb := map[string]string{"UpdateStmt": "UPDATE", "DeleteStmt": "DELETE"}[n.Type]
	return []raw{{rule: RuleUnbatchedDML, at: at, table: key,
		msg: fmt.Sprintf("%s of every row of %s in one transaction locks them all until it commits", verb, key)}}
}
