package router_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/node/jobs"
	"github.com/rbee-project/rbee/node/router"
)

// view is a cluster as the router reads it, set by each test.
type view struct {
	alive   map[string]string
	loads   []router.WorkerLoad
	workers []fsm.Worker
}

func (v *view) AliveNodes() map[string]string { return v.alive }
func (v *view) Loads() []router.WorkerLoad    { return v.loads }
func (v *view) Workers() []fsm.Worker         { return v.workers }

func worker(id, node, model string, st fsm.WorkerState) fsm.Worker {
	return fsm.Worker{ID: id, NodeID: node, Model: model, Device: "cpu", State: st}
}

func load(id, node, model string, inFlight int) router.WorkerLoad {
	return router.WorkerLoad{ID: id, NodeID: node, Model: model, Device: "cpu", State: "ready", InFlight: inFlight, AgeMs: 100}
}

func newRouter(v *view, draws ...int) *router.Router {
	i := 0
	return router.New(router.Config{LocalID: "n1", LocalName: "one", LiveFor: 5 * time.Second, View: v,
		Intn: func(n int) int {
			d := draws[i%len(draws)] % n
			i++
			return d
		}})
}

func ids(ts []router.Target) []string {
	var out []string
	for _, t := range ts {
		out = append(out, t.Registry.ID)
	}
	return out
}

func TestCandidates(t *testing.T) {
	v := &view{
		alive: map[string]string{"n1": "one", "n2": "two"},
		loads: []router.WorkerLoad{
			load("w1", "n1", "org--stories260k", 0),
			load("w2", "n2", "org--stories260k", 0),
			load("w3", "n3", "org--stories260k", 0), // its node is not alive
			load("w4", "n2", "other", 0),
			{ID: "w5", NodeID: "n2", Model: "org--stories260k", State: "ready", AgeMs: 60_000}, // stale report
			{ID: "w6", NodeID: "n2", Model: "org--stories260k", State: "loading", AgeMs: 10},
			load("w7", "n1", "org--stories260k", 0), // local, not in the registry yet
			load("w8", "n1", "org--stories260k", 0), // local, retiring in the registry
			// A local shard of a group, not in the registry: never a fallback.
			{ID: "w10", NodeID: "n1", Model: "org--stories260k", State: "ready", AgeMs: 10, Group: "g-1"},
		},
		workers: []fsm.Worker{
			worker("w1", "n1", "org--stories260k", fsm.WorkerReady),
			worker("w2", "n2", "org--stories260k", fsm.WorkerReady),
			worker("w3", "n3", "org--stories260k", fsm.WorkerReady),
			worker("w4", "n2", "other", fsm.WorkerReady),
			worker("w5", "n2", "org--stories260k", fsm.WorkerReady),
			worker("w6", "n2", "org--stories260k", fsm.WorkerReady),
			worker("w8", "n1", "org--stories260k", fsm.WorkerRetiring),
			worker("w9", "n2", "org--stories260k", fsm.WorkerReady), // no load report
		},
	}
	r := newRouter(v, 0)
	cases := []struct {
		name string
		f    router.Filter
		want []string
	}{
		{"any", router.Filter{}, []string{"w1", "w2", "w4", "w7"}},
		{"model by short name", router.Filter{Model: "stories260k"}, []string{"w1", "w2", "w7"}},
		{"model by builtin ref", router.Filter{Model: "builtin:stories260k"}, []string{"w1", "w2", "w7"}},
		{"hive by name", router.Filter{Model: "stories260k", Hive: "two"}, []string{"w2"}},
		{"hive by id", router.Filter{Hive: "n1"}, []string{"w1", "w7"}},
		{"worker", router.Filter{WorkerID: "w2"}, []string{"w2"}},
		{"excluded", router.Filter{Model: "stories260k", Exclude: map[string]bool{"w1": true, "w7": true}}, []string{"w2"}},
		{"device", router.Filter{Device: "cuda"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := r.Candidates(tc.f)
			require.Equal(t, tc.want, ids(got))
			for _, c := range got {
				require.Equal(t, c.Registry.NodeID == "n1", c.Local, c.Registry.ID)
			}
		})
	}
	require.Equal(t, []string{"org--stories260k", "other"}, r.ServedModels())
}

