package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"
)

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func enc(t testing.TB, cmd Command) []byte {
	t.Helper()
	b, err := Encode(cmd)
	require.NoError(t, err)
	return b
}

// applyAll feeds cmds to f at consecutive indexes starting after f's index.
func applyAll(t testing.TB, f *FSM, cmds ...Command) []Result {
	t.Helper()
	var out []Result
	for _, c := range cmds {
		res := f.Apply(&raft.Log{Index: f.Index() + 1, Type: raft.LogCommand, Data: enc(t, c)})
		if err, ok := res.(error); ok {
			t.Fatalf("apply %s: %v", c.Type(), err)
		}
		out = append(out, res.(Result))
	}
	return out
}

func snapBytes(t testing.TB, st *State) []byte {
	t.Helper()
	var buf bytes.Buffer
	require.NoError(t, WriteSnapshot(&buf, st))
	return buf.Bytes()
}

func sampleNode(id, name string) Node {
	return Node{
		ID: id, Name: name, HTTPAddr: "127.0.0.1:7833", GossipAddr: "127.0.0.1:7946",
		P2PAddrs: []string{"/ip4/127.0.0.1/tcp/4001"}, Version: "0.1.0", State: NodeAlive,
		UpdatedAt: t0,
	}
}

func sampleCommands() []Command {
	caps := Capabilities{CPUModel: "Ryzen", Cores: 8, Threads: 16, Flags: []string{"avx2"},
		RAMTotal: 32 << 30, RAMFree: 16 << 30, OS: "linux", Arch: "amd64",
		GPUs: []GPU{{Vendor: "nvidia", Name: "RTX 3090", VRAMTotal: 24 << 30, Index: 0}}}
	return []Command{
		UpsertNode{Node: sampleNode("peerA", "alpha")},
		UpsertNode{Node: sampleNode("peerB", "beta")},
		SetNodeCapabilities{ID: "peerA", Capabilities: caps, At: t0.Add(time.Second)},
		UpsertWorker{Worker: Worker{ID: "w1", NodeID: "peerA", Model: "tinyllama", Device: "cuda:0", Port: 9001, PID: 42, State: WorkerRegistered, UpdatedAt: t0}},
		SetWorkerState{ID: "w1", State: WorkerReady, At: t0.Add(2 * time.Second)},
		UpsertWorker{Worker: Worker{ID: "w2", NodeID: "peerB", Model: "tinyllama", Device: "cpu", Port: 9002, PID: 43, State: WorkerRegistered, UpdatedAt: t0}},
		UpsertModelHolding{Holding: ModelHolding{NodeID: "peerA", ModelID: "tinyllama", SHA256: "ab", File: "m.gguf", Size: 100, Quantization: "Q4_K_M", UpdatedAt: t0}},
		UpsertBinaryHolding{Holding: BinaryHolding{NodeID: "peerB", Type: "cpu", Version: "0.1.0", OS: "linux", Arch: "amd64", SHA256: "cd", Size: 10, UpdatedAt: t0}},
		UpsertHost{Host: Host{Name: "gpu-box", Host: "10.0.0.5", Port: 22, User: "rbee", IdentityFile: "~/.ssh/id", InstallPath: "/opt/rbee", State: HostKnown, UpdatedAt: t0}},
		SetNodeState{ID: "peerB", State: NodeFailed, At: t0.Add(3 * time.Second)},
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	for _, c := range sampleCommands() {
		t.Run(c.Type().String(), func(t *testing.T) {
			b := enc(t, c)
			require.Equal(t, byte(c.Type()), b[0])
			got, err := Decode(b)
			require.NoError(t, err)
			require.Equal(t, c.Type(), got.Type())
			b2, err := Encode(got)
			require.NoError(t, err)
			require.Equal(t, b, b2)
		})
	}
}

func TestApplyBuildsRegistry(t *testing.T) {
	f := New(nil)
	res := applyAll(t, f, sampleCommands()...)
	require.Len(t, res, 10)
	for i, r := range res {
		require.Equal(t, uint64(i+1), r.Index)
		require.True(t, r.Changed, "command %d", i)
	}
	require.Equal(t, uint64(10), f.Index())

	a, ok := f.Node("peerA")
	require.True(t, ok)
	require.Equal(t, "alpha", a.Name)
	require.Equal(t, t0, a.JoinedAt, "JoinedAt defaults to the first UpdatedAt")
	require.Equal(t, t0.Add(time.Second), a.UpdatedAt)
	require.NotNil(t, a.Capabilities)
	require.Equal(t, 8, a.Capabilities.Cores)
	require.Equal(t, "RTX 3090", a.Capabilities.GPUs[0].Name)

	b, ok := f.NodeByName("beta")
	require.True(t, ok)
	require.Equal(t, NodeFailed, b.State)
	_, ok = f.NodeByName("gamma")
	require.False(t, ok)

	w, ok := f.Worker("w1")
	require.True(t, ok)
	require.Equal(t, WorkerReady, w.State)
	require.Equal(t, t0, w.RegisteredAt)
	require.Len(t, f.Workers(), 2)
	ready := f.State().WorkersWhere(func(w *Worker) bool { return w.State == WorkerReady })
	require.Len(t, ready, 1)
	require.Equal(t, w, ready[0], "WorkersWhere copies what it keeps")
	require.Equal(t, f.Workers(), f.State().WorkersWhere(func(*Worker) bool { return true }), "sorted as Workers")
	ranged := map[string]NodeState{}
	f.State().RangeNodes(func(n Node) bool { ranged[n.ID] = n.State; return true })
	require.Len(t, ranged, len(f.Nodes()))
	for _, n := range f.Nodes() {
		require.Equal(t, n.State, ranged[n.ID])
	}
	calls := 0
	f.State().RangeNodes(func(Node) bool { calls++; return false })
	require.Equal(t, 1, calls, "RangeNodes stops when fn returns false")
	require.Len(t, f.Models(), 1)
	require.Len(t, f.Binaries(), 1)
	h, ok := f.Host("gpu-box")
	require.True(t, ok)
	require.Equal(t, "10.0.0.5", h.Host)

	// Upsert of the node without capabilities keeps them and the join time.
	n := sampleNode("peerA", "alpha-renamed")
	n.UpdatedAt = t0.Add(time.Hour)
	applyAll(t, f, UpsertNode{Node: n})
	a, _ = f.Node("peerA")
	require.Equal(t, "alpha-renamed", a.Name)
	require.NotNil(t, a.Capabilities)
	require.Equal(t, t0, a.JoinedAt)

	// Idempotent commands report Changed=false.
	r := applyAll(t, f, UpsertNode{Node: n}, SetNodeState{ID: "peerB", State: NodeFailed, At: t0}, DeleteWorker{ID: "nope"})
	for _, x := range r {
		require.False(t, x.Changed)
	}

	// Returned values are copies.
	a.P2PAddrs[0] = "mutated"
	a.Capabilities.Flags[0] = "mutated"
	a2, _ := f.Node("peerA")
	require.Equal(t, "/ip4/127.0.0.1/tcp/4001", a2.P2PAddrs[0])
	require.Equal(t, "avx2", a2.Capabilities.Flags[0])

	// DeleteNode cascades to workers and holdings.
	applyAll(t, f, DeleteNode{ID: "peerA"})
	_, ok = f.Node("peerA")
	require.False(t, ok)
	_, ok = f.Worker("w1")
	require.False(t, ok)
	require.Empty(t, f.Models())
	require.Len(t, f.Workers(), 1)
	require.Len(t, f.Binaries(), 1)

	applyAll(t, f, DeleteBinaryHolding{NodeID: "peerB", WorkerType: "cpu", Version: "0.1.0", OS: "linux", Arch: "amd64"},
		DeleteHost{Name: "gpu-box"}, SetWorkerState{ID: "w2", State: WorkerGone, At: t0})
	require.Empty(t, f.Binaries())
	require.Empty(t, f.Hosts())
}

func TestBadCommandsChangeNothing(t *testing.T) {
	gone := UpsertWorker{Worker: Worker{ID: "wg", NodeID: "peerA", Model: "m", State: WorkerGone, UpdatedAt: t0}}
	tests := []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"type zero", []byte{0, '{', '}'}, ErrUnknownCommand},
		{"unknown type", []byte{99, '{', '}'}, ErrHalted},
		{"malformed body", append([]byte{byte(TypeUpsertNode)}, `{"node":`...), ErrMalformed},
		{"wrong json type", append([]byte{byte(TypeUpsertNode)}, `{"node":{"id":5}}`...), ErrMalformed},
		{"trailing data", append([]byte{byte(TypeDeleteNode)}, `{"id":"x"} {}`...), ErrMalformed},
		{"empty id", append([]byte{byte(TypeDeleteNode)}, `{"id":""}`...), ErrInvalid},
		{"bad node state", append([]byte{byte(TypeUpsertNode)}, `{"node":{"id":"n","state":"zombie"}}`...), ErrInvalid},
		{"bad worker state", append([]byte{byte(TypeSetWorkerState)}, `{"id":"w1","state":"dancing"}`...), ErrInvalid},
		{"bad port", append([]byte{byte(TypeUpsertHost)}, `{"host":{"name":"h","state":"known","port":70000}}`...), ErrInvalid},
		{"bad model parts", append([]byte{byte(TypeUpsertModelHolding)}, `{"holding":{"node_id":"n","model_id":"m","parts":-1}}`...), ErrInvalid},
		{"node not found", enc(t, SetNodeState{ID: "ghost", State: NodeLeft}), ErrNotFound},
		{"caps for missing node", enc(t, SetNodeCapabilities{ID: "ghost"}), ErrNotFound},
		{"worker not found", enc(t, SetWorkerState{ID: "ghost", State: WorkerReady}), ErrNotFound},
		{"gone worker state", enc(t, SetWorkerState{ID: "wg", State: WorkerReady}), ErrConflict},
		{"gone worker upsert", enc(t, UpsertWorker{Worker: Worker{ID: "wg", NodeID: "peerA", State: WorkerReady}}), ErrConflict},
		{"oversized", append([]byte{byte(TypeDeleteNode)}, bytes.Repeat([]byte(" "), MaxCommandSize)...), ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := New(nil)
			applyAll(t, f, append(sampleCommands(), gone)...)
			before := f.State()
			beforeBytes := snapBytes(t, before)
			res := f.Apply(&raft.Log{Index: 99, Type: raft.LogCommand, Data: tc.data})
			err, ok := res.(error)
			require.True(t, ok, "want error, got %#v", res)
			require.ErrorIs(t, err, tc.want)
			require.Same(t, before, f.State(), "state must not be replaced")
			require.Equal(t, beforeBytes, snapBytes(t, f.State()))
			require.Equal(t, uint64(11), f.Index())
		})
	}
}

