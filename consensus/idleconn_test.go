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
	return &countedConn{Conn: c, n: l.n}, nil
}

type countedConn struct {
	net.Conn
	n    *countingNet
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.n.open.Add(-1) })
	return c.Conn.Close()
}

// TestIdleRaftStreamsEnd: raft pools its connections for as long as the
// transport lives, and the accepting side keeps a 256 KB buffer and a
// goroutine for each. After an election and a burst of writes, the
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
			cl := newCluster(t)
			var mu sync.Mutex
			nets := map[string]*countingNet{}
			cl.wrap = func(id string, nw consensus.Network) consensus.Network {
				n := &countingNet{Network: nw}
				mu.Lock()
				nets[id] = n
				mu.Unlock()
				return n
			}
			for _, id := range ids("idle", 3) {
				cfg := cl.config(id)
				cfg.BootstrapExpect = 3
				cfg.RaftConnIdle = tc.idle
				cl.start(cfg)
			}
			leader := cl.waitLeader()
			burst := func(leader *testNode, from int) {
				var wg sync.WaitGroup
				for i := range 20 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						apply(t, leader, hostPort("h", from+i))
					}()
				}
				wg.Wait()
			}
			burst(leader, 1)
			// An election: the survivors campaign and dial each other.
			cl.stop(leader.id)
			leader = cl.waitLeader()
			burst(leader, 100)

			mu.Lock()
			defer mu.Unlock()
			var total int64
			for _, n := range cl.running() {
				total += nets[n.id].accepted.Load()
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
					last[n.id] = nets[n.id].open.Load()
					done = done && last[n.id] == want
				}
				return done
			}, 15*time.Second, 20*time.Millisecond)
			require.True(t, ok, "open accepted raft connections (leader %s): %v", leader.id, last)
		})
	}
}
