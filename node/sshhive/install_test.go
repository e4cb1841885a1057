package sshhive

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// killOnCleanup makes sure a node a failing test started does not outlive
// it: SIGKILL to that pid only, if it still runs.
func killOnCleanup(t *testing.T, pid int) {
	t.Cleanup(func() {
		if pid > 1 && pidAlive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
}

func requireMissing(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		_, err := os.Stat(p)
		require.ErrorIs(t, err, os.ErrNotExist, p)
	}
}

func requireMode(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	st, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, mode, st.Mode().Perm(), path)
}

// TestLifecycle installs the real rbee binary through a real sshd, starts a
// real node (secret over SFTP, --token-file), stops it, uninstalls it, and
// purges its data dir. The remote $HOME is the test's temp dir.
func TestLifecycle(t *testing.T) {
	bin := buildRbee(t)
	s := startSSHD(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c := s.dial(ctx)

	binPath := filepath.Join(s.home, ".local", "bin", "rbee")
	stateDir := filepath.Join(s.home, ".local", "share", "rbee")
	dataDir := filepath.Join(s.home, "rbee-data")

	_, err := Start(ctx, c, StartOptions{})
	require.ErrorIs(t, err, ErrNotInstalled)
	_, err = Stop(ctx, c, StopOptions{})
	require.ErrorIs(t, err, ErrNotInstalled)
	st, err := GetStatus(ctx, c, Layout{})
	require.NoError(t, err)
	require.False(t, st.Installed)

	ir, err := Install(ctx, c, InstallOptions{LocalBinary: bin, Service: ServiceScript})
	require.NoError(t, err)
	require.Equal(t, binPath, ir.BinaryPath)
	require.Contains(t, ir.Version, testVersion)
	require.Equal(t, ServiceScript, ir.Service)
	require.Equal(t, filepath.Join(stateDir, startScriptName), ir.ServiceFile)
	want, err := os.ReadFile(bin)
	require.NoError(t, err)
	got, err := os.ReadFile(binPath)
	require.NoError(t, err)
	require.True(t, bytes.Equal(want, got), "installed binary differs")
	requireMode(t, binPath, 0o755)
	requireMode(t, stateDir, 0o700)
	entries, err := os.ReadDir(filepath.Dir(binPath))
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temporary upload left behind")

	tr, err := Test(ctx, s.trustedTarget(), "")
	require.NoError(t, err)
	require.Contains(t, tr.RbeeVersion, testVersion)

	// Bad flags: the node exits at once and Start says why.
	// A long Settle costs nothing here: Start returns as soon as it exits.
	_, err = Start(ctx, c, StartOptions{DataDir: "~/rbee-data", ExtraArgs: []string{"--log-format", "bogus"}, Settle: 30 * time.Second})
	require.ErrorIs(t, err, ErrNotRunning)
	require.Contains(t, err.Error(), "--log-format must be text or json")
	// The token never goes on a command line.
	_, err = Start(ctx, c, StartOptions{ExtraArgs: []string{"--token=x"}})
	require.ErrorIs(t, err, ErrInvalid)

	secret := "rbee_sshhive_test_secret_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	port := func() string { return "127.0.0.1:" + strconv.Itoa(freePort(t)) }
	sr, err := Start(ctx, c, StartOptions{
		Name: "remote1", Secret: secret, DataDir: "~/rbee-data",
		HTTPAddr: port(), GossipAddr: port(), P2PAddr: port(),
		ExtraArgs: []string{"--no-mdns", "--profile", "local"},
	})
	require.NoError(t, err)
	killOnCleanup(t, sr.PID)
	require.Equal(t, ServiceScript, sr.Service)
	require.True(t, pidAlive(sr.PID))

	// The pid file names the node process itself, which got the secret
	// from the 0600 file and not from its command line.
	pidb, err := os.ReadFile(filepath.Join(stateDir, pidFileName))
	require.NoError(t, err)
	require.Equal(t, strconv.Itoa(sr.PID), strings.TrimSpace(string(pidb)))
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", sr.PID))
	require.NoError(t, err)
	require.Contains(t, string(cmdline), binPath+"\x00node\x00")
	require.Contains(t, string(cmdline), "--token-file")
	require.NotContains(t, string(cmdline), secret)
	tokenPath := filepath.Join(stateDir, tokenFileName)
	requireMode(t, tokenPath, 0o600)
	// The node adopted the secret as its cluster secret and came up.
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(filepath.Join(dataDir, "cluster.secret"))
		return err == nil && strings.TrimSpace(string(b)) == secret
	}, 30*time.Second, 50*time.Millisecond)
	logPath := filepath.Join(stateDir, logFileName)
	require.Eventually(t, func() bool {
		b, _ := os.ReadFile(logPath)
		return bytes.Contains(b, []byte(`rbee node "remote1"`)) && bytes.Contains(b, []byte("is up"))
	}, 30*time.Second, 50*time.Millisecond)

	st, err = GetStatus(ctx, c, Layout{})
	require.NoError(t, err)
	require.Equal(t, Status{Installed: true, Service: ServiceScript, Running: true, PID: sr.PID}, st)
	_, err = Start(ctx, c, StartOptions{})
	require.ErrorIs(t, err, ErrAlreadyRunning)

	res, err := Stop(ctx, c, StopOptions{Grace: 20 * time.Second})
	require.NoError(t, err)
	require.Equal(t, StopResult{WasRunning: true, PID: sr.PID}, res, "SIGTERM was enough")
	require.False(t, pidAlive(sr.PID))
	requireMissing(t, filepath.Join(stateDir, pidFileName))
	res, err = Stop(ctx, c, StopOptions{})
	require.NoError(t, err)
	require.False(t, res.WasRunning)

	// Uninstall keeps the data dir; removes exactly what Install and Start wrote.
	ur, err := Uninstall(ctx, c, UninstallOptions{DataDir: "~/rbee-data"})
	require.NoError(t, err)
	requireMissing(t, binPath, stateDir)
	require.Contains(t, ur.Removed, binPath)
	require.Contains(t, ur.Removed, tokenPath)
	require.FileExists(t, filepath.Join(dataDir, "cluster.secret"))
	ur, err = Uninstall(ctx, c, UninstallOptions{})
	require.NoError(t, err, "uninstalling twice is fine")
	require.Empty(t, ur.Removed)

	// Purge refuses the home dir, then removes the data dir.
	_, err = Install(ctx, c, InstallOptions{LocalBinary: bin, Service: ServiceScript})
	require.NoError(t, err)
	_, err = Uninstall(ctx, c, UninstallOptions{Purge: true, DataDir: "~"})
	require.ErrorIs(t, err, ErrInvalid)
	require.FileExists(t, binPath, "a refused purge removes nothing")
	ur, err = Uninstall(ctx, c, UninstallOptions{Purge: true, DataDir: "~/rbee-data"})
	require.NoError(t, err)
	require.Contains(t, ur.Removed, dataDir)
	requireMissing(t, binPath, stateDir, dataDir)
	entries, err = os.ReadDir(s.home)
	require.NoError(t, err)
	var left []string
	for _, e := range entries {
		left = append(left, e.Name())
	}
	require.ElementsMatch(t, []string{".local"}, left, "nothing else left in the remote home")
}

