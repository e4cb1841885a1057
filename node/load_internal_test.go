package node

import (
	"bytes"
	"compress/flate"
	"encoding/json"
	"fmt"
	"math"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/gossip"
	"github.com/rbee-project/rbee/internal/raceflag"
	"github.com/rbee-project/rbee/node/router"
)

func report(workers, keys int) loadReport {
	r := loadReport{NodeID: "12D3KooWPtyCLeKq7s3TWnxZdM3jDv3Cd2zmfShYrtX1N75PG8BU", Seq: 1733339000123456789, KeysUsed: map[string]int64{}}
	for i := range workers {
		r.Workers = append(r.Workers, router.WorkerLoad{ID: fmt.Sprintf("w-%016x", 0x9e3779b97f4a7c15*uint64(i+1)), NodeID: r.NodeID,
			Model: "hf--bartowski--qwen2.5-7b-instruct-gguf--qwen2.5-7b-instruct-q4_k_m", Device: "cpu", Port: 40000 + i, PID: 12000 + i,
			State: "ready", InFlight: i % 3, Queued: i % 2, Slots: 4, TPS: 12.5 + float64(i), ContextLength: 8192, AgeMs: int64(100 * i)})
	}
	for i := range keys {
		r.KeysUsed[fmt.Sprintf("client-%02d", i)] = 1733339000 + int64(i)
	}
	return r
}

// TestLoadBroadcastFits: a node with several workers still broadcasts its
// load report (over gossip's limit as JSON, it goes deflated); a small
// report stays plain JSON, which nodes of earlier versions read; both
// decode to the report.
func TestLoadBroadcastFits(t *testing.T) {
	for _, tc := range []struct{ workers, keys int }{{1, 2}, {5, 3}, {10, 10}, {12, 200}} {
		r := report(tc.workers, tc.keys)
		msg, err := encodeLoadMsg(r)
		require.NoError(t, err, "%+v", tc)
		require.LessOrEqual(t, len(msg), gossip.MaxBroadcastSize, "%+v", tc)
		got, err := (&loadDecoder{}).decode(msg)
		require.NoError(t, err)
		require.Equal(t, r.Workers, got.Workers)
		if len(got.KeysUsed) > 0 {
			require.Equal(t, r.KeysUsed, got.KeysUsed)
		}
		plain, _ := json.Marshal(r)
		require.Equal(t, len(plain) <= gossip.MaxBroadcastSize, msg[0] == '{', "plain JSON whenever it fits (%d bytes)", len(plain))
	}
	raw, _ := json.Marshal(report(5, 3))
	require.Greater(t, len(raw), gossip.MaxBroadcastSize, "5 workers did not fit before")

	// A report too large even deflated is refused (push/pull carries it).
	_, err := encodeLoadMsg(report(300, 0))
	require.ErrorIs(t, err, errLoadTooLarge)

	// A decompression bomb is refused.
	var z bytes.Buffer
	z.WriteByte(loadMsgDeflate)
	w, _ := flate.NewWriter(&z, flate.BestCompression)
	_, _ = w.Write(bytes.Repeat([]byte(" "), 8<<20))
	require.NoError(t, w.Close())
	_, err = (&loadDecoder{}).decode(z.Bytes())
	require.Error(t, err)

	// A load table takes both forms.
	lt := newLoadTable()
	msg, _ := encodeLoadMsg(report(6, 0))
	lt.NotifyMsg(msg)
	require.Len(t, lt.workers(), 6)
}

