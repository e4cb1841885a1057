package consensus

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/rbee-project/rbee/fsm"
)

// Forward protocol (ConnForward), one request per connection:
//
//	request:  uint32 big-endian length n, then n bytes: op byte + body
//	response: uint32 big-endian length n, then n bytes of JSON forwardResponse
//
// Ops are append-only like fsm command types.
const (
	opApply  byte = 1 // body: an encoded fsm command
	opStatus byte = 2 // body: empty; answers peerStatus
	opRemove byte = 3 // body: the server id to remove (a leaving server)
	opFeed   byte = 4 // body: JSON feedRequest; answered by a stream (feed.go)
	// opRelay: body as opApply; a voter that is not the leader forwards
	// it to the leader and answers what the leader answered (a replica's
	// write goes through the voter that feeds it, see relayTarget).
	opRelay byte = 5

	// maxFrame caps both directions: the largest command plus headroom.
	maxFrame = fsm.MaxCommandSize + 1024
	// forwardIOTimeout bounds one forwarded exchange when ctx has no
	// earlier deadline: an apply on a healthy LAN cluster takes ms.
	forwardIOTimeout = 15 * time.Second
)

// Response codes.
const (
	codeOK        = "ok"
	codeNotLeader = "not_leader"
	codeRejected  = "rejected" // registry rejected the command; FSMCode says why
	codeError     = "error"
	// codeSent: the command went into the leader's log but the leader
	// could not learn its outcome (it lost leadership, or the wait ran
	// out): it may commit.
	codeSent = "sent"
)

type forwardResponse struct {
	Code    string      `json:"code"`
	FSMCode string      `json:"fsm_code,omitempty"`
	Message string      `json:"message,omitempty"`
	Result  *fsm.Result `json:"result,omitempty"`
	Status  *peerStatus `json:"status,omitempty"`
	// Applied is the leader's applied log index when it answered an
	// apply: a Base for a request it refused as expired (fsm.OnceID).
	Applied uint64 `json:"applied,omitempty"`
	// NotCommitted: with code sent, the leader kept leading for all of
	// ApplyTimeout and did not commit the entry (errNotCommitted).
	NotCommitted bool `json:"not_committed,omitempty"`
}

// peerStatus is what a server tells a bootstrapping peer.
type peerStatus struct {
	ID       string `json:"id"`
	HasState bool   `json:"has_state"`
	LeaderID string `json:"leader_id,omitempty"`
}

var errFrameTooLarge = errors.New("frame too large")

func writeFrame(w io.Writer, payload []byte) error {
	if len(payload) > maxFrame {
		return errFrameTooLarge
	}
	buf := make([]byte, 4+len(payload))
	binary.BigEndian.PutUint32(buf, uint32(len(payload)))
	copy(buf[4:], payload)
	_, err := w.Write(buf)
	return err
}

func readFrame(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > maxFrame {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", errFrameTooLarge, n, maxFrame)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, err
	}
	return buf, nil
}

// parseRequest splits a request frame into op and body.
func parseRequest(frame []byte) (byte, []byte, error) {
	if len(frame) == 0 {
		return 0, nil, errors.New("empty request")
	}
	switch frame[0] {
	case opApply, opStatus, opRemove, opFeed, opRelay:
		return frame[0], frame[1:], nil
	}
	return 0, nil, fmt.Errorf("unknown op %d", frame[0])
}

// serveForward accepts forwarded requests until the listener closes.
func (c *Consensus) serveForward(ln net.Listener) {
	defer c.wg.Done()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if c.closed.Load() {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			c.log.Warn("forward accept failed", "err", err)
			select {
			case <-c.ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.handleForward(conn)
		}()
	}
}

// PeerIdentifier is implemented by Network connections that know the
// authenticated peer id of the remote end (libp2p streams do). When the
// forward connection implements it, a remove request is only honoured for
// the caller's own id.
type PeerIdentifier interface {
	RemotePeerID() string
}

func (c *Consensus) handleForward(conn net.Conn) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(forwardIOTimeout))
	frame, err := readFrame(conn)
	if err != nil {
		c.log.Debug("forward read failed", "err", err)
		return
	}
	if len(frame) > 0 && frame[0] == opFeed {
		c.serveFeed(conn, frame[1:])
		return
	}
	var resp forwardResponse
	if pi, ok := conn.(PeerIdentifier); ok && len(frame) > 0 && frame[0] == opRemove && string(frame[1:]) != pi.RemotePeerID() {
		resp = forwardResponse{Code: codeError, Message: "a server may only remove itself"}
	} else {
		resp = c.handleRequest(frame)
	}
	out, err := json.Marshal(resp)
	if err != nil {
		return
	}
	if err := writeFrame(conn, out); err != nil {
		c.log.Debug("forward write failed", "err", err)
	}
}

