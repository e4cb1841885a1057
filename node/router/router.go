// Package router chooses the worker that serves a request: the candidates
// (ready in the registry, reported live by their node over gossip, on a
// node gossip sees alive), a pick by the power of two choices, and the
// requests this node has in flight to each worker. It owns only the
// in-flight counts and when it first found each worker arriving; it
// reads the cluster through View.
package router

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rbee-project/rbee/fsm"
	modelcat "github.com/rbee-project/rbee/model/catalog"
	"github.com/rbee-project/rbee/model/hf"
	"github.com/rbee-project/rbee/node/jobs"
)

var (
	// ErrNoWorker: no ready worker matches the request.
	ErrNoWorker = errors.New("no ready worker")
	// ErrUnreachable: the registry holds ready workers that match the
	// request, but none on a node this node reaches now (down, or on the
	// other side of a partition). It comes wrapped with ErrNoWorker: the
	// model exists, it is out of reach for now.
	ErrUnreachable = errors.New("out of reach")
)

// CodeNoWorker is the error code of a request nobody can serve.
const CodeNoWorker = "no_worker"

// WorkerLoad is one worker's live state and load as its node last reported
// it: heartbeats become these, and they travel by gossip, never by Raft.
type WorkerLoad struct {
	ID            string  `json:"id"`
	NodeID        string  `json:"node_id"`
	Model         string  `json:"model"`
	Device        string  `json:"device"`
	Port          int     `json:"port"`
	PID           int     `json:"pid,omitempty"`
	State         string  `json:"state"` // loading, ready, busy, draining
	InFlight      int     `json:"in_flight"`
	Queued        int     `json:"queued"`
	Slots         int     `json:"slots"`
	TPS           float64 `json:"tps"`
	ContextLength int     `json:"ctx,omitempty"`
	// Group is the sharded group the worker is a shard of ("" for none):
	// such a worker is routed to only as a ready group's head, which the
	// registry decides, never from this report alone.
	Group string `json:"group,omitempty"`
	// AgeMs is the age of the worker's last heartbeat when the report was
	// made; receivers add the time since they got the report.
	AgeMs int64 `json:"age_ms"`
}

// Filter selects workers.
type Filter struct {
	Model    string
	Device   string
	WorkerID string
	Hive     string
	// Exclude lists workers already tried for this request.
	Exclude map[string]bool
	// Affinity is the request's routing key: what stays the same across
	// the turns of one conversation (relay.AffinityKey makes it from the
	// prompt's leading part). Pick prefers the worker that the key's
	// rendezvous hash ranks first among the candidates, whose KV cache is
	// likely to hold that prefix. "" routes by load alone.
	Affinity string
}

// Target is a schedulable worker.
type Target struct {
	Load     WorkerLoad
	Registry fsm.Worker
	NodeName string
	Local    bool
}

// View is what the router reads of the cluster. The node implements it
// over gossip, its load table and the registry replica. Calls must be
// safe for concurrent use.
type View interface {
	// AliveNodes maps the id of every node gossip sees alive to its name.
	AliveNodes() map[string]string
	// Loads are the latest load reports of every node's workers.
	Loads() []WorkerLoad
	// Workers is the registry replica's worker list.
	Workers() []fsm.Worker
}

// Config configures a Router.
type Config struct {
	// LocalID and LocalName are this node's peer id and name.
	LocalID, LocalName string
	// LiveFor: a worker whose last heartbeat is older is not live.
	LiveFor time.Duration
	View    View
	// Intn returns a random int in [0,n); nil is math/rand/v2's. Tests
	// fix it to make the pick's two draws known.
	Intn func(n int) int
	// Now is the clock of Arriving's windows; nil is time.Now.
	Now func() time.Time
	// NoAffinity makes Pick ignore Filter.Affinity and route by load
	// alone (for measuring what affinity gains).
	NoAffinity bool
}

// Router picks workers and counts this node's requests in flight to each.
// Safe for concurrent use.
type Router struct {
	cfg      Config
	mu       sync.Mutex
	pending  map[string]int
	arriving map[string]time.Time // when Arriving first found each worker arriving
	failed   map[string]failure   // workers whose last request from here failed
}

// failure is a worker's run of failed requests from this node.
type failure struct {
	at     time.Time // the last one
	streak int       // how many in a row
}

