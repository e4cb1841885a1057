package sshhive

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"
)

// TestHostKeyPolicy walks the known_hosts life cycle against a real sshd:
// unknown host refused (file untouched), accept-new records it, the
// recorded key then verifies, a changed key is refused even with
// accept-new.
func TestHostKeyPolicy(t *testing.T) {
	s := startSSHD(t)
	ctx := testCtx(t)
	kh := filepath.Join(t.TempDir(), "ssh", "known_hosts")
	tg := s.target(kh)

	_, err := Dial(ctx, tg)
	require.ErrorIs(t, err, ErrUnknownHost)
	require.Contains(t, err.Error(), ssh.FingerprintSHA256(s.hostKey))
	require.Contains(t, err.Error(), "--accept-new")
	_, statErr := os.Stat(kh)
	require.ErrorIs(t, statErr, os.ErrNotExist, "a refused unknown host must not touch known_hosts")

	tg.AcceptNew = true
	c, err := Dial(ctx, tg)
	require.NoError(t, err)
	require.NoError(t, c.Close())
	b, err := os.ReadFile(kh)
	require.NoError(t, err)
	require.Equal(t, 1, strings.Count(string(b), "\n"))
	require.Contains(t, string(b), "[127.0.0.1]:")
	require.Contains(t, string(b), strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.hostKey))))
	st, err := os.Stat(kh)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())

	// Recorded: now verifies without accept-new, and nothing is appended.
	tg.AcceptNew = false
	c, err = Dial(ctx, tg)
	require.NoError(t, err)
	require.NoError(t, c.Close())
	b2, err := os.ReadFile(kh)
	require.NoError(t, err)
	require.Equal(t, b, b2)

	// OpenSSH's own client agrees with what we recorded.
	if sshBin, err := exec.LookPath("ssh"); err == nil {
		out, err := exec.CommandContext(ctx, sshBin, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
			"-o", "UserKnownHostsFile="+kh, "-o", "GlobalKnownHostsFile=/dev/null", "-i", s.key,
			"-p", strconv.Itoa(s.port), s.user+"@127.0.0.1", "echo ok").CombinedOutput()
		require.NoError(t, err, "%s", out)
		require.Contains(t, string(out), "ok")
	}

	old := ssh.FingerprintSHA256(s.hostKey)
	s.newHostKey()
	for _, acceptNew := range []bool{false, true} {
		tg.AcceptNew = acceptNew
		_, err = Dial(ctx, tg)
		require.ErrorIs(t, err, ErrHostKeyMismatch, "accept-new=%v", acceptNew)
		require.Contains(t, err.Error(), ssh.FingerprintSHA256(s.hostKey))
		require.Contains(t, err.Error(), old)
	}
	b3, err := os.ReadFile(kh)
	require.NoError(t, err)
	require.Equal(t, b, b3, "a changed key must never be recorded")
}

// TestKnownHostsBadLines: lines of known_hosts that do not parse (a key
// type this client does not know, a damaged line) are skipped as OpenSSH
// skips them; the other lines keep verifying hosts, with their own line
// numbers in messages.
func TestKnownHostsBadLines(t *testing.T) {
	s := startSSHD(t)
	ctx := testCtx(t)
	tg := s.trustedTarget()
	good, err := os.ReadFile(tg.KnownHostsFile)
	require.NoError(t, err)
	bad := "# comment\noldhost ssh-foo AAAAB3NzaC1yc2EAAAADAQABAAABAQC7\nbadhost ssh-ed25519 notbase64!!\n"
	require.NoError(t, os.WriteFile(tg.KnownHostsFile, append([]byte(bad), good...), 0o600))

	c, err := Dial(ctx, tg)
	require.NoError(t, err)
	require.NoError(t, c.Close())

	s.newHostKey()
	_, err = Dial(ctx, tg)
	require.ErrorIs(t, err, ErrHostKeyMismatch)
	require.Contains(t, err.Error(), tg.KnownHostsFile+":4 records")
	after, err := os.ReadFile(tg.KnownHostsFile)
	require.NoError(t, err)
	require.Equal(t, bad+string(good), string(after), "known_hosts is never rewritten")
}

