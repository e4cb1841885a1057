// Package jobs runs operations as jobs whose typed events are kept for late or
// reconnecting readers.
//
// A Job starts when it is submitted, appends events as it runs and ends with
// exactly one "done" event. Readers subscribe from any sequence number and get
// every later event in order (the SSE Last-Event-ID replay of the HTTP API).
// All methods are safe for concurrent use.
package jobs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"syscall"
	"time"
)

// Event types. They are the wire names of the job event stream.
const (
	TypeNarration = "narration"
	TypeProgress  = "progress"
	TypeToken     = "token"
	TypeResult    = "result"
	TypeError     = "error"
	TypeDone      = "done"
)

// Error codes carried by error events. Stable strings: clients match on them.
const (
	CodeBadRequest       = "bad_request"
	CodeUnknownOperation = "unknown_operation"
	CodeNotFound         = "not_found"
	// CodeMethodNotAllowed: a known path asked with another method (405).
	CodeMethodNotAllowed = "method_not_allowed"
	CodeUnknownHive      = "unknown_hive"
	CodeUnavailable      = "unavailable"
	CodeCancelled        = "cancelled"
	CodeInternal         = "internal"
	CodeConflict         = "conflict"
	CodeForbidden        = "forbidden"
	// CodeNoQuorum: a registry write found no leader (no majority of
	// voters reachable); it changed nothing unless it says it may commit.
	CodeNoQuorum = "no_quorum"
	// CodeUpgradeRequired: the write needs a registry version the cluster
	// has not reached (a server runs an older build); upgrade it first.
	CodeUpgradeRequired = "upgrade_required"
	// CodeTooManyJobs: the caller has its most running jobs (429).
	CodeTooManyJobs = "too_many_jobs"
)

// Sentinel errors.
var (
	// ErrNotFound: no job with that id (never existed or already expired).
	ErrNotFound = errors.New("job not found")
	// ErrTooMany: the manager holds its maximum of running jobs.
	ErrTooMany = errors.New("too many running jobs")
	// ErrOwnerBusy: the submitter has MaxOwnerJobs jobs running already.
	ErrOwnerBusy = errors.New("too many running jobs of this caller: wait for some to end, or cancel them (DELETE /v1/jobs/{id})")
	// ErrClosed: the manager is closed.
	ErrClosed = errors.New("job manager closed")
	// ErrReported: returned by a Func whose error event was already emitted
	// (a relayed remote failure); the job just ends with done "failed".
	ErrReported = errors.New("failure already reported")
)

// Event is one typed event of a job. Fields not used by a type are omitted.
type Event struct {
	Seq  int64     `json:"seq"`
	Type string    `json:"type"`
	Time time.Time `json:"time"`
	Node string    `json:"node,omitempty"`

	// narration
	Actor   string `json:"actor,omitempty"`
	Action  string `json:"action,omitempty"`
	Message string `json:"message,omitempty"`

	// progress: done of total units; for transfers also the average rate
	// (units per second) and the estimated time left.
	Done  int64   `json:"done,omitempty"`
	Total int64   `json:"total,omitempty"`
	Unit  string  `json:"unit,omitempty"`
	Rate  float64 `json:"rate,omitempty"`
	ETAMs int64   `json:"eta_ms,omitempty"`

	// token
	Text  string `json:"text,omitempty"`
	Index int    `json:"index,omitempty"`
	ID    int32  `json:"id,omitempty"`

	// result
	Result json.RawMessage `json:"result,omitempty"`

	// error
	Code string `json:"code,omitempty"`

	// done: "ok", "failed", or "cancelled" (the job was cancelled; its
	// error event has code "cancelled")
	Status string `json:"status,omitempty"`
}

