package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/internal/membw"
	"github.com/rbee-project/rbee/node"
	"github.com/rbee-project/rbee/node/localcluster"
	"github.com/rbee-project/rbee/worker"
	"github.com/rbee-project/rbee/worker/process"
)

// shardRun is one measured request: prompt processing and generation
// rates as the node reports them (tokens in over the time to the first
// token; the worker's generation rate).
type shardRun struct {
	PromptTPS float64 `json:"pp_tokens_per_second"`
	GenTPS    float64 `json:"gen_tokens_per_second"`
	TokensIn  int     `json:"tokens_in"`
	TokensOut int     `json:"tokens_out"`
}

// shardSide is the medians of one side's rounds.
type shardSide struct {
	WorkerID  string     `json:"worker_id"`
	PromptTPS float64    `json:"pp_tokens_per_second"`
	GenTPS    float64    `json:"gen_tokens_per_second"`
	Rounds    []shardRun `json:"rounds"`
}

func (s *shardSide) summarize() {
	pp := make([]float64, len(s.Rounds))
	gen := make([]float64, len(s.Rounds))
	for i, r := range s.Rounds {
		pp[i], gen[i] = r.PromptTPS, r.GenTPS
	}
	s.PromptTPS, s.GenTPS = median(pp), median(gen)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// benchPrompt is a prompt of about words words; round changes its first
// word so that no round reuses another's cached prefix.
func benchPrompt(words, round int) string {
	base := strings.Fields("the quick brown fox jumps over the lazy dog while a small bird sings in the old oak tree near the river")
	var b strings.Builder
	fmt.Fprintf(&b, "Round %d:", round)
	for i := 0; i < words; i++ {
		b.WriteString(" ")
		b.WriteString(base[i%len(base)])
	}
	return b.String()
}

// headInfo reads a worker's /v1/info on its node's machine (the bench acts
// as its node, with the secret from the node's process table).
func headInfo(ctx context.Context, n *localcluster.Node, workerID string) (worker.Info, error) {
	var procs api.ProcessListResult
	if err := n.Client().Result(ctx, api.ProcessListRequest{}, &procs, nil); err != nil {
		return worker.Info{}, err
	}
	port := 0
	for _, p := range procs.Processes {
		if p.WorkerID == workerID {
			port = p.Port
		}
	}
	secrets, err := process.ReadSecrets(node.ProcessesDir(n.DataDir))
	if err != nil || port == 0 {
		return worker.Info{}, fmt.Errorf("worker %s on %s: port %d: %v", workerID, n.Name, port, err)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/v1/info", port), nil)
	req.Header.Set("Authorization", "Bearer "+secrets[workerID])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return worker.Info{}, err
	}
	defer resp.Body.Close()
	var in worker.Info
	return in, json.NewDecoder(resp.Body).Decode(&in)
}

func newBenchShardCmd(g *globals) *cobra.Command {
	var model, mode string
	var shards, threads, rounds, promptWords, genTokens int
	var probe time.Duration
	cmd := &cobra.Command{
		Use:   "shard --model M",
		Short: "Generation and prompt-processing tokens/s of a sharded group (one rbee node process per shard on loopback) against one unsharded worker, the time per layer spent in the exchanges, and how the head reached the other shards (links: redirected to their stage ports, bridged through the nodes); JSON",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if model == "" {
				return fmt.Errorf("--model is required (a GGUF path or a model reference)")
			}
			if shards < 2 || rounds < 1 || promptWords < 1 || genTokens < 1 {
				return fmt.Errorf("--shards must be 2 or more, --rounds, --prompt-words and --gen-tokens 1 or more")
			}
			if probe < 0 {
				return fmt.Errorf("--memory-probe must be 0 (off) or more")
			}
			ctx := cmd.Context()
			cl, cleanup, err := startBenchCluster(ctx, shards)
			if err != nil {
				return err
			}
			defer cleanup()
			head := cl.Nodes[0]
			var hives []string
			for _, n := range cl.Nodes {
				hives = append(hives, n.Name)
			}
			fmt.Fprintf(os.Stderr, "spawning one worker (%d thread(s)) and a %s group of %d shards on %s\n", threads, mode, shards, strings.Join(hives, ", "))
			var single api.SpawnResult
			if err := head.Client().Result(ctx, api.WorkerSpawnRequest{OnHive: api.OnHive{Hive: head.Name}, Model: model, Threads: threads, Slots: 1}, &single, nil); err != nil {
				return fmt.Errorf("spawn the single worker: %w", err)
			}
			var group api.GroupSpawnResult
			if err := head.Client().Result(ctx, api.WorkerSpawnRequest{OnHive: api.OnHive{Hive: head.Name}, Model: model, Threads: threads, Slots: 1,
				Shards: shards, Hives: hives, Mode: mode}, &group, nil); err != nil {
				return fmt.Errorf("spawn the group: %w", err)
			}
			measure := func(workerID string, round int) (shardRun, error) {
				var res api.InferResult
				temp := float32(0)
				prompt := benchPrompt(promptWords, round)
				err := head.Client().Result(ctx, api.InferRequest{WorkerID: workerID, Prompt: &prompt, MaxTokens: genTokens, Temperature: &temp}, &res, nil)
				if err != nil {
					return shardRun{}, err
				}
				r := shardRun{GenTPS: res.TPS, TokensIn: res.TokensIn, TokensOut: res.TokensOut}
				if res.TTFTMs > 0 {
					r.PromptTPS = float64(res.TokensIn) / (res.TTFTMs / 1000)
				}
				return r, nil
			}
			// Warm up both (page in the weights), then alternate the two
			// sides round by round so that a noisy machine hurts both alike.
			for _, id := range []string{single.WorkerID, group.WorkerID} {
				if _, err := measure(id, -1); err != nil {
					return fmt.Errorf("warm-up of %s: %w", id, err)
				}
			}
			before, err := headInfo(ctx, head, group.WorkerID)
			if err != nil {
				return fmt.Errorf("group head info: %w", err)
			}
			// What the machine's memory gives, measured before each round:
			// the single worker's threads streaming at once (--threads, or
			// one a core for 0), then every shard's, up to one a core (more
			// would only share CPU time). On a shared VM it changes from
			// one moment to the next, and the group's ratio with it (see
			// internal/membw).
			from := threads
			if from < 1 {
				from = runtime.NumCPU()
			}
			to := min(shards*from, runtime.GOMAXPROCS(0))
			var mem *membw.Probe
			if probe > 0 && to > from {
				if mem, err = membw.New(to, membw.DefaultBytes); err != nil {
					return err
				}
			}
			var memRounds []membw.Scaling
			one := shardSide{WorkerID: single.WorkerID}
			grp := shardSide{WorkerID: group.WorkerID}
			for r := 0; r < rounds; r++ {
				memNote := ""
				if mem != nil {
					sc, err := mem.Scale(ctx, from, to, probe)
					if err != nil {
						return fmt.Errorf("memory probe: %w", err)
					}
					memRounds = append(memRounds, sc)
					memNote = fmt.Sprintf("; memory %.1f GB/s with %d thread(s), %.2f× that with %d", sc.From.BytesPerSecond/1e9, from, sc.Ratio, to)
				}
				a, err := measure(single.WorkerID, 2*r)
				if err != nil {
					return err
				}
				b, err := measure(group.WorkerID, 2*r+1)
				if err != nil {
					return err
				}
				one.Rounds, grp.Rounds = append(one.Rounds, a), append(grp.Rounds, b)
				fmt.Fprintf(os.Stderr, "round %d: single gen %.2f tok/s pp %.2f tok/s; group gen %.2f tok/s pp %.2f tok/s (%.2f×)%s\n", r+1, a.GenTPS, a.PromptTPS, b.GenTPS, b.PromptTPS, ratio(b.GenTPS, a.GenTPS), memNote)
			}
			after, err := headInfo(ctx, head, group.WorkerID)
			if err != nil {
				return fmt.Errorf("group head info: %w", err)
			}
			one.summarize()
			grp.summarize()
			ex := map[string]any{}
			if before.Exchanges != nil && after.Exchanges != nil {
				passes := after.Exchanges.Passes - before.Exchanges.Passes
				rt := after.Exchanges.RoundTripMs - before.Exchanges.RoundTripMs
				comp := after.Exchanges.ComputeMs - before.Exchanges.ComputeMs
				ex["passes"], ex["exchanges"] = passes, after.Exchanges.Exchanges-before.Exchanges.Exchanges
				ex["round_trip_ms"], ex["stage_compute_ms"] = rt, comp
				if passes > 0 && after.Exchanges.Layers > 0 {
					ex["per_pass_ms"] = rt / float64(passes)
					ex["per_layer_ms"] = rt / float64(passes) / float64(after.Exchanges.Layers)
					ex["exchange_only_per_layer_ms"] = (rt - comp) / float64(passes) / float64(after.Exchanges.Layers)
				}
				ex["layers"] = after.Exchanges.Layers
			}
			// How the head reached the other shards: redirected to their
			// workers' stage ports (a redirect whose connection failed
			// falls back and counts as bridged too), or through the nodes.
			links := map[string]float64{}
			for _, m := range []struct{ key, name string }{{"redirected", "rbee_shard_direct_redirects_total"}, {"bridged", "rbee_shard_bridged_links_total"}} {
				if v, ok := scrapeMetric(ctx, head, m.name); ok {
					links[m.key] = v
				}
			}
			out := map[string]any{
				"benchmark": "shard", "model": model, "mode": mode, "shards": shards, "threads": threads, "links": links,
				"prompt_tokens": grp.Rounds[0].TokensIn, "gen_tokens": genTokens, "rounds": rounds,
				"single": one, "group": grp, "group_id": group.Group.ID, "split": group.Group.Shards,
				"ratio":        map[string]float64{"gen": ratio(grp.GenTPS, one.GenTPS), "pp": ratio(grp.PromptTPS, one.PromptTPS)},
				"round_ratios": roundRatios(one.Rounds, grp.Rounds),
				"exchanges":    ex,
				"note":         "exchange times are the head's: time in exchanges per layer, waiting for the other shards' compute included; stage_compute_ms is what pipeline stages report (0 for a tensor group); memory.rounds[i] was measured just before round i (ratio: the memory's rate with every shard's threads over the single worker's; a shared machine can change within a round, so read the spread over the run, not round by round)",
			}
			if len(memRounds) > 0 {
				ratios := make([]float64, len(memRounds))
				for i, m := range memRounds {
					ratios[i] = m.Ratio
				}
				out["memory"] = map[string]any{"probe_seconds": probe.Seconds(), "rounds": memRounds, "ratio": median(ratios)}
			}
			return printJSON(cmd.OutOrStdout(), out)
		},
	}
	f := cmd.Flags()
	f.StringVar(&model, "model", "", "the model: a GGUF path or a reference (every node runs on this machine)")
	f.StringVar(&mode, "mode", "tensor", "how the group splits the model: tensor or pipeline")
	f.IntVar(&shards, "shards", 2, "shards, one rbee node process each")
	f.IntVar(&threads, "threads", 1, "threads of each worker")
	f.IntVar(&rounds, "rounds", 3, "measured requests per side")
	f.IntVar(&promptWords, "prompt-words", 48, "words of each prompt")
	f.IntVar(&genTokens, "gen-tokens", 32, "tokens generated per request")
	f.DurationVar(&probe, "memory-probe", 300*time.Millisecond, "before each round, how long to measure the memory bandwidth of the single worker's threads and of every shard's threads at once, up to one a core (what the machine allows the group; 0: off)")
	return cmd
}

// roundRatios is each round's group generation rate over the single
// worker's of the same round.
func roundRatios(single, group []shardRun) []float64 {
	out := make([]float64, 0, len(group))
	for i := range group {
		if i < len(single) {
			out = append(out, ratio(group[i].GenTPS, single[i].GenTPS))
		}
	}
	return out
}
