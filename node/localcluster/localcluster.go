// Package localcluster runs a cluster of real `rbee node` processes on
// loopback: for `make run`, `rbee bench failover` and the end-to-end tests.
//
// Every process gets its own data dir under Dir and free loopback ports.
// Methods are safe for concurrent use.
package localcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/gossip"
	"github.com/rbee-project/rbee/node"
	"github.com/rbee-project/rbee/node/client"
	"github.com/rbee-project/rbee/worker/process"
)

// Errors New returns for a configuration no node would start with.
var (
	// ErrBadProfile: Config.Profile names no timing profile of `rbee node`.
	ErrBadProfile = errors.New("localcluster: unknown timing profile")
)

// CheckProfile returns nil when p is a timing profile `rbee node
// --profile` accepts ("lan", "local"), else ErrBadProfile: a command
// checks it before it starts anything, since a node given another exits
// at once and leaves only its log to say why.
func CheckProfile(p string) error {
	switch p {
	case gossip.ProfileLAN, gossip.ProfileLocal:
		return nil
	}
	return fmt.Errorf("%w %q (want %q or %q)", ErrBadProfile, p, gossip.ProfileLAN, gossip.ProfileLocal)
}

// Config describes the cluster.
type Config struct {
	// Binary is the rbee executable.
	Binary string
	// Dir holds one data dir and one log file per node.
	Dir string
	// Nodes is the number of nodes (named node1..nodeN).
	Nodes int
	// Profile is the timing profile passed to every node ("lan"/"local").
	Profile string
	// Token is the cluster secret; empty: the one Dir's node1 stores from
	// an earlier run, else a new random one.
	Token string
	// ExtraArgs are appended to every `rbee node` command line.
	ExtraArgs []string
}

// Node is one process of the cluster.
type Node struct {
	Name       string
	DataDir    string
	HTTPAddr   string
	GossipAddr string
	P2PAddr    string
	LogPath    string
	// HTTPSAddr, when set before the node starts, is its --https-addr.
	HTTPSAddr string
	// ExtraArgs are appended to this node's command line (after the
	// cluster's).
	ExtraArgs []string

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	started time.Time
}

// Started is when the node's current process was started (zero before).
func (n *Node) Started() time.Time {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.started
}

// URL is the node's API base URL.
func (n *Node) URL() string { return "http://" + n.HTTPAddr }

// HTTPSURL is the node's HTTPS API base URL ("" without HTTPSAddr).
func (n *Node) HTTPSURL() string {
	if n.HTTPSAddr == "" {
		return ""
	}
	return "https://" + n.HTTPSAddr
}

// Client returns an API client for the node.
// It presents the node's admin key, read from its data dir.
func (n *Node) Client() *client.Client {
	k, _ := node.ReadAdminKey(n.DataDir)
	return client.New(n.URL(), k)
}

// Running reports whether the process is alive.
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// PID is the process id (0 when not running).
func (n *Node) PID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil || n.cmd.Process == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// Cluster is a set of node processes.
type Cluster struct {
	cfg   Config
	Nodes []*Node
}

// FreePort returns a loopback TCP port that was free a moment ago. Memberlist
// also binds UDP on the same port; a collision is reported by the node.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// New prepares the cluster (nothing runs until Start).
func New(cfg Config) (*Cluster, error) {
	if cfg.Nodes <= 0 {
		cfg.Nodes = 3
	}
	if cfg.Profile == "" {
		cfg.Profile = "local"
	}
	if err := CheckProfile(cfg.Profile); err != nil {
		return nil, err
	}
	if cfg.Binary == "" {
		return nil, errors.New("localcluster: binary is required")
	}
	c := &Cluster{cfg: cfg}
	freeAddr := newPortPicker().addr
	for i := 1; i <= cfg.Nodes; i++ {
		name := fmt.Sprintf("node%d", i)
		n := &Node{Name: name, DataDir: filepath.Join(cfg.Dir, name), LogPath: filepath.Join(cfg.Dir, name+".log")}
		var err error
		if n.HTTPAddr, err = freeAddr(); err != nil {
			return nil, err
		}
		if n.GossipAddr, err = freeAddr(); err != nil {
			return nil, err
		}
		if n.P2PAddr, err = freeAddr(); err != nil {
			return nil, err
		}
		c.Nodes = append(c.Nodes, n)
	}
	return c, nil
}

// Start starts node1 (which creates the cluster), waits for its API, then
// starts the others with --join node1.
func (c *Cluster) Start(ctx context.Context) error {
	if err := os.MkdirAll(c.cfg.Dir, 0o700); err != nil {
		return err
	}
	if err := c.chooseToken(); err != nil {
		return err
	}
	for i, n := range c.Nodes {
		var join []string
		if i > 0 {
			join = []string{c.Nodes[0].GossipAddr}
		}
		if err := c.StartNode(ctx, n, join); err != nil {
			return err
		}
		if err := WaitHealthy(ctx, n); err != nil {
			return fmt.Errorf("%s: %w (log: %s)", n.Name, err, n.LogPath)
		}
	}
	return nil
}

// Token is the cluster secret.
func (c *Cluster) Token() string { return c.cfg.Token }

// chooseToken sets the cluster secret when Config.Token is empty: the one
// node1's data dir stores when the directory held this cluster before
// (every node keeps it, so the cluster comes back), else a new random one.
func (c *Cluster) chooseToken() error {
	if c.cfg.Token != "" {
		return nil
	}
	b, err := os.ReadFile(filepath.Join(c.Nodes[0].DataDir, node.SecretFile))
	switch {
	case err == nil:
		c.cfg.Token = strings.TrimSpace(string(b))
	case errors.Is(err, os.ErrNotExist):
		c.cfg.Token = node.GenerateSecret()
	default:
		return fmt.Errorf("%s: %w", c.Nodes[0].Name, err)
	}
	return nil
}

