package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/internal/dirlock"
	"github.com/rbee-project/rbee/internal/reqbody/reqbodytest"
	"github.com/rbee-project/rbee/node"
	"github.com/rbee-project/rbee/node/client"
	"github.com/rbee-project/rbee/node/jobs"
	"github.com/rbee-project/rbee/node/nodetest"
)

func status(t *testing.T, n *node.Node) api.StatusResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var st api.StatusResult
	require.NoError(t, client.New(n.URL(), n.AdminKey()).Result(ctx, map[string]any{"operation": "status"}, &st, nil))
	return st
}

func TestClusterFormsAndAnswersEverywhere(t *testing.T) {
	start := time.Now()
	c := nodetest.New(t, 3)
	leader := c.WaitLeader()
	for _, n := range c.Nodes {
		st := status(t, n)
		require.Equal(t, leader.Name(), st.Leader)
		require.Len(t, st.Nodes, 3)
		for _, h := range st.Nodes {
			require.Equal(t, "alive", h.State)
			require.True(t, h.Voter)
			require.NotNil(t, h.StateSince, "%s's view of %s", n.Name(), h.Name)
			require.False(t, h.StateSince.After(time.Now()), "learnt of %s in the past", h.Name)
			require.False(t, h.StateSince.Before(start), "learnt of %s during the test", h.Name)
			require.NotNil(t, h.StateAgeMs)
			require.GreaterOrEqual(t, *h.StateAgeMs, int64(0))
		}
	}
	// The leader loop writes every member into the registry, and each node
	// stores its capabilities there.
	require.Eventually(t, func() bool {
		for _, n := range c.Nodes {
			nodes := n.Registry().Nodes()
			if len(nodes) != 3 {
				return false
			}
			for _, rn := range nodes {
				if rn.Capabilities == nil || rn.Capabilities.Cores == 0 {
					return false
				}
			}
		}
		return true
	}, nodetest.WaitTimeout, 50*time.Millisecond)
}

