// Package e2e runs real `rbee` processes: a 3-node cluster on loopback
// driven by the CLI, leader kill -9, failover and rejoin.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/node/localcluster"
)

// build compiles the named commands into one temp dir (a node catalogs
// the rbee-worker next to its own binary) and returns the dir.
func build(t *testing.T, cmds ...string) string {
	t.Helper()
	dir := t.TempDir()
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(file))
	for _, p := range cmds {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, p), "./cmd/"+p)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "go build %s: %s", p, out)
	}
	return dir
}

func buildRbee(t *testing.T) string { return filepath.Join(build(t, "rbee"), "rbee") }

// cli runs the rbee CLI and returns stdout; it fails the test on a non-zero exit.
func cli(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, errOut, err := cliRaw(bin, args...)
	require.NoError(t, err, "rbee %v: %s", args, errOut)
	return out
}

func cliRaw(bin string, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "RBEE_NODE=", "RBEE_TOKEN=", "RBEE_CA=", "RBEE_CA_FINGERPRINT=")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

type statusDoc struct {
	Leader string `json:"leader"`
	Nodes  []struct {
		Name  string `json:"name"`
		State string `json:"state"`
		Voter bool   `json:"voter"`
	} `json:"nodes"`
}

func cliStatus(t *testing.T, bin string, n *localcluster.Node) statusDoc {
	t.Helper()
	var st statusDoc
	out := cli(t, bin, "status", "-o", "json", "--node", n.URL())
	require.NoError(t, json.Unmarshal([]byte(out), &st), out)
	return st
}

// startCluster runs a 3-node cluster of bin until the test ends (logs are
// printed when it fails) and returns it with its leader.
func startCluster(t *testing.T, bin, dir string) (*localcluster.Cluster, string) {
	t.Helper()
	cl, err := localcluster.New(localcluster.Config{Binary: bin, Dir: dir, Nodes: 3, Profile: "local"})
	require.NoError(t, err)
	t.Cleanup(func() {
		cl.Close()
		if t.Failed() {
			for _, n := range cl.Nodes {
				b, _ := os.ReadFile(n.LogPath)
				t.Logf("==== %s log (tail)\n%s", n.Name, tail(string(b), 4000))
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	require.NoError(t, cl.Start(ctx))
	leader, err := cl.WaitConverged(ctx, 3)
	require.NoError(t, err)
	return cl, leader
}

func TestClusterEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	bin := buildRbee(t)
	dir := t.TempDir()
	cl, leader := startCluster(t, bin, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// Every node answers, through the CLI, with the same leader and three alive voters.
	for _, n := range cl.Nodes {
		st := cliStatus(t, bin, n)
		require.Equal(t, leader, st.Leader)
		require.Len(t, st.Nodes, 3)
		for _, m := range st.Nodes {
			require.Equal(t, "alive", m.State)
			require.True(t, m.Voter)
		}
	}
	table := cli(t, bin, "hive", "list", "--node", cl.Nodes[0].URL())
	for _, n := range cl.Nodes {
		require.Contains(t, table, n.Name)
	}
	var hs struct {
		GossipState string `json:"gossip_state"`
		APIHealthy  bool   `json:"api_healthy"`
	}
	require.NoError(t, json.Unmarshal([]byte(cli(t, bin, "hive", "status", "node3", "-o", "json", "--node", cl.Nodes[0].URL())), &hs))
	require.Equal(t, "alive", hs.GossipState)
	require.True(t, hs.APIHealthy)
	got := cli(t, bin, "hive", "get", "node2", "-o", "json", "--node", cl.Nodes[0].URL())
	require.Contains(t, got, `"name": "node2"`)
	tokOut, tokErr, err := cliRaw(bin, "token", "--node", cl.Nodes[0].URL())
	require.NoError(t, err, tokErr)
	require.Equal(t, cl.Token(), strings.TrimSpace(tokOut), "the token alone on stdout")
	require.Contains(t, tokErr, "rbee node --join ", "the join command on stderr")

	// Bad input: a clear error and a non-zero exit.
	_, errOut, err := cliRaw(bin, "hive", "get", "nosuchhive", "--node", cl.Nodes[0].URL())
	require.Error(t, err)
	require.Contains(t, errOut, "unknown hive")

	// kill -9 the leader: the survivors elect a new one, keep answering, accept writes.
	victim := cl.ByName(leader)
	require.NoError(t, cl.Kill(victim))
	var survivors []*localcluster.Node
	for _, n := range cl.Nodes {
		if n != victim {
			survivors = append(survivors, n)
		}
	}
	var newLeader string
	require.Eventually(t, func() bool {
		st := cliStatus(t, bin, survivors[0])
		newLeader = st.Leader
		return newLeader != "" && newLeader != leader
	}, 60*time.Second, 100*time.Millisecond)
	for _, n := range survivors {
		require.Eventually(t, func() bool { return cliStatus(t, bin, n).Leader == newLeader }, 30*time.Second, 100*time.Millisecond)
	}
	cli(t, bin, "hive", "refresh-capabilities", survivors[1].Name, "--node", survivors[0].URL())

	// The killed node restarts with its data dir and no join flag, and rejoins.
	require.NoError(t, cl.StartNode(ctx, victim, nil))
	require.NoError(t, localcluster.WaitHealthy(ctx, victim))
	_, err = cl.WaitConverged(ctx, 3)
	require.NoError(t, err)
	st := cliStatus(t, bin, victim)
	require.Equal(t, newLeader, st.Leader)

	// A node with another cluster's secret cannot join: non-zero exit, cluster unchanged.
	strangerDir := filepath.Join(dir, "stranger")
	out, err := exec.Command(bin, "node", "--name", "stranger", "--data-dir", strangerDir, "--http-addr", "127.0.0.1:0",
		"--gossip-addr", "127.0.0.1:0", "--p2p-addr", "127.0.0.1:0", "--blob-addr", "127.0.0.1:0", "--no-mdns", "--profile", "local",
		"--token", "rbee_another_clusters_secret_zz", "--join", cl.Nodes[0].GossipAddr).CombinedOutput()
	require.Error(t, err, "stranger joined: %s", out)
	require.Contains(t, string(out), "could not join")
	require.Len(t, cliStatus(t, bin, cl.Nodes[0]).Nodes, 3)

	// Graceful leave through the CLI.
	leaver := survivors[1]
	cli(t, bin, "leave", "--node", leaver.URL())
	require.Eventually(t, func() bool {
		for _, m := range cliStatus(t, bin, survivors[0]).Nodes {
			if m.Name == leaver.Name {
				return m.State == "left" && !m.Voter
			}
		}
		return true
	}, 60*time.Second, 200*time.Millisecond)
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
