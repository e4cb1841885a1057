package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/node/localcluster"
)

// nobody is the uid/gid of the unprivileged user the tests act as.
const nobody = 65534

// asUser runs a command as uid nobody with an empty home and returns its
// stdout, stderr and exit error.
func asUser(bin string, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/nonexistent"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// TestPrivilegeOnANode runs one `rbee node` process and acts against it as
// the node's user and as another local user (nobody): only the node's
// user administers it, without typing a credential; the other user may
// read and run inference but not spawn, download, read secrets or see the
// node's jobs. The secret is on no command line; a node refuses a secret
// file others can read; a trickled request body is cut.
func TestPrivilegeOnANode(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	if runtime.GOOS != "linux" || os.Getuid() != 0 {
		t.Skip("needs root on Linux to act as another user")
	}
	dir := build(t, "rbee", "rbee-worker")
	// The binaries must be executable by nobody.
	pub, err := os.MkdirTemp("", "rbee-e2e-pub-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(pub) })
	require.NoError(t, os.Chmod(pub, 0o755))
	data, err := os.ReadFile(filepath.Join(dir, "rbee"))
	require.NoError(t, err)
	pubBin := filepath.Join(pub, "rbee")
	require.NoError(t, os.WriteFile(pubBin, data, 0o755))
	bin := filepath.Join(dir, "rbee")

	cl, err := localcluster.New(localcluster.Config{Binary: bin, Dir: t.TempDir(), Nodes: 1, Profile: "local",
		ExtraArgs: []string{"--http-body-timeout", "1s"}})
	require.NoError(t, err)
	t.Cleanup(func() {
		cl.Close()
		if t.Failed() {
			b, _ := os.ReadFile(cl.Nodes[0].LogPath)
			t.Logf("==== node log (tail)\n%s", tail(string(b), 4000))
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	require.NoError(t, cl.Start(ctx))
	_, err = cl.WaitConverged(ctx, 1)
	require.NoError(t, err)
	n := cl.Nodes[0]

	// The cluster secret is on no process's command line.
	pid := n.PID()
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	require.NoError(t, err)
	require.NotContains(t, string(cmdline), cl.Token())

	// The node's user administers it with no credential typed: the CLI
	// finds the admin key in the data dir the node names.
	out := cli(t, bin, "--node", n.URL(), "worker", "spawn", "--model", "builtin:stories260k", "--threads", "1")
	require.Contains(t, out, "ready")
	out = cli(t, bin, "--node", n.URL(), "token", "--data-dir", n.DataDir, "-o", "json")
	require.Contains(t, out, cl.Token())
	require.Contains(t, out, "RBEE_CLUSTER_TOKEN=")
	require.NotContains(t, out, "--token")

	// Another user: reads and inference work...
	stdout, stderr, err := asUser(pubBin, "--node", n.URL(), "status", "-o", "json")
	require.NoError(t, err, stderr)
	require.Contains(t, stdout, "node1")
	stdout, stderr, err = asUser(pubBin, "--node", n.URL(), "infer", "--model", "stories260k", "--max-tokens", "4", "Once")
	require.NoError(t, err, stderr)
	require.NotEmpty(t, stdout)
	// ...administration does not, and nothing runs.
	for _, args := range [][]string{
		{"worker", "spawn", "--model", "builtin:stories260k"},
		{"model", "download", "builtin:stories260k"},
		{"leave"},
	} {
		_, stderr, err := asUser(pubBin, append([]string{"--node", n.URL()}, args...)...)
		require.Error(t, err, "%v ran as nobody", args)
		require.Contains(t, stderr, "admin", "%v: %s", args, stderr)
	}
	_, stderr, err = asUser(pubBin, "--node", n.URL(), "token", "--data-dir", n.DataDir)
	require.Error(t, err, "nobody read the cluster secret")
	_, _, err = asUser(pubBin, "--node", n.URL(), "token", "--admin", "--data-dir", n.DataDir)
	require.Error(t, err, "nobody read the admin key")
	// curl without a credential, and with the cluster secret: no spawn.
	for _, hdr := range []string{"X-None: 1", "Authorization: Bearer " + cl.Token()} {
		code, _, err := asUser("/usr/bin/curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H", hdr,
			"--json", `{"operation":"worker_spawn","model":"builtin:stories260k"}`, n.URL()+"/v1/jobs")
		require.NoError(t, err)
		require.Equal(t, "403", code)
	}
	// What a website can make the machine's browser send: a foreign Host
	// (DNS rebinding), a foreign Origin, a text/plain post. Each is refused
	// even with the admin key, and no job runs.
	admin := strings.TrimSpace(cli(t, bin, "--node", n.URL(), "token", "--admin"))
	port := n.HTTPAddr[strings.LastIndex(n.HTTPAddr, ":")+1:]
	listJobs := func() string {
		out, err := exec.Command("curl", "-sS", "-H", "Authorization: Bearer "+admin, n.URL()+"/v1/jobs").Output()
		require.NoError(t, err)
		return string(out)
	}
	before := strings.Count(listJobs(), "job_id")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-H", "Host: evil.example:" + port, "--json", `{"operation":"status"}`}, "403"},
		{[]string{"-H", "Origin: https://evil.example", "--json", `{"operation":"status"}`}, "403"},
		{[]string{"-H", "Content-Type: text/plain", "--data", `{"operation":"status"}`}, "415"},
	} {
		args := append([]string{"-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Authorization: Bearer " + admin}, tc.args...)
		out, err := exec.Command("curl", append(args, n.URL()+"/v1/jobs")...).Output()
		require.NoError(t, err)
		require.Equal(t, tc.want, string(out), "%v", tc.args)
	}
	require.Equal(t, before, strings.Count(listJobs(), "job_id"), "a refused request ran a job")

	// nobody does not see the node user's jobs (the spawn above).
	jobsOut, _, err := asUser("/usr/bin/curl", "-sS", n.URL()+"/v1/jobs")
	require.NoError(t, err)
	require.NotContains(t, jobsOut, "worker_spawn")
	require.Contains(t, cli(t, bin, "--node", n.URL(), "worker", "list"), "stories260k")

	// A trickled body is cut after --http-body-timeout.
	conn, err := net.Dial("tcp", n.HTTPAddr)
	require.NoError(t, err)
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 4096\r\n\r\n{")
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(conn)
	if resp, err := http.ReadResponse(br, nil); err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
	}
	_, rerr := br.ReadByte()
	require.ErrorIs(t, rerr, io.EOF, "the connection of a trickled body is still open")

	// A node whose secret file others can read refuses to start (with
	// the node stopped: a second node on a data dir in use is refused
	// before it reads the secret).
	require.NoError(t, cl.Stop(n))
	require.NoError(t, os.Chmod(filepath.Join(n.DataDir, "cluster.secret"), 0o644))
	cmd := exec.Command(bin, "node", "--data-dir", n.DataDir, "--http-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0",
		"--p2p-addr", "127.0.0.1:0", "--blob-addr", "127.0.0.1:0", "--no-mdns", "--profile", "local")
	cmd.Env = append(os.Environ(), "RBEE_NODE=", "RBEE_TOKEN=", "RBEE_CLUSTER_TOKEN=")
	outb, err := cmd.CombinedOutput()
	require.Error(t, err)
	require.Contains(t, string(outb), "0600")
}

// TestOneBinaryServes: a machine with only the rbee binary (no rbee-worker,
// no source tree, no release location) spawns a cpu worker and serves: the
// node catalogs its own executable as the worker.
func TestOneBinaryServes(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	dir := build(t, "rbee")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "only rbee is installed")
	bin := filepath.Join(dir, "rbee")
	cl, err := localcluster.New(localcluster.Config{Binary: bin, Dir: t.TempDir(), Nodes: 1, Profile: "local"})
	require.NoError(t, err)
	t.Cleanup(func() {
		cl.Close()
		if t.Failed() {
			b, _ := os.ReadFile(cl.Nodes[0].LogPath)
			t.Logf("==== node log (tail)\n%s", tail(string(b), 4000))
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	require.NoError(t, cl.Start(ctx))
	_, err = cl.WaitConverged(ctx, 1)
	require.NoError(t, err)
	n := cl.Nodes[0]
	// No rbee-worker next to rbee and no release location: the node serves
	// with its own executable.
	out := cli(t, bin, "--node", n.URL(), "worker", "spawn", "--model", "builtin:stories260k", "--threads", "1")
	require.Contains(t, out, "ready")
	out = cli(t, bin, "--node", n.URL(), "worker", "binary", "list", "-o", "json")
	require.Contains(t, out, "rbee-worker")
	text := cli(t, bin, "--node", n.URL(), "infer", "--model", "stories260k", "--max-tokens", "8", "Once upon a time")
	require.NotEmpty(t, strings.TrimSpace(text))
}
