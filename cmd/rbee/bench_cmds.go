package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/internal/cputime"
	"github.com/rbee-project/rbee/internal/localcopy"
	"github.com/rbee-project/rbee/internal/sse"
	modelcat "github.com/rbee-project/rbee/model/catalog"
	"github.com/rbee-project/rbee/model/quant"
	"github.com/rbee-project/rbee/model/synth"
	"github.com/rbee-project/rbee/node"
	"github.com/rbee-project/rbee/node/localcluster"
	"github.com/rbee-project/rbee/worker/process"
	"github.com/rbee-project/rbee/worker/servebench"
)

// startBenchCluster starts n local node processes in a temp dir.
func startBenchCluster(ctx context.Context, n int, setup ...func(*localcluster.Cluster)) (*localcluster.Cluster, func(), error) {
	bin, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	dir, err := os.MkdirTemp("", "rbee-bench-")
	if err != nil {
		return nil, nil, err
	}
	cl, err := localcluster.New(localcluster.Config{Binary: bin, Dir: dir, Nodes: n, Profile: "local"})
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	cleanup := func() { cl.Close(); os.RemoveAll(dir) }
	for _, f := range setup {
		f(cl)
	}
	if err := cl.Start(ctx); err != nil {
		cleanup()
		return nil, nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if _, err := cl.WaitConverged(wctx, n); err != nil {
		cleanup()
		return nil, nil, err
	}
	return cl, cleanup, nil
}

// routeSample is one streamed completion.
type routeSample struct {
	ttft   time.Duration
	total  time.Duration
	tokens int
	// promptTokens and cachedTokens are the usage's, when the request
	// asked for it (stream_options.include_usage).
	promptTokens, cachedTokens int
	err                        error
}

// streamCompletion sends one streaming /v1/completions request and times
// its first token and its end.
func streamCompletion(ctx context.Context, hc *http.Client, url, bearer string, body []byte) routeSample {
	start := time.Now()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/completions", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return routeSample{err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return routeSample{err: fmt.Errorf("%s: %s", resp.Status, b)}
	}
	s := routeSample{}
	s.err = sse.Read(resp.Body, 0, func(ev sse.Event) error {
		if string(ev.Data) == "[DONE]" {
			return nil
		}
		var chunk struct {
			Choices []struct {
				Text string `json:"text"`
			} `json:"choices"`
			Usage *struct {
				PromptTokens int `json:"prompt_tokens"`
				Details      struct {
					CachedTokens int `json:"cached_tokens"`
				} `json:"prompt_tokens_details"`
			} `json:"usage"`
		}
		if json.Unmarshal(ev.Data, &chunk) != nil {
			return nil
		}
		if u := chunk.Usage; u != nil {
			s.promptTokens, s.cachedTokens = u.PromptTokens, u.Details.CachedTokens
		}
		if len(chunk.Choices) == 0 {
			return nil
		}
		if s.tokens == 0 {
			s.ttft = time.Since(start)
		}
		s.tokens++
		return nil
	})
	s.total = time.Since(start)
	return s
}

type routeStats struct {
	Requests     int     `json:"requests"`
	Errors       int     `json:"errors"`
	TTFTMedianMs float64 `json:"ttft_median_ms"`
	TTFTP95Ms    float64 `json:"ttft_p95_ms"`
	TokensPerSec float64 `json:"tokens_per_second"`
}

