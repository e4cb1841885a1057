// Package process starts and supervises worker processes on one hive:
// Spawn picks a loopback port, starts the worker in its own process group
// with its output in a log file and waits until it answers its health
// check; every started process is recorded in processes.json, so a
// restarted node re-adopts the workers that still run. Each worker gets a
// secret of its own at spawn (in its environment, never on its command
// line), kept in processes.json (0600) so that only this manager's node —
// the same data dir — can talk to it after a restart. Stop only ever
// signals processes this manager started. See DESIGN.md.
package process

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/rbee-project/rbee/worker/catalog"
	gproc "github.com/shirou/gopsutil/v4/process"

	"github.com/rbee-project/rbee/internal/atomicfile"
	"github.com/rbee-project/rbee/internal/enginesock"
	"github.com/rbee-project/rbee/internal/peercred"
)

// Sentinel errors. Errors returned by this package wrap them with %w.
var (
	// ErrBadOptions reports invalid SpawnOptions or Config.
	ErrBadOptions = errors.New("process: invalid options")
	// ErrIDInUse reports a spawn under a worker id that a worker of this
	// manager already runs or is starting under.
	ErrIDInUse = errors.New("process: worker id in use")
	// ErrNotOurs reports a pid this manager did not start (or that has
	// already exited); nothing was signalled.
	ErrNotOurs = errors.New("process: not a worker process started by rbee")
	// ErrExitedEarly reports a worker that exited before it was ready; the
	// error text carries the tail of its log.
	ErrExitedEarly = errors.New("process: worker exited before it was ready")
	// ErrNotReady reports a worker that was not ready in time (or whose
	// Spawn context ended); it has been killed. The error carries its log tail.
	ErrNotReady = errors.New("process: worker not ready")
	// ErrExitUnknown is passed to OnExit when an adopted process (not a
	// child of this node, so its exit status cannot be read) disappears.
	ErrExitUnknown = errors.New("process: adopted worker exited (status unknown)")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("process: manager closed")
	// ErrNotRecorded reports a worker that started but could not be
	// written to processes.json (a full disk, a broken data dir): a node
	// restart would neither adopt nor stop it, so it has been stopped.
	ErrNotRecorded = errors.New("process: the worker could not be recorded in processes.json")
	// ErrExposed reports a worker that came up listening on an address
	// other than loopback (an engine that ignored --host 127.0.0.1): it
	// would serve the LAN directly, around the node's API keys and limits,
	// so it has been stopped.
	ErrExposed = errors.New("process: the worker listens beyond loopback")
	// ErrProcessLimit reports a spawn refused because the user's process
	// limit (ulimit -u, RLIMIT_NPROC, which counts threads) leaves too
	// little room for a worker and the node: at the limit the Go runtime
	// of the node cannot start a thread and dies.
	ErrProcessLimit = errors.New("process: the user's process limit (ulimit -u) leaves no room for another worker")
)

// EarlyExitError is Spawn's error for a worker that exited before it was
// ready (it wraps ErrExitedEarly): it names the process, so a caller can
// tell whether the registry stopped that very process (a retire that came
// before the worker was ready) or it failed on its own.
type EarlyExitError struct {
	WorkerID string
	PID      int
	err      error
}

func (e *EarlyExitError) Error() string { return e.err.Error() }
func (e *EarlyExitError) Unwrap() error { return e.err }

// nprocNodeReserve: threads kept free under RLIMIT_NPROC for the node
// (and the user's other programs) when a worker is spawned; nprocWorker
// the threads a worker is counted for beyond one per CPU.
const (
	nprocNodeReserve = 16
	nprocWorker      = 4
)

// checkProcessRoom refuses a spawn that would bring this user's threads
// within nprocNodeReserve of a finite RLIMIT_NPROC.
func checkProcessRoom() error {
	limit, used, ok := nprocUsage()
	if !ok {
		return nil
	}
	return processRoom(limit, used, runtime.NumCPU()+nprocWorker)
}

// processRoom is checkProcessRoom's arithmetic.
func processRoom(limit uint64, used, worker int) error {
	need := uint64(used + worker + nprocNodeReserve)
	if need <= limit {
		return nil
	}
	return fmt.Errorf("%w: this user runs %d threads of at most %d, a worker takes about %d and the node keeps %d free; "+
		"raise the limit (ulimit -u, or LimitNPROC= in a systemd unit) or stop a worker", ErrProcessLimit, used, limit, worker, nprocNodeReserve)
}

const (
	// DefaultReadyTimeout bounds the wait for a worker's health check: a
	// large model can take a minute to map and warm up on a slow disk.
	DefaultReadyTimeout = 2 * time.Minute
	// DefaultHealthInterval is the pause between health probes while a
	// worker starts: short, as a small model is ready in milliseconds.
	DefaultHealthInterval = 50 * time.Millisecond
	// DefaultPollInterval is how often adopted workers (not our children,
	// so no Wait) are checked for exit.
	DefaultPollInterval = 500 * time.Millisecond
	// DefaultGrace is Stop's SIGTERM-to-SIGKILL wait when it is given 0:
	// a bit more than a typical in-flight completion.
	DefaultGrace = 10 * time.Second
	// logTailBytes is how much of a worker's log an early-exit error carries.
	logTailBytes = 4 << 10
	// probeTimeout bounds one health probe.
	probeTimeout = 2 * time.Second
	// textBusyTries: starts of a binary that is busy being written (see
	// Start) are tried this many times, 10, 20, … ms apart (under half a
	// second in all).
	textBusyTries = 8
	// killWait bounds the wait for a SIGKILLed process to be gone.
	killWait = 5 * time.Second
	// stateFile lists the processes this manager started, with their
	// secrets: readable by the node's user alone.
	stateFile = "processes.json"
	// stateVer 2 added the per-worker secrets; version 1 files (written
	// before secrets existed) are still read.
	stateVer   = 2
	stateVer1  = 1
	logsSubdir = "logs"
	// secretBytes of crypto/rand make a worker secret (hex-encoded): 256
	// bits, beyond guessing however many requests a local user sends.
	secretBytes = 32
	// maxGPUIndex bounds a GPU index: far above any machine's GPU count.
	maxGPUIndex = 255
)

