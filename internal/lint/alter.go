package lint

import (
	"fmt"
	"slices"

	"github.com/lockmigrate/lockmigrate/internal/lint/pgparse"
)

func (l *linter) createTable(p *parsedFile, n pgparse.Node) []raw {
	key := tableKey(n.Child("relation"))
	if n.Bool("if_not_exists") && l.cat.online && l.cat.tables[key].exists {
		// A no-op on the server: the table, its rows and its columns stay.
		return nil
	}
	l.create(p, key)
	var out []raw
	pkCols := map[string]bool{}
	for _, e := range n.List("tableElts") {
		if e.Type == "Constraint" && e.Str("contype") == "CONSTR_PRIMARY" {
			for _, k := range e.List("keys") {
				pkCols[k.Str("sval")] = true
			}
		}
	}
	for _, e := range n.List("tableElts") {
		if e.Type != "ColumnDef" {
			continue
		}
		t := l.declare(key, e)
		out = append(out, styleFindings(e, t, pkCols[e.Str("colname")] || hasConstraint(e, "CONSTR_PRIMARY"))...)
		for _, c := range e.List("constraints") {
			if c.Str("contype") == "CONSTR_CHECK" {
				if col := notNullCheck(c); col != "" {
					l.prove(key, col)
				}
			}
		}
	}
	return out
}

// declare records a column definition's type and returns it.
func (l *linter) declare(table string, col pgparse.Node) colType {
	name, mods := col.Child("typeName").TypeName()
	t := colType{name: name, mods: mods}
	if l.columns[table] == nil {
		l.columns[table] = map[string]colType{}
	}
	l.columns[table][col.Str("colname")] = t
	return t
}

func hasConstraint(col pgparse.Node, contype string) bool {
	for _, c := range col.List("constraints") {
		if c.Str("contype") == contype {
			return true
		}
	}
	return false
}

// notNullCheck is the column of a CHECK (col IS NOT NULL) constraint.
func notNullCheck(c pgparse.Node) string {
	e := c.Child("raw_expr")
	if e.Type != "NullTest" || e.Str("nulltesttype") != "IS_NOT_NULL" {
		return ""
	}
	arg := e.Child("arg")
	if f := arg.Strings("fields"); arg.Type == "ColumnRef" && len(f) == 1 {
		return f[0]
	}
	return ""
}

func (l *linter) alterTable(p *parsedFile, n pgparse.Node, at int) []raw {
	if n.Str("objtype") != "OBJECT_TABLE" {
		return nil
	}
	key := tableKey(n.Child("relation"))
	existing := l.existing(key)
	var out []raw
	for _, c := range n.List("cmds") {
		out = append(out, l.alterCmd(p, key, existing, c, at)...)
	}
	return out
}

func (l *linter) alterCmd(p *parsedFile, key string, existing bool, c pgparse.Node, at int) []raw {
	def := c.Child("def")
	col := c.Str("name")
	switch c.Str("subtype") {
	case "AT_DetachPartition":
		if def.Bool("concurrent") && inTx(p) {
			return []raw{{rule: RuleNoTransaction, at: at, msg: "ALTER TABLE ... DETACH PARTITION CONCURRENTLY cannot run inside a transaction block" + txHint}}
		}
	case "AT_AddConstraint":
		return l.addConstraint(p, key, existing, def, at)
	case "AT_ValidateConstraint":
		nv, ok := l.notValid[key+"/"+col]
		if !ok {
			return nil
		}
		delete(l.notValid, key+"/"+col)
		if nv.notNull != "" {
			l.prove(key, nv.notNull)
		}
		if nv.tx == l.tx && existing {
			return []raw{{rule: RuleValidateSameTx, at: at, table: key, msg: fmt.Sprintf("VALIDATE CONSTRAINT %s runs in the same transaction as its NOT VALID add, so its scan holds the add's ACCESS EXCLUSIVE lock", col)}}
		}
	case "AT_SetNotNull":
		return l.setNotNull(key, existing, col, at)
	case "AT_AddColumn":
		return l.addColumn(key, existing, def, at)
	case "AT_AlterColumnType":
		return l.alterType(key, existing, col, def, at)
	case "AT_DropColumn":
		if existing {
			return []raw{{rule: RuleDropColumn, at: at, msg: fmt.Sprintf("DROP COLUMN %s.%s breaks the application version still running during the rollout", key, col)}}
		}
	}
	return nil
}

