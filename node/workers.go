package node

import (
	"context"
	"fmt"
	"time"

	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/gossip"
	"github.com/rbee-project/rbee/node/router"
	"github.com/rbee-project/rbee/node/supervisor"
	workercat "github.com/rbee-project/rbee/worker/catalog"
	"github.com/rbee-project/rbee/worker/process"
)

// Worker supervision (heartbeats, engine polling, expiry, the leader's
// reconcile) is node/supervisor's; the node wires it to gossip, the
// registry, the router and its catalogs through supervision.

// newSupervisor is this node's worker supervision.
func (n *Node) newSupervisor() *supervisor.Supervisor {
	return supervisor.New(supervisor.Config{Name: n.cfg.Name, HeartbeatTimeout: n.cfg.WorkerHeartbeatTimeout, Procs: supervision{n}, Types: supervision{n},
		Cluster: supervision{n}, Client: n.workerClient, EngineFirstByte: n.cfg.EngineFirstByteTimeout, Logger: n.log})
}

// supervision is what the supervisor reads and writes of this node. The
// process manager and the catalogs are read when asked: the supervisor
// exists before the hive is open (a re-adopted worker may exit at once).
type supervision struct{ n *Node }

func (s supervision) Secret(workerID string) (string, int, bool) {
	if s.n.procs == nil {
		return "", 0, false
	}
	return s.n.procs.Secret(workerID)
}

func (s supervision) Info(workerID string) (process.WorkerInfo, bool) {
	if s.n.procs == nil {
		return process.WorkerInfo{}, false
	}
	return s.n.procs.Info(workerID)
}

func (s supervision) Infos() []process.WorkerInfo {
	if s.n.procs == nil {
		return nil
	}
	return s.n.procs.Infos()
}

func (s supervision) Type(name string) (workercat.WorkerType, error) {
	if s.n.binaries == nil {
		return workercat.WorkerType{}, workercat.ErrUnknownType
	}
	return s.n.binaries.Type(name)
}

// Publish stores this node's load report and broadcasts it when
// loadPublisher says so.
func (s supervision) Publish(workers []router.WorkerLoad) {
	n := s.n
	r := loadReport{NodeID: n.ID(), Seq: time.Now().UnixNano(), Workers: workers}
	for i := range r.Workers {
		r.Workers[i].NodeID = n.ID()
	}
	r.KeysUsed = n.auth.KeysUsed(n.apiKeyNames())
	n.loads.put(r)
	send, relay := n.loadPub.decide(r, time.Now())
	if !send {
		return
	}
	r.Relay = relay
	b, err := encodeLoadMsg(r)
	if err != nil {
		// Peers still get it by push/pull.
		n.log.Debug("broadcast load", "err", err)
		return
	}
	if err := n.gsp.Broadcast(loadKey(n.ID()), b); err != nil {
		n.log.Warn("broadcast load", "err", err)
	}
}

func (s supervision) Members() map[string]gossip.State {
	return s.n.gsp.MemberStates()
}

func (s supervision) Report(nodeID string) ([]router.WorkerLoad, bool) {
	r, ok := s.n.loads.report(nodeID)
	return r.Workers, ok
}

func (s supervision) Registry() *fsm.State { return s.n.reg.State() }
func (s supervision) IsLeader() bool       { return s.n.IsLeader() }
func (s supervision) ViewHasQuorum() bool  { return s.n.cons != nil && s.n.cons.ViewHasQuorum() }
func (s supervision) RaftReaches(id string) bool {
	return s.n.cons != nil && s.n.cons.RaftReaches(id)
}
func (s supervision) Pending(id string) int { return s.n.router.Pending(id) }

func (s supervision) Versions() supervisor.Versions {
	return supervisor.Versions{Members: s.n.gsp.Version(), Reports: s.n.loads.changes(), Registry: s.n.reg.Index()}
}

func (s supervision) Apply(ctx context.Context, cmd []byte) error {
	_, err := s.n.apply(ctx, cmd)
	return err
}

// Pass: on the leader, raise the registry version; everywhere, stop the
// workers the registry marks retiring.
func (s supervision) Pass(leader bool) {
	if leader {
		s.n.raiseRegistryVersion()
	} else {
		s.n.registerCutOff()
	}
	s.n.retireLocalWorkers()
	s.n.groupsPass(leader)
}

// apiKeyNames are the names of the registry's API keys.
func (n *Node) apiKeyNames() map[string]bool {
	keys := n.reg.APIKeys()
	out := make(map[string]bool, len(keys))
	for _, k := range keys {
		out[k.Name] = true
	}
	return out
}

// cutOffWriteTimeout bounds one registry write of registerCutOff, as the
// leader's reconcile bounds its own: the worker loop waits on it.
const cutOffWriteTimeout = 5 * time.Second

// registerCutOff writes this node's worker changes to the registry itself
// (Supervisor.OwnCommands: new workers, state changes, workers gone) when
// its gossip does not reach the leader (the leader is not alive in this
// node's view) while raft does (a leader is known and heard: not stale).
// The leader makes those writes from the load reports gossip brings it,
// and this node's do not come: before, a spawn here waited a minute and
// ended "not registered yet (no leader?)" though there was a leader. The
// leader keeps such a worker while raft reaches this node (its reconcile
// withholds the deletions its gossip view would ask for).
func (n *Node) registerCutOff() {
	if n.cons == nil || n.cons.Stale() {
		return
	}
	lid := n.cons.LeaderID()
	if lid == "" || lid == n.ID() {
		return
	}
	if m, ok := n.gsp.Member(lid); ok && (m.State == gossip.StateAlive || m.State == gossip.StateSuspect) {
		return
	}
	for _, c := range n.sup.OwnCommands(n.ID()) {
		b, err := fsm.Encode(c)
		if err != nil {
			n.log.Error("encode worker command", "err", err)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), cutOffWriteTimeout)
		_, err = n.apply(ctx, b)
		cancel()
		if err != nil {
			n.log.Debug("register a worker of this node", "err", err)
			return
		}
		n.log.Info("wrote a change of this node's workers to the registry itself: the leader's gossip does not hear this node, raft does",
			"cmd", fmt.Sprintf("%T", c))
	}
}
