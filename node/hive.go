package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/rbee-project/rbee/fsm"
	modelcat "github.com/rbee-project/rbee/model/catalog"
	"github.com/rbee-project/rbee/model/hf"
	"github.com/rbee-project/rbee/worker"
	workercat "github.com/rbee-project/rbee/worker/catalog"
	"github.com/rbee-project/rbee/worker/process"
)

// Data dir subdirectories of the hive.
const (
	modelsDir    = "models"
	workersDir   = "workers"
	processesDir = "processes"
	// repackCacheDir holds the cpu workers' repacked weights, a file per
	// model (engine.Options.RepackCache).
	repackCacheDir = "repack"
)

// workerStopGrace is how long a retired or deleted worker gets to finish
// its in-flight requests after SIGTERM before it is killed: a little more
// than the worker's own drain timeout (30 s).
const workerStopGrace = 35 * time.Second

// ProcessesDir is where a node with that data dir keeps its worker
// process records (tests use it to clean up after killed nodes).
func ProcessesDir(dataDir string) string { return filepath.Join(dataDir, processesDir) }

// StopWorkers stops every worker process this node started.
func (n *Node) StopWorkers(ctx context.Context) error {
	if n.procs == nil {
		return nil
	}
	return n.procs.StopAll(ctx, 10*time.Second)
}

// WorkerProcesses is the number of worker processes this node supervises.
// Close leaves them running: a restart with the same data dir re-adopts
// them, and each exits on its own after WorkerOrphanGrace without one.
func (n *Node) WorkerProcesses() int {
	if n.procs == nil {
		return 0
	}
	return len(n.procs.List())
}

// WorkerOrphanGrace is the orphan grace this node gives the workers it
// spawns; 0 means they never exit on their own.
func (n *Node) WorkerOrphanGrace() time.Duration {
	switch g := n.cfg.WorkerOrphanGrace; {
	case g < 0:
		return 0
	case g == 0:
		return worker.DefaultOrphanGrace
	default:
		return g
	}
}

// stopSecretless stops the workers re-adopted from a process table written
// before workers had secrets: they can neither report to this node nor be
// called by it, so they would only hold memory.
func (n *Node) stopSecretless() {
	for _, st := range n.procs.List() {
		if _, _, ok := n.procs.Secret(st.WorkerID); ok {
			continue
		}
		n.log.Warn("stopping a worker started by an older rbee: it has no secret to report or be called with",
			"worker", st.WorkerID, "pid", st.PID)
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			if err := n.procs.Stop(n.ctx, st.PID, workerStopGrace); err != nil {
				n.log.Warn("stop worker", "worker", st.WorkerID, "pid", st.PID, "err", err)
			}
		}()
	}
}

// openHive opens the model and binary catalogs and the process manager,
// re-adopting worker processes an earlier run started.
func (n *Node) openHive() error {
	var err error
	n.models, err = modelcat.New(modelcat.Config{Dir: filepath.Join(n.cfg.DataDir, modelsDir), InUse: n.modelInUse,
		Logger: n.log.With("component", "models")})
	if err != nil {
		return fmt.Errorf("model catalog: %w", err)
	}
	wc := workercat.DefaultConfig()
	wc.Dir = filepath.Join(n.cfg.DataDir, workersDir)
	wc.Types = append(workercat.DefaultTypes(), workercat.RbeeType())
	wc.InUse = n.binaryInUse
	wc.ReleaseBaseURL = n.cfg.WorkerReleaseURL
	wc.ReleaseKeys = n.cfg.WorkerReleaseKeys
	wc.Version = n.cfg.Version
	wc.Logger = n.log.With("component", "binaries")
	if n.binaries, err = workercat.New(wc); err != nil {
		return fmt.Errorf("worker catalog: %w", err)
	}
	pc := process.DefaultConfig()
	pc.Dir = filepath.Join(n.cfg.DataDir, processesDir)
	pc.Nice = n.cfg.WorkerNice
	pc.OnExit = func(info process.WorkerInfo, err error) {
		n.log.Info("worker process exited", "worker", info.WorkerID, "pid", info.PID, "err", err)
		n.sup.Gone(info.WorkerID)
		if info.RAM != (process.RAM{}) {
			n.refreshCapabilitiesSoon() // the RAM it was admitted for is free again
		}
	}
	pc.Logger = n.log.With("component", "processes")
	if n.procs, err = process.New(pc); err != nil {
		return fmt.Errorf("process manager: %w", err)
	}
	n.stopSecretless()
	hcfg := hf.Config{Endpoint: n.cfg.HFEndpoint, Token: n.cfg.HFToken, UserAgent: "rbee/" + n.cfg.Version,
		Logger: n.log.With("component", "hf")}
	if n.hf, err = hf.New(hcfg); err != nil {
		return fmt.Errorf("hugging face client: %w", err)
	}
	return nil
}

