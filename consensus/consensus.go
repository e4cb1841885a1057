// Package consensus runs rbee's Raft group: bootstrap, a leader loop that
// turns gossip membership into raft servers and registry entries, and write
// forwarding from followers to the leader.
//
// The replicated state is an *fsm.FSM. The transport speaks raft's
// NetworkTransport wire format over a Network supplied by the node (libp2p
// in production, TCP in tests); raft server ids and addresses are peer ids.
package consensus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/internal/recent"
)

// Errors returned (wrapped) by this package.
var (
	// ErrNoLeader: no leader was known before the context ended.
	ErrNoLeader = errors.New("consensus: no leader")
	// ErrNotLeader: the call needs this server to be the leader.
	ErrNotLeader = errors.New("consensus: not the leader")
	// ErrClosed: Close was called (or Start never was).
	ErrClosed = errors.New("consensus: closed")
	// ErrRejected: the registry rejected the command; the error also wraps
	// the fsm sentinel (fsm.ErrInvalid, fsm.ErrNotFound, ...).
	ErrRejected = errors.New("consensus: command rejected")
	// ErrConfig: the Config is invalid.
	ErrConfig = errors.New("consensus: invalid config")
	// ErrForward: a forwarded request failed in transit or the peer answered
	// with an error that is not a registry rejection.
	ErrForward = errors.New("consensus: forward failed")
	// ErrNoQuorum: no leader could be reached for NoLeaderTimeout (this
	// server is on the minority side of a partition, or the cluster lost
	// a majority of its voters). The message names the voters this
	// server's gossip view does not see alive.
	ErrNoQuorum = errors.New("consensus: no quorum")
	// ErrOutcomeUnknown: the write reached a leader but no answer came
	// back before the call gave up: it may still commit.
	ErrOutcomeUnknown = errors.New("consensus: the write was sent and may still commit")
	// ErrStoreFailing: this server cannot store new log entries (a full
	// disk): its replica of the registry falls behind (StoreError).
	ErrStoreFailing = errors.New("consensus: raft cannot store new registry entries on this node")
)

// MemberState is a member's gossip state.
type MemberState int

// Member states. The zero value is invalid so that a forgotten field is
// never mistaken for "alive".
const (
	MemberAlive MemberState = iota + 1
	MemberSuspect
	MemberFailed
	MemberLeft
)

// String returns the lower-case state name.
func (s MemberState) String() string {
	switch s {
	case MemberAlive:
		return "alive"
	case MemberSuspect:
		return "suspect"
	case MemberFailed:
		return "failed"
	case MemberLeft:
		return "left"
	}
	return "MemberState(" + strconv.Itoa(int(s)) + ")"
}

// Member is one gossip member as the node sees it. ID is the peer id.
type Member struct {
	ID              string
	Name            string
	HTTPAddr        string
	HTTPSAddr       string
	GossipAddr      string
	P2PAddrs        []string
	Version         string
	State           MemberState
	BootstrapExpect int
	// Cluster is the cluster the member's registry belongs to
	// (fsm.ClusterCA.ID; "" while it knows none).
	Cluster string
	// Replica: the member's build follows the registry by feed when it is
	// outside raft (feed.go); a leader then keeps it out of raft rather
	// than add it as a non-voter. False for older builds.
	Replica bool
}

// Server is one server of the raft configuration.
type Server struct {
	ID       string
	Address  string
	Suffrage string // "voter" or "nonvoter"
}

// Profiles select raft timings.
const (
	// ProfileLAN: a new leader in about 0.45–0.9 s after a leader dies.
	ProfileLAN = "lan"
	// ProfileLocal: tighter timings for in-process clusters (tests).
	ProfileLocal = "local"
)

