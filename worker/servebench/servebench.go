// Package servebench measures a worker's serving throughput: it starts a
// real worker process (the rbee binary run as rbee-worker) on a model,
// drives it over its HTTP API with a number of concurrent clients per
// level, and reports aggregate generation tokens per second and time to
// first token, plus the time to first token of a chat's second turn with
// and without the cached prefix of the first turn. `rbee bench serve` is
// the command line around it.
package servebench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rbee-project/rbee/internal/sse"
	"github.com/rbee-project/rbee/model/engine"
	"github.com/rbee-project/rbee/worker"
	"github.com/rbee-project/rbee/worker/process"
)

var (
	// ErrBadConfig reports an invalid Config.
	ErrBadConfig = errors.New("servebench: invalid config")
	// ErrNoAnswers reports a level in which the worker answered no
	// request (each was refused or failed, say a max_tokens beyond its
	// context): it has nothing to measure, and a report of zeros would
	// read as a measurement. The error carries the first failure.
	ErrNoAnswers = errors.New("servebench: no request of the level was answered")
)

// Defaults of Config's optional fields.
const (
	// DefaultMaxTokens is long enough that decoding, not the prompt,
	// dominates a request (llama.cpp's batched-bench also generates 128),
	// short enough for a run of a minute or two on a small model.
	DefaultMaxTokens = 128
	// DefaultRequestsPerClient: each client sends this many requests per
	// level, so every level keeps its clients busy for several requests.
	DefaultRequestsPerClient = 3
	// DefaultReuseWords sizes the long first chat turn of the prefix-reuse
	// measurement (a few hundred tokens: its prefill is what reuse saves).
	DefaultReuseWords = 300
	// DefaultReuseTrials is the number of second turns timed each way.
	DefaultReuseTrials = 3
	// workerStartTimeout bounds the worker's start and model load.
	workerStartTimeout = 2 * time.Minute
)

// Config configures Run.
type Config struct {
	// Binary is the rbee (or rbee-worker) executable. Required.
	Binary string
	// Model is the GGUF file. Required.
	Model string
	// Concurrency lists the levels (concurrent clients). Required.
	Concurrency []int
	// Slots is the worker's slot count; 0 means the largest level.
	Slots int
	// Threads is the worker's compute threads; 0 means all cores.
	Threads int
	// MaxTokens is generated per request; 0 means DefaultMaxTokens.
	MaxTokens int
	// RequestsPerClient per level and round; 0 means
	// DefaultRequestsPerClient.
	RequestsPerClient int
	// Rounds runs every level this many times, interleaved; 0 means 1.
	Rounds int
	// ReuseWords sizes the prefix-reuse first turn; 0 means
	// DefaultReuseWords, < 0 skips the measurement.
	ReuseWords int
	// Memory also starts a second worker of the model and reports what
	// the two map (see Memory).
	Memory bool
	// KVCache is the workers' KV cache type ("f16", "f32"); empty is the
	// worker's default (f16).
	KVCache string
	// Logger receives progress; nil discards it.
	Logger *slog.Logger
}

// Level is the result of one concurrency level.
type Level struct {
	Concurrency int `json:"concurrency"`
	Requests    int `json:"requests"`
	Errors      int `json:"errors"`
	// GenTokens is the completion tokens of all requests. Each round's
	// aggregate generation speed is its tokens over its wall time (Rounds);
	// TokensPerSecond is their median.
	GenTokens int       `json:"gen_tokens"`
	Rounds    []float64 `json:"tokens_per_second_rounds"`
	// PromptTokens is the mean prompt length of the requests.
	PromptTokens    float64 `json:"prompt_tokens_mean"`
	TokensPerSecond float64 `json:"tokens_per_second"`
	TTFTMedianMs    float64 `json:"ttft_median_ms"`
	TTFTP95Ms       float64 `json:"ttft_p95_ms"`
	// RatioToFirst is TokensPerSecond over that of the first level.
	RatioToFirst float64 `json:"ratio_to_first_level"`
	// MeanBatch is how many generations the worker's forward passes
	// advanced together on average during the level (its step loop's
	// counters, all rounds); below the concurrency when clients wait
	// between requests, prompts are being read, or generations end at
	// different steps. 0 when the worker does not report them.
	MeanBatch  float64 `json:"mean_batch,omitempty"`
	FirstError string  `json:"first_error,omitempty"`
}