func runRoute(ctx context.Context, url, bearer string, c, r int, body []byte) routeStats {
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: c + 4}}
	var mu sync.Mutex
	var samples []routeSample
	next := make(chan struct{}, r)
	for i := 0; i < r; i++ {
		next <- struct{}{}
	}
	close(next)
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < c; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				s := streamCompletion(ctx, hc, url, bearer, body)
				mu.Lock()
				samples = append(samples, s)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	st := routeStats{Requests: len(samples)}
	var ttfts []time.Duration
	tokens := 0
	for _, s := range samples {
		if s.err != nil {
			st.Errors++
			continue
		}
		ttfts = append(ttfts, s.ttft)
		tokens += s.tokens
	}
	if len(ttfts) > 0 {
		sort.Slice(ttfts, func(a, b int) bool { return ttfts[a] < ttfts[b] })
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		st.TTFTMedianMs = ms(ttfts[len(ttfts)/2])
		st.TTFTP95Ms = ms(ttfts[min(len(ttfts)-1, int(0.95*float64(len(ttfts))))])
	}
	st.TokensPerSec = float64(tokens) / wall.Seconds()
	return st
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func newBenchRouteCmd(g *globals) *cobra.Command {
	var concurrency []int
	var requests, maxTokens, slots int
	cmd := &cobra.Command{
		Use:   "route",
		Short: "Time to first token and tokens/s straight to a worker, through its node, and through another node (the libp2p hop); JSON",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if requests < 1 || maxTokens < 1 || slots < 0 {
				return fmt.Errorf("--requests and --max-tokens must be 1 or more, --slots 0 (the worker's default) or more")
			}
			for _, c := range concurrency {
				if c < 1 {
					return fmt.Errorf("--concurrency %d: want 1 or more clients", c)
				}
			}
			ctx := cmd.Context()
			cl, cleanup, err := startBenchCluster(ctx, 2)
			if err != nil {
				return err
			}
			defer cleanup()
			own, other := cl.Nodes[1], cl.Nodes[0]
			maxC := 1
			for _, c := range concurrency {
				maxC = max(maxC, c)
			}
			var sp api.SpawnResult
			req := api.WorkerSpawnRequest{OnHive: api.OnHive{Hive: own.Name}, Model: "builtin:stories260k", Slots: slots, Queue: maxC * 2}
			if err := own.Client().Result(ctx, req, &sp, nil); err != nil {
				return fmt.Errorf("spawn worker: %w", err)
			}
			direct := fmt.Sprintf("http://127.0.0.1:%d", sp.Port)
			// The worker answers its node only: the benchmark acts as the
			// node, with the secret from the node's process table.
			secrets, err := process.ReadSecrets(node.ProcessesDir(own.DataDir))
			if err != nil {
				return fmt.Errorf("worker secret: %w", err)
			}
			secret := secrets[sp.WorkerID]
			body, _ := json.Marshal(map[string]any{"model": "stories260k", "prompt": "Once upon a time", "max_tokens": maxTokens, "temperature": 0, "stream": true})
			// Warm up every path (connections, the other node's replica).
			for _, u := range []string{direct, own.URL(), other.URL()} {
				deadline := time.Now().Add(30 * time.Second)
				bearer := ""
				if u == direct {
					bearer = secret
				}
				for streamCompletion(ctx, http.DefaultClient, u, bearer, body).err != nil {
					if time.Now().After(deadline) {
						return fmt.Errorf("path %s never answered", u)
					}
					time.Sleep(100 * time.Millisecond)
				}
			}
			type row struct {
				Concurrency int                `json:"concurrency"`
				Direct      routeStats         `json:"direct"`
				OwnNode     routeStats         `json:"own_node"`
				OtherNode   routeStats         `json:"other_node"`
				Ratios      map[string]float64 `json:"ratio_to_direct"`
			}
			var rows []row
			for _, c := range concurrency {
				r := row{Concurrency: c}
				r.Direct = runRoute(ctx, direct, secret, c, requests, body)
				r.OwnNode = runRoute(ctx, own.URL(), "", c, requests, body)
				r.OtherNode = runRoute(ctx, other.URL(), "", c, requests, body)
				r.Ratios = map[string]float64{
					"own_node_ttft":       ratio(r.OwnNode.TTFTMedianMs, r.Direct.TTFTMedianMs),
					"other_node_ttft":     ratio(r.OtherNode.TTFTMedianMs, r.Direct.TTFTMedianMs),
					"own_node_tps":        ratio(r.OwnNode.TokensPerSec, r.Direct.TokensPerSec),
					"other_node_tps":      ratio(r.OtherNode.TokensPerSec, r.Direct.TokensPerSec),
					"hop_added_ttft_ms":   r.OtherNode.TTFTMedianMs - r.Direct.TTFTMedianMs,
					"own_added_ttft_ms":   r.OwnNode.TTFTMedianMs - r.Direct.TTFTMedianMs,
					"other_node_tps_loss": 1 - ratio(r.OtherNode.TokensPerSec, r.Direct.TokensPerSec),
				}
				rows = append(rows, r)
				fmt.Fprintf(os.Stderr, "concurrency %d: ttft direct %.2f ms, own node %.2f ms, other node %.2f ms\n", c, r.Direct.TTFTMedianMs, r.OwnNode.TTFTMedianMs, r.OtherNode.TTFTMedianMs)
			}
			return printJSON(cmd.OutOrStdout(), map[string]any{"benchmark": "route", "model": "builtin:stories260k",
				"requests": requests, "max_tokens": maxTokens, "slots": slots, "results": rows})
		},
	}
	cmd.Flags().IntSliceVar(&concurrency, "concurrency", []int{1, 64}, "concurrent clients (repeatable)")
	cmd.Flags().IntVar(&requests, "requests", 200, "requests per path and concurrency")
	cmd.Flags().IntVar(&maxTokens, "max-tokens", 32, "tokens per request")
	cmd.Flags().IntVar(&slots, "slots", 4, "worker slots")
	return cmd
}