// Config configures a Consensus. Start from DefaultConfig.
type Config struct {
	// DataDir holds raft/raft.db (log and stable store), raft/snapshots and
	// raft/applied-hint.
	DataDir string
	// LocalID is this server's peer id; it must equal Network.LocalID().
	LocalID string
	// LocalName is the human name of this node (for logs).
	LocalName string
	// BootstrapExpect: 0 bootstraps a single-node cluster unless Join is
	// set; N>0 waits for N alive members announcing the same N.
	BootstrapExpect int
	// Join: the node was started to join an existing cluster; it never
	// bootstraps alone (it waits to be added by the leader).
	Join bool
	// MaxVoters caps the voters; further members become non-voters.
	MaxVoters int
	// Network reaches the other servers.
	Network Network
	// FSM is the replicated registry.
	FSM *fsm.FSM
	// Members returns the gossip view, including failed and left members
	// for as long as gossip remembers them: a member absent from the list
	// is reaped. Called from the leader and bootstrap loops; must be safe
	// for concurrent use and fast. Nil means "no members".
	Members func() []Member
	// Member looks one member up as Members would list it; nil: found in
	// Members(). The leader's passes over changed members use it.
	Member func(id string) (Member, bool)
	// Profile is ProfileLAN or ProfileLocal.
	Profile string
	// ReconcileInterval is the period of the leader's full reconcile pass
	// (membership kicks trigger one at once as well).
	ReconcileInterval time.Duration
	// ReapGrace is how long a registry node must stay absent from
	// Members() (as seen by the current leader) before it is removed from
	// raft and the registry. 0 means the default; negative reaps at once.
	ReapGrace time.Duration
	// ApplyTimeout bounds one raft apply or membership change attempt.
	ApplyTimeout time.Duration
	// NoLeaderTimeout ends an Apply with ErrNoQuorum once no leader has
	// been reachable for this long; 0 waits for the caller's context.
	NoLeaderTimeout time.Duration
	// TrailingLogs is how many log entries stay after a snapshot (0: raft's
	// default, 10240). Small values force followers that were away to
	// catch up by snapshot.
	TrailingLogs uint64
	// SnapshotThreshold is how many new entries trigger a snapshot (0:
	// raft's default, 8192).
	SnapshotThreshold uint64
	// FeedRebalance is how long a replica follows a voter other than its
	// first choice before it moves to that one (plus up to as much again,
	// spread by id; 0: the default, 30 s).
	FeedRebalance time.Duration
	// RaftConnIdle is how long an outgoing raft connection may sit unused
	// before its stream is closed, freeing the peer's read buffer; the
	// next RPC on it opens another (0: the default, raftIdleAfter).
	RaftConnIdle time.Duration
	// Logger receives consensus and raft logs; nil discards.
	Logger *slog.Logger
}

// DefaultConfig returns the production defaults; callers set DataDir,
// LocalID, Network, FSM and Members.
func DefaultConfig() Config {
	return Config{
		MaxVoters:         5,                // 5 voters tolerate 2 failures; more only slow commits
		Profile:           ProfileLAN,       //
		ReconcileInterval: 30 * time.Second, // kicks do the prompt work; the pass repairs missed events
		ApplyTimeout:      10 * time.Second, // far above a LAN commit (ms), below a user's patience
		// An election takes about a second on a LAN; five seconds
		// without any leader means there is no majority to elect one.
		NoLeaderTimeout: 5 * time.Second,
		ReapGrace:       time.Minute, // longer than gossip needs to converge after a restart
		RaftConnIdle:    raftIdleAfter,
		FeedRebalance:   30 * time.Second, // long past a feed's start; a move costs a stream and a catch-up
	}
}

type timings struct {
	heartbeat, election, lease, commit time.Duration
	bootstrapPoll                      time.Duration
}

// profileTimings: raft's followers start an election after a random
// heartbeat timeout in [HT, 2·HT); a LAN round trip is ~1 ms, so HT=400 ms
// gives a new leader within about 0.45–0.9 s (median 0.69–0.94 s measured
// with `rbee bench failover --busy-cores 1` on a loaded 2-core machine,
// against 0.99–1.04 s with 500 ms) without spurious elections (none in 5
// minutes of `--watch` with a core busy). The leader lease (how long a
// leader keeps leading without hearing from a quorum) is as long as raft
// allows, HT: a dead leader's successor does not wait for it, while a live
// leader on a busy machine (a core taken by a browser starting) does not
// step down for a few late heartbeats, as it did with half of HT.
func profileTimings(p string) (timings, error) {
	switch p {
	case ProfileLAN, "":
		return timings{400 * time.Millisecond, 400 * time.Millisecond, 400 * time.Millisecond, 50 * time.Millisecond, time.Second}, nil
	case ProfileLocal:
		return timings{300 * time.Millisecond, 300 * time.Millisecond, 300 * time.Millisecond, 10 * time.Millisecond, 100 * time.Millisecond}, nil
	}
	return timings{}, fmt.Errorf("%w: unknown profile %q", ErrConfig, p)
}

