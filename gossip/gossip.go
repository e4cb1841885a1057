// Package gossip is rbee's membership layer on hashicorp/memberlist: who is
// in the cluster and in which state (alive, suspect, dead, left), each
// node's small Meta, membership events, named broadcasts and push/pull state
// exchange for higher layers (worker heartbeats, load hints). Traffic is
// encrypted with a key derived from the cluster secret.
package gossip

import (
	"bytes"
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"fmt"
	"log"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

const (
	// ProfileLAN uses memberlist.DefaultLANConfig: sub-second probes,
	// failure detection in a few seconds on a LAN.
	ProfileLAN = "lan"
	// ProfileLocal is DefaultLocalConfig tightened further, for tests and
	// single-host clusters on loopback.
	ProfileLocal = "local"

	// DefaultBindAddr is rbee's gossip port on all interfaces (TCP and UDP).
	DefaultBindAddr = "0.0.0.0:7946"

	// DefaultEventBuffer sizes the Events channel: a join storm of a few
	// hundred nodes fits, so a consumer that is briefly busy loses nothing.
	DefaultEventBuffer = 256

	// keyInfo is the HKDF label for the memberlist key; it differs from the
	// p2p label so the two keys derived from one secret are independent. It
	// is part of the wire format.
	keyInfo = "rbee/gossip/memberlist-key/v1"
	// keyLen selects AES-256 in memberlist's keyring.
	keyLen = 32

	// MaxBroadcastSize bounds a Broadcast message. memberlist sends
	// broadcasts inside UDP packets of at most 1400 bytes, shared with its
	// own messages, compound and encryption headers; 1024 bytes always fits,
	// and a message that did not fit would sit in the queue forever.
	MaxBroadcastSize = 1024

	// defaultOpTimeout bounds Leave and UpdateMeta when ctx has no deadline.
	defaultOpTimeout = 5 * time.Second
)

// anchorSize is the length of the queue anchor, a broadcast larger than any
// UDP payload (65507 bytes) so GetBroadcasts never sends or drops it.
// memberlist v0.5.4 resets its broadcast id generator whenever the queue
// becomes empty, including in the middle of a named replacement or of
// GetBroadcasts, after which a new message can get the id of a queued one of
// the same length and silently replace it (hashicorp/memberlist#263). With
// the anchor the queue is never empty, so ids never repeat.
const anchorSize = 70_000

// Gossip user message types: the first byte of every message this package
// sends through memberlist's user channel.
const (
	// msgUser marks a Broadcast payload.
	msgUser byte = 1
	// msgLeaveIntent announces that a member leaves (see members.go).
	msgLeaveIntent byte = 2
)

// intentWait bounds how long Leave waits for its intent to be sent before
// memberlist's leave message, like serf's broadcast timeout: a few gossip
// rounds suffice, an unreachable cluster must not hold Leave up.
const intentWait = 5 * time.Second

// suspectPrefix and suspectSuffix frame the message memberlist logs, then
// acts on, when this node's probe of a member failed (memberlist v0.5.4
// state.go, probeNode): the only public trace of its suspicion (see
// members.go). TestCrashedMemberBecomesSuspectThenDead notices a change.
const (
	suspectPrefix = "Suspect "
	suspectSuffix = " has failed, no acks received"
)

// StateDelegate lets a higher layer ride on gossip. Implementations must be
// safe for concurrent use and fast: memberlist calls them from its network
// goroutines.
type StateDelegate interface {
	// LocalState returns this node's full state for a push/pull exchange
	// (anti-entropy, on join and periodically). Keep it small (kilobytes).
	LocalState() []byte
	// MergeRemoteState merges a peer's LocalState. buf is owned by the
	// callee.
	MergeRemoteState(buf []byte)
	// NotifyMsg receives a message another member sent with Broadcast (a
	// member never receives its own). msg is owned by the callee.
	NotifyMsg(msg []byte)
}

// Config configures a Gossip. Start from DefaultConfig and override fields.
type Config struct {
	// NodeID is the memberlist node name: the node's libp2p peer id.
	// Required and unique in the cluster.
	NodeID string
	// BindAddr is the "ip:port" memberlist listens on (TCP and UDP); port 0
	// picks a free port.
	BindAddr string
	// AdvertiseAddr is the "ip:port" other members use to reach this node;
	// empty means the bind address (or, for 0.0.0.0, a private interface
	// address).
	AdvertiseAddr string
	// Secret is the cluster secret; the AES-256 gossip key is derived from
	// it with HKDF-SHA256. Required.
	Secret []byte
	// Meta is this node's initial metadata.
	Meta Meta
	// Profile selects timings: ProfileLAN (default) or ProfileLocal.
	Profile string
	// EventBuffer is the Events channel capacity (default
	// DefaultEventBuffer).
	EventBuffer int
	// Logger receives gossip and memberlist logs; nil discards them.
	Logger *slog.Logger
	// Delegate is an optional StateDelegate.
	Delegate StateDelegate
	// Transport, when set, replaces the UDP+TCP transport bound on
	// BindAddr: simulations run many members in one process on
	// memberlist.MockNetwork. BindAddr and AdvertiseAddr are then unused.
	Transport memberlist.NodeAwareTransport
	// WrapTransport, when set, wraps the transport (bound or Transport)
	// before memberlist gets it: tests cut gossip between members in one
	// process with it, leaving their other traffic alone.
	WrapTransport func(memberlist.NodeAwareTransport) memberlist.NodeAwareTransport
	// TimeScale, when above 1, multiplies memberlist's timings (probes,
	// gossip rounds, push/pull, timeouts) and settling's (leave intents'
	// windows stay as they are; they do not bear on convergence): a
	// simulation of more members than one process's CPU keeps up with
	// runs them in slow motion and divides what it measures by the scale
	// (DESIGN.md, Slow motion). 0 or 1: the profile's timings.
	TimeScale float64
	// OnDuplicate, when set, is called (once, from a goroutine of
	// gossip's) with an error wrapping ErrDuplicateIdentity when another
	// member answers to this node's id at another address: a copy of this
	// node's identity runs elsewhere (a data dir copied to another
	// machine), and the cluster keeps the member it knew. memberlist
	// itself only logs the conflict, and this member would then run
	// beside the cluster for ever, never in it.
	OnDuplicate func(error)
}

// DefaultConfig returns a production configuration without node id and
// secret.
func DefaultConfig() Config {
	return Config{
		BindAddr:    DefaultBindAddr,
		Profile:     ProfileLAN,
		EventBuffer: DefaultEventBuffer,
	}
}

// deriveKey derives the memberlist encryption key from the cluster secret.
func deriveKey(secret []byte) []byte {
	k, err := hkdf.Key(sha256.New, secret, nil, keyInfo, keyLen)
	if err != nil {
		// Only possible for key lengths above 255*32 bytes.
		panic("gossip: hkdf: " + err.Error())
	}
	return k
}

// localProfile returns DefaultLocalConfig with timings tight enough that
// tests see failures in about a second, yet loose enough for a loaded CI
// machine: a probe every 200 ms, 100 ms to answer, suspicion lasting at
// least 4 probe intervals before a node is declared dead.
func localProfile() *memberlist.Config {
	c := memberlist.DefaultLocalConfig()
	c.ProbeInterval = 200 * time.Millisecond
	c.ProbeTimeout = 100 * time.Millisecond
	c.SuspicionMult = 4
	c.GossipInterval = 50 * time.Millisecond
	c.PushPullInterval = 2 * time.Second
	c.TCPTimeout = 2 * time.Second
	c.GossipToTheDeadTime = 10 * time.Second
	c.DeadNodeReclaimTime = time.Second
	return c
}

// splitHostPort parses "ip:port" into memberlist's separate fields.
func splitHostPort(field, hostport string) (string, int, error) {
	h, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", 0, fmt.Errorf("%w: %s %q: %v", ErrBadConfig, field, hostport, err)
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("%w: %s %q: bad port", ErrBadConfig, field, hostport)
	}
	if h == "" {
		h = "0.0.0.0"
	}
	if net.ParseIP(h) == nil {
		return "", 0, fmt.Errorf("%w: %s %q: host must be an IP address", ErrBadConfig, field, hostport)
	}
	return h, int(port), nil
}

