// Package supervisor keeps a node's view of its own worker processes: it
// accepts the heartbeats of the workers the node started (authenticated by
// each worker's secret, on the port it was given), polls the external
// engines that send none, expires silent workers, hands the node's load
// report to gossip, and on the leader turns what the nodes report into
// registry writes. It also speaks the engines' HTTP for the node (OpenAI
// streams translated into rbee's /v1/infer events, the Ollama model
// import). See node/DESIGN.md, "Workers, load and the registry" and
// "External engines".
package supervisor

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/gossip"
	"github.com/rbee-project/rbee/internal/apierror"
	"github.com/rbee-project/rbee/internal/enginesock"
	"github.com/rbee-project/rbee/internal/loopback"
	"github.com/rbee-project/rbee/internal/peercred"
	"github.com/rbee-project/rbee/internal/reqbody"
	"github.com/rbee-project/rbee/node/jobs"
	"github.com/rbee-project/rbee/node/router"
	"github.com/rbee-project/rbee/worker"
	workercat "github.com/rbee-project/rbee/worker/catalog"
	"github.com/rbee-project/rbee/worker/process"
)

// Timings of the worker bookkeeping.
const (
	// loadPublishEvery: the report is offered to the node this often
	// besides on every worker state change, so load counters reach peers
	// within seconds; the node broadcasts only what changed (and an
	// unchanged report now and then; see the node's loadPublisher).
	loadPublishEvery = 3 * time.Second
	// workerTick drives heartbeat expiry and the leader's reconcile.
	workerTick = 500 * time.Millisecond
	// maxHeartbeatBytes bounds a heartbeat body (a few hundred bytes).
	maxHeartbeatBytes = 64 << 10
	// refusedLogEvery: a refused heartbeat is logged at warn at most this
	// often (a stranger's worker beats every 2 s until its grace ends).
	refusedLogEvery = time.Minute
	// reconcileWriteTimeout bounds one registry write of the reconcile.
	reconcileWriteTimeout = 5 * time.Second
)

// Processes is the process manager as the supervisor reads it.
type Processes interface {
	// Secret is a supervised worker's secret and the port it was given.
	Secret(workerID string) (secret string, port int, ok bool)
	// Info is a supervised worker's record; ok false once it exited.
	Info(workerID string) (process.WorkerInfo, bool)
	// Infos lists the supervised workers.
	Infos() []process.WorkerInfo
}

// Types resolves worker types by name (the node's binary catalog).
type Types interface {
	Type(name string) (workercat.WorkerType, error)
}

// Cluster is what the supervisor needs of the node.
type Cluster interface {
	// Publish hands this node's workers (sorted by id) to gossip as its
	// load report.
	Publish(workers []router.WorkerLoad)
	// Members is gossip's view: node id → state.
	Members() map[string]gossip.State
	// Report is the last load report of a node (read only: the slice may
	// be shared).
	Report(nodeID string) ([]router.WorkerLoad, bool)
	// Registry is the registry replica's current state (immutable). Its
	// registry version says whether a worker's group is written (from 3).
	Registry() *fsm.State
	// Versions are the versions of what Members, Report and Registry
	// return.
	Versions() Versions
	IsLeader() bool
	// ViewHasQuorum reports whether gossip's view on this node sees a
	// majority of the raft voters alive or suspect. A leader whose view
	// does not is the node cut off from gossip: the others are not dead.
	ViewHasQuorum() bool
	// RaftReaches reports whether this node, as leader, reaches node id
	// over raft now: gossip calling such a node dead is this node's view
	// at fault (its gossip port blocked), not the node.
	RaftReaches(nodeID string) bool
	// Apply proposes an encoded registry command.
	Apply(ctx context.Context, cmd []byte) error
	// Pending counts the requests this node has in flight to a worker.
	Pending(workerID string) int
	// Pass runs after every pass of the worker loop, leader telling
	// whether this node leads (the node retires workers and raises the
	// registry version there).
	Pass(leader bool)
}