// handleRequest executes one request frame. A server that is not the
// leader answers not_leader and the caller retries, except for opRelay,
// which a voter forwards to the leader once (relay; never further: it
// sends opApply).
func (c *Consensus) handleRequest(frame []byte) forwardResponse {
	op, body, err := parseRequest(frame)
	if err != nil {
		return forwardResponse{Code: codeError, Message: err.Error()}
	}
	r, err := c.running()
	if err != nil {
		return forwardResponse{Code: codeError, Message: err.Error()}
	}
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.ApplyTimeout)
	defer cancel()
	switch op {
	case opStatus:
		_, leader := r.LeaderWithID()
		return forwardResponse{Code: codeOK, Status: &peerStatus{
			ID: c.cfg.LocalID, HasState: r.LastIndex() > 0, LeaderID: string(leader),
		}}
	case opApply, opRelay:
		if r.State() != raft.Leader {
			if op == opRelay {
				return c.relay(body)
			}
			return forwardResponse{Code: codeNotLeader}
		}
		// Not ctx: finishApply's own ApplyTimeout bound must be what
		// ends a commit that does not come, so that it says so
		// (errNotCommitted) rather than look like the caller giving up.
		res, err := c.applyLocal(r, c.ctx, body)
		resp := responseFor(res, err)
		resp.Applied = r.AppliedIndex()
		return resp
	case opRemove:
		if r.State() != raft.Leader {
			return forwardResponse{Code: codeNotLeader}
		}
		id := string(body)
		if id == "" || id == c.cfg.LocalID {
			return forwardResponse{Code: codeError, Message: "refusing to remove " + fmt.Sprintf("%q", id)}
		}
		c.markLeaving(id)
		if err := c.await(ctx, r.RemoveServer(raft.ServerID(id), 0, c.timeout(ctx))); err != nil {
			return responseFor(nil, translate(err))
		}
		c.log.Info("removed leaving server", "id", id)
		return forwardResponse{Code: codeOK}
	}
	return forwardResponse{Code: codeError, Message: "unreachable"}
}

// relayTimeout bounds a voter's forward of a replica's write to the
// leader: within the replica's own bound on the exchange
// (forwardIOTimeout) by a LAN's time to answer, so that the voter's
// answer, even a failure, still reaches it, and otherwise as long as a
// replica writing to the leader directly would wait (the leader answers
// not-committed after ApplyTimeout, 10 s by default).
const relayTimeout = forwardIOTimeout - time.Second

// relay forwards a replica's write to the leader (this voter is not it)
// and answers what the leader answered. Replicas write through the voter
// that feeds them, over the connection the feed keeps, so the leader's
// connections are its voters' whatever the node count (at 100 nodes the
// leader otherwise held one to every node that wrote, about 80 KB and four
// goroutines each). A request that may have reached the leader without an
// answer is answered sent, as the leader's own lost answer would be; one
// that never left is not_leader, which the replica retries.
func (c *Consensus) relay(body []byte) forwardResponse {
	if !c.servesFeed() {
		return forwardResponse{Code: codeNotLeader, Message: "not a voter"}
	}
	leader := c.LeaderID()
	if leader == "" || leader == c.cfg.LocalID {
		return forwardResponse{Code: codeNotLeader, Message: "no leader known"}
	}
	ctx, cancel := context.WithTimeout(c.ctx, relayTimeout)
	defer cancel()
	resp, err := c.call(ctx, leader, opApply, body)
	switch {
	case err == nil:
		c.relayed.Add(1)
		return resp
	case errors.Is(err, errSent):
		return forwardResponse{Code: codeSent, Message: "relayed: " + err.Error()}
	}
	return forwardResponse{Code: codeNotLeader, Message: "relayed: " + err.Error()}
}