// TestIdentityFilesNotKeys: an IdentityFile that names a FIFO or a large
// file is skipped at once (no read that blocks for ever or fills memory),
// and the keys after it still authenticate.
func TestIdentityFilesNotKeys(t *testing.T) {
	s := startSSHD(t)
	ctx := testCtx(t)
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	big := filepath.Join(dir, "big")
	require.NoError(t, os.WriteFile(big, make([]byte, 8<<20), 0o600))

	tg := s.trustedTarget()
	tg.IdentityFiles = []string{fifo, big, filepath.Join(dir, "missing"), s.key}
	done := make(chan error, 1)
	go func() {
		c, err := Dial(ctx, tg)
		if err == nil {
			c.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("Dial hangs on an identity file that is a FIFO")
	}

	tg.IdentityFiles = []string{fifo, big}
	_, err := Dial(ctx, tg)
	require.ErrorIs(t, err, ErrAuth)
	require.Contains(t, err.Error(), "not a regular file")
	require.Contains(t, err.Error(), "larger than")
}

func TestDialErrors(t *testing.T) {
	s := startSSHD(t)
	ctx := testCtx(t)
	dir := t.TempDir()
	wrongKey := filepath.Join(dir, "wrong")
	writeKey(t, wrongKey)
	notAKey := filepath.Join(dir, "notakey")
	require.NoError(t, os.WriteFile(notAKey, []byte("hello"), 0o600))
	fifo := filepath.Join(dir, "fifo")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))

	tests := []struct {
		name   string
		mutate func(*Target)
		want   error
		msg    string
	}{
		{"wrong key", func(tg *Target) { tg.IdentityFiles = []string{wrongKey} }, ErrAuth, "refused"},
		{"no usable key", func(tg *Target) { tg.IdentityFiles = []string{filepath.Join(dir, "missing"), notAKey} }, ErrAuth, "not a private key"},
		{"unreachable port", func(tg *Target) { tg.Port = freePort(t) }, ErrUnreachable, "127.0.0.1"},
		{"no user", func(tg *Target) { tg.User = "" }, ErrInvalid, "no user"},
		{"no known_hosts", func(tg *Target) { tg.KnownHostsFile = "" }, ErrInvalid, "known_hosts"},
		// Opening a FIFO for reading would wait for a writer for ever.
		{"known_hosts is a FIFO", func(tg *Target) { tg.KnownHostsFile = fifo }, ErrInvalid, "not a file"},
		{"known_hosts is /dev/null", func(tg *Target) { tg.KnownHostsFile = os.DevNull }, ErrUnknownHost, "not recorded in /dev/null"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tg := s.trustedTarget()
			tc.mutate(&tg)
			c, err := Dial(ctx, tg)
			if c != nil {
				c.Close()
			}
			require.ErrorIs(t, err, tc.want)
			require.Contains(t, err.Error(), tc.msg)
		})
	}

	t.Run("not an ssh server", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		t.Cleanup(func() { l.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				_, _ = c.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n"))
				c.Close()
			}
		}()
		tg := s.trustedTarget()
		tg.Port = l.Addr().(*net.TCPAddr).Port
		_, err = Dial(ctx, tg)
		require.ErrorIs(t, err, ErrUnreachable)
	})

	t.Run("server never answers", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		t.Cleanup(func() { l.Close() })
		go func() {
			var held []net.Conn // accepted, never written to
			defer func() {
				for _, c := range held {
					c.Close()
				}
			}()
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				held = append(held, c)
			}
		}()
		tg := s.trustedTarget()
		tg.Port = l.Addr().(*net.TCPAddr).Port
		tg.Timeout = 300 * time.Millisecond
		start := time.Now()
		_, err = Dial(ctx, tg)
		require.ErrorIs(t, err, ErrUnreachable)
		require.Contains(t, err.Error(), "did not complete the server's SSH banner and key exchange within 300ms")
		require.Less(t, time.Since(start), 10*time.Second)
	})

	t.Run("cancelled", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		_, err := Dial(cctx, s.trustedTarget())
		require.ErrorIs(t, err, context.Canceled)
	})
}