// Error is an error with a stable code. Operations return it (wrapped or not)
// to choose the code of the job's error event.
type Error struct {
	Code string
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Errorf builds an *Error with a code.
func Errorf(code, format string, args ...any) error {
	return &Error{Code: code, Err: fmt.Errorf(format, args...)}
}

// CodeOf returns the code of err: the innermost *Error's code, cancelled for
// context errors, unavailable for a full or read-only file system and for
// a file or directory the node's user may not use (the node's disk or its
// files' owners and modes: freeing space, remounting or fixing the
// ownership makes a retry work, nothing is wrong with the request),
// internal otherwise.
func CodeOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return CodeCancelled
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.EROFS) ||
		errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM) {
		return CodeUnavailable
	}
	return CodeInternal
}

// Emitter is what an operation writes its events to.
type Emitter interface {
	Emit(ev Event)
	Narrate(actor, action, format string, args ...any)
	Progress(done, total int64, unit string)
	Result(v any) error
}

// Func is the body of a job. It returns nil on success; an error becomes the
// job's error event (code from CodeOf) followed by done "failed".
type Func func(ctx context.Context, em Emitter) error

// Config tunes a Manager.
type Config struct {
	// Node is stamped on events that carry no node of their own.
	Node string
	// Retain is how long a finished job stays readable.
	Retain time.Duration
	// MaxJobs bounds running plus retained jobs; the oldest finished ones
	// are dropped first.
	MaxJobs int
	// MaxEvents bounds the events kept per job; a job that emits more keeps
	// the first MaxEvents-2 and its final error/done (token streams of long
	// generations are the usual reason to hit it).
	MaxEvents int
	// MaxRetainedEvents bounds the events of all finished jobs together;
	// past it the oldest finished jobs are dropped before their Retain.
	MaxRetainedEvents int
	// MaxOwnerJobs bounds the running jobs of one owner (0: a tenth of
	// MaxJobs), so that one caller cannot fill MaxJobs and lock every
	// other one out. Jobs without an owner and Unbounded's are not
	// counted against it.
	MaxOwnerJobs int
	// Unbounded is an owner whom MaxOwnerJobs does not limit and who may
	// go a tenth past MaxJobs (the admin, who must still be able to act,
	// revoke a key or cancel, while others hold MaxJobs); "" for none.
	Unbounded string
	Logger    *slog.Logger
}

// DefaultConfig: 10 minutes of retention is long enough for a client to
// reconnect. 100k events per job (a long generation's tokens, ~140 bytes
// each in memory) and 200k events of finished jobs together bound what
// finished jobs keep to about 30 MiB; before that bound, 1000 jobs of
// 100k events each could have held 14 GiB.
func DefaultConfig() Config {
	return Config{Retain: 10 * time.Minute, MaxJobs: 1000, MaxEvents: 100000, MaxRetainedEvents: 200000}
}

// Manager owns jobs.
type Manager struct {
	cfg    Config
	log    *slog.Logger
	mu     sync.Mutex
	jobs   map[string]*Job
	closed bool
	wg     sync.WaitGroup
}