func responseFor(res *fsm.Result, err error) forwardResponse {
	switch {
	case err == nil:
		return forwardResponse{Code: codeOK, Result: res}
	case errors.Is(err, errSent):
		return forwardResponse{Code: codeSent, Message: err.Error(), NotCommitted: errors.Is(err, errNotCommitted)}
	case errors.Is(err, ErrRejected):
		return forwardResponse{Code: codeRejected, FSMCode: fsm.ErrorCode(err), Message: err.Error()}
	case errors.Is(err, ErrNotLeader):
		return forwardResponse{Code: codeNotLeader, Message: err.Error()}
	}
	return forwardResponse{Code: codeError, Message: err.Error()}
}

// errFromResponse turns a non-ok response into an error.
func errFromResponse(resp forwardResponse) error {
	switch resp.Code {
	case codeOK:
		return nil
	case codeNotLeader:
		return ErrNotLeader
	case codeSent:
		if resp.NotCommitted {
			return fmt.Errorf("%w: %w: %w: remote: %s", ErrForward, errSent, errNotCommitted, resp.Message)
		}
		return fmt.Errorf("%w: %w: remote: %s", ErrForward, errSent, resp.Message)
	case codeRejected:
		return fmt.Errorf("%w: %w", ErrRejected, fsm.ErrorFromCode(resp.FSMCode, resp.Message))
	}
	return fmt.Errorf("%w: remote: %s", ErrForward, resp.Message)
}

// call sends one request to server id and returns its response.
func (c *Consensus) call(ctx context.Context, id string, op byte, body []byte) (forwardResponse, error) {
	if len(body)+1 > maxFrame {
		return forwardResponse{}, fmt.Errorf("%w: request of %d bytes", ErrForward, len(body)+1)
	}
	ctx, cancel := context.WithTimeout(ctx, forwardIOTimeout)
	defer cancel()
	conn, err := c.cfg.Network.Dial(ctx, id, ConnForward)
	if err != nil {
		return forwardResponse{}, fmt.Errorf("%w: dial %s: %v", ErrForward, id, err)
	}
	defer conn.Close()
	dl, _ := ctx.Deadline()
	_ = conn.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := writeFrame(conn, append([]byte{op}, body...)); err != nil {
		// Part of the frame, or all of it, may have gone out.
		return forwardResponse{}, fmt.Errorf("%w: write to %s: %w: %v", ErrForward, id, errSent, err)
	}
	frame, err := readFrame(conn)
	if err != nil {
		return forwardResponse{}, fmt.Errorf("%w: read from %s: %w: %v", ErrForward, id, errSent, err)
	}
	var resp forwardResponse
	if err := json.Unmarshal(frame, &resp); err != nil {
		return forwardResponse{}, fmt.Errorf("%w: bad response from %s: %w: %v", ErrForward, id, errSent, err)
	}
	return resp, nil
}

// errSent marks an attempt whose request reached a leader without an
// answer: its outcome is unknown.
var errSent = errors.New("sent, no answer")

// errNotCommitted marks an attempt whose leader, still leading, took the
// command and did not commit it within ApplyTimeout (with errSent). Only
// that ends Apply with notCommitted: a broken connection or a lost
// leadership is churn, which the retry (deduplicated) rides out.
var errNotCommitted = errors.New("not committed within the apply timeout")

// applyLocal applies cmd through raft on this (leader) server.
func (c *Consensus) applyLocal(r *raft.Raft, ctx context.Context, cmd []byte) (*fsm.Result, error) {
	return c.startApply(r, ctx, cmd)()
}

// startApply hands cmd to raft on this (leader) server and returns what
// waits for its outcome, as applyLocal reports it.
func (c *Consensus) startApply(r *raft.Raft, ctx context.Context, cmd []byte) (finish func() (*fsm.Result, error)) {
	f := r.Apply(cmd, c.timeout(ctx))
	return func() (*fsm.Result, error) { return c.finishApply(ctx, f) }
}

func (c *Consensus) finishApply(ctx context.Context, f raft.ApplyFuture) (*fsm.Result, error) {
	// A LAN commit takes milliseconds, and a leader that cannot reach a
	// quorum steps down within its lease; ApplyTimeout bounds the wait even
	// for a caller without a deadline, should raft never answer.
	wait, cancel := context.WithTimeout(ctx, c.cfg.ApplyTimeout)
	defer cancel()
	if err := c.await(wait, f); err != nil {
		if wait.Err() != nil && ctx.Err() == nil && !errors.Is(err, raft.ErrLeadershipLost) {
			// ApplyTimeout ran out, not the caller's time: a leader
			// that cannot get the entry stored by a majority.
			return nil, fmt.Errorf("%w: %w: %w", errSent, errNotCommitted, translate(err))
		}
		if wait.Err() != nil || errors.Is(err, raft.ErrLeadershipLost) {
			// In the log, maybe replicated: it may still commit.
			return nil, fmt.Errorf("%w: %w", errSent, translate(err))
		}
		return nil, translate(err)
	}
	switch v := f.Response().(type) {
	case fsm.Result:
		return &v, nil
	case error:
		return nil, fmt.Errorf("%w: %w", ErrRejected, v)
	}
	return nil, fmt.Errorf("%w: unexpected fsm response %T", ErrForward, f.Response())
}

