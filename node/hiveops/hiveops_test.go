package hiveops_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/internal/redirectguard"
	modelcat "github.com/rbee-project/rbee/model/catalog"
	"github.com/rbee-project/rbee/model/hf"
	"github.com/rbee-project/rbee/node/hiveops"
	"github.com/rbee-project/rbee/node/jobs"
	workercat "github.com/rbee-project/rbee/worker/catalog"
	"github.com/rbee-project/rbee/worker/process"
)

// cluster is the registry as the hive operations see it: holdings the
// test sets, and the commands the operations propose.
type cluster struct {
	mu       sync.Mutex
	nodes    []fsm.Node
	models   []fsm.ModelHolding
	proposed []fsm.Command
	gone     []string
}

func (c *cluster) Node(id string) (fsm.Node, bool) {
	for _, n := range c.nodes {
		if n.ID == id {
			return n, true
		}
	}
	return fsm.Node{}, false
}
func (c *cluster) Nodes() []fsm.Node             { return c.nodes }
func (c *cluster) Models() []fsm.ModelHolding    { return c.models }
func (c *cluster) Binaries() []fsm.BinaryHolding { return nil }
func (c *cluster) AlivePeers() map[string]bool   { return map[string]bool{} }
func (c *cluster) WorkerGone(id string)          { c.gone = append(c.gone, id) }
func (c *cluster) Propose(_ context.Context, cmd fsm.Command) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.proposed = append(c.proposed, cmd)
}

// result records an operation's result event.
type result struct{ raw json.RawMessage }

func (r *result) Emit(jobs.Event)                        {}
func (r *result) Narrate(string, string, string, ...any) {}
func (r *result) Progress(int64, int64, string)          {}
func (r *result) Result(v any) error {
	b, err := json.Marshal(v)
	r.raw = b
	return err
}