func TestForwardedOperationRunsOnTargetHive(t *testing.T) {
	c := nodetest.New(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var nodesSeen []string
	err := client.New(c.Nodes[0].URL(), c.Nodes[0].AdminKey()).Run(ctx, map[string]any{"operation": "hive_refresh_capabilities", "hive": "node1"}, func(ev jobs.Event) error {
		nodesSeen = append(nodesSeen, ev.Node)
		return nil
	})
	require.NoError(t, err)
	require.Contains(t, nodesSeen, "node1", "events from the target hive are relayed")

	// hive_status reaches the other node over p2p.
	var hs api.HiveStatus
	require.NoError(t, client.New(c.Nodes[0].URL(), c.Nodes[0].AdminKey()).Result(ctx, map[string]any{"operation": "hive_status", "name": "node1"}, &hs, nil))
	require.Equal(t, "alive", hs.GossipState)
	require.True(t, hs.APIHealthy, hs.APIError)
	require.Empty(t, hs.P2PError)
}

func TestLeaderFailoverAndRejoin(t *testing.T) {
	c := nodetest.New(t, 3)
	leader := c.WaitLeader()
	li := c.Index(leader)
	c.Kill(li)
	newLeader := c.WaitLeader()
	require.NotEqual(t, leader.ID(), newLeader.ID())
	// Reads keep answering on the survivors and writes resume.
	for _, n := range c.Running() {
		st := status(t, n)
		require.Equal(t, newLeader.Name(), st.Leader)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	survivor := c.Running()[0]
	require.NoError(t, client.New(survivor.URL(), survivor.AdminKey()).Result(ctx, map[string]any{"operation": "hive_refresh_capabilities"}, nil, nil))

	// The killed node comes back with its data dir and no flags.
	back := c.Restart(li)
	require.Eventually(t, func() bool {
		return back.LeaderID() == newLeader.ID() || back.LeaderID() != ""
	}, nodetest.WaitTimeout, 20*time.Millisecond)
	c.WaitConverged(3)
	// The restarted node's gossip view catches up by itself (raft's
	// configuration, which WaitConverged checks, never lost the node):
	// poll it.
	require.Eventually(t, func() bool {
		st := status(t, back)
		alive := 0
		for _, h := range st.Nodes {
			if h.State == "alive" {
				alive++
			}
		}
		return alive == 3
	}, nodetest.WaitTimeout, 20*time.Millisecond, "the restarted node sees all three alive")
}

func TestGracefulLeave(t *testing.T) {
	c := nodetest.New(t, 3)
	leaver := c.Nodes[2]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, leaver.Leave(ctx))
	c.Nodes[2] = nil
	require.Eventually(t, func() bool {
		servers, err := c.Nodes[0].Consensus().Servers()
		if err != nil || len(servers) != 2 {
			return false
		}
		for _, h := range status(t, c.Nodes[0]).Nodes {
			if h.Name == "node2" && h.State != "left" {
				return false
			}
		}
		return true
	}, nodetest.WaitTimeout, 50*time.Millisecond)
}

// TestLeaveRefusedWithoutLeader: a node cut off from the majority (here:
// the only survivor of three) refuses `rbee leave` with no_quorum and
// keeps running, instead of answering "leaving", stopping, and staying a
// failed voter in the others' configuration.
func TestLeaveRefusedWithoutLeader(t *testing.T) {
	c := nodetest.New(t, 3)
	c.WaitConverged(3)
	survivor := c.Nodes[0]
	c.Kill(1)
	c.Kill(2)
	require.Eventually(t, func() bool { return survivor.LeaderID() == "" }, nodetest.WaitTimeout, 20*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := client.New(survivor.URL(), survivor.AdminKey()).Leave(ctx)
	var apiErr *client.APIError
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, http.StatusServiceUnavailable, apiErr.Status)
	require.Equal(t, jobs.CodeNoQuorum, apiErr.Code)
	require.Contains(t, apiErr.Message, "cannot leave now")
	select {
	case <-survivor.Stopped():
		t.Fatal("the node stopped")
	case <-time.After(500 * time.Millisecond):
	}
	require.NoError(t, client.New(survivor.URL(), survivor.AdminKey()).Health(ctx), "the node still answers")
}

// TestLeaveCutShortIsExplained: a node killed during `rbee leave` after
// raft removed it, restarted, hears from no leader while gossip sees every
// other voter. A second `rbee leave` is refused (the leader adds it back
// within a minute) with that explanation, not as "cut off from the
// majority", which sent the user looking for a partition.
func TestLeaveCutShortIsExplained(t *testing.T) {
	c := nodetest.New(t, 3)
	c.WaitConverged(3)
	n := c.Nodes[2]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, n.Consensus().Leave(ctx), "the raft part of the first leave")
	require.Eventually(t, func() bool { return n.LeaderID() == "" }, nodetest.WaitTimeout, 20*time.Millisecond)

	err := client.New(n.URL(), n.AdminKey()).Leave(ctx)
	var apiErr *client.APIError
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, jobs.CodeNoQuorum, apiErr.Code)
	require.Contains(t, apiErr.Message, "gossip sees 2 of the 2 other voters alive")
	require.Contains(t, apiErr.Message, "cut short")
	require.NotContains(t, apiErr.Message, "cut off from the majority")
}