// retryable reports whether an Apply attempt may be repeated: the leader
// changed or could not be reached. A command whose leader lost leadership
// while committing may already be applied; Apply sends every attempt in
// the same Once envelope, which the registry applies at most once.
func retryable(err error) bool {
	return errors.Is(err, ErrNotLeader) || errors.Is(err, ErrForward) ||
		errors.Is(err, raft.ErrLeadershipTransferInProgress) || errors.Is(err, raft.ErrEnqueueTimeout)
}

// Apply commits an encoded fsm command (see fsm.Encode) and returns the
// fsm.Result. On the leader it goes through raft directly; on a follower it
// is forwarded to the leader. While there is no leader, or the leader
// changes, Apply retries with backoff until ctx ends; then it returns an
// error wrapping ErrNoLeader (and ctx.Err()). No leader for
// NoLeaderTimeout, or a leader that took the command and did not commit it
// within ApplyTimeout (fewer than a majority store entries), ends it with
// ErrNoQuorum (and ErrOutcomeUnknown when it was sent). A command the registry
// rejects returns an error wrapping ErrRejected and the fsm sentinel.
//
// Once the registry is at fsm.OnceVersion, every attempt carries the same
// request id (fsm.EncodeOnce), so a command takes effect at most once
// even when an attempt committed but its answer was lost; a retry returns
// the first attempt's Result. When the registry can no longer tell
// (fsm.ErrExpired after an unanswered attempt), the error wraps
// ErrOutcomeUnknown.
func (c *Consensus) Apply(ctx context.Context, cmd []byte) (any, error) {
	if len(cmd) == 0 || len(cmd) > fsm.MaxCommandSize {
		return nil, fmt.Errorf("%w: %w: command of %d bytes", ErrRejected, fsm.ErrMalformed, len(cmd))
	}
	// Reject what can never apply before it takes a log entry.
	if _, err := fsm.Decode(cmd); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRejected, err)
	}
	req, err := c.newRequest(cmd)
	if err != nil {
		return nil, err
	}
	return c.apply(ctx, req)
}

// apply is Apply's loop of attempts for req.
func (c *Consensus) apply(ctx context.Context, req *request) (any, error) {
	backoff := 10 * time.Millisecond
	var lastErr error
	sent := false            // some attempt reached a leader without an answer
	var leaderless time.Time // since when no leader was known (zero: one is)
	for {
		r, err := c.running()
		if err != nil {
			return nil, err
		}
		var res *fsm.Result
		var applied uint64 // the answering leader's applied index
		leader := c.LeaderID()
		if r.State() != raft.Leader && leader == "" {
			if leaderless.IsZero() {
				leaderless = time.Now()
			} else if c.cfg.NoLeaderTimeout > 0 && time.Since(leaderless) >= c.cfg.NoLeaderTimeout {
				return nil, c.noQuorum(sent)
			}
		} else {
			leaderless = time.Time{}
		}
		if r.State() == raft.Leader {
			res, err = c.applyLocal(r, ctx, req.data)
			applied = r.AppliedIndex()
		} else if leader != "" {
			target, op := leader, opApply
			if v := c.feed.relayTarget(); v != "" {
				target, op = v, opRelay
			}
			var resp forwardResponse
			resp, err = c.call(ctx, target, op, req.data)
			if err == nil {
				err = errFromResponse(resp)
				res, applied = resp.Result, resp.Applied
				if err == nil && res == nil {
					// Applied, but its Result is unknown.
					err = fmt.Errorf("%w: %w: ok response without result", ErrForward, errSent)
				}
			}
		} else {
			err = nil
		}
		if err == nil && res != nil {
			return *res, nil
		}
		if errors.Is(err, fsm.ErrExpired) {
			// No attempt of this request can have been applied unless one
			// went unanswered: then try again from the leader's index.
			if sent {
				// Not ErrRejected: the command may well be applied.
				return nil, fmt.Errorf("%w: %w (%v)", ErrOutcomeUnknown, fsm.ErrExpired, err)
			}
			if !req.rebase(applied) {
				return nil, err
			}
			c.rebased.Add(1)
			continue
		}
		if errors.Is(err, errSent) {
			sent = true
			if errors.Is(err, errNotCommitted) {
				// A leader took it, kept leading, and did not commit
				// it within ApplyTimeout: it cannot reach a majority
				// that stores entries, and would not by the caller's
				// deadline either. (A broken connection or a lost
				// leadership is churn: the deduplicated retry rides
				// it out, however long the Apply has taken.)
				return nil, c.notCommitted()
			}
		}
		if err != nil && !retryable(err) && !errors.Is(err, errSent) {
			return nil, err
		}
		if err != nil {
			lastErr = err
			c.log.Debug("apply attempt failed; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			if sent {
				return nil, fmt.Errorf("%w: %w: %w (last error: %v)", ErrNoLeader, ErrOutcomeUnknown, ctx.Err(), lastErr)
			}
			if lastErr != nil {
				return nil, fmt.Errorf("%w: %w (last error: %v)", ErrNoLeader, ctx.Err(), lastErr)
			}
			return nil, fmt.Errorf("%w: %w", ErrNoLeader, ctx.Err())
		case <-c.ctx.Done():
			return nil, ErrClosed
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 500*time.Millisecond)
	}
}

