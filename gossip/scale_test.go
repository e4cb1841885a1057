package gossip

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/stretchr/testify/require"
)

// simMembers starts n members on one in-memory memberlist.MockNetwork,
// each joined through a random member started before it (a few joins at
// a time), and returns them with when the last join returned.
func simMembers(t testing.TB, n int, profile string) ([]*Gossip, time.Time) {
	gs, _, joined := simMembersWithReach(t, n, profile, 1)
	return gs, joined
}

// reachCounter counts the members that received each broadcast payload
// (keyed by its first 16 bytes).
type reachCounter struct {
	mu   sync.Mutex
	seen map[string]int
}

func (r *reachCounter) count(msg []byte) {
	k := string(msg[:min(16, len(msg))])
	r.mu.Lock()
	r.seen[k]++
	r.mu.Unlock()
}

func (r *reachCounter) reached(key string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seen[key]
}

type reachDelegate struct{ r *reachCounter }

func (d reachDelegate) LocalState() []byte          { return nil }
func (d reachDelegate) MergeRemoteState(buf []byte) {}
func (d reachDelegate) NotifyMsg(msg []byte)        { d.r.count(msg) }

func simMembersWithReach(t testing.TB, n int, profile string, scale float64) ([]*Gossip, *reachCounter, time.Time) {
	t.Helper()
	// MockNetwork's maps are not safe for concurrent use: every transport
	// is made before any member runs.
	var mn memberlist.MockNetwork
	reach := &reachCounter{seen: map[string]int{}}
	trans := make([]*memberlist.MockTransport, n)
	for i := range trans {
		trans[i] = mn.NewTransport(fmt.Sprintf("m%04d", i))
	}
	gs := make([]*Gossip, n)
	for i := range gs {
		cfg := DefaultConfig()
		cfg.NodeID = fmt.Sprintf("m%04d", i)
		cfg.Secret = []byte("cluster-secret")
		cfg.Profile = profile
		cfg.Meta = Meta{Name: "hive-" + cfg.NodeID, Version: "test"}
		cfg.Transport = newLossyPackets(trans[i])
		cfg.EventBuffer = n + 16
		cfg.Delegate = reachDelegate{r: reach}
		cfg.TimeScale = scale
		g, err := New(cfg)
		require.NoError(t, err)
		if os.Getenv("RBEE_SCALE_SIM_SETTLE") == "0" {
			g.settleBase = 0 // to compare with memberlist alone
		}
		t.Cleanup(func() { _ = g.Close() })
		require.NoError(t, g.Start(context.Background()))
		gs[i] = g
		go drainEvents(g)
	}
	// joiners bounds concurrent joins: a lab's machines power on over
	// seconds, not all in the same millisecond.
	const joiners = 8
	// joinTries bounds the attempts of one member to join.
	const joinTries = 3
	sem := make(chan struct{}, joiners)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := 1; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			// A node retries its join through another member, as rbee
			// nodes do (node/reconnect.go): at a thousand members in one
			// process a push/pull now and then outlasts memberlist's TCP
			// timeout.
			for range joinTries {
				seed := gs[rand.IntN(i)]
				// memberlist's own TCP timeout (scaled) ends a stuck
				// push/pull first.
				ctx, cancel := context.WithTimeout(context.Background(), scaleDuration(30*time.Second, max(1, scale)))
				_, errs[i] = gs[i].Join(ctx, []string{seed.Addr()})
				cancel()
				if errs[i] == nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "member %d", i)
	}
	return gs, reach, time.Now()
}

// lossyPackets delivers MockTransport's packets from a queue of its own,
// like UDP: a full queue drops the packet. MockTransport hands a packet to
// the receiver's unbuffered channel while the sender waits, so two members
// answering each other's probes from their packet handlers wait for each
// other for ever; at a hundred members that happens within seconds.
type lossyPackets struct {
	*memberlist.MockTransport
	q    chan lossyPacket
	done chan struct{}
	once sync.Once
}

type lossyPacket struct {
	b    []byte
	addr memberlist.Address
}

// lossyQueue: a generous socket buffer (256 did not converge at 300
// members).
const lossyQueue = 4096

func newLossyPackets(t *memberlist.MockTransport) *lossyPackets {
	l := &lossyPackets{MockTransport: t, q: make(chan lossyPacket, lossyQueue), done: make(chan struct{})}
	go func() {
		for {
			select {
			case <-l.done:
				return
			case p := <-l.q:
				_, _ = l.MockTransport.WriteToAddress(p.b, p.addr)
			}
		}
	}()
	return l
}

func (l *lossyPackets) WriteTo(b []byte, addr string) (time.Time, error) {
	return l.WriteToAddress(b, memberlist.Address{Addr: addr})
}