// Gossip is one node's membership in the cluster. Create it with New, join
// the gossip network with Start and Join, depart with Leave then Close. All
// methods are safe for concurrent use.
type Gossip struct {
	log      *slog.Logger
	mlCfg    *memberlist.Config
	delegate StateDelegate
	trans    memberlist.NodeAwareTransport                                     // Config.Transport; nil: bind one
	wrap     func(memberlist.NodeAwareTransport) memberlist.NodeAwareTransport // Config.WrapTransport
	sent     atomic.Uint64                                                     // bytes sent, see SentBytes
	table    *memberTable
	queue    *memberlist.TransmitLimitedQueue
	events   chan Event
	logw     *slogWriter

	// Background loops of our own, ended by stopLoops (Close): settling
	// (settle.go), push/pulls while members join, and
	// rechecking suspects (recheck.go).
	stopLoops    context.CancelFunc
	settleBase   time.Duration // 0: off
	settleWindow time.Duration
	timeScale    float64       // Config.TimeScale, at least 1
	lastChange   atomic.Int64  // unix nanoseconds of the last join seen
	settles      atomic.Uint64 // settling push/pulls done
	settled      chan struct{} // closed when settle returns (tests)

	onDuplicate func(error)  // Config.OnDuplicate
	dupCheck    atomic.Bool  // a duplicate check runs (or found one)
	firstJoin   atomic.Int64 // unix nanoseconds of the first Join call
	loopCtx     context.Context

	mu       sync.RWMutex // guards the fields below
	ml       *memberlist.Memberlist
	addr     string
	meta     Meta
	metaEnc  []byte
	started  bool
	left     bool
	closed   bool
	closeErr error
}