// Versions say whether the leader's reconcile inputs may have changed:
// each moves whenever its input does (more often is allowed, never less).
// Comparable.
type Versions struct {
	// Members moves when gossip's member list does (a member added,
	// gone, or in another state).
	Members uint64
	// Reports moves when a node's load report appears, goes or changes
	// one of its workers' id, model, device, port, pid, state or group
	// (load counters alone need not move it).
	Reports uint64
	// Registry moves with every registry write (the applied index).
	Registry uint64
}

// Config configures a Supervisor.
type Config struct {
	// Name is the node's name, for messages.
	Name string
	// HeartbeatTimeout expires a worker that has not reported for as long.
	HeartbeatTimeout time.Duration
	Procs            Processes
	Types            Types
	Cluster          Cluster
	// Client calls workers and engines on loopback (nil: a default one).
	// New makes every connection of it check that the server is run by
	// this process's user (peercred.OwnedBy), so it must be an
	// *http.Transport's client: a worker that died leaves its port free
	// for any local user, and a call would send them its secret and the
	// request.
	Client *http.Client
	// EngineFirstByte bounds the wait for the first byte of an external
	// engine's streamed answer (0: DefaultEngineFirstByte; see
	// callEngine).
	EngineFirstByte time.Duration
	Logger          *slog.Logger
}

// localWorker is a worker process on this node, known from its heartbeats.
type localWorker struct {
	hb   worker.Heartbeat
	last time.Time
}

