package node_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/node"
	"github.com/rbee-project/rbee/node/nodetest"
	"github.com/rbee-project/rbee/node/sshhive/sshdtest"
)

var (
	rbeeOnce sync.Once
	rbeeBin  string
	rbeeErr  error
)

func buildRbee(t *testing.T) string {
	t.Helper()
	rbeeOnce.Do(func() {
		dir, err := os.MkdirTemp("", "rbee-bin-")
		if err != nil {
			rbeeErr = err
			return
		}
		rbeeBin = filepath.Join(dir, "rbee")
		_, file, _, _ := runtime.Caller(0)
		cmd := exec.Command("go", "build", "-o", rbeeBin, "./cmd/rbee")
		cmd.Dir = filepath.Dir(filepath.Dir(file))
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			rbeeErr = fmt.Errorf("build rbee: %v\n%s", err, out)
		}
	})
	require.NoError(t, rbeeErr)
	return rbeeBin
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}

func TestSSHHiveLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("runs sshd and a second node")
	}
	sshd := sshdtest.Start(t)
	bin := buildRbee(t)

	home := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(home, ".ssh"), 0o700))
	wrongKey := filepath.Join(home, ".ssh", "wrong_key")
	sshdtest.WriteKey(t, wrongKey)
	closed := freeAddr(t)
	_, closedPort, _ := net.SplitHostPort(closed)
	require.NoError(t, os.WriteFile(filepath.Join(home, ".ssh", "lab.conf"), []byte(fmt.Sprintf(`Host lab-down
  HostName 127.0.0.1
  Port %s
  IdentityFile %s
`, closedPort, sshd.KeyFile)), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(home, ".ssh", "config"), []byte(fmt.Sprintf(`Include lab.conf
Host lab-one
  HostName 127.0.0.1
  IdentityFile %[3]s
Host lab-bad
  HostName 127.0.0.1
  IdentityFile %[4]s
Host lab-*
  User %[1]s
  Port %[2]d
`, sshd.User, sshd.Port, sshd.KeyFile, wrongKey)), 0o600))

	c := nodetest.New(t, 1, func(i int, cfg *node.Config) {
		cfg.SSHHome = home
		cfg.RbeeBinary = bin
	})
	n0 := c.Nodes[0]
	hosts := func() []fsm.Host { return n0.Registry().Hosts() }

	var imp struct {
		Added []fsm.Host `json:"Added"`
	}
	run(t, n0, map[string]any{"operation": "hive_import_ssh"}, &imp)
	require.Eventually(t, func() bool { return len(hosts()) == 3 }, 10*time.Second, 20*time.Millisecond)
	one, ok := n0.Registry().Host("lab-one")
	require.True(t, ok)
	require.Equal(t, sshd.Port, one.Port)
	require.Equal(t, fsm.HostKnown, one.State)

	before := hosts()
	// An unknown host key, a wrong key, an unreachable host: clear errors,
	// the inventory as it was.
	je := runErr(t, n0, map[string]any{"operation": "ssh_test", "name": "lab-one"})
	require.Equal(t, "forbidden", je.Code)
	require.Contains(t, je.Message, "accept-new")
	je = runErr(t, n0, map[string]any{"operation": "ssh_test", "name": "lab-one", "accept_new": false})
	require.Equal(t, "forbidden", je.Code)
	var tr struct {
		OS   string `json:"os"`
		Arch string `json:"arch"`
	}
	run(t, n0, map[string]any{"operation": "ssh_test", "name": "lab-one", "accept_new": true}, &tr)
	require.Equal(t, runtime.GOOS, tr.OS)
	require.Equal(t, runtime.GOARCH, tr.Arch)
	je = runErr(t, n0, map[string]any{"operation": "ssh_test", "name": "lab-bad"})
	require.Equal(t, "forbidden", je.Code)
	je = runErr(t, n0, map[string]any{"operation": "ssh_test", "name": "lab-down"})
	require.Equal(t, "unavailable", je.Code)
	je = runErr(t, n0, map[string]any{"operation": "ssh_test", "name": "lab-none"})
	require.Equal(t, "not_found", je.Code)
	// A failing remote command (the install path cannot be created).
	je = runErr(t, n0, map[string]any{"operation": "hive_install", "name": "lab-one", "path": "/proc/rbee-cannot/rbee"})
	require.NotEmpty(t, je.Message)
	require.Equal(t, before, hosts(), "failed operations changed the inventory")

	// Install, start a node there that joins, stop it, uninstall.
	run(t, n0, map[string]any{"operation": "hive_install", "name": "lab-one"}, nil)
	one, _ = n0.Registry().Host("lab-one")
	require.Equal(t, fsm.HostInstalled, one.State)
	require.FileExists(t, filepath.Join(sshd.Home, ".local", "bin", "rbee"))

	dataDir := filepath.Join(t.TempDir(), "lab-one-data")
	start := map[string]any{"operation": "hive_start", "name": "lab-one", "data_dir": dataDir,
		"http_addr": freeAddr(t), "gossip_addr": freeAddr(t), "p2p_addr": freeAddr(t), "node_args": []string{"--no-mdns", "--profile", "local"}}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = runQuiet(ctx, n0, map[string]any{"operation": "hive_stop", "name": "lab-one"})
	})
	run(t, n0, start, nil)
	one, _ = n0.Registry().Host("lab-one")
	require.Equal(t, fsm.HostRunning, one.State)
	st := status(t, n0)
	found := false
	for _, h := range st.Nodes {
		if h.Name == "lab-one" {
			found = h.State == "alive"
		}
	}
	require.True(t, found, "the node started over SSH is a live member")
	// A second start is refused.
	je = runErr(t, n0, start)
	require.Equal(t, "conflict", je.Code)

	var stop struct {
		Graceful bool `json:"graceful"`
	}
	run(t, n0, map[string]any{"operation": "hive_stop", "name": "lab-one"}, &stop)
	require.True(t, stop.Graceful)
	one, _ = n0.Registry().Host("lab-one")
	require.Equal(t, fsm.HostStopped, one.State)
	require.Eventually(t, func() bool {
		servers, err := n0.Consensus().Servers()
		return err == nil && len(servers) == 1
	}, nodetest.WaitTimeout, 50*time.Millisecond, "the stopped node left the raft configuration")

	run(t, n0, map[string]any{"operation": "hive_uninstall", "name": "lab-one", "purge": true, "data_dir": dataDir}, nil)
	require.NoFileExists(t, filepath.Join(sshd.Home, ".local", "bin", "rbee"))
	require.NoDirExists(t, dataDir)
	one, _ = n0.Registry().Host("lab-one")
	require.Equal(t, fsm.HostKnown, one.State)
}
