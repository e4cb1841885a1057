package node

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/node/jobs"
	"github.com/rbee-project/rbee/node/relay"
	"github.com/rbee-project/rbee/node/router"
	"github.com/rbee-project/rbee/worker"
)

// inferFields are the job fields that steer routing; everything else in the
// job goes to the worker, which validates it.
var inferFields = []string{"operation", "hive", "model", "device", "worker_id", "name"}

func validateInfer(req Request) error {
	var ir api.InferRequest
	if err := json.Unmarshal(req.Raw, &ir); err != nil {
		return jobs.Errorf(jobs.CodeBadRequest, "infer: %v", err)
	}
	if ir.Model == "" && ir.WorkerID == "" {
		return jobs.Errorf(jobs.CodeBadRequest, "infer needs field \"model\" (or \"worker_id\")")
	}
	if (ir.Prompt == nil || *ir.Prompt == "") && len(ir.Messages) == 0 {
		return jobs.Errorf(jobs.CodeBadRequest, "infer needs a non-empty \"prompt\" or \"messages\"")
	}
	return nil
}

// workerBody strips the routing fields from a job body.
func workerBody(raw []byte) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	for _, k := range inferFields {
		delete(m, k)
	}
	return json.Marshal(m)
}

func (n *Node) opInfer(ctx context.Context, em jobs.Emitter, req Request) error {
	var ir api.InferRequest
	if err := json.Unmarshal(req.Raw, &ir); err != nil {
		return jobs.Errorf(jobs.CodeBadRequest, "infer: %v", err)
	}
	raw, err := workerBody(req.Raw)
	if err != nil {
		return jobs.Errorf(jobs.CodeBadRequest, "infer: %v", err)
	}
	body, err := relay.NewBody(raw, true)
	if err != nil {
		return jobs.Errorf(jobs.CodeBadRequest, "infer: %v", err)
	}
	f := router.Filter{Model: ir.Model, Device: ir.Device, WorkerID: ir.WorkerID, Hive: ir.Hive}
	var st relay.State
	var text strings.Builder
	var res api.InferResult
	start := time.Now()
	var cur router.Target
	t, attempts, err := n.relay.Forward(ctx, f, "/v1/infer", body, &st, func(resp *http.Response, t router.Target) error {
		if cur.Registry.ID != "" {
			em.Narrate("scheduler", "resume", "worker %s failed; going on on worker %s on %s after %d tokens", cur.Registry.ID, t.Registry.ID, t.NodeName, len(st.IDs))
		} else {
			em.Narrate("scheduler", "route", "routing to worker %s on %s (load %d)", t.Registry.ID, t.NodeName, n.router.Score(t))
		}
		cur = t
		end, err := relay.Infer(resp, t, &st, func(te worker.TokenEvent) error {
			if res.TTFTMs == 0 {
				res.TTFTMs = float64(time.Since(start).Microseconds()) / 1000
			}
			text.WriteString(te.Text)
			em.Emit(jobs.Event{Type: jobs.TypeToken, Text: te.Text, Index: te.Index, ID: te.ID})
			return nil
		})
		res.StopReason, res.TokensIn, res.TokensCached, res.TokensOut, res.TPS = end.StopReason, end.TokensIn, end.TokensCached, end.TokensOut, end.TokensPerSecond
		return err
	})
	if t.Registry.ID != "" {
		n.observeRequest("job", t.Registry.Model, t.NodeName, err, time.Duration(res.TTFTMs*float64(time.Millisecond)), res.TPS)
	}
	if err != nil {
		return err
	}
	res.WorkerID, res.Node, res.Model, res.Text, res.Attempts = t.Registry.ID, t.NodeName, t.Registry.Model, text.String(), attempts
	return em.Result(res)
}