// keepLogs is how many logs of workers that no longer run the logs dir
// keeps (the newest): enough to read why recent ones ended, bounded for a
// node that spawns often (every re-plan of a group spawns its shards).
const keepLogs = 100

// pruneLogs removes the oldest logs of workers that do not run, past
// keepLogs, before a spawn (of starting, whose log is kept). Failures
// are logged: a log left costs only disk.
func (m *Manager) pruneLogs(starting string) {
	dir := filepath.Join(m.dir, logsSubdir)
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) <= keepLogs {
		return
	}
	live := map[string]bool{starting + ".log": true}
	m.mu.Lock()
	for _, p := range m.procs {
		live[p.info.WorkerID+".log"] = true
	}
	m.mu.Unlock()
	type old struct {
		name string
		mod  time.Time
	}
	var done []old
	for _, e := range ents {
		if !e.Type().IsRegular() || !strings.HasSuffix(e.Name(), ".log") || live[e.Name()] {
			continue
		}
		if info, err := e.Info(); err == nil {
			done = append(done, old{e.Name(), info.ModTime()})
		}
	}
	if len(done) <= keepLogs {
		return
	}
	sort.Slice(done, func(a, b int) bool { return done[a].mod.Before(done[b].mod) })
	for _, o := range done[:len(done)-keepLogs] {
		if err := os.Remove(filepath.Join(dir, o.name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			m.log.Warn("process: cannot remove an old worker log", "file", o.name, "err", err)
		}
	}
}

// SecretEnv is the environment variable that hands a worker its secret
// (cmd/rbee-worker reads it; worker.SecretEnv has the same name).
const SecretEnv = "RBEE_WORKER_SECRET"

// Config configures a Manager. Start from DefaultConfig and override fields.
type Config struct {
	// Dir holds processes.json and logs/<worker-id>.log. Required.
	Dir string
	// Host is the address workers listen on and are probed at.
	Host string
	// ReadyTimeout bounds Spawn's wait for the health check (ctx may end it
	// sooner).
	ReadyTimeout time.Duration
	// HealthInterval is the pause between health probes during Spawn.
	HealthInterval time.Duration
	// PollInterval is how often adopted workers are checked for exit.
	PollInterval time.Duration
	// OnExit, when set, is called once for every supervised worker that
	// exits after it was ready (or was adopted), including those stopped by
	// Stop (WorkerInfo.Stopped is then true). err is nil for exit status 0,
	// the *exec.ExitError otherwise, and wraps ErrExitUnknown for adopted
	// workers. It runs on its own goroutine per exit, never under the
	// manager's lock, and is not called after Close.
	OnExit func(WorkerInfo, error)
	// Nice, when > 0, runs every worker this many nice levels below
	// this process (at most 19; Linux only): inference is throughput work,
	// and a worker using every core must not delay the node's gossip,
	// raft heartbeats and API, which need little CPU but need it on time.
	// It only matters while the CPU is contended; an idle machine gives a
	// niced worker all of it.
	Nice int
	// Logger receives operational logs; nil discards them.
	Logger *slog.Logger
}

// DefaultConfig returns a Config with every optional field set.
func DefaultConfig() Config {
	return Config{
		Host:           "127.0.0.1",
		ReadyTimeout:   DefaultReadyTimeout,
		HealthInterval: DefaultHealthInterval,
		PollInterval:   DefaultPollInterval,
	}
}

// SpawnOptions describes one worker to start.
type SpawnOptions struct {
	// Binary is the worker executable (a catalog entry's Path). Required.
	Binary string
	// Type says how to launch Binary; the zero value means catalog.CPUType().
	Type catalog.WorkerType
	// ModelPath is the model file. Required.
	ModelPath string
	// ModelID is the model's catalog name, recorded for List.
	ModelID string
	// WorkerID names the worker; "" generates one ("w-" and 8 hex digits).
	WorkerID string
	// Group is the sharded group the worker is a shard of ("" for none),
	// recorded in its WorkerInfo (and the process table, so a restarted
	// node still knows it).
	Group string
	// Device, Threads, Slots and NodeURL are passed to the worker.
	Device  string
	Threads int
	Slots   int
	NodeURL string
	// Ctx (context tokens, 0 = the engine's default), GPUs (visible GPU
	// indices; empty = the engine's default) and GPULayers (< 0 = the
	// engine's default) are passed to engines that take them.
	Ctx       int
	GPUs      []int
	GPULayers int
	// ExtraArgs are appended to the command line.
	ExtraArgs []string
	// ReadyTimeout, when > 0, replaces Config.ReadyTimeout for this spawn
	// (an engine that loads a large model onto GPUs can take minutes).
	ReadyTimeout time.Duration
	// Env, when set, is appended to this process's environment for the
	// worker. SecretEnv is always set by Spawn (and cannot be overridden).
	Env []string
	// Guard, when set, is a command that runs the worker as its child:
	// the process started is Guard..., "--", the worker's command line
	// (the node's engine guard). Signals and the pid go to the guard.
	Guard []string
	// RAM is the memory the node admitted the worker for, recorded in its
	// WorkerInfo (and the process table) so that the node keeps counting
	// it across a restart. The manager does not enforce it.
	RAM RAM
}

// RAM is the memory a worker was admitted for: its share of a model file
// (mapped, so shared by every worker of that file on the machine) and the
// rest (KV cache, buffers), its own. Zero is not known.
type RAM struct {
	Weights uint64 `json:"weights,omitempty"`
	Rest    uint64 `json:"rest,omitempty"`
}

