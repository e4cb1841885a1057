package api_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/api"
)

// TestDecodeRefusesUnknownFields: a job body's fields are its operation's
// and nothing else; a stray one is refused naming it, never ignored.
func TestDecodeRefusesUnknownFields(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		field      string // "" = accepted
		msg        string
	}{
		{"status", `{"operation":"status"}`, "", ""},
		{"status all", `{"operation":"status","all":true}`, "", ""},
		{"status bogus", `{"operation":"status","bogus":1}`, "bogus", `unknown field "bogus": status takes all`},
		{"hive_list takes nothing", `{"operation":"hive_list","x":1}`, "x", "hive_list takes no fields"},
		{"first in name order", `{"operation":"status","zeta":1,"alpha":2}`, "alpha", `"alpha"`},
		{"hive of an OnHive operation", `{"operation":"worker_process_list","hive":"node1"}`, "", ""},
		{"hive of a cluster operation", `{"operation":"status","hive":"node1"}`, "hive", `"hive"`},
		{"hive_get by hive", `{"operation":"hive_get","hive":"node1"}`, "", ""},
		{"spawn", `{"operation":"worker_spawn","hive":"h","model":"m","gpus":[0],"shards":2,"hives":["a","b"]}`, "", ""},
		{"spawn bogus", `{"operation":"worker_spawn","model":"m","thread":2}`, "thread", `"thread"`},
		{"older spelling", `{"operation":"active_worker_get","id":"w1"}`, "", ""},
		{"infer", `{"operation":"infer","model":"m","prompt":"x","max_tokens":3,"temperature":0,"stop":"\n","seed":1}`, "", ""},
		{"infer worker fields", `{"operation":"infer","model":"m","prompt":"x","min_p":0.1,"repeat_penalty":1.1,"repeat_last_n":64,"n":1,` +
			`"max_completion_tokens":3,"response_format":{"type":"json_object"},"tools":[],"tool_choice":"none"}`, "", ""},
		{"infer messages", `{"operation":"infer","model":"m","messages":[{"role":"assistant","content":"","tool_calls":[],"tool_call_id":"c","name":"n"}]}`, "", ""},
		{"infer bogus", `{"operation":"infer","model":"m","prompt":"x","bogus":true}`, "bogus", `unknown field "bogus": infer takes model, hive`},
		{"infer stream", `{"operation":"infer","model":"m","prompt":"x","stream":true}`, "stream", `"stream"`},
		{"infer rbee extension", `{"operation":"infer","model":"m","prompt":"x","rbee":{"v":1}}`, "rbee", `"rbee"`},
		{"infer name", `{"operation":"infer","model":"m","prompt":"x","name":"n"}`, "name", `"name"`},
		{"infer message bogus", `{"operation":"infer","model":"m","messages":[{"role":"user","content":"hi"},{"role":"user","content":"hi","bogus":1}]}`,
			"messages[1].bogus", `unknown field "bogus" in messages[1]`},
		{"wrong type", `{"operation":"worker_spawn","model":"m","threads":"two"}`, "threads", "threads must be an integer"},
		{"infer wrong type", `{"operation":"infer","model":"m","prompt":"x","max_tokens":"ten"}`, "max_tokens", "max_tokens must be an integer"},
		{"infer stop wrong type", `{"operation":"infer","model":"m","prompt":"x","stop":5}`, "stop", "stop must be a string or an array of strings"},
		{"not an object", `[]`, "", "must be a JSON object"},
		{"no operation", `{"all":true}`, "operation", `missing field "operation"`},
		{"operation not a string", `{"operation":1}`, "operation", "operation must be a string"},
		{"unknown operation", `{"operation":"format_disk"}`, "operation", `unknown operation "format_disk"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := api.Decode([]byte(tc.body))
			if tc.msg == "" {
				require.NoError(t, err)
				var op struct{ Operation string }
				require.NoError(t, json.Unmarshal([]byte(tc.body), &op))
				require.Equal(t, op.Operation, req.Operation())
				return
			}
			require.Error(t, err)
			var fe *api.FieldError
			require.True(t, errors.As(err, &fe), "%T %v", err, err)
			require.Equal(t, tc.field, fe.Field)
			require.Contains(t, fe.Error(), tc.msg)
			for _, goName := range []string{"Go value", "Go struct", "api.", "int64", "float32", "json:"} {
				require.NotContains(t, fe.Error(), goName)
			}
		})
	}
}

// TestDecodeEveryOperation: every operation decodes into its own type,
// and the fields Encode writes are the ones Decode takes.
func TestDecodeEveryOperation(t *testing.T) {
	for _, op := range api.Operations() {
		req, err := api.Decode([]byte(`{"operation":"` + op + `"}`))
		require.NoError(t, err, op)
		require.Equal(t, op, req.Operation())
		b, err := api.Encode(req)
		require.NoError(t, err)
		back, err := api.Decode(b)
		require.NoError(t, err, op)
		require.Equal(t, req, back)
	}
	layers, prompt, temp := 3, "x", float32(0.5)
	for _, req := range []api.Request{
		api.WorkerSpawnRequest{OnHive: api.OnHive{Hive: "h"}, Model: "m", GPUs: []int{1}, GPULayers: &layers, Shard: &api.ShardSpawn{Group: "g", Stages: []api.ShardStage{{NodeID: "n"}}}},
		api.InferRequest{Model: "m", Prompt: &prompt, Temperature: &temp, Stop: []string{"a"}, Messages: []api.Message{{Role: "user", Content: "hi", Name: "n"}}},
		api.BinaryAddRequest{OnHive: api.OnHive{Hive: "h"}, Path: "/x", Devices: []string{"cuda"}, Default: true},
	} {
		b, err := api.Encode(req)
		require.NoError(t, err)
		back, err := api.Decode(b)
		require.NoError(t, err, string(b))
		require.Equal(t, req, back)
	}
}

// TestInferRequestStrict: the node decodes an infer job with
// json.Unmarshal; a stray field is refused there too, naming it.
func TestInferRequestStrict(t *testing.T) {
	var r api.InferRequest
	err := json.Unmarshal([]byte(`{"operation":"infer","model":"m","prompt":"x","bogus":true}`), &r)
	var fe *api.FieldError
	require.True(t, errors.As(err, &fe), "%v", err)
	require.Equal(t, "bogus", fe.Field)
	require.True(t, strings.HasPrefix(err.Error(), `unknown field "bogus"`), err.Error())

	require.NoError(t, json.Unmarshal([]byte(`{"operation":"infer","model":"m","prompt":"x","top_k":5,"min_p":0.1}`), &r))
	require.Equal(t, "m", r.Model)
	require.Equal(t, 5, *r.TopK)
	require.NoError(t, json.Unmarshal([]byte(`null`), &r))
}

// TestLooseIgnored: the fields an older build that decodes loosely would
// ignore are those it may not know, set to something besides a zero.
func TestLooseIgnored(t *testing.T) {
	for _, tc := range []struct {
		op, body string
		want     []string
	}{
		{api.OpWorkerSpawn, `{"operation":"worker_spawn","model":"m","hive":"h"}`, nil},
		{api.OpWorkerSpawn, `{"operation":"worker_spawn","model":"m","kv_cache":"f32"}`, []string{"kv_cache"}},
		{api.OpWorkerSpawn, `{"operation":"worker_spawn","model":"m","shards":2,"hives":["a","b"],"mode":"tensor"}`, []string{"hives", "mode", "shards"}},
		{api.OpWorkerSpawn, `{"operation":"worker_spawn","model":"m","kv_cache":"","shards":0,"hives":[],"shard":null}`, nil},
		{api.OpWorkerSpawn, `{"operation":"worker_spawn","shard":{"group":"g","lo":1,"hi":2}}`, []string{"shard"}},
		{api.OpStatus, `{"operation":"status","all":true}`, []string{"all"}},
		{api.OpStatus, `{"operation":"status","all":false}`, nil},
		{api.OpModelList, `{"operation":"model_list","hive":"h"}`, nil},
		{api.OpWorkerSpawn, `not json`, nil},
	} {
		require.Equal(t, tc.want, api.LooseIgnored(tc.op, []byte(tc.body)), tc.body)
	}
}
