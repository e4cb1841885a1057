package sshhive

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// clusterStatus runs `rbee status` against a node's API.
func clusterStatus(ctx context.Context, bin, httpAddr string) (map[string]string, error) {
	out, err := exec.CommandContext(ctx, bin, "--node", "http://"+httpAddr, "-o", "json", "status").Output()
	if err != nil {
		return nil, err
	}
	var st struct {
		Nodes []struct {
			Name  string `json:"name"`
			State string `json:"state"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, n := range st.Nodes {
		m[n.Name] = n.State
	}
	return m, nil
}

// TestStartJoinsCluster starts a real first node here, then a second one
// through SSH with Start (join address and secret via the token file), and
// sees the second one in the first one's membership.
func TestStartJoinsCluster(t *testing.T) {
	bin := buildRbee(t)
	s := startSSHD(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	dir := t.TempDir()
	secret := "rbee_sshhive_join_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	tok := filepath.Join(dir, "token")
	require.NoError(t, os.WriteFile(tok, []byte(secret+"\n"), 0o600))
	port := func() string { return "127.0.0.1:" + strconv.Itoa(freePort(t)) }
	h1, g1 := port(), port()
	logf, err := os.Create(filepath.Join(dir, "local1.log"))
	require.NoError(t, err)
	defer logf.Close()
	first := exec.Command(bin, "node", "--name", "local1", "--data-dir", filepath.Join(dir, "data"),
		"--http-addr", h1, "--gossip-addr", g1, "--p2p-addr", port(), "--no-mdns", "--profile", "local", "--token-file", tok)
	first.Stdout, first.Stderr = logf, logf
	first.Env = append(os.Environ(), "RBEE_TOKEN=")
	require.NoError(t, first.Start())
	exited := make(chan struct{})
	go func() { _ = first.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = first.Process.Kill()
		<-exited
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("local1 log:\n%s", b)
		}
	})
	require.Eventually(t, func() bool {
		m, err := clusterStatus(ctx, bin, h1)
		return err == nil && m["local1"] != ""
	}, 60*time.Second, 100*time.Millisecond, "first node did not come up")

	c := s.dial(ctx)
	_, err = Install(ctx, c, InstallOptions{LocalBinary: bin, Service: ServiceScript})
	require.NoError(t, err)
	sr, err := Start(ctx, c, StartOptions{
		Name: "remote1", JoinAddrs: []string{g1}, Secret: secret, DataDir: "~/rbee-data",
		HTTPAddr: port(), GossipAddr: port(), P2PAddr: port(),
		ExtraArgs: []string{"--no-mdns", "--profile", "local"},
	})
	require.NoError(t, err)
	killOnCleanup(t, sr.PID)

	var last map[string]string
	require.Eventually(t, func() bool {
		last, _ = clusterStatus(ctx, bin, h1)
		return last["remote1"] == "alive"
	}, 60*time.Second, 100*time.Millisecond, "remote1 did not join: %v", last)

	res, err := Stop(ctx, c, StopOptions{Grace: 20 * time.Second})
	require.NoError(t, err)
	require.True(t, res.WasRunning)
	require.False(t, pidAlive(sr.PID))
}
