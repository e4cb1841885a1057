package worker

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"time"

	"github.com/rbee-project/rbee/model/engine"
)

// RepackCacheEnv is the environment variable through which a node gives
// its cpu workers their Config.RepackCache: an older worker binary
// ignores a variable it does not know, where it would refuse an unknown
// flag.
const RepackCacheEnv = "RBEE_REPACK_CACHE"

// Version is the worker's version, reported in /v1/info and heartbeats.
const Version = "0.1.0"

// Sentinel errors. Errors returned by this package wrap them with %w.
var (
	// ErrBadConfig reports an invalid Config field.
	ErrBadConfig = errors.New("worker: invalid config")
	// ErrLoad reports that the model could not be loaded.
	ErrLoad = errors.New("worker: model load failed")
	// ErrNotStarted is returned by calls that need a started server.
	ErrNotStarted = errors.New("worker: server not started")
	// ErrAlreadyStarted is returned by a second Start.
	ErrAlreadyStarted = errors.New("worker: server already started")
	// ErrClosed is returned once the server has been closed.
	ErrClosed = errors.New("worker: server closed")
	// ErrQueueFull reports that all slots are busy and the wait queue is full.
	ErrQueueFull = errors.New("worker: queue full")
	// ErrUnavailable reports that the worker is loading or draining.
	ErrUnavailable = errors.New("worker: not accepting requests")
	// ErrInvalidRequest is wrapped around an engine's rejection of a request
	// that passed the worker's own validation.
	ErrInvalidRequest = errors.New("worker: invalid request")
	// ErrContextLength is wrapped by Model.EncodeChat when the rendered
	// chat cannot fit the context whatever its tokens (it is not
	// tokenized).
	ErrContextLength = errors.New("worker: prompt exceeds the context")
	// ErrOrphaned is returned by Server.Err when the worker stopped itself
	// because no heartbeat was accepted by its node within OrphanGrace.
	ErrOrphaned = errors.New("worker: no heartbeat accepted by the node within the orphan grace")
	// ErrModelLost is wrapped by a Session's errors, and returned by
	// Server.Err, when the model can no longer be read: its file was
	// truncated while the worker had it mapped. The worker then stops
	// itself, since every request would fail.
	ErrModelLost = errors.New("worker: the model file was truncated under the worker")
)

// SecretEnv is the environment variable through which the node hands a
// worker its secret at spawn (never on the command line, which every local
// user can read). cmd/rbee-worker reads it into Config.Secret and removes it
// from its own environment.
const SecretEnv = "RBEE_WORKER_SECRET"

const (
	// DefaultSlots is one concurrent generation: on a CPU the engine already
	// spreads one generation over all cores. More slots are batched (one
	// forward pass per step for all of them): more tokens per second in
	// all, fewer per request, and a KV cache each; opt-in.
	DefaultSlots = 1
	// DefaultQueue bounds waiting requests so a burst gets a quick 429
	// instead of an unbounded wait (and unbounded memory).
	DefaultQueue = 16
	// DefaultHeartbeatInterval matches the node's expectation of a beat every
	// couple of seconds; a few missed beats mark the worker stale.
	DefaultHeartbeatInterval = 2 * time.Second
	// DefaultDrainTimeout bounds how long a drain waits for in-flight
	// requests: long enough for a typical completion, short enough for a
	// service manager's stop timeout.
	DefaultDrainTimeout = 30 * time.Second
	// DefaultBodyTimeout bounds reading a request body: the node sends a
	// prompt of at most MaxBodyBytes at once, while a local process that
	// sends headers and then trickles (or never sends) the body must not
	// hold its connection for ever.
	DefaultBodyTimeout = 60 * time.Second
	// MaxBodyBytes bounds a request body (prompts are text; 1 MiB is far
	// beyond any context window this worker serves).
	MaxBodyBytes = 1 << 20
	// DefaultMaxTokens is the max_tokens of a request that gives none: 0,
	// no limit but the context. The answer runs until the model ends it
	// (or a stop string, or a complete JSON document) or the context is
	// full (finish reason "length"), as OpenAI's default (the rest of the
	// context), Ollama's num_predict -1 and llama-server's n_predict -1.
	DefaultMaxTokens = 0
	// DefaultOrphanGrace is how long a worker outlives the last heartbeat
	// its node accepted: long enough for a node restart or upgrade (which
	// re-adopts the worker), short enough that a worker whose node is gone
	// for good does not hold its memory (or a port a stranger could use)
	// for long.
	DefaultOrphanGrace = 5 * time.Minute
	// MinSecretLen is the shortest Secret accepted: 16 characters is 64 bits
	// even as hex; the node hands out 64 hex characters (256 random bits).
	MinSecretLen = 16
)

