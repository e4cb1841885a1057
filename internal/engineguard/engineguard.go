// Package engineguard runs an external inference engine (llama-server,
// vLLM, Ollama, ...) as a child and stops it once the node that spawned it
// is gone for good: rbee's own workers stop themselves after their orphan
// grace when the node accepts no heartbeat, but an engine knows nothing of
// rbee, so the node starts it under this guard (`rbee engine-guard`).
//
// The guard asks the node's /health every Interval. The node counts as
// there when it answers 200 with the id it had at spawn; a node that does
// not answer, answers with another id (another node took its address) or
// with an error counts as gone. After Grace without the node, the guard
// sends the engine SIGTERM, then SIGKILL after StopTimeout, and returns.
// A node restart within the grace changes nothing: the new run of the node
// has the same id and re-adopts the engine with its guard.
//
// Signals the guard receives (SIGTERM, SIGINT) go to the engine; the guard
// returns when the engine exits, with its exit code. On Linux the engine
// also gets SIGKILL if the guard itself dies.
package engineguard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/rbee-project/rbee/internal/nodefile"
	"github.com/rbee-project/rbee/internal/peercred"
)

// ErrConfig: the Config is unusable.
var ErrConfig = errors.New("engineguard: bad config")

// Config configures Run. Start from DefaultConfig.
type Config struct {
	// NodeURL is the node's API ("http://127.0.0.1:7833"); NodeID the id
	// its /health must report.
	NodeURL, NodeID string
	// NodeFile, when set, is the node's node.json: when the node does not
	// answer at NodeURL, the guard reads its API URL there and asks it
	// there from then on if it moved (a restart on another port).
	NodeFile string
	// Grace is how long the node may be gone before the engine is stopped
	// (the node's --worker-orphan-grace).
	Grace time.Duration
	// Interval is how often the node is asked.
	Interval time.Duration
	// StopTimeout is how long the engine has after SIGTERM.
	StopTimeout time.Duration
	// Command is the engine's command line.
	Command []string
	// HTTPClient asks the node; nil means one with a 5 s timeout that
	// takes a loopback node only from a server this process's user runs.
	HTTPClient *http.Client
	// Logger; nil discards.
	Logger *slog.Logger
}

// DefaultConfig has the timings: a check every 5 s is cheap for the node and
// far below any useful grace; 10 s is what the node gives its own workers
// to stop.
func DefaultConfig() Config {
	return Config{Grace: 5 * time.Minute, Interval: 5 * time.Second, StopTimeout: 10 * time.Second}
}

// Run starts the engine and guards it until it exits or ctx ends (which
// stops it as the grace would). It returns the engine's exit code.
func Run(ctx context.Context, cfg Config) (int, error) {
	if len(cfg.Command) == 0 || cfg.NodeURL == "" || cfg.NodeID == "" || cfg.Grace <= 0 || cfg.Interval <= 0 {
		return 2, fmt.Errorf("%w: need a command, the node's URL and id, a grace and an interval", ErrConfig)
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = DefaultConfig().StopTimeout
	}
	client := cfg.HTTPClient
	if client == nil {
		// Only a node run by this user answers for it on loopback: while
		// the node is down any local user may listen on its port, and an
		// impostor answering with the node's id (which /health tells any
		// local client) kept the engine, and its GPU memory, for good.
		client = peercred.LoopbackOwnedBy(&http.Client{Timeout: 5 * time.Second}, uint32(os.Getuid()))
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// The parent-death signal follows the thread that started the child:
	// keep this goroutine (the guard's life) on that thread.
	runtime.LockOSThread()
	cmd := exec.Command(cfg.Command[0], cfg.Command[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, os.Stdout, os.Stderr
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return 127, fmt.Errorf("engineguard: start %s: %w", cfg.Command[0], err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)

	tick := time.NewTicker(cfg.Interval)
	defer tick.Stop()
	lastSeen := time.Now()
	stopping := false
	var kill <-chan time.Time
	stop := func(why string) {
		if stopping {
			return
		}
		stopping = true
		log.Warn("stopping the engine", "why", why)
		_ = cmd.Process.Signal(syscall.SIGTERM)
		kill = time.After(cfg.StopTimeout)
	}
	for {
		select {
		case err := <-done:
			return exitCode(err), nil
		case s := <-sigs:
			_ = cmd.Process.Signal(s)
		case <-ctx.Done():
			stop("the guard was cancelled")
		case <-kill:
			_ = cmd.Process.Kill()
		case <-tick.C:
			if stopping {
				continue
			}
			err := checkNode(ctx, client, cfg.NodeURL, cfg.NodeID)
			if err != nil && cfg.NodeFile != "" {
				if u, ferr := nodefile.APIURL(cfg.NodeFile); ferr == nil && u != cfg.NodeURL {
					log.Info("the node moved: asking it at its new address", "from", cfg.NodeURL, "to", u)
					cfg.NodeURL = u
					err = checkNode(ctx, client, cfg.NodeURL, cfg.NodeID)
				}
			}
			if err == nil {
				lastSeen = time.Now()
			} else if gone := time.Since(lastSeen); gone >= cfg.Grace {
				stop(fmt.Sprintf("node %s gone for %v (%v): orphan grace %v over", cfg.NodeID, gone.Round(time.Second), err, cfg.Grace))
			}
		}
	}
}

// checkNode asks the node's /health for its id.
func checkNode(ctx context.Context, client *http.Client, url, id string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(url, "/")+"/health", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var h struct {
		ID string `json:"id"`
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("health answered %s", resp.Status)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&h); err != nil {
		return fmt.Errorf("health: %w", err)
	}
	if h.ID != id {
		return fmt.Errorf("another node (%s) answers at %s", h.ID, url)
	}
	return nil
}

// exitCode is the engine's exit status as a process exit code.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if st, ok := ee.Sys().(syscall.WaitStatus); ok && st.Signaled() {
			return 128 + int(st.Signal())
		}
		return ee.ExitCode()
	}
	return 1
}
