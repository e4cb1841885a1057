package node

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/internal/nodefile"
	"github.com/rbee-project/rbee/model/engine"
	"github.com/rbee-project/rbee/node/hiveops"
	"github.com/rbee-project/rbee/node/jobs"
	"github.com/rbee-project/rbee/node/supervisor"
	"github.com/rbee-project/rbee/worker"
	workercat "github.com/rbee-project/rbee/worker/catalog"
	"github.com/rbee-project/rbee/worker/process"
)

// engineDevices are the devices a worker of an external engine may be
// spawned for ("gpu" is any).
var engineDevices = map[string]bool{"cpu": true, "gpu": true, "cuda": true, "rocm": true, "vulkan": true, "metal": true}

// maxSpawnCtx bounds a requested context: far above any model's, below
// anything that overflows an engine's arithmetic.
const maxSpawnCtx = 1 << 22

// decode reads a request's fields into T, the operation's request type
// of package api.
func decode[T any](req Request) (T, error) {
	var r T
	if err := json.Unmarshal(req.Raw, &r); err != nil {
		return r, jobs.Errorf(jobs.CodeBadRequest, "%s: %v", req.Operation, err)
	}
	return r, nil
}

func need(field, v, op string) error {
	if v == "" {
		return jobs.Errorf(jobs.CodeBadRequest, "%s needs field %q", op, field)
	}
	return nil
}

// refuseURLs refuses a request that names a URL in a field of its own
// (base_url, release_url, url, …): where a node fetches executables from
// is its configuration, and a node that fetched what a request named
// would fetch (and report on) any address its user can reach.
func refuseURLs(req Request) error {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(req.Raw, &fields); err != nil {
		return jobs.Errorf(jobs.CodeBadRequest, "%s: %v", req.Operation, err)
	}
	for k := range fields {
		lk := strings.ToLower(k)
		if strings.HasSuffix(lk, "url") || strings.HasSuffix(lk, "uri") {
			return jobs.Errorf(jobs.CodeBadRequest, "%s: field %q is not accepted: a job cannot name a location to fetch from; worker releases come from the node's configuration (start the node with --worker-release-url)", req.Operation, k)
		}
	}
	return nil
}

// validateOnHive checks that a hive operation's request decodes as T and
// names no URL.
func validateOnHive[T any](check func(T, string) error) func(Request) error {
	return func(req Request) error {
		r, err := decode[T](req)
		if err != nil {
			return err
		}
		if err := refuseURLs(req); err != nil {
			return err
		}
		if check != nil {
			return check(r, req.Operation)
		}
		return nil
	}
}

func checkPID(pid int, op string) error {
	if pid <= 0 {
		return jobs.Errorf(jobs.CodeBadRequest, "%s needs field \"pid\" (a positive number)", op)
	}
	return nil
}

func checkProcess(r api.ProcessGetRequest, op string) error { return checkPID(r.PID, op) }

func checkModelRef(r api.ModelDownloadRequest, op string) error {
	if r.ModelRef() == "" {
		return jobs.Errorf(jobs.CodeBadRequest, "%s needs field \"model\"", op)
	}
	return nil
}

func checkModelID(r api.ModelGetRequest, op string) error { return need("id", r.ID, op) }