// fakeNode is a stand-in "rbee" that ignores SIGTERM, to exercise Stop's
// SIGKILL escalation (a real node exits on SIGTERM).
const fakeNode = `#!/bin/sh
if [ "$1" = --version ]; then echo "rbee version stubborn"; exit 0; fi
trap '' TERM
while :; do sleep 1; done
`

func TestStopEscalatesToKill(t *testing.T) {
	s := startSSHD(t)
	ctx := testCtx(t)
	c := s.dial(ctx)
	local := filepath.Join(t.TempDir(), "rbee")
	require.NoError(t, os.WriteFile(local, []byte(fakeNode), 0o755))
	l := Layout{BinaryPath: "~/stubborn/rbee", StateDir: "~/stubborn/state"}

	ir, err := Install(ctx, c, InstallOptions{Layout: l, LocalBinary: local, Service: ServiceScript})
	require.NoError(t, err)
	require.Equal(t, "rbee version stubborn", ir.Version)
	sr, err := Start(ctx, c, StartOptions{Layout: l, Settle: 50 * time.Millisecond})
	require.NoError(t, err)
	killOnCleanup(t, sr.PID)
	require.True(t, pidAlive(sr.PID))

	res, err := Stop(ctx, c, StopOptions{Layout: l, Grace: 300 * time.Millisecond})
	require.NoError(t, err)
	require.Equal(t, StopResult{WasRunning: true, PID: sr.PID, Killed: true}, res)
	require.False(t, pidAlive(sr.PID))
}

