package node

import (
	"context"
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
		Cluster: supervision{n}, Client: n.workerClient, Logger: n.log})
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
