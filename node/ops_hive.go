package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/internal/humanize"
	"github.com/rbee-project/rbee/model/builtin"
	modelcat "github.com/rbee-project/rbee/model/catalog"
	"github.com/rbee-project/rbee/model/hf"
	"github.com/rbee-project/rbee/node/jobs"
	"github.com/rbee-project/rbee/node/router"
	"github.com/rbee-project/rbee/worker"
	workercat "github.com/rbee-project/rbee/worker/catalog"
	"github.com/rbee-project/rbee/worker/process"
)

// defaultAccel is the engine build a hive's GPUs want: CUDA for NVIDIA,
// ROCm for AMD, Metal on Apple, Vulkan for other GPUs (Intel), else cpu.
func defaultAccel(caps *fsm.Capabilities) string {
	if caps == nil {
		return "cpu"
	}
	best := "cpu"
	for _, g := range caps.GPUs {
		switch g.Vendor {
		case "nvidia":
			return "cuda"
		case "amd":
			best = "rocm"
		case "apple":
			if best == "cpu" {
				best = "metal"
			}
		default:
			if best == "cpu" {
				best = "vulkan"
			}
		}
	}
	return best
}

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

// orCPU is a request's worker type: "" is rbee's own cpu worker.
func orCPU(typ string) string {
	if typ == "" {
		return workercat.TypeCPU
	}
	return typ
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
	if orCPU(r.Type) == workercat.TypeCPU {
		if r.Device != "" && r.Device != "cpu" {
			return jobs.Errorf(jobs.CodeBadRequest, "device %q is not supported by the cpu worker (use cpu, or an engine type such as --type llama-server)", r.Device)
		}
		if len(r.GPUs) > 0 {
			return jobs.Errorf(jobs.CodeBadRequest, "the cpu worker uses no GPU: spawn an engine type (--type llama-server) for --gpu")
		}
	} else if r.Device != "" && !engineDevices[r.Device] {
		return jobs.Errorf(jobs.CodeBadRequest, "device %q (want cpu, gpu, cuda, rocm, vulkan or metal)", r.Device)
	}
	if len(r.GPUs) > 16 || r.Ctx < 0 || r.Ctx > maxSpawnCtx || r.GPULayers != nil && (*r.GPULayers < 0 || *r.GPULayers > 100000) {
		return jobs.Errorf(jobs.CodeBadRequest, "at most 16 GPUs; ctx 0..%d; gpu_layers 0..100000", maxSpawnCtx)
	}
	for _, g := range r.GPUs {
		if g < 0 || g > 255 {
			return jobs.Errorf(jobs.CodeBadRequest, "GPU index %d (want 0..255, as nvidia-smi or rocm-smi number them)", g)
		}
	}
	return nil
}

// catalogError maps catalog and download errors to job error codes.
func catalogError(err error) error {
	switch {
	case errors.Is(err, modelcat.ErrNotFound), errors.Is(err, workercat.ErrNotFound), errors.Is(err, hf.ErrNotFound), errors.Is(err, hf.ErrNoGGUF):
		return &jobs.Error{Code: jobs.CodeNotFound, Err: err}
	case errors.Is(err, modelcat.ErrInUse), errors.Is(err, workercat.ErrInUse), errors.Is(err, modelcat.ErrExists):
		return &jobs.Error{Code: jobs.CodeConflict, Err: err}
	case errors.Is(err, modelcat.ErrBadName), errors.Is(err, modelcat.ErrBadRef), errors.Is(err, workercat.ErrBadName),
		errors.Is(err, workercat.ErrUnknownType), errors.Is(err, hf.ErrBadRepo), errors.Is(err, modelcat.ErrNotGGUF),
		errors.Is(err, workercat.ErrNotExecutable):
		return &jobs.Error{Code: jobs.CodeBadRequest, Err: err}
	case errors.Is(err, workercat.ErrUnsigned), errors.Is(err, workercat.ErrSignature):
		return &jobs.Error{Code: jobs.CodeForbidden, Err: fmt.Errorf("%w (rbee installs worker releases signed by the rbee release key or a key given to the node with --worker-release-key)", err)}
	case errors.Is(err, workercat.ErrChecksum):
		// Refused like an unsigned release: not what the signer vouched for.
		return &jobs.Error{Code: jobs.CodeForbidden, Err: err}
	case errors.Is(err, hf.ErrGated):
		return &jobs.Error{Code: jobs.CodeForbidden, Err: err}
	case errors.Is(err, process.ErrNotOurs):
		return &jobs.Error{Code: jobs.CodeForbidden, Err: err}
	}
	return err
}