func TestBadInput(t *testing.T) {
	c := nodetest.New(t, 1, func(i int, cfg *node.Config) {})
	n := c.Nodes[0]
	// Let the node's own start-up writes (its entry, its capabilities) land
	// first: only then is any later change the bad input's doing.
	// The leader's own writes too: the cluster CA and the registry version.
	require.Eventually(t, func() bool {
		rn, ok := n.Registry().Node(n.ID())
		_, hasCA := n.Registry().ClusterCA()
		return ok && rn.Capabilities != nil && hasCA && n.Registry().RegistryVersion() == fsm.Version
	}, nodetest.WaitTimeout, 20*time.Millisecond)
	before := n.Registry().Index()
	cases := []struct {
		name   string
		body   string
		status int
		code   string
	}{
		{"malformed", `{"operation":`, 400, "bad_request"},
		{"not an object", `[1,2]`, 400, "bad_request"},
		{"trailing", `{"operation":"status"} {}`, 400, "bad_request"},
		{"missing op", `{}`, 400, "bad_request"},
		{"unknown op", `{"operation":"format_disk"}`, 400, "unknown_operation"},
		{"unknown hive", `{"operation":"hive_get","name":"nope"}`, 404, "unknown_hive"},
		{"unknown target", `{"operation":"hive_refresh_capabilities","hive":"nope"}`, 404, "unknown_hive"},
		{"oversized", `{"operation":"status","pad":"` + strings.Repeat("x", 2<<20) + `"}`, 413, "bad_request"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// As the admin: a caller without the operation's permission
			// learns nothing of its request (403 first).
			req, err := http.NewRequest(http.MethodPost, n.URL()+"/v1/jobs", bytes.NewBufferString(tc.body))
			require.NoError(t, err)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+n.AdminKey())
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			require.Equal(t, tc.status, resp.StatusCode)
			var e node.APIError
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&e))
			require.Equal(t, tc.code, e.Error.Code)
			require.NotEmpty(t, e.Error.Message)
		})
	}
	resp, err := http.Get(n.URL() + "/v1/jobs/job_nope/events")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 404, resp.StatusCode)
	require.Equal(t, before, n.Registry().Index(), "bad input changed the registry")
}

func TestTokenRequired(t *testing.T) {
	c := nodetest.New(t, 1, func(i int, cfg *node.Config) { cfg.RequireToken = true })
	n := c.Nodes[0]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// No credential, a wrong one, and the cluster secret (which joins
	// nodes and is no API credential on loopback) are all refused.
	for _, tok := range []string{"", "wrong_token_wrong_token", nodetest.Token} {
		_, err := client.New(n.URL(), tok).Submit(ctx, map[string]any{"operation": "status"})
		var ae *client.APIError
		require.ErrorAs(t, err, &ae)
		require.Equal(t, 401, ae.Status)
	}
	_, err := client.New(n.URL(), n.AdminKey()).Submit(ctx, map[string]any{"operation": "status"})
	require.NoError(t, err)
}

func TestNodeWithAnotherSecretCannotJoin(t *testing.T) {
	c := nodetest.New(t, 1)
	cfg := node.DefaultConfig()
	cfg.Name = "stranger"
	cfg.DataDir = filepath.Join(t.TempDir(), "stranger")
	cfg.HTTPAddr, cfg.GossipAddr, cfg.P2PAddr, cfg.BlobAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.Token = "rbee_some_other_cluster_secret_xx"
	cfg.MDNS = false
	cfg.Profile = "local"
	cfg.Join = []string{c.Nodes[0].GossipAddr()}
	stranger, err := node.New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = stranger.Start(ctx)
	require.ErrorIs(t, err, node.ErrJoinFailed)
	st := status(t, c.Nodes[0])
	require.Len(t, st.Nodes, 1)
}

// A worker nice level outside 0..19 is refused by New, before anything
// is created.
func TestNewRefusesWorkerNiceOutOfRange(t *testing.T) {
	for _, nice := range []int{-1, 20} {
		cfg := node.DefaultConfig()
		cfg.DataDir = filepath.Join(t.TempDir(), "n")
		cfg.WorkerNice = nice
		_, err := node.New(cfg)
		require.ErrorContains(t, err, "worker nice", "nice %d", nice)
		require.NoDirExists(t, cfg.DataDir)
	}
}