// TestPick: of the two drawn candidates the less loaded wins, counting
// what this node has in flight to each; a tie goes to the local worker.
func TestPick(t *testing.T) {
	v := &view{
		alive: map[string]string{"n1": "one", "n2": "two"},
		loads: []router.WorkerLoad{load("a", "n2", "m", 3), load("b", "n1", "m", 1), load("c", "n2", "m", 1)},
		workers: []fsm.Worker{worker("a", "n2", "m", fsm.WorkerReady), worker("b", "n1", "m", fsm.WorkerReady),
			worker("c", "n2", "m", fsm.WorkerReady)},
	}
	// Candidates sort a, b, c. Draws (0, 0) pick a and then b (the second
	// draw skips the first); (2, 0) pick c and a; (1, 1) pick b and c.
	cases := []struct {
		draws []int
		want  string
	}{
		{[]int{0, 0}, "b"}, // 3 vs 1
		{[]int{2, 0}, "c"}, // 1 vs 3
		{[]int{1, 1}, "b"}, // 1 vs 1: the local one
		{[]int{2, 1}, "b"}, // c then b: 1 vs 1, b is local
	}
	for _, tc := range cases {
		r := newRouter(v, tc.draws...)
		got, err := r.Pick(router.Filter{Model: "m"})
		require.NoError(t, err)
		require.Equal(t, tc.want, got.Registry.ID, "draws %v", tc.draws)
	}
	// Requests this node sent count: b with 3 in flight from here loses.
	r := newRouter(v, 1, 1)
	var done []func()
	for range 3 {
		done = append(done, r.Track("b"))
	}
	require.Equal(t, 3, r.Pending("b"))
	require.Equal(t, 3, r.InFlight())
	got, err := r.Pick(router.Filter{Model: "m"})
	require.NoError(t, err)
	require.Equal(t, "c", got.Registry.ID)
	for _, d := range done {
		d()
		d() // a second call changes nothing
	}
	require.Zero(t, r.InFlight())
}

func TestNoWorker(t *testing.T) {
	r := newRouter(&view{alive: map[string]string{}}, 0)
	_, err := r.Pick(router.Filter{Model: "m", Hive: "h"})
	require.True(t, errors.Is(err, router.ErrNoWorker))
	require.Equal(t, router.CodeNoWorker, jobs.CodeOf(err))
	require.Contains(t, err.Error(), "model m, hive h")
}

// TestNoReachableWorker: when the registry holds ready workers for the
// model but none is a candidate here (their node is not alive in this
// node's gossip, or its reports of them stopped: a partition), the error
// still wraps ErrNoWorker (relay logic) but also ErrUnreachable, so the
// APIs answer 503 rather than 404 "model not found", and it says why.
func TestNoReachableWorker(t *testing.T) {
	tests := []struct {
		name        string
		view        *view
		filter      router.Filter
		unreachable bool
	}{
		{"no worker of the model at all",
			&view{alive: map[string]string{"n1": "one"}, workers: []fsm.Worker{worker("w1", "n2", "other", fsm.WorkerReady)}},
			router.Filter{Model: "m"}, false},
		{"its node is not alive here",
			&view{alive: map[string]string{"n1": "one"}, loads: []router.WorkerLoad{load("w1", "n2", "m", 0)},
				workers: []fsm.Worker{worker("w1", "n2", "m", fsm.WorkerReady)}},
			router.Filter{Model: "m"}, true},
		{"its node is alive but its report stopped",
			&view{alive: map[string]string{"n1": "one", "n2": "two"}, workers: []fsm.Worker{worker("w1", "n2", "m", fsm.WorkerReady)}},
			router.Filter{Model: "m"}, true},
		{"retiring workers do not count",
			&view{alive: map[string]string{"n1": "one"}, workers: []fsm.Worker{worker("w1", "n2", "m", fsm.WorkerRetiring)}},
			router.Filter{Model: "m"}, false},
		{"tried workers do not count",
			&view{alive: map[string]string{"n1": "one"}, workers: []fsm.Worker{worker("w1", "n2", "m", fsm.WorkerReady)}},
			router.Filter{Model: "m", Exclude: map[string]bool{"w1": true}}, false},
		{"another hive asked",
			&view{alive: map[string]string{"n1": "one"}, workers: []fsm.Worker{worker("w1", "n2", "m", fsm.WorkerReady)}},
			router.Filter{Model: "m", Hive: "n3"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := newRouter(tt.view, 0).Pick(tt.filter)
			require.ErrorIs(t, err, router.ErrNoWorker)
			require.Equal(t, router.CodeNoWorker, jobs.CodeOf(err))
			require.Equal(t, tt.unreachable, errors.Is(err, router.ErrUnreachable), "%v", err)
			if tt.unreachable {
				require.Contains(t, err.Error(), "no ready worker for model m (out of reach: the registry holds 1 ready, on nodes this node does not reach now")
			}
		})
	}
}