// StartNode (re)starts one node process; join lists gossip addresses (a
// restart passes none: the node rejoins from its data dir).
func (c *Cluster) StartNode(ctx context.Context, n *Node, join []string) error {
	args := []string{"node", "--name", n.Name, "--data-dir", n.DataDir, "--http-addr", n.HTTPAddr,
		"--gossip-addr", n.GossipAddr, "--p2p-addr", n.P2PAddr, "--blob-addr", "127.0.0.1:0", "--no-mdns", "--profile", c.cfg.Profile,
		"--log-level", "debug"}
	for _, j := range join {
		args = append(args, "--join", j)
	}
	if n.HTTPSAddr != "" {
		args = append(args, "--https-addr", n.HTTPSAddr)
	}
	args = append(args, c.cfg.ExtraArgs...)
	args = append(args, n.ExtraArgs...)
	logf, err := os.OpenFile(n.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(c.cfg.Binary, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "RBEE_NODE=", "RBEE_TOKEN=", "RBEE_DATA_DIR=", "RBEE_CA=", node.CAFingerprintEnv+"=", node.ClusterTokenEnv+"="+c.cfg.Token)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", n.Name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	n.mu.Lock()
	n.cmd, n.done, n.started = cmd, done, time.Now()
	n.mu.Unlock()
	return nil
}

// Kill sends SIGKILL to a node (a crash) and waits for it to exit.
func (c *Cluster) Kill(n *Node) error { return c.signal(n, syscall.SIGKILL, 10*time.Second) }

// Stop sends SIGTERM and waits up to 20 s, then kills.
func (c *Cluster) Stop(n *Node) error {
	if err := c.signal(n, syscall.SIGTERM, 20*time.Second); err != nil {
		return c.Kill(n)
	}
	return nil
}

func (c *Cluster) signal(n *Node, sig syscall.Signal, wait time.Duration) error {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
		return nil
	case <-time.After(wait):
		return fmt.Errorf("%s did not exit after %v", n.Name, sig)
	}
}

// Close stops every node, then the worker processes the nodes started
// (a node leaves its workers running across its own restarts).
func (c *Cluster) Close() {
	var wg sync.WaitGroup
	for _, n := range c.Nodes {
		wg.Add(1)
		go func() { defer wg.Done(); _ = c.Stop(n) }()
	}
	wg.Wait()
	for _, n := range c.Nodes {
		StopWorkers(n.DataDir)
	}
}

// StopWorkers stops the worker processes recorded in a node's data dir.
func StopWorkers(dataDir string) {
	m, err := process.New(process.Config{Dir: node.ProcessesDir(dataDir), Host: "127.0.0.1", PollInterval: time.Second})
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_ = m.StopAll(ctx, 5*time.Second)
	_ = m.Close()
}

// WaitHealthy polls the node's /health until it answers or ctx ends.
func WaitHealthy(ctx context.Context, n *Node) error {
	cl := n.Client()
	for {
		if !n.Running() {
			return errors.New("process exited")
		}
		hctx, cancel := context.WithTimeout(ctx, time.Second)
		err := cl.Health(hctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not healthy: %w", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Status is the part of the status operation's result the harness reads.
type Status struct {
	Node   string `json:"node"`
	Leader string `json:"leader"`
	Nodes  []struct {
		Name  string `json:"name"`
		State string `json:"state"`
		Voter bool   `json:"voter"`
		// StateSince: when State last changed in the answering node's view.
		StateSince *time.Time `json:"state_since"`
		// Suffrage is the node's place in raft's configuration ("" while
		// it is not in it).
		Suffrage string `json:"suffrage"`
		// Capabilities is set once the registry holds the node's.
		Capabilities *struct{} `json:"capabilities"`
	} `json:"nodes"`
}

// GetStatus runs the status operation on n as the CLI does by default:
// past api.StatusListAll nodes it lists the leader, the voters and the
// nodes that are not alive only (cheap to poll).
func GetStatus(ctx context.Context, n *Node) (Status, error) { return getStatus(ctx, n, false) }

// GetStatusAll is GetStatus listing every node however many there are.
func GetStatusAll(ctx context.Context, n *Node) (Status, error) { return getStatus(ctx, n, true) }

func getStatus(ctx context.Context, n *Node, all bool) (Status, error) {
	var st Status
	err := n.Client().Result(ctx, api.StatusRequest{All: all}, &st, nil)
	return st, err
}

// WaitConverged polls until every running node reports the same leader and
// want alive voters.
func (c *Cluster) WaitConverged(ctx context.Context, want int) (string, error) {
	var last error
	for {
		leader, err := c.converged(ctx, want)
		if err == nil {
			return leader, nil
		}
		last = err
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("cluster did not converge: %w", last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (c *Cluster) converged(ctx context.Context, want int) (string, error) {
	leader := ""
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := GetStatus(sctx, n)
		cancel()
		if err != nil {
			return "", fmt.Errorf("%s: %w", n.Name, err)
		}
		if st.Leader == "" {
			return "", fmt.Errorf("%s sees no leader", n.Name)
		}
		if leader != "" && st.Leader != leader {
			return "", fmt.Errorf("%s sees leader %s, others %s", n.Name, st.Leader, leader)
		}
		leader = st.Leader
		alive := 0
		for _, m := range st.Nodes {
			if m.State == "alive" && m.Voter {
				alive++
			}
		}
		if alive != want {
			return "", fmt.Errorf("%s sees %d alive voters, want %d", n.Name, alive, want)
		}
	}
	return leader, nil
}

// ByName returns the node with that name.
func (c *Cluster) ByName(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}
