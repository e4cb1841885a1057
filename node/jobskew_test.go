package node_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/node/client"
	"github.com/rbee-project/rbee/node/jobs"
	"github.com/rbee-project/rbee/node/nodetest"
)

// A job forwarded to a hive of an older build, which ignores request
// fields it does not know, is refused when it sets one such a build may
// not know (kv_cache, shards, ...) instead of running without it; to a
// hive of this build it goes through (and fails there for its unknown
// model); jobs without such fields go to the older hive as before.
func TestForwardToLooseHiveRefusesFieldsItWouldIgnore(t *testing.T) {
	c := nodetest.New(t, 3)
	c.WaitConverged(3)
	n0 := c.Nodes[0]
	require.Eventually(t, func() bool { return n0.PeerServesStrictJobs(c.Nodes[1].ID()) }, nodetest.WaitTimeout, 20*time.Millisecond)
	c.Nodes[1].ServeLooseJobsOnly() // node1 acts as an older build
	require.Eventually(t, func() bool { return !n0.PeerServesStrictJobs(c.Nodes[1].ID()) }, nodetest.WaitTimeout, 20*time.Millisecond,
		"node0 never learnt that node1 dropped the protocol")
	for _, tc := range []struct {
		name string
		req  map[string]any
		code string
		msg  string
	}{
		{"kv cache to an older hive", map[string]any{"operation": "worker_spawn", "model": "builtin:nosuch", "hive": "node1", "kv_cache": "f32"},
			"upgrade_required", "ignore kv_cache of worker_spawn"},
		{"group headed by an older hive", map[string]any{"operation": "worker_spawn", "model": "builtin:nosuch", "shards": 2, "hives": []string{"node1", "node2"}},
			"upgrade_required", "ignore hives, shards of worker_spawn"},
		{"kv cache to a hive of this build", map[string]any{"operation": "worker_spawn", "model": "builtin:nosuch", "hive": "node2", "kv_cache": "f32"},
			"", "nosuch"},
		{"zero values to an older hive", map[string]any{"operation": "worker_spawn", "model": "builtin:nosuch", "hive": "node1", "kv_cache": "", "shards": 0},
			"", "nosuch"},
		{"plain spawn to an older hive", map[string]any{"operation": "worker_spawn", "model": "builtin:nosuch", "hive": "node1"},
			"", "nosuch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			je := runErr(t, n0, tc.req)
			require.Contains(t, je.Message, tc.msg)
			if tc.code != "" {
				require.Equal(t, tc.code, je.Code, je.Message)
			} else {
				require.NotEqual(t, "upgrade_required", je.Code, je.Message)
			}
		})
	}
	var out struct {
		Models []any `json:"models"`
	}
	run(t, n0, map[string]any{"operation": "model_list", "hive": "node1"}, &out)
}

// The client sends a job that sets a field an older node would ignore only
// to a node that says it refuses the fields it does not know; an older
// node (here a node whose answers lose that header on the way) gets a
// clear refusal from the client and never sees the job. Jobs without such
// fields go to it as before.
func TestClientRefusesFieldsAnOlderNodeWouldIgnore(t *testing.T) {
	c := nodetest.New(t, 1)
	n := c.WaitLeader()
	u, err := url.Parse(n.URL())
	require.NoError(t, err)
	var jobsSeen atomic.Int32
	proxy := httputil.NewSingleHostReverseProxy(u)
	proxy.ModifyResponse = func(r *http.Response) error {
		r.Header.Del(api.StrictJobsHeader)
		return nil
	}
	older := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/jobs" {
			jobsSeen.Add(1)
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(older.Close)
	spawn := map[string]any{"operation": "worker_spawn", "model": "builtin:nosuch", "kv_cache": "f32"}
	for _, tc := range []struct {
		name, base string
		req        map[string]any
		code       string
		jobs       int32
	}{
		{"kv cache to this build", n.URL(), spawn, "", 0},
		{"kv cache to an older node", older.URL, spawn, "upgrade_required", 0},
		{"group to an older node", older.URL, map[string]any{"operation": "worker_spawn", "model": "builtin:nosuch", "shards": 2}, "upgrade_required", 0},
		{"plain spawn to an older node", older.URL, map[string]any{"operation": "worker_spawn", "model": "builtin:nosuch"}, "", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			jobsSeen.Store(0)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err := client.New(tc.base, n.AdminKey()).Run(ctx, tc.req, func(jobs.Event) error { return nil })
			require.Error(t, err)
			var je *client.JobError
			var ae *client.APIError
			code := ""
			switch {
			case errors.As(err, &je):
				code = je.Code
			case errors.As(err, &ae):
				code = ae.Code
			}
			if tc.code != "" {
				require.Equal(t, tc.code, code, "%v", err)
				require.ErrorContains(t, err, "older rbee")
			} else {
				require.NotEqual(t, "upgrade_required", code, "%v", err)
			}
			require.Equal(t, tc.jobs, jobsSeen.Load())
		})
	}
}
