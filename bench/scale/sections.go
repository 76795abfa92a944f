package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

const (
	gcOff   = ", GOGC=off" // suffix: dirName + gcOff is the GOGC=off run
	dirName = "lockmigrate (dir)"
	embName = "lockmigrate (embedded)"
	// readName is the floor that also reads every file of the directory:
	// the kernel's cost per file, the least a directory slope can be.
	readName = "floor (reads the dir)"
)

// noopSection: the no-op start against the number of applied migrations.
func (r *report) noopSection() {
	d := r.d
	if len(d.noop) == 0 {
		return
	}
	floor, dir := medians("floor", d.noop["floor"], 1e3), medians(dirName, d.noop[dirName], 1e3)
	emb, goose := medians(embName, d.noop[embName], 1e3), medians("goose", d.noop["goose"], 1e3)
	read := medians(readName, d.noop[readName], 1e3)
	r.f("### No-op start against applied migrations\n\n")
	r.f("A whole process that finds every migration applied: hyperfine `-N`, median of every run pooled over the rounds; the floor connects and takes the try-lock only, so its line is flat; the floor that reads the dir also reads every file of lockmigrate's directory to its end (open, read until EOF, close; on GOMAXPROCS goroutines from 512 files on, as lockmigrate), while it connects, and hashes and parses nothing. lockmigrate (dir) reads `LOCKMIGRATE_DIR`; (embedded) is built with the set in `migrations/` (go:embed). Instructions: valgrind `--tool=callgrind` total Ir of one run, of the CGO_ENABLED=0 builds as shipped.\n\n")
	r.f("![no-op wall](plots/noop-wall.png)\n\n")
	r.f("| applied | floor (ms) | lockmigrate dir (ms) | × floor | embedded (ms) | × floor | goose (ms) | × floor | dir × goose |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range allSizes(floor, dir, emb, goose) {
		f := floor.v[s]
		r.f("| %d | %s | %s | %s | %s | %s | %s | %s | %s |\n", s, fmtMs(f), fmtMs(dir.v[s]), ratio(dir.v[s], f),
			fmtMs(emb.v[s]), ratio(emb.v[s], f), fmtMs(goose.v[s]), ratio(goose.v[s], f), ratio(dir.v[s], goose.v[s]))
	}
	ir := map[string]curve{}
	for _, n := range []string{"floor", dirName, embName, "goose"} {
		ir[n] = curve{name: n, v: d.noopIr[n]}
	}
	r.f("\n![no-op instructions](plots/noop-instructions.png)\n\n")
	r.f("| applied | floor (Ir) | lockmigrate dir | × floor | embedded | × floor | goose | × floor | dir × goose |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range allSizes(ir["floor"], ir[dirName]) {
		f := ir["floor"].v[s]
		r.f("| %d | %s | %s | %s | %s | %s | %s | %s | %s |\n", s, fmtIr(f), fmtIr(ir[dirName].v[s]), ratio(ir[dirName].v[s], f),
			fmtIr(ir[embName].v[s]), ratio(ir[embName].v[s], f), fmtIr(ir["goose"].v[s]), ratio(ir["goose"].v[s], f),
			ratio(ir[dirName].v[s], ir["goose"].v[s]))
	}
	if off := d.noopIr[dirName+gcOff]; len(off) > 0 {
		r.f("\nThe garbage collector's part: lockmigrate (dir) run again under callgrind with `GOGC=off`.\n\n| applied | lockmigrate dir (Ir) | with GOGC=off | the collector's share |\n|---:|---:|---:|---:|\n")
		for _, s := range sizes(off) {
			on := ir[dirName].v[s]
			share := "–"
			if on > 0 {
				share = fmt.Sprintf("%.0f %%", 100*(on-off[s])/on)
			}
			r.f("| %d | %s | %s | %s |\n", s, fmtIr(on), fmtIr(off[s]), share)
		}
		ir[dirName+gcOff] = curve{name: dirName + gcOff, v: off}
	}
	r.noopSlopes(ir, floor, read, dir, emb, goose)
	r.superlinearNote("no-op wall", dir, emb)
	r.superlinearNote("no-op instructions", ir[dirName], ir[embName])
	r.plots = append(r.plots,
		plot{name: "noop-wall", title: "No-op start: wall median", xlabel: "applied migrations", ylabel: "ms", logY: true,
			series: []series{{"floor", points(floor)}, {readName, points(read)}, {dirName, points(dir)}, {embName, points(emb)}, {"goose", points(goose)}}},
		plot{name: "noop-instructions", title: "No-op start: instructions (callgrind Ir)", xlabel: "applied migrations", ylabel: "million instructions", logY: true,
			series: []series{{"floor", points(scale(ir["floor"], 1e-6))}, {dirName, points(scale(ir[dirName], 1e-6))},
				{embName, points(scale(ir[embName], 1e-6))}, {"goose", points(scale(ir["goose"], 1e-6))},
				{dirName + gcOff, points(scale(ir[dirName+gcOff], 1e-6))}}})
}