// Bootstrap states, reported by BootstrapState and Stats()["bootstrap"].
const (
	BootstrapNotStarted     = "not-started"     // Start not called yet
	BootstrapExistingState  = "existing-state"  // restarted with raft state; no bootstrap
	BootstrapJoin           = "join"            // Join set: waits to be added by a leader
	BootstrapWaiting        = "waiting"         // BootstrapExpect: waiting for enough members
	BootstrapConflict       = "conflict"        // a member announces a different expect
	BootstrapDone           = "bootstrapped"    // this server bootstrapped the cluster
	BootstrapJoinedExisting = "joined-existing" // a peer already had a cluster; added by it
)

// BootstrapState returns one of the Bootstrap* constants.
func (c *Consensus) BootstrapState() string { return c.bootstrap.Load().(string) }

// LeaderEvent is sent to leadership subscribers when the known leader
// changes ("" while there is none).
type LeaderEvent struct {
	LeaderID string
	IsLeader bool
}

// leaderSubBuffer: leadership changes are rare; 16 absorbs a flapping burst.
const leaderSubBuffer = 16

// Consensus is one raft server. All methods are safe for concurrent use.
type Consensus struct {
	cfg Config
	log *slog.Logger
	tm  timings

	// foreign is the alive members seen carrying another cluster's
	// registry (id → their cluster), as this node's leader passes found
	// them; guarded by foreignMu.
	foreignMu sync.Mutex
	foreign   map[string]string

	store *raftboltdb.BoltStore
	snaps raft.SnapshotStore

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex // guards raft, transport, started
	raft      *raft.Raft
	transport *transport
	// throttle wraps transport for raft (see scale.go); set in Start.
	throttle *heartbeatThrottle
	// nonvoter: this server runs with a non-voter's timeouts (scale.go).
	nonvoter atomic.Bool
	// voter: this server is a voter in its newest configuration, and
	// configVoters that configuration's voters (watchSuffrage).
	voter        atomic.Bool
	configVoters atomic.Pointer[[]string]
	// feed: what this server heard as a replica (feed.go); feedServing
	// counts the replicas it feeds.
	feed         feedView
	feedServing  atomic.Int64
	feedRestores atomic.Int64
	relayed      atomic.Int64 // replicas' writes this voter relayed (relay)
	// leaderMu guards lastLeader, the leader last announced (noteLeader).
	leaderMu   sync.Mutex
	lastLeader string
	started    bool
	closeOnce  sync.Once
	closed     atomic.Bool

	// Members the leader loop is to look at (leader.go).
	dirtyMu     sync.Mutex
	dirty       map[string]struct{}
	dirtyAll    bool
	lastMembers atomic.Int64 // members in the last full pass
	// blindView: the last reconcile pass found this leader's gossip view
	// short of a majority of the voters (logged when it changes).
	blindView atomic.Bool

	kickLeader chan struct{}
	kickBoot   chan struct{}
	notifyCh   chan bool
	obsCh      chan raft.Observation
	observer   *raft.Observer

	bootstrap     atomic.Value // string
	leaderChanges atomic.Uint64

	subMu sync.Mutex
	subs  map[chan LeaderEvent]struct{}

	left *recent.Set[string] // servers that asked to leave, by id (leavingGrace)

	// rebased counts requests sent again with a newer Base (fsm.ErrExpired).
	rebased     atomic.Int64
	replay      *replayFSM
	lastContact atomic.Uint64 // unix ms of the newest leader contact known
	// storeFailing: raft's last store of new log entries failed (a full
	// disk): the replica falls behind while heartbeats still arrive.
	storeFailing     storeFailures
	persistedIndex   atomic.Uint64
	persistedContact atomic.Uint64
}

