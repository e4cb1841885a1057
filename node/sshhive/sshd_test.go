package sshhive

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"
)

// sshdPath is the OpenSSH server the tests run (Debian/Ubuntu package
// openssh-server).
const sshdPath = "/usr/sbin/sshd"

// sshd is a real OpenSSH server on 127.0.0.1, run as the current user with
// everything (host key, authorized_keys, pid file, the remote $HOME) in a
// temp dir.
type sshd struct {
	t        *testing.T
	dir      string
	port     int
	home     string // $HOME of remote sessions (sshd SetEnv)
	user     string
	hostKey  ssh.PublicKey
	key      string // client private key file (authorized)
	cfgPath  string
	cmd      *exec.Cmd
	stderr   *lockedBuffer
	stopOnce func()
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// writeKey writes a new unencrypted ed25519 private key (OpenSSH format) to
// path and its public key to path.pub.
func writeKey(t *testing.T, path string) ssh.PublicKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	blk, err := ssh.MarshalPrivateKey(priv, "")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(blk), 0o600))
	sp, err := ssh.NewPublicKey(pub)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path+".pub", ssh.MarshalAuthorizedKey(sp), 0o644))
	return sp
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startSSHD starts sshd, or skips the test when it is not installed.
func startSSHD(t *testing.T) *sshd {
	t.Helper()
	if _, err := os.Stat(sshdPath); err != nil {
		t.Skipf("%s not found: install the openssh-server package to run the SSH tests", sshdPath)
	}
	u, err := user.Current()
	require.NoError(t, err)
	if os.Geteuid() == 0 {
		// sshd started as root insists on its privilege separation dir.
		require.NoError(t, os.MkdirAll("/run/sshd", 0o755))
	}
	dir := t.TempDir()
	s := &sshd{t: t, dir: dir, home: filepath.Join(dir, "home"), user: u.Username,
		key: filepath.Join(dir, "client_key"), cfgPath: filepath.Join(dir, "sshd_config")}
	require.NoError(t, os.MkdirAll(s.home, 0o755))
	pub := writeKey(t, s.key)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "authorized_keys"), ssh.MarshalAuthorizedKey(pub), 0o600))
	s.hostKey = writeKey(t, filepath.Join(dir, "host_key"))
	s.port = freePort(t)
	s.start()
	return s
}

func (s *sshd) start() {
	t := s.t
	t.Helper()
	cfg := fmt.Sprintf(`ListenAddress 127.0.0.1:%d
HostKey %[2]s/host_key
PidFile %[2]s/sshd.pid
AuthorizedKeysFile %[2]s/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
UsePAM no
SetEnv HOME=%[3]s
Subsystem sftp internal-sftp
LogLevel VERBOSE
`, s.port, s.dir, s.home)
	require.NoError(t, os.WriteFile(s.cfgPath, []byte(cfg), 0o600))
	s.stderr = &lockedBuffer{}
	s.cmd = exec.Command(sshdPath, "-D", "-e", "-f", s.cfgPath)
	s.cmd.Stderr = s.stderr
	require.NoError(t, s.cmd.Start())
	exited := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(exited) }()
	var once sync.Once
	s.stopOnce = func() {
		once.Do(func() {
			_ = s.cmd.Process.Kill()
			<-exited
		})
	}
	t.Cleanup(func() {
		s.stopOnce()
		if t.Failed() {
			t.Logf("sshd log:\n%s", s.stderr.String())
		}
	})
	require.Eventually(t, func() bool {
		select {
		case <-exited:
			t.Fatalf("sshd exited: %s", s.stderr.String())
		default:
		}
		return strings.Contains(s.stderr.String(), "Server listening")
	}, 20*time.Second, 20*time.Millisecond, "sshd did not start: %s", s.stderr.String())
}

// newHostKey restarts sshd on the same port with a new host key, as after a
// reinstall.
func (s *sshd) newHostKey() {
	s.stopOnce()
	s.hostKey = writeKey(s.t, filepath.Join(s.dir, "host_key"))
	s.start()
}

// target is a Target for this server with the authorized key and a
// known_hosts file of the test's own.
func (s *sshd) target(knownHosts string) Target {
	return Target{Host: "127.0.0.1", Port: s.port, User: s.user, IdentityFiles: []string{s.key},
		KnownHostsFile: knownHosts, Timeout: 10 * time.Second}
}

// trustedTarget is target with a known_hosts file that already holds the
// server's key.
func (s *sshd) trustedTarget() Target {
	kh := filepath.Join(s.t.TempDir(), "known_hosts")
	line := fmt.Sprintf("[127.0.0.1]:%d %s", s.port, ssh.MarshalAuthorizedKey(s.hostKey))
	require.NoError(s.t, os.WriteFile(kh, []byte(line), 0o600))
	return s.target(kh)
}

func (s *sshd) dial(ctx context.Context) *Client {
	s.t.Helper()
	c, err := Dial(ctx, s.trustedTarget())
	require.NoError(s.t, err)
	s.t.Cleanup(func() { _ = c.Close() })
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var (
	rbeeOnce sync.Once
	rbeeBin  string
	rbeeErr  error
)

// testVersion is linked into the test's rbee so the remote --version check
// proves the installed binary is the one built here.
const testVersion = "v0.0.0-sshhive-test"

// buildRbee builds ./cmd/rbee once per test binary.
func buildRbee(t *testing.T) string {
	t.Helper()
	rbeeOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sshhive-rbee-")
		if err != nil {
			rbeeErr = err
			return
		}
		rbeeBin = filepath.Join(dir, "rbee")
		cmd := exec.Command("go", "build", "-ldflags", "-X main.version="+testVersion, "-o", rbeeBin, "../../cmd/rbee")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			rbeeErr = fmt.Errorf("go build ./cmd/rbee: %v\n%s", err, out)
		}
	})
	require.NoError(t, rbeeErr)
	return rbeeBin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if rbeeBin != "" {
		_ = os.RemoveAll(filepath.Dir(rbeeBin))
	}
	os.Exit(code)
}

// pidAlive reports whether pid exists and is not a zombie (this test
// machine's init may not reap orphans).
func pidAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z' && s[i+2] != 'X'
}
