package node

import (
	"fmt"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/fsm"
)

// TestOperationsMatchAPI: the node serves exactly the operations package
// api declares, so a client built on api never names one it lacks.
func TestOperationsMatchAPI(t *testing.T) {
	n := &Node{}
	n.registerOps()
	got := n.Operations()
	require.True(t, slices.IsSorted(got))
	require.Equal(t, api.Operations(), got)
}

// TestSummarize: a cut status keeps the leader, the voters, the answering
// node and the nodes that are not alive, the workers that are not ready,
// and counts everything.
func TestSummarize(t *testing.T) {
	res := api.StatusResult{NodeID: "id-60", Models: make([]fsm.ModelHolding, 100)}
	for i := range 100 {
		h := api.Hive{Name: fmt.Sprintf("n%03d", i), ID: fmt.Sprintf("id-%d", i), State: "alive"}
		switch {
		case i == 0:
			h.Leader, h.Voter = true, true
		case i < 5:
			h.Voter = true
		case i == 50:
			h.State = "dead"
		case i == 51:
			h.State = "suspect"
		}
		res.Nodes = append(res.Nodes, h)
		for k := range 5 {
			w := api.WorkerView{ID: fmt.Sprintf("w-%d-%d", i, k), State: string(fsm.WorkerReady)}
			if i == 7 && k == 0 {
				w.State = string(fsm.WorkerRegistered)
			}
			res.Workers = append(res.Workers, w)
		}
	}
	summarize(&res)
	var names []string
	for _, h := range res.Nodes {
		names = append(names, h.Name)
	}
	require.Equal(t, []string{"n000", "n001", "n002", "n003", "n004", "n050", "n051", "n060"}, names)
	require.Equal(t, map[string]int{"alive": 98, "suspect": 1, "dead": 1}, res.Summary.Nodes)
	require.Equal(t, map[string]int{"ready": 499, "registered": 1}, res.Summary.Workers)
	require.Equal(t, 100, res.Summary.Models)
	require.Len(t, res.Workers, 1)
	require.Equal(t, "w-7-0", res.Workers[0].ID)
	require.Empty(t, res.Models)
}