// New validates cfg and opens the stores under DataDir. Nothing runs until
// Start.
func New(cfg Config) (*Consensus, error) {
	switch {
	case cfg.DataDir == "":
		return nil, fmt.Errorf("%w: DataDir is empty", ErrConfig)
	case cfg.LocalID == "":
		return nil, fmt.Errorf("%w: LocalID is empty", ErrConfig)
	case cfg.Network == nil:
		return nil, fmt.Errorf("%w: Network is nil", ErrConfig)
	case cfg.FSM == nil:
		return nil, fmt.Errorf("%w: FSM is nil", ErrConfig)
	case cfg.Network.LocalID() != cfg.LocalID:
		return nil, fmt.Errorf("%w: LocalID %q differs from Network.LocalID %q", ErrConfig, cfg.LocalID, cfg.Network.LocalID())
	case cfg.BootstrapExpect < 0:
		return nil, fmt.Errorf("%w: BootstrapExpect %d", ErrConfig, cfg.BootstrapExpect)
	}
	def := DefaultConfig()
	if cfg.MaxVoters <= 0 {
		cfg.MaxVoters = def.MaxVoters
	}
	if cfg.ReconcileInterval <= 0 {
		cfg.ReconcileInterval = def.ReconcileInterval
	}
	if cfg.RaftConnIdle <= 0 {
		cfg.RaftConnIdle = def.RaftConnIdle
	}
	if cfg.FeedRebalance <= 0 {
		cfg.FeedRebalance = def.FeedRebalance
	}
	if cfg.ReapGrace == 0 {
		cfg.ReapGrace = def.ReapGrace
	} else if cfg.ReapGrace < 0 {
		cfg.ReapGrace = 0 // negative: reap on the first pass (tests)
	}
	if cfg.ApplyTimeout <= 0 {
		cfg.ApplyTimeout = def.ApplyTimeout
	}
	if cfg.Members == nil {
		cfg.Members = func() []Member { return nil }
	}
	tm, err := profileTimings(cfg.Profile)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "consensus", "node", cfg.LocalName)

	dir := filepath.Join(cfg.DataDir, "raft")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("consensus: create %s: %w", dir, err)
	}
	if err := prepareBoltFile(filepath.Join(dir, "raft.db")); err != nil {
		return nil, err
	}
	store, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db"), BoltOptions: boltOptions()})
	if err != nil {
		return nil, fmt.Errorf("consensus: open raft.db: %w", err)
	}
	// Retain 2 snapshots: the newest, plus one in case the newest is bad.
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, newHCLogger(log, "snapshots"))
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("consensus: snapshot store: %w", err)
	}
	c := &Consensus{
		cfg:        cfg,
		log:        log,
		tm:         tm,
		store:      store,
		snaps:      snaps,
		kickLeader: make(chan struct{}, 1),
		dirty:      map[string]struct{}{},
		kickBoot:   make(chan struct{}, 1),
		notifyCh:   make(chan bool, 16),
		obsCh:      make(chan raft.Observation, 64),
		subs:       map[chan LeaderEvent]struct{}{},
		left:       recent.New[string](leavingGrace),
	}
	hint, err := openAppliedHint(dir)
	if err != nil {
		store.Close()
		return nil, err
	}
	c.replay = &replayFSM{inner: cfg.FSM, hint: hint}
	// A snapshot installed from the leader brings the replica up to date
	// without storing an entry: a failure of stores before it is over.
	c.replay.restored = func() { c.storeFailing.note(nil) }
	if ms, err := store.GetUint64(keyLeaderContact); err == nil {
		c.lastContact.Store(ms)
		c.persistedContact.Store(ms)
	}
	c.bootstrap.Store(BootstrapNotStarted)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

