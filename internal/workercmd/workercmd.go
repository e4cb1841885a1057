// Package workercmd is the command line of the cpu worker: flag parsing,
// the secret from the environment and signal handling around package
// worker. Both the rbee-worker binary and the rbee binary (started as
// rbee-worker) run it, so a machine with only rbee installed serves models.
//
//	RBEE_WORKER_SECRET=… rbee-worker --model FILE --port P --id ID [--node URL] [--device cpu]
//	            [--threads N] [--slots K] [--host 127.0.0.1] [--heartbeat-interval 2s]
//	            [--orphan-grace 5m] [--queue N] [--ctx N] [--kv-cache f16|f32] [--drain-timeout 30s] [--log-level info]
//
// The secret shared with the node comes in the environment variable
// RBEE_WORKER_SECRET (never a flag: every local user can read a command
// line); the worker removes it from its environment once read. Every
// request must carry it as "Authorization: Bearer", and heartbeats carry it
// to the node.
//
// SIGTERM or SIGINT drains the worker (new requests get 503, in-flight ones
// finish within the drain timeout) and exits 0; a second signal stops at
// once. A model that fails to load exits 1; bad flags or a missing secret
// exit 2. A worker whose node accepted no heartbeat for --orphan-grace
// drains and exits 3.
// All behaviour lives in package worker.
package workercmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/shirou/gopsutil/v4/mem"

	"github.com/rbee-project/rbee/internal/nodefile"
	"github.com/rbee-project/rbee/worker"
)

// Name is the command name the worker answers to: the rbee-worker binary,
// and the rbee binary when it is started under this name (the node
// catalogs its own executable as the cpu worker, file name rbee-worker).
const Name = "rbee-worker"

// confineToThreads runs the process on as many cores as it has compute
// threads, when that is fewer than the runtime would use (the machine's
// cores or its container's CPU limit; GOMAXPROCS in the environment
// wins, and it is never raised): its runtime (the collector, the HTTP server,
// heartbeats) then shares its threads' cores instead of taking cores
// from other processes. That is what --threads N asks for, and it matters
// most to a tensor group's shards on one machine, which run in lock step:
// any slice of a core one of them loses stalls both (rbee bench shard's
// figures in node/shardlink/DESIGN.md).
func confineToThreads(threads int, log *slog.Logger) {
	if threads <= 0 || threads >= runtime.GOMAXPROCS(0) || os.Getenv("GOMAXPROCS") != "" {
		return
	}
	runtime.GOMAXPROCS(threads)
	log.Debug("confined to the cores of the compute threads", "gomaxprocs", threads)
}

