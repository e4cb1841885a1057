package node

import (
	"bytes"
	"compress/flate"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/gossip"
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
		got, err := decodeLoadMsg(msg)
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
	_, err = decodeLoadMsg(z.Bytes())
	require.Error(t, err)

	// A load table takes both forms.
	lt := newLoadTable()
	msg, _ := encodeLoadMsg(report(6, 0))
	lt.NotifyMsg(msg)
	require.Len(t, lt.workers(), 6)
}
