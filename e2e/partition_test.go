package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// lan is a LAN the test builds from network namespaces: a switch namespace
// holding a bridge, and one namespace per machine with a veth port on it,
// all in 10.214.X.0/24. Nothing touches the root namespace's interfaces or
// sysctls. Partitions are blackhole routes inside the machines'
// namespaces: packets vanish with no RST or ICMP, as on a cut cable.
type lan struct {
	t      *testing.T
	id     string
	subnet string // "10.214.X."
	sw     string
	hosts  []string // namespace per machine
}

func newLAN(t *testing.T, machines int) *lan {
	t.Helper()
	x := freeSubnet(t, 214)
	l := &lan{t: t, id: fmt.Sprintf("%d%03d", os.Getpid()%1000, x), subnet: fmt.Sprintf("10.214.%d.", x)}
	l.sw = "rbsw" + l.id
	if out, err := exec.Command("ip", "netns", "add", l.sw).CombinedOutput(); err != nil {
		t.Skipf("cannot create a network namespace (ip netns add: %v: %s)", err, bytes.TrimSpace(out))
	}
	t.Cleanup(func() {
		for _, h := range l.hosts {
			_ = exec.Command("ip", "netns", "del", h).Run()
		}
		_ = exec.Command("ip", "netns", "del", l.sw).Run()
	})
	l.ip("-n", l.sw, "link", "add", "br0", "type", "bridge")
	l.ip("-n", l.sw, "link", "set", "br0", "up")
	for i := 1; i <= machines; i++ {
		ns := fmt.Sprintf("rbh%d-%s", i, l.id)
		if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add %s: %v: %s", ns, err, out)
		}
		l.hosts = append(l.hosts, ns)
		port, eth := fmt.Sprintf("p%d", i), fmt.Sprintf("e%d", i)
		l.ip("-n", l.sw, "link", "add", port, "type", "veth", "peer", "name", eth, "netns", ns)
		l.ip("-n", l.sw, "link", "set", port, "master", "br0")
		l.ip("-n", l.sw, "link", "set", port, "up")
		l.ip("-n", ns, "addr", "add", l.addr(i)+"/24", "dev", eth)
		l.ip("-n", ns, "link", "set", eth, "up")
		l.ip("-n", ns, "link", "set", "lo", "up")
	}
	return l
}

// addr is machine i's address (1-based).
func (l *lan) addr(i int) string { return l.subnet + fmt.Sprint(i) }

func (l *lan) ip(args ...string) {
	l.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		l.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// partition cuts every machine of one group off from every machine of the
// others (groups of 1-based indexes); heal undoes all cuts.
func (l *lan) partition(groups ...[]int) {
	l.t.Helper()
	for gi, g := range groups {
		for _, i := range g {
			for gj, other := range groups {
				if gi == gj {
					continue
				}
				for _, j := range other {
					l.ip("-n", l.hosts[i-1], "route", "add", "blackhole", l.addr(j)+"/32")
				}
			}
		}
	}
}

func (l *lan) heal() {
	l.t.Helper()
	for i, ns := range l.hosts {
		for j := range l.hosts {
			if i != j {
				_ = exec.Command("ip", "-n", ns, "route", "del", "blackhole", l.addr(j+1)+"/32").Run()
			}
		}
	}
}

// lanNode is one `rbee node` process on a machine of the LAN. Its API
// listens on the machine's loopback (so the CLI there is an admin with the
// data dir's key); gossip and libp2p use the LAN address.
type lanNode struct {
	name, ns, dir, log string
	cmd                *exec.Cmd
	done               chan struct{}
}

func startLANNode(t *testing.T, bin string, l *lan, i int, token string, join string, extra ...string) *lanNode {
	t.Helper()
	dir := t.TempDir()
	n := &lanNode{name: fmt.Sprintf("node%d", i), ns: l.hosts[i-1], dir: filepath.Join(dir, "data"), log: filepath.Join(dir, "node.log")}
	args := []string{"netns", "exec", n.ns, bin, "node", "--name", n.name, "--data-dir", n.dir,
		"--http-addr", "127.0.0.1:7833", "--gossip-addr", l.addr(i) + ":7946", "--p2p-addr", l.addr(i) + ":7835",
		"--no-mdns", "--log-level", "debug"}
	if join != "" {
		args = append(args, "--join", join)
	}
	args = append(args, extra...)
	logf, err := os.Create(n.log)
	require.NoError(t, err)
	n.cmd = exec.Command("ip", args...)
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	n.cmd.Env = append(os.Environ(), "RBEE_NODE=", "RBEE_TOKEN=", "RBEE_DATA_DIR=", "RBEE_CLUSTER_TOKEN="+token)
	require.NoError(t, n.cmd.Start())
	n.done = make(chan struct{})
	go func() { _ = n.cmd.Wait(); logf.Close(); close(n.done) }()
	t.Cleanup(func() {
		_ = n.cmd.Process.Kill()
		<-n.done
		if t.Failed() {
			b, _ := os.ReadFile(n.log)
			if len(b) > 6000 {
				b = b[len(b)-6000:]
			}
			t.Logf("--- %s log (tail) ---\n%s", n.name, b)
		}
	})
	return n
}

// cli runs the CLI on the node's machine, against that node.
func (n *lanNode) cli(bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	all := append([]string{"netns", "exec", n.ns, bin}, args...)
	all = append(all, "--node", "http://127.0.0.1:7833", "--data-dir", n.dir)
	cmd := exec.CommandContext(ctx, "ip", all...)
	cmd.Env = append(os.Environ(), "RBEE_NODE=", "RBEE_TOKEN=", "RBEE_CA=", "RBEE_CA_FINGERPRINT=")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String() + stderr.String(), err
	}
	return stdout.String(), nil
}