func (l *linter) addConstraint(p *parsedFile, key string, existing bool, con pgparse.Node, at int) []raw {
	if loc := con.Location(); loc >= 0 {
		at = loc
	}
	name := con.Str("conname")
	switch typ := con.Str("contype"); typ {
	case "CONSTR_FOREIGN", "CONSTR_CHECK":
		notNull := ""
		if typ == "CONSTR_CHECK" {
			notNull = notNullCheck(con)
		}
		if con.Bool("skip_validation") {
			l.notValid[key+"/"+name] = notValidAdd{tx: l.tx, notNull: notNull}
			return nil
		}
		if notNull != "" {
			l.prove(key, notNull)
		}
		if !existing {
			return nil
		}
		what := map[string]string{"CONSTR_FOREIGN": "FOREIGN KEY", "CONSTR_CHECK": "CHECK"}[typ]
		return []raw{{rule: RuleConstraintNotValid, at: at, table: key, msg: fmt.Sprintf("ADD CONSTRAINT %s %s without NOT VALID checks every row of %s under a lock that blocks its writes", name, what, key)}}
	case "CONSTR_PRIMARY", "CONSTR_UNIQUE":
		if con.Str("indexname") != "" || !existing {
			return nil
		}
		what := map[string]string{"CONSTR_PRIMARY": "PRIMARY KEY", "CONSTR_UNIQUE": "UNIQUE"}[typ]
		return []raw{{rule: RuleUniqueUsingIndex, at: at, table: key, msg: fmt.Sprintf("ADD %s on %s builds its index under ACCESS EXCLUSIVE", what, key)}}
	}
	return nil
}

func (l *linter) setNotNull(key string, existing bool, col string, at int) []raw {
	if !existing || l.cat.notNull(key, col) {
		return nil
	}
	if l.version >= 12 && (l.proven[key][col] || l.cat.proven(key, col)) {
		return nil
	}
	msg := fmt.Sprintf("SET NOT NULL on %s.%s scans the whole table under ACCESS EXCLUSIVE: no validated CHECK (%s IS NOT NULL) proves it", key, col, col)
	if l.version < 12 {
		msg = fmt.Sprintf("SET NOT NULL on %s.%s scans the whole table under ACCESS EXCLUSIVE (before PostgreSQL 12 even a validated check does not help)", key, col)
	}
	return []raw{{rule: RuleSetNotNull, at: at, table: key, msg: msg}}
}

func (l *linter) addColumn(key string, existing bool, def pgparse.Node, at int) []raw {
	if loc := def.Location(); loc >= 0 {
		at = loc
	}
	t := l.declare(key, def)
	col := def.Str("colname")
	out := styleFindings(def, t, hasConstraint(def, "CONSTR_PRIMARY"))
	if !existing {
		return out
	}
	var notNull, hasDefault bool
	for _, c := range def.List("constraints") {
		switch c.Str("contype") {
		case "CONSTR_NOTNULL", "CONSTR_PRIMARY":
			notNull = true
		case "CONSTR_DEFAULT":
			hasDefault = true
			if fn := l.volatile(c.Child("raw_expr")); fn != "" {
				out = append(out, raw{rule: RuleAddColumnRewrite, at: at, table: key, msg: fmt.Sprintf("ADD COLUMN %s with the volatile default %s() rewrites %s under ACCESS EXCLUSIVE", col, fn, key)})
			} else if l.version < 11 {
				out = append(out, raw{rule: RuleAddColumnRewrite, at: at, table: key, msg: fmt.Sprintf("ADD COLUMN %s with a default rewrites %s under ACCESS EXCLUSIVE before PostgreSQL 11", col, key)})
			}
		case "CONSTR_GENERATED":
			hasDefault = true
			out = append(out, raw{rule: RuleAddColumnRewrite, at: at, table: key, msg: fmt.Sprintf("ADD COLUMN %s GENERATED ... STORED computes every row: it rewrites %s under ACCESS EXCLUSIVE", col, key)})
		case "CONSTR_IDENTITY":
			hasDefault = true
			out = append(out, raw{rule: RuleAddColumnRewrite, at: at, table: key, msg: fmt.Sprintf("ADD COLUMN %s GENERATED AS IDENTITY numbers every row: it rewrites %s under ACCESS EXCLUSIVE", col, key)})
		}
	}
	if isSerial(t.name) {
		hasDefault = true
		out = append(out, raw{rule: RuleAddColumnRewrite, at: at, table: key, msg: fmt.Sprintf("ADD COLUMN %s %s fills every row from a sequence (nextval() is volatile): it rewrites %s under ACCESS EXCLUSIVE", col, t.name, key)})
	}
	if notNull && !hasDefault {
		out = append(out, raw{rule: RuleAddColumnNotNull, at: at, msg: fmt.Sprintf("ADD COLUMN %s NOT NULL without a default fails if %s has any row", col, key)})
	}
	return out
}

// knownVolatile are built-in (and common extension) functions whose
// default makes ADD COLUMN rewrite the table.
var knownVolatile = []string{"random", "clock_timestamp", "timeofday", "gen_random_uuid", "uuidv4", "uuidv7",
	"uuid_generate_v1", "uuid_generate_v1mc", "uuid_generate_v4", "nextval", "gen_random_bytes", "random_normal"}