// WorkerInfo describes a supervised worker process.
type WorkerInfo struct {
	PID       int    `json:"pid"`
	WorkerID  string `json:"worker_id"`
	Type      string `json:"type"`
	ModelID   string `json:"model_id,omitempty"`
	ModelPath string `json:"model_path"`
	Port      int    `json:"port"`
	// Socket is the Unix socket an engine of a Socket type listens on
	// (in a directory only the node's user can enter); calls and probes
	// to Port go there. "" for a worker on Port.
	Socket  string   `json:"socket,omitempty"`
	Binary  string   `json:"binary"`
	Cmdline []string `json:"cmdline"`
	// CreateTime is the process start time as the OS reports it (ms since
	// the epoch); with Cmdline it tells our process from a reused pid.
	CreateTime int64 `json:"create_time_ms"`
	// StartTicks is the start time in clock ticks since boot where the OS
	// exposes it (Linux); it is immune to clock steps and, when recorded,
	// is compared instead of CreateTime.
	StartTicks uint64    `json:"start_ticks,omitempty"`
	StartedAt  time.Time `json:"started_at"`
	LogPath    string    `json:"log_path"`
	// Device and GPUs are what the worker was started for; HealthPath is
	// its type's health check (external engines are polled there).
	Device     string `json:"device,omitempty"`
	GPUs       []int  `json:"gpus,omitempty"`
	HealthPath string `json:"health_path,omitempty"`
	// Group is the sharded group the worker was started as a shard of
	// ("" for an ordinary worker).
	Group string `json:"group,omitempty"`
	// RAM is SpawnOptions.RAM.
	RAM RAM `json:"ram,omitzero"`
	// Adopted is true for a worker found running at New (started by an
	// earlier run of the node).
	Adopted bool `json:"adopted,omitempty"`
	// Stopped is true once Stop was asked to end the worker.
	Stopped bool `json:"-"`
}

// Status is a WorkerInfo with live resource figures.
type Status struct {
	WorkerInfo
	// RSS is the resident memory in bytes.
	RSS uint64 `json:"rss_bytes"`
	// CPUPercent is CPU time over wall time since start (100 = one core).
	CPUPercent float64       `json:"cpu_percent"`
	Uptime     time.Duration `json:"uptime_ns"`
}

// proc is one supervised process. info is guarded by Manager.mu.
type proc struct {
	info    WorkerInfo
	secret  string    // "" for a worker adopted from a version 1 state file
	cmd     *exec.Cmd // nil when adopted
	done    chan struct{}
	once    sync.Once
	notify  bool // OnExit is due when it exits (ready or adopted)
	exitErr error
}

// Manager supervises worker processes. All methods are safe for
// concurrent use.
type Manager struct {
	cfg    Config
	dir    string
	log    *slog.Logger
	client *http.Client

	mu    sync.Mutex
	procs map[int]*proc
	// starting holds the workers between exec and their entry in procs,
	// by worker id: their first heartbeat may come that early.
	starting map[string]*proc
	closed   bool

	stopPoll context.CancelFunc
	pollDone chan struct{}
}

