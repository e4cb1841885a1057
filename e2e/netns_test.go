package e2e

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"
)

// lanLink is a network namespace the test created, joined to the root
// namespace by a veth pair: a "machine on the LAN" for clients. The root
// end has HostIP, the namespace end PeerIP, both in a /30 that exists only
// on this link.
type lanLink struct {
	NS     string
	HostIP string
	PeerIP string
}

// newLANLink creates the namespace and the link, and removes both when
// the test ends. It skips the test where namespaces cannot be made (not
// root, no ip(8), no permission in a container).
func newLANLink(t *testing.T) *lanLink {
	t.Helper()
	x := freeSubnet(t, 213)
	id := fmt.Sprintf("%d%03d", os.Getpid()%1000, x)
	l := &lanLink{NS: "rbee-e2e-" + id, HostIP: fmt.Sprintf("10.213.%d.1", x), PeerIP: fmt.Sprintf("10.213.%d.2", x)}
	hostIf, peerIf := "rbh"+id, "rbp"+id // at most 15 bytes
	if out, err := exec.Command("ip", "netns", "add", l.NS).CombinedOutput(); err != nil {
		t.Skipf("cannot create a network namespace (ip netns add: %v: %s)", err, bytes.TrimSpace(out))
	}
	t.Cleanup(func() {
		// Deleting the namespace destroys its veth end and with it the pair.
		_ = exec.Command("ip", "link", "del", hostIf).Run()
		_ = exec.Command("ip", "netns", "del", l.NS).Run()
	})
	for _, args := range [][]string{
		{"link", "add", hostIf, "type", "veth", "peer", "name", peerIf, "netns", l.NS},
		{"addr", "add", l.HostIP + "/30", "dev", hostIf},
		{"link", "set", hostIf, "up"},
		{"-n", l.NS, "addr", "add", l.PeerIP + "/30", "dev", peerIf},
		{"-n", l.NS, "link", "set", peerIf, "up"},
		{"-n", l.NS, "link", "set", "lo", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	return l
}

// freeSubnet skips the test where it cannot make network namespaces (not
// root on Linux, no ip(8)) and returns an X for a test network 10.b.X.0/24
// that no interface of this machine uses.
func freeSubnet(t *testing.T, b byte) int {
	t.Helper()
	if runtime.GOOS != "linux" || os.Getuid() != 0 {
		t.Skip("needs root on Linux to create network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip(8) (iproute2) to create network namespaces")
	}
	used := map[int]bool{}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if in, ok := a.(*net.IPNet); ok {
				if v4 := in.IP.To4(); v4 != nil && v4[0] == 10 && v4[1] == b {
					used[int(v4[2])] = true
				}
			}
		}
	}
	for tries := 0; tries < 100; tries++ {
		if x := 1 + rand.IntN(254); !used[x] {
			return x
		}
	}
	t.Skipf("no free 10.%d.x.0/24 for a test network", b)
	return 0
}

// Run runs a command inside the namespace and returns stdout, stderr and
// the exit error.
func (l *lanLink) Run(name string, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", l.NS, name}, args...)...)
	cmd.Env = append(os.Environ(), "RBEE_NODE=", "RBEE_TOKEN=", "RBEE_CA=", "RBEE_CA_FINGERPRINT=", "RBEE_DATA_DIR=/nonexistent")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// freePortOn returns a TCP port that was free on ip a moment ago.
func freePortOn(t *testing.T, ip string) int {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