// Reuse is the prefix-reuse measurement: the second turn of a chat whose
// first turn was long, timed with its first turn in a slot's cache
// (reused) and with an equally long prompt that shares nothing with any
// cache (cold).
type Reuse struct {
	FirstTurnPromptTokens  int     `json:"first_turn_prompt_tokens"`
	SecondTurnPromptTokens int     `json:"second_turn_prompt_tokens"`
	Trials                 int     `json:"trials"`
	ReusedTTFTMedianMs     float64 `json:"reused_ttft_median_ms"`
	ColdTTFTMedianMs       float64 `json:"cold_ttft_median_ms"`
	// ReusedCachedTokensMin is the fewest prompt tokens the worker took
	// from its cache for a reused second turn (its end event's
	// tokens_cached), ColdCachedTokensMax the most for a cold one: what
	// shows that the two TTFTs are what they are named (the first about
	// the first turn's length, the second 0).
	ReusedCachedTokensMin int `json:"reused_cached_tokens_min"`
	ColdCachedTokensMax   int `json:"cold_cached_tokens_max"`
	// Speedup is cold over reused TTFT.
	Speedup float64 `json:"speedup"`
}

// Result is Run's report.
type Result struct {
	Benchmark   string  `json:"benchmark"`
	Model       string  `json:"model"`
	Slots       int     `json:"slots"`
	Threads     int     `json:"threads"`
	Rounds      int     `json:"rounds"`
	MaxTokens   int     `json:"max_tokens"`
	KVCache     string  `json:"kv_cache"` // as the worker reports it (/v1/info)
	Levels      []Level `json:"levels"`
	PrefixReuse *Reuse  `json:"prefix_reuse,omitempty"`
	Memory      *Memory `json:"memory,omitempty"`
}