func TestEncodeRejectsInvalid(t *testing.T) {
	_, err := Encode(nil)
	require.ErrorIs(t, err, ErrInvalid)
	_, err = Encode(UpsertNode{Node: Node{ID: "x", State: "weird"}})
	require.ErrorIs(t, err, ErrInvalid)
	_, err = Encode(&UpsertWorker{Worker: Worker{ID: "w", State: WorkerReady}})
	require.ErrorIs(t, err, ErrInvalid, "missing node id")
}

func TestNonCommandLogsIgnored(t *testing.T) {
	f := New(nil)
	require.Nil(t, f.Apply(&raft.Log{Index: 1, Type: raft.LogNoop}))
	require.Equal(t, uint64(0), f.Index())
}

// randomLog builds a log of commands from a seeded generator, including
// invalid ones, to exercise every path in the same order on two replicas.
func randomLog(t testing.TB, seed uint64, n int) [][]byte {
	r := rand.New(rand.NewPCG(seed, 1))
	ids := []string{"n1", "n2", "n3", "n4"}
	wids := []string{"w1", "w2", "w3", "w4", "w5"}
	states := []WorkerState{WorkerRegistered, WorkerReady, WorkerRetiring, WorkerGone}
	var out [][]byte
	for i := 0; i < n; i++ {
		id := ids[r.IntN(len(ids))]
		at := t0.Add(time.Duration(i) * time.Second)
		var c Command
		switch r.IntN(9) {
		case 0, 1:
			c = UpsertNode{Node: sampleNode(id, "name-"+id)}
		case 2:
			c = SetNodeState{ID: id, State: []NodeState{NodeAlive, NodeFailed, NodeLeft}[r.IntN(3)], At: at}
		case 3:
			c = DeleteNode{ID: id}
		case 4:
			c = UpsertWorker{Worker: Worker{ID: wids[r.IntN(len(wids))], NodeID: id, Model: "m", State: WorkerRegistered, UpdatedAt: at}}
		case 5:
			c = SetWorkerState{ID: wids[r.IntN(len(wids))], State: states[r.IntN(len(states))], At: at}
		case 6:
			c = UpsertModelHolding{Holding: ModelHolding{NodeID: id, ModelID: fmt.Sprintf("m%d", r.IntN(3)), UpdatedAt: at}}
		case 7:
			c = SetNodeCapabilities{ID: id, Capabilities: Capabilities{Cores: r.IntN(64)}, At: at}
		case 8:
			out = append(out, []byte{byte(r.IntN(256)), '{', '}'})
			continue
		}
		out = append(out, enc(t, c))
	}
	return out
}