func newOps(t *testing.T, c *cluster) *hiveops.Ops {
	mc, err := modelcat.New(modelcat.Config{Dir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(func() { _ = mc.Close() })
	wcfg := workercat.DefaultConfig()
	wcfg.Dir = t.TempDir()
	bc, err := workercat.New(wcfg)
	require.NoError(t, err)
	pcfg := process.DefaultConfig()
	pcfg.Dir = t.TempDir()
	pm, err := process.New(pcfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pm.Close() })
	return hiveops.New(hiveops.Config{LocalID: "self", LocalName: "one", Version: "test", Models: mc, Binaries: bc, Procs: pm,
		Cluster: c, StopGrace: time.Second})
}

func TestModels(t *testing.T) {
	c := &cluster{nodes: []fsm.Node{{ID: "self", Name: "one"}, {ID: "peer", Name: "two"}}}
	ops := newOps(t, c)
	ctx := context.Background()

	var r result
	require.NoError(t, ops.ModelDownload(ctx, &r, api.ModelDownloadRequest{Model: "builtin:stories260k"}))
	var e api.Model
	require.NoError(t, json.Unmarshal(r.raw, &e))
	require.NotEmpty(t, e.SHA256)
	require.Len(t, c.proposed, 1, "the holding is written")
	h := c.proposed[0].(fsm.UpsertModelHolding).Holding
	require.Equal(t, "self", h.NodeID)
	require.Equal(t, e.ID, h.ModelID)

	// By id, by short name, again: the same entry, nothing new fetched.
	got, err := ops.ResolveModel(ctx, &result{}, e.ID)
	require.NoError(t, err)
	require.Equal(t, e.ID, got.ID)
	got, ok := ops.LocalModel("stories260k")
	require.True(t, ok)
	require.Equal(t, e.ID, got.ID)

	require.NoError(t, ops.ModelList(ctx, &r, api.ModelListRequest{}))
	var ml api.ModelListResult
	require.NoError(t, json.Unmarshal(r.raw, &ml))
	require.Equal(t, "one", ml.Node)
	require.Len(t, ml.Models, 1)

	// The cluster view groups the registry's holdings by model and file.
	c.models = []fsm.ModelHolding{{NodeID: "self", ModelID: "m", SHA256: "a"}, {NodeID: "peer", ModelID: "m", SHA256: "a"}, {NodeID: "peer", ModelID: "m", SHA256: "b"}}
	require.NoError(t, ops.ModelList(ctx, &r, api.ModelListRequest{All: true}))
	var cl api.ClusterModelListResult
	require.NoError(t, json.Unmarshal(r.raw, &cl))
	require.Len(t, cl.Models, 2)
	require.Equal(t, []string{"one", "two"}, cl.Models[0].Nodes)

	// A name or reference this hive does not hold is not found here, with
	// where to look (a reference is no "bad name").
	for _, name := range []string{"nope", "hf:org/repo:Q4_K_M", "https://example.org/m.gguf"} {
		err = ops.ModelGet(ctx, &r, api.ModelGetRequest{ID: name})
		require.Equal(t, jobs.CodeNotFound, jobs.CodeOf(err), name)
		require.ErrorContains(t, err, `one holds no model "`+name+`" (`+"`rbee model list`", name)
		require.Equal(t, jobs.CodeNotFound, jobs.CodeOf(ops.ModelDelete(ctx, &r, api.ModelDeleteRequest{ID: name})), name)
	}
	err = ops.ModelGet(ctx, &r, api.ModelGetRequest{ID: "builtin:nope"})
	require.Equal(t, jobs.CodeBadRequest, jobs.CodeOf(err))
	require.ErrorContains(t, err, "unknown builtin model")
	// get and delete take the names spawn and inference take: the id,
	// the reference, the short name.
	for _, name := range []string{e.ID, "builtin:stories260k", "stories260k", "Stories260K"} {
		require.NoError(t, ops.ModelGet(ctx, &r, api.ModelGetRequest{ID: name}), name)
		var g api.Model
		require.NoError(t, json.Unmarshal(r.raw, &g))
		require.Equal(t, e.ID, g.ID, name)
	}
	err = ops.ModelGet(ctx, &r, api.ModelGetRequest{ID: "../../etc"})
	require.Equal(t, jobs.CodeBadRequest, jobs.CodeOf(err))
	_, err = ops.ResolveModel(ctx, &result{}, "stories15m")
	require.Equal(t, jobs.CodeNotFound, jobs.CodeOf(err))
	require.ErrorContains(t, err, "builtin:NAME")

	require.Equal(t, jobs.CodeNotFound, jobs.CodeOf(ops.ModelDelete(ctx, &r, api.ModelDeleteRequest{ID: "stories15m"})))
	require.NoError(t, ops.ModelDelete(ctx, &r, api.ModelDeleteRequest{ID: "stories260k"}))
	var del api.ModelDeleteResult
	require.NoError(t, json.Unmarshal(r.raw, &del))
	require.Equal(t, e.ID, del.Deleted, "the short name deletes the model it names")
	require.Equal(t, fsm.DeleteModelHolding{NodeID: "self", ModelID: e.ID}, c.proposed[len(c.proposed)-1])
	_, ok = ops.LocalModel("stories260k")
	require.False(t, ok)
	_, err = ops.ResolveModel(ctx, &result{}, "stories260k")
	require.Equal(t, jobs.CodeNotFound, jobs.CodeOf(err))
	require.ErrorContains(t, err, "did you mean builtin:stories260k?")
}

func TestBinariesAndProcesses(t *testing.T) {
	c := &cluster{}
	ops := newOps(t, c)
	ctx := context.Background()
	var r result

	require.NoError(t, ops.BinaryList(ctx, &r, api.BinaryListRequest{}))
	var bl api.BinaryListResult
	require.NoError(t, json.Unmarshal(r.raw, &bl))
	require.Equal(t, "one", bl.Node)

	// Refused with a code, and nothing recorded.
	err := ops.Build(ctx, &r, api.WorkerBuildRequest{Type: "cpu"})
	require.Equal(t, jobs.CodeBadRequest, jobs.CodeOf(err), "no source tree")
	err = ops.Download(ctx, &r, api.WorkerDownloadRequest{Type: "cpu", Version: "v9"})
	require.Equal(t, jobs.CodeBadRequest, jobs.CodeOf(err), "no release location, no peer")
	notExec := filepath.Join(t.TempDir(), "llama-server")
	require.NoError(t, os.WriteFile(notExec, []byte("text"), 0o644))
	err = ops.BinaryAdd(ctx, &r, api.BinaryAddRequest{Type: "llama-server", Path: notExec})
	require.Equal(t, jobs.CodeBadRequest, jobs.CodeOf(err))
	err = ops.BinaryGet(ctx, &r, api.BinaryGetRequest{Type: "llama-server"})
	require.Equal(t, jobs.CodeNotFound, jobs.CodeOf(err))
	err = ops.ProcessGet(ctx, &r, api.ProcessGetRequest{PID: os.Getpid()})
	require.Error(t, err, "a process rbee did not start")
	err = ops.ProcessDelete(ctx, &r, api.ProcessDeleteRequest{PID: os.Getpid()})
	require.Error(t, err)
	require.Empty(t, c.proposed)
	require.Empty(t, c.gone)
}

// A binary over the catalog's size limit is the caller's or the release's
// doing, not a fault of the node: bad_request, like a model over
// --max-download-size.
func TestCatalogErrorBinaryTooLarge(t *testing.T) {
	cfg := workercat.DefaultConfig()
	cfg.Dir = t.TempDir()
	cfg.MaxBinarySize = 16
	cat, err := workercat.New(cfg)
	require.NoError(t, err)
	_, err = cat.AddReader(context.Background(), workercat.AddOptions{Type: workercat.TypeCPU, Version: "v1"}, bytes.NewReader(make([]byte, 64)))
	require.ErrorIs(t, err, workercat.ErrTooLarge)
	var je *jobs.Error
	require.ErrorAs(t, hiveops.CatalogError(err), &je)
	require.Equal(t, jobs.CodeBadRequest, je.Code)
}

// A download the source redirected to a local or private service is
// refused as forbidden (not unavailable, which invites a retry).
func TestCatalogErrorRedirectRefused(t *testing.T) {
	for _, err := range []error{
		fmt.Errorf("catalog: fetching hf:org/repo: %w", hf.Retryable(fmt.Errorf("%w: GET x: 127.0.0.2 is private", hf.ErrRedirect))),
		fmt.Errorf("%w: GET x: %w", workercat.ErrDownload, fmt.Errorf("%w: 127.0.0.2 is private", redirectguard.ErrForbidden)),
	} {
		var je *jobs.Error
		require.ErrorAs(t, hiveops.CatalogError(err), &je)
		require.Equal(t, jobs.CodeForbidden, je.Code, err.Error())
	}
}