// New opens the manager's directory and re-adopts the processes recorded
// in processes.json that still run with the same start time and command
// line; the other entries (exited, or a pid reused by another program) are
// dropped without being signalled. Adopted workers are watched by polling.
func New(cfg Config) (*Manager, error) {
	if cfg.Dir == "" {
		return nil, fmt.Errorf("%w: Config.Dir is required", ErrBadOptions)
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("process: %w", err)
	}
	def := DefaultConfig()
	if cfg.Host == "" {
		cfg.Host = def.Host
	}
	if net.ParseIP(cfg.Host) == nil {
		return nil, fmt.Errorf("%w: Host %q is not an IP address", ErrBadOptions, cfg.Host)
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = def.ReadyTimeout
	}
	if cfg.HealthInterval <= 0 {
		cfg.HealthInterval = def.HealthInterval
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = def.PollInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(filepath.Join(dir, logsSubdir), 0o700); err != nil {
		return nil, fmt.Errorf("process: %w", err)
	}
	m := &Manager{
		cfg:      cfg,
		dir:      dir,
		log:      cfg.Logger,
		procs:    make(map[int]*proc),
		starting: make(map[string]*proc),
		pollDone: make(chan struct{}),
	}
	m.client = probeClient(cfg.Host, m.SocketFor)
	if err := m.adopt(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.stopPoll = cancel
	go m.poll(ctx)
	return m, nil
}

// Close stops supervising: adopted workers are no longer polled, OnExit is
// no longer called and processes.json is no longer written. The worker
// processes keep running, so that a restarted node re-adopts them; use
// StopAll first to end them. Close is idempotent.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	m.mu.Unlock()
	m.stopPoll()
	<-m.pollDone
	return nil
}

// Spawn starts a worker and waits until its health check answers 200. It
// returns the worker's pid, port and id. The worker outlives ctx (which
// only bounds the wait for readiness); a worker that exits before it is
// ready gives ErrExitedEarly, one not ready within Config.ReadyTimeout or
// before ctx ends is killed and gives ErrNotReady; both errors carry the
// tail of its log (<Dir>/logs/<worker-id>.log).
func (m *Manager) Spawn(ctx context.Context, opts SpawnOptions) (WorkerInfo, error) {
	if opts.Type.Name == "" {
		opts.Type = catalog.CPUType()
	}
	if opts.Type.Args == nil {
		return WorkerInfo{}, fmt.Errorf("%w: worker type %q has no Args", ErrBadOptions, opts.Type.Name)
	}
	bin, err := checkBinary(opts.Binary)
	if err != nil {
		return WorkerInfo{}, err
	}
	if opts.ModelPath == "" {
		return WorkerInfo{}, fmt.Errorf("%w: ModelPath is required", ErrBadOptions)
	}
	model, err := filepath.Abs(opts.ModelPath)
	if err != nil {
		return WorkerInfo{}, fmt.Errorf("%w: %v", ErrBadOptions, err)
	}
	if fi, err := os.Stat(model); err != nil || !fi.Mode().IsRegular() {
		return WorkerInfo{}, fmt.Errorf("%w: model %s is not a readable file", ErrBadOptions, model)
	}
	if opts.WorkerID == "" {
		opts.WorkerID = NewWorkerID()
	}
	if err := catalog.ValidName("worker id", opts.WorkerID); err != nil {
		return WorkerInfo{}, fmt.Errorf("%w: %w", ErrBadOptions, err)
	}
	if opts.Threads < 0 || opts.Slots < 0 || opts.Ctx < 0 {
		return WorkerInfo{}, fmt.Errorf("%w: negative threads, slots or context", ErrBadOptions)
	}
	for _, g := range opts.GPUs {
		if g < 0 || g > maxGPUIndex {
			return WorkerInfo{}, fmt.Errorf("%w: GPU index %d", ErrBadOptions, g)
		}
	}

	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return WorkerInfo{}, ErrClosed
	}
	for _, p := range m.procs {
		if p.info.WorkerID == opts.WorkerID {
			m.mu.Unlock()
			return WorkerInfo{}, fmt.Errorf("%w: worker id %q is already running (pid %d)", ErrIDInUse, opts.WorkerID, p.info.PID)
		}
	}
	if _, ok := m.starting[opts.WorkerID]; ok {
		m.mu.Unlock()
		return WorkerInfo{}, fmt.Errorf("%w: worker id %q is already starting", ErrIDInUse, opts.WorkerID)
	}
	// Reserve the id (its port comes next) and hand out the secret.
	p := &proc{info: WorkerInfo{WorkerID: opts.WorkerID}, secret: newSecret(), done: make(chan struct{})}
	m.starting[opts.WorkerID] = p
	m.mu.Unlock()
	reserved := true
	defer func() {
		if reserved {
			m.mu.Lock()
			delete(m.starting, opts.WorkerID)
			m.mu.Unlock()
		}
	}()

	if err := ctx.Err(); err != nil {
		return WorkerInfo{}, fmt.Errorf("%w: %w", ErrNotReady, err)
	}
	if err := checkProcessRoom(); err != nil {
		return WorkerInfo{}, err
	}
	port, err := m.freePort()
	if err != nil {
		return WorkerInfo{}, err
	}
	socket := ""
	if opts.Type.Socket && runtime.GOOS != "windows" {
		if socket, err = enginesock.MakeDir(); err != nil {
			return WorkerInfo{}, fmt.Errorf("process: %w", err)
		}
		defer func() {
			if socket != "" {
				enginesock.Remove(socket) // not started: exited removes a started one's
			}
		}()
	}
	m.mu.Lock()
	p.info.Port, p.info.Socket = port, socket
	m.mu.Unlock()
	launch := catalog.Launch{
		ModelPath: model, WorkerID: opts.WorkerID, Port: port, Host: m.cfg.Host, NodeURL: opts.NodeURL,
		Device: opts.Device, Threads: opts.Threads, Slots: opts.Slots,
		ModelID: opts.ModelID, Ctx: opts.Ctx, GPUs: slices.Clone(opts.GPUs), GPULayers: opts.GPULayers,
		Socket: socket,
	}
	args := append(opts.Type.Args(launch), opts.ExtraArgs...)
	extraEnv := opts.Env
	if opts.Type.Env != nil {
		extraEnv = append(opts.Type.Env(launch), opts.Env...)
	}

	m.pruneLogs(opts.WorkerID)
	logPath := filepath.Join(m.dir, logsSubdir, opts.WorkerID+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return WorkerInfo{}, fmt.Errorf("process: %w", err)
	}
	logStart, _ := logf.Seek(0, io.SeekEnd)
	cmd, err := startRetrying(func() *exec.Cmd {
		cmd := exec.Command(bin, args...)
		if len(opts.Guard) > 0 {
			cmd = exec.Command(opts.Guard[0], append(append(append([]string{}, opts.Guard[1:]...), "--", bin), args...)...)
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.Env = workerEnv(os.Environ(), extraEnv, p.secret, opts.Type.SecretEnv)
		setGroup(cmd)
		return cmd
	})
	if err != nil {
		logf.Close()
		return WorkerInfo{}, fmt.Errorf("process: starting %s: %w", bin, err)
	}
	if err := lowerPriority(cmd.Process.Pid, m.cfg.Nice); err != nil {
		// The worker runs, at the node's priority: worth a warning, not a
		// failed spawn.
		m.log.Warn("worker priority not lowered", "worker", opts.WorkerID, "err", err)
	}
	info := WorkerInfo{
		PID: cmd.Process.Pid, WorkerID: opts.WorkerID, Type: opts.Type.Name, ModelID: opts.ModelID,
		ModelPath: model, Port: port, Socket: socket, Binary: bin, Cmdline: cmd.Args, StartedAt: time.Now().UTC(), LogPath: logPath,
		Device: opts.Device, GPUs: launch.GPUs, HealthPath: opts.Type.HealthPath, Group: opts.Group, RAM: opts.RAM,
	}
	// Record what the OS reports, as New compares against the OS. Start
	// returns after the exec, so the command line is already the worker's.
	if gp, err := gproc.NewProcess(int32(info.PID)); err == nil {
		if ct, err := gp.CreateTime(); err == nil {
			info.CreateTime = ct
			info.StartedAt = time.UnixMilli(ct).UTC()
		}
		if cl, err := gp.CmdlineSlice(); err == nil && len(cl) > 0 {
			info.Cmdline = cl
		}
	}
	if st, ok := startTicks(info.PID); ok {
		info.StartTicks = st
	}

	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		_ = killGroup(info.PID)
		_ = cmd.Wait()
		logf.Close()
		return WorkerInfo{}, ErrClosed
	}
	p.info, p.cmd = info, cmd
	m.procs[info.PID] = p
	if err := m.saveLocked(); err != nil {
		// Unrecorded, the worker would outlive a node restart as a
		// stranger: stop it rather than leak it.
		delete(m.procs, info.PID)
		m.mu.Unlock()
		_ = killGroup(info.PID)
		_ = cmd.Wait()
		logf.Close()
		return WorkerInfo{}, fmt.Errorf("%w: %w (the worker was stopped)", ErrNotRecorded, err)
	}
	delete(m.starting, opts.WorkerID)
	reserved = false
	m.mu.Unlock()
	pid := info.PID // info is read again below, under the lock
	go func() {
		if waitExited(pid) {
			// The worker is gone: so is whatever it started in its group
			// (a forked server still holding its port or its GPU memory).
			_ = killGroup(pid)
		}
		err := cmd.Wait()
		logf.Close()
		m.exited(p, err)
	}()
	socket = "" // exited removes it now
	m.log.Info("worker started", "worker", info.WorkerID, "pid", info.PID, "port", port, "binary", bin)

	readyTimeout := m.cfg.ReadyTimeout
	if opts.ReadyTimeout > 0 {
		readyTimeout = opts.ReadyTimeout
	}
	if err := m.waitReady(ctx, p, opts.Type.HealthPath, p.secret, readyTimeout); err != nil {
		tail := readTail(logPath, logStart, logTailBytes)
		if !errors.Is(err, ErrExitedEarly) {
			_ = killGroup(info.PID)
			select {
			case <-p.done:
			case <-time.After(killWait):
			}
		}
		err = fmt.Errorf("%w (worker %s, pid %d); log %s:\n%s", err, info.WorkerID, info.PID, logPath, tail)
		if errors.Is(err, ErrExitedEarly) {
			err = &EarlyExitError{WorkerID: info.WorkerID, PID: info.PID, err: err}
		}
		return WorkerInfo{}, err
	}
	if ip := net.ParseIP(m.cfg.Host); ip != nil && ip.IsLoopback() {
		if addr, exposed := exposedListener(info.Port, info.PID); exposed {
			// Ready, but on every interface (an engine that ignores
			// --host, or a wrapper script that drops it): it would
			// serve the LAN around the node's keys and limits.
			_ = killGroup(info.PID)
			select {
			case <-p.done:
			case <-time.After(killWait):
			}
			return WorkerInfo{}, fmt.Errorf("%w: it listens on %s, not on %s as told (worker %s, pid %d); it has been stopped",
				ErrExposed, addr, m.cfg.Host, info.WorkerID, info.PID)
		}
	}
	m.mu.Lock()
	_, running := m.procs[info.PID]
	p.notify = running
	info = p.info
	m.mu.Unlock()
	if !running { // exited between the probe and now: no OnExit for it
		return WorkerInfo{}, &EarlyExitError{WorkerID: info.WorkerID, PID: info.PID,
			err: fmt.Errorf("%w (worker %s, pid %d): exited right after its health check", ErrExitedEarly, info.WorkerID, info.PID)}
	}
	m.log.Info("worker ready", "worker", info.WorkerID, "pid", info.PID, "port", port)
	return info, nil
}

