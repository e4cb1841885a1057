package node

import (
	"encoding/json"
	"testing"

	"github.com/rbee-project/rbee/node/router"
)

// FuzzLoadTable: load reports come from the network (gossip broadcasts and
// push/pull state); any bytes are merged or ignored, never a panic, and a
// report never replaces a newer one of the same node.
func FuzzLoadTable(f *testing.F) {
	good, _ := json.Marshal([]loadReport{{NodeID: "a", Seq: 2, Workers: []router.WorkerLoad{{ID: "w", Model: "m", State: "ready"}}}})
	f.Add(good, []byte(`{"node":"a","seq":1,"workers":[]}`))
	f.Add([]byte(`[{"node":"","seq":9}]`), []byte(`{"node":"b","seq":-1}`))
	f.Add([]byte(`null`), []byte(`{`))
	if z, err := encodeLoadMsg(report(6, 2)); err == nil {
		f.Add([]byte(`[]`), z) // a deflated broadcast
	}
	f.Add([]byte(`[]`), []byte{loadMsgDeflate, 0xff, 0x00})
	f.Fuzz(func(t *testing.T, state, msg []byte) {
		lt := newLoadTable()
		lt.MergeRemoteState(state)
		before := map[string]int64{}
		for _, w := range lt.workers() {
			r, _ := lt.report(w.NodeID)
			before[w.NodeID] = r.Seq
		}
		lt.NotifyMsg(msg)
		for id, seq := range before {
			r, ok := lt.report(id)
			if !ok || r.Seq < seq {
				t.Fatalf("report of %s went back from %d to %d", id, seq, r.Seq)
			}
		}
		_ = lt.LocalState()
	})
}