func TestModelMatches(t *testing.T) {
	cases := []struct {
		have, want string
		ok         bool
	}{
		{"builtin--stories260k", "stories260k", true},
		{"builtin--stories260k", "builtin:stories260k", true},
		{"builtin--stories260k", "STORIES260K", true},
		{"hf--org--repo--model-q4_k_m", "hf:org/repo:Q4_K_M", true},
		{"hf--org--repo--model-q4_k_m", "hf:org/repo:Q8_0", false},
		{"hf--org--repo--model-q4_k_m", "hf:org/repo", true},
		{"builtin--stories260k", "stories15m", false},
		// Ollama's default tag, as clients coming from Ollama send it.
		{"builtin--stories260k", "stories260k:latest", true},
		{"builtin--stories260k", "builtin:stories260k:LATEST", true},
		{"builtin--stories260k", "stories260k:q8", false},
		{"builtin--stories260k", ":latest", false},
		// A reference names its repo: another repo's file of the same name
		// is another model.
		{"hf--org--repo--model-q4_k_m", "hf:other/repo/model-Q4_K_M.gguf", false},
		{"hf--org--repo--model-q4_k_m", "hf:org/repo/model-Q4_K_M.gguf", true},
		{"hf--org--repo--model-q4_k_m", "hf:org/rep", false},
		{"hf--org--repo-v2--model-q4_k_m", "hf:org/repo", false},
		{"hf--org--repo--model-q4_k_m", "hf:org/repo:Q4_K", false},
		{"hf--org--repo--model-q4_k_m", "https://example.com/x/model-Q4_K_M.gguf", false},
		{"url--example.com--model-q4_k_m", "https://example.com/x/model-Q4_K_M.gguf", true},
		{"url--example.com--model-q4_k_m", "https://other.example/model-Q4_K_M.gguf", false},
		{"hf--org--repo--model-q4_k_m", "model-q4_k_m", true},
	}
	for _, tc := range cases {
		require.Equal(t, tc.ok, router.ModelMatches(tc.have, tc.want), "%s vs %s", tc.have, tc.want)
	}
}