// TestStopLeavesForeignPID: a pid file pointing at a process that is not
// this rbee (a reused pid) is never signalled.
func TestStopLeavesForeignPID(t *testing.T) {
	s := startSSHD(t)
	ctx := testCtx(t)
	c := s.dial(ctx)
	local := filepath.Join(t.TempDir(), "rbee")
	require.NoError(t, os.WriteFile(local, []byte(fakeNode), 0o755))
	_, err := Install(ctx, c, InstallOptions{LocalBinary: local, Service: ServiceScript})
	require.NoError(t, err)

	// This test process stands in for the unrelated process.
	pidFile := filepath.Join(s.home, ".local", "share", "rbee", pidFileName)
	require.NoError(t, os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600))
	res, err := Stop(ctx, c, StopOptions{Grace: 100 * time.Millisecond})
	require.NoError(t, err)
	require.False(t, res.WasRunning)
	require.True(t, pidAlive(os.Getpid()))
	requireMissing(t, pidFile)
}

// TestOtherClusterLeftAlone: a node that another cluster started on the
// host (its join token holds another secret) is neither stopped,
// reinstalled nor uninstalled by this cluster.
func TestOtherClusterLeftAlone(t *testing.T) {
	s := startSSHD(t)
	ctx := testCtx(t)
	c := s.dial(ctx)
	local := filepath.Join(t.TempDir(), "rbee")
	require.NoError(t, os.WriteFile(local, []byte(fakeNode), 0o755))
	ir, err := Install(ctx, c, InstallOptions{LocalBinary: local, Service: ServiceScript})
	require.NoError(t, err)
	sr, err := Start(ctx, c, StartOptions{Secret: "their-secret", Settle: 50 * time.Millisecond})
	require.NoError(t, err)
	killOnCleanup(t, sr.PID)

	for _, op := range []struct {
		name string
		run  func() error
	}{
		{"stop", func() error {
			_, err := Stop(ctx, c, StopOptions{Secret: "our-secret", Grace: 100 * time.Millisecond})
			return err
		}},
		{"start", func() error {
			_, err := Start(ctx, c, StartOptions{Secret: "our-secret", Settle: 50 * time.Millisecond})
			return err
		}},
		{"install", func() error {
			ours := filepath.Join(t.TempDir(), "rbee")
			require.NoError(t, os.WriteFile(ours, []byte(fakeNode+"# ours\n"), 0o755))
			_, err := Install(ctx, c, InstallOptions{LocalBinary: ours, Service: ServiceScript, Secret: "our-secret"})
			return err
		}},
		{"uninstall --purge", func() error {
			_, err := Uninstall(ctx, c, UninstallOptions{Purge: true, DataDir: "~/their-data",
				Stop: StopOptions{Secret: "our-secret", Grace: 100 * time.Millisecond}})
			return err
		}},
	} {
		err := op.run()
		require.ErrorIs(t, err, ErrOtherCluster, op.name)
		require.True(t, pidAlive(sr.PID), "%s stopped another cluster's node", op.name)
		got, err := os.ReadFile(ir.BinaryPath)
		require.NoError(t, err, op.name)
		require.Equal(t, fakeNode, string(got), op.name)
	}

	res, err := Stop(ctx, c, StopOptions{Secret: "their-secret", Grace: 100 * time.Millisecond})
	require.NoError(t, err, "the cluster that started it stops it")
	require.True(t, res.WasRunning)
	require.False(t, pidAlive(sr.PID))
}