// TestLoadPublisher: a report that changes routing goes out relayed, one
// that changes only counters or keys goes from its origin only, an
// unchanged one only every loadRefreshEvery; a table relays a relayed
// report the first time only, and reports do not age in the table.
func TestLoadPublisher(t *testing.T) {
	var p loadPublisher
	now := time.Unix(1733339000, 0)
	r := report(3, 1)
	step := func(r loadReport, after time.Duration) (bool, bool) {
		now = now.Add(after)
		return p.decide(r, now)
	}
	type want struct{ send, relay bool }
	check := func(name string, r loadReport, after time.Duration, w want) {
		t.Helper()
		send, relay := step(r, after)
		require.Equal(t, w, want{send, relay}, name)
	}
	check("first report", r, 0, want{true, true})
	check("unchanged", r, time.Second, want{false, false})
	aged := report(3, 1)
	aged.Workers[0].AgeMs += 700
	check("only heartbeat ages differ", aged, time.Second, want{false, false})
	busy := report(3, 1)
	busy.Workers[1].InFlight++
	check("counters", busy, time.Second, want{true, false})
	keys := report(3, 2)
	keys.Workers = busy.Workers
	check("keys used", keys, time.Second, want{true, false})
	check("unchanged again", keys, time.Second, want{false, false})
	check("refresh", keys, loadRefreshEvery, want{true, false})
	for _, change := range []func(w *router.WorkerLoad){
		func(w *router.WorkerLoad) { w.State = "draining" },
		func(w *router.WorkerLoad) { w.Port++ },
		func(w *router.WorkerLoad) { w.Model = "other" },
		func(w *router.WorkerLoad) { w.Group = "g1" },
	} {
		c := report(3, 2)
		c.Workers = append([]router.WorkerLoad(nil), busy.Workers...)
		change(&c.Workers[2])
		check("routing field", c, time.Millisecond, want{true, true})
		check("routing field back", keys, time.Millisecond, want{true, true})
	}
	fewer := report(2, 2)
	check("worker gone", fewer, time.Millisecond, want{true, true})

	// Relay: once per new report, as it came.
	lt := newLoadTable()
	var relayed [][]byte
	lt.relay = func(key string, msg []byte) {
		require.Equal(t, loadKey(fewer.NodeID), key)
		relayed = append(relayed, msg)
	}
	fewer.Relay = true
	msg, err := encodeLoadMsg(fewer)
	require.NoError(t, err)
	lt.NotifyMsg(msg)
	lt.NotifyMsg(msg)
	require.Equal(t, [][]byte{msg}, relayed, "relayed once, unchanged")
	counters := report(2, 2)
	counters.Seq = fewer.Seq + 1
	msg, err = encodeLoadMsg(counters)
	require.NoError(t, err)
	lt.NotifyMsg(msg)
	require.Len(t, relayed, 1, "a report without Relay is not passed on")
	require.Len(t, lt.workers(), 2)
	for _, w := range lt.workers() {
		require.Less(t, w.AgeMs, int64(1000), "reports do not age in the table")
	}
}

// A report of a node that is not a live member is not taken, from a
// broadcast or a peer's push/pull state: a departed node's report, once
// forgotten, does not come back.
func TestLoadTableTakesMembersOnly(t *testing.T) {
	lt := newLoadTable()
	alive := map[string]bool{"a": true}
	lt.member = func(id string) bool { return alive[id] }
	require.True(t, lt.put(loadReport{NodeID: "a", Seq: 1}))
	require.False(t, lt.put(loadReport{NodeID: "gone", Seq: 1}))
	state, err := json.Marshal([]loadReport{{NodeID: "a", Seq: 2}, {NodeID: "gone", Seq: 2}})
	require.NoError(t, err)
	lt.MergeRemoteState(state)
	_, ok := lt.report("gone")
	require.False(t, ok)
	r, ok := lt.report("a")
	require.True(t, ok)
	require.Equal(t, int64(2), r.Seq)
	// a departs: forgotten, and a peer's older state does not bring it back.
	delete(alive, "a")
	lt.forget("a")
	lt.MergeRemoteState(state)
	_, ok = lt.report("a")
	require.False(t, ok)
}

// TestLoadTableVersion: the version moves when a report appears or goes,
// or changes what can be routed; not for counters, a stale report or an
// unchanged one.
func TestLoadTableVersion(t *testing.T) {
	lt := newLoadTable()
	seq := int64(0)
	put := func(node string, ws ...router.WorkerLoad) {
		seq++
		lt.put(loadReport{NodeID: node, Seq: seq, Workers: ws})
	}
	w := router.WorkerLoad{ID: "w1", Model: "m", Port: 1, State: "loading"}
	busy := w
	busy.InFlight, busy.TPS = 3, 12
	ready := w
	ready.State = "ready"
	last := lt.changes()
	steps := []struct {
		name  string
		op    func()
		moves bool
	}{
		{"first report", func() { put("a") }, true},
		{"unchanged", func() { put("a") }, false},
		{"a worker comes", func() { put("a", w) }, true},
		{"counters only", func() { put("a", busy) }, false},
		{"state change", func() { put("a", ready) }, true},
		{"stale report", func() { lt.put(loadReport{NodeID: "a", Seq: 1}) }, false},
		{"another node", func() { put("b") }, true},
		{"forget b", func() { lt.forget("b") }, true},
		{"forget b again", func() { lt.forget("b") }, false},
		{"a's worker goes", func() { put("a") }, true},
	}
	for _, s := range steps {
		s.op()
		v := lt.changes()
		if s.moves {
			require.Greater(t, v, last, s.name)
		} else {
			require.Equal(t, last, v, s.name)
		}
		last = v
	}
}