func TestArriving(t *testing.T) {
	now := time.Now()
	ready := func(id, node string, age time.Duration) fsm.Worker {
		w := worker(id, node, "m", fsm.WorkerReady)
		w.UpdatedAt = now.Add(-age)
		return w
	}
	cases := []struct {
		name    string
		loads   []router.WorkerLoad
		workers []fsm.Worker
		filter  router.Filter
		want    bool
	}{
		{name: "ready in the registry, not reported yet", workers: []fsm.Worker{ready("w1", "n2", time.Second)}, want: true},
		{name: "ready in the registry, last reported loading",
			loads:   []router.WorkerLoad{{ID: "w1", NodeID: "n2", Model: "m", State: "loading", AgeMs: 10}},
			workers: []fsm.Worker{ready("w1", "n2", time.Second)}, want: true},
		{name: "ready long ago, never reported", workers: []fsm.Worker{ready("w1", "n2", time.Minute)}},
		{name: "ready, reported draining",
			loads:   []router.WorkerLoad{{ID: "w1", NodeID: "n2", Model: "m", State: "draining", AgeMs: 10}},
			workers: []fsm.Worker{ready("w1", "n2", time.Second)}},
		{name: "ready, its report stale",
			loads:   []router.WorkerLoad{{ID: "w1", NodeID: "n2", Model: "m", State: "ready", AgeMs: 60_000}},
			workers: []fsm.Worker{ready("w1", "n2", time.Second)}},
		{name: "ready on a node gossip does not see", workers: []fsm.Worker{ready("w1", "n3", time.Second)}},
		{name: "another model", workers: []fsm.Worker{ready("w1", "n2", time.Second)}, filter: router.Filter{Model: "other"}},
		{name: "excluded", workers: []fsm.Worker{ready("w1", "n2", time.Second)}, filter: router.Filter{Exclude: map[string]bool{"w1": true}}},
		{name: "on another hive", workers: []fsm.Worker{ready("w1", "n2", time.Second)}, filter: router.Filter{Hive: "one"}},
		{name: "reported live, not in the replica yet", loads: []router.WorkerLoad{load("w1", "n2", "m", 0)}, want: true},
		{name: "reported live, registered in the replica",
			loads: []router.WorkerLoad{load("w1", "n2", "m", 0)}, workers: []fsm.Worker{worker("w1", "n2", "m", fsm.WorkerRegistered)}, want: true},
		{name: "reported live, retiring in the replica",
			loads: []router.WorkerLoad{load("w1", "n2", "m", 0)}, workers: []fsm.Worker{worker("w1", "n2", "m", fsm.WorkerRetiring)}},
		{name: "reported live, a group's shard",
			loads: []router.WorkerLoad{{ID: "w1", NodeID: "n2", Model: "m", State: "ready", AgeMs: 10, Group: "g-1"}}},
		{name: "reported live, registered as a group's shard",
			loads: []router.WorkerLoad{load("w1", "n2", "m", 0)},
			workers: []fsm.Worker{func() fsm.Worker {
				w := worker("w1", "n2", "m", fsm.WorkerRegistered)
				w.Group = "g-1"
				return w
			}()}},
		{name: "nothing at all"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := c.filter
			if f.Model == "" {
				f.Model = "m"
			}
			v := &view{alive: map[string]string{"n1": "one", "n2": "two"}, loads: c.loads, workers: c.workers}
			r := newRouter(v, 0)
			require.Equal(t, c.want, r.Arriving(f))
			if c.want {
				require.Empty(t, r.Candidates(f), "an arriving worker is not a candidate yet")
			}
		})
	}
}

// TestArrivingWindow: a worker counts as arriving for at most 10 s from
// when the router first found it so, by the router's clock, however long
// the views disagree (here: reported live, never written to the
// registry, as with no leader); another worker gets its own window.
func TestArrivingWindow(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	v := &view{alive: map[string]string{"n1": "one", "n2": "two"}, loads: []router.WorkerLoad{load("w1", "n2", "m", 0)}}
	r := router.New(router.Config{LocalID: "n1", LocalName: "one", LiveFor: 5 * time.Second, View: v, Now: func() time.Time { return now }})
	f := router.Filter{Model: "m"}
	require.True(t, r.Arriving(f))
	now = now.Add(9 * time.Second)
	require.True(t, r.Arriving(f), "within its window")
	now = now.Add(2 * time.Second)
	require.False(t, r.Arriving(f), "its window is over")
	v.loads = append(v.loads, load("w2", "n2", "m", 0))
	require.True(t, r.Arriving(f), "a new worker has a window of its own")
	now = now.Add(11 * time.Second)
	require.False(t, r.Arriving(f))
}

