package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/rbee-project/rbee/internal/nodefile"
	"github.com/rbee-project/rbee/internal/peercred"
)

// Heartbeat is the JSON a worker POSTs to its node at
// NodeURL/v1/workers/heartbeat every HeartbeatInterval. The node decodes the
// same type. State is one of "loading", "ready", "busy" (every slot in use),
// "draining", "stopped" (the last beat of a worker) or "failed" (the model
// could not be loaded).
type Heartbeat struct {
	ID              string  `json:"id"`
	PID             int     `json:"pid"`
	Port            int     `json:"port"`
	Model           string  `json:"model"`
	ModelPath       string  `json:"model_path"`
	Device          string  `json:"device"`
	State           State   `json:"state"`
	InFlight        int     `json:"in_flight"`
	Queued          int     `json:"queued"`
	Slots           int     `json:"slots"`
	TokensPerSecond float64 `json:"tokens_per_second"`
	ContextLength   int     `json:"context_length"`
	Version         string  `json:"version"`
	// Seq numbers a process's beats from 1 in the order it sent them
	// (0: unnumbered, from an older worker or the node itself). A beat
	// cut short by the worker (its loop's beat when it stops) may still
	// reach the node after the next one, on another connection: the
	// node keeps the newest by Seq (see node/supervisor).
	Seq uint64 `json:"seq,omitempty"`
}

const (
	// finalBeatTimeout bounds the "draining" and "stopped" heartbeats so a
	// dead node cannot hold up the worker's exit.
	finalBeatTimeout = 2 * time.Second
	// minBeatTimeout is the least time a periodic beat gets: with short
	// intervals (tests, fast failure detection) a busy machine would
	// otherwise time out beats that are merely slow.
	minBeatTimeout = time.Second
	// failureLogEvery: of consecutive failed beats, the first and then every
	// 30th (a minute at the default interval) are logged at warn level.
	failureLogEvery = 30
)

// heartbeater posts heartbeats on a ticker and on demand. Failures are
// logged and never stop it. With an orphan grace it also watches for a node
// that is gone: once no beat has been accepted (2xx) for the grace, it calls
// onOrphan, once.
type heartbeater struct {
	url      string // guarded by mu
	nodeFile string // the node's node.json ("": the url is for good)
	secret   string
	interval time.Duration
	grace    time.Duration // 0: never orphaned
	build    func() Heartbeat
	onOrphan func(silent time.Duration)
	log      *slog.Logger
	// client's connections to a loopback node must reach a server this
	// process's user runs (peercred.LoopbackOwnedBy). While the node is
	// down (a restart, an upgrade: its workers keep running) any local
	// user may listen on its port, and a beat would hand them the
	// worker's secret: the worker's port and the node's heartbeat route
	// open to them. A node off loopback (on --insecure-http's address)
	// cannot be checked.
	client *http.Client

	kick     chan struct{} // early beat, coalesced
	ctx      context.Context
	cancel   context.CancelFunc
	done     chan struct{}
	mu       sync.Mutex // serializes posts so beats leave in order
	seq      uint64     // the last beat's Seq; guarded by mu
	failures int        // consecutive failed beats; guarded by mu
	refused  bool       // the last failure was the node refusing the secret; guarded by mu
	accepted time.Time  // last beat the node accepted (start when none); guarded by mu
	orphaned bool       // onOrphan was called; guarded by mu
	started  bool
}

// errRefused marks a beat the node answered 401: it does not know this
// worker's secret (another node on the same port, or the node lost its
// state). Such a beat is not accepted: the orphan grace keeps running.
var errRefused = errors.New("node refused the worker's secret (401): this worker was not started by the node now at that address")

func newHeartbeater(url, secret string, interval, grace time.Duration, build func() Heartbeat,
	onOrphan func(time.Duration), log *slog.Logger) *heartbeater {
	ctx, cancel := context.WithCancel(context.Background())
	return &heartbeater{
		url:      url,
		secret:   secret,
		interval: interval,
		grace:    grace,
		build:    build,
		onOrphan: onOrphan,
		log:      log,
		client:   peercred.LoopbackOwnedBy(&http.Client{}, uint32(os.Getuid())),
		kick:     make(chan struct{}, 1),
		ctx:      ctx,
		cancel:   cancel,
		done:     make(chan struct{}),
	}
}

func (h *heartbeater) start() {
	h.started = true
	h.mu.Lock()
	h.accepted = time.Now()
	h.mu.Unlock()
	go h.loop()
}

