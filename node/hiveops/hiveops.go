// Package hiveops runs the operations on one hive's catalogs and
// processes: models (download, copy from a peer, list, get, delete),
// worker binaries (list, get, delete, register an engine, build, download
// a signed release) and worker processes (list, get, stop). It owns no
// state beyond what its catalogs and process manager own; it reads the
// registry and writes holdings through Cluster.
package hiveops

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/internal/humanize"
	"github.com/rbee-project/rbee/internal/redirectguard"
	"github.com/rbee-project/rbee/model/builtin"
	modelcat "github.com/rbee-project/rbee/model/catalog"
	"github.com/rbee-project/rbee/model/hf"
	"github.com/rbee-project/rbee/node/jobs"
	"github.com/rbee-project/rbee/node/router"
	workercat "github.com/rbee-project/rbee/worker/catalog"
	"github.com/rbee-project/rbee/worker/process"
)

// Cluster is what the hive operations need of the node.
type Cluster interface {
	// Node, Nodes, Models and Binaries read the registry replica.
	Node(id string) (fsm.Node, bool)
	Nodes() []fsm.Node
	Models() []fsm.ModelHolding
	Binaries() []fsm.BinaryHolding
	// AlivePeers are the ids of the alive peers, this node excluded.
	AlivePeers() map[string]bool
	// Propose writes a registry command in the background, retrying
	// while there is no leader.
	Propose(ctx context.Context, cmd fsm.Command)
	// WorkerGone tells the node that a worker process it ran was stopped.
	WorkerGone(id string)
}

// Config configures Ops. Models, Binaries, Procs and Cluster are required.
type Config struct {
	// LocalID, LocalName and Version are the node's peer id, name and
	// rbee version.
	LocalID, LocalName, Version string
	Models                      *modelcat.Catalog
	Binaries                    *workercat.Catalog
	Procs                       *process.Manager
	Cluster                     Cluster
	// HF is the Hugging Face client; ModelPeers and BinaryPeers copy from
	// peers (the blob service).
	HF          *hf.Client
	ModelPeers  modelcat.PeerSource
	BinaryPeers workercat.PeerSource
	// WorkerReleaseURL is where signed worker releases come from ("":
	// peers only); SourceDir the rbee source tree builds use.
	WorkerReleaseURL, SourceDir string
	// MaxDownloadSize caps a model download (0: none).
	MaxDownloadSize int64
	// StopGrace is how long a stopped worker may drain before SIGKILL.
	StopGrace time.Duration
	// Downloaded counts downloaded bytes by kind ("model", "binary");
	// nil counts nothing.
	Downloaded func(kind string, n int64)
}

// Ops runs the hive operations. Safe for concurrent use.
type Ops struct{ cfg Config }

// New returns the hive operations.
func New(cfg Config) *Ops {
	if cfg.Downloaded == nil {
		cfg.Downloaded = func(string, int64) {}
	}
	return &Ops{cfg: cfg}
}

// OrCPU is a request's worker type: "" is rbee's own cpu worker.
func OrCPU(typ string) string {
	if typ == "" {
		return workercat.TypeCPU
	}
	return typ
}

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

// CatalogError maps catalog and download errors to job error codes.
func CatalogError(err error) error {
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
	case errors.Is(err, hf.ErrRedirect), errors.Is(err, redirectguard.ErrForbidden):
		// The source sent the download where this node does not go (its
		// own or its LAN's services): a later try meets the same refusal.
		return &jobs.Error{Code: jobs.CodeForbidden, Err: err}
	case errors.Is(err, process.ErrNotOurs):
		return &jobs.Error{Code: jobs.CodeForbidden, Err: err}
	case errors.Is(err, hf.ErrTooLarge), errors.Is(err, workercat.ErrTooLarge):
		// Over this hive's --max-download-size, or its largest binary.
		return &jobs.Error{Code: jobs.CodeBadRequest, Err: err}
	case errors.Is(err, hf.ErrNoSpace):
		// Space may be freed (rbee model delete) and the download resumed.
		return &jobs.Error{Code: jobs.CodeUnavailable, Err: err}
	case errors.Is(err, hf.ErrHTTP), errors.Is(err, hf.ErrBadRange), errors.Is(err, hf.ErrChecksum), hf.IsRetryable(err),
		errors.Is(err, workercat.ErrDownload) && !errors.Is(err, context.Canceled):
		// The source (hub, URL, peer) failed or sent what it did not
		// announce: nothing is wrong with this node, a later try may work.
		return &jobs.Error{Code: jobs.CodeUnavailable, Err: err}
	}
	var uerr *url.Error
	if errors.As(err, &uerr) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		// The source could not be reached (refused, reset, DNS).
		return &jobs.Error{Code: jobs.CodeUnavailable, Err: err}
	}
	return err
}