// resolveModel returns a catalog entry for what a user named: a catalog
// id, a short name or a REF. In order: this hive's catalog (by id, then by
// name or reference); a copy from a live node whose holding in the
// registry matches (no origin is asked, so an air-gapped LAN copies any
// model one node has); else the REF is fetched (peers first when its
// sha256 is known, then its origin).
func (n *Node) resolveModel(ctx context.Context, em jobs.Emitter, ref string) (modelcat.Entry, error) {
	ref = strings.TrimSpace(ref)
	if e, err := n.models.Get(ref); err == nil {
		return e, nil
	}
	if e, ok := n.localModel(ref); ok {
		return e, nil
	}
	opts := n.fetchOptions(em)
	if h, ok := n.heldElsewhere(ref); ok {
		em.Narrate("hive", "model", "copying %s (%s) to %s from a peer that holds it", ref, h.ModelID, n.cfg.Name)
		e, err := n.models.FetchPeer(ctx, modelcat.PeerCopy{ID: h.ModelID, Ref: h.Ref, FileName: h.File, SHA256: h.SHA256, Size: int64(h.Size)}, opts)
		if err == nil {
			n.recordModel(ctx, e)
			em.Narrate("hive", "model", "%s is in the catalog of %s as %s (%s, %s)", ref, n.cfg.Name, e.ID, humanize.Bytes(uint64(e.Size)), e.Quantization)
			return e, nil
		}
		if ctx.Err() != nil {
			return modelcat.Entry{}, catalogError(err)
		}
		em.Narrate("hive", "model", "the peer copy failed (%v); trying the reference itself", err)
	}
	r, err := modelcat.ParseRef(ref)
	if err != nil {
		return modelcat.Entry{}, catalogError(fmt.Errorf("%w (a model is a catalog id, a short name the cluster holds, hf:ORG/REPO[:QUANT], hf:ORG/REPO/FILE.gguf, an https:// URL, a path or builtin:stories260k)", err))
	}
	if r.Source == modelcat.SourceLocal {
		if _, serr := os.Stat(r.Path); serr != nil {
			return modelcat.Entry{}, n.unknownModel(ref)
		}
	}
	em.Narrate("hive", "model", "fetching %s on %s", ref, n.cfg.Name)
	e, err := n.models.Fetch(ctx, r, opts)
	if err != nil {
		return modelcat.Entry{}, catalogError(err)
	}
	n.recordModel(ctx, e)
	em.Narrate("hive", "model", "%s is in the catalog of %s as %s (%s, %s)", ref, n.cfg.Name, e.ID, humanize.Bytes(uint64(e.Size)), e.Quantization)
	return e, nil
}

// fetchOptions are the catalog fetch options of a job: the hub client,
// peers, the size cap, progress events and the download metric.
func (n *Node) fetchOptions(em jobs.Emitter) modelcat.FetchOptions {
	var counted int64
	return modelcat.FetchOptions{HF: n.hf, Peers: n.blobs.ModelSource(), MaxSize: n.cfg.MaxDownloadSize, Progress: func(p modelcat.Progress) {
		ev := jobs.Event{Type: jobs.TypeProgress, Done: p.Done, Total: p.Total, Unit: "bytes", Message: string(p.Source), Rate: p.Rate}
		if p.ETA > 0 {
			ev.ETAMs = p.ETA.Milliseconds()
		}
		em.Emit(ev)
		if d := p.Done - p.Resumed - counted; d > 0 {
			n.metrics.downloaded.WithLabelValues("model").Add(float64(d))
			counted += d
		}
	}}
}

