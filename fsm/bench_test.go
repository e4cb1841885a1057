package fsm

import (
	"fmt"
	"io"
	"testing"

	"github.com/hashicorp/raft"
)

// populated returns an FSM with n nodes and 4n workers.
func populated(b *testing.B, n int) *FSM {
	f := New(nil)
	idx := uint64(0)
	for i := 0; i < n; i++ {
		idx++
		if _, err := f.ApplyCommand(idx, enc(b, UpsertNode{Node: sampleNode(fmt.Sprintf("n%04d", i), "x")})); err != nil {
			b.Fatal(err)
		}
		for w := 0; w < 4; w++ {
			idx++
			cmd := UpsertWorker{Worker: Worker{ID: fmt.Sprintf("w%04d-%d", i, w), NodeID: fmt.Sprintf("n%04d", i), Model: "m", State: WorkerReady, UpdatedAt: t0}}
			if _, err := f.ApplyCommand(idx, enc(b, cmd)); err != nil {
				b.Fatal(err)
			}
		}
	}
	return f
}

// BenchmarkApplyWorkerState: one worker state change in a registry of
// 250 nodes / 1000 workers (copy-on-write clones the workers table).
func BenchmarkApplyWorkerState(b *testing.B) {
	f := populated(b, 250)
	cmds := [][]byte{
		enc(b, SetWorkerState{ID: "w0100-1", State: WorkerRetiring, At: t0}),
		enc(b, SetWorkerState{ID: "w0100-1", State: WorkerReady, At: t0}),
	}
	idx := f.Index()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		idx++
		f.Apply(&raft.Log{Index: idx, Type: raft.LogCommand, Data: cmds[i%2]})
	}
}

// BenchmarkSnapshotPersist: Snapshot plus encoding 250 nodes / 1000 workers.
func BenchmarkSnapshotPersist(b *testing.B) {
	f := populated(b, 250)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s, _ := f.Snapshot()
		if err := WriteSnapshot(io.Discard, s.(*snapshot).state); err != nil {
			b.Fatal(err)
		}
	}
}
