package sshhive

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"

	"github.com/rbee-project/rbee/node/sshhive/sshdtest"
)

// sshd is a real OpenSSH server on 127.0.0.1 (sshdtest), with the fields
// the tests of this package use.
type sshd struct {
	t       *testing.T
	srv     *sshdtest.Server
	port    int
	home    string // $HOME of remote sessions
	user    string
	dir     string
	key     string // client private key file (authorized)
	hostKey ssh.PublicKey
}

// writeKey writes a new unencrypted ed25519 key to path and path.pub.
func writeKey(t *testing.T, path string) ssh.PublicKey { return sshdtest.WriteKey(t, path) }

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
	return startSSHDConfig(t, nil)
}

// startSSHDConfig is startSSHD with the sshd_config edited (sshdtest.StartConfig).
func startSSHDConfig(t *testing.T, edit func(string) string) *sshd {
	t.Helper()
	srv := sshdtest.StartConfig(t, edit)
	return &sshd{t: t, srv: srv, port: srv.Port, home: srv.Home, user: srv.User, dir: srv.Dir, key: srv.KeyFile, hostKey: srv.HostKey}
}

// newHostKey restarts sshd on the same port with a new host key, as after a
// reinstall.
func (s *sshd) newHostKey() {
	s.srv.NewHostKey(s.t)
	s.hostKey = s.srv.HostKey
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
