// Command icount says where a process's instructions go, from the
// callgrind.out files of one run made with the dumps it asks for. It
// prints Markdown: the phases of the run in time order (exact: each is
// the instructions of every thread between two function entries), the
// packages whose initialisation costs most, and the instructions from
// main.main on by the code that executed them. See bench/README.md,
// "Instruction counts".
//
//	icount -dump-args              the callgrind options a run needs, one per line
//	icount [-top 10] DIR…          one directory of callgrind.out* files per run
//	icount [-top 10] FILE…         the callgrind.out* files of one run
package main

import (
	"flag"
	"fmt"

	"log"
	"os"
	"path/filepath"
)

func main() {
	top := flag.Int("top", 10, "packages listed under package initialisation")
	dumpArgs := flag.Bool("dump-args", false, "print the callgrind options the breakdown needs, one per line, and exit")
	flag.Parse()
	if *dumpArgs {
		for _, a := range DumpArgs() {
			fmt.Println(a)
		}
		return
	}
	if flag.NArg() == 0 {
		log.Fatal("icount: no callgrind.out files (see -h)")
	}
	runs, err := loadRuns(flag.Args())
	if err != nil {
		log.Fatal("icount: ", err)
	}
	if err := Write(os.Stdout, runs, *top); err != nil {
		log.Fatal("icount: ", err)
	}
}

// DumpArgs are the callgrind options that make the dumps Load splits a
// run at: main.main, each package initialisation function and each
// milestone.
func DumpArgs() []string {
	args := []string{"--dump-before=main.main", "--dump-before=*.init", "--dump-before=*.init.*"}
	for _, m := range milestones {
		if m.Enter != "main.main" {
			args = append(args, "--dump-before="+m.Enter)
		}
	}
	return args
}

// loadRuns reads one run per directory argument, or one run from file
// arguments.
func loadRuns(args []string) ([]*Run, error) {
	if st, err := os.Stat(args[0]); err != nil || !st.IsDir() {
		r, err := Load(args)
		return []*Run{r}, err
	}
	var runs []*Run
	for _, dir := range args {
		paths, err := filepath.Glob(filepath.Join(dir, "callgrind.out*"))
		if err != nil || len(paths) == 0 {
			return nil, fmt.Errorf("%s: no callgrind.out files", dir)
		}
		r, err := Load(paths)
		if err != nil {
			return nil, err
		}
		runs = append(runs, r)
	}
	return runs, nil
}
