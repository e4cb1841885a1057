// Package sshdtest runs a real OpenSSH sshd on 127.0.0.1 for tests: host
// key, authorized key, pid file and the sessions' $HOME all live in a temp
// dir. Tests skip when /usr/sbin/sshd (Debian: openssh-server) is missing.
package sshdtest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/ssh"
)

// Path is the OpenSSH server binary.
const Path = "/usr/sbin/sshd"

// Server is a running sshd.
type Server struct {
	Port    int
	Dir     string
	Home    string // $HOME of remote sessions
	User    string
	KeyFile string // an authorized client private key
	HostKey ssh.PublicKey

	cfgPath string
	stop    func()
	starts  int // "Server listening" lines seen so far

	mu     sync.Mutex
	stderr bytes.Buffer
}

type lockedWriter struct{ s *Server }

func (w lockedWriter) Write(p []byte) (int, error) {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	return w.s.stderr.Write(p)
}

// Log returns what sshd printed.
func (s *Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stderr.String()
}

// start runs sshd on the config and waits until it listens.
func (s *Server) start(t testing.TB) {
	t.Helper()
	cmd := exec.Command(Path, "-D", "-e", "-f", s.cfgPath)
	cmd.Stderr = lockedWriter{s}
	require.NoError(t, cmd.Start())
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	var once sync.Once
	s.stop = func() {
		once.Do(func() {
			_ = cmd.Process.Kill()
			<-exited
		})
	}
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("sshd log:\n%s", s.Log())
		}
	})
	require.Eventually(t, func() bool {
		select {
		case <-exited:
			t.Fatalf("sshd exited: %s", s.Log())
		default:
		}
		return strings.Count(s.Log(), "Server listening") > s.starts
	}, 20*time.Second, 20*time.Millisecond, "sshd did not start")
	s.starts++
}

// NewHostKey restarts sshd on the same port with a new host key, as after
// a reinstall of the host.
func (s *Server) NewHostKey(t testing.TB) {
	t.Helper()
	s.stop()
	s.HostKey = WriteKey(t, filepath.Join(s.Dir, "host_key"))
	s.start(t)
}

// WriteKey writes a new unencrypted ed25519 key (OpenSSH format) to path
// and path.pub.
func WriteKey(t testing.TB, path string) ssh.PublicKey {
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

// Start runs sshd until the test ends, or skips the test without sshd.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartConfig(t, nil)
}

// StartConfig is Start with the sshd_config text passed through edit
// first (nil: unchanged), for servers configured another way (passwords
// only, an external sftp-server).
func StartConfig(t testing.TB, edit func(cfg string) string) *Server {
	t.Helper()
	if _, err := os.Stat(Path); err != nil {
		t.Skipf("%s not found: install openssh-server to run the SSH tests", Path)
	}
	u, err := user.Current()
	require.NoError(t, err)
	if os.Geteuid() == 0 {
		require.NoError(t, os.MkdirAll("/run/sshd", 0o755)) // sshd as root insists on it
	}
	dir := t.TempDir()
	s := &Server{Dir: dir, Home: filepath.Join(dir, "home"), User: u.Username, KeyFile: filepath.Join(dir, "client_key")}
	require.NoError(t, os.MkdirAll(s.Home, 0o755))
	pub := WriteKey(t, s.KeyFile)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "authorized_keys"), ssh.MarshalAuthorizedKey(pub), 0o600))
	s.HostKey = WriteKey(t, filepath.Join(dir, "host_key"))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s.Port = l.Addr().(*net.TCPAddr).Port
	l.Close()
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
`, s.Port, dir, s.Home)
	if edit != nil {
		cfg = edit(cfg)
	}
	s.cfgPath = filepath.Join(dir, "sshd_config")
	require.NoError(t, os.WriteFile(s.cfgPath, []byte(cfg), 0o600))
	s.start(t)
	return s
}