func (h *heartbeater) loop() {
	defer close(h.done)
	t := time.NewTicker(h.interval)
	defer t.Stop()
	// A beat older than one interval is stale anyway, within reason.
	timeout := max(h.interval, minBeatTimeout)
	// With an orphan grace, a timer also wakes the loop when the grace
	// ends before the next tick.
	var orphan *time.Timer
	var orphanC <-chan time.Time
	if h.grace > 0 {
		orphan = time.NewTimer(h.grace)
		defer orphan.Stop()
		orphanC = orphan.C
	}
	for {
		ctx, cancel := context.WithTimeout(h.ctx, timeout)
		h.send(ctx)
		cancel()
		if orphan != nil {
			orphan.Reset(h.checkOrphan())
		}
		select {
		case <-h.ctx.Done():
			return
		case <-t.C:
		case <-h.kick:
		case <-orphanC:
		}
	}
}

// checkOrphan calls onOrphan (once, on its own goroutine: it stops the
// server, which stops this loop) when the grace has passed since the last
// accepted beat, and returns the time left until it will have.
func (h *heartbeater) checkOrphan() time.Duration {
	h.mu.Lock()
	silent := time.Since(h.accepted)
	fire := silent >= h.grace && !h.orphaned
	if fire {
		h.orphaned = true
	}
	h.mu.Unlock()
	if fire && h.onOrphan != nil {
		go h.onOrphan(silent)
	}
	return max(h.grace-silent, h.interval)
}

// kickNow requests an early beat from the loop (non-blocking).
func (h *heartbeater) kickNow() {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// beatNow sends a beat synchronously (bounded by finalBeatTimeout).
func (h *heartbeater) beatNow() {
	ctx, cancel := context.WithTimeout(context.Background(), finalBeatTimeout)
	defer cancel()
	h.send(ctx)
}

// stop ends the loop and sends the final beat.
func (h *heartbeater) stop() {
	h.cancel()
	if h.started {
		<-h.done
	}
	h.beatNow()
}

// heartbeatURL is where a node at base takes heartbeats.
func heartbeatURL(base string) string {
	return strings.TrimRight(base, "/") + "/v1/workers/heartbeat"
}

// follow reads the node's API URL from its node.json and, when it is not
// where beats go now (the node restarted on another port), makes beats go
// there and reports true. Called with mu held.
func (h *heartbeater) follow() bool {
	if h.nodeFile == "" {
		return false
	}
	base, err := nodefile.APIURL(h.nodeFile)
	if err != nil {
		h.log.Debug("the node's node.json gives no address", "file", h.nodeFile, "err", err)
		return false
	}
	if u := heartbeatURL(base); u != h.url {
		h.log.Info("the node moved: heartbeats go to its new address", "from", h.url, "to", u)
		h.url = u
		return true
	}
	return false
}

func (h *heartbeater) send(ctx context.Context) {
	h.mu.Lock()
	defer h.mu.Unlock()
	hb := h.build()
	h.seq++
	hb.Seq = h.seq
	err := h.post(ctx, hb)
	// A beat that failed, also by timing out (an old address that drops
	// packets rather than refusing them), while the worker runs: the node
	// may have moved; the beat goes again there, with a time of its own.
	if err != nil && h.ctx.Err() == nil && h.follow() {
		retry, cancel := context.WithTimeout(h.ctx, max(h.interval, minBeatTimeout))
		err = h.post(retry, hb)
		cancel()
	}
	switch {
	case err == nil:
		if h.failures > 0 {
			h.log.Info("heartbeats reach the node again", "failed_beats", h.failures)
		}
		h.failures = 0
		h.refused = false
		h.accepted = time.Now()
	case errors.Is(err, context.Canceled) && h.ctx.Err() != nil:
		// Cut short by stop(): not a failure.
	default:
		h.failures++
		refused := errors.Is(err, errRefused)
		changed := refused != h.refused
		h.refused = refused
		// A node that is down would otherwise log every interval; a
		// change of cause (down, then a stranger refusing) is logged at
		// once.
		if h.failures%failureLogEvery == 1 || changed {
			h.log.Warn("heartbeat failed", "url", h.url, "err", err, "consecutive", h.failures,
				"last_accepted", time.Since(h.accepted).Round(time.Second), "orphan_grace", h.grace)
		} else {
			h.log.Debug("heartbeat failed", "url", h.url, "err", err, "consecutive", h.failures)
		}
	}
}

func (h *heartbeater) post(ctx context.Context, hb Heartbeat) error {
	body, err := json.Marshal(hb)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+h.secret)
	resp, err := h.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode == http.StatusUnauthorized {
		return errRefused
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("node answered %s", resp.Status)
	}
	return nil
}
