package node

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sort"
	"strings"

	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/gossip"
	modelcat "github.com/rbee-project/rbee/model/catalog"
	"github.com/rbee-project/rbee/node/jobs"
)

// ErrNoWorker: no ready worker matches the request.
var ErrNoWorker = errors.New("no ready worker")

// CodeNoWorker is the error code of a request nobody can serve.
const CodeNoWorker = "no_worker"

// RouteFilter selects workers.
type RouteFilter struct {
	Model    string
	Device   string
	WorkerID string
	Hive     string
	// Exclude lists workers already tried for this request.
	Exclude map[string]bool
}

// Target is a schedulable worker.
type Target struct {
	Load     WorkerLoad
	Registry fsm.Worker
	NodeName string
	Local    bool
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

// modelMatches reports whether a worker serving have (a catalog id)
// answers for want: the id itself, the reference it came from
// ("builtin:stories260k", "hf:org/repo:Q4_K_M"), or its short name (the
// part after the last "--" of the id, e.g. "stories260k").
func modelMatches(have, want string) bool {
	if strings.EqualFold(have, want) {
		return true
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
		if r.Repo != "" && strings.HasPrefix(ch, canonicalModel(strings.ReplaceAll("hf--"+r.Repo, "/", "--"))) {
			return r.Quant == "" || strings.Contains(ch, strings.ToLower(r.Quant))
		}
	}
	return false
}

// candidates returns the workers the scheduler may use: ready (not
// retiring) in the registry replica, reported live by their node's gossip,
// on a node gossip sees alive, and matching the filter; plus this node's
// own live workers the registry does not list as decided yet. It needs no
// leader.
func (n *Node) candidates(f RouteFilter) []Target {
	alive := map[string]string{}
	for _, m := range n.gsp.Members() {
		if m.State == gossip.StateAlive {
			alive[m.ID] = m.Meta.Name
		}
	}
	live := map[string]WorkerLoad{}
	for _, w := range n.loads.workers() {
		if w.State == "ready" || w.State == "busy" {
			if w.AgeMs <= n.cfg.WorkerHeartbeatTimeout.Milliseconds() {
				live[w.ID] = w
			}
		}
	}
	matches := func(rw fsm.Worker, name string) bool {
		return (f.WorkerID == "" || f.WorkerID == rw.ID) &&
			(f.Model == "" || modelMatches(rw.Model, f.Model)) &&
			(f.Device == "" || strings.EqualFold(f.Device, rw.Device)) &&
			(f.Hive == "" || f.Hive == name || f.Hive == rw.NodeID)
	}
	var out []Target
	decided := map[string]bool{} // workers whose registry entry is past registration
	for _, rw := range n.reg.Workers() {
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
		if !ok || w.NodeID != rw.NodeID || !matches(rw, name) {
			continue
		}
		out = append(out, Target{Load: w, Registry: rw, NodeName: name, Local: rw.NodeID == n.ID()})
	}
	// This node's own live workers are routable from here before the
	// registry lists them as ready: after a restart without quorum, or
	// while the leader has not written them yet. Only a registry entry
	// that is ready, retiring or gone overrides the node's own view.
	for id, w := range live {
		if w.NodeID != n.ID() || decided[id] || f.Exclude[id] {
			continue
		}
		rw := fsm.Worker{ID: id, NodeID: w.NodeID, Model: w.Model, Device: w.Device, Port: w.Port, PID: w.PID, State: fsm.WorkerReady}
		if matches(rw, n.cfg.Name) {
			out = append(out, Target{Load: w, Registry: rw, NodeName: n.cfg.Name, Local: true})
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Registry.ID < out[b].Registry.ID })
	return out
}

// score is a worker's load as this node sees it: what its node reported
// plus the requests this node sent since (which the report may not show).
func (n *Node) score(t Target) int {
	n.pendingMu.Lock()
	p := n.pending[t.Registry.ID]
	n.pendingMu.Unlock()
	return t.Load.InFlight + t.Load.Queued + p
}

// pick chooses a worker by the power of two choices: two random
// candidates, the less loaded wins, ties go to a local worker.
func (n *Node) pick(f RouteFilter) (Target, error) {
	cs := n.candidates(f)
	switch len(cs) {
	case 0:
		return Target{}, n.noWorkerError(f)
	case 1:
		return cs[0], nil
	}
	i := rand.IntN(len(cs))
	j := rand.IntN(len(cs) - 1)
	if j >= i {
		j++
	}
	a, b := cs[i], cs[j]
	sa, sb := n.score(a), n.score(b)
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

func (n *Node) noWorkerError(f RouteFilter) error {
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
	return &jobs.Error{Code: CodeNoWorker, Err: fmt.Errorf("%w for %s (start one with `rbee worker spawn --model M`; see `rbee worker list`)", ErrNoWorker, desc)}
}

// track counts a request to a worker until the returned func is called.
func (n *Node) track(workerID string) func() {
	n.pendingMu.Lock()
	n.pending[workerID]++
	n.pendingMu.Unlock()
	return func() {
		n.pendingMu.Lock()
		n.pending[workerID]--
		if n.pending[workerID] <= 0 {
			delete(n.pending, workerID)
		}
		n.pendingMu.Unlock()
	}
}

// InFlight is the number of requests this node has in flight to workers.
func (n *Node) InFlight() int {
	n.pendingMu.Lock()
	defer n.pendingMu.Unlock()
	t := 0
	for _, v := range n.pending {
		t += v
	}
	return t
}

// ServedModels lists the models that have at least one ready worker.
func (n *Node) ServedModels() []string {
	seen := map[string]bool{}
	var out []string
	for _, t := range n.candidates(RouteFilter{}) {
		if !seen[t.Registry.Model] {
			seen[t.Registry.Model] = true
			out = append(out, t.Registry.Model)
		}
	}
	sort.Strings(out)
	return out
}