// TestFailedWorkersSitOut: a worker whose request failed is passed over
// while another candidate is left, for 2 s after one failure, twice that
// after two in a row; a request it serves ends the run; a worker that is
// the only candidate is picked whatever its failures.
func TestFailedWorkersSitOut(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	v := &view{
		alive:   map[string]string{"n1": "one"},
		loads:   []router.WorkerLoad{load("a", "n1", "m", 0), load("b", "n1", "m", 5)},
		workers: []fsm.Worker{worker("a", "n1", "m", fsm.WorkerReady), worker("b", "n1", "m", fsm.WorkerReady)},
	}
	r := router.New(router.Config{LocalID: "n1", LocalName: "one", LiveFor: 5 * time.Second, View: v, Now: func() time.Time { return now }})
	f := router.Filter{Model: "m"}
	pick := func() string {
		tg, err := r.Pick(f)
		require.NoError(t, err)
		return tg.Registry.ID
	}
	require.Equal(t, "a", pick(), "the less loaded")

	r.Failed("a")
	require.Equal(t, "b", pick())
	now = now.Add(1900 * time.Millisecond)
	require.Equal(t, "b", pick())
	now = now.Add(200 * time.Millisecond)
	require.Equal(t, "a", pick(), "one failure: out for 2 s")

	r.Failed("a")
	now = now.Add(3 * time.Second)
	require.Equal(t, "b", pick(), "two in a row: out for 4 s")
	now = now.Add(1100 * time.Millisecond)
	require.Equal(t, "a", pick())

	r.Failed("a")
	r.Served("a")
	require.Equal(t, "a", pick(), "served: the run is over")

	r.Failed("a")
	r.Failed("b")
	require.Contains(t, []string{"a", "b"}, pick(), "every candidate failed: one is still picked")
	only := router.Filter{Model: "m", WorkerID: "a"}
	tg, err := r.Pick(only)
	require.NoError(t, err)
	require.Equal(t, "a", tg.Registry.ID, "the only candidate")
}

// affinityView is n workers w0..w(n-1) of model m, on nodes n1 and n2 by
// turns, with the given in-flight loads (0 where loads runs short).
func affinityView(n int, loads ...int) *view {
	v := &view{alive: map[string]string{"n1": "one", "n2": "two"}}
	for i := 0; i < n; i++ {
		id, nd := fmt.Sprintf("w%d", i), []string{"n1", "n2"}[i%2]
		l := 0
		if i < len(loads) {
			l = loads[i]
		}
		v.loads = append(v.loads, load(id, nd, "m", l))
		v.workers = append(v.workers, worker(id, nd, "m", fsm.WorkerReady))
	}
	return v
}

// picks is the worker Pick chooses for each of keys.
func picks(t *testing.T, r *router.Router, keys []string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, k := range keys {
		got, err := r.Pick(router.Filter{Model: "m", Affinity: k})
		require.NoError(t, err)
		out[k] = got.Registry.ID
	}
	return out
}

func affinityKeys(n int) []string {
	var keys []string
	for i := 0; i < n; i++ {
		keys = append(keys, fmt.Sprintf("chat-%d", i))
	}
	return keys
}

// TestAffinitySameKeySameWorker: two routers (two nodes, each its own
// random draws) with the same view send every key to the same worker,
// whatever their draws; the keys spread over all the workers.
func TestAffinitySameKeySameWorker(t *testing.T) {
	keys := affinityKeys(200)
	for _, n := range []int{2, 3, 5} {
		t.Run(fmt.Sprintf("%d workers", n), func(t *testing.T) {
			v := affinityView(n)
			one := newRouter(v, 0, 1)
			two := router.New(router.Config{LocalID: "n2", LocalName: "two", LiveFor: 5 * time.Second, View: v,
				Intn: func(k int) int { return k - 1 }})
			a, b := picks(t, one, keys), picks(t, two, keys)
			require.Equal(t, a, b)
			require.Equal(t, a, picks(t, one, keys), "a router changed its mind")
			share := map[string]int{}
			for _, w := range a {
				share[w]++
			}
			require.Len(t, share, n, "every worker is some key's preferred: %v", share)
			for w, k := range share {
				require.Greater(t, k, len(keys)/n/3, "worker %s preferred by too few keys: %v", w, share)
			}
		})
	}
}