type lanStatus struct {
	Leader string `json:"leader"`
	Nodes  []struct {
		Name  string `json:"name"`
		State string `json:"state"`
		Voter bool   `json:"voter"`
	} `json:"nodes"`
}

func (n *lanNode) status(bin string) (lanStatus, bool) {
	out, err := n.cli(bin, "status", "-o", "json")
	var st lanStatus
	if err != nil || json.Unmarshal([]byte(out), &st) != nil {
		return st, false
	}
	return st, true
}

// view is what a node's status says about the cluster, comparable across
// nodes: the leader, then each node with its state and vote.
func (st lanStatus) view() string {
	var parts []string
	for _, n := range st.Nodes {
		parts = append(parts, fmt.Sprintf("%s:%s:%v", n.Name, n.State, n.Voter))
	}
	slices.Sort(parts)
	return st.Leader + "|" + strings.Join(parts, ",")
}

// converged reports whether every node answers with the same view: one
// leader, all want nodes alive and voting, and the same API keys.
func converged(bin string, nodes []*lanNode, want int) bool {
	var first, firstKeys string
	for i, n := range nodes {
		st, ok := n.status(bin)
		if !ok || st.Leader == "" || len(st.Nodes) != want {
			return false
		}
		for _, m := range st.Nodes {
			if m.State != "alive" || !m.Voter {
				return false
			}
		}
		keys, err := n.cli(bin, "apikey", "list", "-o", "json")
		if err != nil {
			return false
		}
		if i == 0 {
			first, firstKeys = st.view(), keys
		} else if st.view() != first || keys != firstKeys {
			return false
		}
	}
	return true
}

// waitConverged polls until converged and returns how long it took.
func waitConverged(t *testing.T, bin string, nodes []*lanNode, want int, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for !converged(bin, nodes, want) {
		if time.Since(start) > limit {
			for _, n := range nodes {
				st, ok := n.status(bin)
				t.Logf("%s answers %v: %s", n.name, ok, st.view())
			}
			t.Fatalf("not converged within %v", limit)
		}
		time.Sleep(250 * time.Millisecond)
	}
	return time.Since(start)
}