// volatile names the first volatile function an expression calls ("" if
// none is known to be).
func (l *linter) volatile(e pgparse.Node) string {
	found := ""
	e.Walk(func(n pgparse.Node) bool {
		if found != "" {
			return false
		}
		if n.Type == "FuncCall" {
			names := n.Strings("funcname")
			name := names[len(names)-1]
			if slices.Contains(knownVolatile, name) || l.cat.volatile[name] {
				found = name
				return false
			}
		}
		return true
	})
	return found
}

func isSerial(t string) bool {
	return slices.Contains([]string{"serial", "bigserial", "smallserial", "serial2", "serial4", "serial8"}, t)
}

func (l *linter) alterType(key string, existing bool, col string, def pgparse.Node, at int) []raw {
	name, mods := def.Child("typeName").TypeName()
	to := colType{name: name, mods: mods}
	from, known := l.columns[key][col]
	if !known {
		from, known = l.cat.column(key, col)
	}
	if l.columns[key] != nil {
		l.columns[key][col] = to
	}
	out := styleFindings(def, to, false)
	if !existing {
		return out
	}
	if def.Child("raw_default").Valid() {
		return append(out, raw{rule: RuleAlterColumnType, at: at, table: key, msg: fmt.Sprintf("ALTER COLUMN %s TYPE %s USING ... rewrites %s under ACCESS EXCLUSIVE", col, to, key)})
	}
	if !known {
		return append(out, raw{rule: RuleAlterColumnType, at: at, table: key, msg: fmt.Sprintf("ALTER COLUMN %s TYPE %s rewrites %s under ACCESS EXCLUSIVE unless it is a binary-compatible widening (the current type is not known to the linter)", col, to, key)})
	}
	if widening(from, to) {
		return out
	}
	return append(out, raw{rule: RuleAlterColumnType, at: at, table: key, msg: fmt.Sprintf("ALTER COLUMN %s TYPE %s (from %s) rewrites %s and its indexes under ACCESS EXCLUSIVE", col, to, from, key)})
}

func (t colType) String() string {
	if len(t.mods) == 0 {
		return t.name
	}
	s := t.name + "("
	for i, m := range t.mods {
		if i > 0 {
			s += ","
		}
		s += fmt.Sprint(m)
	}
	return s + ")"
}

// widening reports whether changing a column from one type to the other
// is binary compatible, so PostgreSQL neither rewrites nor scans the table.
func widening(from, to colType) bool {
	switch {
	case from.name == to.name && slices.Equal(from.mods, to.mods):
		return true
	case from.name == "varchar" && (to.name == "text" || to.name == "varchar" && (len(to.mods) == 0 || len(from.mods) == 1 && to.mods[0] >= from.mods[0])):
		return true
	case from.name == "text" && to.name == "varchar" && len(to.mods) == 0:
		return true
	case from.name == "varbit" && to.name == "varbit" && (len(to.mods) == 0 || len(from.mods) == 1 && to.mods[0] >= from.mods[0]):
		return true
	case from.name == "numeric" && to.name == "numeric":
		if len(to.mods) == 0 {
			return true
		}
		fs, ts := 0, 0
		if len(from.mods) == 2 {
			fs = from.mods[1]
		}
		if len(to.mods) == 2 {
			ts = to.mods[1]
		}
		return len(from.mods) > 0 && to.mods[0] >= from.mods[0] && fs == ts
	case from.name == "cidr" && to.name == "inet":
		return true
	}
	return false
}

// styleFindings are the style rules' findings for a column definition.
func styleFindings(col pgparse.Node, t colType, primaryKey bool) []raw {
	at := col.Location()
	name := col.Str("colname")
	var out []raw
	switch {
	case t.name == "json":
		out = append(out, raw{rule: RulePreferJSONB, at: at, msg: fmt.Sprintf("column %s is json; jsonb is stored parsed and can be indexed", name)})
	case t.name == "timestamp":
		out = append(out, raw{rule: RulePreferTimestamptz, at: at, msg: fmt.Sprintf("column %s is timestamp without time zone", name)})
	case t.name == "bpchar":
		out = append(out, raw{rule: RulePreferText, at: at, msg: fmt.Sprintf("column %s is %s, padded with spaces", name, t)})
	case isSerial(t.name):
		out = append(out, raw{rule: RulePreferIdentity, at: at, msg: fmt.Sprintf("column %s is %s; an identity column is standard and owns its sequence", name, t.name)})
	}
	if primaryKey && slices.Contains([]string{"int4", "int2", "serial", "serial4", "smallserial", "serial2"}, t.name) {
		out = append(out, raw{rule: RulePreferBigintPrimary, at: at, msg: fmt.Sprintf("primary key column %s is %s, which runs out at 2^31", name, t.name)})
	}
	return out
}