// Supervisor is one node's worker supervision. Safe for concurrent use.
type Supervisor struct {
	cfg Config
	log *slog.Logger

	calls calls // requests in flight to this node's workers

	mu        sync.Mutex
	workers   map[string]*localWorker
	refusedAt time.Time // last refused heartbeat logged at warn
	// hangs are the engines whose last streamed calls got no first byte
	// in time, by worker id (engines.go).
	hangs map[string]*engineHang

	// The leader's reconcile state, touched by the worker loop only:
	// whether its last pass wrote all it had to, at which versions of
	// its inputs, and the scratch maps a pass reuses. skipped counts the
	// passes skipped (read by tests).
	clean   bool
	cleanAt Versions
	skipped atomic.Uint64
	// withheld: the last reconcileCommands left out the deletions of
	// workers on nodes gossip sees down, its view lacking a majority.
	withheld bool
	scratch  struct {
		reported map[string]string              // worker id → reporting node
		reports  map[string][]router.WorkerLoad // live node → its report
		nodes    []string                       // the keys of reports, sorted
	}

	kick chan struct{}
	// adopted is closed when the engine loop's first pass (the health
	// probe of every worker re-adopted after a restart) is done: no load
	// report is published before, so peers never see this node's adopted
	// workers missing.
	adopted chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New returns a supervisor; its loops run from Start.
func New(cfg Config) *Supervisor {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{}
	}
	cfg.Client = peercred.OwnedBy(viaSockets(cfg.Client, cfg.Procs), uint32(os.Getuid()))
	if cfg.EngineFirstByte <= 0 {
		cfg.EngineFirstByte = DefaultEngineFirstByte
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Supervisor{cfg: cfg, log: cfg.Logger, workers: map[string]*localWorker{}, hangs: map[string]*engineHang{}, kick: make(chan struct{}, 1),
		adopted: make(chan struct{}), ctx: ctx, cancel: cancel}
}

// viaSockets returns a copy of hc whose calls to the port of an engine on
// a Unix socket (process.WorkerInfo.Socket) go to that socket: its port is
// the engine's name in the node's records, not where it listens. A client
// of a transport it cannot change is returned as it is (OwnedBy refuses
// it).
func viaSockets(hc *http.Client, procs Processes) *http.Client {
	tr, ok := peercred.CloneTransport(hc)
	if !ok {
		return hc
	}
	tr.DialContext = enginesock.Dial(tr.DialContext, func(port int) string {
		if procs == nil {
			return ""
		}
		for _, info := range procs.Infos() {
			if info.Port == port {
				return info.Socket
			}
		}
		return ""
	})
	c := *hc
	c.Transport = tr
	return &c
}

// Start runs the worker loop (expiry, load reports, the leader's
// reconcile) and the engine loop (polling engines; the first pass probes
// re-adopted workers) until ctx ends or Close.
func (s *Supervisor) Start(ctx context.Context) {
	stop := context.AfterFunc(ctx, s.cancel)
	s.wg.Add(3)
	go func() {
		defer s.wg.Done()
		<-s.ctx.Done()
		stop()
	}()
	go s.workerLoop()
	go s.engineLoop()
}

// Close stops the loops and waits for them.
func (s *Supervisor) Close() {
	s.cancel()
	s.wg.Wait()
}

// Adopted is closed once the first engine pass is done (load reports are
// published from then on).
func (s *Supervisor) Adopted() <-chan struct{} { return s.adopted }

// HandleHeartbeat receives a worker's heartbeat. Only processes on this
// machine may report, and only workers this node's process manager started
// (or re-adopted from this data dir): the heartbeat carries the worker's
// own secret (Authorization: Bearer), handed at spawn, on the port it was
// given. Anything else is a 401 and changes nothing. The API's client
// authentication does not cover this route: workers hold no client token,
// their secret is the credential.
func (s *Supervisor) HandleHeartbeat(w http.ResponseWriter, r *http.Request) {
	fail := apierror.Write
	if !loopback.Request(r) {
		fail(w, http.StatusForbidden, jobs.CodeForbidden, "heartbeats are accepted from this machine only")
		return
	}
	var hb worker.Heartbeat
	if err := json.NewDecoder(reqbody.Reader(w, r, maxHeartbeatBytes)).Decode(&hb); reqbody.TooLarge(err) {
		fail(w, http.StatusRequestEntityTooLarge, jobs.CodeBadRequest, fmt.Sprintf("heartbeat over %d bytes", maxHeartbeatBytes))
		return
	} else if err != nil {
		fail(w, http.StatusBadRequest, jobs.CodeBadRequest, "bad heartbeat: "+err.Error())
		return
	}
	if hb.ID == "" || len(hb.ID) > 128 || hb.Port <= 0 || hb.Port > 65535 {
		fail(w, http.StatusBadRequest, jobs.CodeBadRequest, "heartbeat needs an id and a port")
		return
	}
	if err := checkHeartbeat(hb); err != nil {
		fail(w, http.StatusBadRequest, jobs.CodeBadRequest, "bad heartbeat: "+err.Error())
		return
	}
	if !s.authentic(hb, r) {
		s.logRefused(hb)
		w.Header().Set("WWW-Authenticate", `Bearer realm="rbee-worker"`)
		fail(w, http.StatusUnauthorized, jobs.CodeForbidden,
			"unknown worker or wrong worker secret: this node accepts heartbeats only from workers it started")
		return
	}
	s.Heartbeat(hb)
	w.WriteHeader(http.StatusNoContent)
}

// maxHeartbeatField bounds each string of a heartbeat: the registry's
// bound on ids and model references. Peers drop a load report with a
// longer one, so one worker's bad beat would hide every worker of this
// node from the cluster.
const maxHeartbeatField = 1024

// maxHeartbeatPath bounds a heartbeat's model path: Linux's PATH_MAX.
const maxHeartbeatPath = 4096

// checkHeartbeat refuses what no worker reports: a string over
// maxHeartbeatField, a negative pid, count or context length, a negative
// or infinite rate.
func checkHeartbeat(hb worker.Heartbeat) error {
	for _, f := range []struct{ name, v string }{{"model", hb.Model}, {"device", hb.Device},
		{"state", string(hb.State)}, {"version", hb.Version}} {
		if len(f.v) > maxHeartbeatField {
			return fmt.Errorf("%s longer than %d bytes", f.name, maxHeartbeatField)
		}
	}
	// The model's path is not reported to peers; a path may be as long
	// as the system allows.
	if len(hb.ModelPath) > maxHeartbeatPath {
		return fmt.Errorf("model_path longer than %d bytes", maxHeartbeatPath)
	}
	if hb.PID < 0 || hb.InFlight < 0 || hb.Queued < 0 || hb.Slots < 0 || hb.ContextLength < 0 {
		return errors.New("negative pid, in_flight, queued, slots or context_length")
	}
	if !(hb.TokensPerSecond >= 0) || math.IsInf(hb.TokensPerSecond, 0) {
		return fmt.Errorf("tokens_per_second %v", hb.TokensPerSecond)
	}
	return nil
}

// authentic reports whether a heartbeat comes from a worker this node
// supervises: its secret (compared in constant time) and the port the
// process manager gave it. The port check keeps the node from ever sending
// a worker's secret to another port.
func (s *Supervisor) authentic(hb worker.Heartbeat, r *http.Request) bool {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		return false
	}
	// Worker ids are no secret (`worker list` shows them): an unknown one
	// may answer sooner.
	secret, port, known := s.cfg.Procs.Secret(hb.ID)
	if !known {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(tok), []byte(secret)) == 1 && port == hb.Port
}