func (c *Config) fill() error {
	if c.Binary == "" || c.Model == "" {
		return fmt.Errorf("%w: Binary and Model are required", ErrBadConfig)
	}
	if len(c.Concurrency) == 0 {
		return fmt.Errorf("%w: at least one concurrency level", ErrBadConfig)
	}
	for _, n := range c.Concurrency {
		if n < 1 || n > 1024 {
			return fmt.Errorf("%w: concurrency %d (1..1024)", ErrBadConfig, n)
		}
	}
	if c.KVCache != "" {
		if _, err := engine.ParseKVType(c.KVCache); err != nil {
			return fmt.Errorf("%w: %w", ErrBadConfig, err)
		}
	}
	if c.Slots < 0 || c.Threads < 0 || c.MaxTokens < 0 || c.RequestsPerClient < 0 || c.Rounds < 0 {
		return fmt.Errorf("%w: negative slots, threads, max tokens or requests", ErrBadConfig)
	}
	if c.Slots == 0 {
		c.Slots = slices.Max(c.Concurrency)
	}
	if c.MaxTokens == 0 {
		c.MaxTokens = DefaultMaxTokens
	}
	if c.Rounds == 0 {
		c.Rounds = 1
	}
	if c.RequestsPerClient == 0 {
		c.RequestsPerClient = DefaultRequestsPerClient
	}
	if c.ReuseWords == 0 {
		c.ReuseWords = DefaultReuseWords
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Run starts the worker, runs every level in order and the prefix-reuse
// measurement, and stops the worker. A level in which no request was
// answered ends the run with ErrNoAnswers; one with some failures is
// reported (errors, first_error).
func Run(ctx context.Context, cfg Config) (Result, error) {
	if err := cfg.fill(); err != nil {
		return Result{}, err
	}
	w, err := startWorker(ctx, cfg)
	if err != nil {
		return Result{}, err
	}
	defer w.stop()
	res := Result{Benchmark: "serve", Model: cfg.Model, Slots: cfg.Slots, Threads: cfg.Threads, Rounds: cfg.Rounds, MaxTokens: cfg.MaxTokens}
	info, err := w.info(ctx)
	if err != nil {
		return res, err
	}
	res.KVCache = info.KVCache // what the worker says it runs
	// Warm up: the first request maps the weights in.
	if s := w.infer(ctx, request{Prompt: "Warm up.", MaxTokens: 4}); s.err != nil {
		return res, fmt.Errorf("servebench: warm-up request: %w", s.err)
	}
	// Rounds interleave the levels, so that a change of the machine's load
	// during the run falls on every level alike.
	samples := make([][]sample, len(cfg.Concurrency))
	tps := make([][]float64, len(cfg.Concurrency))
	batch := make([]worker.BatchStats, len(cfg.Concurrency))
	for round := 0; round < cfg.Rounds; round++ {
		for li, c := range cfg.Concurrency {
			before, _ := w.info(ctx)
			got, wall := w.level(ctx, c, c*cfg.RequestsPerClient, cfg.MaxTokens, (round*len(cfg.Concurrency)+li)*100000)
			if after, err := w.info(ctx); err == nil && before.Batch != nil && after.Batch != nil {
				batch[li].Steps += after.Batch.Steps - before.Batch.Steps
				batch[li].SequenceSteps += after.Batch.SequenceSteps - before.Batch.SequenceSteps
			}
			if slices.IndexFunc(got, func(s sample) bool { return s.err == nil }) < 0 {
				return res, fmt.Errorf("%w: concurrency %d: %w", ErrNoAnswers, c, got[0].err)
			}
			samples[li] = append(samples[li], got...)
			tps[li] = append(tps[li], float64(genTokens(got))/wall.Seconds())
			cfg.Logger.Info("level done", "round", round+1, "concurrency", c, "tokens_per_second", tps[li][len(tps[li])-1])
			if err := ctx.Err(); err != nil {
				return res, err
			}
		}
	}
	for li, c := range cfg.Concurrency {
		lv := summarize(c, samples[li], tps[li])
		if b := batch[li]; b.Steps > 0 {
			lv.MeanBatch = math.Round(float64(b.SequenceSteps)/float64(b.Steps)*100) / 100
		}
		lv.RatioToFirst = 1
		if li > 0 {
			lv.RatioToFirst = 0
			if first := res.Levels[0].TokensPerSecond; first > 0 {
				lv.RatioToFirst = lv.TokensPerSecond / first
			}
		}
		res.Levels = append(res.Levels, lv)
	}
	if cfg.ReuseWords > 0 {
		r, err := w.reuse(ctx, cfg.ReuseWords)
		if err != nil {
			return res, err
		}
		res.PrefixReuse = &r
	}
	if cfg.Memory {
		m, err := w.memory(ctx, cfg)
		if err != nil {
			return res, err
		}
		res.Memory = m
	}
	return res, nil
}

// runningWorker is the worker process under test.
type runningWorker struct {
	mgr *process.Manager
	bin string // what the manager spawns: rbee under the worker's name
	dir string
	env []string // the repack cache, as a node gives its cpu workers
	// repackDir is that cache: the workers map their repacked weights
	// from files in it.
	repackDir string
	kvArgs    []string // --kv-cache, when Config.KVCache is set
	url       string
	secret    string
	pid       int
	hc        *http.Client
}

func startWorker(ctx context.Context, cfg Config) (*runningWorker, error) {
	dir, err := os.MkdirTemp("", "rbee-bench-serve-")
	if err != nil {
		return nil, err
	}
	// The rbee binary runs the worker when started under the worker's name.
	bin, err := filepath.Abs(cfg.Binary)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	link := filepath.Join(dir, "rbee-worker")
	if err := os.Symlink(bin, link); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	pcfg := process.DefaultConfig()
	pcfg.Dir, pcfg.Logger = dir, cfg.Logger
	mgr, err := process.New(pcfg)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	repack := filepath.Join(dir, "repack")
	w := &runningWorker{mgr: mgr, dir: dir, bin: link, repackDir: repack, env: []string{worker.RepackCacheEnv + "=" + repack}}
	if cfg.KVCache != "" {
		w.kvArgs = []string{"--kv-cache", cfg.KVCache}
	}
	sctx, cancel := context.WithTimeout(ctx, workerStartTimeout)
	defer cancel()
	maxC := slices.Max(cfg.Concurrency)
	info, err := mgr.Spawn(sctx, process.SpawnOptions{
		Binary: link, ModelPath: cfg.Model, Threads: cfg.Threads, Slots: cfg.Slots,
		// Every client of the largest level gets an answer, queued or not.
		ExtraArgs:    append([]string{"--queue", fmt.Sprint(max(maxC, worker.DefaultQueue))}, w.kvArgs...),
		ReadyTimeout: workerStartTimeout, Env: w.env,
	})
	if err != nil {
		w.stop()
		return nil, fmt.Errorf("servebench: starting the worker: %w", err)
	}
	secret, port, ok := mgr.Secret(info.WorkerID)
	if !ok {
		w.stop()
		return nil, errors.New("servebench: the worker's secret is unknown")
	}
	w.pid, w.secret = info.PID, secret
	w.url = fmt.Sprintf("http://127.0.0.1:%d", port)
	w.hc = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: maxC + 4}}
	return w, nil
}