// TestAuthMethodsOffered: a server that takes no public keys (passwords
// only) is reported as such, not as one that refused the keys.
func TestAuthMethodsOffered(t *testing.T) {
	s := startSSHDConfig(t, func(cfg string) string {
		return strings.Replace(cfg, "PasswordAuthentication no", "PasswordAuthentication yes\nPubkeyAuthentication no", 1)
	})
	_, err := Dial(testCtx(t), s.trustedTarget())
	require.ErrorIs(t, err, ErrAuth)
	require.Contains(t, err.Error(), "does not accept public-key authentication (it offers: password")
}

// TestSFTPLoginText: an external sftp-server runs through the login shell,
// so a shell that prints on start breaks SFTP; the error says so.
func TestSFTPLoginText(t *testing.T) {
	const server = "/usr/lib/openssh/sftp-server"
	if _, err := os.Stat(server); err != nil {
		t.Skipf("%s not found", server)
	}
	s := startSSHDConfig(t, func(cfg string) string {
		return strings.Replace(cfg, "Subsystem sftp internal-sftp", "Subsystem sftp "+server, 1)
	})
	ctx := testCtx(t)
	c := s.dial(ctx)
	sc, err := c.SFTP()
	require.NoError(t, err, "sftp-server without login text")
	_, err = sc.Getwd()
	require.NoError(t, err)

	require.NoError(t, os.WriteFile(filepath.Join(s.home, ".bashrc"), []byte("echo 'Welcome to lab1'\n"), 0o644))
	if out, err := c.RunInput(ctx, "true", strings.NewReader("")); err != nil || !strings.Contains(out, "Welcome") {
		t.Skipf("the login shell does not read ~/.bashrc under sshd (%q, %v)", out, err)
	}
	c2 := s.dial(ctx)
	_, err = c2.SFTP()
	require.ErrorIs(t, err, ErrSFTP)
	require.Contains(t, err.Error(), "prints on start")
}

// TestAgentAuth authenticates with a real ssh-agent holding the key, while
// the identity file is passphrase-protected (skipped, named in the error
// when there is no agent).
func TestAgentAuth(t *testing.T) {
	s := startSSHD(t)
	ctx := testCtx(t)
	agentBin, err := exec.LookPath("ssh-agent")
	if err != nil {
		t.Skip("ssh-agent not installed (package openssh-client)")
	}
	dir := t.TempDir()
	// Re-encrypt the authorized key with a passphrase.
	raw, err := os.ReadFile(s.key)
	require.NoError(t, err)
	k, err := ssh.ParseRawPrivateKey(raw)
	require.NoError(t, err)
	blk, err := ssh.MarshalPrivateKeyWithPassphrase(*k.(*ed25519.PrivateKey), "", []byte("secret"))
	require.NoError(t, err)
	enc := filepath.Join(dir, "enc_key")
	require.NoError(t, os.WriteFile(enc, pem.EncodeToMemory(blk), 0o600))

	tg := s.trustedTarget()
	tg.IdentityFiles = []string{enc}
	_, err = Dial(ctx, tg)
	require.ErrorIs(t, err, ErrAuth)
	require.Contains(t, err.Error(), "passphrase-protected")

	sock := filepath.Join(dir, "agent.sock")
	agent := exec.Command(agentBin, "-D", "-a", sock)
	require.NoError(t, agent.Start())
	t.Cleanup(func() { _ = agent.Process.Kill(); _ = agent.Wait() })
	require.Eventually(t, func() bool { _, err := os.Stat(sock); return err == nil }, 10*time.Second, 10*time.Millisecond)
	add := exec.Command("ssh-add", s.key)
	add.Env = append(os.Environ(), "SSH_AUTH_SOCK="+sock)
	out, err := add.CombinedOutput()
	require.NoError(t, err, "%s", out)

	tg.AgentSocket = sock
	c, err := Dial(ctx, tg)
	require.NoError(t, err)
	defer c.Close()
	out2, err := c.Run(ctx, "echo via-agent")
	require.NoError(t, err)
	require.Equal(t, "via-agent\n", out2)
}