// TestAffinityMovesOnlyTheChangedWorkersKeys: removing a worker moves only
// the keys it was preferred for; adding one moves keys only to it.
func TestAffinityMovesOnlyTheChangedWorkersKeys(t *testing.T) {
	keys := affinityKeys(300)
	v := affinityView(4)
	r := newRouter(v, 0, 1)
	before := picks(t, r, keys)

	gone := "w2"
	v.loads = append(v.loads[:2:2], v.loads[3:]...)
	v.workers = append(v.workers[:2:2], v.workers[3:]...)
	after := picks(t, r, keys)
	moved := 0
	for _, k := range keys {
		if before[k] == gone {
			require.NotEqual(t, gone, after[k])
			moved++
			continue
		}
		require.Equal(t, before[k], after[k], "key %s moved off a worker that stayed", k)
	}
	require.Positive(t, moved)

	v2 := affinityView(5) // w0..w3 again (w2 back) and a new w4
	again := picks(t, newRouter(v2, 0, 1), keys)
	gained := 0
	for _, k := range keys {
		if again[k] != before[k] {
			require.Equal(t, "w4", again[k], "key %s moved to a worker that was there before", k)
			gained++
		}
	}
	require.Positive(t, gained)
}

// TestAffinityLoadBound: the preferred worker takes the request while its
// load is within the slack of the least loaded candidate's; past it the
// pick falls back to the power of two choices by load. A worker that
// failed lately sits out, and so does a worker off when affinity is.
func TestAffinityLoadBound(t *testing.T) {
	// Find a key whose preferred worker among w0, w1, w2 is w0.
	var key string
	for _, k := range affinityKeys(100) {
		if got, _ := newRouter(affinityView(3), 0).Pick(router.Filter{Model: "m", Affinity: k}); got.Registry.ID == "w0" {
			key = k
			break
		}
	}
	require.NotEmpty(t, key)
	cases := []struct {
		name  string
		loads []int
		noAff bool
		fail  string
		want  string // "!w" for any but w
	}{
		{"idle", []int{0, 0, 0}, false, "", "w0"},
		{"busier within the slack", []int{2, 0, 1}, false, "", "w0"},
		{"busy, the others as busy", []int{9, 8, 7}, false, "", "w0"},
		// Draws (1, 1) compare w1 and w2: the less loaded wins.
		{"past the slack", []int{3, 1, 0}, false, "", "w2"},
		{"past the slack by much", []int{20, 0, 5}, false, "", "w1"},
		{"preferred failed", []int{0, 0, 0}, false, "w0", "!w0"},
		{"affinity off", []int{0, 1, 0}, true, "", "w2"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := router.New(router.Config{LocalID: "n1", LocalName: "one", LiveFor: 5 * time.Second,
				View: affinityView(3, tc.loads...), NoAffinity: tc.noAff, Intn: func(n int) int { return 1 % n }})
			if tc.fail != "" {
				r.Failed(tc.fail)
			}
			got, err := r.Pick(router.Filter{Model: "m", Affinity: key})
			require.NoError(t, err)
			if not, ok := strings.CutPrefix(tc.want, "!"); ok {
				require.NotEqual(t, not, got.Registry.ID)
				return
			}
			require.Equal(t, tc.want, got.Registry.ID)
		})
	}
	// This node's own requests in flight count as load too.
	r := newRouter(affinityView(3), 1)
	var done []func()
	for range router.AffinitySlack + 1 {
		got, err := r.Pick(router.Filter{Model: "m", Affinity: key})
		require.NoError(t, err)
		require.Equal(t, "w0", got.Registry.ID)
		done = append(done, r.Track(got.Registry.ID))
	}
	got, err := r.Pick(router.Filter{Model: "m", Affinity: key})
	require.NoError(t, err)
	require.NotEqual(t, "w0", got.Registry.ID, "three requests in flight from here put w0 past the slack")
	for _, d := range done {
		d()
	}
}