// TestPurgeRefusesForeignDir: --purge of a directory that is not an rbee
// data dir (a mistyped --remote-data-dir) removes nothing at all.
func TestPurgeRefusesForeignDir(t *testing.T) {
	s := startSSHD(t)
	ctx := testCtx(t)
	c := s.dial(ctx)
	local := filepath.Join(t.TempDir(), "rbee")
	require.NoError(t, os.WriteFile(local, []byte(fakeNode), 0o755))
	ir, err := Install(ctx, c, InstallOptions{LocalBinary: local, Service: ServiceScript})
	require.NoError(t, err)
	work := filepath.Join(s.home, "projects", "thesis.tex")
	require.NoError(t, os.MkdirAll(filepath.Dir(work), 0o755))
	require.NoError(t, os.WriteFile(work, []byte("years of work"), 0o644))

	_, err = Uninstall(ctx, c, UninstallOptions{Purge: true, DataDir: "~/projects"})
	require.ErrorIs(t, err, ErrInvalid)
	require.Contains(t, err.Error(), "not an rbee data dir")
	require.FileExists(t, work)
	require.FileExists(t, ir.BinaryPath, "a refused purge removes nothing")

	data := filepath.Join(s.home, "rbee-data")
	require.NoError(t, os.MkdirAll(data, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(data, "node.key"), []byte("k"), 0o600))
	ur, err := Uninstall(ctx, c, UninstallOptions{Purge: true, DataDir: "~/rbee-data"})
	require.NoError(t, err)
	require.Contains(t, ur.Removed, data)
	requireMissing(t, data, ir.BinaryPath)
	require.FileExists(t, work)
}

// TestUpgradeKeepsStartedArgs: hive install over a started host (an
// upgrade) keeps the node's command line that Start wrote, so a restart
// (systemd, a reboot) runs it as started, and uninstall --purge still
// finds its data dir.
func TestUpgradeKeepsStartedArgs(t *testing.T) {
	s := startSSHD(t)
	ctx := testCtx(t)
	c := s.dial(ctx)
	local := filepath.Join(t.TempDir(), "rbee")
	require.NoError(t, os.WriteFile(local, []byte(fakeNode), 0o755))
	_, err := Install(ctx, c, InstallOptions{LocalBinary: local, Service: ServiceScript})
	require.NoError(t, err)
	sr, err := Start(ctx, c, StartOptions{Name: "lab1", JoinAddrs: []string{"10.0.0.1:7834"}, Secret: "s3cret", DataDir: "~/d1",
		Settle: 50 * time.Millisecond})
	require.NoError(t, err)
	killOnCleanup(t, sr.PID)
	runPath := filepath.Join(s.home, ".local", "share", "rbee", runScriptName)
	started, err := os.ReadFile(runPath)
	require.NoError(t, err)
	require.Contains(t, string(started), "--data-dir "+filepath.Join(s.home, "d1"))

	_, err = Install(ctx, c, InstallOptions{LocalBinary: local, Service: ServiceScript})
	require.NoError(t, err)
	upgraded, err := os.ReadFile(runPath)
	require.NoError(t, err)
	require.Equal(t, string(started), string(upgraded), "the upgrade rewrote the node's command line")

	_, err = Stop(ctx, c, StopOptions{Grace: 100 * time.Millisecond})
	require.NoError(t, err)
	data := filepath.Join(s.home, "d1")
	require.NoError(t, os.MkdirAll(data, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(data, "node.key"), []byte("k"), 0o600))
	ur, err := Uninstall(ctx, c, UninstallOptions{Purge: true})
	require.NoError(t, err)
	require.Contains(t, ur.Removed, data)
}