// request is what Apply sends for one command: the command itself while
// the registry is below fsm.OnceVersion (an older server would halt on an
// envelope), else the command in a Once envelope.
type request struct {
	cmd  []byte
	id   fsm.OnceID
	base uint64
	data []byte
}

// newRequest wraps cmd with a fresh random id and, as its Base, the log
// index raft has applied on this server: committed, so every attempt
// lands above it. (The registry's own index moves only with commands
// that change it, and would fall behind over barriers, configuration
// changes and rejected commands.)
func (c *Consensus) newRequest(cmd []byte) (*request, error) {
	req := &request{cmd: cmd, data: cmd}
	if c.cfg.FSM.RegistryVersion() < fsm.OnceVersion {
		return req, nil
	}
	if _, err := rand.Read(req.id[:]); err != nil {
		return nil, fmt.Errorf("consensus: request id: %w", err)
	}
	// A replica's raft applies nothing: what its feed applied counts.
	base := c.replay.index()
	if r, err := c.running(); err == nil {
		base = max(base, r.AppliedIndex())
	}
	return req, req.wrap(base)
}

func (r *request) wrap(base uint64) error {
	data, err := fsm.EncodeOnce(r.id, base, r.cmd)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrRejected, err)
	}
	r.base, r.data = base, data
	return nil
}

// rebase moves the request's Base to applied, an index a leader reported
// applied, when that is later; it reports whether it did.
func (r *request) rebase(applied uint64) bool {
	if applied <= r.base {
		return false
	}
	return r.wrap(applied) == nil
}

// noQuorum is the error of an Apply that found no leader for
// NoLeaderTimeout: it names the voters this server does not see alive.
func (c *Consensus) noQuorum(sent bool) error {
	gone, voters := c.unreachableVoters()
	msg := fmt.Sprintf("no leader for %s: %d of %d voters unreachable (%s); writes need a majority", c.cfg.NoLeaderTimeout, len(gone), voters, strings.Join(gone, ", "))
	if seen := voters - len(gone); voters > 0 && 2*seen > voters {
		// Gossip sees a majority, yet raft found no leader: raft's own
		// path (libp2p) is what fails, which "0 of 3 unreachable ()"
		// did not tell.
		msg = fmt.Sprintf("no leader for %s, though gossip sees %d of %d voters alive: raft (over libp2p) does not reach them; check that their p2p port (--p2p-addr) is open between the nodes; writes need a majority", c.cfg.NoLeaderTimeout, seen, voters)
		if len(gone) > 0 {
			msg += fmt.Sprintf(" (gossip does not see %s)", strings.Join(gone, ", "))
		}
	}
	if sent {
		return fmt.Errorf("%w: %w: %s", ErrNoQuorum, ErrOutcomeUnknown, msg)
	}
	return fmt.Errorf("%w: %s", ErrNoQuorum, msg)
}

