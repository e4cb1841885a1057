package placement_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/fsm"
	modelcat "github.com/rbee-project/rbee/model/catalog"
	"github.com/rbee-project/rbee/node/jobs"
	"github.com/rbee-project/rbee/node/placement"
)

const gib = 1 << 30

// registry is the registry as plain data.
type registry struct {
	nodes    []fsm.Node
	models   []fsm.ModelHolding
	binaries []fsm.BinaryHolding
}

func (r registry) Node(id string) (fsm.Node, bool) {
	for _, n := range r.nodes {
		if n.ID == id {
			return n, true
		}
	}
	return fsm.Node{}, false
}
func (r registry) Nodes() []fsm.Node             { return r.nodes }
func (r registry) Models() []fsm.ModelHolding    { return r.models }
func (r registry) Binaries() []fsm.BinaryHolding { return r.binaries }

// catalog is this hive's models: the bundled test GGUF under other sizes.
type catalog map[string]int64

func (c catalog) Get(ref string) (modelcat.Entry, error) {
	size, ok := c[ref]
	if !ok {
		return modelcat.Entry{}, modelcat.ErrNotFound
	}
	return modelcat.Entry{ID: ref, Path: "../../testdata/model/stories260K.gguf", Size: size}, nil
}

func (c catalog) ResolveModel(_ context.Context, _ jobs.Emitter, ref string) (modelcat.Entry, error) {
	return c.Get(ref)
}

// narration records what a job was told.
type narration struct{ lines []string }

func (n *narration) Emit(jobs.Event)               {}
func (n *narration) Progress(int64, int64, string) {}
func (n *narration) Result(any) error              { return nil }
func (n *narration) Narrate(actor, action, format string, args ...any) {
	n.lines = append(n.lines, fmt.Sprintf(format, args...))
}

func gpus(free ...uint64) []fsm.GPU {
	out := make([]fsm.GPU, len(free))
	for i, f := range free {
		out[i] = fsm.GPU{Vendor: "nvidia", Name: "card", Index: i, VRAMTotal: 24 * gib, VRAMFree: f}
	}
	return out
}

func cluster() registry {
	return registry{
		nodes: []fsm.Node{
			{ID: "id-a", Name: "a", State: fsm.NodeAlive, Capabilities: &fsm.Capabilities{GPUs: gpus(8*gib, 4*gib), RAMFree: 4 * gib}},
			{ID: "id-b", Name: "b", State: fsm.NodeAlive, Capabilities: &fsm.Capabilities{GPUs: gpus(24 * gib)}},
			{ID: "id-c", Name: "c", State: fsm.NodeFailed, Capabilities: &fsm.Capabilities{GPUs: gpus(24 * gib)}},
			{ID: "id-d", Name: "d", State: fsm.NodeAlive, Capabilities: &fsm.Capabilities{GPUs: gpus(12 * gib)}},
			{ID: "id-e", Name: "e", State: fsm.NodeAlive},
		},
		models: []fsm.ModelHolding{{NodeID: "id-b", ModelID: "held", Size: 2 * gib}},
		binaries: []fsm.BinaryHolding{
			{NodeID: "id-a", Type: "llama-server"}, {NodeID: "id-c", Type: "llama-server"}, {NodeID: "id-d", Type: "llama-server"},
			{NodeID: "id-e", Type: "llama-server"}, {NodeID: "id-b", Type: "vllm"},
		},
	}
}

var models = catalog{"m6": 6 * gib, "m10": 10 * gib, "m20": 20 * gib}

// TestPlace: a spawn without a hive goes to the alive hive with an engine
// of its type and the GPU (or GPUs) with room; refusals say what was
// missing.
func TestPlace(t *testing.T) {
	cases := []struct {
		name, typ, ref string
		gpus           []int
		ok             bool
		node           string
		want           []int
		err, code      string
	}{
		{"most free GPU that holds it", "llama-server", "m6", nil, true, "id-d", []int{0}, "", ""},
		{"a dead hive's GPU does not count", "llama-server", "m10", nil, true, "id-d", []int{0}, "", ""},
		{"too big for every GPU", "llama-server", "m20", nil, false, "", nil, "largest free is 12.0 GiB on d:0", jobs.CodeUnavailable},
		{"named GPU, first hive where it fits", "llama-server", "m6", []int{0}, true, "id-a", []int{0}, "", ""},
		{"named GPU too small everywhere", "llama-server", "m6", []int{1}, false, "", nil, "a has 4.0 GiB free; d has no GPU 1", jobs.CodeUnavailable},
		{"only hives with the engine", "vllm", "m10", nil, true, "id-b", []int{0}, "", ""},
		{"size from the registry", "vllm", "held", nil, true, "id-b", []int{0}, "", ""},
		{"unknown size", "llama-server", "nowhere", nil, false, "", nil, "its size is unknown", jobs.CodeBadRequest},
		{"no hive with a GPU for the type", "openai", "m6", nil, false, "", nil, "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := placement.New(placement.Config{LocalID: "id-e", LocalName: "e", Cluster: cluster(), Models: models})
			em := &narration{}
			pl, ok, err := p.Place(context.Background(), em, tc.typ, tc.ref, 0, tc.gpus)
			if tc.err != "" {
				require.Error(t, err)
				require.Contains(t, err.Error(), tc.err)
				require.Equal(t, tc.code, jobs.CodeOf(err))
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.ok, ok)
			require.NotEmpty(t, em.lines)
			if !ok {
				require.Contains(t, em.lines[0], "starting it on e")
				return
			}
			require.Equal(t, tc.node, pl.NodeID)
			require.Equal(t, tc.want, pl.GPUs)
		})
	}
}

// TestFitLocal: a spawn on a named hive checks its own GPUs (or picks
// one). (A CPU spawn's RAM is the hive's own accounting: node/ram.go.)
func TestFitLocal(t *testing.T) {
	p := placement.New(placement.Config{LocalID: "id-a", LocalName: "a", Cluster: cluster(), Models: models})
	m6, _ := models.Get("m6")
	m10, _ := models.Get("m10")
	em := &narration{}

	r := api.WorkerSpawnRequest{}
	require.NoError(t, p.FitGPUs(em, &r, m6))
	require.Equal(t, []int{0}, r.GPUs, "the GPU that holds it")
	r = api.WorkerSpawnRequest{GPUs: []int{1}}
	err := p.FitGPUs(em, &r, m6)
	require.Error(t, err)
	require.Equal(t, jobs.CodeUnavailable, jobs.CodeOf(err))
	r = api.WorkerSpawnRequest{}
	require.NoError(t, p.FitGPUs(em, &r, m10), "split over both GPUs")
	require.Equal(t, []int{0, 1}, r.GPUs)

	// A hive without recorded capabilities leaves it to the engine.
	bare := placement.New(placement.Config{LocalID: "id-e", LocalName: "e", Cluster: cluster(), Models: models})
	r = api.WorkerSpawnRequest{GPUs: []int{7}}
	require.NoError(t, bare.FitGPUs(em, &r, m10))
}