func TestServiceAutoDetect(t *testing.T) {
	s := startSSHD(t)
	ctx := testCtx(t)
	c := s.dial(ctx)
	local := filepath.Join(t.TempDir(), "rbee")
	require.NoError(t, os.WriteFile(local, []byte(fakeNode), 0o755))
	_, probeErr := c.Run(ctx, "systemctl --user show-environment")
	ir, err := Install(ctx, c, InstallOptions{LocalBinary: local})
	require.NoError(t, err)
	if probeErr == nil {
		require.Equal(t, ServiceSystemd, ir.Service, "a user manager answers there")
		_, err = Uninstall(ctx, c, UninstallOptions{})
		require.NoError(t, err)
		return
	}
	require.Equal(t, ServiceScript, ir.Service, "no systemd user manager there: %v", probeErr)
}

func TestGeneratedFiles(t *testing.T) {
	p := paths{home: "/home/u", binary: "/home/u/.local/bin/rbee", stateDir: "/home/u/.local/share/rbee",
		runScript: "/home/u/.local/share/rbee/rbee-node.sh", pidFile: "/home/u/.local/share/rbee/rbee.pid",
		logFile: "/home/u/.local/share/rbee/rbee.log", tokenFile: "/home/u/.local/share/rbee/join.token",
		unit: "/home/u/.config/systemd/user/rbee.service", service: "rbee"}
	args, err := StartOptions{Name: "it's", JoinAddrs: []string{"10.0.0.1:7834", "10.0.0.2:7834"}, Secret: "s3cr3t",
		DataDir: "~/d"}.args(p)
	require.NoError(t, err)
	require.Equal(t, []string{"--name", "it's", "--join", "10.0.0.1:7834", "--join", "10.0.0.2:7834",
		"--token-file", p.tokenFile, "--data-dir", "/home/u/d"}, args)
	rs := runScript(p, args)
	require.Contains(t, rs, `exec /home/u/.local/bin/rbee node --name 'it'\''s' --join 10.0.0.1:7834`)
	require.NotContains(t, rs, "s3cr3t")

	unit := systemdUnit(paths{runScript: "/home/a b/100%/run.sh"})
	require.Contains(t, unit, `ExecStart=/bin/sh "/home/a b/100%%/run.sh"`)
	// systemd substitutes ${VAR} and $VAR even inside quotes: $$ is a $.
	unit = systemdUnit(paths{runScript: "/home/u/${HOME}/$(x)/run.sh"})
	require.Contains(t, unit, `ExecStart=/bin/sh "/home/u/$${HOME}/$$(x)/run.sh"`)
	require.Contains(t, unit, "WantedBy=default.target")

	_, err = StartOptions{ExtraArgs: []string{"--token", "x"}}.args(p)
	require.ErrorIs(t, err, ErrInvalid)
	_, err = StartOptions{DataDir: "relative"}.args(p)
	require.ErrorIs(t, err, ErrInvalid)
}

// TestSplitWordsReadsRunScript: the run script's words come back as
// runScript quoted them, so uninstall finds the data dir start used.
func TestSplitWordsReadsRunScript(t *testing.T) {
	args := []string{"--name", "it's", "--data-dir", "/tmp/a dir/it's", "--join", "10.0.0.1:7834"}
	script := runScript(paths{binary: "/home/u/my bin/rbee", pidFile: "/p"}, args)
	var exec string
	for _, l := range strings.Split(script, "\n") {
		if strings.HasPrefix(l, "exec ") {
			exec = l
		}
	}
	require.Equal(t, append([]string{"exec", "/home/u/my bin/rbee", "node"}, args...), splitWords(exec))
}
