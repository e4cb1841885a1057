package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/node/blob"
	"github.com/rbee-project/rbee/node/jobs"
	"github.com/rbee-project/rbee/p2p"
)

// Node-to-node protocols.
const (
	// protoInfo answers a peer's identity, gossip address and health.
	protoInfo protocol.ID = "/rbee/info/1.0.0"
	// protoJob runs an operation on this node for another node: one request
	// frame in, event frames out until the done event.
	protoJob protocol.ID = "/rbee/job/1.0.0"
	// protoJobStrict is protoJob from a node that refuses a request field
	// it does not know (api.Decode). A peer that answers only protoJob
	// may be a build that ignores one (api.LooseIgnored): forwardJob sends
	// it no job that sets such a field.
	protoJobStrict protocol.ID = "/rbee/job/1.1.0"
)

// Frame caps: an info answer is a few hundred bytes; a job request is
// bounded like the HTTP body; one event carries at most a result document.
const (
	maxInfoFrame  = 64 << 10
	maxEventFrame = 4 << 20
	infoDeadline  = 5 * time.Second
)

// peerInfoMsg is the answer of protoInfo.
type peerInfoMsg struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	GossipAddr string `json:"gossip_addr"`
	HTTPAddr   string `json:"http_addr"`
	Version    string `json:"version"`
	RaftState  string `json:"raft_state"`
	APIHealthy bool   `json:"api_healthy"`
	APIError   string `json:"api_error,omitempty"`
}

// registerP2PHandlers serves this node's libp2p protocols; the components
// they reach (blobs, hive) exist before it is called.
func (n *Node) registerP2PHandlers() {
	n.host.Handle(protoInfo, n.handleInfo)
	n.host.Handle(protoJob, n.handleJob)
	n.host.Handle(protoJobStrict, n.handleJob)
	n.host.Handle(protoWorkerHTTP, n.handleWorkerHTTP)
	n.host.Handle(protoWorkerHTTP11, n.handleWorkerHTTP11)
	n.host.Handle(blob.Protocol, n.blobs.Handle)
}

func (n *Node) handleInfo(s network.Stream) {
	_ = s.SetDeadline(time.Now().Add(infoDeadline))
	ctx, cancel := context.WithTimeout(n.ctx, 2*time.Second)
	apiErr := n.checkLocalAPI(ctx)
	cancel()
	msg := peerInfoMsg{ID: n.ID(), Name: n.cfg.Name, GossipAddr: n.gsp.Addr(), HTTPAddr: n.HTTPAddr(),
		Version: n.cfg.Version, RaftState: n.cons.State(), APIHealthy: apiErr == nil}
	if apiErr != nil {
		msg.APIError = apiErr.Error()
	}
	if err := p2p.WriteJSON(s, msg); err != nil {
		_ = s.Reset()
		return
	}
	_ = s.Close()
}

// peerInfo asks a peer for its info over libp2p.
func (n *Node) peerInfo(ctx context.Context, id peer.ID) (peerInfoMsg, error) {
	var msg peerInfoMsg
	s, err := n.host.NewStream(ctx, id, protoInfo)
	if err != nil {
		return msg, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	} else {
		_ = s.SetDeadline(time.Now().Add(infoDeadline))
	}
	if err := p2p.ReadJSON(s, maxInfoFrame, &msg); err != nil {
		_ = s.Reset()
		return msg, err
	}
	_ = s.Close()
	return msg, nil
}

// handleJob runs a forwarded operation locally and streams its events back.
// The requester resetting the stream cancels the operation.
func (n *Node) handleJob(s network.Stream) {
	_ = s.SetReadDeadline(time.Now().Add(10 * time.Second))
	body, err := p2p.ReadFrame(s, maxRequestBytes)
	if err != nil {
		_ = s.Reset()
		return
	}
	_ = s.SetReadDeadline(time.Time{})
	ctx, cancel := watchRequester(n.ctx, s)
	defer cancel()
	em := &streamEmitter{s: s, node: n.cfg.Name, gone: cancel}
	req, err := n.ParseRequest(body)
	if err == nil {
		req.Hive = "" // run here
		// A panic fails the job, as for a local one; a libp2p handler's
		// panic would end the node.
		err = jobs.Recover(func() error { return n.ops[req.Operation].run(ctx, em, req) })
	}
	if err != nil {
		em.Emit(jobs.Event{Type: jobs.TypeError, Code: jobs.CodeOf(err), Message: err.Error()})
		em.Emit(jobs.Event{Type: jobs.TypeDone, Status: "failed"})
	} else {
		em.Emit(jobs.Event{Type: jobs.TypeDone, Status: "ok"})
	}
	if em.err != nil {
		_ = s.Reset()
		return
	}
	_ = s.Close()
}

// watchRequester returns a context that ends when the requester resets
// the stream, so a handler's work stops when the other side goes away. An
// EOF is normal (a requester closes the stream after the job's end; older
// builds CloseWrite right after the request); after it a reset no longer
// reaches a read: a streamEmitter whose write fails ends the context then.
func watchRequester(parent context.Context, s network.Stream) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(parent)
	go func() {
		var b [1]byte
		for {
			if _, err := s.Read(b[:]); err != nil {
				if !errors.Is(err, io.EOF) {
					cancel()
				}
				return
			}
		}
	}()
	return ctx, cancel
}