// waitReady probes the health path (with the worker's secret) until it
// answers 200.
func (m *Manager) waitReady(ctx context.Context, p *proc, path, secret string, readyTimeout time.Duration) error {
	if path == "" {
		path = "/health"
	}
	url := "http://" + net.JoinHostPort(m.cfg.Host, strconv.Itoa(p.info.Port)) + path
	timer := time.NewTimer(readyTimeout)
	defer timer.Stop()
	tick := time.NewTicker(m.cfg.HealthInterval)
	defer tick.Stop()
	var refused error // the last probe that found another user's server there
	for {
		ok, err := m.probe(ctx, url, secret)
		if ok {
			return nil
		}
		if errors.Is(err, peercred.ErrServerOwner) {
			refused = err
		}
		select {
		case <-p.done:
			if p.exitErr == nil {
				return fmt.Errorf("%w: it exited with status 0 (is the binary a server that stays running?)", ErrExitedEarly)
			}
			return fmt.Errorf("%w: %v", ErrExitedEarly, p.exitErr)
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ErrNotReady, ctx.Err())
		case <-timer.C:
			if refused != nil {
				return fmt.Errorf("%w: no 200 from %s within %s; the probe was not sent to %w", ErrNotReady, url, readyTimeout, refused)
			}
			return fmt.Errorf("%w: no 200 from %s within %s", ErrNotReady, url, readyTimeout)
		case <-tick.C:
		}
	}
}

// probeClient is the readiness probe's client. On a loopback host its
// connections must reach a server this process's user runs
// (peercred.OwnedBy): a worker's port is on its command line, which every
// local user can read, and until the worker listens (an engine loads its
// model first) another user could listen there, take the probe's secret
// and answer it as a ready worker, and be sent the requests routed to it.
// A probe to the port of an engine on a Unix socket goes to the socket
// (socketFor), whose server is checked the same way.
func probeClient(host string, socketFor func(port int) string) *http.Client {
	c := &http.Client{
		Timeout:   probeTimeout,
		Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil, DialContext: enginesock.Dial(nil, socketFor)},
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		c = peercred.OwnedBy(c, uint32(os.Getuid()))
	}
	return c
}