// TestOneNodePerDataDir: a second node on a data dir in use fails at once,
// naming the holder, and the first keeps serving.
func TestOneNodePerDataDir(t *testing.T) {
	c := nodetest.New(t, 1)
	first := c.Nodes[0]
	cfg := node.DefaultConfig()
	cfg.Name, cfg.DataDir, cfg.MDNS = "second", first.DataDir(), false
	cfg.HTTPAddr, cfg.GossipAddr, cfg.P2PAddr, cfg.BlobAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	second, err := node.New(cfg)
	require.NoError(t, err)
	err = second.Start(context.Background())
	require.ErrorIs(t, err, dirlock.ErrLocked)
	require.ErrorContains(t, err, fmt.Sprintf("pid %d", os.Getpid()))
	require.ErrorContains(t, err, "--data-dir")
	_ = second.Close()
	status(t, first)
}

// TestAmbiguousHiveName: when two live nodes go by one name (a second
// machine started with the same --name), an operation aimed at that name
// is refused with a conflict naming both ids, instead of acting on
// whichever sorts first; each is still reachable by its peer id.
func TestAmbiguousHiveName(t *testing.T) {
	c := nodetest.New(t, 3, func(i int, cfg *node.Config) {
		if i == 2 {
			cfg.Name = "node1"
		}
	})
	n := c.Nodes[0]
	require.Eventually(t, func() bool {
		live := 0
		for _, h := range n.Hives() {
			if h.Name == "node1" && h.State == "alive" {
				live++
			}
		}
		return live == 2
	}, nodetest.WaitTimeout, 20*time.Millisecond)
	post := func(body string) (int, node.APIError) {
		req, err := http.NewRequest(http.MethodPost, n.URL()+"/v1/jobs", bytes.NewBufferString(body))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+n.AdminKey())
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var e node.APIError
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return resp.StatusCode, e
	}
	for _, body := range []string{
		`{"operation":"hive_get","name":"node1"}`,
		`{"operation":"hive_refresh_capabilities","hive":"node1"}`,
	} {
		status, e := post(body)
		require.Equal(t, 409, status, body)
		require.Equal(t, "conflict", e.Error.Code, body)
		require.Contains(t, e.Error.Message, c.Nodes[1].ID())
		require.Contains(t, e.Error.Message, c.Nodes[2].ID())
	}
	for _, id := range []string{c.Nodes[1].ID(), c.Nodes[2].ID()} {
		status, _ := post(`{"operation":"hive_get","name":"` + id + `"}`)
		require.Equal(t, 202, status, "by peer id")
	}
	status, _ := post(`{"operation":"hive_get","name":"node0"}`)
	require.Equal(t, 202, status, "a name one node has")
}

// A node whose cluster.secret was damaged or replaced stops at start with
// an error naming the file: with a secret that is not its cluster's it
// reached none of its peers and stayed up alone, electing itself without
// end; a directory in the file's place was called "readable by other
// users".
func TestStartRefusesWrongStoredSecret(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, path string)
		is     error
		text   string
	}{
		{"another secret", func(t *testing.T, path string) {
			require.NoError(t, os.WriteFile(path, []byte(node.GenerateSecret()+"\n"), 0o600))
		}, node.ErrWrongSecret, "rbee token"},
		{"a directory", func(t *testing.T, path string) {
			require.NoError(t, os.Remove(path))
			require.NoError(t, os.Mkdir(path, 0o755)) // as mkdir leaves it
		}, nil, "not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := nodetest.New(t, 1)
			first := c.Nodes[0]
			require.Eventually(t, func() bool { return first.CAFingerprint() != "" }, 20*time.Second, 20*time.Millisecond)
			dir := first.DataDir()
			c.Kill(0)
			path := filepath.Join(dir, node.SecretFile)
			tc.damage(t, path)

			cfg := node.DefaultConfig()
			cfg.Name, cfg.DataDir, cfg.MDNS = "again", dir, false
			cfg.HTTPAddr, cfg.GossipAddr, cfg.P2PAddr, cfg.BlobAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
			again, err := node.New(cfg)
			require.NoError(t, err)
			err = again.Start(context.Background())
			_ = again.Close()
			require.Error(t, err)
			if tc.is != nil {
				require.ErrorIs(t, err, tc.is)
			}
			require.ErrorContains(t, err, path)
			require.ErrorContains(t, err, tc.text)
		})
	}
}