// info asks the worker for its /v1/info.
func (w *runningWorker) info(ctx context.Context) (worker.Info, error) {
	var in worker.Info
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.url+"/v1/info", nil)
	if err != nil {
		return in, err
	}
	req.Header.Set("Authorization", "Bearer "+w.secret)
	resp, err := w.hc.Do(req)
	if err != nil {
		return in, fmt.Errorf("servebench: worker info: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return in, fmt.Errorf("servebench: worker info: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&in); err != nil {
		return in, fmt.Errorf("servebench: worker info: %w", err)
	}
	return in, nil
}

func (w *runningWorker) stop() {
	if w.pid != 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = w.mgr.Stop(ctx, w.pid, 5*time.Second)
		cancel()
	}
	_ = w.mgr.Close()
	os.RemoveAll(w.dir)
}

// request is the body of a native /v1/infer request.
type request struct {
	Prompt      string  `json:"prompt"`
	MaxTokens   int     `json:"max_tokens"`
	Temperature float32 `json:"temperature"`
}

// sample is one timed request.
type sample struct {
	ttft      time.Duration
	tokensOut int
	promptN   int
	cached    int // prompt tokens the worker's cache held (the end event's tokens_cached)
	text      string
	err       error
}

// infer sends one greedy request and times its first token.
func (w *runningWorker) infer(ctx context.Context, r request) sample {
	body, _ := json.Marshal(r)
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url+"/v1/infer", bytes.NewReader(body))
	if err != nil {
		return sample{err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+w.secret)
	resp, err := w.hc.Do(req)
	if err != nil {
		return sample{err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return sample{err: fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(b))}
	}
	var s sample
	var text strings.Builder
	ended := false
	err = sse.Read(resp.Body, 0, func(ev sse.Event) error {
		switch ev.Type {
		case "started":
			var st worker.StartedEvent
			if err := json.Unmarshal(ev.Data, &st); err != nil {
				return err
			}
			s.promptN = st.PromptTokens
		case "token":
			var tk worker.TokenEvent
			if err := json.Unmarshal(ev.Data, &tk); err != nil {
				return err
			}
			if s.ttft == 0 {
				s.ttft = time.Since(start)
			}
			text.WriteString(tk.Text)
		case "end":
			var end worker.EndEvent
			if err := json.Unmarshal(ev.Data, &end); err != nil {
				return err
			}
			s.tokensOut, s.cached, ended = end.TokensOut, end.TokensCached, true
		case "error":
			return fmt.Errorf("error event: %s", ev.Data)
		}
		return nil
	})
	if err == nil && !ended {
		err = errors.New("stream ended without an end event")
	}
	if err == nil && s.ttft == 0 {
		// No token at all (an immediate end of generation): the end is
		// the first answer.
		s.ttft = time.Since(start)
	}
	s.err, s.text = err, text.String()
	return s
}

// benchText is the vocabulary of the prompts: plain words that every
// tokenizer splits into a few tokens each.
var benchWords = strings.Fields("the quick brown fox jumps over a lazy dog while seven small birds sing in tall green trees near an old stone bridge")

// Prompt returns a prompt of about words words; seed makes prompts of
// different requests differ from their first word, so that no request
// reuses another's cached prefix.
func Prompt(seed, words int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Story %d:", seed)
	for i := 0; i < words; i++ {
		b.WriteByte(' ')
		b.WriteString(benchWords[(seed*7+i*3)%len(benchWords)])
	}
	return b.String()
}