// New validates cfg and prepares the member; nothing listens until Start.
func New(cfg Config) (*Gossip, error) {
	if cfg.NodeID == "" {
		return nil, fmt.Errorf("%w: node id is required", ErrBadConfig)
	}
	if len(cfg.Secret) == 0 {
		return nil, fmt.Errorf("%w: cluster secret is required", ErrBadConfig)
	}
	if cfg.BindAddr == "" {
		cfg.BindAddr = DefaultBindAddr
	}
	if cfg.EventBuffer <= 0 {
		cfg.EventBuffer = DefaultEventBuffer
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	lg = lg.With("component", "gossip")

	var mc *memberlist.Config
	var settleBase, settleWindow time.Duration
	switch cfg.Profile {
	case "", ProfileLAN:
		mc = memberlist.DefaultLANConfig()
		// A node that comes back after a failure under the same peer id but
		// a new IP (DHCP) may reclaim its name after 30 s.
		mc.DeadNodeReclaimTime = 30 * time.Second
		settleBase, settleWindow = settleBaseLAN, settleWindowLAN
	case ProfileLocal:
		mc = localProfile()
		settleBase, settleWindow = settleBaseLocal, settleWindowLocal
	default:
		return nil, fmt.Errorf("%w: unknown profile %q (want %q or %q)", ErrBadConfig, cfg.Profile, ProfileLAN, ProfileLocal)
	}
	if cfg.TimeScale > 1 {
		scaleTimings(mc, cfg.TimeScale) // settling: Gossip.settleTiming
	}
	// No compression of what this member sends (it still reads compressed
	// messages, from earlier versions): memberlist compresses every gossip
	// packet and push/pull with LZW, allocating a 16 KB table each time.
	// That was a fifth of an idle member's CPU (with the garbage it made)
	// in a 30-node cluster, to save a few hundred bytes a second on a LAN.
	mc.EnableCompression = false
	var err error
	if mc.BindAddr, mc.BindPort, err = splitHostPort("bind address", cfg.BindAddr); err != nil {
		return nil, err
	}
	mc.AdvertisePort = mc.BindPort
	if cfg.AdvertiseAddr != "" {
		if mc.AdvertiseAddr, mc.AdvertisePort, err = splitHostPort("advertise address", cfg.AdvertiseAddr); err != nil {
			return nil, err
		}
	}
	metaEnc, err := EncodeMeta(cfg.Meta)
	if err != nil {
		return nil, err
	}

	g := &Gossip{
		log:      lg,
		mlCfg:    mc,
		delegate: cfg.Delegate,
		trans:    cfg.Transport,
		wrap:     cfg.WrapTransport,
		events:   make(chan Event, cfg.EventBuffer),
		meta:     cloneMeta(cfg.Meta),
		metaEnc:  metaEnc,

		settleBase:   settleBase,
		settleWindow: settleWindow,
		timeScale:    max(1, cfg.TimeScale),
		stopLoops:    func() {},
		settled:      make(chan struct{}),
		onDuplicate:  cfg.OnDuplicate,
	}
	g.table = newMemberTable(mc.GossipToTheDeadTime)
	mc.Name = cfg.NodeID
	mc.SecretKey = deriveKey(cfg.Secret)
	mc.Delegate = (*delegate)(g)
	mc.Events = (*eventDelegate)(g)
	mc.Ping = (*pingDelegate)(g)
	mc.Conflict = (*conflictDelegate)(g)
	mc.LogOutput = nil
	g.logw = newSlogWriter(lg)
	g.logw.observe = g.observeLog
	mc.Logger = log.New(g.logw, "", 0)
	g.queue = &memberlist.TransmitLimitedQueue{
		NumNodes:       g.NumMembers,
		RetransmitMult: mc.RetransmitMult,
	}
	g.queue.QueueBroadcast(&uniqueBroadcast{msg: make([]byte, anchorSize)})
	return g, nil
}

// Start creates the memberlist: it binds the TCP and UDP listeners and
// begins probing and gossiping (alone until Join). The local node's join is
// the first event. ctx is only checked before starting.
func (g *Gossip) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.closed:
		return ErrClosed
	case g.started:
		return ErrAlreadyStarted
	}
	// memberlist.Create calls back into the delegates (NodeMeta, NotifyJoin
	// for ourselves), which take g.mu for reading: release it meanwhile.
	g.started = true
	g.mu.Unlock()
	ml, err := g.create()
	g.mu.Lock()
	if err == nil && g.closed {
		_ = ml.Shutdown()
		return ErrClosed
	}
	if err != nil {
		g.started = false
		return fmt.Errorf("gossip: start memberlist on %s: %w", net.JoinHostPort(g.mlCfg.BindAddr, strconv.Itoa(g.mlCfg.BindPort)), err)
	}
	g.ml = ml
	local := ml.LocalNode()
	g.addr = net.JoinHostPort(local.Addr.String(), strconv.Itoa(int(local.Port)))
	loopCtx, stop := context.WithCancel(context.Background())
	g.stopLoops, g.loopCtx = stop, loopCtx
	go g.settle(loopCtx)
	go g.recheckSuspects(loopCtx)
	g.log.Info("gossip started", "node", g.mlCfg.Name, "addr", g.addr)
	return nil
}