// Run runs the worker with args (without the program name) and returns the
// process exit code. It reads the worker secret from the environment.
func Run(args []string, stderr io.Writer) int {
	cfg := worker.DefaultConfig()
	fs := flag.NewFlagSet("rbee-worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.ModelPath, "model", "", "GGUF model file to serve (required)")
	fs.StringVar(&cfg.ModelName, "model-name", "", "name to serve the model under (default: the file name)")
	fs.IntVar(&cfg.Port, "port", 0, "listen port (0 picks a free one)")
	fs.StringVar(&cfg.ID, "id", "", "worker id (required)")
	fs.StringVar(&cfg.NodeURL, "node", "", "node base URL that receives heartbeats")
	fs.StringVar(&cfg.Device, "device", cfg.Device, "compute device (cpu)")
	fs.IntVar(&cfg.Threads, "threads", cfg.Threads, "compute threads (0 = all cores)")
	fs.IntVar(&cfg.Slots, "slots", cfg.Slots, "concurrent generations")
	fs.StringVar(&cfg.Host, "host", cfg.Host, "listen address")
	fs.DurationVar(&cfg.HeartbeatInterval, "heartbeat-interval", cfg.HeartbeatInterval, "time between heartbeats")
	fs.DurationVar(&cfg.OrphanGrace, "orphan-grace", cfg.OrphanGrace, "with --node: exit once the node has accepted no heartbeat for this long (0 = never)")
	fs.IntVar(&cfg.Queue, "queue", cfg.Queue, "requests that may wait for a slot")
	fs.IntVar(&cfg.ContextSize, "ctx", cfg.ContextSize, "context size per slot (0 = the model's)")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", cfg.DrainTimeout, "bound on finishing in-flight requests at shutdown")
	fs.StringVar(&cfg.RepackCache, "repack-cache", os.Getenv(worker.RepackCacheEnv), "directory for the model's repacked weights, shared by every worker of it through the page cache (default $"+worker.RepackCacheEnv+"; empty: each worker keeps its own copy)")
	fs.Var(&cfg.KVCache, "kv-cache", "element type of the KV cache: f16 (llama.cpp's default) or f32 (twice the memory)")
	shardLayers := fs.String("shard-layers", "", "pipeline shard: serve only layers LO:HI (LO > 0: a later stage; 0:HI: the group's head, with --stage)")
	shardKV := fs.String("shard-kv-heads", "", "tensor shard: compute KV heads LO:HI of every layer (LO > 0: a member; 0:HI: the group's head, with --stage)")
	fs.StringVar(&cfg.StageAddr, "stage-listen", os.Getenv(worker.StageListenEnv), "a shard other than its group's head: also listen on this address (host:port, port 0 picks one) for the head's direct TLS connection, offered through the node (default $"+worker.StageListenEnv+"; empty: through the nodes only)")
	var stages stageURLs
	fs.Var(&stages, "stage", "head of a sharded group: another shard's worker URL, in layer or KV-head order (repeat; secrets in "+worker.StageSecretsEnv+")")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "rbee-worker: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintf(stderr, "rbee-worker: --log-level: %v\n", err)
		return 2
	}
	if err := parseShard(&cfg.Shard, *shardLayers, *shardKV, stages); err != nil {
		fmt.Fprintf(stderr, "rbee-worker: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	cfg.Logger = log
	confineToThreads(cfg.Threads, log)
	if vm, err := mem.VirtualMemory(); err == nil && vm.Total > 0 {
		cfg.MemoryLimit = int64(min(vm.Total, 1<<62))
	}
	cfg.NodeFile = os.Getenv(nodefile.Env)
	cfg.Secret = os.Getenv(worker.SecretEnv)
	// Nothing this process starts inherits the secret.
	_ = os.Unsetenv(worker.SecretEnv)
	if cfg.Secret == "" {
		fmt.Fprintf(stderr, "rbee-worker: %s is not set: the worker answers only whoever holds its secret (the node that spawns it sets it)\n", worker.SecretEnv)
		return 2
	}

	s, err := worker.New(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "rbee-worker: %v\n", err)
		return 2
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)

	if err := s.Start(context.Background()); err != nil {
		log.Error("start failed", "err", err)
		return 1
	}
	loaded := make(chan error, 1)
	go func() { loaded <- s.WaitReady(context.Background()) }()

	select {
	case err := <-loaded:
		switch {
		case err != nil && s.Err() != nil:
			// Stopped itself while loading.
		case err != nil:
			log.Error("model load failed", "err", err)
			_ = s.Close()
			return 1
		default:
			log.Info("ready", "addr", s.Addr().String())
			select {
			case <-sigs:
			case <-s.Done():
			}
		}
	case <-sigs:
	case <-s.Done():
	}
	if s.Err() != nil {
		// It stops itself (its node is gone; the server logged why).
		select {
		case <-s.Done():
		case <-sigs:
			log.Warn("signal: stopping now")
			_ = s.Close()
		}
		log.Error("exiting", "err", s.Err())
		if errors.Is(s.Err(), worker.ErrModelLost) {
			return 1 // the model cannot be used, as when it does not load
		}
		return 3
	}

	drained := make(chan error, 1)
	go func() { drained <- s.Drain(context.Background()) }()
	select {
	case err := <-drained:
		if err != nil {
			log.Warn("drain incomplete", "err", err)
		}
	case <-sigs:
		log.Warn("second signal: stopping now")
		_ = s.Close()
		<-drained
	}
	return 0
}