// TestAgentStalls: an agent socket that accepts but never answers (a stale
// forwarded agent, one waiting on a PIN prompt) is given up after the dial
// timeout; the identity files still authenticate.
func TestAgentStalls(t *testing.T) {
	s := startSSHD(t)
	ctx := testCtx(t)
	sock := filepath.Join(t.TempDir(), "agent.sock")
	l, err := net.Listen("unix", sock)
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	go func() {
		var held []net.Conn // accepted, never answered
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()

	tg := s.trustedTarget()
	tg.AgentSocket = sock
	tg.Timeout = time.Second
	done := make(chan error, 1)
	go func() {
		c, err := Dial(ctx, tg)
		if err == nil {
			c.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("Dial hangs on an agent that never answers")
	}
}

func TestRun(t *testing.T) {
	s := startSSHD(t)
	ctx := testCtx(t)
	c := s.dial(ctx)

	out, err := c.Run(ctx, "echo hello; echo to-stderr >&2")
	require.NoError(t, err)
	require.Equal(t, "hello\n", out)

	_, err = c.Run(ctx, "echo partial; echo 'disk on fire' >&2; exit 7")
	require.ErrorIs(t, err, ErrRemoteCommand)
	var ce *CommandError
	require.True(t, errors.As(err, &ce))
	require.Equal(t, 7, ce.ExitStatus)
	require.Equal(t, "disk on fire", ce.Stderr)
	require.Contains(t, err.Error(), "status 7")

	// Run's script is read whole before it runs; its commands see an empty
	// stdin instead of the rest of the script.
	out, err = c.Run(ctx, "cat\necho after-cat\nexit 3\necho never")
	require.ErrorIs(t, err, ErrRemoteCommand)
	require.Equal(t, "after-cat\n", out)

	out, err = c.RunInput(ctx, "cat", strings.NewReader("from stdin"))
	require.NoError(t, err)
	require.Equal(t, "from stdin", out)

	home, err := c.Home(ctx)
	require.NoError(t, err)
	require.Equal(t, s.home, home)

	// Cancelling kills the remote command instead of waiting for it.
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { _, err := c.Run(cctx, "sleep 600"); done <- err }()
	cancel()
	select {
	case err := <-done:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	// The connection stays usable.
	out, err = c.Run(ctx, "echo still-here")
	require.NoError(t, err)
	require.Equal(t, "still-here\n", out)
}

// TestLoginShellOutput: a login shell that prints on every start (a
// .bashrc that echoes a greeting, as many do) must not leak into what Run
// returns, or $HOME, uname and the installed version cannot be read.
func TestLoginShellOutput(t *testing.T) {
	s := startSSHD(t)
	ctx := testCtx(t)
	const greeting = "Welcome to lab1 /srv\nLinux x86_64"
	require.NoError(t, os.WriteFile(filepath.Join(s.home, ".bashrc"), []byte("echo '"+greeting+"'\n"), 0o644))
	c := s.dial(ctx)
	if out, err := c.RunInput(ctx, "true", strings.NewReader("")); err != nil || !strings.Contains(out, "Welcome") {
		t.Skipf("the login shell does not read ~/.bashrc under sshd (%q, %v)", out, err)
	}

	out, err := c.Run(ctx, "echo hello")
	require.NoError(t, err)
	require.Equal(t, "hello\n", out)
	_, err = c.Run(ctx, "echo partial; exit 4")
	require.ErrorIs(t, err, ErrRemoteCommand)
	home, err := c.Home(ctx)
	require.NoError(t, err)
	require.Equal(t, s.home, home)
	res, err := Test(ctx, s.trustedTarget(), "")
	require.NoError(t, err)
	require.Equal(t, runtime.GOOS+"/"+runtime.GOARCH, res.OS+"/"+res.Arch)
	require.NotContains(t, res.Uname, "Welcome")
}

func TestProbe(t *testing.T) {
	s := startSSHD(t)
	ctx := testCtx(t)
	res, err := Test(ctx, s.trustedTarget(), "")
	require.NoError(t, err)
	// The remote host is this machine.
	require.Equal(t, runtime.GOOS, res.OS)
	require.Equal(t, runtime.GOARCH, res.Arch)
	require.True(t, res.SamePlatform())
	require.False(t, TestResult{OS: "plan9", Arch: res.Arch}.SamePlatform())
	require.Positive(t, res.RoundTrip)
	require.Positive(t, res.Connect)
	require.Empty(t, res.RbeeVersion, "nothing installed under the temp home yet")

	// A fake rbee at the probed path is reported.
	fake := filepath.Join(s.home, "bin", "rbee")
	require.NoError(t, os.MkdirAll(filepath.Dir(fake), 0o755))
	require.NoError(t, os.WriteFile(fake, []byte("#!/bin/sh\necho 'rbee version v9.9.9'\n"), 0o755))
	res, err = Test(ctx, s.trustedTarget(), "~/bin/rbee")
	require.NoError(t, err)
	require.Equal(t, "rbee version v9.9.9", res.RbeeVersion)

	_, err = Test(ctx, s.target(filepath.Join(t.TempDir(), "kh")), "")
	require.ErrorIs(t, err, ErrUnknownHost)

	// An rbee there that never answers --version: the probe gives up
	// after the target's timeout and says why.
	// It outlives the 1 s bound but ends on its own: the killed session
	// may leave it running.
	require.NoError(t, os.WriteFile(fake, []byte("#!/bin/sh\nexec sleep 20\n"), 0o755))
	tg := s.trustedTarget()
	tg.Timeout = time.Second
	start := time.Now()
	_, err = Test(ctx, tg, "~/bin/rbee")
	require.ErrorIs(t, err, ErrRemoteCommand)
	require.Contains(t, err.Error(), "did not finish within 1s")
	require.Less(t, time.Since(start), 15*time.Second)
}

func TestParseUname(t *testing.T) {
	tests := []struct {
		in, os, arch string
		err          bool
	}{
		{"Linux x86_64", "linux", "amd64", false},
		{"Linux aarch64\n", "linux", "arm64", false},
		{"Darwin arm64", "darwin", "arm64", false},
		{"Darwin x86_64", "darwin", "amd64", false},
		{"Linux armv7l", "linux", "arm", false},
		{"Linux riscv64", "linux", "riscv64", false},
		{"FreeBSD amd64", "freebsd", "amd64", false},
		{"MINGW64_NT-10.0-19045 x86_64", "windows", "amd64", false},
		{"Linux i686", "linux", "386", false},
		{"Linux loongarch64", "linux", "loong64", false},
		{"Plan9 x86_64", "", "", true},
		{"Linux vax", "", "", true},
		{"Linux", "", "", true},
		{"", "", "", true},
	}
	for _, tc := range tests {
		goos, goarch, err := ParseUname(tc.in)
		if tc.err {
			require.ErrorIs(t, err, ErrInvalid, tc.in)
			continue
		}
		require.NoError(t, err, tc.in)
		require.Equal(t, tc.os, goos, tc.in)
		require.Equal(t, tc.arch, goarch, tc.in)
	}
}

func TestKnownHostsAppendKeepsLines(t *testing.T) {
	// A file without a trailing newline gets the new entry on its own line.
	kh := filepath.Join(t.TempDir(), "known_hosts")
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	k, err := ssh.NewPublicKey(pub)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(kh, []byte("otherhost "+strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))), 0o600))
	require.NoError(t, appendKnownHost(kh, "h.lan:22", k))
	b, err := os.ReadFile(kh)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	require.Len(t, lines, 2)
	require.True(t, strings.HasPrefix(lines[1], "h.lan ssh-ed25519 "), lines[1])
}
