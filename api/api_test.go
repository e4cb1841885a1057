package api_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/api"
)

// TestEncode: a request's body is its fields plus "operation", with the
// hive of OnHive flattened, and decodes back into the same type.
func TestEncode(t *testing.T) {
	layers := 7
	prompt := "Once upon"
	cases := []struct {
		req  api.Request
		want map[string]any
	}{
		{api.StatusRequest{}, map[string]any{"operation": "status"}},
		{api.WorkerSpawnRequest{OnHive: api.OnHive{Hive: "h1"}, Model: "builtin:stories260k", Slots: 2, GPULayers: &layers},
			map[string]any{"operation": "worker_spawn", "hive": "h1", "model": "builtin:stories260k", "slots": 2.0, "gpu_layers": 7.0}},
		{api.ProcessDeleteRequest{PID: 42}, map[string]any{"operation": "worker_process_delete", "pid": 42.0}},
		{api.InferRequest{Model: "m", Prompt: &prompt, MaxTokens: 3}, map[string]any{"operation": "infer", "model": "m", "prompt": "Once upon", "max_tokens": 3.0}},
		{api.ModelListRequest{All: true}, map[string]any{"operation": "model_list", "all": true}},
		{api.WorkerRetireRequest{WorkerID: "w1"}, map[string]any{"operation": "active_worker_retire", "worker_id": "w1"}},
	}
	for _, tc := range cases {
		t.Run(tc.req.Operation(), func(t *testing.T) {
			b, err := api.Encode(tc.req)
			require.NoError(t, err)
			var got map[string]any
			require.NoError(t, json.Unmarshal(b, &got))
			require.Equal(t, tc.want, got)
		})
	}
	// Round trip through the node's view: the same type decodes the body.
	b, err := api.Encode(api.WorkerSpawnRequest{OnHive: api.OnHive{Hive: "h1"}, Model: "x", GPUs: []int{0, 1}})
	require.NoError(t, err)
	var back api.WorkerSpawnRequest
	require.NoError(t, json.Unmarshal(b, &back))
	require.Equal(t, "h1", back.Hive)
	require.Equal(t, []int{0, 1}, back.GPUs)
	require.Equal(t, "x", back.ModelRef())
}

// TestOlderSpellings: fields the node accepted under an older name still
// name the same thing.
func TestOlderSpellings(t *testing.T) {
	var s api.WorkerSpawnRequest
	require.NoError(t, json.Unmarshal([]byte(`{"ref":"builtin:stories260k"}`), &s))
	require.Equal(t, "builtin:stories260k", s.ModelRef())
	var g api.WorkerGetRequest
	require.NoError(t, json.Unmarshal([]byte(`{"id":"w9"}`), &g))
	require.Equal(t, "w9", g.Worker())
	var r api.WorkerRetireRequest
	require.NoError(t, json.Unmarshal([]byte(`{"worker_id":"w8","id":"w9"}`), &r))
	require.Equal(t, "w8", r.Worker())
}

// TestInferStopForms: an infer job's "stop" is a string or a list, as the
// worker takes it; the node decodes both.
func TestInferStopForms(t *testing.T) {
	for in, want := range map[string][]string{`"\n"`: {"\n"}, `["a","b"]`: {"a", "b"}} {
		var r api.InferRequest
		require.NoError(t, json.Unmarshal([]byte(`{"model":"m","prompt":"x","stop":`+in+`}`), &r), in)
		require.Equal(t, want, []string(r.Stop))
	}
}