// ResolveModel returns a catalog entry for what a user named: a catalog
// id, a short name or a REF. In order: this hive's catalog (by id, then by
// name or reference); a copy from a live node whose holding in the
// registry matches (no origin is asked, so an air-gapped LAN copies any
// model one node has); else the REF is fetched (peers first when its
// sha256 is known, then its origin).
func (o *Ops) ResolveModel(ctx context.Context, em jobs.Emitter, ref string) (modelcat.Entry, error) {
	ref = strings.TrimSpace(ref)
	if e, err := o.cfg.Models.Get(ref); err == nil {
		return e, nil
	}
	if e, ok := o.LocalModel(ref); ok {
		return e, nil
	}
	opts := o.fetchOptions(em)
	if h, ok := o.heldElsewhere(ref); ok {
		em.Narrate("hive", "model", "copying %s (%s) to %s from a peer that holds it", ref, h.ModelID, o.cfg.LocalName)
		e, err := o.cfg.Models.FetchPeer(ctx, modelcat.PeerCopy{ID: h.ModelID, Ref: h.Ref, FileName: h.File, SHA256: h.SHA256, Size: int64(h.Size), Parts: h.Parts}, opts)
		if err == nil {
			o.RecordModel(ctx, e)
			em.Narrate("hive", "model", "%s is in the catalog of %s as %s (%s, %s)", ref, o.cfg.LocalName, e.ID, humanize.Bytes(uint64(e.Size)), e.Quantization)
			return e, nil
		}
		if ctx.Err() != nil {
			return modelcat.Entry{}, CatalogError(err)
		}
		next := "trying the reference itself"
		if origin, ok := fetchable(h.Ref); ok {
			if _, own := fetchable(ref); !own {
				// The user named the model by its id or short name, which
				// has no origin: the holder's reference has one.
				ref, next = origin, "fetching it from "+origin
			}
		}
		em.Narrate("hive", "model", "the peer copy failed (%v); %s", err, next)
	}
	r, err := modelcat.ParseRef(ref)
	if err != nil {
		return modelcat.Entry{}, CatalogError(fmt.Errorf("%w (a model is a catalog id, a short name the cluster holds, hf:ORG/REPO[:QUANT], hf:ORG/REPO/FILE.gguf, an https:// URL, a path or builtin:stories260k)", err))
	}
	if r.Source == modelcat.SourceLocal {
		if _, serr := os.Stat(r.Path); serr != nil {
			return modelcat.Entry{}, o.unknownModel(ref)
		}
	}
	em.Narrate("hive", "model", "fetching %s on %s", ref, o.cfg.LocalName)
	e, err := o.cfg.Models.Fetch(ctx, r, opts)
	if err != nil {
		return modelcat.Entry{}, CatalogError(err)
	}
	o.RecordModel(ctx, e)
	em.Narrate("hive", "model", "%s is in the catalog of %s as %s (%s, %s)", ref, o.cfg.LocalName, e.ID, humanize.Bytes(uint64(e.Size)), e.Quantization)
	return e, nil
}

// fetchable reports whether ref names a model with an origin to download
// it from (hf:, a URL, builtin:), as opposed to a catalog id, a short name
// or a path; it returns the reference in its canonical form.
func fetchable(ref string) (string, bool) {
	r, err := modelcat.ParseRef(ref)
	if err != nil || r.Source == modelcat.SourceLocal {
		return "", false
	}
	return r.String(), true
}

