package sshops_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/node/jobs"
	"github.com/rbee-project/rbee/node/sshhive/sshdtest"
	"github.com/rbee-project/rbee/node/sshops"
)

// cluster is the node as the SSH operations see it: an inventory in
// memory, and the members and voters each test sets.
type cluster struct {
	mu     sync.Mutex
	hosts  map[string]fsm.Host
	live   map[string]string // name → id
	voters []string
	left   []string
	binary string // what RbeeBinary returns; "" is this test binary
}

func (c *cluster) Host(name string) (fsm.Host, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h, ok := c.hosts[name]
	return h, ok
}

func (c *cluster) Hosts() []fsm.Host {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []fsm.Host
	for _, h := range c.hosts {
		out = append(out, h)
	}
	return out
}

func (c *cluster) PutHost(_ context.Context, h fsm.Host) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hosts[h.Name] = h
	return nil
}

func (c *cluster) LiveMember(name string) (string, bool) {
	id, ok := c.live[name]
	return id, ok
}

func (c *cluster) IsLastVoter(id string) bool { return len(c.voters) == 1 && c.voters[0] == id }

func (c *cluster) Leave(_ context.Context, _ jobs.Emitter, name string) error {
	c.left = append(c.left, name)
	delete(c.live, name)
	return nil
}

func (c *cluster) RbeeBinary(goos, goarch string) (string, error) {
	if c.binary != "" {
		return c.binary, nil
	}
	return os.Executable()
}
func (c *cluster) JoinAddr() string { return "127.0.0.1:1" }

// events records what an operation emits.
type events struct {
	narration []string
	result    json.RawMessage
}

func (e *events) Emit(jobs.Event) {}
func (e *events) Narrate(actor, action, format string, args ...any) {
	e.narration = append(e.narration, fmt.Sprintf(format, args...))
}
func (e *events) Progress(done, total int64, unit string) {}
func (e *events) Result(v any) error {
	b, err := json.Marshal(v)
	e.result = b
	return err
}

func TestSSHOps(t *testing.T) {
	sshd := sshdtest.Start(t)
	home := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(home, ".ssh"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(home, ".ssh", "config"), []byte(fmt.Sprintf(`Host lab-one
  HostName 127.0.0.1
  Port %d
  User %s
  IdentityFile %s
`, sshd.Port, sshd.User, sshd.KeyFile)), 0o600))
	c := &cluster{hosts: map[string]fsm.Host{}, live: map[string]string{}}
	ops := sshops.New(sshops.Config{LocalID: "self", LocalName: "self", Home: home, Secret: "s", Cluster: c})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	var ev events
	require.NoError(t, ops.Import(ctx, &ev, api.ImportSSHRequest{}))
	var imp api.ImportSSHResult
	require.NoError(t, json.Unmarshal(ev.result, &imp))
	require.Len(t, imp.Added, 1)
	h, ok := c.Host("lab-one")
	require.True(t, ok)
	require.Equal(t, fsm.HostKnown, h.State)
	require.Equal(t, sshd.Port, h.Port)

	require.NoError(t, ops.CheckHost(api.OpSSHTest, "lab-one"))
	require.Equal(t, jobs.CodeNotFound, jobs.CodeOf(ops.CheckHost(api.OpSSHTest, "lab-none")))
	require.Equal(t, jobs.CodeBadRequest, jobs.CodeOf(ops.CheckHost(api.OpSSHTest, "")))

	// An unknown host key is refused until accepted, then recorded.
	err := ops.Test(ctx, &events{}, api.SSHTestRequest{Name: "lab-one"})
	require.Equal(t, jobs.CodeForbidden, jobs.CodeOf(err), "%v", err)
	ev = events{}
	require.NoError(t, ops.Test(ctx, &ev, api.SSHTestRequest{Name: "lab-one", AcceptNew: true}))
	var tr api.SSHTestResult
	require.NoError(t, json.Unmarshal(ev.result, &tr))
	require.Equal(t, runtime.GOOS, tr.OS)
	require.Equal(t, runtime.GOARCH, tr.Arch)
	require.NoError(t, ops.Test(ctx, &events{}, api.SSHTestRequest{Name: "lab-one"}), "the key is known now")

	// The cluster's last voter, or the node running the operation, is
	// never uninstalled; a live node is not started twice. None of these
	// reaches the host or changes the inventory.
	before := c.Hosts()
	c.live["lab-one"], c.voters = "peer-1", []string{"peer-1"}
	err = ops.Uninstall(ctx, &events{}, api.HiveUninstallRequest{Name: "lab-one"})
	require.Equal(t, jobs.CodeConflict, jobs.CodeOf(err))
	require.ErrorContains(t, err, "last voter")
	c.live["lab-one"], c.voters = "self", []string{"self", "peer-2"}
	err = ops.Uninstall(ctx, &events{}, api.HiveUninstallRequest{Name: "lab-one"})
	require.Equal(t, jobs.CodeConflict, jobs.CodeOf(err))
	err = ops.Start(ctx, &events{}, api.HiveStartRequest{Name: "lab-one"})
	require.Equal(t, jobs.CodeConflict, jobs.CodeOf(err))
	require.ElementsMatch(t, before, c.Hosts())
	require.Empty(t, c.left)

	// A stop of a live node asks it to leave first, then records it.
	c.live["lab-one"] = "peer-3"
	ev = events{}
	require.NoError(t, ops.Stop(ctx, &ev, api.HiveStopRequest{Name: "lab-one"}))
	require.Equal(t, []string{"lab-one"}, c.left)
	var sr api.HiveStopResult
	require.NoError(t, json.Unmarshal(ev.result, &sr))
	require.True(t, sr.Graceful)
	h, _ = c.Host("lab-one")
	require.Equal(t, fsm.HostStopped, h.State)
}