// create binds the transport (unless one was configured), wraps it to
// count the bytes sent and creates the memberlist.
func (g *Gossip) create() (*memberlist.Memberlist, error) {
	t := g.trans
	if t == nil {
		nt, err := newLANTransport(g.mlCfg, g.table.membersAt)
		if err != nil {
			return nil, err
		}
		t = nt
	}
	if g.wrap != nil {
		t = g.wrap(t)
	}
	ct := newCountingTransport(t, &g.sent)
	g.mlCfg.Transport = ct
	ml, err := memberlist.Create(g.mlCfg)
	if err != nil {
		_ = ct.Shutdown()
		return nil, err
	}
	return ml, nil
}

// SentBytes is how many bytes this member has sent since Start: UDP
// packets (probes, gossip, broadcasts) and TCP streams (push/pull,
// fallback probes), memberlist's framing and encryption included; IP and
// UDP/TCP headers are not.
func (g *Gossip) SentBytes() uint64 { return g.sent.Load() }

// member returns the running memberlist or why there is none.
func (g *Gossip) member() (*memberlist.Memberlist, error) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	switch {
	case g.closed:
		return nil, ErrClosed
	case g.ml == nil:
		return nil, ErrNotStarted
	case g.left:
		return nil, ErrLeft
	}
	return g.ml, nil
}

// Join contacts the given gossip addresses ("host:port") and merges state
// with each, returning how many answered. It fails only if none did: an
// unreachable address or one with another cluster secret is an error. If
// ctx ends first Join returns ctx.Err() while the attempt finishes in the
// background.
func (g *Gossip) Join(ctx context.Context, addrs []string) (int, error) {
	ml, err := g.member()
	if err != nil {
		return 0, err
	}
	if len(addrs) == 0 {
		return 0, fmt.Errorf("%w: no addresses to join", ErrBadConfig)
	}
	g.firstJoin.CompareAndSwap(0, time.Now().UnixNano())
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := ml.Join(addrs)
		done <- result{n, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return r.n, fmt.Errorf("gossip: join %v: %w", addrs, r.err)
		}
		g.log.Info("joined cluster", "contacted", r.n, "members", ml.NumMembers())
		return r.n, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// timeoutFrom turns ctx's deadline into memberlist's timeout argument.
func timeoutFrom(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return max(time.Until(dl), time.Millisecond)
	}
	return defaultOpTimeout
}

