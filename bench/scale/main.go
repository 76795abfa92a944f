// Command scale turns the raw measurements of bench/scale.sh into a markdown
// section (bench/SCALING.md) and one gnuplot PNG per curve (bench/plots/):
// the no-op start, the apply, the replica storm and the tenant fleet, each
// against the floor measured in the same run, with slopes, per-migration
// marginal costs (so that anything growing faster than linearly shows) and
// the targets of issue 18 with their verdicts.
//
// Usage:
//
//	scale -in bench/out/scale -md bench/SCALING.md -plots bench/plots
//
// It runs gnuplot for the PNGs (skipped with -gnuplot=false); the data and
// scripts it feeds gnuplot are kept in IN/plots.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

func main() {
	in := flag.String("in", "bench/out/scale", "raw data directory written by bench/scale.sh")
	md := flag.String("md", "bench/SCALING.md", "markdown output")
	plots := flag.String("plots", "bench/plots", "directory for the PNGs")
	gp := flag.Bool("gnuplot", true, "run gnuplot")
	notes := flag.String("notes", "bench/scale/FINDINGS.md", "markdown appended verbatim when it exists: the explanations a person wrote for this run's figures")
	flag.Parse()
	if err := run(*in, *md, *plots, *notes, *gp); err != nil {
		log.Fatal("scale: ", err)
	}
}

func run(in, md, plots, notes string, gp bool) error {
	d, err := load(in)
	if err != nil {
		return err
	}
	r := &report{d: d, plotDir: plots, work: filepath.Join(in, "plots")}
	if err := os.MkdirAll(r.work, 0o755); err != nil {
		return err
	}
	text := r.render()
	if b, err := os.ReadFile(notes); err == nil {
		text += "\n" + string(b)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.WriteFile(md, []byte(text), 0o644); err != nil {
		return err
	}
	if !gp {
		return nil
	}
	if err := os.MkdirAll(plots, 0o755); err != nil {
		return err
	}
	for _, p := range r.plots {
		if err := p.draw(r.work, plots); err != nil {
			return err
		}
	}
	return nil
}

// plot is one gnuplot chart: series of (x, y) points on a log-scale x.
type plot struct {
	name, title, xlabel, ylabel string
	logY                        bool
	series                      []series
}

type series struct {
	title  string
	points [][2]float64
}

// draw writes the data and script into work and runs gnuplot, which writes
// out/NAME.png.
func (p plot) draw(work, out string) error {
	var script strings.Builder
	abs, err := filepath.Abs(filepath.Join(out, p.name+".png"))
	if err != nil {
		return err
	}
	fmt.Fprintf(&script, "set terminal pngcairo noenhanced size 900,560 font 'sans,11'\nset output %q\n", abs)
	fmt.Fprintf(&script, "set title %q\nset xlabel %q\nset ylabel %q\nset logscale x 10\nset grid\nset key top left\n", p.title, p.xlabel, p.ylabel)
	if p.logY {
		script.WriteString("set logscale y 10\n")
	}
	var plots []string
	for i, s := range p.series {
		if len(s.points) == 0 {
			continue
		}
		dat, err := filepath.Abs(filepath.Join(work, fmt.Sprintf("%s-%d.dat", p.name, i)))
		if err != nil {
			return err
		}
		var b strings.Builder
		for _, pt := range s.points {
			fmt.Fprintf(&b, "%g %g\n", pt[0], pt[1])
		}
		if err := os.WriteFile(dat, []byte(b.String()), 0o644); err != nil {
			return err
		}
		plots = append(plots, fmt.Sprintf("%q using 1:2 with linespoints lw 2 pt 7 title %q", dat, s.title))
	}
	if len(plots) == 0 {
		return nil
	}
	script.WriteString("plot " + strings.Join(plots, ", \\\n     ") + "\n")
	gpFile := filepath.Join(work, p.name+".gp")
	if err := os.WriteFile(gpFile, []byte(script.String()), 0o644); err != nil {
		return err
	}
	if out, err := exec.Command("gnuplot", gpFile).CombinedOutput(); err != nil {
		return fmt.Errorf("gnuplot %s: %w: %s", gpFile, err, out)
	}
	return nil
}