// A worker that failed a request (a connection error, a 5xx, a stream
// that broke) sits out the picks for failBackoff, doubled with every
// further failure in a row up to failBackoffMax, while any other candidate
// is left: a worker that fails at once has nothing in flight and would
// otherwise win every pick by load, so a broken engine beside a healthy one
// failed most requests (three tries each). Its heartbeats may still say
// ready: the node's health checks see a process that answers, not one that
// serves. A request it serves clears the run; with no other candidate it
// is still picked.
const (
	failBackoff    = 2 * time.Second
	failBackoffMax = time.Minute
)

// cooling reports whether the failure run f still keeps its worker out of
// the picks at now.
func (f failure) cooling(now time.Time) bool {
	d := failBackoff << min(f.streak-1, 5)
	return now.Sub(f.at) < min(d, failBackoffMax)
}

// New returns a router.
func New(cfg Config) *Router {
	if cfg.Intn == nil {
		cfg.Intn = rand.IntN
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Router{cfg: cfg, pending: map[string]int{}, arriving: map[string]time.Time{}, failed: map[string]failure{}}
}

// canonicalModel reduces a model reference to a comparable name: case
// folded, without a "builtin:"/"hf:" scheme, directory or .gguf suffix.
func canonicalModel(m string) string {
	m = strings.ToLower(strings.TrimSpace(m))
	for _, p := range []string{"builtin:", "hf:", "local:"} {
		m = strings.TrimPrefix(m, p)
	}
	m = strings.TrimSuffix(filepath.Base(m), ".gguf")
	return m
}

// ModelMatches reports whether a worker serving have (a catalog id)
// answers for want: the id itself, the reference it came from
// ("builtin:stories260k", "hf:org/repo:Q4_K_M"), or its short name (the
// part after the last "--" of the id, e.g. "stories260k"), each also with
// Ollama's default tag (":latest").
//
// A Hugging Face reference or a URL names its repo or host: it matches
// only what came from there (the file's id, or for a repo without a file
// any file of the repo with the quantization as a token), never a model
// of another repo whose file has the same name.
func ModelMatches(have, want string) bool {
	if strings.EqualFold(have, want) {
		return true
	}
	if r, err := modelcat.ParseRef(want); err == nil && (r.Source == modelcat.SourceHF || r.Source == modelcat.SourceURL) {
		if refMatches(strings.ToLower(have), r) {
			return true
		}
		if base := modelcat.TrimDefaultTag(want); base != strings.TrimSpace(want) {
			return ModelMatches(have, base)
		}
		return false
	}
	ch, cw := canonicalModel(have), canonicalModel(want)
	if ch == cw {
		return true
	}
	if i := strings.LastIndex(ch, "--"); i >= 0 && ch[i+2:] == cw {
		return true
	}
	if r, err := modelcat.ParseRef(want); err == nil {
		if id := modelcat.IDFor(r, r.File); id != "" && strings.EqualFold(id, have) {
			return true
		}
	}
	// Ollama's default tag, as clients that took the name from Ollama
	// (or from /api/tags) send it on the OpenAI routes too.
	if base := modelcat.TrimDefaultTag(want); base != strings.TrimSpace(want) {
		return ModelMatches(have, base)
	}
	return false
}

// Candidates returns the workers the scheduler may use, sorted by id:
// ready (not retiring) in the registry replica, reported live by their
// node's gossip, on a node gossip sees alive, and matching the filter;
// plus this node's own live workers the registry does not list as decided
// yet. It needs no leader.
func (r *Router) Candidates(f Filter) []Target {
	alive := r.cfg.View.AliveNodes()
	live := r.liveIn(r.cfg.View.Loads())
	var out []Target
	decided := map[string]bool{} // workers whose registry entry is past registration
	for _, rw := range r.cfg.View.Workers() {
		if rw.State != fsm.WorkerRegistered {
			decided[rw.ID] = true
		}
		if rw.State != fsm.WorkerReady || f.Exclude[rw.ID] {
			continue
		}
		name, up := alive[rw.NodeID]
		if !up {
			continue
		}
		w, ok := live[rw.ID]
		if !ok || w.NodeID != rw.NodeID || !f.matches(rw, name) {
			continue
		}
		out = append(out, Target{Load: w, Registry: rw, NodeName: name, Local: rw.NodeID == r.cfg.LocalID})
	}
	// This node's own live workers are routable from here before the
	// registry lists them as ready: after a restart without quorum, or
	// while the leader has not written them yet. Only a registry entry
	// that is ready, retiring or gone overrides the node's own view. A
	// shard of a group never is: only the registry's group decides it.
	for id, w := range live {
		if w.NodeID != r.cfg.LocalID || decided[id] || f.Exclude[id] || w.Group != "" {
			continue
		}
		rw := fsm.Worker{ID: id, NodeID: w.NodeID, Model: w.Model, Device: w.Device, Port: w.Port, PID: w.PID, State: fsm.WorkerReady}
		if f.matches(rw, r.cfg.LocalName) {
			out = append(out, Target{Load: w, Registry: rw, NodeName: r.cfg.LocalName, Local: true})
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Registry.ID < out[b].Registry.ID })
	return out
}

// arriveWithin: a worker the registry made ready this recently, whose
// node's report of it has not arrived yet, is arriving rather than lost.
// The report is broadcast the moment the worker turns ready and reaches
// every node in well under this (about 2.5 s at 100 nodes on one 2-core
// machine, 7 s in the simulated 1,000; see gossip/DESIGN.md).
const arriveWithin = 10 * time.Second

// Arriving reports whether a worker matching f is about to be a
// candidate: the two views that make one, replicated apart (Raft and
// gossip), agree on it but for the one that has not caught up yet:
//
//   - the registry replica holds it ready on an alive node, written less
//     than arriveWithin ago (by the leader's clock), and its node has not
//     reported it yet, or last reported it loading;
//   - or its node reports it live while the replica does not hold it yet,
//     or holds it registered (the leader's ready write is on its way, or
//     there is no leader to write it).
//
// Either way a worker counts as arriving for at most arriveWithin from
// the first time this router found it so, by this node's clock, so a
// view that never catches up (no quorum, a partition) delays requests
// only in that first window. Callers wait for it, bounded, instead of
// failing with ErrNoWorker.
func (r *Router) Arriving(f Filter) bool {
	alive := r.cfg.View.AliveNodes()
	loads := r.cfg.View.Loads()
	reported := make(map[string]string, len(loads)) // worker id → its state in its node's report
	for _, w := range loads {
		reported[w.ID] = w.State
	}
	live := r.liveIn(loads)
	now := r.cfg.Now()
	var found []string
	inRegistry := map[string]fsm.Worker{}
	for _, rw := range r.cfg.View.Workers() {
		inRegistry[rw.ID] = rw
		name, up := alive[rw.NodeID]
		if !up || f.Exclude[rw.ID] || rw.State != fsm.WorkerReady || !f.matches(rw, name) {
			continue
		}
		if st, ok := reported[rw.ID]; (!ok || st == "loading") && now.Sub(rw.UpdatedAt) < arriveWithin {
			found = append(found, rw.ID)
		}
	}
	for id, w := range live {
		name, up := alive[w.NodeID]
		if !up || f.Exclude[id] || w.Group != "" {
			continue
		}
		rw, listed := inRegistry[id]
		if listed && (rw.State != fsm.WorkerRegistered || rw.Group != "") {
			continue
		}
		if !listed {
			rw = fsm.Worker{ID: id, NodeID: w.NodeID, Model: w.Model, Device: w.Device}
		}
		if f.matches(rw, name) {
			found = append(found, id)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	arriving := false
	for _, id := range found {
		first, seen := r.arriving[id]
		if !seen {
			first = now
			r.arriving[id] = now
		}
		arriving = arriving || now.Sub(first) < arriveWithin
	}
	// Forget workers found arriving long ago: one that arrives later for
	// real (a spawn after a restart) gets a window of its own.
	for id, first := range r.arriving {
		if now.Sub(first) > forgetArriving {
			delete(r.arriving, id)
		}
	}
	return arriving
}

// forgetArriving: how long the router remembers when it first found a
// worker arriving. Longer than arriveWithin, so a view that never catches
// up costs requests one window per this period at most.
const forgetArriving = 10 * time.Minute

// liveIn are the workers of loads reported ready or busy by a heartbeat
// younger than LiveFor, by id.
func (r *Router) liveIn(loads []WorkerLoad) map[string]WorkerLoad {
	live := map[string]WorkerLoad{}
	for _, w := range loads {
		if (w.State == "ready" || w.State == "busy") && w.AgeMs <= r.cfg.LiveFor.Milliseconds() {
			live[w.ID] = w
		}
	}
	return live
}

// matches reports whether registry worker rw on the node named name
// passes the filter (Exclude aside).
func (f Filter) matches(rw fsm.Worker, name string) bool {
	return (f.WorkerID == "" || f.WorkerID == rw.ID) &&
		(f.Model == "" || ModelMatches(rw.Model, f.Model)) &&
		(f.Device == "" || strings.EqualFold(f.Device, rw.Device)) &&
		(f.Hive == "" || f.Hive == name || f.Hive == rw.NodeID)
}

// Score is a worker's load as this node sees it: what its node reported
// plus the requests this node sent since (which the report may not show).
func (r *Router) Score(t Target) int {
	return t.Load.InFlight + t.Load.Queued + r.Pending(t.Registry.ID)
}

// affinitySlack is how much more loaded (Score) than the least loaded
// candidate a request's preferred worker (Filter.Affinity) may be and
// still take it. A worker decodes its active generations together, one
// forward pass per step, so a request or two more there slow each of its
// streams only a little, while going elsewhere evaluates the whole shared
// prefix again (the earlier turns of a chat: hundreds to thousands of
// tokens). Past two the preferred worker is likely out of free slots and
// the request would wait in its queue for a whole generation, which costs
// more than the prefill it saves; and a key many requests share (a common
// system prompt) must not pile them all on one worker.
const affinitySlack = 2

// Pick chooses a worker. A request with an affinity key (Filter.Affinity)
// goes to the candidate the key ranks first by rendezvous hashing (the
// same on every node with the same candidates, and a worker that comes or
// goes moves only the keys it ranks first), unless that worker's load
// exceeds the least loaded candidate's by more than affinitySlack. The
// rest go by the power of two choices: two random candidates, the less
// loaded wins, ties go to a local worker. Workers that failed a request
// lately (Failed) are left out while another candidate is left. With no
// candidate the error is a *jobs.Error (CodeNoWorker) wrapping
// ErrNoWorker.
func (r *Router) Pick(f Filter) (Target, error) {
	cs := r.healthy(r.Candidates(f))
	switch len(cs) {
	case 0:
		if k := r.unreachable(f); k > 0 {
			return Target{}, &jobs.Error{Code: CodeNoWorker, Err: fmt.Errorf("%w for %s (%w: the registry holds %d ready, on nodes this node does not reach now: down, or cut off from it by a partition; try again when they are back, `rbee status` shows which)",
				ErrNoWorker, filterDesc(f), ErrUnreachable, k)}
		}
		return Target{}, noWorkerError(f)
	case 1:
		return cs[0], nil
	}
	if f.Affinity != "" && !r.cfg.NoAffinity {
		if t, ok := r.preferred(f.Affinity, cs); ok {
			return t, nil
		}
	}
	i := r.cfg.Intn(len(cs))
	j := r.cfg.Intn(len(cs) - 1)
	if j >= i {
		j++
	}
	a, b := cs[i], cs[j]
	sa, sb := r.Score(a), r.Score(b)
	switch {
	case sa < sb:
		return a, nil
	case sb < sa:
		return b, nil
	case b.Local && !a.Local:
		return b, nil
	}
	return a, nil
}

// preferred is the candidate of cs that key ranks first by rendezvous
// hashing, and whether its load is within affinitySlack of the least
// loaded candidate's.
func (r *Router) preferred(key string, cs []Target) (Target, bool) {
	best, bestW := 0, uint64(0)
	least := r.Score(cs[0])
	for i, t := range cs {
		if w := rendezvous(key, t.Registry.ID); i == 0 || w > bestW {
			best, bestW = i, w
		}
		least = min(least, r.Score(t))
	}
	return cs[best], r.Score(cs[best]) <= least+affinitySlack
}

// rendezvous is worker's weight for key in highest-random-weight
// hashing: the candidate of the highest weight is the key's preferred
// worker. It depends on nothing but the two strings, so every node ranks
// the workers alike.
func rendezvous(key, worker string) uint64 {
	h := sha256.New()
	h.Write([]byte(key))
	h.Write([]byte{0}) // no key/worker pair reads as another
	h.Write([]byte(worker))
	var sum [sha256.Size]byte
	return binary.BigEndian.Uint64(h.Sum(sum[:0]))
}

// healthy is cs without the workers whose failures keep them out of the
// picks now, or cs when that leaves none.
func (r *Router) healthy(cs []Target) []Target {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.failed) == 0 {
		return cs
	}
	now := r.cfg.Now()
	out := make([]Target, 0, len(cs))
	for _, t := range cs {
		if f, ok := r.failed[t.Registry.ID]; !ok || !f.cooling(now) {
			out = append(out, t)
		}
	}
	if len(out) == 0 {
		return cs
	}
	return out
}

// Failed records that a request from this node to workerID failed (the
// worker's fault, not the client's or a full queue): Pick passes it over
// for a while (failBackoff, doubling per failure in a row).
func (r *Router) Failed(workerID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.cfg.Now()
	f := r.failed[workerID]
	if f.streak > 0 && now.Sub(f.at) > failBackoffMax {
		f.streak = 0 // a run long over starts again
	}
	r.failed[workerID] = failure{at: now, streak: f.streak + 1}
	// A run whose last failure is older than the longest backoff keeps
	// nobody out and starts again: forget it, so the map holds only
	// recent ones.
	for id, f := range r.failed {
		if now.Sub(f.at) > failBackoffMax {
			delete(r.failed, id)
		}
	}
}

// Served records that workerID answered a request from this node: its
// run of failures, if any, is over.
func (r *Router) Served(workerID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.failed, workerID)
}

// unreachable counts the registry's ready workers that match f (a hive
// filter by id, as a node this node does not see has no name here) but
// are no candidates because their node is not alive in gossip or has not
// reported them live.
func (r *Router) unreachable(f Filter) int {
	alive := r.cfg.View.AliveNodes()
	live := r.liveIn(r.cfg.View.Loads())
	k := 0
	for _, rw := range r.cfg.View.Workers() {
		if rw.State != fsm.WorkerReady || f.Exclude[rw.ID] {
			continue
		}
		name, up := alive[rw.NodeID]
		if w, ok := live[rw.ID]; up && ok && w.NodeID == rw.NodeID {
			continue // a candidate, only not matching, or cooling
		}
		if f.Hive != "" && f.Hive != name && f.Hive != rw.NodeID {
			continue
		}
		if !(Filter{WorkerID: f.WorkerID, Model: f.Model, Device: f.Device}).matches(rw, "") {
			continue
		}
		k++
	}
	return k
}

func noWorkerError(f Filter) error {
	return &jobs.Error{Code: CodeNoWorker, Err: fmt.Errorf("%w for %s (start one with `rbee worker spawn --model M`; see `rbee worker list`)", ErrNoWorker, filterDesc(f))}
}

// filterDesc names what f asks for.
func filterDesc(f Filter) string {
	var what []string
	if f.Model != "" {
		what = append(what, "model "+f.Model)
	}
	if f.Device != "" {
		what = append(what, "device "+f.Device)
	}
	if f.WorkerID != "" {
		what = append(what, "worker "+f.WorkerID)
	}
	if f.Hive != "" {
		what = append(what, "hive "+f.Hive)
	}
	desc := strings.Join(what, ", ")
	if desc == "" {
		desc = "any model"
	}
	return desc
}

// Track counts a request to a worker until the returned func is called
// (once).
func (r *Router) Track(workerID string) func() {
	r.mu.Lock()
	r.pending[workerID]++
	r.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			r.mu.Lock()
			r.pending[workerID]--
			if r.pending[workerID] <= 0 {
				delete(r.pending, workerID)
			}
			r.mu.Unlock()
		})
	}
}