func TestDeterminism(t *testing.T) {
	for seed := uint64(1); seed <= 5; seed++ {
		log := randomLog(t, seed, 400)
		a, b := New(nil), New(nil)
		for i, d := range log {
			ra := a.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: d})
			rb := b.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: d})
			require.Equal(t, fmt.Sprint(ra), fmt.Sprint(rb), "response %d", i)
		}
		require.Equal(t, snapBytes(t, a.State()), snapBytes(t, b.State()), "seed %d", seed)
		require.NotZero(t, a.Index())
	}
}

func persist(t *testing.T, f *FSM) (*raft.FileSnapshotStore, string) {
	t.Helper()
	store, err := raft.NewFileSnapshotStore(t.TempDir(), 2, io.Discard)
	require.NoError(t, err)
	snap, err := f.Snapshot()
	require.NoError(t, err)
	sink, err := store.Create(raft.SnapshotVersionMax, f.Index(), 1, raft.Configuration{}, 1, nil)
	require.NoError(t, err)
	require.NoError(t, snap.Persist(sink))
	snap.Release()
	return store, sink.ID()
}

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	f := New(nil)
	applyAll(t, f, sampleCommands()...)
	store, id := persist(t, f)

	g := New(nil)
	applyAll(t, g, UpsertNode{Node: sampleNode("stale", "stale")})
	_, rc, err := store.Open(id)
	require.NoError(t, err)
	require.NoError(t, g.Restore(rc))

	require.Equal(t, f.Index(), g.Index())
	require.Equal(t, f.Nodes(), g.Nodes())
	require.Equal(t, f.Workers(), g.Workers())
	require.Equal(t, f.Models(), g.Models())
	require.Equal(t, f.Binaries(), g.Binaries())
	require.Equal(t, f.Hosts(), g.Hosts())
	require.Equal(t, snapBytes(t, f.State()), snapBytes(t, g.State()))
	_, ok := g.Node("stale")
	require.False(t, ok)

	// Applying the same further commands to both keeps them identical.
	more := UpsertWorker{Worker: Worker{ID: "w9", NodeID: "peerB", Model: "x", State: WorkerReady, UpdatedAt: t0}}
	applyAll(t, f, more)
	applyAll(t, g, more)
	require.Equal(t, snapBytes(t, f.State()), snapBytes(t, g.State()))
}