// noopSlopes writes the no-op's cost per applied migration, wall and
// instructions (ir: the instruction curves by name), and the slope
// targets, the directory's against the floor that reads the same files.
func (r *report) noopSlopes(ir map[string]curve, floor, read, dir, emb, goose curve) {
	r.f("\nCost per applied migration: least-squares slope over the sizes, and the marginal cost between consecutive sizes (a marginal that grows with the size is superlinear).\n\n")
	r.f("| tool | slope (µs wall / migration) | marginal (µs / migration) | slope (instructions / migration) | marginal (instructions / migration) |\n|---|---:|---|---:|---|\n")
	for _, c := range []curve{floor, read, dir, emb, goose} {
		if len(c.v) == 0 {
			continue
		}
		irSlope, irMarg := "–", "–"
		if irc, ok := ir[c.name]; ok && len(irc.v) > 0 {
			irSlope, irMarg = fmt.Sprintf("%.0f", irc.fit()), strings.Join(irc.marginals(1, 0), ", ")
		}
		r.f("| %s | %.2f | %s | %s | %s |\n", c.name, c.fit()*1e3, strings.Join(c.marginals(1e3, 2), ", "), irSlope, irMarg)
	}
	if off, ok := ir[dirName+gcOff]; ok {
		r.f("| lockmigrate (dir), GOGC=off | – | – | %.0f | %s |\n", off.fit(), strings.Join(off.marginals(1, 0), ", "))
	}
	r.f("\n")
	for _, c := range []curve{dir, emb} {
		s := c.fit() * 1e3
		got := fmt.Sprintf("%.2f µs (%.0f instructions) per migration", s, ir[c.name].fit())
		if c.name == dirName && len(read.v) > 0 {
			rs := read.fit() * 1e3
			got += fmt.Sprintf("; reading the files alone (%s): %.2f µs, lockmigrate %.2f× it", readName, rs, s/rs)
		}
		r.target(fmt.Sprintf("no-op slope, %s, ≤ 2 µs wall per applied migration", c.name), got, s <= 2)
	}
}

func scale(c curve, k float64) curve {
	out := curve{name: c.name, v: map[int]float64{}}
	for s, v := range c.v {
		out.v[s] = v * k
	}
	return out
}

// superlinearNote flags curves whose marginal cost grows at the top size.
func (r *report) superlinearNote(what string, cs ...curve) {
	for _, c := range cs {
		if ok, k := c.superlinear(); ok {
			ss := sizes(c.v)
			n := len(ss)
			r.f("**Superlinear:** %s of %s: the marginal cost per unit from %d to %d is %.1f× the one from %d to %d.\n\n",
				what, c.name, ss[n-2], ss[n-1], k, ss[n-3], ss[n-2])
		}
	}
}