// Pending is the number of requests this node has in flight to a worker.
func (r *Router) Pending(workerID string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pending[workerID]
}

// InFlight is the number of requests this node has in flight to workers.
func (r *Router) InFlight() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := 0
	for _, v := range r.pending {
		t += v
	}
	return t
}

// ServedModels lists the models that have at least one candidate worker.
func (r *Router) ServedModels() []string {
	seen := map[string]bool{}
	var out []string
	for _, t := range r.Candidates(Filter{}) {
		if !seen[t.Registry.Model] {
			seen[t.Registry.Model] = true
			out = append(out, t.Registry.Model)
		}
	}
	sort.Strings(out)
	return out
}

// refMatches reports whether the catalog id have (lower case) came from
// the Hugging Face or URL reference r.
func refMatches(have string, r modelcat.Ref) bool {
	if r.Source == modelcat.SourceURL {
		u, err := url.Parse(r.URL)
		return err == nil && have == modelcat.IDFor(r, path.Base(u.Path))
	}
	if r.File != "" {
		return have == modelcat.IDFor(r, r.File)
	}
	org, repo, _ := strings.Cut(r.Repo, "/")
	rest, ok := strings.CutPrefix(have, modelcat.MakeID("hf", org, repo)+"--")
	return ok && (r.Quant == "" || hf.HasQuantTag(rest, r.Quant))
}