// Start creates the raft server, serves forwarded requests, and bootstraps
// if the configuration says so (never over existing state). It returns
// once raft runs; bootstrap-expect waits in the background. ctx only
// bounds the start itself.
func (c *Consensus) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Load() {
		return ErrClosed
	}
	if c.started {
		return errors.New("consensus: already started")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	c.started = true

	hasState, err := raft.HasExistingState(c.store, c.store, c.snaps)
	if err != nil {
		return fmt.Errorf("consensus: read raft state: %w", err)
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(c.cfg.LocalID)
	rc.HeartbeatTimeout = c.tm.heartbeat
	rc.ElectionTimeout = c.tm.election
	rc.LeaderLeaseTimeout = c.tm.lease
	rc.CommitTimeout = c.tm.commit
	rc.ShutdownOnRemove = false
	rc.NotifyCh = c.notifyCh
	rc.Logger = newHCLogger(c.log, "raft")
	if c.cfg.TrailingLogs > 0 {
		rc.TrailingLogs = c.cfg.TrailingLogs
	}
	if c.cfg.SnapshotThreshold > 0 {
		rc.SnapshotThreshold = c.cfg.SnapshotThreshold
	}
	if err := raft.ValidateConfig(rc); err != nil {
		return fmt.Errorf("%w: %v", ErrConfig, err)
	}
	if !hasState {
		// A hint left from a log that is gone (a reset data dir) must not
		// speak for the new one.
		if err := c.replay.hint.reset(); err != nil {
			return err
		}
	} else {
		own, n, err := c.replayLocal(c.replay)
		switch {
		case err != nil:
			c.log.Warn("registry not restored before raft; raft restores its snapshot", "err", err)
		case own:
			rc.NoSnapshotRestoreOnStart = true
			c.log.Info("registry restored from the local snapshot and log", "index", c.cfg.FSM.Index(), "replayed", n)
		}
		c.persistedIndex.Store(c.replay.appliedByRaft())
	}

	sl := &streamLayer{ctx: c.ctx, nw: c.cfg.Network, ln: c.cfg.Network.RaftListener(), idle: c.cfg.RaftConnIdle}
	// Raft's NetworkTransport wire format with small buffers (see
	// transport): a follower's heartbeats and appends take turns on one
	// connection (lanes, see heartbeatThrottle; there is no pipeline).
	trans := newTransport(sl, raftRPCTimeout, c.log.With("part", "raft-net"))
	c.throttle = newHeartbeatThrottle(trans, rc.HeartbeatTimeout, c.ctx.Done())
	c.replay.applied = c.throttle.commits.wake
	if last, err := c.store.LastIndex(); err == nil {
		c.throttle.entriesStored(last)
	}
	// Raft reads the entry before every append it prepares (its index and
	// term go in the request), for every follower: idle appends to each
	// non-voter every CommitTimeout included. Without a cache that is a
	// bolt read and a msgpack decode each, 12% of an idle leader's CPU at
	// 100 nodes.
	logs, err := raft.NewLogCache(logCacheSize, storeNotifier{LogStore: c.store, h: c.throttle, failed: &c.storeFailing})
	if err != nil {
		trans.Close()
		return fmt.Errorf("consensus: log cache: %w", err)
	}
	r, err := raft.NewRaft(rc, c.replay, logs, c.store, c.snaps, c.throttle)
	if err != nil {
		trans.Close()
		if serr := c.checkSnapshots(); serr != nil {
			return serr
		}
		return fmt.Errorf("consensus: start raft: %w", err)
	}
	c.raft, c.transport = r, trans
	c.replay.unpinStart(r.AppliedIndex)
	c.throttle.commits.setSource(r)
	c.observer = raft.NewObserver(c.obsCh, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	r.RegisterObserver(c.observer)

	c.readSuffrage(r)
	c.wg.Add(6)
	go c.followFeeds()
	go c.persistLoop()
	go c.watchSuffrage()
	go c.serveForward(c.cfg.Network.ForwardListener())
	go c.monitorLeadership()
	go c.observe()

	switch {
	case hasState:
		c.bootstrap.Store(BootstrapExistingState)
		c.log.Info("raft has existing state; not bootstrapping")
	case c.cfg.BootstrapExpect == 0 && c.cfg.Join:
		c.bootstrap.Store(BootstrapJoin)
		c.log.Info("joining: waiting for a leader to add this server")
	case c.cfg.BootstrapExpect <= 1:
		err := r.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{
			ID: raft.ServerID(c.cfg.LocalID), Address: raft.ServerAddress(c.cfg.LocalID), Suffrage: raft.Voter,
		}}}).Error()
		if err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			return fmt.Errorf("consensus: bootstrap: %w", err)
		}
		c.bootstrap.Store(BootstrapDone)
		c.log.Info("bootstrapped single-server cluster")
	default:
		c.bootstrap.Store(BootstrapWaiting)
		c.wg.Add(1)
		go c.bootstrapLoop()
	}
	return nil
}