// logRefused logs a refused heartbeat: at warn once per refusedLogEvery,
// else at debug.
func (s *Supervisor) logRefused(hb worker.Heartbeat) {
	s.mu.Lock()
	loud := time.Since(s.refusedAt) >= refusedLogEvery
	if loud {
		s.refusedAt = time.Now()
	}
	s.mu.Unlock()
	lvl := slog.LevelDebug
	if loud {
		lvl = slog.LevelWarn
	}
	s.log.Log(s.ctx, lvl, "refused a heartbeat: not a worker this node started, or the wrong secret (a worker of another node, or of this node's data dir before it was replaced?)",
		"worker", hb.ID, "port", hb.Port, "pid", hb.PID)
}

// Heartbeat records an (authenticated) heartbeat and publishes the load
// report at once when the worker is new, changed state or stopped.
func (s *Supervisor) Heartbeat(hb worker.Heartbeat) {
	s.mu.Lock()
	old, ok := s.workers[hb.ID]
	if ok && stale(old.hb, hb) {
		s.mu.Unlock()
		return
	}
	changed := !ok || old.hb.State != hb.State
	if hb.State == worker.StateStopped || hb.State == worker.StateFailed {
		// A worker that stopped (not one that failed to load: its process
		// may never have been announced) whose process is still exiting.
		if _, running := s.cfg.Procs.Info(hb.ID); running && hb.State == worker.StateStopped {
			// Its process is still exiting (and holds its model): it
			// stays listed, not routable, until the process exit
			// (Gone), so the registry drops it only then.
			s.workers[hb.ID] = &localWorker{hb: hb, last: time.Now()}
		} else {
			delete(s.workers, hb.ID)
			changed = ok
		}
	} else {
		s.workers[hb.ID] = &localWorker{hb: hb, last: time.Now()}
	}
	s.mu.Unlock()
	if changed {
		s.log.Info("worker state", "worker", hb.ID, "state", hb.State, "model", hb.Model, "port", hb.Port)
		s.publish()
	}
}

// stale reports whether hb is a beat of the same process as last that
// it sent before last (or last itself, again): a beat the worker cut
// short when it stopped can reach the node after its final one.
func stale(last, hb worker.Heartbeat) bool {
	return hb.Seq != 0 && hb.PID == last.PID && hb.Seq <= last.Seq
}