// probe reports whether the health check at url answers 200, and why
// not when the request failed.
func (m *Manager) probe(ctx context.Context, url, secret string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := m.client.Do(req)
	if err != nil {
		return false, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK, nil
}

// exited records that p is gone: it leaves the table and processes.json,
// and OnExit is called if due. Safe to call more than once.
func (m *Manager) exited(p *proc, err error) {
	p.once.Do(func() {
		m.mu.Lock()
		p.exitErr = err
		if cur, ok := m.procs[p.info.PID]; ok && cur == p {
			delete(m.procs, p.info.PID)
			if !m.closed {
				m.saveLocked()
			}
		}
		notify := p.notify && !m.closed && m.cfg.OnExit != nil
		info := p.info
		m.mu.Unlock()
		enginesock.Remove(info.Socket)
		close(p.done)
		m.log.Info("worker exited", "worker", info.WorkerID, "pid", info.PID, "err", err)
		if notify {
			go m.cfg.OnExit(info, err)
		}
	})
}

// Stop ends a worker this manager started: SIGTERM, then, if it has not
// exited after grace (0 means DefaultGrace) or when ctx ends, SIGKILL to
// its process group. It returns once the process is gone and its entry
// removed. A pid this manager did not start gives ErrNotOurs and nothing
// is signalled.
func (m *Manager) Stop(ctx context.Context, pid int, grace time.Duration) error {
	if grace <= 0 {
		grace = DefaultGrace
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrClosed
	}
	p, ok := m.procs[pid]
	if !ok {
		m.mu.Unlock()
		return fmt.Errorf("%w: pid %d", ErrNotOurs, pid)
	}
	p.info.Stopped = true
	info := p.info
	m.mu.Unlock()

	if err := m.signal(p, sigTERM); err != nil {
		return err
	}
	m.log.Info("stopping worker", "worker", info.WorkerID, "pid", pid, "grace", grace)
	timer := time.NewTimer(grace)
	defer timer.Stop()
	if m.waitGone(ctx, p, timer.C) {
		if p.cmd == nil {
			// An adopted worker is not our child: what it left in its
			// group ends here (a child's group ends as it is reaped).
			_ = killOrphanedGroup(pid, zombie)
		}
		return nil
	}
	m.log.Warn("worker ignored SIGTERM: killing its process group", "worker", info.WorkerID, "pid", pid)
	select {
	case <-p.done: // exited just now: its pid may no longer lead a group of ours
		return nil
	default:
	}
	if p.cmd != nil || m.stillOurs(p) {
		if err := killGroup(pid); err != nil {
			return fmt.Errorf("process: killing pid %d: %w", pid, err)
		}
	}
	kctx, cancel := context.WithTimeout(context.Background(), killWait)
	defer cancel()
	if !m.waitGone(kctx, p, nil) {
		return fmt.Errorf("process: pid %d still running after SIGKILL", pid)
	}
	return nil
}

// StopAll stops every supervised worker concurrently (see Stop) and
// returns the first error.
func (m *Manager) StopAll(ctx context.Context, grace time.Duration) error {
	m.mu.Lock()
	pids := make([]int, 0, len(m.procs))
	for pid := range m.procs {
		pids = append(pids, pid)
	}
	m.mu.Unlock()
	errs := make(chan error, len(pids))
	for _, pid := range pids {
		go func() { errs <- m.Stop(ctx, pid, grace) }()
	}
	var first error
	for range pids {
		if err := <-errs; err != nil && !errors.Is(err, ErrNotOurs) && first == nil {
			first = err
		}
	}
	return first
}

// signal sends sig to p: through os.Process for a child (which cannot hit
// a reused pid), after re-checking identity for an adopted process.
func (m *Manager) signal(p *proc, sig syscall.Signal) error {
	if p.cmd != nil {
		err := p.cmd.Process.Signal(sig)
		if err != nil && !errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("process: signalling pid %d: %w", p.info.PID, err)
		}
		return nil
	}
	if !m.stillOurs(p) {
		m.exited(p, ErrExitUnknown)
		return nil
	}
	if err := signalPID(p.info.PID, sig); err != nil {
		return fmt.Errorf("process: signalling pid %d: %w", p.info.PID, err)
	}
	return nil
}

// waitGone waits until p has exited, deadline fires or ctx ends; it
// reports whether p is gone. Adopted processes are checked every few
// milliseconds rather than at the poll interval.
func (m *Manager) waitGone(ctx context.Context, p *proc, deadline <-chan time.Time) bool {
	var tick <-chan time.Time
	if p.cmd == nil {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-p.done:
			return true
		case <-deadline:
			return false
		case <-ctx.Done():
			return false
		case <-tick:
			if !m.stillOurs(p) {
				m.exited(p, ErrExitUnknown)
				return true
			}
		}
	}
}

// stillOurs reports whether p's pid still runs the process we recorded:
// same start time and command line, and not a zombie.
func (m *Manager) stillOurs(p *proc) bool {
	m.mu.Lock()
	info := p.info // Stop writes p.info under the lock
	m.mu.Unlock()
	return alive(info)
}

func alive(info WorkerInfo) bool {
	gp, err := gproc.NewProcess(int32(info.PID))
	if err != nil {
		return false
	}
	if st, ok := startTicks(info.PID); ok && info.StartTicks != 0 {
		if st != info.StartTicks {
			return false
		}
	} else if ct, err := gp.CreateTime(); err != nil || ct != info.CreateTime {
		return false
	}
	cl, err := gp.CmdlineSlice()
	if err != nil || !slices.Equal(cl, info.Cmdline) {
		return false
	}
	if st, err := gp.Status(); err == nil && slices.Contains(st, gproc.Zombie) {
		return false
	}
	return true
}

// zombie reports whether pid has exited but is not yet reaped.
func zombie(pid int) bool {
	gp, err := gproc.NewProcess(int32(pid))
	if err != nil {
		return false
	}
	st, err := gp.Status()
	return err == nil && slices.Contains(st, gproc.Zombie)
}

// poll watches adopted processes until Close.
func (m *Manager) poll(ctx context.Context) {
	defer close(m.pollDone)
	t := time.NewTicker(m.cfg.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m.mu.Lock()
		var adopted []*proc
		for _, p := range m.procs {
			if p.cmd == nil {
				adopted = append(adopted, p)
			}
		}
		m.mu.Unlock()
		for _, p := range adopted {
			if !m.stillOurs(p) {
				m.exited(p, ErrExitUnknown)
			}
		}
	}
}

// List returns every supervised worker with live figures, by pid.
func (m *Manager) List() []Status {
	m.mu.Lock()
	infos := make([]WorkerInfo, 0, len(m.procs))
	for _, p := range m.procs {
		infos = append(infos, p.info)
	}
	m.mu.Unlock()
	sort.Slice(infos, func(i, j int) bool { return infos[i].PID < infos[j].PID })
	out := make([]Status, 0, len(infos))
	for _, info := range infos {
		out = append(out, status(info))
	}
	return out
}

// Get returns one supervised worker with live figures; a pid this
// manager does not supervise gives ErrNotOurs.
func (m *Manager) Get(pid int) (Status, error) {
	m.mu.Lock()
	p, ok := m.procs[pid]
	var info WorkerInfo
	if ok {
		info = p.info
	}
	m.mu.Unlock()
	if !ok {
		return Status{}, fmt.Errorf("%w: pid %d", ErrNotOurs, pid)
	}
	return status(info), nil
}