// checkSpawn checks a worker_spawn request's fields.
func checkSpawn(r api.WorkerSpawnRequest, op string) error {
	if r.ModelRef() == "" {
		return jobs.Errorf(jobs.CodeBadRequest, "%s needs field \"model\"", op)
	}
	if r.Threads < 0 || r.Threads > 1024 || r.Slots < 0 || r.Slots > 256 || r.Queue < 0 || r.Queue > 4096 {
		return jobs.Errorf(jobs.CodeBadRequest, "threads must be 0..1024, slots 0..256 and queue 0..4096")
	}
	if hiveops.OrCPU(r.Type) == workercat.TypeCPU {
		if r.Device != "" && r.Device != "cpu" {
			return jobs.Errorf(jobs.CodeBadRequest, "device %q is not supported by the cpu worker (use cpu, or an engine type such as --type llama-server)", r.Device)
		}
		if len(r.GPUs) > 0 {
			return jobs.Errorf(jobs.CodeBadRequest, "the cpu worker uses no GPU: spawn an engine type (--type llama-server) for --gpu")
		}
	} else if r.Device != "" && !engineDevices[r.Device] {
		return jobs.Errorf(jobs.CodeBadRequest, "device %q (want cpu, gpu, cuda, rocm, vulkan or metal)", r.Device)
	}
	if r.KVCache != "" {
		if hiveops.OrCPU(r.Type) != workercat.TypeCPU {
			return jobs.Errorf(jobs.CodeBadRequest, "kv_cache is for the cpu worker (an engine takes its own flags, e.g. llama-server's --cache-type-k in its template)")
		}
		if _, err := engine.ParseKVType(r.KVCache); err != nil {
			return jobs.Errorf(jobs.CodeBadRequest, "kv_cache %q: want f16 or f32", r.KVCache)
		}
	}
	if len(r.GPUs) > 16 || r.Ctx < 0 || r.Ctx > maxSpawnCtx || r.GPULayers != nil && (*r.GPULayers < 0 || *r.GPULayers > 100000) {
		return jobs.Errorf(jobs.CodeBadRequest, "at most 16 GPUs; ctx 0..%d; gpu_layers 0..100000", maxSpawnCtx)
	}
	for _, g := range r.GPUs {
		if g < 0 || g > 255 {
			return jobs.Errorf(jobs.CodeBadRequest, "GPU index %d (want 0..255, as nvidia-smi or rocm-smi number them)", g)
		}
	}
	return checkGroupSpawn(r)
}

// engineReadyTimeout bounds an engine's start: vLLM compiles kernels and
// captures CUDA graphs, and a large model loads onto GPUs for minutes.
const engineReadyTimeout = 15 * time.Minute

// spawnStaleGrace: a spawn answers "registering" (the worker serves from
// its node; the registry write waits for a leader) only once no leader has
// been heard from for this long, not during a leader change or a loaded
// machine's missed heartbeat, which end within a few election timeouts.
const spawnStaleGrace = 3 * time.Second

// spawnReadyTimeout bounds the wait for the registry to list a spawned
// worker as ready (the leader writes it on the worker's first heartbeats).
const spawnReadyTimeout = 60 * time.Second

