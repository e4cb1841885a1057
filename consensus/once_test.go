package consensus_test

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/consensus"
	"github.com/rbee-project/rbee/fsm"
)

// lossyForward loses the answer to forwarded requests while armed: the
// request reaches the leader, which commits and answers, and the caller
// reads an error, as when the leader dies between the two.
type lossyForward struct {
	consensus.Network
	mu    sync.Mutex
	armed bool
	// lost receives one value per lost answer and then waits for release,
	// so the test can write in between.
	lost    chan struct{}
	release chan struct{}
}

func (l *lossyForward) arm() {
	l.mu.Lock()
	l.armed = true
	l.mu.Unlock()
}

func (l *lossyForward) Dial(ctx context.Context, id string, kind consensus.ConnKind) (net.Conn, error) {
	conn, err := l.Network.Dial(ctx, id, kind)
	if err != nil || kind != consensus.ConnForward {
		return conn, err
	}
	l.mu.Lock()
	lose := l.armed
	l.armed = false
	l.mu.Unlock()
	if !lose {
		return conn, nil
	}
	return &lostAnswer{Conn: conn, l: l}, nil
}

type lostAnswer struct {
	net.Conn
	l *lossyForward
}

// Read reads the whole answer, then reports it lost.
func (c *lostAnswer) Read([]byte) (int, error) {
	_, _ = io.Copy(io.Discard, c.Conn) // the leader answers, then closes
	c.l.lost <- struct{}{}
	<-c.l.release
	return 0, errors.New("connection reset (test: answer lost)")
}

// lossyNets wraps every started server's network in a lossyForward
// (cluster.wrap).
type lossyNets struct {
	mu   sync.Mutex
	nets map[string]*lossyForward
}

func (l *lossyNets) wrap(id string, nw consensus.Network) consensus.Network {
	lf := &lossyForward{Network: nw, lost: make(chan struct{}, 1), release: make(chan struct{})}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.nets == nil {
		l.nets = map[string]*lossyForward{}
	}
	l.nets[id] = lf
	return lf
}

func (l *lossyNets) get(id string) *lossyForward {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.nets[id]
}

type outcome struct {
	res any
	err error
}

// applyLosingAnswer arms lossy, writes hostPort("h", 1) through n in the
// background, and returns once lossy lost the answer to a forward of it
// (the leader committed it); the outcome comes once lossy is released.
func applyLosingAnswer(t *testing.T, n *testNode, lossy *lossyForward) <-chan outcome {
	t.Helper()
	lossy.arm()
	done := make(chan outcome, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		b, _ := fsm.Encode(hostPort("h", 1))
		res, err := n.c.Apply(ctx, b)
		done <- outcome{res, err}
	}()
	select {
	case <-lossy.lost:
	case <-time.After(15 * time.Second):
		t.Fatal("the forwarded write never reached the leader")
	}
	return done
}

// awaitOutcome waits for the retry of an apply whose answer was lost.
func awaitOutcome(t *testing.T, done <-chan outcome) outcome {
	t.Helper()
	select {
	case o := <-done:
		return o
	case <-time.After(20 * time.Second):
		t.Fatal("the retry did not finish")
	}
	return outcome{}
}

// TestApplyOnceAfterLostAnswer: a follower's forwarded write commits, its
// answer is lost, another write to the same entry commits, and the
// follower retries. With exactly-once writes (registry version 4) the
// retry returns the first Result and the later write stays; a registry
// below version 4 applies the retry again, undoing the later write (what
// the envelope prevents).
func TestApplyOnceAfterLostAnswer(t *testing.T) {
	for _, tc := range []struct {
		version  int
		wantPort int
	}{
		{fsm.Version, 2},
		{3, 1},
	} {
		t.Run("version "+string(rune('0'+tc.version)), func(t *testing.T) {
			cl := newCluster(t)
			var nets lossyNets
			cl.wrap = nets.wrap
			for _, id := range ids("once", 3) {
				cfg := cl.config(id)
				cfg.BootstrapExpect = 3
				cl.start(cfg)
			}
			leader := cl.waitLeader()
			apply(t, leader, fsm.SetRegistryVersion{Version: tc.version})
			f := cl.followers(leader)[0]
			waitVersion(t, f, tc.version)

			lossy := nets.get(f.id)
			done := applyLosingAnswer(t, f, lossy)
			first, ok := leader.fsm.Host("h")
			require.True(t, ok, "the leader applied the write before answering")
			require.Equal(t, 1, first.Port)
			firstIndex := leader.fsm.Index()
			later := apply(t, leader, hostPort("h", 2))
			close(lossy.release)

			o := awaitOutcome(t, done)
			require.NoError(t, o.err)
			res := o.res.(fsm.Result)
			if tc.version >= fsm.OnceVersion {
				require.Equal(t, firstIndex, res.Index, "the retry answers with the first attempt's Result")
			} else {
				require.Greater(t, res.Index, later.Index, "without the envelope the retry applies again")
			}
			require.NoError(t, leader.c.Barrier(context.Background()))
			h, _ := leader.fsm.Host("h")
			require.Equal(t, tc.wantPort, h.Port)
		})
	}
}