// New makes a Manager.
func New(cfg Config) *Manager {
	d := DefaultConfig()
	if cfg.Retain <= 0 {
		cfg.Retain = d.Retain
	}
	if cfg.MaxJobs <= 0 {
		cfg.MaxJobs = d.MaxJobs
	}
	if cfg.MaxEvents <= 0 {
		cfg.MaxEvents = d.MaxEvents
	}
	if cfg.MaxRetainedEvents <= 0 {
		cfg.MaxRetainedEvents = d.MaxRetainedEvents
	}
	if cfg.MaxOwnerJobs <= 0 {
		cfg.MaxOwnerJobs = max(1, cfg.MaxJobs/10)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Manager{cfg: cfg, log: log, jobs: map[string]*Job{}}
}

// Job is one running or finished operation.
type Job struct {
	ID        string
	Operation string
	Created   time.Time
	// Owner names who submitted the job (the API decides who may read it);
	// "" when the submitter gave none.
	Owner string

	m      *Manager
	cancel context.CancelFunc
	mu     sync.Mutex
	events []Event
	notify chan struct{} // closed and replaced on every append
	ended  time.Time
	done   bool
}

// Submit starts fn as a new job and returns at once.
func (m *Manager) Submit(parent context.Context, operation string, fn Func) (*Job, error) {
	return m.SubmitOwned(parent, operation, "", fn)
}

// SubmitOwned is Submit for a job that records its owner.
func (m *Manager) SubmitOwned(parent context.Context, operation, owner string, fn Func) (*Job, error) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, ErrClosed
	}
	m.gcLocked()
	limit := m.cfg.MaxJobs
	if owner != "" && owner == m.cfg.Unbounded {
		limit += max(1, m.cfg.MaxJobs/10)
	}
	if len(m.jobs) >= limit {
		m.mu.Unlock()
		return nil, ErrTooMany
	}
	if owner != "" && owner != m.cfg.Unbounded && m.runningLocked(owner) >= m.cfg.MaxOwnerJobs {
		m.mu.Unlock()
		return nil, ErrOwnerBusy
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	j := &Job{ID: newID(), Operation: operation, Owner: owner, Created: time.Now(), m: m, cancel: cancel, notify: make(chan struct{})}
	m.jobs[j.ID] = j
	m.wg.Add(1)
	m.mu.Unlock()

	go func() {
		defer m.wg.Done()
		defer cancel()
		defer func() {
			// A finished job's events count against the retained
			// budget now, not at the next submit.
			m.mu.Lock()
			m.gcLocked()
			m.mu.Unlock()
		}()
		err := safeRun(ctx, fn, j)
		if errors.Is(err, ErrReported) {
			j.finish("failed")
			return
		}
		if err != nil {
			if ctx.Err() != nil && (CodeOf(err) == CodeInternal || errors.Is(err, context.Canceled)) {
				err = &Error{Code: CodeCancelled, Err: fmt.Errorf("job cancelled: %w", err)}
			}
			j.Emit(Event{Type: TypeError, Code: CodeOf(err), Message: err.Error()})
			if CodeOf(err) == CodeCancelled {
				j.finish(StatusCancelled)
			} else {
				j.finish("failed")
			}
			m.log.Debug("job failed", "job", j.ID, "op", operation, "err", err)
			return
		}
		j.finish("ok")
	}()
	return j, nil
}

func safeRun(ctx context.Context, fn Func, j *Job) error {
	return Recover(func() error { return fn(ctx, j) })
}

// Recover runs fn and returns its error, or an internal error when fn
// panics: a bug in one operation fails that job, not the node.
func Recover(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("operation panicked: %v", r)
		}
	}()
	return fn()
}

// Get returns a job by id.
func (m *Manager) Get(id string) (*Job, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	j, ok := m.jobs[id]
	if !ok {
		return nil, ErrNotFound
	}
	return j, nil
}

// List returns the jobs, newest first.
func (m *Manager) List() []*Job {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*Job, 0, len(m.jobs))
	for _, j := range m.jobs {
		out = append(out, j)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Created.After(out[b].Created) })
	return out
}

// Cancel cancels a job. Cancelling a finished job is a no-op.
func (m *Manager) Cancel(id string) error {
	j, err := m.Get(id)
	if err != nil {
		return err
	}
	j.cancel()
	return nil
}

// Close cancels every job and waits for them to end.
func (m *Manager) Close() {
	m.mu.Lock()
	m.closed = true
	for _, j := range m.jobs {
		j.cancel()
	}
	m.mu.Unlock()
	m.wg.Wait()
}

// runningLocked is how many of owner's jobs are running; m.mu is held.
func (m *Manager) runningLocked(owner string) int {
	n := 0
	for _, j := range m.jobs {
		if j.Owner != owner {
			continue
		}
		j.mu.Lock()
		if !j.done {
			n++
		}
		j.mu.Unlock()
	}
	return n
}