// Gone drops a local worker at once (its process exited).
func (s *Supervisor) Gone(id string) {
	s.mu.Lock()
	_, ok := s.workers[id]
	delete(s.workers, id)
	delete(s.hangs, id)
	s.mu.Unlock()
	if ok {
		s.log.Info("worker gone", "worker", id)
		s.publish()
	}
}

// Local returns the last heartbeat of a local worker.
func (s *Supervisor) Local(id string) (worker.Heartbeat, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	lw, ok := s.workers[id]
	if !ok {
		return worker.Heartbeat{}, false
	}
	return lw.hb, true
}

// Ports is the local workers' view as worker id → port.
func (s *Supervisor) Ports() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.workers))
	for id, lw := range s.workers {
		out[id] = lw.hb.Port
	}
	return out
}

// publish hands this node's report of its workers to the node.
func (s *Supervisor) publish() {
	select {
	case <-s.adopted:
	default:
		return // the worker loop publishes once adoption is done
	}
	now := time.Now()
	s.mu.Lock()
	out := make([]router.WorkerLoad, 0, len(s.workers))
	for _, lw := range s.workers {
		hb := lw.hb
		out = append(out, router.WorkerLoad{ID: hb.ID, Model: hb.Model, Device: hb.Device,
			Port: hb.Port, PID: hb.PID, State: string(hb.State), InFlight: hb.InFlight, Queued: hb.Queued,
			Slots: hb.Slots, TPS: hb.TokensPerSecond, ContextLength: hb.ContextLength, AgeMs: now.Sub(lw.last).Milliseconds()})
	}
	s.mu.Unlock()
	// A shard's group comes from its process record (the worker does not
	// know it), kept across a node restart.
	for i := range out {
		if info, ok := s.cfg.Procs.Info(out[i].ID); ok {
			out[i].Group = info.Group
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].ID < out[b].ID })
	s.cfg.Cluster.Publish(out)
}

// workerLoop expires silent workers, republishes the load report and, on
// the leader, turns worker state changes into registry writes.
func (s *Supervisor) workerLoop() {
	defer s.wg.Done()
	tick := time.NewTicker(workerTick)
	defer tick.Stop()
	lastPublish := time.Time{}
	// An empty first report would tell every peer that this node's
	// re-adopted workers are gone (and the leader would drop them).
	select {
	case <-s.ctx.Done():
		return
	case <-s.adopted:
	}
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.kick:
		case <-tick.C:
		}
		var expired []string
		s.mu.Lock()
		for id, lw := range s.workers {
			if time.Since(lw.last) > s.cfg.HeartbeatTimeout {
				if lw.hb.State != worker.StateStopped && lw.hb.State != worker.StateFailed {
					s.log.Warn("worker heartbeats stopped", "worker", id, "silent_for", time.Since(lw.last).Round(time.Millisecond))
				}
				delete(s.workers, id)
				expired = append(expired, id)
			}
		}
		s.mu.Unlock()
		for _, id := range expired {
			if n := s.calls.end(id, ErrWorkerSilent); n > 0 {
				s.log.Warn("ended the requests in flight to a silent worker; they go on on others", "worker", id, "requests", n)
			}
		}
		if len(expired) > 0 || time.Since(lastPublish) > loadPublishEvery {
			s.publish()
			lastPublish = time.Now()
		}
		leader := s.cfg.Cluster.IsLeader()
		if leader {
			s.reconcile()
		} else {
			s.clean = false // a new leadership starts with a full pass
		}
		s.cfg.Cluster.Pass(leader)
	}
}

// Kick asks the worker loop for a pass now (non-blocking).
func (s *Supervisor) Kick() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// registryState maps a worker's reported state to its registry state.
func registryState(st string) fsm.WorkerState {
	switch st {
	case string(worker.StateReady), string(worker.StateBusy):
		return fsm.WorkerReady
	case string(worker.StateDraining):
		return fsm.WorkerRetiring
	}
	return fsm.WorkerRegistered
}