func TestSnapshotIsPointInTime(t *testing.T) {
	f := New(nil)
	applyAll(t, f, sampleCommands()...)
	snap, err := f.Snapshot()
	require.NoError(t, err)
	want := snapBytes(t, f.State())
	applyAll(t, f, DeleteNode{ID: "peerA"}, UpsertHost{Host: Host{Name: "h2", Host: "x", State: HostRunning}})

	var buf bytes.Buffer
	require.NoError(t, WriteSnapshot(&buf, snap.(*snapshot).state))
	require.Equal(t, want, buf.Bytes())
	require.NotEqual(t, want, snapBytes(t, f.State()))
}

func TestCorruptSnapshotRejected(t *testing.T) {
	src := New(nil)
	applyAll(t, src, sampleCommands()...)
	good := snapBytes(t, src.State())
	hdr := len(snapshotMagic) + 1
	dupNodes := bytes.Replace(good, []byte(`"nodes":[`), []byte(`"nodes":[{"id":"peerA","state":"alive"},`), 1)
	badState := bytes.Replace(good, []byte(`"state":"alive"`), []byte(`"state":"undead"`), 1)

	tests := []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"short header", []byte("RBE"), ErrMalformed},
		{"bad magic", append([]byte("XXXX\x01"), good[hdr:]...), ErrMalformed},
		{"version 0", append([]byte("RBEE\x00"), good[hdr:]...), ErrSnapshotVersion},
		{"version 5", append([]byte("RBEE\x05"), good[hdr:]...), ErrSnapshotVersion},
		{"cluster CA in a version 2 snapshot", append([]byte("RBEE\x02"), `{"cluster_ca":`+caJSON(t)+`}`...), ErrMalformed},
		{"bad cluster CA", append([]byte("RBEE\x03"), `{"cluster_ca":{"cert_pem":"x","sealed_key":"AAAA"}}`...), ErrInvalid},
		{"api keys in a version 1 snapshot", append([]byte("RBEE\x01"), `{"api_keys":[{"name":"k","scope":"read","hash":"`+strings.Repeat("a", 64)+`"}]}`...), ErrMalformed},
		{"bad api key scope", append([]byte("RBEE\x02"), `{"api_keys":[{"name":"k","scope":"root","hash":"`+strings.Repeat("a", 64)+`"}]}`...), ErrInvalid},
		{"truncated", good[:len(good)/2], ErrMalformed},
		{"trailing", append(append([]byte{}, good...), "{}"...), ErrMalformed},
		{"garbage body", append([]byte("RBEE\x01"), "not json"...), ErrMalformed},
		{"duplicate node", dupNodes, ErrMalformed},
		{"invalid entry", badState, ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := New(nil)
			applyAll(t, f, UpsertNode{Node: sampleNode("keep", "keep")})
			before := f.State()
			err := f.Restore(io.NopCloser(bytes.NewReader(tc.data)))
			require.ErrorIs(t, err, tc.want)
			require.Same(t, before, f.State())
			_, ok := f.Node("keep")
			require.True(t, ok)
		})
	}
}

