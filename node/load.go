package node

import (
	"bytes"
	"compress/flate"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"maps"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/rbee-project/rbee/gossip"
	"github.com/rbee-project/rbee/node/router"
)

// loadReport is one node's report of its workers. Seq orders reports of one
// node (its wall clock in nanoseconds: monotonic enough across restarts).
type loadReport struct {
	NodeID  string              `json:"node"`
	Seq     int64               `json:"seq"`
	Workers []router.WorkerLoad `json:"workers"`
	// KeysUsed is when this node last accepted each API key (unix
	// seconds): "last used" changes on every request, so it travels by
	// gossip like load, never by Raft.
	KeysUsed map[string]int64 `json:"keys_used,omitempty"`
	// Relay asks every node that receives the report for the first time
	// to broadcast it on: it changes what can be routed (see
	// loadPublisher). Nodes of earlier versions ignore it.
	Relay bool `json:"relay,omitempty"`
}

// maxKeysUsed bounds the API keys one report may name: far more keys than
// a LAN cluster hands out.
const maxKeysUsed = 10000

// maxLoadField bounds each string of a reported worker and each API key
// name: the registry's own bound on ids (fsm's maxIDLen). A report that
// passes it would make the leader propose a worker the registry refuses,
// or store a model name of up to a megabyte on every replica.
const maxLoadField = 1024

// maxLoadState bounds what a peer may push to us in one anti-entropy
// exchange; a report is ~200 bytes per worker.
const maxLoadState = 1 << 20

// loadTable holds the latest report of every node (this one included). It
// is the gossip StateDelegate of the node: reports arrive as broadcasts and
// push/pull state. Safe for concurrent use.
type loadTable struct {
	dec     loadDecoder
	mu      sync.Mutex
	reports map[string]*loadReport
	// version moves whenever a node's report appears, goes, or changes
	// what can be routed (routingChanged), not with load counters alone:
	// the leader's worker reconcile skips a pass when it has not moved.
	version uint64
	changed func() // called (outside the lock) when a report changed
	// relay broadcasts a report received with Relay set, the first time
	// (set before gossip starts; nil: none).
	relay func(key string, msg []byte)
	// member reports whether a node is a live member (alive or suspect);
	// a report of any other node is not taken, so a dead node's report,
	// forgotten when it departed, does not come back with a peer's
	// push/pull state (set before gossip starts; nil: every node is).
	member func(id string) bool
	// seen: hashes of broadcasts received lately. A relayed report comes
	// in about RetransmitMult×log10(n+1) identical copies (12 at 100
	// nodes); the copies after the first are dropped before decoding.
	seenMu sync.Mutex
	seen   map[uint64]struct{}
}

// maxSeen bounds the hashes kept: more than the reports a cluster sends
// while the copies of one are still arriving (a few gossip rounds).
const maxSeen = 8192

// firstTime reports whether msg was not received lately, and records it.
func (t *loadTable) firstTime(msg []byte) bool {
	h := fnv.New64a()
	_, _ = h.Write(msg)
	k := h.Sum64()
	t.seenMu.Lock()
	defer t.seenMu.Unlock()
	if _, ok := t.seen[k]; ok {
		return false
	}
	if len(t.seen) >= maxSeen || t.seen == nil {
		t.seen = make(map[uint64]struct{}, 64)
	}
	t.seen[k] = struct{}{}
	return true
}

func newLoadTable() *loadTable {
	return &loadTable{reports: map[string]*loadReport{}}
}

// put stores r if it is newer than what we have; it reports whether it did.
func (t *loadTable) put(r loadReport) bool {
	if !r.valid() {
		return false
	}
	if t.member != nil && !t.member(r.NodeID) {
		return false
	}
	t.mu.Lock()
	old, ok := t.reports[r.NodeID]
	if ok && old.Seq >= r.Seq {
		t.mu.Unlock()
		return false
	}
	if !ok || routingChanged(old.Workers, r.Workers) {
		t.version++
	}
	t.reports[r.NodeID] = &r
	t.mu.Unlock()
	if t.changed != nil {
		t.changed()
	}
	return true
}