// levelPromptWords keeps the level prompts short (about 30 tokens): the
// levels measure generation, not prefill.
const levelPromptWords = 16

// level runs n requests from c concurrent clients and returns them with
// the wall time they took; seed makes the prompts unique.
func (w *runningWorker) level(ctx context.Context, c, n, maxTokens, seed int) ([]sample, time.Duration) {
	next := make(chan int, n)
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	samples := make([]sample, n)
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < c; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range next {
				samples[k] = w.infer(ctx, request{Prompt: Prompt(seed+k, levelPromptWords), MaxTokens: maxTokens})
			}
		}()
	}
	wg.Wait()
	return samples, time.Since(start)
}

func genTokens(samples []sample) int {
	n := 0
	for _, s := range samples {
		if s.err == nil {
			n += s.tokensOut
		}
	}
	return n
}

// summarize builds a level's report from its samples of every round and
// each round's aggregate tokens per second (their median is reported).
func summarize(c int, samples []sample, tps []float64) Level {
	lv := Level{Concurrency: c, Requests: len(samples), Rounds: tps}
	var ttfts []time.Duration
	for _, s := range samples {
		if s.err != nil {
			if lv.Errors == 0 {
				lv.FirstError = s.err.Error()
			}
			lv.Errors++
			continue
		}
		ttfts = append(ttfts, s.ttft)
		lv.GenTokens += s.tokensOut
		lv.PromptTokens += float64(s.promptN)
	}
	if len(ttfts) > 0 {
		lv.PromptTokens /= float64(len(ttfts))
	}
	lv.TTFTMedianMs, lv.TTFTP95Ms = QuantileMs(ttfts, 0.5), QuantileMs(ttfts, 0.95)
	lv.TokensPerSecond = median(tps)
	return lv
}

// reuse times chat second turns: after a long first turn (words words),
// the second turn repeats it with the answer and a question; its
// counterpart is a prompt of the same words that starts differently, so
// no cache holds any of it.
func (w *runningWorker) reuse(ctx context.Context, words int) (Reuse, error) {
	r := Reuse{Trials: DefaultReuseTrials}
	var reused, cold []time.Duration
	for trial := 0; trial < DefaultReuseTrials; trial++ {
		first := Prompt(900000+trial, words)
		t1 := w.infer(ctx, request{Prompt: first, MaxTokens: 8})
		if t1.err != nil {
			return r, fmt.Errorf("servebench: first turn: %w", t1.err)
		}
		second := first + t1.text + " And then what happened next?"
		t2 := w.infer(ctx, request{Prompt: second, MaxTokens: 1})
		if t2.err != nil {
			return r, fmt.Errorf("servebench: second turn: %w", t2.err)
		}
		c := w.infer(ctx, request{Prompt: "Other " + second, MaxTokens: 1})
		if c.err != nil {
			return r, fmt.Errorf("servebench: cold second turn: %w", c.err)
		}
		r.FirstTurnPromptTokens, r.SecondTurnPromptTokens = t1.promptN, t2.promptN
		reused, cold = append(reused, t2.ttft), append(cold, c.ttft)
		if trial == 0 || t2.cached < r.ReusedCachedTokensMin {
			r.ReusedCachedTokensMin = t2.cached
		}
		r.ColdCachedTokensMax = max(r.ColdCachedTokensMax, c.cached)
	}
	r.ReusedTTFTMedianMs, r.ColdTTFTMedianMs = QuantileMs(reused, 0.5), QuantileMs(cold, 0.5)
	if r.ReusedTTFTMedianMs > 0 {
		r.Speedup = r.ColdTTFTMedianMs / r.ReusedTTFTMedianMs
	}
	return r, nil
}

// median returns the median of v (the mean of the middle two for an even
// count), 0 for none.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// QuantileMs returns the q-quantile of ds (nearest rank) in milliseconds.
func QuantileMs(ds []time.Duration, q float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := min(len(s)-1, int(q*float64(len(s))))
	return float64(s[i].Microseconds()) / 1000
}