// transferRound is one round of bench transfer.
type transferRound struct {
	LocalMiBps  float64 `json:"local_mib_per_s"`
	PeerMiBps   float64 `json:"peer_mib_per_s"`
	Ratio       float64 `json:"ratio_peer_to_local"`
	LocalCPUNsB float64 `json:"local_cpu_ns_per_byte"`
	PeerCPUNsB  float64 `json:"peer_cpu_ns_per_byte,omitempty"`
	LoadAvg     string  `json:"loadavg,omitempty"`
}

// transferPhase is one path's rounds and their medians.
type transferPhase struct {
	Path   string          `json:"path"`
	Rounds []transferRound `json:"rounds"`
	Median transferRound   `json:"median"`
	// DirectTransfers is node1's rbee_blob_direct_transfers_total at the
	// end of the phase.
	DirectTransfers int `json:"direct_transfers"`
}

func newBenchTransferCmd(g *globals) *cobra.Command {
	var sizeMB, rounds int
	var profileDir string
	cmd := &cobra.Command{
		Use:   "transfer",
		Short: "Throughput of a peer model copy (the direct TLS path, then the libp2p stream) next to a plain local file copy of the same file, several rounds, medians (JSON)",
		Long: `Copies one synthetic model of --size-mb from node1 to node2 of a local
two-node cluster, sha256-verified, fsynced and added to the catalog, and, in
the same round, the same file locally (io.Copy + fsync). It runs two phases:
"direct", the default path (TLS 1.3 to node1's blob port, offered over
libp2p), then "libp2p", with node1 restarted with --blob-addr off so the
bytes cross the libp2p stream (TCP + private network + Noise + yamux).
Each round reports both rates, their ratio, the CPU time per byte (both
node processes for the peer copy; this process for the local one: it does
not depend on the machine's load, the rates do) and /proc/loadavg. Each
phase's summary holds its medians. --cpu-profile DIR writes each node's
CPU profile per phase there.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if sizeMB < 1 || sizeMB > 8192 {
				return fmt.Errorf("--size-mb must be 1..8192")
			}
			if rounds < 1 || rounds > 100 {
				return fmt.Errorf("--rounds must be 1..100")
			}
			ctx := cmd.Context()
			tmp, err := os.MkdirTemp("", "rbee-bench-transfer-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(tmp)
			// A valid GGUF of about the requested size: the tied f32
			// embedding dominates (vocab x 1024 x 4 bytes).
			cfg := synth.DefaultConfig()
			cfg.Dim, cfg.Layers, cfg.Heads, cfg.KVHeads, cfg.FF, cfg.Type = 1024, 1, 8, 8, 1024, quant.F32
			cfg.Vocab = max(synth.MinVocab, sizeMB<<20/(1024*4))
			src := filepath.Join(tmp, "transfer.gguf")
			if err := synth.Write(src, cfg); err != nil {
				return err
			}
			st, err := os.Stat(src)
			if err != nil {
				return err
			}
			sum, err := fileSHA(src)
			if err != nil {
				return err
			}
			if profileDir != "" {
				if err := os.MkdirAll(profileDir, 0o755); err != nil {
					return err
				}
			}
			profile := func(n *localcluster.Node, phase string) {
				if profileDir != "" {
					n.ExtraArgs = append(n.ExtraArgs, "--cpu-profile", filepath.Join(profileDir, phase+"-"+n.Name+".cpu.pprof"))
				}
			}
			cl, cleanup, err := startBenchCluster(ctx, 2, func(c *localcluster.Cluster) {
				for _, n := range c.Nodes {
					profile(n, "direct")
				}
			})
			if err != nil {
				return err
			}
			defer cleanup()
			var e api.Model
			if err := cl.Nodes[0].Client().Result(ctx, api.ModelDownloadRequest{Model: src}, &e, nil); err != nil {
				return fmt.Errorf("catalog on node1: %w", err)
			}
			t := transferBench{cl: cl, src: src, tmp: tmp, sum: sum, size: st.Size()}
			direct, err := t.phase(ctx, "direct", rounds)
			if err != nil {
				return err
			}
			// Restart both nodes: node1 without its blob port, and both to
			// close the profiles of the first phase.
			for _, n := range cl.Nodes {
				if err := cl.Stop(n); err != nil {
					return err
				}
			}
			for i, n := range cl.Nodes {
				n.ExtraArgs = nil
				profile(n, "libp2p")
				if i == 0 {
					n.ExtraArgs = append(n.ExtraArgs, "--blob-addr", "off")
				}
				if err := cl.StartNode(ctx, n, nil); err != nil {
					return err
				}
				if err := localcluster.WaitHealthy(ctx, n); err != nil {
					return fmt.Errorf("%s: %w (log: %s)", n.Name, err, n.LogPath)
				}
			}
			wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
			defer cancel()
			if _, err := cl.WaitConverged(wctx, 2); err != nil {
				return err
			}
			stream, err := t.phase(ctx, "libp2p", rounds)
			if err != nil {
				return err
			}
			if profileDir != "" {
				for _, n := range cl.Nodes {
					_ = cl.Stop(n)
				}
			}
			return printJSON(cmd.OutOrStdout(), map[string]any{
				"benchmark": "transfer", "bytes": st.Size(), "phases": []transferPhase{direct, stream},
				"direct_over_libp2p": direct.Median.PeerMiBps / stream.Median.PeerMiBps,
				"note":               "the peer copy includes the request, sha256 verification, fsync and the atomic catalog add; peer CPU is both node processes (10 ms resolution)",
			})
		},
	}
	cmd.Flags().IntVar(&sizeMB, "size-mb", 256, "file size in MiB")
	cmd.Flags().IntVar(&rounds, "rounds", 3, "rounds per phase (each: one local copy, one peer copy); each phase's summary holds the medians")
	cmd.Flags().StringVar(&profileDir, "cpu-profile", "", "write each node's CPU profile per phase to this directory")
	return cmd
}

// transferBench is one bench transfer run: node1 holds the file.
type transferBench struct {
	cl            *localcluster.Cluster
	src, tmp, sum string
	size          int64
}

// phase waits until node2 knows node1 holds the file, then runs rounds
// of a local copy and a peer copy from node1 to node2.
func (t transferBench) phase(ctx context.Context, path string, rounds int) (transferPhase, error) {
	cl := t.cl
	for deadline := time.Now().Add(30 * time.Second); ; {
		var all api.ClusterModelListResult
		_ = cl.Nodes[1].Client().Result(ctx, api.ModelListRequest{All: true}, &all, nil)
		found := false
		for _, m := range all.Models {
			found = found || m.SHA256 == t.sum
		}
		if found {
			break
		}
		if time.Now().After(deadline) {
			return transferPhase{}, fmt.Errorf("node2 never learned that node1 holds the file")
		}
		time.Sleep(50 * time.Millisecond)
	}
	nodesCPU := func() (time.Duration, bool) {
		var total time.Duration
		for _, n := range cl.Nodes {
			d, err := cputime.Process(n.PID())
			if err != nil {
				return 0, false
			}
			total += d
		}
		return total, true
	}
	mibps := func(d time.Duration) float64 { return float64(t.size) / (1 << 20) / d.Seconds() }
	perByte := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(t.size) }
	ph := transferPhase{Path: path}
	for range rounds {
		var r transferRound
		if b, err := os.ReadFile("/proc/loadavg"); err == nil {
			r.LoadAvg = strings.Join(strings.Fields(string(b))[:3], " ")
		}
		// Baseline: a plain local copy of the same file.
		dst := filepath.Join(t.tmp, "copy.gguf")
		c0, _ := cputime.Self()
		t0 := time.Now()
		if err := localcopy.Copy(t.src, dst); err != nil {
			return ph, err
		}
		local := time.Since(t0)
		c1, _ := cputime.Self()
		if err := os.Remove(dst); err != nil {
			return ph, err
		}
		r.LocalMiBps, r.LocalCPUNsB = mibps(local), perByte(c1-c0)

		// The origin is unreachable on purpose: the bytes must come from the peer.
		ref := "http://127.0.0.1:9/transfer.gguf#sha256=" + t.sum
		var e2 api.Model
		p0, cpuOK := nodesCPU()
		t1 := time.Now()
		if err := cl.Nodes[1].Client().Result(ctx, api.ModelDownloadRequest{Model: ref}, &e2, nil); err != nil {
			return ph, fmt.Errorf("peer copy: %w", err)
		}
		peer := time.Since(t1)
		if p1, ok := nodesCPU(); ok && cpuOK {
			r.PeerCPUNsB = perByte(p1 - p0)
		}
		if e2.SHA256 != t.sum || e2.Source != modelcat.SourcePeer {
			return ph, fmt.Errorf("peer copy has sha256 %s from %s, want %s from a peer", e2.SHA256, e2.Source, t.sum)
		}
		r.PeerMiBps = mibps(peer)
		r.Ratio = r.PeerMiBps / r.LocalMiBps
		ph.Rounds = append(ph.Rounds, r)
		if err := cl.Nodes[1].Client().Result(ctx, api.ModelDeleteRequest{ID: e2.ID}, nil, nil); err != nil {
			return ph, fmt.Errorf("deleting the copy: %w", err)
		}
	}
	pick := func(f func(transferRound) float64) float64 {
		v := make([]float64, len(ph.Rounds))
		for i, r := range ph.Rounds {
			v[i] = f(r)
		}
		sort.Float64s(v)
		return v[len(v)/2]
	}
	// Which path the bytes took: node1's count of copies served over its
	// blob port (0 in the libp2p phase, where the port is off).
	if v, ok := scrapeMetric(ctx, cl.Nodes[0], "rbee_blob_direct_transfers_total"); ok {
		ph.DirectTransfers = int(v)
	}
	if path == "direct" && ph.DirectTransfers != rounds {
		return ph, fmt.Errorf("the direct phase served %d of %d copies over the blob port", ph.DirectTransfers, rounds)
	}
	ph.Median = transferRound{
		LocalMiBps:  pick(func(r transferRound) float64 { return r.LocalMiBps }),
		PeerMiBps:   pick(func(r transferRound) float64 { return r.PeerMiBps }),
		Ratio:       pick(func(r transferRound) float64 { return r.Ratio }),
		LocalCPUNsB: pick(func(r transferRound) float64 { return r.LocalCPUNsB }),
		PeerCPUNsB:  pick(func(r transferRound) float64 { return r.PeerCPUNsB }),
	}
	return ph, nil
}

func fileSHA(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// newBenchServeCmd returns `serve`: continuous-batching throughput of a
// real worker process (package worker/servebench).
func newBenchServeCmd() *cobra.Command {
	cfg := servebench.Config{}
	var nodes, chats int
	cmd := &cobra.Command{
		Use:   "serve --model FILE.gguf [--concurrency N]... | --model FILE.gguf --nodes N",
		Short: "Aggregate generation tokens/s and time to first token of a worker at several concurrency levels, and the TTFT of a chat's second turn with and without prefix reuse; with --nodes, that second-turn TTFT through a local cluster with a worker per node, with prefix affinity and without (JSON)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cfg.Model == "" {
				return errors.New("--model is required")
			}
			if nodes == 1 || nodes < 0 || chats < 1 {
				return errors.New("--nodes must be 0 (a worker alone) or 2 or more, --chats 1 or more")
			}
			if nodes > 0 && cfg.ReuseWords < 1 {
				return errors.New("--nodes measures second turns: --reuse-words must be 1 or more")
			}
			// A flag the chosen measurement does not use is refused, not
			// silently dropped: the report would read as if it applied.
			if nodes > 0 {
				// The flags that only the measurement of a worker alone uses.
				for _, name := range []string{"concurrency", "max-tokens", "requests-per-client", "rounds", "kv-cache", "memory"} {
					if cmd.Flags().Changed(name) {
						return fmt.Errorf("--%s applies to a worker alone, not to --nodes", name)
					}
				}
			} else if cmd.Flags().Changed("chats") {
				return errors.New("--chats applies to --nodes only")
			}
			// Before any worker or cluster starts: a local cluster takes a
			// while to come up before its spawns would say the same.
			if fi, err := os.Stat(cfg.Model); err != nil || !fi.Mode().IsRegular() {
				return fmt.Errorf("--model %s is not a regular file", cfg.Model)
			}
			bin, err := os.Executable()
			if err != nil {
				return err
			}
			cfg.Binary = bin
			cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
			if nodes > 0 {
				res, err := benchServeNodes(cmd.Context(), cfg, nodes, chats, cfg.Logger)
				if err != nil {
					return err
				}
				return printJSON(cmd.OutOrStdout(), res)
			}
			res, err := servebench.Run(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), res)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Model, "model", "", "GGUF model file")
	localPaths(f, "model")
	f.IntSliceVar(&cfg.Concurrency, "concurrency", []int{1, 4, 8, 16}, "concurrent clients (repeatable)")
	f.IntVar(&cfg.Slots, "slots", 0, "worker slots (0: the largest concurrency)")
	f.IntVar(&cfg.Threads, "threads", 0, "worker compute threads (0: all cores)")
	f.IntVar(&cfg.MaxTokens, "max-tokens", servebench.DefaultMaxTokens, "tokens generated per request")
	f.IntVar(&cfg.RequestsPerClient, "requests-per-client", servebench.DefaultRequestsPerClient, "requests each client sends per level")
	f.IntVar(&cfg.Rounds, "rounds", 1, "times every level is run, interleaved (the median tokens/s is reported)")
	f.IntVar(&cfg.ReuseWords, "reuse-words", servebench.DefaultReuseWords, "words of the long first chat turn of the prefix-reuse measurement (-1: skip it)")
	f.StringVar(&cfg.KVCache, "kv-cache", "", "the worker's KV cache type: f16 (its default) or f32")
	f.BoolVar(&cfg.Memory, "memory", false, "also start a second worker of the model and report what the two map: RSS, PSS, the model pages they share (Linux)")
	f.IntVar(&nodes, "nodes", 0, "instead, start a local cluster of this many nodes (2 or more) with a worker of the model on each (--slots, default 4), send chats whose two turns reach random nodes, and report the second turn's TTFT with prefix affinity and without (--no-prefix-affinity)")
	f.IntVar(&chats, "chats", 12, "with --nodes: chats per run")
	return cmd
}