// reconcile (leader only) writes the differences between what the nodes
// report and what the registry holds. Heartbeats never reach Raft: only a
// new worker, a state change or a worker that is gone does. A pass is
// skipped when its inputs (Cluster.Versions) are those of the last pass
// that wrote all it had to: on an idle cluster the leader does not scan
// every worker twice a second. Worker loop only.
func (s *Supervisor) reconcile() {
	v := s.cfg.Cluster.Versions()
	if s.clean && v == s.cleanAt {
		s.skipped.Add(1)
		return
	}
	// The versions are read before the inputs: a change while the pass
	// runs moves them, and the next pass runs again.
	for _, c := range s.reconcileCommands() {
		b, err := fsm.Encode(c)
		if err != nil {
			s.log.Error("encode worker command", "err", err)
			continue
		}
		ctx, cancel := context.WithTimeout(s.ctx, reconcileWriteTimeout)
		err = s.cfg.Cluster.Apply(ctx, b)
		cancel()
		if err != nil {
			s.log.Debug("worker reconcile write", "cmd", fmt.Sprintf("%T", c), "err", err)
			s.clean = false
			return
		}
	}
	// Withheld deletions are looked at again next pass, as the view
	// may come back without a version moving (a raft voter removed).
	s.clean, s.cleanAt = !s.withheld, v
}

// reconcileCommands are the registry writes that make the registry agree
// with the nodes' reports: a new worker → UpsertWorker (with the group of
// a shard), a registered shard without its group → UpsertWorker, a state change →
// SetWorkerState (never over retiring or gone, which the registry
// decides), a worker its alive, reporting node no longer lists or whose
// node is dead or left → DeleteWorker (not a retiring one whose node is
// down but still registered: its node stops it when back); the latter only while gossip here
// sees a majority of the voters (Cluster.ViewHasQuorum), else withheld.
// The writes come in the order of
// the reporting nodes' ids, then of the workers' ids; the deletions
// last, by worker id. A worker id two nodes report counts for the first
// of them by node id.
//
// It runs on the worker loop only: its scratch maps are kept between
// passes, so that a pass allocates, beyond its commands, only the map of
// member states (the leader may run one twice a second while workers
// come and go).
func (s *Supervisor) reconcileCommands() []fsm.Command {
	members := s.cfg.Cluster.Members()
	reg := s.cfg.Cluster.Registry()
	sc := &s.scratch
	if sc.reported == nil {
		sc.reported, sc.reports = map[string]string{}, map[string][]router.WorkerLoad{}
	}
	clear(sc.reported)
	clear(sc.reports)
	sc.nodes = sc.nodes[:0]
	for id, st := range members {
		if st != gossip.StateAlive && st != gossip.StateSuspect {
			continue
		}
		ws, ok := s.cfg.Cluster.Report(id)
		if !ok {
			continue
		}
		sc.reports[id] = ws
		sc.nodes = append(sc.nodes, id)
	}
	sort.Strings(sc.nodes)
	var cmds []fsm.Command
	now := time.Now().UTC()
	// A worker's group is a registry version 3 field (groups exist only
	// from 3 on).
	withGroup := reg.RegistryVersion() >= 3
	for _, node := range sc.nodes {
		for _, w := range sc.reports[node] {
			if _, dup := sc.reported[w.ID]; dup {
				continue // a second node reports it: the first (by id) counts
			}
			sc.reported[w.ID] = node
			w.NodeID = node
			if !withGroup {
				w.Group = ""
			}
			if c := workerCommand(w, reg, now); c != nil {
				cmds = append(cmds, c)
			}
		}
	}
	s.withheld = false
	quorum := 0 // 1: the view sees a majority, -1: it does not; asked once
	gone := reg.WorkersWhere(func(rw *fsm.Worker) bool {
		if _, ok := sc.reported[rw.ID]; ok {
			return false
		}
		st, known := members[rw.NodeID]
		if _, hasReport := sc.reports[rw.NodeID]; hasReport {
			return true
		}
		if known && st != gossip.StateDead && st != gossip.StateLeft {
			return false
		}
		if rw.State == fsm.WorkerRetiring && (!known || st == gossip.StateDead) {
			// Its node is down, not gone: only the registry remembers
			// the retire. Deleted, the worker came back as a new ready
			// worker with its node's next report (the retire was lost);
			// kept, its node stops it when it returns, and reaping the
			// node deletes it with the node.
			if n, ok := reg.Node(rw.NodeID); ok && n.State != fsm.NodeLeft {
				return false
			}
		}
		// Its node is down in this view: believe it only when raft does
		// not reach the node either, and the view sees a majority (else
		// this leader is the one cut off).
		if s.cfg.Cluster.RaftReaches(rw.NodeID) {
			s.withheld = true
			return false
		}
		if quorum == 0 {
			quorum = -1
			if s.cfg.Cluster.ViewHasQuorum() {
				quorum = 1
			}
		}
		s.withheld = s.withheld || quorum < 0
		return quorum > 0
	})
	for _, rw := range gone {
		cmds = append(cmds, fsm.DeleteWorker{ID: rw.ID})
	}
	return cmds
}