// TestAPIKeys: keys are created once (a second create of the name
// conflicts), revoked idempotently, survive a snapshot and a version 1
// snapshot still restores.
func TestAPIKeys(t *testing.T) {
	f := New(nil)
	k := APIKey{Name: "webui", Scope: ScopeInference, Hash: strings.Repeat("ab", 32), Created: time.Unix(100, 0)}
	applyAll(t, f, CreateAPIKey{Key: k})
	// The same create again (a retried write) changes nothing; another key
	// under the name conflicts.
	applyAll(t, f, CreateAPIKey{Key: k})
	other := k
	other.Hash = strings.Repeat("cd", 32)
	data, err := Encode(CreateAPIKey{Key: other})
	require.NoError(t, err)
	_, err = f.ApplyCommand(f.Index()+1, data)
	require.ErrorIs(t, err, ErrConflict)
	for _, bad := range []APIKey{
		{Name: "x y", Scope: ScopeRead, Hash: k.Hash},
		{Name: "x", Scope: "root", Hash: k.Hash},
		{Name: "x", Scope: ScopeRead, Hash: "ABCD"},
	} {
		_, err := Encode(CreateAPIKey{Key: bad})
		require.ErrorIs(t, err, ErrInvalid, "%+v", bad)
	}
	var buf bytes.Buffer
	require.NoError(t, WriteSnapshot(&buf, f.State()))
	st, err := ReadSnapshot(&buf)
	require.NoError(t, err)
	require.Equal(t, f.APIKeys(), st.APIKeys())
	require.Equal(t, "webui", st.APIKeys()[0].Name)
	applyAll(t, f, DeleteAPIKey{Name: "webui"}, DeleteAPIKey{Name: "webui"})
	require.Empty(t, f.APIKeys())

	v1 := append([]byte("RBEE\x01"), `{"index":7,"hosts":[]}`...)
	st, err = ReadSnapshot(bytes.NewReader(v1))
	require.NoError(t, err)
	require.Equal(t, uint64(7), st.Index())
}

