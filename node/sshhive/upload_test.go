package sshhive

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"github.com/stretchr/testify/require"
)

// stallingReader gives n bytes, blocks until release is closed, then gives
// bytes without end.
type stallingReader struct {
	n       int
	release chan struct{}
}

func (r *stallingReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		<-r.release
		clear(p)
		return len(p), nil
	}
	k := min(len(p), r.n)
	clear(p[:k])
	r.n -= k
	return k, nil
}

// killSessions kills sshd's session processes (its children), as a dropped
// connection or a rebooting host would end them; the listener stays.
func killSessions(t *testing.T, s *sshd) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.dir, "sshd.pid"))
	require.NoError(t, err)
	main := strings.TrimSpace(string(b))
	procs, err := os.ReadDir("/proc")
	require.NoError(t, err)
	killed := 0
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile("/proc/" + p.Name() + "/stat")
		if err != nil {
			continue
		}
		f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+1:]))
		if len(f) > 1 && f[1] == main {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			killed++
		}
	}
	require.Positive(t, killed, "no sshd session to kill")
}

// TestInterruptedUpload: a copy cut off half-way (the SSH session dies) is
// never executable, and the retry installs the binary and leaves no
// temporary copy behind.
func TestInterruptedUpload(t *testing.T) {
	bin := buildRbee(t)
	s := startSSHD(t)
	ctx := testCtx(t)
	c := s.dial(ctx)
	sc, err := c.SFTP()
	require.NoError(t, err)
	binDir := filepath.Join(s.home, ".local", "bin")
	require.NoError(t, os.MkdirAll(binDir, 0o755))
	dst := filepath.Join(binDir, "rbee")

	r := &stallingReader{n: 1 << 20, release: make(chan struct{})}
	done := make(chan error, 1)
	go func() { done <- putFile(ctx, sc, dst, r, 0o755, nil) }()
	var tmp string
	require.Eventually(t, func() bool {
		m, _ := filepath.Glob(dst + tmpInfix + "*")
		if len(m) != 1 {
			return false
		}
		st, err := os.Stat(m[0])
		tmp = m[0]
		return err == nil && st.Size() == 1<<20
	}, 20*time.Second, 10*time.Millisecond, "the upload did not start")
	st, err := os.Stat(tmp)
	require.NoError(t, err)
	require.Zero(t, st.Mode().Perm()&0o111, "a partial upload is executable: %v", st.Mode())

	killSessions(t, s)
	close(r.release)
	select {
	case err := <-done:
		require.ErrorIs(t, err, ErrUnreachable)
		require.Contains(t, err.Error(), "connection was lost")
	case <-time.After(30 * time.Second):
		t.Fatal("putFile did not return after its session died")
	}
	requireMissing(t, dst)
	st, err = os.Stat(tmp)
	require.NoError(t, err, "the dead session could not remove its temporary file")
	require.Zero(t, st.Mode().Perm()&0o111, "a partial upload is executable: %v", st.Mode())

	// An upload in progress (another install) is left alone; a leftover
	// that has not been written for a while is swept by the next upload.
	c2 := s.dial(ctx)
	sc2, err := c2.SFTP()
	require.NoError(t, err)
	require.NoError(t, putFile(ctx, sc2, dst, strings.NewReader("x"), 0o755, nil))
	require.FileExists(t, tmp, "a recent temporary file may be another upload's")
	old := time.Now().Add(-2 * staleTempAge)
	require.NoError(t, os.Chtimes(tmp, old, old))
	ir, err := Install(ctx, c2, InstallOptions{LocalBinary: bin, Service: ServiceScript})
	require.NoError(t, err)
	require.Contains(t, ir.Version, testVersion)
	entries, err := os.ReadDir(binDir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "leftover temporary files: %v", entries)
	requireMode(t, dst, 0o755)

	// Uninstall removes a recent leftover too.
	require.NoError(t, os.WriteFile(dst+tmpInfix+"0123456789ab", []byte("partial"), 0o600))
	_, err = Uninstall(ctx, c2, UninstallOptions{})
	require.NoError(t, err)
	entries, err = os.ReadDir(binDir)
	require.NoError(t, err)
	require.Empty(t, entries)
}