// valid reports whether every field of r is one its node could have
// sent: a report from a member gone bad (a megabyte of model names, a
// negative port or slot count, an empty worker id) is dropped whole, so
// it reaches neither the router nor the leader's registry writes.
func (r *loadReport) valid() bool {
	if r.NodeID == "" || len(r.NodeID) > maxLoadField || len(r.Workers) > 10000 || len(r.KeysUsed) > maxKeysUsed {
		return false
	}
	for _, w := range r.Workers {
		switch {
		case w.ID == "", len(w.ID) > maxLoadField, len(w.NodeID) > maxLoadField, len(w.Model) > maxLoadField,
			len(w.Device) > maxLoadField, len(w.State) > maxLoadField, len(w.Group) > maxLoadField,
			w.Port < 0, w.Port > 65535, w.PID < 0, w.InFlight < 0, w.Queued < 0, w.Slots < 0,
			w.ContextLength < 0, w.AgeMs < 0, !(w.TPS >= 0), math.IsInf(w.TPS, 0):
			return false
		}
	}
	for k, v := range r.KeysUsed {
		if k == "" || len(k) > maxLoadField || v < 0 {
			return false
		}
	}
	return true
}

// report returns a node's latest report.
func (t *loadTable) report(nodeID string) (loadReport, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r, ok := t.reports[nodeID]
	if !ok {
		return loadReport{}, false
	}
	return *r, true
}

// workers returns every reported worker with its heartbeat age as its
// node reported it. A report does not age here: its node sends one when
// something changed (and every loadRefreshEvery), and expires its own
// silent workers; whether the node itself is still there is gossip's
// failure detection, which the router checks.
func (t *loadTable) workers() []router.WorkerLoad {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []router.WorkerLoad
	for _, r := range t.reports {
		for _, w := range r.Workers {
			w.NodeID = r.NodeID
			out = append(out, w)
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].ID < out[b].ID })
	return out
}

// forget drops a node's report (it left or was reaped).
func (t *loadTable) forget(nodeID string) {
	t.mu.Lock()
	if _, ok := t.reports[nodeID]; ok {
		delete(t.reports, nodeID)
		t.version++
	}
	t.mu.Unlock()
}

// changes returns the table's version (see loadTable.version).
func (t *loadTable) changes() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.version
}

// LocalState implements gossip.StateDelegate: every report we know.
func (t *loadTable) LocalState() []byte {
	t.mu.Lock()
	rs := make([]loadReport, 0, len(t.reports))
	for _, r := range t.reports {
		rs = append(rs, *r)
	}
	t.mu.Unlock()
	b, _ := json.Marshal(rs)
	return b
}

// MergeRemoteState implements gossip.StateDelegate.
func (t *loadTable) MergeRemoteState(buf []byte) {
	if len(buf) > maxLoadState {
		return
	}
	var rs []loadReport
	if json.Unmarshal(buf, &rs) != nil {
		return
	}
	for _, r := range rs {
		t.put(r)
	}
}

// NotifyMsg implements gossip.StateDelegate: one report per broadcast. A
// report new to this node that asks for it is broadcast on, as it came.
func (t *loadTable) NotifyMsg(msg []byte) {
	if !t.firstTime(msg) {
		return
	}
	r, err := t.dec.decode(msg)
	if err != nil {
		return
	}
	if t.put(r) && r.Relay && t.relay != nil {
		t.relay(loadKey(r.NodeID), msg)
	}
}

// loadKey names a node's report in the broadcast queue: a newer one
// replaces one still queued.
func loadKey(nodeID string) string { return "load/" + nodeID }

// loadRefreshEvery: a node broadcasts its report at least this often even
// when nothing changed (not relayed). Receivers do not need it to keep the
// report (it does not age); it repairs a broadcast that was lost, sooner
// than push/pull (every 30 s, 90 s at 100 nodes), and keeps nodes of
// earlier versions, which age reports for 30 s, routing to this node's
// workers.
const loadRefreshEvery = 10 * time.Second

// loadPublisher decides which of this node's reports are broadcast, so
// that an idle cluster sends none and load traffic grows with what
// changes, not with the node count:
//
//   - a report that changes what can be routed (a worker came, went, or
//     changed state, model, port, slots, context or group) is broadcast
//     with Relay set: every node passes it on once, so it reaches the
//     whole cluster in O(log n) gossip rounds instead of the
//     RetransmitMult×log10(n+1) members its origin alone reaches (12 of 99
//     at 100 nodes);
//   - one that changes only counters (in flight, queued, tokens/s) or the
//     API keys' last use goes from its origin only: they steer the choice
//     between workers and a node that misses one gets the next;
//   - an unchanged report goes every loadRefreshEvery, from its origin.
//
// The supervisor offers a report on every worker state change and every
// few seconds; gossip's queue keeps one report per node (named
// broadcasts), so a burst of changes costs one queued message. Safe for
// concurrent use.
type loadPublisher struct {
	mu   sync.Mutex
	last *loadReport // the last report broadcast
	sent time.Time
}

