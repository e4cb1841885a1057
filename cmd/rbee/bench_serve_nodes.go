package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"time"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/node/localcluster"
	"github.com/rbee-project/rbee/worker/servebench"
)

// nodesRun is one pass of `bench serve --nodes`: chats whose two turns
// reach random nodes of a local cluster, one worker of the model on each.
type nodesRun struct {
	PrefixAffinity bool `json:"prefix_affinity"`
	Chats          int  `json:"chats"`
	Errors         int  `json:"errors"`
	// SecondTurnTTFT* time the second turns, streamed through the node
	// they reached. Without affinity some meet their worker by chance,
	// some not, so the mean says more than the median.
	SecondTurnTTFTMeanMs   float64 `json:"second_turn_ttft_mean_ms"`
	SecondTurnTTFTMedianMs float64 `json:"second_turn_ttft_median_ms"`
	SecondTurnTTFTP90Ms    float64 `json:"second_turn_ttft_p90_ms"`
	SecondTurnPromptTokens int     `json:"second_turn_prompt_tokens"`
	// ReusedTurns counts the second turns whose worker held their first
	// turn (usage's cached tokens at least half the prompt).
	ReusedTurns int `json:"reused_turns"`
}

// nodesResult is `bench serve --nodes`' report.
type nodesResult struct {
	Benchmark string     `json:"benchmark"`
	Model     string     `json:"model"`
	Nodes     int        `json:"nodes"`
	Slots     int        `json:"slots"`
	Words     int        `json:"first_turn_words"`
	Runs      []nodesRun `json:"runs"`
	// Speedup is the mean second-turn TTFT without affinity over with.
	Speedup float64 `json:"speedup"`
}

// benchServeNodes measures what prefix affinity gains: a local cluster of
// nodes nodes, a worker of the model on each, runs chats whose first and
// second turns each reach a random node (as behind a load balancer), once
// with prefix affinity and once with the nodes run --no-prefix-affinity.
// The chats run one after another, so the workers are idle and only where
// a turn lands differs.
func benchServeNodes(ctx context.Context, cfg servebench.Config, nodes, chats int, log *slog.Logger) (nodesResult, error) {
	res := nodesResult{Benchmark: "serve-nodes", Model: cfg.Model, Nodes: nodes, Slots: cfg.Slots, Words: cfg.ReuseWords}
	if res.Slots == 0 {
		res.Slots = 4
	}
	model, err := filepath.Abs(cfg.Model)
	if err != nil {
		return res, err
	}
	for _, aff := range []bool{true, false} {
		r, err := serveNodesRun(ctx, model, res, chats, aff, cfg.Threads)
		if err != nil {
			return res, err
		}
		log.Info("run done", "prefix_affinity", aff, "second_turn_ttft_mean_ms", r.SecondTurnTTFTMeanMs, "reused_turns", r.ReusedTurns, "chats", r.Chats)
		res.Runs = append(res.Runs, r)
	}
	res.Speedup = ratio(res.Runs[1].SecondTurnTTFTMeanMs, res.Runs[0].SecondTurnTTFTMeanMs)
	return res, nil
}

func serveNodesRun(ctx context.Context, model string, res nodesResult, chats int, aff bool, threads int) (nodesRun, error) {
	r := nodesRun{PrefixAffinity: aff, Chats: chats}
	cl, cleanup, err := startBenchCluster(ctx, res.Nodes, func(c *localcluster.Cluster) {
		if !aff {
			for _, n := range c.Nodes {
				n.ExtraArgs = append(n.ExtraArgs, "--no-prefix-affinity")
			}
		}
	})
	if err != nil {
		return r, err
	}
	defer cleanup()
	name := ""
	for _, n := range cl.Nodes {
		var sp api.SpawnResult
		req := api.WorkerSpawnRequest{OnHive: api.OnHive{Hive: n.Name}, Model: model, Slots: res.Slots, Threads: threads}
		if err := n.Client().Result(ctx, req, &sp, nil); err != nil {
			return r, fmt.Errorf("spawn a worker on %s: %w", n.Name, err)
		}
		name = sp.Model
	}
	// Every node routes to every worker before the clock starts.
	for deadline := time.Now().Add(30 * time.Second); ; {
		ready := true
		for _, n := range cl.Nodes {
			var wl api.WorkerListResult
			k := 0
			if n.Client().Result(ctx, api.WorkerListRequest{}, &wl, nil) == nil {
				for _, w := range wl.Workers {
					if w.Schedulable {
						k++
					}
				}
			}
			ready = ready && k == len(cl.Nodes)
		}
		if ready {
			break
		}
		if time.Now().After(deadline) {
			return r, fmt.Errorf("the nodes did not all see %d workers in 30 s", len(cl.Nodes))
		}
		time.Sleep(100 * time.Millisecond)
	}
	body := func(prompt string, maxTokens int) []byte {
		b, _ := json.Marshal(map[string]any{"model": name, "prompt": prompt, "max_tokens": maxTokens, "temperature": 0, "stream": true,
			"stream_options": map[string]bool{"include_usage": true}})
		return b
	}
	for _, n := range cl.Nodes { // warm up: the first request maps the weights in
		if s := streamCompletion(ctx, http.DefaultClient, n.URL(), "", body("Warm up.", 2)); s.err != nil {
			return r, fmt.Errorf("warm-up request via %s: %w", n.Name, s.err)
		}
	}
	// The same draws in both runs: only the routing differs.
	rng := rand.New(rand.NewPCG(1, 2))
	var ttfts []time.Duration
	for i := range chats {
		first := servebench.Prompt(700000+i, res.Words)
		a, b := cl.Nodes[rng.IntN(len(cl.Nodes))], cl.Nodes[rng.IntN(len(cl.Nodes))]
		if s := streamCompletion(ctx, http.DefaultClient, a.URL(), "", body(first, 8)); s.err != nil {
			r.Errors++
			continue
		}
		s := streamCompletion(ctx, http.DefaultClient, b.URL(), "", body(first+" And then what happened next?", 1))
		if s.err != nil {
			r.Errors++
			continue
		}
		ttfts = append(ttfts, s.ttft)
		r.SecondTurnPromptTokens = s.promptTokens
		if 2*s.cachedTokens >= s.promptTokens {
			r.ReusedTurns++
		}
	}
	r.SecondTurnTTFTMedianMs, r.SecondTurnTTFTP90Ms = servebench.QuantileMs(ttfts, 0.5), servebench.QuantileMs(ttfts, 0.9)
	if len(ttfts) > 0 {
		var sum time.Duration
		for _, d := range ttfts {
			sum += d
		}
		r.SecondTurnTTFTMeanMs = float64((sum / time.Duration(len(ttfts))).Microseconds()) / 1000
	}
	return r, nil
}