// TestUploadChecks: an upload whose local file changed while it was read,
// or whose remote copy differs from the bytes sent, is refused and the
// installed file stays as it was.
func TestUploadChecks(t *testing.T) {
	s := startSSHD(t)
	ctx := testCtx(t)
	c := s.dial(ctx)
	sc, err := c.SFTP()
	require.NoError(t, err)
	content := bytes.Repeat([]byte("rbee binary "), 1000)
	sum := sha256.Sum256(content)

	tests := []struct {
		name string
		// mutate runs after the local file was opened, before the check.
		mutate func(t *testing.T, local string)
		sent   int64
		sum    []byte
		want   string // "" = accepted
	}{
		{"intact", nil, int64(len(content)), sum[:], ""},
		{"local file grew", func(t *testing.T, local string) {
			f, err := os.OpenFile(local, os.O_WRONLY|os.O_APPEND, 0)
			require.NoError(t, err)
			_, err = f.WriteString("more")
			require.NoError(t, err)
			require.NoError(t, f.Close())
		}, int64(len(content)), sum[:], "changed while it was copied"},
		{"local file rewritten", func(t *testing.T, local string) {
			later := time.Now().Add(time.Hour)
			require.NoError(t, os.Chtimes(local, later, later))
		}, int64(len(content)), sum[:], "changed while it was copied"},
		{"remote copy differs", nil, int64(len(content)), make([]byte, 32), "SHA-256"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			local := filepath.Join(t.TempDir(), "rbee")
			require.NoError(t, os.WriteFile(local, content, 0o755))
			dst := filepath.Join(s.home, "t"+strconv.Itoa(i), "rbee")
			require.NoError(t, os.MkdirAll(filepath.Dir(dst), 0o755))
			require.NoError(t, os.WriteFile(dst, []byte("old"), 0o755))
			f, err := os.Open(local)
			require.NoError(t, err)
			defer f.Close()
			opened, err := f.Stat()
			require.NoError(t, err)
			if tc.mutate != nil {
				tc.mutate(t, local)
			}
			err = putFile(ctx, sc, dst, bytes.NewReader(content), 0o755, func(tmp string) error {
				return verifyUpload(ctx, c, sc, tmp, f, opened, tc.sent, tc.sum)
			})
			entries, rerr := os.ReadDir(filepath.Dir(dst))
			require.NoError(t, rerr)
			require.Len(t, entries, 1, "no temporary file left")
			got, rerr := os.ReadFile(dst)
			require.NoError(t, rerr)
			if tc.want == "" {
				require.NoError(t, err)
				require.Equal(t, content, got)
				return
			}
			require.ErrorIs(t, err, ErrTransfer)
			require.Contains(t, err.Error(), tc.want)
			require.Equal(t, "old", string(got), "a refused upload replaced the file")
		})
	}
}

// TestInstallKeepsWorkingBinary: a new binary that does not run on the host
// (another platform, broken) is refused before it replaces the installed
// one, which keeps running the host's node.
func TestInstallKeepsWorkingBinary(t *testing.T) {
	s := startSSHD(t)
	ctx := testCtx(t)
	c := s.dial(ctx)
	l := Layout{BinaryPath: "~/keep/rbee", StateDir: "~/keep/state"}
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	require.NoError(t, os.WriteFile(good, []byte(fakeNode), 0o755))
	bad := filepath.Join(dir, "bad")
	require.NoError(t, os.WriteFile(bad, []byte("#!/bin/sh\necho 'cannot execute binary file: Exec format error' >&2\nexit 126\n"), 0o755))

	ir, err := Install(ctx, c, InstallOptions{Layout: l, LocalBinary: good, Service: ServiceScript})
	require.NoError(t, err)
	require.Equal(t, "rbee version stubborn", ir.Version)

	_, err = Install(ctx, c, InstallOptions{Layout: l, LocalBinary: bad, Service: ServiceScript})
	require.ErrorIs(t, err, ErrRemoteCommand)
	require.Contains(t, err.Error(), "does not run there")
	require.Contains(t, err.Error(), "Exec format error")

	// One that hangs instead of answering: given up after three times
	// the target's timeout. (It ends on its own: a killed session may
	// leave it running.)
	hung := filepath.Join(dir, "hung")
	require.NoError(t, os.WriteFile(hung, []byte("#!/bin/sh\nexec sleep 20\n"), 0o755))
	tg := s.trustedTarget()
	tg.Timeout = 500 * time.Millisecond
	c2, err := Dial(ctx, tg)
	require.NoError(t, err)
	defer c2.Close()
	start := time.Now()
	_, err = Install(ctx, c2, InstallOptions{Layout: l, LocalBinary: hung, Service: ServiceScript})
	require.ErrorIs(t, err, ErrRemoteCommand)
	require.Contains(t, err.Error(), "did not answer --version within 1.5s")
	require.Less(t, time.Since(start), 15*time.Second)
	got, err := os.ReadFile(ir.BinaryPath)
	require.NoError(t, err)
	require.Equal(t, fakeNode, string(got), "a binary that does not run replaced the working one")
	requireMode(t, ir.BinaryPath, 0o755)
	entries, err := os.ReadDir(filepath.Dir(ir.BinaryPath))
	require.NoError(t, err)
	require.Len(t, entries, 2, "the binary and the state dir only: %v", entries)
}