// logCacheSize: the newest raft entries kept in memory. Every
// follower's replication reads the entry before its next one, and the
// newest entries it has not sent; only the four other voters replicate
// through raft (replicas follow by feed), so two full appends (raft
// sends up to 64 entries in one) cover a voter that fell a burst behind,
// and one further behind reads from bolt. Consul keeps 512; at 100 nodes
// with 500 workers the 512 entries held about 0.35 MB of a leader's and
// 0.47 MB of a voter's 4-5 MB live heap.
const logCacheSize = 128

// Close stops raft, the loops and the listeners, and closes the stores. It
// does not leave the cluster (see Leave). Safe to call more than once.
func (c *Consensus) Close() error {
	var err error
	c.closeOnce.Do(func() {
		c.LastLeaderContact() // record the contact raft knows before it stops
		c.closed.Store(true)
		c.cancel()
		c.mu.Lock()
		r, trans, started := c.raft, c.transport, c.started
		c.mu.Unlock()
		if r != nil {
			if e := r.Shutdown().Error(); e != nil {
				err = errors.Join(err, e)
			}
			r.DeregisterObserver(c.observer)
		}
		if trans != nil {
			_ = trans.Close()
		}
		if started {
			_ = c.cfg.Network.ForwardListener().Close()
		}
		c.wg.Wait()
		if started {
			c.persist(true) // raft is down: the FSM's index is final
		}
		if e := c.store.Close(); e != nil {
			err = errors.Join(err, e)
		}
		_ = c.replay.hint.Close()
		c.subMu.Lock()
		for ch := range c.subs {
			close(ch)
		}
		c.subs = map[chan LeaderEvent]struct{}{}
		c.subMu.Unlock()
	})
	return err
}

