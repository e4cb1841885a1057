package consensus_test

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/consensus"
)

// countingNet counts the raft connections a server accepted that have not
// ended (raft's handler closes its side when the stream ends).
type countingNet struct {
	consensus.Network
	open, accepted atomic.Int64
	mu             sync.Mutex
	openFrom       map[string]int // open accepted connections by the dialer's id
}

// openFromPeer is how many accepted raft connections from server id are
// open.
func (n *countingNet) openFromPeer(id string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.openFrom[id]
}

func (n *countingNet) countFrom(c net.Conn, d int) {
	p, ok := c.(consensus.PeerIdentifier)
	if !ok {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.openFrom == nil {
		n.openFrom = map[string]int{}
	}
	n.openFrom[p.RemotePeerID()] += d
}

func (n *countingNet) RaftListener() net.Listener {
	return countingListener{Listener: n.Network.RaftListener(), n: n}
}

type countingListener struct {
	net.Listener
	n *countingNet
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.n.open.Add(1)
	l.n.accepted.Add(1)
	l.n.countFrom(c, 1)
	return &countedConn{Conn: c, n: l.n}, nil
}

type countedConn struct {
	net.Conn
	n    *countingNet
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() {
		c.n.open.Add(-1)
		c.n.countFrom(c.Conn, -1)
	})
	return c.Conn.Close()
}

// TestIdleRaftStreamsEnd: the transport keeps a connection a peer, and
// the accepting side keeps a read buffer (256 KB on servers of earlier
// versions) and a goroutine for each. After an election and a burst of writes, the
// streams nobody uses end: the leader keeps none of the candidates' vote
// connections, and a follower only the one the heartbeats use.
func TestIdleRaftStreamsEnd(t *testing.T) {
	for _, tc := range []struct {
		name string
		idle time.Duration
	}{
		{"idle streams end", 300 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl, nets, leader := countingCluster(t, "idle", tc.idle)
			burst(t, leader, 1)
			// An election: the survivors campaign and dial each other.
			cl.stop(leader.id)
			leader = cl.waitLeader()
			burst(t, leader, 100)

			var total int64
			for _, n := range cl.running() {
				total += nets.get(n.id).accepted.Load()
			}
			require.Greater(t, total, int64(2), "the survivors accepted raft connections")
			last := map[string]int64{}
			ok := assert.Eventually(t, func() bool {
				done := true
				for _, n := range cl.running() {
					want := int64(1)
					if n == leader {
						want = 0
					}
					last[n.id] = nets.get(n.id).open.Load()
					done = done && last[n.id] == want
				}
				return done
			}, 15*time.Second, 20*time.Millisecond)
			require.True(t, ok, "open accepted raft connections (leader %s): %v", leader.id, last)
		})
	}
}

// TestOneRaftConnectionPerFollower: the leader sends a follower its
// heartbeats and its appends on one connection (each kept connection
// holds its buffers on both sides for as long as it is kept: 256 KB each
// with hashicorp/raft's NetworkTransport, which servers of earlier
// versions run). Heartbeats go every few tens of
// milliseconds through bursts of writes, so they often meet an append in
// flight; right after the bursts, long before an idle stream would end,
// every follower has one connection from the leader open.
func TestOneRaftConnectionPerFollower(t *testing.T) {
	cl, nets, leader := countingCluster(t, "pool", time.Hour)
	for b := range 5 {
		burst(t, leader, 100*b)
		time.Sleep(50 * time.Millisecond) // a heartbeat or two between bursts
	}
	// The leader now (on a loaded machine it may have changed; the new
	// one's connections are counted the same way).
	leader = cl.waitLeader()
	last := map[string]int{}
	ok := assert.Eventually(t, func() bool {
		done := true
		for _, n := range cl.running() {
			if n == leader {
				continue
			}
			last[n.id] = nets.get(n.id).openFromPeer(leader.id)
			done = done && last[n.id] == 1
		}
		return done
	}, 5*time.Second, 20*time.Millisecond)
	require.True(t, ok, "open raft connections from the leader %s: %v", leader.id, last)
}

// countingNets holds every server's countingNet, by id.
type countingNets struct {
	mu   sync.Mutex
	nets map[string]*countingNet
}

func (c *countingNets) get(id string) *countingNet {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nets[id]
}

// countingCluster starts three servers (ids from prefix) whose raft
// listeners count what they accept, with idle as RaftConnIdle, and waits
// for a leader.
func countingCluster(t *testing.T, prefix string, idle time.Duration) (*cluster, *countingNets, *testNode) {
	cl := newCluster(t)
	cn := &countingNets{nets: map[string]*countingNet{}}
	cl.wrap = func(id string, nw consensus.Network) consensus.Network {
		n := &countingNet{Network: nw}
		cn.mu.Lock()
		cn.nets[id] = n
		cn.mu.Unlock()
		return n
	}
	for _, id := range ids(prefix, 3) {
		cfg := cl.config(id)
		cfg.BootstrapExpect = 3
		cfg.RaftConnIdle = idle
		cl.start(cfg)
	}
	return cl, cn, cl.waitLeader()
}

// burst applies 20 registry writes at once through leader, keys from on.
func burst(t *testing.T, leader *testNode, from int) {
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() { apply(t, leader, hostPort("h", from+i)) })
	}
	wg.Wait()
}
