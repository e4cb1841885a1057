package node

import (
	"errors"

	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/gossip"
	"github.com/rbee-project/rbee/node/router"
)

// ErrNoWorker: no ready worker matches the request (the router's).
var ErrNoWorker = router.ErrNoWorker

// modelMissing reports whether err says no worker of the cluster serves
// what was asked (a 404 "model not found"), as opposed to ready workers
// out of reach from this node (router.ErrUnreachable: a 503, the model
// exists).
func modelMissing(err error) bool {
	return errors.Is(err, ErrNoWorker) && !errors.Is(err, router.ErrUnreachable)
}

// CodeNoWorker is the error code of a request nobody can serve.
const CodeNoWorker = router.CodeNoWorker

// routerView is what the router reads of this node: gossip's live members,
// the load table and the registry replica.
type routerView struct{ n *Node }

func (v routerView) AliveNodes() map[string]string {
	alive := map[string]string{}
	for _, m := range v.n.gsp.Members() {
		if m.State == gossip.StateAlive {
			alive[m.ID] = m.Meta.Name
		}
	}
	return alive
}

func (v routerView) Loads() []router.WorkerLoad { return v.n.loads.workers() }

// Workers is the registry's workers, with those of sharded groups that
// take no requests (every shard but a ready group's head, and any worker
// started for a group that does not head it: see unroutable) shown to the
// router as retiring: decided, so that its fallback to this node's own
// live workers does not pick them either, and not ready.
func (v routerView) Workers() []fsm.Worker {
	all := v.n.reg.Workers()
	skip := unroutable(v.n.reg.Groups(), all)
	for i, w := range all {
		if skip[w.ID] && w.State == fsm.WorkerReady {
			all[i].State = fsm.WorkerRetiring
		}
	}
	return all
}

// InFlight is the number of requests this node has in flight to workers.
func (n *Node) InFlight() int { return n.router.InFlight() }

// ServedModels lists the models that have at least one ready worker.
func (n *Node) ServedModels() []string { return n.router.ServedModels() }