// notCommitted is Apply's error when a leader took the write but did not
// commit it within ApplyTimeout: it stays leader while a majority of the
// voters answer it, yet fewer than a majority store the entry (one is
// gone and another's disk is full, its stores failing). Retrying would
// only wait the same again until the caller's deadline.
func (c *Consensus) notCommitted() error {
	gone, voters := c.unreachableVoters()
	unreachable := "none"
	if len(gone) > 0 {
		unreachable = strings.Join(gone, ", ")
	}
	return fmt.Errorf("%w: %w: the leader did not commit the write within %s: fewer than a majority of the %d voters stored it (unreachable: %s; a reachable voter whose disk is full or read-only fails to store it: its rbee status says registry halted); writes need a majority",
		ErrNoQuorum, ErrOutcomeUnknown, c.cfg.ApplyTimeout, voters, unreachable)
}

// unreachableVoters returns the names of the voters gossip does not see
// alive (not this server), sorted, and the number of voters.
func (c *Consensus) unreachableVoters() (gone []string, voters int) {
	alive := map[string]string{}
	names := map[string]string{}
	for _, m := range c.cfg.Members() {
		names[m.ID] = m.Name
		if m.State == MemberAlive {
			alive[m.ID] = m.Name
		}
	}
	if servers, err := c.Servers(); err == nil {
		for _, s := range servers {
			if s.Suffrage != "voter" {
				continue
			}
			voters++
			if _, ok := alive[s.ID]; ok || s.ID == c.cfg.LocalID {
				continue
			}
			name := names[s.ID]
			if name == "" {
				name = s.ID
			}
			gone = append(gone, name)
		}
	}
	sort.Strings(gone)
	return gone, voters
}

// ApplyCommand encodes cmd and applies it like Apply.
func (c *Consensus) ApplyCommand(ctx context.Context, cmd fsm.Command) (fsm.Result, error) {
	b, err := fsm.Encode(cmd)
	if err != nil {
		return fsm.Result{}, fmt.Errorf("%w: %w", ErrRejected, err)
	}
	res, err := c.Apply(ctx, b)
	if err != nil {
		return fsm.Result{}, err
	}
	return res.(fsm.Result), nil
}

// queryStatus asks a peer whether it already has raft state.
func (c *Consensus) queryStatus(ctx context.Context, id string) (peerStatus, error) {
	resp, err := c.call(ctx, id, opStatus, nil)
	if err != nil {
		return peerStatus{}, err
	}
	if err := errFromResponse(resp); err != nil {
		return peerStatus{}, err
	}
	if resp.Status == nil {
		return peerStatus{}, fmt.Errorf("%w: status response without status", ErrForward)
	}
	return *resp.Status, nil
}

// Leave removes this server from the raft configuration gracefully: a
// leader first transfers leadership, then the (new) leader is asked to
// remove this server. A server that is the only voter has nobody to hand
// over to and returns nil after logging. Call it before the gossip leave;
// the leader will not re-add a server that asked to leave for a while.
// Leave does not Close.
func (c *Consensus) Leave(ctx context.Context) error {
	r, err := c.running()
	if err != nil {
		return err
	}
	if r.State() == raft.Leader {
		servers, err := c.Servers()
		if err != nil {
			return err
		}
		voters := 0
		for _, s := range servers {
			if s.Suffrage == "voter" && s.ID != c.cfg.LocalID {
				voters++
			}
		}
		if voters == 0 {
			c.log.Warn("leave: this is the only voter; nothing to hand over")
			return nil
		}
		if err := c.LeadershipTransfer(ctx); err != nil {
			// A transfer times out when the chosen follower is slow (a
			// loaded machine); the loop below tries again until ctx ends.
			c.log.Warn("leave: leadership transfer failed; trying again", "err", err)
		}
	}
	backoff := 20 * time.Millisecond
	for {
		var err error
		leader := c.LeaderID()
		switch {
		case r.State() == raft.Leader:
			err = ErrNotLeader // leadership came back (transfer raced); try again
			if e := c.LeadershipTransfer(ctx); e != nil {
				err = e
			}
		case leader != "":
			var resp forwardResponse
			resp, err = c.call(ctx, leader, opRemove, []byte(c.cfg.LocalID))
			if err == nil {
				err = errFromResponse(resp)
			}
			if err == nil {
				c.log.Info("left the raft configuration")
				return nil
			}
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = ErrNoLeader
			}
			return fmt.Errorf("consensus: leave: %w: %w", ctx.Err(), err)
		case <-c.ctx.Done():
			return ErrClosed
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 500*time.Millisecond)
	}
}