// running returns the raft server, or ErrClosed.
func (c *Consensus) running() (*raft.Raft, error) {
	if c.closed.Load() {
		return nil, ErrClosed
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.raft == nil {
		return nil, ErrClosed
	}
	return c.raft, nil
}

// MembershipChanged tells the leader loop (and a waiting bootstrap) that
// gossip membership changed: for the members with these ids, or for any
// when none is given. The leader's next pass looks only at the members
// named since its last pass (a full pass still runs every
// ReconcileInterval). It never blocks; kicks coalesce.
func (c *Consensus) MembershipChanged(ids ...string) {
	c.reconcileSoon(ids...)
	select {
	case c.kickBoot <- struct{}{}:
	default:
	}
}

// IsLeader reports whether this server is the leader now.
func (c *Consensus) IsLeader() bool {
	r, err := c.running()
	return err == nil && r.State() == raft.Leader
}

// LeaderID returns the current leader's id, "" when none is known: raft's
// on a server in the configuration, the feed's on a replica.
func (c *Consensus) LeaderID() string {
	r, err := c.running()
	if err != nil {
		return ""
	}
	if id, ok := c.feed.fresh(); ok && !c.isVoter() {
		return id
	}
	_, id := r.LeaderWithID()
	return string(id)
}

// State returns the raft state: "Follower", "Candidate", "Leader" or
// "Shutdown".
func (c *Consensus) State() string {
	r, err := c.running()
	if err != nil {
		return raft.Shutdown.String()
	}
	return r.State().String()
}

// Servers returns the latest raft configuration, sorted by id; on a
// replica, the voters its feed names.
func (c *Consensus) Servers() ([]Server, error) {
	r, err := c.running()
	if err != nil {
		return nil, err
	}
	if _, ok := c.feed.fresh(); ok && !c.isVoter() {
		var out []Server
		for _, id := range c.feed.voterList() {
			out = append(out, Server{ID: id, Address: id, Suffrage: "voter"})
		}
		sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
		return out, nil
	}
	f := r.GetConfiguration()
	if err := c.await(context.Background(), f); err != nil {
		return nil, fmt.Errorf("consensus: configuration: %w", err)
	}
	var out []Server
	for _, s := range f.Configuration().Servers {
		suf := "voter"
		if s.Suffrage != raft.Voter {
			suf = "nonvoter"
		}
		out = append(out, Server{ID: string(s.ID), Address: string(s.Address), Suffrage: suf})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// HeartbeatTimeout is the heartbeat timeout this server runs with: the
// profile's, or a non-voter's longer one (see watchSuffrage). Zero before
// Start.
func (c *Consensus) HeartbeatTimeout() time.Duration {
	r, err := c.running()
	if err != nil {
		return 0
	}
	return r.ReloadableConfig().HeartbeatTimeout
}

// Stats returns raft's stats plus "bootstrap" (the bootstrap state),
// "leader_id" and "leader_changes" (leader changes seen by this server).
func (c *Consensus) Stats() map[string]string {
	out := map[string]string{}
	if r, err := c.running(); err == nil {
		out = r.Stats()
	}
	out["bootstrap"] = c.bootstrap.Load().(string)
	out["leader_id"] = c.LeaderID()
	out["leader_changes"] = strconv.FormatUint(c.leaderChanges.Load(), 10)
	out["heartbeats_past_lane"] = strconv.FormatUint(c.HeartbeatsPastLane(), 10)
	return out
}

// HeartbeatsPastLane returns how many heartbeats this server, as leader,
// sent on a connection of their own because an append to the same
// follower was still in flight after voterLaneWait (laneWait for a
// non-voter): each opens a raft stream for one RPC.
func (c *Consensus) HeartbeatsPastLane() uint64 {
	if t := c.throttle; t != nil {
		return t.pastLane.Load()
	}
	return 0
}

// LeaderChanges returns how many times this server saw a new leader.
func (c *Consensus) LeaderChanges() uint64 { return c.leaderChanges.Load() }

// SubscribeLeadership returns a channel of leader changes and a function
// that ends the subscription. Sends never block; a full buffer drops events
// (re-read LeaderID/IsLeader). The channel is closed by cancel or Close.
func (c *Consensus) SubscribeLeadership() (<-chan LeaderEvent, func()) {
	ch := make(chan LeaderEvent, leaderSubBuffer)
	c.subMu.Lock()
	if c.closed.Load() {
		c.subMu.Unlock()
		close(ch)
		return ch, func() {}
	}
	c.subs[ch] = struct{}{}
	c.subMu.Unlock()
	return ch, func() {
		c.subMu.Lock()
		defer c.subMu.Unlock()
		if _, ok := c.subs[ch]; ok {
			delete(c.subs, ch)
			close(ch)
		}
	}
}

// Barrier waits until every preceding log entry is applied to the local
// FSM. Leader only.
func (c *Consensus) Barrier(ctx context.Context) error {
	r, err := c.running()
	if err != nil {
		return err
	}
	if r.State() != raft.Leader {
		return ErrNotLeader
	}
	return translate(c.await(ctx, r.Barrier(c.timeout(ctx))))
}

// LeadershipTransfer hands leadership to another voter and waits for the
// transfer to finish. Leader only.
func (c *Consensus) LeadershipTransfer(ctx context.Context) error {
	r, err := c.running()
	if err != nil {
		return err
	}
	if r.State() != raft.Leader {
		return ErrNotLeader
	}
	return translate(c.await(ctx, r.LeadershipTransfer()))
}

// LeadershipTransferTo hands leadership to the voter with the given id
// (this node must lead).
func (c *Consensus) LeadershipTransferTo(ctx context.Context, id string) error {
	r, err := c.running()
	if err != nil {
		return err
	}
	if r.State() != raft.Leader {
		return ErrNotLeader
	}
	servers, err := c.Servers()
	if err != nil {
		return err
	}
	for _, s := range servers {
		if s.ID == id && s.Suffrage == "voter" {
			return translate(c.await(ctx, r.LeadershipTransferToServer(raft.ServerID(id), raft.ServerAddress(s.Address))))
		}
	}
	return fmt.Errorf("%w: no voter %q", ErrConfig, id)
}

// Snapshot asks raft to take a snapshot now (and compact the log).
func (c *Consensus) Snapshot() error {
	r, err := c.running()
	if err != nil {
		return err
	}
	return translate(c.await(context.Background(), r.Snapshot()))
}

// timeout returns the time left in ctx, capped at ApplyTimeout.
func (c *Consensus) timeout(ctx context.Context) time.Duration {
	d := c.cfg.ApplyTimeout
	if dl, ok := ctx.Deadline(); ok {
		if left := time.Until(dl); left < d {
			d = left
		}
	}
	if d <= 0 {
		d = time.Millisecond
	}
	return d
}

// await waits for f, ctx or Close, whichever comes first. Every wait on a
// raft future goes through here: raft does not answer a future whose log
// entry was queued for the FSM when it shut down (hashicorp/raft#498), so
// a bare f.Error() can block forever, and with it a caller or Close. On
// Close it returns raft.ErrRaftShutdown (translate makes it ErrClosed).
// An unanswered future leaves one goroutine behind, blocked on f.
func (c *Consensus) await(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-c.ctx.Done():
		// Close may race an answered future: prefer its answer.
		select {
		case err := <-done:
			return err
		default:
		}
		return raft.ErrRaftShutdown
	}
}

// translate maps raft errors to this package's sentinels.
func translate(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("%w: %v", ErrClosed, err)
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost):
		return fmt.Errorf("%w: %v", ErrNotLeader, err)
	}
	return err
}