func (n *Node) opWorkerSpawn(ctx context.Context, em jobs.Emitter, req Request) error {
	r, err := decode[api.WorkerSpawnRequest](req)
	if err != nil {
		return err
	}
	r.Type = hiveops.OrCPU(r.Type)
	if r.Type == workercat.TypeRbee {
		return jobs.Errorf(jobs.CodeBadRequest, "type %q is rbee itself, not a worker", r.Type)
	}
	if r.WorkerID != "" {
		if err := workercat.ValidName("worker id", r.WorkerID); err != nil {
			return jobs.Errorf(jobs.CodeBadRequest, "%v", err)
		}
		// A worker id names one worker in the whole cluster: the
		// registry keeps one entry per id, so a second process under
		// the same id on another node would run unseen and unrouted.
		if err := n.workerIDFree(r.WorkerID); err != nil {
			return err
		}
	}
	if r.Shard == nil && (r.Shards > 1 || len(r.Hives) > 1) {
		return n.opGroupSpawn(ctx, em, req, r)
	}
	ref := r.Model
	if ref == "" {
		ref = r.Ref
	}
	typ, err := n.binaries.Type(r.Type)
	if err != nil {
		return hiveops.CatalogError(err)
	}
	wantGPU := typ.External && r.Device != "cpu"
	if wantGPU && r.Hive == "" {
		if fwd, err := n.placeSpawn(ctx, em, req, &r, ref); err != nil || fwd {
			return err
		}
	}
	if r.Shard != nil {
		// The placing node wrote the group before it asked for its
		// shards, after the holding of a model it copies to them: a
		// replica that lists the group lists that holding.
		n.waitReplica(ctx, func() bool { _, ok := n.reg.Group(r.Shard.Group); return ok })
	}
	model, err := n.hive.ResolveModel(ctx, em, ref)
	if err != nil {
		return err
	}
	if !typ.External && r.Hive == "" && r.Shard == nil && r.Shards == 0 && len(r.Hives) == 0 {
		// A path names this hive's file: another hive could copy it only
		// once its replica lists it here, so such a worker is not moved
		// whole (a group's shards get the file by the head's holding).
		hives := n.autoSplit(em, model, r.Mode, r.Ctx, r.Slots, r.KVCache, !pathRef(ref))
		if len(hives) == 1 {
			return n.spawnWholeOn(ctx, em, req, hives[0])
		}
		if len(hives) > 0 {
			if r.WorkerID != "" {
				return jobs.Errorf(jobs.CodeBadRequest, "no hive has the RAM for %s alone, and worker_id %q names one worker: a group over %s gets ids of its own (leave worker_id out)", model.ID, r.WorkerID, strings.Join(hives, ", "))
			}
			r.Shards, r.Hives = len(hives), hives
			return n.opGroupSpawn(ctx, em, req, r)
		}
	}
	if wantGPU {
		if err := n.placer.FitGPUs(em, &r, model); err != nil {
			return err
		}
	}
	releaseRAM := func() {}
	var ram process.RAM
	if !wantGPU {
		// A CPU worker is admitted for its estimate (ram.go): refused
		// when it does not fit where the node has a cap (an engine, or
		// --memory-limit; a shard's part was sized by its group's plan),
		// counted in every case.
		ram = n.cpuWorkerRAM(model, r, typ.External)
		enforce := r.Shard == nil && (typ.External || n.cfg.MemoryLimit > 0)
		if r.WorkerID == "" {
			// Named now, so that the claim gives way to the worker's
			// process entry once it starts (ram.go).
			r.WorkerID = process.NewWorkerID()
		}
		if releaseRAM, err = n.admitRAM(ctx, r.WorkerID, model.Path, ram, enforce, model.ID); err != nil {
			return err
		}
		defer releaseRAM()
	}
	bin, err := n.workerBinary(ctx, r.Type, r.Version)
	if err != nil {
		// Not found, or the catalog failed (a full disk: internal).
		return hiveops.CatalogError(err)
	}
	if typ, err = typ.ForEntry(bin); err != nil {
		return hiveops.CatalogError(err)
	}
	device := r.Device
	layers := -1
	if r.GPULayers != nil {
		layers = *r.GPULayers
	}
	var extra []string
	switch {
	case !typ.External:
		if device == "" {
			device = "cpu"
		}
		extra = []string{"--model-name", model.ID, "--orphan-grace", n.WorkerOrphanGrace().String()}
		if r.Queue > 0 {
			extra = append(extra, "--queue", strconv.Itoa(r.Queue))
		}
	case r.Shard != nil:
		return jobs.Errorf(jobs.CodeBadRequest, "only the cpu worker runs as a shard of a group")
	case device == "":
		device = "gpu"
		if len(r.GPUs) == 0 && len(bin.Devices) > 0 {
			device = bin.Devices[0]
		}
	}
	var readyTimeout time.Duration // the process manager's
	if typ.External {
		readyTimeout = engineReadyTimeout
	}
	where := ""
	if len(r.GPUs) > 0 {
		where = " on GPU " + workercat.GPUList(r.GPUs)
	}
	em.Narrate("hive", "spawn", "starting a worker of type %s (binary %s, %s) for %s on %s%s", r.Type, bin.Version, bin.Source, model.ID, n.cfg.Name, where)
	if typ.External && !typ.Socket {
		// Ollama, or a generic engine whose template has no {socket}:
		// warned, not refused, as such an engine has no safer way to run
		// (README, "Who may do what on a node's machine").
		em.Narrate("hive", "warning", "an engine of type %s cannot listen on a Unix socket: this one listens on a loopback port that every local user of %s can reach without the node's keys", r.Type, n.cfg.Name)
		n.log.Warn("engine reachable by every local user", "type", r.Type, "worker", r.WorkerID)
	}
	// The worker (or an engine's guard) finds the node again through its
	// node.json when the node restarts on another port.
	env := []string{nodefile.Env + "=" + filepath.Join(n.cfg.DataDir, nodeInfoFile)}
	if !typ.External && n.cfg.DataDir != "" {
		// One file of repacked weights per model, mapped by every cpu
		// worker of it: they share its pages as they share the model's.
		dir := filepath.Join(n.cfg.DataDir, repackCacheDir)
		if err := engine.PruneRepackCache(dir); err != nil {
			n.log.Warn("pruning the repack cache failed", "dir", dir, "err", err)
		}
		env = append(env, worker.RepackCacheEnv+"="+dir)
	}
	if r.KVCache != "" {
		extra = append(extra, "--kv-cache", r.KVCache)
	}
	if r.Shard != nil {
		args, e, err := n.shardArgs(r.Shard)
		if err != nil {
			return jobs.Errorf(jobs.CodeUnavailable, "stage links: %v", err)
		}
		extra, env = append(extra, args...), append(env, e...)
	}
	var guard []string
	if typ.External && n.cfg.EngineGuard != "" && n.WorkerOrphanGrace() > 0 {
		guard = []string{n.cfg.EngineGuard, "engine-guard", "--node", n.URL(), "--node-id", n.ID(), "--grace", n.WorkerOrphanGrace().String()}
	}
	group := ""
	if r.Shard != nil {
		group = r.Shard.Group
	}
	// A large model can take minutes to load (an engine has
	// engineReadyTimeout): say it is still starting, so a spawn that waits
	// is not a silent one.
	stillStarting := narrateEvery(ctx, spawnNarrateEvery, func(waited time.Duration) {
		em.Narrate("hive", "spawn", "the worker is still starting (%s so far)", waited.Round(time.Second))
	})
	info, err := n.procs.Spawn(ctx, process.SpawnOptions{Binary: bin.Path, Type: typ, ModelPath: model.Path, ModelID: model.ID,
		WorkerID: r.WorkerID, Group: group, Device: device, Threads: r.Threads, Slots: r.Slots, NodeURL: n.URL(),
		Ctx: r.Ctx, GPUs: r.GPUs, GPULayers: layers, ExtraArgs: extra, ReadyTimeout: readyTimeout, Guard: guard, Env: env, RAM: ram})
	stillStarting()
	// Running (and recorded with its RAM) or failed: the claim ends.
	releaseRAM()
	if err != nil {
		if r.Shard != nil && len(r.Shard.Stages) > 0 {
			n.links.Remove(r.Shard.Group)
		}
		if ctx.Err() != nil {
			// Cancelled while the worker started: the manager stopped
			// it, and the job ends cancelled, not failed.
			return jobs.Errorf(jobs.CodeCancelled, "spawn worker: %w", ctx.Err())
		}
		var early *process.EarlyExitError
		if errors.As(err, &early) {
			if w, ok := n.reg.Worker(early.WorkerID); ok && w.NodeID == n.ID() && w.PID == early.PID &&
				(w.State == fsm.WorkerRetiring || w.State == fsm.WorkerGone) || n.retired.Has(early.PID) {
				// The worker announced itself and a retire (from any
				// node) reached it before its health check answered:
				// it drained and exited as told, it did not fail.
				return jobs.Errorf(jobs.CodeConflict, "worker %s was retired before it was ready; it has been stopped", early.WorkerID)
			}
		}
		if errors.Is(err, process.ErrIDInUse) {
			// Another spawn of this id on this node won: a conflict, as
			// with a worker of that id on another node, not a retry.
			return jobs.Errorf(jobs.CodeConflict, "spawn worker: %v; choose another id or retire that worker first", err)
		}
		return jobs.Errorf(jobs.CodeUnavailable, "spawn worker: %v", err)
	}
	if supervisor.IsOllama(typ) {
		if err := n.sup.ImportIntoOllama(ctx, em, info, model); err != nil {
			stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
			_ = n.procs.Stop(stopCtx, info.PID, 10*time.Second)
			cancel()
			return jobs.Errorf(jobs.CodeUnavailable, "spawn %s: %v (engine log: %s)", r.Type, err, info.LogPath)
		}
	}
	if typ.External {
		// No heartbeats from an engine: report it now rather than at the
		// next poll.
		n.sup.PollEngine(info, typ)
	}
	if len(r.GPUs) > 0 || !wantGPU {
		// The next placement sees what it took (VRAM as detected, RAM
		// as admitted).
		n.refreshCapabilitiesSoon()
	}
	em.Narrate("hive", "spawn", "worker %s runs as pid %d on port %d; waiting for the registry", info.WorkerID, info.PID, info.Port)
	stillRegistering := narrateEvery(ctx, spawnNarrateEvery, func(waited time.Duration) {
		em.Narrate("queen", "register", "worker %s is not in the registry yet (%s so far)", info.WorkerID, waited.Round(time.Second))
	})
	defer stillRegistering()
	res := api.SpawnResult{WorkerID: info.WorkerID, PID: info.PID, Port: info.Port, Model: model.ID, Node: n.cfg.Name, Device: device,
		BinaryVersion: bin.Version}
	wctx, cancel := context.WithTimeout(ctx, spawnReadyTimeout)
	defer cancel()
	var staleSince time.Time // since when no leader was heard from
	retired := false         // the registry marked it retiring or gone
	for {
		w, ok := n.reg.Worker(info.WorkerID)
		if ok && w.NodeID != n.ID() {
			// Another node registered the same id first (two spawns of
			// one id at once): this process would never be routed to.
			stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
			_ = n.procs.Stop(stopCtx, info.PID, 10*time.Second)
			cancel()
			return n.workerIDFree(info.WorkerID)
		}
		if ok && w.State == fsm.WorkerReady {
			res.State = string(w.State)
			em.Narrate("queen", "registered", "worker %s is ready", info.WorkerID)
			return em.Result(res)
		}
		if ok && w.PID == info.PID && (w.State == fsm.WorkerRetiring || w.State == fsm.WorkerGone) ||
			n.retired.Has(info.PID) {
			// This process's entry, not a stale one of an earlier
			// worker under the same id; or this node stopped this
			// process for a retire, and the leader removed its entry
			// before this loop saw it.
			retired = true
		}
		if _, err := n.procs.Get(info.PID); err != nil || retired {
			if retired {
				// A retire (from any node) came before the worker was
				// ready: stop it now (as the retire would) and say so,
				// not "exited".
				stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
				_ = n.procs.Stop(stopCtx, info.PID, 10*time.Second)
				cancel()
				return jobs.Errorf(jobs.CodeConflict, "worker %s was retired before it was ready; it has been stopped", info.WorkerID)
			}
			return jobs.Errorf(jobs.CodeUnavailable, "worker %s exited before it was registered (log: %s)", info.WorkerID, info.LogPath)
		}
		stale := n.cons.Stale()
		switch {
		case !stale:
			staleSince = time.Time{}
		case staleSince.IsZero():
			staleSince = time.Now()
		}
		if hb, ok := n.sup.Local(info.WorkerID); ok && (hb.State == worker.StateReady || hb.State == worker.StateBusy) &&
			stale && time.Since(staleSince) >= spawnStaleGrace {
			// No leader to register it: this node routes to it already.
			res.State = "registering"
			em.Narrate("queen", "registered", "worker %s serves from this node; the registry write waits for a leader", info.WorkerID)
			return em.Result(res)
		}
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				// Cancelled: undo the spawn, or a job that ends
				// "cancelled" leaves a worker running (and registered).
				stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
				_ = n.procs.Stop(stopCtx, info.PID, 10*time.Second)
				cancel()
				return jobs.Errorf(jobs.CodeCancelled, "spawn worker %s: stopped: %w", info.WorkerID, ctx.Err())
			}
			// It runs and serves; the registry write waits for a leader.
			res.State = "registering"
			em.Narrate("queen", "registered", "worker %s runs but is not registered yet (no leader?)", info.WorkerID)
			return em.Result(res)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// workerIDFree returns a conflict error when the registry holds a worker
// id on another node; this node's own processes check their ids when
// they spawn.
func (n *Node) workerIDFree(id string) error {
	w, ok := n.reg.Worker(id)
	if !ok || w.NodeID == n.ID() {
		return nil
	}
	name := n.nodeNames()[w.NodeID]
	if name == "" {
		name = w.NodeID
	}
	return jobs.Errorf(jobs.CodeConflict, "worker id %s is already taken by a worker on %s; choose another id or retire that worker first", id, name)
}

// hiveOp runs a hive operation with its api request type.
func hiveOp[T any](run func(*hiveops.Ops, context.Context, jobs.Emitter, T) error, n *Node) func(context.Context, jobs.Emitter, Request) error {
	return func(ctx context.Context, em jobs.Emitter, req Request) error {
		r, err := decode[T](req)
		if err != nil {
			return err
		}
		return run(n.hive, ctx, em, r)
	}
}

// opWorkerDownload checks again that the request names no URL (a
// forwarded job is validated on arrival too, but this is the operation
// that fetches), then downloads.
func (n *Node) opWorkerDownload(ctx context.Context, em jobs.Emitter, req Request) error {
	if err := refuseURLs(req); err != nil {
		return err
	}
	return hiveOp((*hiveops.Ops).Download, n)(ctx, em, req)
}

// spawnNarrateEvery: how often a spawn that waits for its worker says so.
const spawnNarrateEvery = 15 * time.Second

// narrateEvery calls say with the time waited every interval until the
// returned stop is called (or ctx ends); stop returns once say no longer
// runs.
func narrateEvery(ctx context.Context, every time.Duration, say func(waited time.Duration)) (stop func()) {
	start := time.Now()
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				say(time.Since(start))
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(done) })
		<-stopped
	}
}