// applySection: apply of N fresh migrations, each and all, against the floor.
func (r *report) applySection() {
	d := r.d
	if len(d.apply) == 0 {
		return
	}
	floor, each, all := medians("floor", d.apply["floor"], 1), medians("each", d.apply["each"], 1), medians("all", d.apply["all"], 1)
	r.f("### Apply of fresh migrations\n\n")
	r.f("One process applies N migrations to a fresh database (hyperfine `--prepare` drops and re-creates it, untimed); median of every run pooled over rounds that go through floor, `each`, `all` in turn; client CPU: hyperfine's mean user + system time of the process. The floor sends each file and its history row as one query (one implicit transaction).\n\n")
	r.f("![apply](plots/apply.png)\n\n")
	r.f("| migrations | runs | floor (s) | each (s) | × floor | all (s) | × floor | floor ms/migration | each ms/migration | all ms/migration | client CPU µs/migration: floor / each / all |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	cpu := func(t string, s int) float64 { return median(d.applyCPU[t][s]) / float64(s) * 1e6 }
	worst, worstAt := 0.0, 0
	for _, s := range allSizes(floor, each, all) {
		f := floor.v[s]
		r.f("| %d | %d | %.3f | %.3f | %s | %.3f | %s | %.3f | %.3f | %.3f | %.0f / %.0f / %.0f |\n", s, len(d.apply["each"][s]), f, each.v[s], ratio(each.v[s], f),
			all.v[s], ratio(all.v[s], f), f/float64(s)*1e3, each.v[s]/float64(s)*1e3, all.v[s]/float64(s)*1e3,
			cpu("floor", s), cpu("each", s), cpu("all", s))
		if f > 0 && each.v[s]/f > worst {
			worst, worstAt = each.v[s]/f, s
		}
	}
	r.f("\n| tool | fixed cost (ms, intercept) | slope (ms / migration) | marginal (ms / migration) |\n|---|---:|---:|---|\n")
	for _, c := range []curve{floor, each, all} {
		r.f("| %s | %.1f | %.3f | %s |\n", c.name, c.fixed()*1e3, c.fit()*1e3, strings.Join(c.marginals(1e3, 3), ", "))
	}
	r.f("\n")
	r.superlinearNote("apply time", floor, each, all)
	failedAt := map[string]string{}
	for _, f := range d.allFailed {
		if len(f) >= 3 && failedAt[f[0]] == "" {
			failedAt[f[0]] = f[2]
		}
	}
	for _, s := range sizes(all.v) {
		if e := failedAt[fmt.Sprint(s)]; e != "" {
			r.f("**`all` at %d fails with the server's defaults** (max_locks_per_transaction = 64): `%s`. One transaction takes the lock of every table it creates, and the shared lock table holds max_locks_per_transaction × (max_connections + max_prepared_transactions) locks; the `all` row at %d was measured after restarting the server with max_locks_per_transaction = %s.\n\n", s, e, s, d.meta["apply_locks"])
		}
	}
	r.target("apply `each` ≤ 1.05× the floor at every size", fmt.Sprintf("worst %.2f× (at %d)", worst, worstAt), worst <= 1.05)
	var alls []string
	for _, s := range sizes(all.v) {
		alls = append(alls, fmt.Sprintf("%d: %s", s, ratio(all.v[s], floor.v[s])))
	}
	r.targets = append(r.targets, [3]string{"apply `all` (reported)", strings.Join(alls, ", ") + " of the floor", "–"})
	per := func(c curve) curve {
		out := curve{name: c.name, v: map[int]float64{}}
		for s, v := range c.v {
			out.v[s] = v / float64(s) * 1e3
		}
		return out
	}
	r.plots = append(r.plots, plot{name: "apply", title: "Apply of N fresh migrations: time per migration (flat = linear)",
		xlabel: "migrations", ylabel: "ms per migration (median run / N)",
		series: []series{{"floor", points(per(floor))}, {"lockmigrate each", points(per(each))}, {"lockmigrate all", points(per(all))}}})
}

// stormKey groups storm runs.
type stormKey struct {
	tool    string
	maxConn int
	n       int
}

type stormAgg struct {
	walls, cpus           []float64
	nonzero, retried, bad int // bad: rounds that were not exactly once
	rounds                int
	err                   string
}

func (r *report) aggStorm() (map[stormKey]*stormAgg, []int, []int) {
	agg := map[stormKey]*stormAgg{}
	var mcs, ns []int
	set := atoi(r.d.meta["storm_set"])
	for _, s := range r.d.storm {
		k := stormKey{s.tool, s.maxConn, s.n}
		a := agg[k]
		if a == nil {
			a = &stormAgg{}
			agg[k] = a
		}
		a.walls = append(a.walls, float64(s.wallMs))
		a.cpus = append(a.cpus, float64(s.cpuMs))
		a.nonzero += s.nonzero
		a.retried += s.retried
		a.rounds++
		if s.count != set || s.distinct != set {
			a.bad++
		}
		if s.err != "-" && a.err == "" {
			a.err = s.err
		}
		if !slices.Contains(mcs, s.maxConn) {
			mcs = append(mcs, s.maxConn)
		}
		if !slices.Contains(ns, s.n) {
			ns = append(ns, s.n)
		}
	}
	slices.Sort(ns)
	slices.SortFunc(mcs, func(a, b int) int { return b - a })
	return agg, mcs, ns
}

// stormSection: N replicas released at once, per max_connections.
func (r *report) stormSection() {
	if len(r.d.storm) == 0 {
		return
	}
	agg, mcs, ns := r.aggStorm()
	r.f("### N replicas released at once\n\n")
	r.f("As bench/run.sh's scenario 3 (on 2 cores, so the replicas' process start-up competes with the server; the CPU column is the user + system time of all replicas, from the shell's children times, divided by N): N replicas forked and parked on a FIFO, released by one write, each `exec`s the tool against an empty database with %s migrations that each insert their version into `applied_log`; wall from the release to the last exit (median over rounds); exactly once: `count(*) = count(DISTINCT version) = %s` in every round. lockmigrate retries `53300 too_many_connections` at connect (`retried`: replicas that logged a retry); the floor does not.\n\n", r.d.meta["storm_set"], r.d.meta["storm_set"])
	r.f("![storm](plots/storm.png)\n\n")
	var ser []series
	worst, worstAt, fails, notOnce := 0.0, "", 0, 0
	for _, mc := range mcs {
		r.f("max_connections = %d:\n\n| N | floor wall (ms) | floor non-zero exits | floor exactly once | lockmigrate wall (ms) | non-zero exits | exactly once | retried connect | × floor | CPU per replica, floor / lockmigrate (ms) |\n|---:|---:|---:|---|---:|---:|---|---:|---:|---:|\n", mc)
		fc, lc := curve{v: map[int]float64{}}, curve{v: map[int]float64{}}
		for _, n := range ns {
			f, l := agg[stormKey{"floor", mc, n}], agg[stormKey{"lockmigrate", mc, n}]
			if f == nil || l == nil {
				continue
			}
			fw, lw := median(f.walls), median(l.walls)
			fc.v[n], lc.v[n] = fw, lw
			rt := ratio(lw, fw)
			if f.nonzero > 0 || f.bad > 0 {
				rt += " (floor failed)"
			} else if fw > 0 && lw/fw > worst {
				worst, worstAt = lw/fw, fmt.Sprintf("N=%d, max_connections=%d", n, mc)
			}
			fails += l.nonzero
			notOnce += l.bad
			r.f("| %d | %.0f | %d | %s | %.0f | %d | %s | %d | %s | %.1f / %.1f |\n", n, fw, f.nonzero, once(f), lw, l.nonzero, once(l), l.retried, rt,
				median(f.cpus)/float64(n), median(l.cpus)/float64(n))
		}
		r.f("\n")
		for _, n := range ns {
			if f := agg[stormKey{"floor", mc, n}]; f != nil && f.err != "" {
				r.f("- floor, N=%d: most frequent last line of a failed replica: `%s`\n", n, f.err)
			}
			if l := agg[stormKey{"lockmigrate", mc, n}]; l != nil && l.err != "" {
				r.f("- lockmigrate, N=%d: most frequent last line of a failed replica: `%s`\n", n, l.err)
			}
		}
		r.f("\n")
		ser = append(ser, series{fmt.Sprintf("floor, max_connections %d", mc), points(fc)},
			series{fmt.Sprintf("lockmigrate, max_connections %d", mc), points(lc)})
	}
	r.target("storm: 0 failures (lockmigrate, every N and max_connections)", fmt.Sprintf("%d non-zero exits", fails), fails == 0)
	r.target("storm: exactly once (lockmigrate)", fmt.Sprintf("%d round(s) not exactly once", notOnce), notOnce == 0)
	r.target("storm wall ≤ 1.3× the floor's storm at every N (where the floor succeeded)", fmt.Sprintf("worst %.2f× (%s)", worst, worstAt), worst <= 1.3)
	r.plots = append(r.plots, plot{name: "storm", title: "N replicas released at once: wall, release to last exit",
		xlabel: "replicas", ylabel: "ms", logY: true, series: ser})
}

func once(a *stormAgg) string {
	if a.bad == 0 {
		return "yes"
	}
	return fmt.Sprintf("**no** (%d of %d rounds)", a.bad, a.rounds)
}

// tenantSection: the all-current fast path and the full apply per fleet size.
func (r *report) tenantSection() {
	d := r.d
	if len(d.tenFast) == 0 && len(d.tenApply) == 0 {
		return
	}
	r.f("### Tenant fleets\n\n")
	r.f("One schema per tenant (`LOCKMIGRATE_TENANTS_QUERY` lists them), 3 migrations. Full apply: one run per concurrency on a fresh copy of the fleet (wall of the process). All current: hyperfine median of the next runs; queries: the run's own `fast_path_queries` and the statements the server logged (`log_statement = all`, every statement of the run, connection set-up included); round trips and bytes the server sent: bench/rtproxy; server planning and execution time: `pg_stat_statements` with `track_planning` (loaded for this section only) over the same run.\n\n")
	r.f("![tenants](plots/tenants.png)\n\n")
	r.f("| tenants | concurrency | wall (s) | ms per tenant | tenants applied | failed | connections | tables created |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	app := map[int]curve{}
	for _, a := range d.tenApply {
		r.f("| %d | %d | %.2f | %.2f | %d | %d | %d | %d |\n", a.size, a.conc, float64(a.wallMs)/1e3, float64(a.wallMs)/float64(a.size), a.applied, a.failed, a.conns, a.tables)
		if app[a.conc].v == nil {
			app[a.conc] = curve{v: map[int]float64{}}
		}
		app[a.conc].v[a.size] = float64(a.wallMs) / 1e3
	}
	r.f("\n| tenants | all current: wall (s) | fast_path_queries | bound 2 + ⌈N/500⌉ | statements logged | round trips | bytes from server | bytes per tenant | connections | server planning / execution (ms) | of which UNION ALL batches: calls, planning / execution (ms) |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	fast := curve{v: map[int]float64{}}
	for _, f := range d.tenFast {
		w := median(f.wall)
		fast.v[f.size] = w
		bound := 2 + int(math.Ceil(float64(f.size)/500))
		r.f("| %d | %.3f | %d | %d | %d | %d | %d | %.0f | %d | %.1f / %.1f | %d: %.1f / %.1f |\n", f.size, w, f.queries, bound, f.stmts, f.turns, f.bytes,
			float64(f.bytes)/float64(f.size), f.conns, f.planMs, f.execMs, f.unionCalls, f.unionPlan, f.unionExec)
		if f.size == 10000 {
			r.target("10,000 tenants all current ≤ 2 s", fmt.Sprintf("%.2f s", w), w <= 2)
			r.target("10,000 tenants all current ≤ 2 + ⌈N/500⌉ = 22 queries", fmt.Sprintf("%d (fast_path_queries); %d statements logged in all", f.queries, f.stmts), f.queries <= bound)
		}
	}
	r.f("\n| curve | slope (ms per tenant) | marginal (ms per tenant) |\n|---|---:|---|\n")
	r.f("| all current | %.3f | %s |\n", fast.fit()*1e3, strings.Join(fast.marginals(1e3, 3), ", "))
	ser := []series{{"all current (fast path)", points(fast)}}
	for _, c := range sizes(app) {
		r.f("| full apply, concurrency %d | %.3f | %s |\n", c, app[c].fit()*1e3, strings.Join(app[c].marginals(1e3, 3), ", "))
		ser = append(ser, series{fmt.Sprintf("full apply, concurrency %d", c), points(app[c])})
	}
	r.f("\n")
	fast.name = "the all-current fast path"
	r.superlinearNote("tenants", fast)
	r.plots = append(r.plots, plot{name: "tenants", title: "Tenant fleets: wall time", xlabel: "tenants", ylabel: "s", logY: true, series: ser})
}