// mountTmpfs mounts a tmpfs with opts on a new dir under dir, or skips the
// test where that is not allowed (not root, no CAP_SYS_ADMIN).
func mountTmpfs(t *testing.T, dir, name, opts string) string {
	t.Helper()
	mnt := filepath.Join(dir, name)
	require.NoError(t, os.MkdirAll(mnt, 0o755))
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", opts, "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", mnt).Run() })
	return mnt
}

// TestRemoteFilesystemFull: a host whose filesystem is full or read-only
// says so, instead of SFTP's bare "Failure", and keeps no partial copy.
func TestRemoteFilesystemFull(t *testing.T) {
	s := startSSHD(t)
	ctx := testCtx(t)
	c := s.dial(ctx)
	dir := t.TempDir()
	local := filepath.Join(dir, "rbee")
	require.NoError(t, os.WriteFile(local, append([]byte(fakeNode), make([]byte, 4<<20)...), 0o755))
	full := mountTmpfs(t, s.home, "full", "size=2m")
	ro := mountTmpfs(t, s.home, "ro", "ro,size=1m")

	locked := filepath.Join(s.home, "locked")
	require.NoError(t, os.MkdirAll(locked, 0o755))
	lockedOK := exec.Command("chattr", "+i", locked).Run() == nil // root ignores modes, not the immutable flag
	if lockedOK {
		t.Cleanup(func() { _ = exec.Command("chattr", "-i", locked).Run() })
	}

	tests := []struct {
		name, bin, want string
		left            string // dir that must hold nothing afterwards
	}{
		{"no permission", "~/locked/rbee", "may not write in", locked},
		{"disk full", "~/full/rbee", "is full", full},
		{"read-only, create", "~/ro/rbee", "read-only filesystem", ro},
		{"read-only, mkdir", "~/ro/bin/rbee", "read-only filesystem", ro},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.left == locked && !lockedOK {
				t.Skip("chattr +i is not available here")
			}
			_, err := Install(ctx, c, InstallOptions{Layout: Layout{BinaryPath: tc.bin, StateDir: "~/state"}, LocalBinary: local, Service: ServiceScript})
			require.ErrorIs(t, err, ErrRemoteFS)
			require.Contains(t, err.Error(), tc.want)
			entries, err := os.ReadDir(tc.left)
			require.NoError(t, err)
			require.Empty(t, entries)
		})
	}
}

// TestConnectionLostErrors: a write that meets the dead connection first
// ("failed to send packet: EOF") is the connection lost as much as sftp's
// own "connection lost" (the upload test's kill hit either, by timing).
func TestConnectionLostErrors(t *testing.T) {
	for _, tc := range []struct {
		err  error
		lost bool
	}{
		{sftp.ErrSSHFxConnectionLost, true},
		{fmt.Errorf("write x: failed to send packet: %w", io.EOF), true},
		{fmt.Errorf("read: %w", io.ErrUnexpectedEOF), true},
		{fmt.Errorf("write: %w", syscall.EPIPE), true},
		{fs.ErrPermission, false},
		{errors.New("disk quota"), false},
	} {
		require.Equal(t, tc.lost, connectionLost(tc.err), "%v", tc.err)
	}
}