// Leave announces this node's graceful departure, then leaves memberlist,
// waiting (bounded by ctx, 5 s without a deadline) until both have been
// sent; other members then see this node as StateLeft. After Leave the
// node still answers probes until Close, but cannot rejoin: Close it and
// create a new Gossip.
func (g *Gossip) Leave(ctx context.Context) error {
	ml, err := g.member()
	if err != nil {
		return err
	}
	g.mu.Lock()
	g.left = true
	g.mu.Unlock()
	deadline := time.Now().Add(timeoutFrom(ctx))
	self := g.mlCfg.Name
	nonce := rand.Uint64()
	g.table.intent(self, nonce) // our own departure is a leave too
	if ml.NumMembers() > 1 {
		b := &intentBroadcast{id: self, msg: encodeIntent(self, nonce), notify: make(chan struct{})}
		g.queue.QueueBroadcast(b)
		wait := time.NewTimer(min(time.Until(deadline), intentWait))
		select {
		case <-b.notify:
		case <-wait.C:
			g.log.Warn("leave intent not sent in time; some members may see this node fail instead of leave")
		}
		wait.Stop()
	}
	if err := ml.Leave(max(time.Until(deadline), time.Millisecond)); err != nil {
		return fmt.Errorf("gossip: leave: %w", err)
	}
	g.log.Info("left cluster")
	return nil
}