func (l *lossyPackets) WriteToAddress(b []byte, addr memberlist.Address) (time.Time, error) {
	select {
	case l.q <- lossyPacket{b: append([]byte(nil), b...), addr: addr}:
	default: // dropped, as a full socket buffer would
	}
	return time.Now(), nil
}

func (l *lossyPackets) Shutdown() error {
	l.once.Do(func() { close(l.done) })
	return l.MockTransport.Shutdown()
}

func drainEvents(g *Gossip) {
	for range g.Events() {
	}
}

// waitConverged waits until every member counts n alive members and
// returns how long the first and the last took from t0.
func waitConverged(t testing.TB, gs []*Gossip, t0 time.Time, limit time.Duration) (first, all time.Duration) {
	t.Helper()
	done := make([]bool, len(gs))
	left := len(gs)
	deadline := time.Now().Add(limit)
	for left > 0 {
		require.True(t, time.Now().Before(deadline), "%d of %d members do not see all alive after %v", left, len(gs), limit)
		for i, g := range gs {
			if done[i] || g.NumMembers() < len(gs) {
				continue
			}
			done[i] = true
			left--
			d := time.Since(t0)
			if first == 0 {
				first = d
			}
			all = d
		}
		time.Sleep(20 * time.Millisecond)
	}
	return first, all
}

// TestMockNetworkCluster: members on the in-memory transport (what the
// scale simulation uses) converge, gossip metadata and count the bytes
// they send.
func TestMockNetworkCluster(t *testing.T) {
	const n = 16
	gs, t0 := simMembers(t, n, ProfileLocal)
	waitConverged(t, gs, t0, waitFor)
	for _, g := range gs {
		m, ok := g.Member("m0003")
		require.True(t, ok)
		require.Equal(t, "hive-m0003", m.Meta.Name)
	}
	before := gs[5].SentBytes()
	require.Eventually(t, func() bool { return gs[5].SentBytes() > before }, waitFor, tick, "probes and gossip are counted")
}

// TestSentBytesOverUDPAndTCP: the real transport counts too.
func TestSentBytesOverUDPAndTCP(t *testing.T) {
	gs := cluster(t, "a", "b")
	for _, g := range gs {
		require.Positive(t, g.SentBytes(), "%s sent nothing", g.LocalMember().ID)
	}
}

// TestScaleSimulation measures gossip at up to a thousand members in this
// process (memberlist's in-memory transport, real encryption) and prints
// one JSON line per member count: time until the first and every member
// see all alive, and bytes sent per member per second at idle and while
// every member publishes a load report of loadBytes every loadEvery, as
// rbee nodes do. Past what two cores keep up with, members run in slow
// motion (Config.TimeScale: n/simMembersPerCore/2 by default, or
// RBEE_SCALE_SIM_TIMESCALE) and every figure is given in the profile's
// time (durations divided by the scale, rates multiplied). Opt in:
//
//	RBEE_SCALE_SIM=1 [RBEE_SCALE_SIM_NODES=10,100,300,1000] [RBEE_SCALE_SIM_TIMESCALE=k] go test -run TestScaleSimulation -v ./gossip/
//
// RBEE_SCALE_SIM_TRAFFIC=0 measures convergence only.
func TestScaleSimulation(t *testing.T) {
	if testing.Short() || os.Getenv("RBEE_SCALE_SIM") == "" {
		t.Skip("set RBEE_SCALE_SIM=1 (minutes of CPU)")
	}
	counts := []int{10, 100, 300, 1000}
	if s := os.Getenv("RBEE_SCALE_SIM_NODES"); s != "" {
		counts = nil
		for _, f := range strings.Split(s, ",") {
			c, err := strconv.Atoi(strings.TrimSpace(f))
			require.NoError(t, err)
			counts = append(counts, c)
		}
	}
	profile := os.Getenv("RBEE_SCALE_SIM_PROFILE")
	var scale float64
	if s := os.Getenv("RBEE_SCALE_SIM_TIMESCALE"); s != "" {
		var err error
		scale, err = strconv.ParseFloat(s, 64)
		require.NoError(t, err)
	}
	for _, n := range counts {
		k := scale
		if k == 0 {
			k = float64(n) / simMembersPerCore / 2
		}
		k = max(1, k) // Config.TimeScale never speeds members up
		res := simulate(t, n, profile, k)
		b, err := json.Marshal(res)
		require.NoError(t, err)
		fmt.Println(string(b))
	}
}