func (n *Node) closeHive() {
	if n.procs != nil {
		// Workers keep running across a node restart and are re-adopted.
		_ = n.procs.Close()
	}
	if n.models != nil {
		_ = n.models.Close()
	}
}

// modelInUse reports whether a local worker process serves the model.
func (n *Node) modelInUse(id string) bool {
	if n.procs == nil {
		return false
	}
	for _, p := range n.procs.List() {
		if p.ModelID == id {
			return true
		}
	}
	return false
}

func (n *Node) binaryInUse(e workercat.Entry) bool {
	return n.procs != nil && n.procs.BinaryInUse(e.Path)
}

// workerBinary finds the binary a spawn uses for a worker type on this
// machine: the given version, or else the catalog's default (a pinned
// binary, else the newest built here or of this node's version: a
// downloaded release of another version is used only when named or
// pinned). When there is no default and the node was given a worker
// binary (the rbee-worker next to rbee), that binary is catalogued first
// as this node's version; so it is when the default is the one an earlier
// run of another version catalogued (upgradedFrom).
func (n *Node) workerBinary(ctx context.Context, typ, version string) (workercat.Entry, error) {
	if version != "" {
		e, err := n.binaries.Lookup(typ, version, runtime.GOOS, runtime.GOARCH)
		if err != nil {
			return workercat.Entry{}, fmt.Errorf("%w (`rbee worker binary list --hive %s` shows what %s has)", err, n.cfg.Name, n.cfg.Name)
		}
		return e, nil
	}
	e, err := n.binaries.Default(typ, runtime.GOOS, runtime.GOARCH)
	if err == nil && !n.upgradedFrom(e) {
		return e, nil
	}
	if typ == workercat.TypeCPU && n.cfg.WorkerBinary != "" {
		if _, serr := os.Stat(n.cfg.WorkerBinary); serr == nil {
			added, aerr := n.binaries.Add(ctx, workercat.AddOptions{Type: typ, Version: n.cfg.Version, Source: workercat.SourceBuilt}, n.cfg.WorkerBinary)
			if aerr == nil {
				if err == nil {
					n.log.Info("catalogued this node's worker binary as the default cpu worker: the one before was of the version this node ran before", "was", e.Version, "now", n.cfg.Version)
				}
				n.hive.RecordBinary(ctx, added)
				return added, nil
			}
			if err == nil {
				n.log.Warn("the default cpu worker is of the version this node ran before; cataloguing this node's failed", "was", e.Version, "now", n.cfg.Version, "err", aerr)
				return e, nil
			}
			// The binary is there but could not be catalogued (a full
			// disk, an unwritable data dir): building or downloading
			// another would fail the same way.
			return workercat.Entry{}, fmt.Errorf("catalog %s as the %s worker binary of %s: %w", n.cfg.WorkerBinary, typ, n.cfg.Name, aerr)
		}
	}
	if err == nil {
		return e, nil
	}
	if t, terr := n.binaries.Type(typ); terr == nil && t.External {
		return workercat.Entry{}, fmt.Errorf("no %s engine on %s: %w (install it there, then `rbee worker binary add --hive %s --type %s --path /path/to/%s`)",
			typ, n.cfg.Name, err, n.cfg.Name, typ, t.Binary)
	}
	return workercat.Entry{}, fmt.Errorf("no %s worker binary for %s/%s on %s: %w (run `rbee worker build --type %s --hive %s` or `rbee worker download --type %s --hive %s`)",
		typ, runtime.GOOS, runtime.GOARCH, n.cfg.Name, err, typ, n.cfg.Name, typ, n.cfg.Name)
}

