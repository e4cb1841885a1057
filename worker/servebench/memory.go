package servebench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/rbee-project/rbee/worker/process"
)

// Memory is what two workers of the same model cost together: the model
// file is memory-mapped, and so is the file of its repacked weights in the
// repack cache (engine.Options.RepackCache; the workers get it as a
// node's do), so their pages sit once in the page cache and both
// processes map them (Shared_Clean, counted half in each one's PSS); what
// each owns alone is its KV cache and buffers (Anonymous).
type Memory struct {
	ModelBytes int64          `json:"model_bytes"`
	Workers    []WorkerMemory `json:"workers"`
	// SharedFraction is the part of the model both workers map from the
	// same pages: the smaller ModelSharedClean over the model file's size.
	// The processes' whole Shared_Clean is no measure of it: it holds the
	// executable's and the libraries' pages too, more than a small model.
	// Pages count whole: a small file's last page can lift it a little
	// above 1.
	SharedFraction float64 `json:"shared_fraction"`
	// RSSOverModel is the larger worker RSS over the model file size: the
	// issue's bound is the file plus its KV cache plus 10 %.
	RSSOverModel float64 `json:"rss_over_model"`
}

// WorkerMemory is one worker's /proc/<pid>/smaps_rollup, in bytes.
type WorkerMemory struct {
	PID          int   `json:"pid"`
	RSS          int64 `json:"rss"`
	PSS          int64 `json:"pss"`
	SharedClean  int64 `json:"shared_clean"`
	PrivateClean int64 `json:"private_clean"`
	PrivateDirty int64 `json:"private_dirty"`
	Anonymous    int64 `json:"anonymous"`
	// ModelSharedClean is the Shared_Clean of the mappings of the model
	// file and of its repacked weights (the repack cache) alone
	// (/proc/<pid>/smaps).
	ModelSharedClean int64 `json:"model_shared_clean"`
}

// memory starts a second worker of the model next to w, warms both (every
// weight is read once) and reads what each maps. Linux only: elsewhere it
// returns nil.
func (w *runningWorker) memory(ctx context.Context, cfg Config) (*Memory, error) {
	if _, err := os.Stat("/proc/self/smaps_rollup"); err != nil {
		return nil, nil
	}
	fi, err := os.Stat(cfg.Model)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithTimeout(ctx, workerStartTimeout)
	defer cancel()
	info, err := w.mgr.Spawn(sctx, process.SpawnOptions{Binary: w.bin, ModelPath: cfg.Model, Threads: cfg.Threads, Slots: 1, ExtraArgs: w.kvArgs, ReadyTimeout: workerStartTimeout, Env: w.env})
	if err != nil {
		return nil, fmt.Errorf("servebench: starting a second worker: %w", err)
	}
	defer func() {
		c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = w.mgr.Stop(c, info.PID, 5*time.Second)
		cancel()
	}()
	secret, port, _ := w.mgr.Secret(info.WorkerID)
	second := &runningWorker{url: fmt.Sprintf("http://127.0.0.1:%d", port), secret: secret, hc: w.hc}
	for _, x := range []*runningWorker{w, second} {
		if s := x.infer(ctx, request{Prompt: "Warm up.", MaxTokens: 4}); s.err != nil {
			return nil, fmt.Errorf("servebench: warm-up request: %w", s.err)
		}
	}
	model, err := canonical(cfg.Model)
	if err != nil {
		return nil, err
	}
	// The cache directory exists only once the engine repacked into it.
	dir, err := canonical(filepath.Dir(w.repackDir))
	if err != nil {
		return nil, err
	}
	repack := filepath.Join(dir, filepath.Base(w.repackDir))
	ofModel := func(path string) bool {
		return path == model || strings.HasPrefix(path, repack+string(filepath.Separator))
	}
	m := &Memory{ModelBytes: fi.Size()}
	for _, pid := range []int{w.pid, info.PID} {
		wm, err := smapsRollup(pid)
		if err != nil {
			return nil, err
		}
		if wm.ModelSharedClean, err = sharedCleanOf(pid, ofModel); err != nil {
			return nil, err
		}
		m.Workers = append(m.Workers, wm)
	}
	shared := min(m.Workers[0].ModelSharedClean, m.Workers[1].ModelSharedClean)
	m.SharedFraction = float64(shared) / float64(m.ModelBytes)
	m.RSSOverModel = float64(max(m.Workers[0].RSS, m.Workers[1].RSS)) / float64(m.ModelBytes)
	return m, nil
}

// smapsRollup reads a process's memory summary.
func smapsRollup(pid int) (WorkerMemory, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return WorkerMemory{}, err
	}
	defer f.Close()
	wm := WorkerMemory{PID: pid}
	fields := map[string]*int64{"Rss:": &wm.RSS, "Pss:": &wm.PSS, "Shared_Clean:": &wm.SharedClean,
		"Private_Clean:": &wm.PrivateClean, "Private_Dirty:": &wm.PrivateDirty, "Anonymous:": &wm.Anonymous}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.Fields(sc.Text())
		if len(parts) == 3 && parts[2] == "kB" {
			if p, ok := fields[parts[0]]; ok {
				kb, err := strconv.ParseInt(parts[1], 10, 64)
				if err != nil {
					return WorkerMemory{}, fmt.Errorf("smaps_rollup of %d: %q: %w", pid, sc.Text(), err)
				}
				*p = kb << 10
			}
		}
	}
	return wm, sc.Err()
}

// canonical is path as the kernel names a mapping of it: absolute, links
// resolved.
func canonical(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	return filepath.EvalSymlinks(abs)
}

// sharedCleanOf sums the Shared_Clean of a process's mappings of the
// files that want accepts (/proc/<pid>/smaps: a header line per mapping,
// its path from the sixth field on, then its "Name: value kB" fields).
func sharedCleanOf(pid int, want func(path string) bool) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var sum int64
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.Fields(sc.Text())
		if len(parts) == 0 {
			continue
		}
		if !strings.HasSuffix(parts[0], ":") { // a mapping's header
			in = len(parts) >= 6 && want(strings.Join(parts[5:], " "))
			continue
		}
		if in && parts[0] == "Shared_Clean:" && len(parts) == 3 {
			kb, err := strconv.ParseInt(parts[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("smaps of %d: %q: %w", pid, sc.Text(), err)
			}
			sum += kb << 10
		}
	}
	return sum, sc.Err()
}