// TestApplyRebasesAnExpiredRequest: a request whose Base is more than
// fsm.OnceWindow indexes old, none of whose attempts can have applied, is
// sent again with the leader's applied index and commits once.
func TestApplyRebasesAnExpiredRequest(t *testing.T) {
	if testing.Short() {
		t.Skip("writes fsm.OnceWindow entries")
	}
	cl := newCluster(t)
	cfg := cl.config("rebase-1")
	cfg.BootstrapExpect = 1
	n := cl.start(cfg)
	cl.waitLeader()
	apply(t, n, fsm.SetRegistryVersion{Version: fsm.Version})
	// Move the log past the window, many writes at a time (raft batches
	// them into few disk writes).
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b, err := fsm.Encode(host("filler"))
	require.NoError(t, err)
	sem := make(chan struct{}, 256)
	var wg sync.WaitGroup
	for range fsm.OnceWindow + 10 {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			_, err := n.c.Apply(ctx, b)
			require.NoError(t, err)
		}()
	}
	wg.Wait()
	require.Greater(t, n.fsm.Index(), uint64(fsm.OnceWindow+1))

	cmd, err := fsm.Encode(hostPort("h", 7))
	require.NoError(t, err)
	res, err := consensus.ApplyWithBase(n.c, ctx, cmd, 1)
	require.NoError(t, err)
	require.Equal(t, int64(1), consensus.Rebased(n.c), "refused as expired once, then sent with the leader's index")
	require.Equal(t, n.fsm.Index(), res.(fsm.Result).Index)
	h, ok := n.fsm.Host("h")
	require.True(t, ok)
	require.Equal(t, 7, h.Port)
}

func hostPort(name string, port int) fsm.Command {
	return fsm.UpsertHost{Host: fsm.Host{Name: name, Host: "10.0.0.1", Port: port, State: fsm.HostKnown}}
}

func waitVersion(t *testing.T, n *testNode, v int) {
	t.Helper()
	require.Eventually(t, func() bool { return n.fsm.RegistryVersion() == v }, 10*time.Second, 10*time.Millisecond)
}

// TestApplyRetriesAfterLateLostAnswer: a follower's forwarded write
// commits and its answer is lost (the leader died, or its connection did)
// only once the Apply has already spent ApplyTimeout overall, as under
// repeated leader kills. The cluster is healthy and commits, so the retry
// must return the first Result (the Once envelope dedups it), not end with
// no_quorum "the leader did not commit the write" and ErrOutcomeUnknown.
func TestApplyRetriesAfterLateLostAnswer(t *testing.T) {
	cl := newCluster(t)
	var nets lossyNets
	cl.wrap = nets.wrap
	for _, id := range ids("late", 3) {
		cfg := cl.config(id)
		cfg.BootstrapExpect = 3
		cfg.ApplyTimeout = time.Second
		cl.start(cfg)
	}
	leader := cl.waitLeader()
	apply(t, leader, fsm.SetRegistryVersion{Version: fsm.Version})
	f := cl.followers(leader)[0]
	waitVersion(t, f, fsm.Version)

	lossy := nets.get(f.id)
	done := applyLosingAnswer(t, f, lossy)
	time.Sleep(1500 * time.Millisecond) // the attempt's connection breaks late
	close(lossy.release)
	o := awaitOutcome(t, done)
	require.NoError(t, o.err, "a healthy cluster committed the write; the retry must say so")
}
