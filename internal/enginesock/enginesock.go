// Package enginesock puts an external engine (llama-server, vLLM) on a
// Unix socket only the node's user can reach, and dials it there.
//
// An engine on a loopback TCP port serves every local user of the machine:
// its API key, where it has one, does not cover all of its routes (vLLM's
// --api-key guards /v1 only; llama-server's leaves at least /health and
// its model list open), and some engines check none. A Unix socket in a directory
// of mode 0700 can be connected to only by the directory's owner (and
// root): the kernel checks the search permission on every path component
// before connect(2) reaches the socket.
//
// The node keeps giving such an engine a port (its records, heartbeats
// and registry entry name workers by port); its calls name that port and
// the dialer Dial returns sends them to the socket instead.
package enginesock

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ErrSocket: a socket directory could not be made.
var ErrSocket = errors.New("enginesock: no socket directory")

// dirPrefix names the directories MakeDir makes, so that Remove removes
// only one of them.
const dirPrefix = "rbee-engine-"

// socketName is the socket's name in its directory. It ends in ".sock":
// llama-server listens on a Unix socket when --host ends so.
const socketName = "engine.sock"

// maxPath is the longest socket path every Unix connects to: sun_path
// holds 108 bytes on Linux, 104 on macOS and the BSDs, the NUL included.
const maxPath = 103

// MakeDir makes a directory of mode 0700 under the system's temporary
// directory and returns the path of the socket an engine is to listen on
// in it. The temporary directory, not the node's data dir, because a
// socket's path must stay under maxPath bytes and a data dir may be deep.
func MakeDir() (string, error) {
	dir, err := os.MkdirTemp("", dirPrefix)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrSocket, err)
	}
	// MkdirTemp makes it 0700 already; say so whatever the umask.
	if err := os.Chmod(dir, 0o700); err != nil {
		_ = os.RemoveAll(dir)
		return "", fmt.Errorf("%w: %w", ErrSocket, err)
	}
	path := filepath.Join(dir, socketName)
	if len(path) > maxPath {
		_ = os.RemoveAll(dir)
		return "", fmt.Errorf("%w: %s is over %d bytes, more than a Unix socket's path may be (set TMPDIR shorter)", ErrSocket, path, maxPath)
	}
	return path, nil
}

// Remove removes the directory of a socket MakeDir made; a path MakeDir
// could not have returned is left alone.
func Remove(socket string) {
	dir := filepath.Dir(socket)
	if socket == "" || filepath.Base(socket) != socketName || !strings.HasPrefix(filepath.Base(dir), dirPrefix) {
		return
	}
	_ = os.RemoveAll(dir)
}

// DialFunc is http.Transport.DialContext's type.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Dial returns a dialer that connects to the Unix socket socketFor names
// for the port of addr (the "host:port" a request was sent to), and
// through base (nil: a plain net.Dialer) where it names none ("").
func Dial(base DialFunc, socketFor func(port int) string) DialFunc {
	if base == nil {
		base = (&net.Dialer{}).DialContext
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if s := socketOf(addr, socketFor); s != "" {
			var d net.Dialer
			return d.DialContext(ctx, "unix", s)
		}
		return base(ctx, network, addr)
	}
}

func socketOf(addr string, socketFor func(port int) string) string {
	_, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port <= 0 {
		return ""
	}
	return socketFor(port)
}