// TestPartitionsHeal runs five `rbee node` processes on five machines of a
// LAN made of network namespaces, with mDNS off, and partitions them: a
// minority cut off for longer than the reap grace (the leader removes it
// from raft and the registry), then an isolated leader. Writes on the cut
// side fail fast with no_quorum; after each heal the cluster converges
// (one leader, every node alive and voting, the same registry everywhere)
// within 30 s, without anyone running `rbee join`.
func TestPartitionsHeal(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process partition test")
	}
	l := newLAN(t, 5)
	bin := buildRbee(t)
	token := "rbee_partition_" + l.id
	// A short reap grace stands in for the 150 s partition: the
	// same removal and re-admission, in a test-sized time.
	const reap = "8s"
	nodes := []*lanNode{startLANNode(t, bin, l, 1, token, "", "--reap-grace", reap)}
	require.Eventually(t, func() bool { _, ok := nodes[0].status(bin); return ok }, 60*time.Second, 200*time.Millisecond)
	for i := 2; i <= 5; i++ {
		nodes = append(nodes, startLANNode(t, bin, l, i, token, l.addr(1)+":7946", "--reap-grace", reap))
	}
	waitConverged(t, bin, nodes, 5, 90*time.Second)

	// 1. {1,2} | {3,4,5} for longer than the reap grace.
	l.partition([]int{1, 2}, []int{3, 4, 5})
	start := time.Now()
	out, err := nodes[0].cli(bin, "apikey", "create", "--name", "minority-write", "--scope", "inference")
	took := time.Since(start)
	require.Error(t, err, "a write on the minority side must fail: %s", out)
	require.Contains(t, out, "no_quorum")
	require.Less(t, took, 15*time.Second, "the minority write must fail fast (took %v)", took)
	t.Logf("minority write failed after %v", took.Round(time.Millisecond))
	// The majority elects (or keeps) a leader, writes, and reaps the
	// minority from raft and the registry.
	require.Eventually(t, func() bool {
		st, ok := nodes[2].status(bin)
		if !ok || st.Leader == "" || st.Leader == "node1" || st.Leader == "node2" || len(st.Nodes) != 3 {
			return false
		}
		_, err := nodes[2].cli(bin, "apikey", "create", "--name", "majority-write", "--scope", "inference")
		return err == nil || strings.Contains(err.Error(), "exists")
	}, 90*time.Second, 500*time.Millisecond, "the majority reaps the minority")
	l.heal()
	healed := waitConverged(t, bin, nodes, 5, 30*time.Second)
	t.Logf("minority partition: converged %v after the heal", healed.Round(time.Millisecond))
	keys, err := nodes[0].cli(bin, "apikey", "list", "-o", "json")
	require.NoError(t, err)
	require.Contains(t, keys, "majority-write", "the write made during the partition reached the minority")
	require.NotContains(t, keys, "minority-write")

	// 2. The leader alone on its side.
	st, ok := nodes[0].status(bin)
	require.True(t, ok)
	li := slices.IndexFunc(nodes, func(n *lanNode) bool { return n.name == st.Leader })
	require.GreaterOrEqual(t, li, 0)
	var others []int
	for i := range nodes {
		if i != li {
			others = append(others, i+1)
		}
	}
	l.partition([]int{li + 1}, others)
	other := nodes[others[0]-1]
	require.Eventually(t, func() bool {
		st, ok := other.status(bin)
		return ok && st.Leader != "" && st.Leader != nodes[li].name
	}, 30*time.Second, 250*time.Millisecond, "the others elect a new leader")
	out, err = nodes[li].cli(bin, "apikey", "create", "--name", "isolated-write", "--scope", "inference")
	require.Error(t, err, "the isolated old leader must not accept a write: %s", out)
	l.heal()
	healed = waitConverged(t, bin, nodes, 5, 30*time.Second)
	t.Logf("isolated leader: converged %v after the heal", healed.Round(time.Millisecond))
}