// OwnCommands are the registry writes that make the registry agree with
// this node's own load report (nodeID's) for this node's workers: a new
// worker registered, a state (or group) change, a worker gone from the
// report deleted (not a retiring one: the registry decides those). The
// leader makes them from the reports gossip brings it; a node whose gossip
// does not reach the leader while raft does writes them itself (the
// node's worker loop), or its new workers are never registered and its
// gone ones stay listed. A worker id the registry holds for another node
// is left alone.
func (s *Supervisor) OwnCommands(nodeID string) []fsm.Command {
	ws, ok := s.cfg.Cluster.Report(nodeID)
	if !ok {
		return nil
	}
	reg := s.cfg.Cluster.Registry()
	withGroup := reg.RegistryVersion() >= 3
	now := time.Now().UTC()
	var cmds []fsm.Command
	listed := make(map[string]bool, len(ws))
	for _, w := range ws {
		listed[w.ID] = true
		if rw, known := reg.Worker(w.ID); known && rw.NodeID != nodeID {
			continue
		}
		w.NodeID = nodeID
		if !withGroup {
			w.Group = ""
		}
		if c := workerCommand(w, reg, now); c != nil {
			cmds = append(cmds, c)
		}
	}
	gone := reg.WorkersWhere(func(rw *fsm.Worker) bool {
		return rw.NodeID == nodeID && !listed[rw.ID] && rw.State != fsm.WorkerRetiring && rw.State != fsm.WorkerGone
	})
	for _, rw := range gone {
		cmds = append(cmds, fsm.DeleteWorker{ID: rw.ID})
	}
	return cmds
}

// workerCommand is the registry write for one reported worker (w.NodeID
// its reporting node), nil when the registry agrees.
func workerCommand(w router.WorkerLoad, reg *fsm.State, now time.Time) fsm.Command {
	want := registryState(w.State)
	rw, ok := reg.Worker(w.ID)
	switch {
	case !ok:
		return fsm.UpsertWorker{Worker: fsm.Worker{ID: w.ID, NodeID: w.NodeID, Model: w.Model, Device: w.Device,
			Port: w.Port, PID: w.PID, State: want, RegisteredAt: now, UpdatedAt: now, Group: w.Group}}
	case rw.State == fsm.WorkerGone:
	case rw.Group != w.Group && w.Group != "":
		// Registered without the group its node records: the router
		// must know it is a shard.
		rw.Group, rw.UpdatedAt = w.Group, now
		return fsm.UpsertWorker{Worker: rw}
	case rw.State == fsm.WorkerRetiring:
		// Retiring is decided by the registry, not by the worker.
	case rw.State != want:
		return fsm.SetWorkerState{ID: w.ID, State: want, At: now}
	}
	return nil
}