// ByWorkerID returns the supervised worker called id.
func (m *Manager) ByWorkerID(id string) (Status, error) {
	m.mu.Lock()
	var info WorkerInfo
	found := false
	for _, p := range m.procs {
		if p.info.WorkerID == id {
			info, found = p.info, true
			break
		}
	}
	m.mu.Unlock()
	if !found {
		return Status{}, fmt.Errorf("%w: worker id %q", ErrNotOurs, id)
	}
	return status(info), nil
}

// Info returns the record of the supervised worker called id, without the
// live figures ByWorkerID reads from the OS (cheap: for every request).
func (m *Manager) Info(id string) (WorkerInfo, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range m.procs {
		if p.info.WorkerID == id {
			return p.info, true
		}
	}
	return WorkerInfo{}, false
}

// Infos returns the records of every supervised worker (no live figures).
func (m *Manager) Infos() []WorkerInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]WorkerInfo, 0, len(m.procs))
	for _, p := range m.procs {
		out = append(out, p.info)
	}
	return out
}

// LogTail returns up to maxBytes (0 means 4 KiB) of the end of a
// supervised worker's log.
func (m *Manager) LogTail(pid int, maxBytes int64) (string, error) {
	if maxBytes <= 0 {
		maxBytes = logTailBytes
	}
	m.mu.Lock()
	p, ok := m.procs[pid]
	var path string
	if ok {
		path = p.info.LogPath
	}
	m.mu.Unlock()
	if !ok {
		return "", fmt.Errorf("%w: pid %d", ErrNotOurs, pid)
	}
	return readTail(path, 0, maxBytes), nil
}