// streamEmitter writes events as frames to a libp2p stream. A write that
// fails means the requester is gone (it resets the stream when its job is
// cancelled): gone, when set, is called then, to stop the work.
type streamEmitter struct {
	s    network.Stream
	node string
	gone context.CancelFunc
	err  error
}

func (e *streamEmitter) Emit(ev jobs.Event) {
	if e.err != nil {
		return
	}
	if ev.Node == "" {
		ev.Node = e.node
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now().UTC()
	}
	_ = e.s.SetWriteDeadline(time.Now().Add(30 * time.Second))
	e.err = p2p.WriteJSON(e.s, ev)
	if e.err != nil && e.gone != nil {
		e.gone()
	}
}

func (e *streamEmitter) Narrate(actor, action, format string, args ...any) {
	e.Emit(jobs.Event{Type: jobs.TypeNarration, Actor: actor, Action: action, Message: fmt.Sprintf(format, args...)})
}

func (e *streamEmitter) Progress(done, total int64, unit string) {
	e.Emit(jobs.Event{Type: jobs.TypeProgress, Done: done, Total: total, Unit: unit})
}

func (e *streamEmitter) Result(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	e.Emit(jobs.Event{Type: jobs.TypeResult, Result: b})
	return e.err
}

// forwardDialTimeout bounds reaching a hive to forward a job: a LAN dial
// takes milliseconds; a hive that does not answer within this is down.
const forwardDialTimeout = 10 * time.Second

// forwardJob runs req on target over libp2p and relays its events into em.
// The remote error event is relayed as is; the local job then fails with
// the remote code.
func (n *Node) forwardJob(ctx context.Context, target api.Hive, req Request, em jobs.Emitter) error {
	if target.ID == "" {
		return jobs.Errorf(jobs.CodeUnavailable, "%s is an inventory host that runs no node (state %s): start one with `rbee hive start %s`", target.Name, target.State, target.Name)
	}
	// A suspect hive missed a gossip probe (a busy machine does) and may
	// well answer: try it; a dead or departed one is refused at once.
	if target.State != "alive" && target.State != "suspect" {
		return jobs.Errorf(jobs.CodeUnavailable, "hive %s is %s", target.Name, target.State)
	}
	pid, err := peer.Decode(target.ID)
	if err != nil {
		return jobs.Errorf(jobs.CodeInternal, "bad peer id %q", target.ID)
	}
	em.Narrate("node", "forward", "forwarding %s to %s", req.Operation, target.Name)
	dialCtx, cancelDial := context.WithTimeout(ctx, forwardDialTimeout)
	s, err := n.host.NewStream(dialCtx, pid, protoJobStrict, protoJob)
	cancelDial()
	if err != nil {
		return jobs.Errorf(jobs.CodeUnavailable, "cannot reach hive %s (%s) over p2p: %v", target.Name, target.State, err)
	}
	if s.Protocol() != protoJobStrict {
		// An older build, which would run the job without the fields it
		// does not know.
		if fields := api.LooseIgnored(req.Operation, req.Raw); len(fields) > 0 {
			_ = s.Reset()
			return jobs.Errorf(jobs.CodeUpgradeRequired, "hive %s runs an older rbee (%s) that would ignore %s of %s: upgrade it first (or leave %s out)",
				target.Name, orUnknown(target.Version), strings.Join(fields, ", "), req.Operation, strings.Join(fields, ", "))
		}
	}
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()
	// A hive that drops off without a FIN or RST (a partition, a cut
	// cable) held the read below until libp2p's keepalive gave up, about
	// 40 s: end it once gossip declares the hive dead.
	watch := n.watchGone(s, target.ID)
	defer watch.close()
	_ = s.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := p2p.WriteFrame(s, req.Raw); err != nil {
		_ = s.Reset()
		return jobs.Errorf(jobs.CodeUnavailable, "send to %s: %v", target.Name, err)
	}
	// No CloseWrite: the target's watchRequester reads on until this side
	// resets the stream (a cancel) or closes it (the job's end). After an
	// EOF it could no longer see the reset, and a job that emits nothing
	// for a while (a download from a source gone quiet) ran on there.
	for {
		var ev jobs.Event
		if err := p2p.ReadJSON(s, maxEventFrame, &ev); err != nil {
			_ = s.Reset()
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return jobs.Errorf(jobs.CodeUnavailable, "hive %s went away during %s (its outcome there is unknown): %v", target.Name, req.Operation, watch.explain(err))
		}
		watch.touch()
		switch ev.Type {
		case jobs.TypeDone:
			_ = s.Close()
			if ev.Status != "ok" {
				return jobs.ErrReported
			}
			return nil
		case jobs.TypeError:
			em.Emit(ev)
			// remember the code: the job's final error event repeats it
		default:
			ev.Seq = 0
			em.Emit(ev)
		}
	}
}

// orUnknown is v, or "version unknown" when v is empty.
func orUnknown(v string) string {
	if v == "" {
		return "version unknown"
	}
	return v
}