// Config configures a Server. Start from DefaultConfig and override fields.
type Config struct {
	// ID names this worker in heartbeats and /v1/info. Required.
	ID string
	// ModelPath is the GGUF file to serve. Required.
	ModelPath string
	// ModelName is the name the model is served under (OpenAI "model",
	// heartbeats); empty means the file's base name without extension. The
	// node passes its catalog id.
	ModelName string
	// Host is the listen address; loopback by default because the node
	// reaches its workers on localhost.
	Host string
	// Port is the listen port; 0 picks a free one (see Server.Addr).
	Port int
	// Device is the compute device; only "cpu" exists.
	Device string
	// Threads is the engine's compute threads; 0 means all cores.
	Threads int
	// Slots is the number of concurrent generations (each with its own KV cache).
	Slots int
	// Queue is the number of requests that may wait for a slot; more get 429.
	Queue int
	// ContextSize is the context per slot; 0 means the model's (engine-capped).
	ContextSize int
	// NodeURL, when set, receives heartbeats at NodeURL/v1/workers/heartbeat.
	NodeURL string
	// NodeFile, when set, is the node's node.json (its data dir's; the
	// node hands the path over in nodefile.Env). When a heartbeat fails,
	// the worker reads the node's API URL there and, if it moved (the
	// node restarted on another port), beats there from then on.
	NodeFile string
	// Secret is shared with the node only: every request to the worker must
	// carry it (Authorization: Bearer), and heartbeats carry it to the node.
	// Required (at least MinSecretLen characters).
	Secret string
	// OrphanGrace: with NodeURL set, the worker stops itself (Server.Err
	// then wraps ErrOrphaned) once this long has passed since the last
	// heartbeat its node accepted (a 2xx answer), counted from Start when
	// none was. 0 means never.
	OrphanGrace time.Duration
	// HeartbeatInterval is the time between heartbeats.
	HeartbeatInterval time.Duration
	// DrainTimeout bounds Drain when its context has no earlier deadline.
	DrainTimeout time.Duration
	// BodyTimeout bounds reading a request's body (the answer, a stream,
	// is not bounded by it); 0 means DefaultBodyTimeout.
	BodyTimeout time.Duration
	// Shard makes the worker one stage of a pipeline-sharded model; the
	// zero value serves the whole model (see ShardConfig).
	Shard ShardConfig
	// StageAddr, for a shard other than its group's head, is the address
	// (host:port; port 0 picks one) of a direct stage port: the head then
	// connects to this worker without the nodes in between (see
	// stagedirect.go). Empty: the head reaches it only through its node.
	StageAddr string
	// RepackCache (the worker command's --repack-cache, default
	// RepackCacheEnv) is a directory where the engine keeps the model's
	// repacked weights in a file that every worker of the model maps, so
	// they share its pages (engine.Options.RepackCache); empty keeps
	// each worker's copy in its own memory.
	RepackCache string
	// KVCache is the element type of every slot's KV cache (the worker
	// command's --kv-cache): engine.KVF16, the zero value, as llama.cpp,
	// or engine.KVF32 (twice the memory).
	KVCache engine.KVType
	// MemoryLimit bounds what the model's shape may ask the engine to
	// allocate (engine.Options.MemoryLimit: its tables and every slot's
	// KV cache at the context size); 0: no bound. The command sets it to the
	// machine's memory, so a hostile model file is refused at load
	// instead of driving the machine out of memory.
	MemoryLimit int64
	// Load loads the model; DefaultConfig sets LoadEngine.
	Load LoadFunc
	// Logger receives operational logs; nil discards them.
	Logger *slog.Logger
}

// DefaultConfig returns a Config with every optional field set to its default.
func DefaultConfig() Config {
	return Config{
		Host:              "127.0.0.1",
		Device:            "cpu",
		Slots:             DefaultSlots,
		Queue:             DefaultQueue,
		HeartbeatInterval: DefaultHeartbeatInterval,
		DrainTimeout:      DefaultDrainTimeout,
		BodyTimeout:       DefaultBodyTimeout,
		OrphanGrace:       DefaultOrphanGrace,
		Load:              LoadEngine,
	}
}

func (c *Config) validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrBadConfig, field, fmt.Sprintf(format, args...))
	}
	switch {
	case c.ID == "":
		return bad("ID", "required")
	case c.ModelPath == "":
		return bad("ModelPath", "required")
	case c.Host == "" || net.ParseIP(c.Host) == nil && c.Host != "localhost":
		return bad("Host", "%q is not an IP address", c.Host)
	case c.Port < 0 || c.Port > 65535:
		return bad("Port", "%d out of range 0..65535", c.Port)
	case c.Device != "cpu":
		return bad("Device", "%q unsupported (only \"cpu\")", c.Device)
	case c.Threads < 0:
		return bad("Threads", "%d is negative", c.Threads)
	case c.Slots < 1 || c.Slots > 256:
		return bad("Slots", "%d out of range 1..256", c.Slots)
	case c.Queue < 0:
		return bad("Queue", "%d is negative", c.Queue)
	case c.KVCache > engine.KVF32:
		return bad("KVCache", "%d is not a KV cache type", c.KVCache)
	case c.ContextSize < 0:
		return bad("ContextSize", "%d is negative", c.ContextSize)
	case c.HeartbeatInterval <= 0:
		return bad("HeartbeatInterval", "must be positive")
	case c.DrainTimeout <= 0:
		return bad("DrainTimeout", "must be positive")
	case c.BodyTimeout < 0:
		return bad("BodyTimeout", "%v is negative", c.BodyTimeout)
	case len(c.Secret) < MinSecretLen:
		return bad("Secret", "required, at least %d characters (the node passes it in %s)", MinSecretLen, SecretEnv)
	case c.OrphanGrace < 0:
		return bad("OrphanGrace", "%v is negative", c.OrphanGrace)
	case c.OrphanGrace > 0 && c.OrphanGrace < c.HeartbeatInterval:
		return bad("OrphanGrace", "%v is shorter than the heartbeat interval %v", c.OrphanGrace, c.HeartbeatInterval)
	case c.Load == nil:
		return bad("Load", "required")
	}
	if err := c.Shard.validate(); err != nil {
		return err
	}
	if c.NodeURL != "" {
		u, err := url.Parse(c.NodeURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return bad("NodeURL", "%q is not an http(s) URL", c.NodeURL)
		}
	}
	return nil
}
