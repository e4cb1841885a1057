package node

import (
	"context"
	"encoding/json"

	"github.com/rbee-project/rbee/api"
	modelcat "github.com/rbee-project/rbee/model/catalog"
	"github.com/rbee-project/rbee/node/jobs"
	"github.com/rbee-project/rbee/node/placement"
)

// GPU-aware placement of engine workers is node/placement's; the node
// forwards a spawn placed on another hive, and detects its hardware again
// after a GPU spawn.

// newPlacer is this node's placement of engine spawns.
func (n *Node) newPlacer() *placement.Placer {
	return placement.New(placement.Config{LocalID: n.ID(), LocalName: n.cfg.Name, Cluster: hiveCluster{n}, Models: placeModels{n}})
}

// placeModels is this hive's model catalog for placement.
type placeModels struct{ n *Node }

func (m placeModels) Get(ref string) (modelcat.Entry, error) { return m.n.models.Get(ref) }
func (m placeModels) ResolveModel(ctx context.Context, em jobs.Emitter, ref string) (modelcat.Entry, error) {
	return m.n.hive.ResolveModel(ctx, em, ref)
}

// refreshCapabilitiesSoon has capabilitiesLoop detect this node's
// hardware again and store it, so that the next placement sees what a
// spawn took or an exit gave back (VRAM as detected, RAM as admitted).
// It does not block; requests made while one waits are one.
func (n *Node) refreshCapabilitiesSoon() {
	select {
	case n.capsRefresh <- struct{}{}:
	default:
	}
}

// placeSpawn places an engine spawn that names no hive: it picks the hive
// and GPU(s) that fit and forwards the spawn there (forwarded true), or
// sets r.GPUs when this node is the pick. With no hive reporting a GPU the
// spawn stays here and the engine decides.
func (n *Node) placeSpawn(ctx context.Context, em jobs.Emitter, req Request, r *api.WorkerSpawnRequest, ref string) (forwarded bool, err error) {
	p, ok, err := n.placer.Place(ctx, em, r.Type, ref, r.Ctx, r.GPUs)
	if err != nil || !ok {
		return false, err
	}
	r.GPUs = p.GPUs
	if p.NodeID == n.ID() {
		return false, nil
	}
	target, err := n.resolveHive(p.NodeID)
	if err != nil {
		return false, err
	}
	return true, n.forwardPlaced(ctx, em, req, target, map[string]any{"gpus": p.GPUs})
}

// forwardPlaced forwards a job that this node placed on target: the
// request's fields with hive set to target and the fields in set.
func (n *Node) forwardPlaced(ctx context.Context, em jobs.Emitter, req Request, target api.Hive, set map[string]any) error {
	var fields map[string]any
	if err := json.Unmarshal(req.Raw, &fields); err != nil {
		return jobs.Errorf(jobs.CodeBadRequest, "%s: %v", req.Operation, err)
	}
	for k, v := range set {
		fields[k] = v
	}
	fields["hive"] = target.Name
	fwd := req
	fwd.Hive = target.Name
	var err error
	if fwd.Raw, err = json.Marshal(fields); err != nil {
		return err
	}
	return n.forwardJob(ctx, target, fwd, em)
}