// upgradedFrom reports whether e, the catalog's default cpu worker, is the
// one an earlier run of this node built or catalogued under its own, other
// version (the node was upgraded since) and the catalog has none of this
// version: a spawn without a version then runs this node's worker binary,
// so an upgrade of rbee upgrades the workers it spawns. A pinned entry and
// one built during this run stay the default.
func (n *Node) upgradedFrom(e workercat.Entry) bool {
	if e.Type != workercat.TypeCPU || e.Pinned || e.Source != workercat.SourceBuilt || n.cfg.WorkerBinary == "" ||
		n.cfg.Version == "" || e.Version == n.cfg.Version || !e.Added.Before(n.created) {
		return false
	}
	_, err := n.binaries.Lookup(e.Type, n.cfg.Version, e.OS, e.Arch)
	return err != nil
}

// stopWorker drains and stops a worker this node started. A cpu worker
// drains itself on SIGTERM; an engine may not, so the node first waits
// (up to workerStopGrace) for the requests it has sent it to finish: no
// new ones come once the registry says retiring.
func (n *Node) stopWorker(ctx context.Context, workerID string) error {
	st, err := n.procs.ByWorkerID(workerID)
	if err != nil {
		if errors.Is(err, process.ErrNotOurs) {
			return errNotManaged
		}
		return err
	}
	if _, ok := n.sup.EngineType(st.WorkerInfo); ok {
		deadline := time.Now().Add(workerStopGrace)
		for time.Now().Before(deadline) && ctx.Err() == nil {
			busy := n.router.Pending(workerID) > 0
			if !busy {
				break
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return n.procs.Stop(ctx, st.PID, workerStopGrace)
}

// applyBackground proposes a registry command, retrying in the background
// while there is no leader (the node's context bounds it).
func (n *Node) applyBackground(ctx context.Context, c fsm.Command) {
	b, err := fsm.Encode(c)
	if err != nil {
		n.log.Error("encode", "err", err)
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		for attempt := 0; ; attempt++ {
			actx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
			_, err := n.apply(actx, b)
			cancel()
			if err == nil || n.ctx.Err() != nil {
				return
			}
			n.log.Debug("registry write retry", "cmd", fmt.Sprintf("%T", c), "err", err)
			select {
			case <-n.ctx.Done():
				return
			case <-time.After(backoff(attempt)):
			}
		}
	}()
}

// syncHoldings makes the registry's holdings of this node match its disk
// (after a restart, or when a write was lost).
func (n *Node) syncHoldings() {
	entries, err := n.models.List()
	if err != nil {
		return
	}
	have := map[string]bool{}
	for _, e := range entries {
		have[e.ID] = true
		found := false
		for _, h := range n.reg.Models() {
			if h.NodeID == n.ID() && h.ModelID == e.ID && h.SHA256 == e.SHA256 {
				found = true
				break
			}
		}
		if !found {
			n.hive.RecordModel(n.ctx, e)
		}
	}
	for _, h := range n.reg.Models() {
		if h.NodeID == n.ID() && !have[h.ModelID] {
			n.applyBackground(n.ctx, fsm.DeleteModelHolding{NodeID: n.ID(), ModelID: h.ModelID})
		}
	}
	for _, e := range n.binaries.List() {
		found := false
		for _, h := range n.reg.Binaries() {
			if h.NodeID == n.ID() && h.Type == e.Type && h.Version == e.Version && h.OS == e.OS && h.Arch == e.Arch {
				found = true
				break
			}
		}
		if !found {
			n.hive.RecordBinary(n.ctx, e)
		}
	}
}

// hiveCluster is what the hive operations (and the blob service, which
// asks the same questions) read and write of this node.
type hiveCluster struct{ n *Node }

func (c hiveCluster) Node(id string) (fsm.Node, bool)              { return c.n.reg.Node(id) }
func (c hiveCluster) Nodes() []fsm.Node                            { return c.n.reg.Nodes() }
func (c hiveCluster) Models() []fsm.ModelHolding                   { return c.n.reg.Models() }
func (c hiveCluster) Binaries() []fsm.BinaryHolding                { return c.n.reg.Binaries() }
func (c hiveCluster) AlivePeers() map[string]bool                  { return c.n.aliveOthers() }
func (c hiveCluster) Propose(ctx context.Context, cmd fsm.Command) { c.n.applyBackground(ctx, cmd) }
func (c hiveCluster) WorkerGone(id string)                         { c.n.sup.Gone(id) }