// TestForwardedJobEndsWhenHiveDropsOff: a job forwarded to a hive that
// drops off without a FIN or RST (a partition cuts it while the libp2p
// connection is open) fails with code unavailable once gossip declares
// the hive dead, not after libp2p's keepalive gives up (about 40 s).
func TestForwardedJobEndsWhenHiveDropsOff(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process partition test")
	}
	l := newLAN(t, 3)
	bin := buildRbee(t)
	token := "rbee_dropoff_" + l.id
	nodes := []*lanNode{startLANNode(t, bin, l, 1, token, "")}
	require.Eventually(t, func() bool { _, ok := nodes[0].status(bin); return ok }, 60*time.Second, 200*time.Millisecond)
	for i := 2; i <= 3; i++ {
		nodes = append(nodes, startLANNode(t, bin, l, i, token, l.addr(1)+":7946"))
	}
	waitConverged(t, bin, nodes, 3, 90*time.Second)
	// A forward that works opens the libp2p connection the next one uses.
	out, err := nodes[0].cli(bin, "model", "list", "--hive", "node3")
	require.NoError(t, err, out)

	l.partition([]int{3}, []int{1, 2})
	start := time.Now()
	out, err = nodes[0].cli(bin, "model", "list", "--hive", "node3")
	took := time.Since(start)
	t.Logf("after %v: %s", took.Round(time.Millisecond), out)
	require.Error(t, err)
	require.Contains(t, out, "(unavailable)")
	require.Less(t, took, 25*time.Second, "the forward waited for libp2p's keepalive instead of gossip")
}

// TestGossipCutLeaderKeepsMajority: the leader's gossip is cut off from
// the others while raft (libp2p, on another network here) still reaches
// them. The leader must not act on a gossip view that calls every other
// node failed: before, it deleted their workers (inference on the
// majority answered no_worker) and, after the reap grace, removed them
// from raft, leaving the majority without a leader.
func TestGossipCutLeaderKeepsMajority(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process partition test")
	}
	l := newLAN(t, 3)
	// libp2p on a second network: cutting l's addresses cuts gossip only.
	p2pNet := fmt.Sprintf("10.215.%d.", freeSubnet(t, 215))
	for i := 1; i <= 3; i++ {
		l.ip("-n", l.hosts[i-1], "addr", "add", fmt.Sprintf("%s%d/24", p2pNet, i), "dev", fmt.Sprintf("e%d", i))
	}
	bin := buildRbee(t)
	token := "rbee_gossipcut_" + l.id
	extra := func(i int) []string {
		return []string{"--p2p-addr", fmt.Sprintf("%s%d:7835", p2pNet, i), "--blob-addr", fmt.Sprintf("%s%d:7836", p2pNet, i), "--reap-grace", "5s"}
	}
	nodes := []*lanNode{startLANNode(t, bin, l, 1, token, "", extra(1)...)}
	require.Eventually(t, func() bool { _, ok := nodes[0].status(bin); return ok }, 60*time.Second, 200*time.Millisecond)
	for i := 2; i <= 3; i++ {
		nodes = append(nodes, startLANNode(t, bin, l, i, token, l.addr(1)+":7946", extra(i)...))
	}
	waitConverged(t, bin, nodes, 3, 90*time.Second)
	st, ok := nodes[0].status(bin)
	require.True(t, ok)
	li := slices.IndexFunc(nodes, func(n *lanNode) bool { return n.name == st.Leader })
	require.GreaterOrEqual(t, li, 0)
	var others []int
	for i := range nodes {
		if i != li {
			others = append(others, i+1)
		}
	}
	// The worker on one majority node, the client on the other: a node
	// routes to its own live workers whatever the registry says.
	host, client := nodes[others[0]-1], nodes[others[1]-1]
	out, err := host.cli(bin, "worker", "spawn", "--model", "builtin:stories260k", "--hive", host.name)
	require.NoError(t, err, out)
	require.Eventually(t, func() bool {
		out, err := client.cli(bin, "infer", "--model", "builtin:stories260k", "-n", "4", "Once")
		return err == nil && out != ""
	}, 30*time.Second, 500*time.Millisecond, "the other majority node routes to the worker")

	l.partition([]int{li + 1}, others)
	// Gossip declares the others failed in the leader's eyes within
	// about 30 s (the deletion of their workers followed at once).
	deadline := time.Now().Add(45 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(2 * time.Second)
		out, err := client.cli(bin, "infer", "--model", "builtin:stories260k", "-n", "4", "Once")
		require.NoError(t, err, "inference on the majority: %s", out)
	}
	l.heal()
	waitConverged(t, bin, nodes, 3, 60*time.Second)
}