// fetchOptions are the catalog fetch options of a job: the hub client,
// peers, the size cap, progress events and the download metric.
func (o *Ops) fetchOptions(em jobs.Emitter) modelcat.FetchOptions {
	var counted int64
	return modelcat.FetchOptions{HF: o.cfg.HF, Peers: o.cfg.ModelPeers, MaxSize: o.cfg.MaxDownloadSize, Progress: func(p modelcat.Progress) {
		ev := jobs.Event{Type: jobs.TypeProgress, Done: p.Done, Total: p.Total, Unit: "bytes", Message: string(p.Source), Rate: p.Rate}
		if p.ETA > 0 {
			ev.ETAMs = p.ETA.Milliseconds()
		}
		if p.Merging {
			// A split model's parts becoming one file: written, not downloaded.
			ev.Message = "merge"
			em.Emit(ev)
			return
		}
		em.Emit(ev)
		if d := p.Done - p.Resumed - counted; d > 0 {
			o.cfg.Downloaded("model", d)
			counted += d
		}
	}}
}

// LocalModel finds a catalog entry by short name or by the reference it
// came from.
func (o *Ops) LocalModel(ref string) (modelcat.Entry, bool) {
	es, err := o.cfg.Models.List()
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
func (o *Ops) heldElsewhere(ref string) (fsm.ModelHolding, bool) {
	alive := o.cfg.Cluster.AlivePeers()
	for _, h := range o.cfg.Cluster.Models() {
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
func (o *Ops) unknownModel(ref string) error {
	hint := "a model is a catalog id, a short name the cluster holds (`rbee model list`), hf:ORG/REPO[:QUANT], an https:// URL, a path on the hive or builtin:NAME"
	if _, err := builtin.Lookup(ref); err == nil {
		hint = "did you mean builtin:" + ref + "?"
	} else if strings.Count(ref, "/") == 1 && !strings.HasPrefix(ref, "/") && !strings.HasPrefix(ref, ".") {
		hint = "for a Hugging Face repo write hf:" + ref
	}
	return jobs.Errorf(jobs.CodeNotFound, "no model %q on %s or any live node of the cluster, and no such file (%s)", ref, o.cfg.LocalName, hint)
}

// ProcessList lists the worker processes this hive runs.
func (o *Ops) ProcessList(ctx context.Context, em jobs.Emitter, r api.ProcessListRequest) error {
	ps := o.cfg.Procs.List()
	if ps == nil {
		ps = []process.Status{}
	}
	return em.Result(api.ProcessListResult{Node: o.cfg.LocalName, Processes: ps})
}

// ProcessGet reports one worker process.
func (o *Ops) ProcessGet(ctx context.Context, em jobs.Emitter, r api.ProcessGetRequest) error {
	st, err := o.cfg.Procs.Get(r.PID)
	if err != nil {
		return CatalogError(err)
	}
	return em.Result(st)
}

// ProcessDelete stops a worker process this hive started.
func (o *Ops) ProcessDelete(ctx context.Context, em jobs.Emitter, r api.ProcessDeleteRequest) error {
	st, err := o.cfg.Procs.Get(r.PID)
	if err != nil {
		return CatalogError(fmt.Errorf("%w (rbee only stops worker processes it started; see `rbee worker process list`)", err))
	}
	em.Narrate("hive", "stop", "stopping worker %s (pid %d): SIGTERM, then SIGKILL after %v", st.WorkerID, st.PID, o.cfg.StopGrace)
	if err := o.cfg.Procs.Stop(ctx, r.PID, o.cfg.StopGrace); err != nil {
		return CatalogError(err)
	}
	o.cfg.Cluster.WorkerGone(st.WorkerID)
	return em.Result(api.ProcessDeleteResult{PID: st.PID, WorkerID: st.WorkerID, Stopped: true})
}

// BinaryList lists the worker binaries of this hive.
func (o *Ops) BinaryList(ctx context.Context, em jobs.Emitter, r api.BinaryListRequest) error {
	es := o.cfg.Binaries.List()
	if es == nil {
		es = []workercat.Entry{}
	}
	return em.Result(api.BinaryListResult{Node: o.cfg.LocalName, Binaries: es})
}

// BinaryGet reports one worker binary.
func (o *Ops) BinaryGet(ctx context.Context, em jobs.Emitter, r api.BinaryGetRequest) error {
	r.Type = OrCPU(r.Type)
	e, err := o.cfg.Binaries.Get(r.Type, r.Version)
	if err != nil {
		return CatalogError(err)
	}
	return em.Result(e)
}

// BinaryDelete deletes worker binaries (refused while one runs).
func (o *Ops) BinaryDelete(ctx context.Context, em jobs.Emitter, r api.BinaryDeleteRequest) error {
	r.Type = OrCPU(r.Type)
	removed, err := o.cfg.Binaries.Delete(r.Type, r.Version)
	if err != nil {
		return CatalogError(err)
	}
	for _, e := range removed {
		o.cfg.Cluster.Propose(ctx, fsm.DeleteBinaryHolding{NodeID: o.cfg.LocalID, WorkerType: e.Type, Version: e.Version, OS: e.OS, Arch: e.Arch})
		em.Narrate("hive", "delete", "deleted %s %s (%s/%s)", e.Type, e.Version, e.OS, e.Arch)
	}
	return em.Result(api.BinaryDeleteResult{Deleted: removed})
}

// Build builds a worker (or rbee) from source on this hive.
func (o *Ops) Build(ctx context.Context, em jobs.Emitter, r api.WorkerBuildRequest) error {
	r.Type = OrCPU(r.Type)
	if r.Module == "" && o.cfg.SourceDir == "" {
		return jobs.Errorf(jobs.CodeBadRequest, "hive %s has no rbee source tree to build from (start the node with --source-dir, or pass a module version)", o.cfg.LocalName)
	}
	em.Narrate("hive", "build", "building the %s worker on %s", r.Type, o.cfg.LocalName)
	e, err := o.cfg.Binaries.Build(ctx, workercat.BuildOptions{Type: r.Type, SourceDir: o.cfg.SourceDir, ModuleVersion: r.Module, OS: r.OS, Arch: r.Arch,
		Output: func(line string) {
			em.Emit(jobs.Event{Type: jobs.TypeNarration, Actor: "go", Action: "build", Message: line})
		}})
	if err != nil {
		return err // its code from what failed (jobs.CodeOf): a full disk is unavailable
	}
	o.RecordBinary(ctx, e)
	em.Narrate("hive", "build", "built %s %s (%s)", e.Type, e.Version, humanize.Bytes(uint64(e.Size)))
	return em.Result(e)
}

// Download fetches a signed worker release: from a peer, else the release location.
func (o *Ops) Download(ctx context.Context, em jobs.Emitter, r api.WorkerDownloadRequest) error {
	r.Type = OrCPU(r.Type)
	var counted int64
	progress := func(done, total int64) {
		em.Progress(done, total, "bytes")
		if done > counted {
			o.cfg.Downloaded("binary", done-counted)
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
	if t, err := o.cfg.Binaries.Type(r.Type); err == nil && t.Archive {
		// Engine archives are built per accelerator; every hive fetches
		// its own from the release location.
		archive = true
		if r.Accel == "" {
			rn, _ := o.cfg.Cluster.Node(o.cfg.LocalID)
			r.Accel = defaultAccel(rn.Capabilities)
		}
		em.Narrate("hive", "download", "fetching the %s build of %s for %s/%s", r.Accel, r.Type, goos, goarch)
	}
	var peerErr error // why the peer copy failed, if one was tried
	if peer := o.cfg.BinaryPeers; r.Version != "" && !archive {
		for _, h := range o.cfg.Cluster.Binaries() {
			if h.NodeID == o.cfg.LocalID || h.Type != r.Type || h.Version != r.Version || h.OS != goos || h.Arch != goarch {
				continue
			}
			em.Narrate("hive", "download", "copying %s %s (%s/%s) from a peer", r.Type, r.Version, goos, goarch)
			e, err := o.cfg.Binaries.FetchFromPeer(ctx, peer, workercat.PeerOptions{Type: r.Type, Version: r.Version, OS: goos, Arch: goarch,
				Pin: r.Default, Progress: progress})
			if err == nil {
				o.RecordBinary(ctx, e)
				o.narrateDefault(em, e)
				return em.Result(e)
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			em.Narrate("hive", "download", "peer copy refused or failed (%v); trying the release location", err)
			peerErr = err
			break
		}
	}
	if o.cfg.WorkerReleaseURL == "" {
		if peerErr != nil && !errors.Is(peerErr, workercat.ErrDownload) {
			// A peer sent a copy, and it was refused (a signature this
			// node does not trust, bytes off the signed sums): that is
			// the answer, not the missing release location.
			return CatalogError(fmt.Errorf("no release location configured on %s (start the node with --worker-release-url), and the copy of %s %s from a peer failed: %w", o.cfg.LocalName, r.Type, r.Version, peerErr))
		}
		return jobs.Errorf(jobs.CodeBadRequest, "no release location configured on %s (start the node with --worker-release-url) and no peer has a signed %s %s", o.cfg.LocalName, r.Type, orAny(r.Version))
	}
	e, err := o.cfg.Binaries.Download(ctx, workercat.DownloadOptions{Type: r.Type, Version: r.Version, OS: r.OS, Arch: r.Arch, Accel: r.Accel, Pin: r.Default, Progress: progress})
	if err != nil {
		return CatalogError(err)
	}
	o.RecordBinary(ctx, e)
	o.narrateDefault(em, e)
	return em.Result(e)
}

// narrateDefault tells whether a new binary is what spawns now use.
func (o *Ops) narrateDefault(em jobs.Emitter, e workercat.Entry) {
	if e.OS != runtime.GOOS || e.Arch != runtime.GOARCH {
		return
	}
	if d, err := o.cfg.Binaries.Default(e.Type, e.OS, e.Arch); err == nil && d.Version == e.Version {
		em.Narrate("hive", "download", "%s %s is the default for new %s workers on %s", e.Type, e.Version, e.Type, o.cfg.LocalName)
		return
	}
	em.Narrate("hive", "download", "%s %s is in the catalog; spawns use it when they name its version (this node runs %s; make it the default with \"default\": true)",
		e.Type, e.Version, o.cfg.Version)
}

func orAny(v string) string {
	if v == "" {
		return "(latest)"
	}
	return v
}

// ModelDownload puts a model in this hive's catalog.
func (o *Ops) ModelDownload(ctx context.Context, em jobs.Emitter, r api.ModelDownloadRequest) error {
	ref := r.Model
	if ref == "" {
		ref = r.Ref
	}
	e, err := o.ResolveModel(ctx, em, ref)
	if err != nil {
		return err
	}
	return em.Result(e)
}

// ModelList lists this hive's models, or with All the cluster's.
func (o *Ops) ModelList(ctx context.Context, em jobs.Emitter, r api.ModelListRequest) error {
	if r.All {
		names := map[string]string{}
		for _, rn := range o.cfg.Cluster.Nodes() {
			names[rn.ID] = rn.Name
		}
		byID := map[string]*api.ModelView{}
		var order []string
		for _, h := range o.cfg.Cluster.Models() {
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
	es, err := o.cfg.Models.List()
	if err != nil {
		return err
	}
	if es == nil {
		es = []modelcat.Entry{}
	}
	return em.Result(api.ModelListResult{Node: o.cfg.LocalName, Models: es})
}

// ModelGet reports one model of this hive's catalog.
func (o *Ops) ModelGet(ctx context.Context, em jobs.Emitter, r api.ModelGetRequest) error {
	e, err := o.heldModel(r.ID)
	if err != nil {
		return err
	}
	return em.Result(e)
}

// heldModel finds the model this hive holds under name: a catalog id, or
// as spawn and inference name one, its reference (builtin:NAME,
// hf:ORG/REPO...) or short name. A name that fits several models is a
// conflict that lists them, not a guess.
func (o *Ops) heldModel(name string) (modelcat.Entry, error) {
	name = strings.TrimSpace(name)
	e, err := o.cfg.Models.Get(name)
	switch {
	case err == nil:
		return e, nil
	case !errors.Is(err, modelcat.ErrNotFound) && !errors.Is(err, modelcat.ErrBadName):
		// A reference such as builtin:NAME is no id (ErrBadName).
		return e, CatalogError(err)
	}
	es, lerr := o.cfg.Models.List()
	if lerr != nil {
		return modelcat.Entry{}, CatalogError(lerr)
	}
	var found []modelcat.Entry
	for _, e := range es {
		if strings.EqualFold(e.Ref, name) || router.ModelMatches(e.ID, name) {
			found = append(found, e)
		}
	}
	switch len(found) {
	case 0:
		// A well-formed id or reference that this hive does not hold:
		// say where to look; a bad reference: what is wrong with it,
		// not that a reference is no id.
		ref, rerr := modelcat.ParseRef(name)
		switch {
		case errors.Is(err, modelcat.ErrNotFound) || (rerr == nil && ref.Source != modelcat.SourceLocal):
			return modelcat.Entry{}, &jobs.Error{Code: jobs.CodeNotFound, Err: fmt.Errorf("%w: %s holds no model %q (`rbee model list` shows which nodes hold which model; --hive NAME asks another)",
				modelcat.ErrNotFound, o.cfg.LocalName, name)}
		case rerr != nil:
			return modelcat.Entry{}, CatalogError(rerr)
		}
		return modelcat.Entry{}, CatalogError(err)
	case 1:
		return found[0], nil
	}
	ids := make([]string, len(found))
	for i, e := range found {
		ids[i] = e.ID
	}
	return modelcat.Entry{}, jobs.Errorf(jobs.CodeConflict, "%q names %d models on %s (%s): name one by its id", name, len(found), o.cfg.LocalName, strings.Join(ids, ", "))
}

// ModelDelete deletes a model from this hive.
func (o *Ops) ModelDelete(ctx context.Context, em jobs.Emitter, r api.ModelDeleteRequest) error {
	e, err := o.heldModel(r.ID)
	if err != nil {
		return err
	}
	if err := o.cfg.Models.Delete(e.ID); err != nil {
		return CatalogError(err)
	}
	o.cfg.Cluster.Propose(ctx, fsm.DeleteModelHolding{NodeID: o.cfg.LocalID, ModelID: e.ID})
	em.Narrate("hive", "delete", "deleted model %s from %s", e.ID, o.cfg.LocalName)
	return em.Result(api.ModelDeleteResult{Deleted: e.ID, Node: o.cfg.LocalName})
}

// RegisterOptions are the catalog's options for a worker_binary_add request.
func RegisterOptions(r api.BinaryAddRequest) workercat.RegisterOptions {
	return workercat.RegisterOptions{Type: OrCPU(r.Type), Version: r.Version, Path: r.Path, Template: r.Template,
		HealthPath: r.Health, Devices: r.Devices, Pin: r.Default}
}

// opBinaryAdd registers an engine the user installed on this hive, where
// it is. Admin only: it names a local path that rbee will execute.
// BinaryAdd registers an engine the user installed on this hive, where it is. Admin only: it names a local path that rbee will execute.
func (o *Ops) BinaryAdd(ctx context.Context, em jobs.Emitter, r api.BinaryAddRequest) error {
	e, err := o.cfg.Binaries.Register(RegisterOptions(r))
	if err != nil {
		return CatalogError(err)
	}
	o.RecordBinary(ctx, e)
	em.Narrate("hive", "binary", "%s %s at %s is in the catalog of %s", e.Type, e.Version, e.Path, o.cfg.LocalName)
	return em.Result(e)
}

// RecordModel writes a model holding into the registry (best effort: the
// catalog on disk is the truth; the registry is the cluster's index).
func (o *Ops) RecordModel(ctx context.Context, e modelcat.Entry) {
	o.cfg.Cluster.Propose(ctx, fsm.UpsertModelHolding{Holding: fsm.ModelHolding{NodeID: o.cfg.LocalID, ModelID: e.ID, SHA256: e.SHA256,
		File: e.FileName, Size: uint64(e.Size), Quantization: e.Quantization, Ref: modelRefForRegistry(e), Parts: e.Parts, UpdatedAt: time.Now().UTC()}})
}

// modelRefForRegistry is the reference others may copy a model by: the
// origin of hub, URL and builtin models; a local path names a file on this
// machine only, so it is not shared.
func modelRefForRegistry(e modelcat.Entry) string {
	if e.Source == modelcat.SourceLocal {
		return ""
	}
	return e.Ref
}

func (o *Ops) RecordBinary(ctx context.Context, e workercat.Entry) {
	o.cfg.Cluster.Propose(ctx, fsm.UpsertBinaryHolding{Holding: fsm.BinaryHolding{NodeID: o.cfg.LocalID, Type: e.Type, Version: e.Version,
		OS: e.OS, Arch: e.Arch, SHA256: e.SHA256, Size: uint64(e.Size), UpdatedAt: time.Now().UTC()}})
}