const (
	// simMembersPerCore: members at lan timings one core keeps up with in
	// this process (100 members converge as fast at scale 1 as slowed
	// down; 300 do not: DESIGN.md).
	simMembersPerCore = 100
	// loadBytes is a load report of five workers as a node broadcasts it
	// (JSON, measured: about 230 bytes a worker plus the header), cut to
	// what one broadcast may carry.
	loadBytes = MaxBroadcastSize
	// loadEvery is how often a node republishes its load report.
	loadEvery = 3 * time.Second
	// window is how long traffic is measured.
	window = 10 * time.Second
)

func simulate(t *testing.T, n int, profile string, k float64) map[string]any {
	if profile == "" {
		profile = ProfileForSize(n)
	}
	// slow: a duration of the profile's time in this process's time.
	slow := func(d time.Duration) time.Duration { return scaleDuration(d, k) }
	// ms: a duration measured here in the profile's time.
	ms := func(d time.Duration) int64 { return int64(float64(d.Milliseconds()) / k) }
	start := time.Now()
	gs, reach, joined := simMembersWithReach(t, n, profile, k)
	// 5 minutes, and 30 s more per hundred members past 300, of the
	// profile's time.
	first, all := waitConverged(t, gs, start, slow(5*time.Minute+time.Duration(max(0, n-300))*300*time.Millisecond))
	res := map[string]any{"members": n, "profile": profile, "time_scale": k,
		"joins_ms": ms(joined.Sub(start)), "converge_first_ms": ms(first), "converge_all_ms": ms(all)}
	if os.Getenv("RBEE_SCALE_SIM_TRAFFIC") == "0" {
		return res // convergence only
	}
	// Right after the joins members still settle (settle.go): measure
	// that, then idle once the settle window has passed.
	res["settling_sent_bytes_per_s"] = sentRate(gs, slow(window), k, nil)
	res["settles_per_member"] = float64(totalSettles(gs)) / float64(n)
	st := settleFor(settleBaseLAN, settleWindowLAN, n, 0)
	if profile == ProfileLocal {
		st = settleFor(settleBaseLocal, settleWindowLocal, n, 0)
	}
	time.Sleep(slow(st.window - window + st.every))
	res["idle_sent_bytes_per_s"] = sentRate(gs, slow(window), k, nil)
	// Random bytes: a real report (JSON) compresses somewhat, random
	// bytes do not.
	payload := make([]byte, loadBytes)
	for i := range payload {
		payload[i] = byte(rand.IntN(256))
	}
	res["load_sent_bytes_per_s"] = sentRate(gs, slow(window), k, func(stop <-chan struct{}) {
		tick := time.NewTicker(slow(loadEvery) / time.Duration(n))
		defer tick.Stop()
		for i := 0; ; i = (i + 1) % n {
			select {
			case <-stop:
				return
			case <-tick.C:
				_ = gs[i].Broadcast("load/"+gs[i].LocalMember().ID, payload)
			}
		}
	})
	res["queued_broadcasts_max"] = maxQueued(gs)
	// Reach: one broadcast from an idle cluster; memberlist sends it
	// RetransmitMult×log10(n+1) times and members do not relay it, so
	// it reaches that many members at most (push/pull carries the rest).
	time.Sleep(slow(3 * time.Second))
	key := fmt.Sprintf("reach-probe-%04d", n)
	require.NoError(t, gs[0].Broadcast("", []byte(key)))
	time.Sleep(slow(5 * time.Second))
	res["one_broadcast_reached_members"] = reach.reached(key[:16])
	for _, g := range gs {
		_ = g.Close()
	}
	return res
}

// sentRate measures every member's bytes sent per second over d while
// load (if any) runs, and summarises them per second of the profile's
// time (members slowed down k times send k times less a second).
func sentRate(gs []*Gossip, d time.Duration, k float64, load func(stop <-chan struct{})) map[string]float64 {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	if load != nil {
		wg.Add(1)
		go func() { defer wg.Done(); load(stop) }()
	}
	before := make([]uint64, len(gs))
	for i, g := range gs {
		before[i] = g.SentBytes()
	}
	t0 := time.Now()
	time.Sleep(d)
	el := time.Since(t0).Seconds()
	rates := make([]float64, len(gs))
	for i, g := range gs {
		rates[i] = float64(g.SentBytes()-before[i]) / el * k
	}
	close(stop)
	wg.Wait()
	sort.Float64s(rates)
	return map[string]float64{"median": rates[len(rates)/2], "p95": rates[len(rates)*95/100], "max": rates[len(rates)-1]}
}

func maxQueued(gs []*Gossip) int {
	m := 0
	for _, g := range gs {
		m = max(m, g.QueuedBroadcasts())
	}
	return m
}

func totalSettles(gs []*Gossip) uint64 {
	var s uint64
	for _, g := range gs {
		s += g.settles.Load()
	}
	return s
}