// Close shuts memberlist down without a leave broadcast (call Leave first
// for a graceful exit; without it others see this node fail) and closes the
// Events channel. It is idempotent.
func (g *Gossip) Close() error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return g.closeErr
	}
	g.closed = true
	ml := g.ml
	g.stopLoops()
	g.mu.Unlock()
	g.table.touch() // Members is empty from now on
	// Shutdown waits for memberlist's listeners, which may be waiting for an
	// event delegate that needs g.mu: never hold g.mu across it.
	var err error
	if ml != nil {
		// A settling push/pull in flight is not waited for: it fails on
		// the shut-down transport or at memberlist's TCPTimeout, then the
		// loop sees the member closed and returns.
		if err = ml.Shutdown(); err != nil {
			err = fmt.Errorf("gossip: shutdown: %w", err)
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closeErr = err
	// emit sends only under g.mu.RLock after checking closed, so nothing
	// sends once we hold the write lock here.
	close(g.events)
	return err
}

// Addr returns the gossip address ("ip:port") others join; empty before
// Start.
func (g *Gossip) Addr() string {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.addr
}

// NumMembers returns the number of alive and suspect members, this node
// included (1 before Start).
func (g *Gossip) NumMembers() int {
	g.mu.RLock()
	ml := g.ml
	g.mu.RUnlock()
	if ml == nil {
		return 1
	}
	return ml.NumMembers()
}

// Members returns every member this node knows, itself included, sorted
// by id: alive and suspect ones, and dead and left ones until they are
// forgotten (GossipToTheDeadTime after they departed: 30 s on a LAN, as
// memberlist does). Empty before Start and after Close.
func (g *Gossip) Members() []Member {
	g.mu.RLock()
	ml, closed := g.ml, g.closed
	g.mu.RUnlock()
	if ml == nil || closed {
		return nil
	}
	return g.table.list()
}

// MemberStates returns the state of every member Members would list, by
// id, without copying their metadata.
func (g *Gossip) MemberStates() map[string]State {
	g.mu.RLock()
	ml, closed := g.ml, g.closed
	g.mu.RUnlock()
	if ml == nil || closed {
		return map[string]State{}
	}
	return g.table.states()
}

// Version moves whenever Members would return something else (a member
// joined, changed state, address or metadata, or was forgotten), so a
// caller that scans the members periodically can skip a scan when it has
// not moved. It says nothing of what changed.
func (g *Gossip) Version() uint64 { return g.table.changes() }

// Member returns the member with the given id, as Members would, without
// listing the others (a caller that looks up every registry node once a
// second made that O(n²): a quarter of a 100-node cluster's CPU).
func (g *Gossip) Member(id string) (Member, bool) {
	g.mu.RLock()
	ml, closed := g.ml, g.closed
	g.mu.RUnlock()
	if ml == nil || closed {
		return Member{}, false
	}
	return g.table.get(id)
}

// LocalMember returns this node as others should see it.
func (g *Gossip) LocalMember() Member {
	g.mu.RLock()
	defer g.mu.RUnlock()
	st := StateAlive
	if g.left {
		st = StateLeft
	}
	return Member{ID: g.mlCfg.Name, Addr: g.addr, State: st, Meta: cloneMeta(g.meta)}
}

// Problems counts the warnings and errors memberlist reported (bad
// packets, failed probes), including those the log rate limit dropped.
func (g *Gossip) Problems() uint64 { return g.logw.problems.Load() }

// Events returns the membership event stream: joins (this node's first),
// updates, graceful leaves and failures. It is buffered (Config.EventBuffer)
// and never blocks memberlist: when full, events are dropped and logged, so
// consumers that must not miss a change should also reconcile against
// Members periodically. Closed by Close.
func (g *Gossip) Events() <-chan Event { return g.events }

// UpdateMeta replaces this node's metadata and gossips it, waiting (bounded
// by ctx, 5 s without a deadline) until the update has been sent to another
// member if there is one; when ctx ends first it returns ctx's error (the
// metadata is set, and memberlist goes on sending it). Metadata over memberlist.MetaMaxSize is refused
// with ErrMetaTooLarge and changes nothing.
func (g *Gossip) UpdateMeta(ctx context.Context, m Meta) error {
	enc, err := EncodeMeta(m)
	if err != nil {
		return err
	}
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return ErrClosed
	}
	if g.left {
		g.mu.Unlock()
		return ErrLeft
	}
	g.meta, g.metaEnc = cloneMeta(m), enc
	ml := g.ml
	g.mu.Unlock()
	if ml == nil {
		return nil // used by Start
	}
	// memberlist waits a duration, not a context: the wait runs on its
	// own (ending by that timeout) so that a caller whose ctx ends, a node
	// shutting down, is not held by it. The metadata is set already.
	done := make(chan error, 1)
	go func() { done <- ml.UpdateNode(timeoutFrom(ctx)) }()
	select {
	case err := <-done:
		if err != nil {
			// Past EncodeMeta's checks, memberlist fails only its wait
			// ("timeout waiting for update broadcast").
			return fmt.Errorf("gossip: update meta: %w: %v", ErrMetaSpreading, err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("gossip: update meta: %w: %w", ErrMetaSpreading, ctx.Err())
	}
}

// Broadcast gossips msg to every member's StateDelegate.NotifyMsg, best
// effort (each member receives it a few times from random peers, or not at
// all if it joins after the retransmissions). A queued message with the same
// non-empty key that has not finished spreading is replaced, so repeated
// status updates under one key never pile up; an empty key makes the
// message independent. Messages over MaxBroadcastSize are refused with
// ErrMessageTooLarge.
func (g *Gossip) Broadcast(key string, msg []byte) error {
	if len(msg) > MaxBroadcastSize {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrMessageTooLarge, len(msg), MaxBroadcastSize)
	}
	b := make([]byte, 0, 1+len(msg))
	b = append(b, msgUser)
	b = append(b, msg...)
	if key == "" {
		g.queue.QueueBroadcast(&uniqueBroadcast{msg: b})
	} else {
		g.queue.QueueBroadcast(&namedBroadcast{name: key, msg: b})
	}
	return nil
}

// QueuedBroadcasts returns how many broadcasts (Broadcast's messages and
// leave intents) are still being spread.
func (g *Gossip) QueuedBroadcasts() int { return g.queue.NumQueued() - 1 } // minus the anchor

// toMember converts a memberlist node; its state is the table's business.
func (g *Gossip) toMember(name, addr string, meta []byte) Member {
	m := Member{ID: name, Addr: addr}
	if len(meta) > 0 {
		md, err := DecodeMeta(meta)
		if err != nil {
			g.log.Debug("undecodable member metadata", "node", name, "err", err)
		}
		m.Meta = md
	}
	return m
}

// observeLog learns suspicion from memberlist's log (see members.go).
func (g *Gossip) observeLog(msg []byte) {
	rest, ok := bytes.CutPrefix(msg, []byte(suspectPrefix))
	if !ok {
		return
	}
	if id, ok := bytes.CutSuffix(rest, []byte(suspectSuffix)); ok && g.table.suspect(string(id)) {
		g.log.Debug("member suspect", "node", string(id))
	}
}

func cloneMeta(m Meta) Meta {
	m.P2PAddrs = append([]string(nil), m.P2PAddrs...)
	if m.Tags != nil {
		t := make(map[string]string, len(m.Tags))
		for k, v := range m.Tags {
			t[k] = v
		}
		m.Tags = t
	}
	return m
}