// localModel finds a catalog entry by short name or by the reference it
// came from.
func (n *Node) localModel(ref string) (modelcat.Entry, bool) {
	es, err := n.models.List()
	if err != nil {
		return modelcat.Entry{}, false
	}
	for _, e := range es {
		if strings.EqualFold(e.Ref, ref) || router.ModelMatches(e.ID, ref) {
			return e, true
		}
	}
	return modelcat.Entry{}, false
}

// heldElsewhere finds a registry holding on a live other node that matches
// ref (id, short name or reference) and has a sha256 to verify a copy by.
func (n *Node) heldElsewhere(ref string) (fsm.ModelHolding, bool) {
	alive := n.aliveOthers()
	for _, h := range n.reg.Models() {
		if !alive[h.NodeID] || h.SHA256 == "" || h.File == "" {
			continue
		}
		if (h.Ref != "" && strings.EqualFold(h.Ref, ref)) || router.ModelMatches(h.ModelID, ref) {
			return h, true
		}
	}
	return fsm.ModelHolding{}, false
}

// unknownModel is the not-found error for a name that is neither in the
// cluster nor a file, with the hint that fits.
func (n *Node) unknownModel(ref string) error {
	hint := "a model is a catalog id, a short name the cluster holds (`rbee model list`), hf:ORG/REPO[:QUANT], an https:// URL, a path on the hive or builtin:NAME"
	if _, err := builtin.Lookup(ref); err == nil {
		hint = "did you mean builtin:" + ref + "?"
	} else if strings.Count(ref, "/") == 1 && !strings.HasPrefix(ref, "/") && !strings.HasPrefix(ref, ".") {
		hint = "for a Hugging Face repo write hf:" + ref
	}
	return jobs.Errorf(jobs.CodeNotFound, "no model %q on %s or any live node of the cluster, and no such file (%s)", ref, n.cfg.Name, hint)
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
	r.Type = orCPU(r.Type)
	if r.Type == workercat.TypeRbee {
		return jobs.Errorf(jobs.CodeBadRequest, "type %q is rbee itself, not a worker", r.Type)
	}
	ref := r.Model
	if ref == "" {
		ref = r.Ref
	}
	typ, err := n.binaries.Type(r.Type)
	if err != nil {
		return catalogError(err)
	}
	wantGPU := typ.External && r.Device != "cpu"
	if wantGPU && r.Hive == "" {
		if fwd, err := n.placeSpawn(ctx, em, req, &r, ref); err != nil || fwd {
			return err
		}
	}
	model, err := n.resolveModel(ctx, em, ref)
	if err != nil {
		return err
	}
	switch {
	case wantGPU:
		if err := n.fitLocalGPUs(em, &r, model); err != nil {
			return err
		}
	case typ.External:
		if err := n.fitLocalRAM(em, r, model); err != nil {
			return err
		}
	}
	bin, err := n.workerBinary(ctx, r.Type, r.Version)
	if err != nil {
		return catalogError(&jobs.Error{Code: jobs.CodeNotFound, Err: err})
	}
	if typ, err = typ.ForEntry(bin); err != nil {
		return catalogError(err)
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
	em.Narrate("hive", "spawn", "starting a %s worker (binary %s, %s) for %s on %s%s", r.Type, bin.Version, bin.Source, model.ID, n.cfg.Name, where)
	var guard []string
	if typ.External && n.cfg.EngineGuard != "" && n.WorkerOrphanGrace() > 0 {
		guard = []string{n.cfg.EngineGuard, "engine-guard", "--node", n.URL(), "--node-id", n.ID(), "--grace", n.WorkerOrphanGrace().String()}
	}
	info, err := n.procs.Spawn(ctx, process.SpawnOptions{Binary: bin.Path, Type: typ, ModelPath: model.Path, ModelID: model.ID,
		WorkerID: r.WorkerID, Device: device, Threads: r.Threads, Slots: r.Slots, NodeURL: n.URL(),
		Ctx: r.Ctx, GPUs: r.GPUs, GPULayers: layers, ExtraArgs: extra, ReadyTimeout: readyTimeout, Guard: guard})
	if err != nil {
		return jobs.Errorf(jobs.CodeUnavailable, "spawn worker: %v", err)
	}
	if isOllama(typ) {
		if err := n.importIntoOllama(ctx, em, info, model); err != nil {
			stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
			_ = n.procs.Stop(stopCtx, info.PID, 10*time.Second)
			cancel()
			return jobs.Errorf(jobs.CodeUnavailable, "spawn %s: %v (engine log: %s)", r.Type, err, info.LogPath)
		}
	}
	if typ.External {
		// No heartbeats from an engine: report it now rather than at the
		// next poll.
		n.pollEngine(info, typ)
		if len(r.GPUs) > 0 {
			n.refreshCapabilitiesSoon()
		}
	}
	em.Narrate("hive", "spawn", "worker %s runs as pid %d on port %d; waiting for the registry", info.WorkerID, info.PID, info.Port)
	res := api.SpawnResult{WorkerID: info.WorkerID, PID: info.PID, Port: info.Port, Model: model.ID, Node: n.cfg.Name, Device: device,
		BinaryVersion: bin.Version}
	wctx, cancel := context.WithTimeout(ctx, spawnReadyTimeout)
	defer cancel()
	var staleSince time.Time // since when no leader was heard from
	for {
		if w, ok := n.reg.Worker(info.WorkerID); ok && w.State == fsm.WorkerReady {
			res.State = string(w.State)
			em.Narrate("queen", "registered", "worker %s is ready", info.WorkerID)
			return em.Result(res)
		}
		if _, err := n.procs.Get(info.PID); err != nil {
			return jobs.Errorf(jobs.CodeUnavailable, "worker %s exited before it was registered (log: %s)", info.WorkerID, info.LogPath)
		}
		stale := n.cons.Stale()
		switch {
		case !stale:
			staleSince = time.Time{}
		case staleSince.IsZero():
			staleSince = time.Now()
		}
		if hb, ok := n.localHeartbeat(info.WorkerID); ok && (hb.State == worker.StateReady || hb.State == worker.StateBusy) &&
			stale && time.Since(staleSince) >= spawnStaleGrace {
			// No leader to register it: this node routes to it already.
			res.State = "registering"
			em.Narrate("queen", "registered", "worker %s serves from this node; the registry write waits for a leader", info.WorkerID)
			return em.Result(res)
		}
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// It runs and serves; the registry write waits for a leader.
			res.State = "registering"
			em.Narrate("queen", "registered", "worker %s runs but is not registered yet (no leader?)", info.WorkerID)
			return em.Result(res)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (n *Node) opProcessList(ctx context.Context, em jobs.Emitter, req Request) error {
	ps := n.procs.List()
	if ps == nil {
		ps = []process.Status{}
	}
	return em.Result(api.ProcessListResult{Node: n.cfg.Name, Processes: ps})
}

func (n *Node) opProcessGet(ctx context.Context, em jobs.Emitter, req Request) error {
	r, _ := decode[api.ProcessGetRequest](req)
	st, err := n.procs.Get(r.PID)
	if err != nil {
		return catalogError(err)
	}
	return em.Result(st)
}

func (n *Node) opProcessDelete(ctx context.Context, em jobs.Emitter, req Request) error {
	r, _ := decode[api.ProcessDeleteRequest](req)
	st, err := n.procs.Get(r.PID)
	if err != nil {
		return catalogError(fmt.Errorf("%w (rbee only stops worker processes it started; see `rbee worker process list`)", err))
	}
	em.Narrate("hive", "stop", "stopping worker %s (pid %d): SIGTERM, then SIGKILL after %v", st.WorkerID, st.PID, workerStopGrace)
	if err := n.procs.Stop(ctx, r.PID, workerStopGrace); err != nil {
		return catalogError(err)
	}
	n.workerGone(st.WorkerID)
	return em.Result(api.ProcessDeleteResult{PID: st.PID, WorkerID: st.WorkerID, Stopped: true})
}

func (n *Node) opBinaryList(ctx context.Context, em jobs.Emitter, req Request) error {
	es := n.binaries.List()
	if es == nil {
		es = []workercat.Entry{}
	}
	return em.Result(api.BinaryListResult{Node: n.cfg.Name, Binaries: es})
}

func (n *Node) opBinaryGet(ctx context.Context, em jobs.Emitter, req Request) error {
	r, _ := decode[api.BinaryGetRequest](req)
	r.Type = orCPU(r.Type)
	e, err := n.binaries.Get(r.Type, r.Version)
	if err != nil {
		return catalogError(err)
	}
	return em.Result(e)
}

func (n *Node) opBinaryDelete(ctx context.Context, em jobs.Emitter, req Request) error {
	r, _ := decode[api.BinaryDeleteRequest](req)
	r.Type = orCPU(r.Type)
	removed, err := n.binaries.Delete(r.Type, r.Version)
	if err != nil {
		return catalogError(err)
	}
	for _, e := range removed {
		n.applyBackground(ctx, fsm.DeleteBinaryHolding{NodeID: n.ID(), WorkerType: e.Type, Version: e.Version, OS: e.OS, Arch: e.Arch})
		em.Narrate("hive", "delete", "deleted %s %s (%s/%s)", e.Type, e.Version, e.OS, e.Arch)
	}
	return em.Result(api.BinaryDeleteResult{Deleted: removed})
}

func (n *Node) opWorkerBuild(ctx context.Context, em jobs.Emitter, req Request) error {
	r, _ := decode[api.WorkerBuildRequest](req)
	r.Type = orCPU(r.Type)
	if r.Module == "" && n.cfg.SourceDir == "" {
		return jobs.Errorf(jobs.CodeBadRequest, "hive %s has no rbee source tree to build from (start the node with --source-dir, or pass a module version)", n.cfg.Name)
	}
	em.Narrate("hive", "build", "building the %s worker on %s", r.Type, n.cfg.Name)
	e, err := n.binaries.Build(ctx, workercat.BuildOptions{Type: r.Type, SourceDir: n.cfg.SourceDir, ModuleVersion: r.Module, OS: r.OS, Arch: r.Arch,
		Output: func(line string) {
			em.Emit(jobs.Event{Type: jobs.TypeNarration, Actor: "go", Action: "build", Message: line})
		}})
	if err != nil {
		return jobs.Errorf(jobs.CodeInternal, "%v", err)
	}
	n.recordBinary(ctx, e)
	em.Narrate("hive", "build", "built %s %s (%s)", e.Type, e.Version, humanize.Bytes(uint64(e.Size)))
	return em.Result(e)
}

func (n *Node) opWorkerDownload(ctx context.Context, em jobs.Emitter, req Request) error {
	r, _ := decode[api.WorkerDownloadRequest](req)
	r.Type = orCPU(r.Type)
	// Checked again here: a forwarded job is validated on arrival too, but
	// this is the operation that fetches.
	if err := refuseURLs(req); err != nil {
		return err
	}
	var counted int64
	progress := func(done, total int64) {
		em.Progress(done, total, "bytes")
		if done > counted {
			n.metrics.downloaded.WithLabelValues("binary").Add(float64(done - counted))
			counted = done
		}
	}
	// A peer with the same type, version and platform first; the copy is
	// checked against the release's signed SHA256SUMS, which the peer
	// sends with it, using this node's trusted keys.
	goos, goarch := r.OS, r.Arch
	if goos == "" {
		goos = runtime.GOOS
	}
	if goarch == "" {
		goarch = runtime.GOARCH
	}
	archive := false
	if t, err := n.binaries.Type(r.Type); err == nil && t.Archive {
		// Engine archives are built per accelerator; every hive fetches
		// its own from the release location.
		archive = true
		if r.Accel == "" {
			rn, _ := n.reg.Node(n.ID())
			r.Accel = defaultAccel(rn.Capabilities)
		}
		em.Narrate("hive", "download", "fetching the %s build of %s for %s/%s", r.Accel, r.Type, goos, goarch)
	}
	if peer := n.blobs.BinarySource(); r.Version != "" && !archive {
		for _, h := range n.reg.Binaries() {
			if h.NodeID == n.ID() || h.Type != r.Type || h.Version != r.Version || h.OS != goos || h.Arch != goarch {
				continue
			}
			em.Narrate("hive", "download", "copying %s %s (%s/%s) from a peer", r.Type, r.Version, goos, goarch)
			e, err := n.binaries.FetchFromPeer(ctx, peer, workercat.PeerOptions{Type: r.Type, Version: r.Version, OS: goos, Arch: goarch,
				Pin: r.Default, Progress: progress})
			if err == nil {
				n.recordBinary(ctx, e)
				n.narrateDefault(em, e)
				return em.Result(e)
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			em.Narrate("hive", "download", "peer copy refused or failed (%v); trying the release location", err)
			break
		}
	}
	if n.cfg.WorkerReleaseURL == "" {
		return jobs.Errorf(jobs.CodeBadRequest, "no release location configured on %s (start the node with --worker-release-url) and no peer has a signed %s %s", n.cfg.Name, r.Type, orAny(r.Version))
	}
	e, err := n.binaries.Download(ctx, workercat.DownloadOptions{Type: r.Type, Version: r.Version, OS: r.OS, Arch: r.Arch, Accel: r.Accel, Pin: r.Default, Progress: progress})
	if err != nil {
		return catalogError(err)
	}
	n.recordBinary(ctx, e)
	n.narrateDefault(em, e)
	return em.Result(e)
}

// narrateDefault tells whether a new binary is what spawns now use.
func (n *Node) narrateDefault(em jobs.Emitter, e workercat.Entry) {
	if e.OS != runtime.GOOS || e.Arch != runtime.GOARCH {
		return
	}
	if d, err := n.binaries.Default(e.Type, e.OS, e.Arch); err == nil && d.Version == e.Version {
		em.Narrate("hive", "download", "%s %s is the default for new %s workers on %s", e.Type, e.Version, e.Type, n.cfg.Name)
		return
	}
	em.Narrate("hive", "download", "%s %s is in the catalog; spawns use it when they name its version (this node runs %s; make it the default with \"default\": true)",
		e.Type, e.Version, n.cfg.Version)
}

func orAny(v string) string {
	if v == "" {
		return "(latest)"
	}
	return v
}

func (n *Node) opModelDownload(ctx context.Context, em jobs.Emitter, req Request) error {
	r, _ := decode[api.ModelDownloadRequest](req)
	ref := r.Model
	if ref == "" {
		ref = r.Ref
	}
	e, err := n.resolveModel(ctx, em, ref)
	if err != nil {
		return err
	}
	return em.Result(e)
}

func (n *Node) opModelList(ctx context.Context, em jobs.Emitter, req Request) error {
	r, _ := decode[api.ModelListRequest](req)
	if r.All {
		names := map[string]string{}
		for _, rn := range n.reg.Nodes() {
			names[rn.ID] = rn.Name
		}
		byID := map[string]*api.ModelView{}
		var order []string
		for _, h := range n.reg.Models() {
			key := h.ModelID + "\x00" + h.SHA256
			v, ok := byID[key]
			if !ok {
				v = &api.ModelView{ID: h.ModelID, SHA256: h.SHA256, Size: h.Size, Quantization: h.Quantization, File: h.File}
				byID[key] = v
				order = append(order, key)
			}
			v.Nodes = append(v.Nodes, names[h.NodeID])
		}
		out := []api.ModelView{}
		for _, k := range order {
			out = append(out, *byID[k])
		}
		return em.Result(api.ClusterModelListResult{Models: out, Cluster: true})
	}
	es, err := n.models.List()
	if err != nil {
		return err
	}
	if es == nil {
		es = []modelcat.Entry{}
	}
	return em.Result(api.ModelListResult{Node: n.cfg.Name, Models: es})
}

func (n *Node) opModelGet(ctx context.Context, em jobs.Emitter, req Request) error {
	r, _ := decode[api.ModelGetRequest](req)
	e, err := n.models.Get(r.ID)
	if err != nil {
		return catalogError(err)
	}
	return em.Result(e)
}

func (n *Node) opModelDelete(ctx context.Context, em jobs.Emitter, req Request) error {
	r, _ := decode[api.ModelDeleteRequest](req)
	if err := n.models.Delete(r.ID); err != nil {
		return catalogError(err)
	}
	n.applyBackground(ctx, fsm.DeleteModelHolding{NodeID: n.ID(), ModelID: r.ID})
	em.Narrate("hive", "delete", "deleted model %s from %s", r.ID, n.cfg.Name)
	return em.Result(api.ModelDeleteResult{Deleted: r.ID, Node: n.cfg.Name})
}