// TestLoadTableRefusesInvalidReports: a report naming a worker its node
// could not run (a megabyte model name, an empty id, a negative port or
// count, an infinite rate) is dropped whole, by broadcast and by
// push/pull alike, so neither the router nor the leader's registry writes
// see it; the same report with the field mended is taken.
func TestLoadTableRefusesInvalidReports(t *testing.T) {
	huge := strings.Repeat("m", 1<<20)
	tests := []struct {
		name   string
		mutate func(r *loadReport)
	}{
		{"megabyte model name", func(r *loadReport) { r.Workers[0].Model = huge }},
		{"long worker id", func(r *loadReport) { r.Workers[0].ID = huge[:maxLoadField+1] }},
		{"empty worker id", func(r *loadReport) { r.Workers[1].ID = "" }},
		{"long device", func(r *loadReport) { r.Workers[0].Device = huge[:maxLoadField+1] }},
		{"long group", func(r *loadReport) { r.Workers[0].Group = huge[:maxLoadField+1] }},
		{"negative port", func(r *loadReport) { r.Workers[0].Port = -1 }},
		{"port past 65535", func(r *loadReport) { r.Workers[0].Port = 70000 }},
		{"negative pid", func(r *loadReport) { r.Workers[0].PID = -5 }},
		{"negative in flight", func(r *loadReport) { r.Workers[0].InFlight = -1000 }},
		{"negative queued", func(r *loadReport) { r.Workers[0].Queued = -1 }},
		{"negative slots", func(r *loadReport) { r.Workers[0].Slots = -4 }},
		{"negative context", func(r *loadReport) { r.Workers[0].ContextLength = -1 }},
		{"negative age", func(r *loadReport) { r.Workers[0].AgeMs = -1 }},
		{"negative rate", func(r *loadReport) { r.Workers[0].TPS = -1 }},
		{"infinite rate", func(r *loadReport) { r.Workers[0].TPS = math.Inf(1) }},
		{"NaN rate", func(r *loadReport) { r.Workers[0].TPS = math.NaN() }},
		{"long key name", func(r *loadReport) { r.KeysUsed[huge[:maxLoadField+1]] = 1 }},
		{"negative key time", func(r *loadReport) { r.KeysUsed["client-00"] = -1 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bad := report(3, 2)
			tc.mutate(&bad)
			lt := newLoadTable()
			require.False(t, lt.put(bad), "put")
			if state, err := json.Marshal([]loadReport{bad}); err == nil { // NaN and Inf do not encode
				lt.MergeRemoteState(state)
				msg, err := json.Marshal(bad)
				require.NoError(t, err)
				lt.NotifyMsg(msg)
			}
			_, ok := lt.report(bad.NodeID)
			require.False(t, ok, "the invalid report was taken")
			require.Empty(t, lt.workers())
		})
	}
	lt := newLoadTable()
	require.True(t, lt.put(report(3, 2)), "a valid report is taken")
	require.Len(t, lt.workers(), 3)
}

// A node decodes every node's report; the inflater of a deflated one is
// reused, not made for each (a new one is about 40 KB).
func TestLoadDecoderReusesInflaters(t *testing.T) {
	msg, err := encodeLoadMsg(report(6, 0))
	require.NoError(t, err)
	require.Equal(t, byte(loadMsgDeflate), msg[0])
	defer debug.SetGCPercent(debug.SetGCPercent(-1)) // no GC empties the pool meanwhile
	// Bytes allocated per decode, the least of a few rounds: goroutines
	// left by earlier tests may allocate meanwhile, which only adds.
	perDecode := func(decode func() error) uint64 {
		const n = 50
		least := uint64(math.MaxUint64)
		for range 5 {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for range n {
				require.NoError(t, decode())
			}
			runtime.ReadMemStats(&after)
			least = min(least, (after.TotalAlloc-before.TotalAlloc)/n)
		}
		return least
	}
	var d loadDecoder
	pooled := perDecode(func() error { _, err := d.decode(msg); return err })
	fresh := perDecode(func() error { _, err := (&loadDecoder{}).decode(msg); return err })
	t.Logf("bytes allocated per decode: %d reused, %d with a new inflater", pooled, fresh)
	require.Greater(t, fresh, uint64(32<<10))
	bound := fresh / 3
	if raceflag.Enabled {
		bound = fresh / 2 // sync.Pool drops a quarter of what is put in it
	}
	require.Less(t, pooled, bound)
}