func TestSubscribe(t *testing.T) {
	f := New(nil)
	ch, cancel := f.Subscribe()
	applyAll(t, f, UpsertNode{Node: sampleNode("a", "a")})
	ev := <-ch
	require.Equal(t, Event{Index: 1, Type: TypeUpsertNode, Key: "a"}, ev)

	// A no-op command sends nothing; a failed one neither.
	applyAll(t, f, UpsertNode{Node: sampleNode("a", "a")})
	f.Apply(&raft.Log{Index: 3, Type: raft.LogCommand, Data: []byte{byte(TypeDeleteNode)}})
	applyAll(t, f, SetNodeState{ID: "a", State: NodeLeft, At: t0})
	ev = <-ch
	require.Equal(t, TypeSetNodeState, ev.Type)
	require.Equal(t, uint64(3), ev.Index)

	// A slow subscriber never blocks Apply.
	for i := 0; i < subscriberBuffer*2; i++ {
		applyAll(t, f, UpsertHost{Host: Host{Name: fmt.Sprintf("h%d", i), Host: "x", State: HostKnown}})
	}
	require.Len(t, ch, subscriberBuffer)

	cancel()
	cancel()
	for range ch {
	}
	applyAll(t, f, DeleteNode{ID: "a"}) // no panic on a closed subscription
}

func TestConcurrentReadsDuringApply(t *testing.T) {
	f := New(nil)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				st := f.State()
				nodes := st.Nodes()
				for _, n := range nodes {
					if _, ok := st.Node(n.ID); !ok {
						t.Errorf("node %s listed but not found in the same state", n.ID)
						return
					}
				}
				_ = f.Workers()
			}
		}()
	}
	for _, d := range randomLog(t, 9, 300) {
		f.Apply(&raft.Log{Index: f.Index() + 1, Type: raft.LogCommand, Data: d})
	}
	close(stop)
	wg.Wait()
}

func TestErrorCodeRoundTrip(t *testing.T) {
	for _, s := range []error{ErrUnknownCommand, ErrMalformed, ErrInvalid, ErrNotFound, ErrConflict, ErrSnapshotVersion, ErrExpired} {
		err := fmt.Errorf("%w: detail", s)
		back := ErrorFromCode(ErrorCode(err), err.Error())
		require.ErrorIs(t, back, s)
		require.Equal(t, err.Error(), back.Error())
	}
	require.Equal(t, "", ErrorCode(errors.New("other")))
	require.EqualError(t, ErrorFromCode("", "plain"), "plain")
}

// TestNodesChanged: the index of the last write to the nodes table moves
// with every command that changes a node, with no other, and is the
// snapshot's index after a restore.
func TestNodesChanged(t *testing.T) {
	f := New(nil)
	var last uint64
	for _, c := range sampleCommands() {
		before := f.Nodes()
		res := applyAll(t, f, c)[0]
		if changed := !reflect.DeepEqual(before, f.Nodes()); changed {
			require.Equal(t, res.Index, f.State().NodesChanged(), "%s changed a node", c.Type())
			last = res.Index
		} else {
			require.Equal(t, last, f.State().NodesChanged(), "%s changed no node", c.Type())
		}
	}
	// A write that changes nothing of a node leaves it too.
	applyAll(t, f, SetNodeState{ID: "peerB", State: NodeFailed, At: t0.Add(3 * time.Second)})
	require.Equal(t, last, f.State().NodesChanged())

	store, id := persist(t, f)
	g := New(nil)
	_, rc, err := store.Open(id)
	require.NoError(t, err)
	require.NoError(t, g.Restore(rc))
	require.Equal(t, f.Index(), g.State().NodesChanged())
}