// monitorLeadership starts the leader loop when this server becomes the
// leader and stops it when it loses leadership.
func (c *Consensus) monitorLeadership() {
	defer c.wg.Done()
	var run *leaderRun
	defer func() { run.stop() }()
	for {
		select {
		case <-c.ctx.Done():
			return
		case isLeader := <-c.notifyCh:
			switch {
			case isLeader && run == nil:
				c.log.Info("gained leadership")
				run = c.startLeaderLoop()
			case !isLeader && run != nil:
				c.log.Info("lost leadership")
				run.stop()
				run = nil
			}
		}
	}
}

// leaderRun is one running leader loop.
type leaderRun struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func (c *Consensus) startLeaderLoop() *leaderRun {
	ctx, cancel := context.WithCancel(c.ctx)
	run := &leaderRun{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(run.done)
		c.leaderLoop(ctx)
	}()
	return run
}

// stop cancels the loop and waits for it; nil-safe.
func (l *leaderRun) stop() {
	if l == nil {
		return
	}
	l.cancel()
	<-l.done
}

// observe counts leader changes and fans them out to subscribers.
func (c *Consensus) observe() {
	defer c.wg.Done()
	for {
		select {
		case <-c.ctx.Done():
			return
		case o := <-c.obsCh:
			if _, ok := o.Data.(raft.LeaderObservation); ok {
				c.noteLeader(c.LeaderID())
			}
		}
	}
}

// noteLeader announces the leader this server knows (raft's, or on a
// replica its feed's) to the subscribers when it changed.
func (c *Consensus) noteLeader(id string) {
	c.leaderMu.Lock()
	defer c.leaderMu.Unlock()
	if id == c.lastLeader {
		return
	}
	if id != "" {
		c.leaderChanges.Add(1)
		c.log.Info("new leader", "leader_id", id)
	}
	c.lastLeader = id
	ev := LeaderEvent{LeaderID: id, IsLeader: id == c.cfg.LocalID}
	c.subMu.Lock()
	for ch := range c.subs {
		select {
		case ch <- ev:
		default:
		}
	}
	c.subMu.Unlock()
}

// checkSnapshots reports, as ErrDamagedStore naming one, that there are
// snapshots and none of them opens (a CRC or metadata failure): raft then
// cannot start, and said only that it failed to load any snapshot.
func (c *Consensus) checkSnapshots() error {
	metas, err := c.snaps.List()
	if err != nil || len(metas) == 0 {
		return nil
	}
	var first error
	for _, m := range metas {
		_, rc, err := c.snaps.Open(m.ID)
		if err == nil {
			rc.Close()
			return nil
		}
		if first == nil {
			first = fmt.Errorf("%s: %w", filepath.Join(c.cfg.DataDir, "raft", "snapshots", m.ID), err)
		}
	}
	return fmt.Errorf("%w: no snapshot opens (%v); %s", ErrDamagedStore, first, damagedAdvice(filepath.Join(c.cfg.DataDir, "raft", "snapshots")))
}