// gcLocked drops expired jobs, then the oldest finished ones while there
// are MaxJobs jobs or finished jobs hold over MaxRetainedEvents events.
func (m *Manager) gcLocked() {
	now := time.Now()
	var finished []*Job
	retained := 0
	for id, j := range m.jobs {
		j.mu.Lock()
		done, ended, events := j.done, j.ended, len(j.events)
		j.mu.Unlock()
		if done && now.Sub(ended) > m.cfg.Retain {
			delete(m.jobs, id)
			continue
		}
		if done {
			finished = append(finished, j)
			retained += events
		}
	}
	if len(m.jobs) < m.cfg.MaxJobs && retained <= m.cfg.MaxRetainedEvents {
		return
	}
	sort.Slice(finished, func(a, b int) bool { return finished[a].ended.Before(finished[b].ended) })
	for _, j := range finished {
		if len(m.jobs) < m.cfg.MaxJobs && retained <= m.cfg.MaxRetainedEvents {
			break
		}
		delete(m.jobs, j.ID)
		j.mu.Lock()
		retained -= len(j.events)
		j.mu.Unlock()
	}
}

// Emit appends an event. Events after done are dropped.
func (j *Job) Emit(ev Event) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.emitLocked(ev)
}

// emitLocked appends ev and wakes followers; j.mu is held.
func (j *Job) emitLocked(ev Event) {
	if j.done {
		return
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now().UTC()
	}
	if ev.Node == "" {
		ev.Node = j.m.cfg.Node
	}
	if len(j.events) >= j.m.cfg.MaxEvents-2 && ev.Type != TypeError && ev.Type != TypeDone {
		return
	}
	ev.Seq = int64(len(j.events)) + 1
	j.events = append(j.events, ev)
	close(j.notify)
	j.notify = make(chan struct{})
}

// Narrate emits a narration event.
func (j *Job) Narrate(actor, action, format string, args ...any) {
	j.Emit(Event{Type: TypeNarration, Actor: actor, Action: action, Message: fmt.Sprintf(format, args...)})
}

// Progress emits a progress event.
func (j *Job) Progress(done, total int64, unit string) {
	j.Emit(Event{Type: TypeProgress, Done: done, Total: total, Unit: unit})
}

// Result emits a result event with v marshalled as JSON.
func (j *Job) Result(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	j.Emit(Event{Type: TypeResult, Result: b})
	return nil
}

// finish appends the done event and marks the job done under one lock: a
// follower that sees the done event also sees done, and one that read
// before it holds the notify channel this closes.
func (j *Job) finish(status string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.emitLocked(Event{Type: TypeDone, Status: status})
	j.done = true
	j.ended = time.Now()
}

// Done reports whether the job has ended.
func (j *Job) Done() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.done
}

// StatusCancelled is the done status of a job cancelled while it ran.
const StatusCancelled = "cancelled"

// Status is "running", "ok", "failed" or "cancelled".
func (j *Job) Status() string {
	j.mu.Lock()
	defer j.mu.Unlock()
	if !j.done {
		return "running"
	}
	return j.events[len(j.events)-1].Status
}

// Events returns the events with Seq > after and a channel closed when more
// arrive. done is true when the returned slice already ends with the done event.
func (j *Job) Events(after int64) (evs []Event, more <-chan struct{}, done bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if after < 0 {
		after = 0
	}
	if after < int64(len(j.events)) {
		evs = append(evs, j.events[after:]...)
	}
	return evs, j.notify, j.done
}

// Follow calls fn for every event with Seq > after, in order, until the done
// event has been delivered, fn returns an error, or ctx ends.
func (j *Job) Follow(ctx context.Context, after int64, fn func(Event) error) error {
	for {
		evs, more, done := j.Events(after)
		for _, ev := range evs {
			if err := fn(ev); err != nil {
				return err
			}
			after = ev.Seq
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-more:
		}
	}
}

func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "job_" + hex.EncodeToString(b[:])
}
