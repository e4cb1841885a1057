// Package otheruser runs a test's server as another local user (nobody):
// what a user of the machine who is not the node's could listen with.
package otheruser

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Nobody is the uid and gid the server runs as.
const Nobody = 65534

// python is the system's interpreter: one under root's home is not
// nobody's to run.
const python = "/usr/bin/python3"

// startWait bounds how long the server may take to listen.
const startWait = 10 * time.Second

// Python runs `python3 -c script` as Nobody, its stdout to stdout (nil:
// discarded), until the test ends, and returns once addr accepts
// connections. It skips the test where it cannot: not Linux, not root, no
// /usr/bin/python3.
func Python(t testing.TB, script, addr string, stdout io.Writer) {
	t.Helper()
	skipUnlessAble(t)
	cmd := exec.Command(python, "-c", script)
	cmd.Stdout = stdout
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: Nobody, Gid: Nobody}}
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	require.Eventually(t, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, startWait, 20*time.Millisecond, "the other user's server listens on %s", addr)
}

// skipUnlessAble skips t where a process cannot be run as Nobody: not
// Linux, not root, no /usr/bin/python3.
func skipUnlessAble(t testing.TB) {
	t.Helper()
	if runtime.GOOS != "linux" || os.Geteuid() != 0 {
		t.Skip("needs root on Linux to run a process as another user")
	}
	if _, err := os.Stat(python); err != nil {
		t.Skip("no " + python + " for the other user's process")
	}
}

// recorder is the script of Recorder's server: %q the host, %d the port,
// %q the answer's body.
const recorder = `import http.server, socket, sys
class H(http.server.BaseHTTPRequestHandler):
    def answer(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        sys.stdout.write((self.headers.get("Authorization") or "-") + "\n")
        sys.stdout.flush()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        body = %[3]q.encode()
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = answer
    def log_message(self, *a):
        pass
class S(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6 if ":" in %[1]q else socket.AF_INET
S((%[1]q, %[2]d), H).serve_forever()`

// Recorder runs an HTTP server as Nobody on host:port (port 0: a free
// one) that answers every request 200 "{}" (a ready worker's health, an
// accepted heartbeat) and, before it answers, writes the request's
// Authorization header ("-" when none) to a pipe. It returns the server's
// base URL and next, which returns the next header the server was sent,
// in order. A request sent after others returns after theirs are written:
// send one without a credential and next tells whether anything came
// before it.
func Recorder(t testing.TB, host string, port int) (url string, next func() string) {
	t.Helper()
	return RecorderAnswering(t, host, port, "{}")
}

// RecorderAnswering is Recorder with body as every answer's JSON.
func RecorderAnswering(t testing.TB, host string, port int, body string) (url string, next func() string) {
	t.Helper()
	if port == 0 {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			t.Skipf("no %s: %v", host, err)
		}
		port = ln.Addr().(*net.TCPAddr).Port
		ln.Close()
	}
	r, w, err := os.Pipe()
	require.NoError(t, err)
	t.Cleanup(func() { r.Close() })
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	Python(t, fmt.Sprintf(recorder, host, port, body), addr, w)
	w.Close()
	lines := bufio.NewReader(r)
	return "http://" + addr, func() string {
		t.Helper()
		require.NoError(t, r.SetReadDeadline(time.Now().Add(startWait)))
		line, err := lines.ReadString('\n')
		require.NoError(t, err, "the other user's server wrote no line")
		return strings.TrimSuffix(line, "\n")
	}
}

// connector is the script of Connect: %q the network, %q the address.
const connector = `import socket
net, addr = %q, %q
if net == "unix":
    s = socket.socket(socket.AF_UNIX)
else:
    host, port = addr.rsplit(":", 1)
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    addr = (host.strip("[]"), int(port))
s.settimeout(5)
try:
    s.connect(addr)
    print("connected")
except OSError as e:
    print(type(e).__name__)`

// Connect tries, as Nobody, to connect to addr on network ("tcp" with
// "host:port", or "unix" with a socket's path) and returns "connected"
// or the name of the Python error that stopped it (PermissionError,
// ConnectionRefusedError, FileNotFoundError, ...). It skips the test
// where Python does.
func Connect(t testing.TB, network, addr string) string {
	t.Helper()
	skipUnlessAble(t)
	cmd := exec.Command(python, "-c", fmt.Sprintf(connector, network, addr))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: Nobody, Gid: Nobody}}
	out, err := cmd.Output()
	require.NoError(t, err, "the other user's client: %s", out)
	return strings.TrimSpace(string(out))
}
