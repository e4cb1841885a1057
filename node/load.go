package node

import (
	"bytes"
	"compress/flate"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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

	received time.Time
}

// maxKeysUsed bounds the API keys one report may name: far more keys than
// a LAN cluster hands out.
const maxKeysUsed = 10000

// maxLoadState bounds what a peer may push to us in one anti-entropy
// exchange; a report is ~200 bytes per worker.
const maxLoadState = 1 << 20

// loadTable holds the latest report of every node (this one included). It
// is the gossip StateDelegate of the node: reports arrive as broadcasts and
// push/pull state. Safe for concurrent use.
type loadTable struct {
	mu      sync.Mutex
	reports map[string]*loadReport
	changed func() // called (outside the lock) when a report changed
}

func newLoadTable() *loadTable {
	return &loadTable{reports: map[string]*loadReport{}}
}

// put stores r if it is newer than what we have; it reports whether it did.
func (t *loadTable) put(r loadReport) bool {
	if r.NodeID == "" || len(r.Workers) > 10000 || len(r.KeysUsed) > maxKeysUsed {
		return false
	}
	t.mu.Lock()
	old, ok := t.reports[r.NodeID]
	if ok && old.Seq >= r.Seq {
		t.mu.Unlock()
		return false
	}
	r.received = time.Now()
	t.reports[r.NodeID] = &r
	t.mu.Unlock()
	if t.changed != nil {
		t.changed()
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

// workers returns every reported worker with its heartbeat age as of now.
func (t *loadTable) workers() []router.WorkerLoad {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []router.WorkerLoad
	now := time.Now()
	for _, r := range t.reports {
		extra := now.Sub(r.received).Milliseconds()
		for _, w := range r.Workers {
			w.AgeMs += extra
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
	delete(t.reports, nodeID)
	t.mu.Unlock()
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

// NotifyMsg implements gossip.StateDelegate: one report per broadcast.
func (t *loadTable) NotifyMsg(msg []byte) {
	r, err := decodeLoadMsg(msg)
	if err != nil {
		return
	}
	t.put(r)
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

// decodeLoadMsg decodes a load report broadcast, plain or deflated.
func decodeLoadMsg(msg []byte) (loadReport, error) {
	var r loadReport
	if len(msg) > 0 && msg[0] == loadMsgDeflate {
		b, err := io.ReadAll(io.LimitReader(flate.NewReader(bytes.NewReader(msg[1:])), maxLoadMsg+1))
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
