package process_test

import (
	"context"
	"fmt"
	"log"
	"path/filepath"
	"time"

	"github.com/rbee-project/rbee/worker/catalog"
	"github.com/rbee-project/rbee/worker/process"
)

// Example shows how a node wires the catalog and the process manager: the
// catalog refuses to delete a binary a supervised worker runs, a build
// streams its output, and a spawned worker is stopped with a grace period.
func Example() {
	ctx := context.Background()
	datadir := "/var/lib/rbee"

	pcfg := process.DefaultConfig()
	pcfg.Dir = filepath.Join(datadir, "workers")
	pcfg.OnExit = func(w process.WorkerInfo, err error) {
		log.Printf("worker %s (pid %d) exited: %v (stopped by us: %v)", w.WorkerID, w.PID, err, w.Stopped)
	}
	procs, err := process.New(pcfg) // re-adopts workers of the previous run
	if err != nil {
		log.Fatal(err)
	}
	defer procs.Close() // workers keep running across a node restart

	ccfg := catalog.DefaultConfig()
	ccfg.Dir = filepath.Join(datadir, "workers")
	ccfg.InUse = func(e catalog.Entry) bool { return procs.BinaryInUse(e.Path) }
	cat, err := catalog.New(ccfg)
	if err != nil {
		log.Fatal(err)
	}

	entry, err := cat.Build(ctx, catalog.BuildOptions{
		SourceDir: "/src/rbee",
		Output:    func(line string) { fmt.Println("build:", line) },
	})
	if err != nil {
		log.Fatal(err)
	}
	typ, _ := cat.Type(entry.Type)
	w, err := procs.Spawn(ctx, process.SpawnOptions{
		Binary: entry.Path, Type: typ, ModelPath: "/models/stories260K.gguf", ModelID: "stories260K",
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(w.WorkerID, w.PID, w.Port)
	if err := procs.Stop(ctx, w.PID, 10*time.Second); err != nil {
		log.Fatal(err)
	}
}