// decide reports whether r is to be broadcast and whether with Relay, and
// records it as sent when it is.
func (p *loadPublisher) decide(r loadReport, now time.Time) (send, relay bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.last == nil || routingChanged(p.last.Workers, r.Workers):
		send, relay = true, true
	case countersChanged(p.last.Workers, r.Workers) || !maps.Equal(p.last.KeysUsed, r.KeysUsed):
		send = true
	default:
		send = now.Sub(p.sent) >= loadRefreshEvery
	}
	if send {
		p.last, p.sent = &r, now
	}
	return send, relay
}

// routingChanged: the two lists differ in a worker or in a field the
// router filters on. Both are sorted by id.
func routingChanged(a, b []router.WorkerLoad) bool {
	if len(a) != len(b) {
		return true
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.ID != y.ID || x.Model != y.Model || x.Device != y.Device || x.Port != y.Port || x.PID != y.PID ||
			x.State != y.State || x.Slots != y.Slots || x.ContextLength != y.ContextLength || x.Group != y.Group {
			return true
		}
	}
	return false
}

// countersChanged: same workers, other load counters.
func countersChanged(a, b []router.WorkerLoad) bool {
	for i := range a {
		if a[i].InFlight != b[i].InFlight || a[i].Queued != b[i].Queued || a[i].TPS != b[i].TPS {
			return true
		}
	}
	return false
}

// loadMsgDeflate is the first byte of a load report broadcast that is
// deflate-compressed JSON; a plain one is JSON ('{'). A report is sent
// plain whenever it fits, so that nodes of earlier versions read it.
const loadMsgDeflate = 'z'

// maxLoadMsg bounds a decompressed report: a few hundred workers, far
// more than one node runs, and no decompression bomb.
const maxLoadMsg = 256 << 10

// errLoadTooLarge: the report does not fit a broadcast even compressed;
// peers get it by push/pull.
var errLoadTooLarge = errors.New("load report too large to broadcast")

// encodeLoadMsg encodes a report for a broadcast (gossip.MaxBroadcastSize):
// plain JSON when it fits, else deflated (a node's report passes the
// limit at about 4 workers, and compresses 3-5×), else deflated without
// the API keys' last use (which push/pull carries).
func encodeLoadMsg(r loadReport) ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	if len(b) <= gossip.MaxBroadcastSize {
		return b, nil
	}
	var z bytes.Buffer
	z.WriteByte(loadMsgDeflate)
	w, _ := flate.NewWriter(&z, flate.BestCompression)
	_, _ = w.Write(b)
	if err := w.Close(); err != nil {
		return nil, err
	}
	if z.Len() <= gossip.MaxBroadcastSize {
		return z.Bytes(), nil
	}
	if len(r.KeysUsed) > 0 {
		r.KeysUsed = nil
		return encodeLoadMsg(r)
	}
	return nil, fmt.Errorf("%w: %d workers, %d bytes deflated, limit %d", errLoadTooLarge, len(r.Workers), z.Len(), gossip.MaxBroadcastSize)
}

// loadDecoder decodes load report broadcasts, plain or deflated, and
// reuses its inflaters: every node decodes every node's report (at 100
// nodes about ten a second, each deflated past four workers), and each
// new inflater is about 40 KB, 0.4 MB a second of garbage on every node
// of an idle cluster. The zero value is ready; safe for concurrent use.
type loadDecoder struct{ inflaters sync.Pool }

func (d *loadDecoder) decode(msg []byte) (loadReport, error) {
	var r loadReport
	if len(msg) > 0 && msg[0] == loadMsgDeflate {
		src := bytes.NewReader(msg[1:])
		zr, _ := d.inflaters.Get().(io.ReadCloser)
		if zr == nil {
			zr = flate.NewReader(src)
		} else if err := zr.(flate.Resetter).Reset(src, nil); err != nil {
			return r, err
		}
		b, err := io.ReadAll(io.LimitReader(zr, maxLoadMsg+1))
		d.inflaters.Put(zr)
		if err != nil {
			return r, err
		}
		if len(b) > maxLoadMsg {
			return r, fmt.Errorf("load report over %d bytes", maxLoadMsg)
		}
		msg = b
	}
	return r, json.Unmarshal(msg, &r)
}

// keysUsed merges every node's report of when it last accepted each key:
// the latest time wins.
func (t *loadTable) keysUsed() map[string]int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := map[string]int64{}
	for _, r := range t.reports {
		for k, v := range r.KeysUsed {
			if v > out[k] {
				out[k] = v
			}
		}
	}
	return out
}