// TestNarrationAddresses: hosts are narrated as ssh dials them, an IPv6
// address in brackets and the default port filled in (not "u@::1:2222").
func TestNarrationAddresses(t *testing.T) {
	home := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(home, ".ssh"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(home, ".ssh", "config"), []byte(`Host lab6
  HostName ::1
  Port 2222
  User u
Host lab4
  HostName 127.0.0.1
  User u
`), 0o600))
	c := &cluster{hosts: map[string]fsm.Host{}, live: map[string]string{}}
	ops := sshops.New(sshops.Config{LocalID: "self", LocalName: "self", Home: home, Secret: "s", Cluster: c})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var ev events
	require.NoError(t, ops.Import(ctx, &ev, api.ImportSSHRequest{}))
	require.Contains(t, ev.narration, "added lab6 (u@[::1]:2222)")
	require.Contains(t, ev.narration, "added lab4 (u@127.0.0.1:22)")
	ev = events{}
	_ = ops.Test(ctx, &ev, api.SSHTestRequest{Name: "lab6"}) // no server there: only the narration matters
	require.Contains(t, ev.narration, "testing u@[::1]:2222")
}

// sessionPIDs are the sshd processes serving connections (the children of
// the listener, whose pid is in sshd.pid).
func sessionPIDs(t *testing.T, dir string) []int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "sshd.pid"))
	require.NoError(t, err)
	parent := strings.TrimSpace(string(b))
	procs, err := os.ReadDir("/proc")
	require.NoError(t, err)
	var pids []int
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile("/proc/" + p.Name() + "/stat")
		if err != nil {
			continue
		}
		f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+1:]))
		if len(f) > 1 && f[1] == parent {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestCancelStalledUpload: a host that stops reading in the middle of an
// install (its sshd frozen) does not hold the operation for ever: cancelling
// it closes the connection and the operation returns.
func TestCancelStalledUpload(t *testing.T) {
	sshd := sshdtest.Start(t)
	home := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(home, ".ssh"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(home, ".ssh", "config"), []byte(fmt.Sprintf(`Host lab-one
  HostName 127.0.0.1
  Port %d
  User %s
  IdentityFile %s
`, sshd.Port, sshd.User, sshd.KeyFile)), 0o600))
	big := filepath.Join(t.TempDir(), "rbee")
	f, err := os.Create(big)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(256<<20)) // long enough an upload to freeze the host in the middle
	require.NoError(t, f.Close())
	c := &cluster{hosts: map[string]fsm.Host{}, live: map[string]string{}, binary: big}
	ops := sshops.New(sshops.Config{LocalID: "self", LocalName: "self", Home: home, Secret: "s", Cluster: c})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, ops.Import(ctx, &events{}, api.ImportSSHRequest{}))
	require.NoError(t, ops.Test(ctx, &events{}, api.SSHTestRequest{Name: "lab-one", AcceptNew: true}))

	octx, ocancel := context.WithCancel(ctx)
	defer ocancel()
	done := make(chan error, 1)
	go func() { done <- ops.Install(octx, &events{}, api.HiveInstallRequest{Name: "lab-one"}) }()
	require.Eventually(t, func() bool {
		m, _ := filepath.Glob(filepath.Join(sshd.Home, ".local", "bin", "rbee.tmp-*"))
		if len(m) == 0 {
			return false
		}
		st, err := os.Stat(m[0])
		return err == nil && st.Size() > 1<<20
	}, 30*time.Second, 5*time.Millisecond, "the upload did not start")
	pids := sessionPIDs(t, sshd.Dir)
	require.NotEmpty(t, pids)
	for _, pid := range pids {
		require.NoError(t, syscall.Kill(pid, syscall.SIGSTOP))
	}
	t.Cleanup(func() {
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	ocancel()
	select {
	case err := <-done:
		require.Equal(t, jobs.CodeCancelled, jobs.CodeOf(err), "%v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("the install did not return after it was cancelled")
	}
}