// BinaryInUse reports whether a supervised worker runs the executable at
// path; it fits catalog.Config.InUse.
func (m *Manager) BinaryInUse(path string) bool {
	abs, err := filepath.Abs(path)
	if err != nil {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range m.procs {
		if p.info.Binary == abs {
			return true
		}
	}
	return false
}

func status(info WorkerInfo) Status {
	s := Status{WorkerInfo: info, Uptime: time.Since(info.StartedAt)}
	if gp, err := gproc.NewProcess(int32(info.PID)); err == nil {
		if mi, err := gp.MemoryInfo(); err == nil {
			s.RSS = mi.RSS
		}
		if c, err := gp.CPUPercent(); err == nil {
			s.CPUPercent = c
		}
	}
	return s
}

// freePort picks a free TCP port on the host, avoiding the ports of
// workers that are still starting.
func (m *Manager) freePort() (int, error) {
	for range 10 {
		l, err := net.Listen("tcp", net.JoinHostPort(m.cfg.Host, "0"))
		if err != nil {
			return 0, fmt.Errorf("process: finding a free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		m.mu.Lock()
		taken := false
		for _, p := range m.procs {
			taken = taken || p.info.Port == port
		}
		for _, p := range m.starting {
			taken = taken || p.info.Port == port
		}
		m.mu.Unlock()
		if !taken {
			return port, nil
		}
	}
	return 0, errors.New("process: no free port")
}

func checkBinary(path string) (string, error) {
	if path == "" {
		return "", fmt.Errorf("%w: Binary is required", ErrBadOptions)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadOptions, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("%w: binary: %v", ErrBadOptions, err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return "", fmt.Errorf("%w: binary %s is not an executable file", ErrBadOptions, abs)
	}
	return abs, nil
}

// NewWorkerID returns a fresh worker id, as Spawn gives a worker that is
// spawned without one ("w-" and 8 hex digits).
func NewWorkerID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "w-" + hex.EncodeToString(b[:])
}

// newSecret returns a fresh worker secret: secretBytes from crypto/rand,
// hex-encoded. crypto/rand.Read does not fail (it aborts the program
// rather than return weak bytes).
func newSecret() string {
	b := make([]byte, secretBytes)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// validSecret reports whether s looks like a secret newSecret made.
func validSecret(s string) bool {
	if len(s) != 2*secretBytes {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// workerEnv is the worker's environment: ours and extra, with SecretEnv
// set to secret alone (an inherited or extra value is dropped).
func workerEnv(base, extra []string, secret, engineSecretEnv string) []string {
	env := make([]string, 0, len(base)+len(extra)+2)
	for i, kv := range append(slices.Clip(base), extra...) {
		k, _, _ := strings.Cut(kv, "=")
		if k == SecretEnv || (engineSecretEnv != "" && k == engineSecretEnv) {
			continue
		}
		if i < len(base) && nodeSecret(k) {
			// The node's, not the worker's: a third-party engine (or
			// whatever it runs) must not read the cluster's credentials.
			continue
		}
		env = append(env, kv)
	}
	env = append(env, SecretEnv+"="+secret)
	if engineSecretEnv != "" && engineSecretEnv != SecretEnv {
		// An engine that checks a bearer key gets the worker's secret as
		// its key, so only the node can call it.
		env = append(env, engineSecretEnv+"="+secret)
	}
	return env
}

// nodeSecret reports whether the environment variable k holds one of the
// node's credentials (the cluster token, an API key, a Hugging Face
// token, its SSH agent), which a worker process does not inherit.
func nodeSecret(k string) bool {
	switch k {
	case "RBEE_CLUSTER_TOKEN", "RBEE_TOKEN", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",
		"SSH_AUTH_SOCK": // the agent the node installs hives with
		return true
	}
	return false
}

// Secret returns the secret handed to the worker called id and the port it
// was given, for a worker this manager supervises (ready, adopted, or still
// starting). ok is false for any other id, and for a worker adopted from a
// state file written before secrets existed. Compare secrets with
// crypto/subtle.ConstantTimeCompare.
func (m *Manager) Secret(id string) (secret string, port int, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range m.procs {
		if p.info.WorkerID == id {
			return p.secret, p.info.Port, p.secret != ""
		}
	}
	if p, found := m.starting[id]; found && p.info.Port != 0 {
		return p.secret, p.info.Port, true
	}
	return "", 0, false
}

// SocketFor is the Unix socket of the supervised engine given port, ""
// when none listens on one: a dialer of calls to the node's workers
// (enginesock.Dial) sends such a call there.
func (m *Manager) SocketFor(port int) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range m.procs {
		if p.info.Port == port {
			return p.info.Socket
		}
	}
	for _, p := range m.starting {
		if p.info.Port == port {
			return p.info.Socket
		}
	}
	return ""
}

// ReadSecrets returns the worker secrets recorded in dir's processes.json by
// worker id, without adopting anything or writing the file: for tools and
// test harnesses that act as the node (whose user alone can read the file).
func ReadSecrets(dir string) (map[string]string, error) {
	data, err := atomicfile.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return nil, fmt.Errorf("process: %w", err)
	}
	entries, err := parseState(data)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(entries))
	for _, e := range entries {
		if e.Secret != "" {
			out[e.WorkerID] = e.Secret
		}
	}
	return out, nil
}

// readTail returns up to max bytes of the end of the file from offset on,
// as text fit for a terminal: the log is the worker's own output, and an
// error carrying it is printed by the CLI, so control characters other
// than newlines and tabs (escape sequences that retitle, recolour or
// clear the user's terminal) are dropped, as is invalid UTF-8.
func readTail(path string, from int64, max int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	start := max64(from, fi.Size()-max)
	b := make([]byte, fi.Size()-start)
	n, _ := f.ReadAt(b, start)
	return strings.Map(func(r rune) rune {
		if r != '\n' && r != '\t' && unicode.IsControl(r) || r == utf8.RuneError {
			return -1
		}
		return r
	}, string(b[:n]))
}

func max64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

// stateEntry is one line of processes.json: the worker and its secret
// (kept out of WorkerInfo, which the node's API shows).
type stateEntry struct {
	WorkerInfo
	Secret string `json:"secret,omitempty"`
}

type stateDoc struct {
	Format    int          `json:"format"`
	Processes []stateEntry `json:"processes"`
}

// saveLocked writes processes.json atomically, readable by the node's user
// alone (it holds the secrets), and logs a failure, which it returns.
// Caller holds m.mu.
func (m *Manager) saveLocked() error {
	doc := stateDoc{Format: stateVer, Processes: make([]stateEntry, 0, len(m.procs))}
	for _, p := range m.procs {
		info := p.info
		info.Adopted = false
		doc.Processes = append(doc.Processes, stateEntry{WorkerInfo: info, Secret: p.secret})
	}
	sort.Slice(doc.Processes, func(i, j int) bool { return doc.Processes[i].PID < doc.Processes[j].PID })
	data, err := json.MarshalIndent(doc, "", "  ")
	if err == nil {
		err = atomicfile.WriteFile(filepath.Join(m.dir, stateFile), append(data, '\n'), 0o600)
	}
	if err != nil {
		m.log.Error("writing process table", "err", err)
	}
	return err
}

// maxStateBytes bounds processes.json: a few hundred bytes per worker, and
// a hive runs a handful of workers; 4 MiB means something is badly wrong.
const maxStateBytes = 4 << 20

// parseState decodes processes.json, dropping malformed entries (bad pid,
// no command line or start time, unsafe worker id, duplicate pid; in the
// current format also a missing or malformed secret). Entries of a
// version 1 file have no secret.
func parseState(data []byte) ([]stateEntry, error) {
	if len(data) > maxStateBytes {
		return nil, fmt.Errorf("process: %s larger than %d bytes", stateFile, maxStateBytes)
	}
	var doc stateDoc
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("process: %s: %w", stateFile, err)
	}
	if doc.Format != stateVer && doc.Format != stateVer1 {
		return nil, fmt.Errorf("process: %s format %d, want %d", stateFile, doc.Format, stateVer)
	}
	seen := make(map[int]bool, len(doc.Processes))
	out := make([]stateEntry, 0, len(doc.Processes))
	for _, e := range doc.Processes {
		if e.PID <= 0 || e.PID > math.MaxInt32 || len(e.Cmdline) == 0 || e.CreateTime <= 0 ||
			catalog.ValidName("worker id", e.WorkerID) != nil || seen[e.PID] {
			continue
		}
		switch {
		case doc.Format == stateVer1:
			e.Secret = ""
		case !validSecret(e.Secret):
			continue
		}
		seen[e.PID] = true
		e.Adopted, e.Stopped = false, false
		out = append(out, e)
	}
	return out, nil
}

// adopt loads processes.json and keeps the entries that still run, with
// their secrets.
func (m *Manager) adopt() error {
	path := filepath.Join(m.dir, stateFile)
	data, err := atomicfile.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("process: %w", err)
	}
	entries, err := parseState(data)
	if err != nil {
		// Unreadable: start empty (nothing is signalled), keep the file
		// for a human.
		m.log.Error("process table unreadable; starting empty", "path", path, "err", err)
		_ = os.Rename(path, path+".bad")
		return nil
	}
	for _, e := range entries {
		info := e.WorkerInfo
		if !alive(info) {
			m.log.Info("dropping process entry: not running (or pid reused)", "worker", info.WorkerID, "pid", info.PID)
			continue
		}
		info.Adopted = true
		m.procs[info.PID] = &proc{info: info, secret: e.Secret, done: make(chan struct{}), notify: true}
		m.log.Info("re-adopted worker", "worker", info.WorkerID, "pid", info.PID, "port", info.Port)
	}
	m.mu.Lock()
	m.saveLocked()
	m.mu.Unlock()
	return nil
}

// startRetrying starts the command newCmd makes, again (a new one) while
// the start fails with ETXTBSY: the binary was just written (installed by
// another spawn) and a process forked meanwhile (any spawn of this node)
// still holds the write descriptor until its own exec (golang/go#22315).
// That clears within milliseconds.
func startRetrying(newCmd func() *exec.Cmd) (*exec.Cmd, error) {
	for attempt := 1; ; attempt++ {
		cmd := newCmd()
		err := cmd.Start()
		if err == nil {
			return cmd, nil
		}
		if !errors.Is(err, syscall.ETXTBSY) || attempt >= textBusyTries {
			return nil, err
		}
		time.Sleep(time.Duration(attempt) * 10 * time.Millisecond)
	}
}