// TestCrashTempFilesRemovedAtStart: the temporary files of atomic writes a
// kill -9 left in the data dir (the admin key's holds the key) are gone
// once the node starts again; other files stay.
func TestCrashTempFilesRemovedAtStart(t *testing.T) {
	c := nodetest.New(t, 1)
	dir := c.Nodes[0].DataDir()
	c.Kill(0)
	left := []string{
		filepath.Join(dir, ".tmp-admin.key-123"),
		filepath.Join(node.ProcessesDir(dir), ".tmp-processes.json-9"),
		filepath.Join(dir, "tls", ".tmp-node.crt-7"),
	}
	for _, p := range left {
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o700))
		require.NoError(t, os.WriteFile(p, []byte("partial"), 0o600))
	}
	kept := filepath.Join(dir, "notes.txt")
	require.NoError(t, os.WriteFile(kept, []byte("mine"), 0o600))
	n := c.Restart(0)
	status(t, n)
	for _, p := range left {
		require.NoFileExists(t, p)
	}
	require.FileExists(t, kept)
}

// TestAnnouncedBodyOverLimit: a request that announces a body over its
// route's limit (10 GB) and sends none is answered 413 at once, with the
// error in its API's shape (native, OpenAI, Ollama), and a route that
// reads no body answers at once too. Before, each waited for the body
// until the node's body deadline (60 s) and then answered 400 (or, for a
// route that reads no body, its own answer that late).
func TestAnnouncedBodyOverLimit(t *testing.T) {
	c := nodetest.New(t, 1, func(i int, cfg *node.Config) { cfg.HTTPBodyTimeout = time.Hour })
	n := c.Nodes[0]
	auth := http.Header{"Authorization": {"Bearer " + n.AdminKey()}}
	native := func(t *testing.T, b []byte) {
		var e node.APIError
		require.NoError(t, json.Unmarshal(b, &e), "%s", b)
		require.Equal(t, "bad_request", e.Error.Code)
		require.Contains(t, e.Error.Message, "bytes")
	}
	openAI := func(t *testing.T, b []byte) {
		requireOpenAIErrorKeys(t, b)
		require.Contains(t, string(b), `"request_too_large"`)
	}
	ollama := func(t *testing.T, b []byte) {
		var e struct {
			Error string `json:"error"`
		}
		require.NoError(t, json.Unmarshal(b, &e), "%s", b)
		require.Contains(t, e.Error, "over")
	}
	cases := []struct {
		method, path string
		status       int
		check        func(*testing.T, []byte)
	}{
		{http.MethodPost, "/v1/jobs", 413, native},
		{http.MethodPost, "/v1/join", 413, native},
		{http.MethodPost, "/v1/workers/heartbeat", 413, native},
		{http.MethodPost, "/v1/chat/completions", 413, openAI},
		{http.MethodPost, "/v1/completions", 413, openAI},
		{http.MethodPost, "/v1/embeddings", 413, openAI},
		{http.MethodPost, "/api/chat", 413, ollama},
		{http.MethodPost, "/api/generate", 413, ollama},
		{http.MethodPost, "/api/show", 413, ollama},
		{http.MethodPost, "/api/embed", 413, ollama},
		{http.MethodGet, "/health", 200, nil},
	}
	for _, tc := range cases {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			resp, b := reqbodytest.Announce(t, tc.method, n.URL()+tc.path, auth)
			require.Equal(t, tc.status, resp.StatusCode, "%s", b)
			if tc.check != nil {
				tc.check(t, b)
			}
		})
	}
}
