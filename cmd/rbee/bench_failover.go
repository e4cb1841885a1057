package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/node/localcluster"
)

// stats summarises durations in milliseconds.
type stats struct {
	Median float64   `json:"median"`
	P95    float64   `json:"p95"`
	Min    float64   `json:"min"`
	Max    float64   `json:"max"`
	Values []float64 `json:"values,omitempty"`
}

func summarize(ds []time.Duration) stats {
	if len(ds) == 0 {
		return stats{}
	}
	v := make([]float64, len(ds))
	for i, d := range ds {
		v[i] = float64(d.Microseconds()) / 1000
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	p := func(q float64) float64 {
		i := int(q*float64(len(s)-1) + 0.5)
		return s[i]
	}
	return stats{Median: p(0.5), P95: p(0.95), Min: s[0], Max: s[len(s)-1], Values: v}
}

func newBenchFailoverCmd(g *globals) *cobra.Command {
	var rounds, busy int
	var profile, keep string
	var watch time.Duration
	cmd := &cobra.Command{
		Use:   "failover",
		Short: "Start a local 3-node cluster, kill the leader N times, print time to a new leader and to the first accepted write (JSON)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if rounds < 0 || rounds > 100 {
				return fmt.Errorf("--rounds must be 0..100")
			}
			if busy < 0 || busy > runtime.NumCPU() {
				return fmt.Errorf("--busy-cores must be 0..%d", runtime.NumCPU())
			}
			if err := localcluster.CheckProfile(profile); err != nil {
				return fmt.Errorf("--profile: %w", err)
			}
			stopBusy := spinCores(busy)
			defer stopBusy()
			bin, err := os.Executable()
			if err != nil {
				return err
			}
			dir := keep
			if dir == "" {
				if dir, err = os.MkdirTemp("", "rbee-bench-failover-"); err != nil {
					return err
				}
				defer os.RemoveAll(dir)
			}
			ctx := cmd.Context()
			cl, err := localcluster.New(localcluster.Config{Binary: bin, Dir: dir, Nodes: 3, Profile: profile})
			if err != nil {
				return err
			}
			defer cl.Close()
			if err := cl.Start(ctx); err != nil {
				return err
			}
			wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
			_, err = cl.WaitConverged(wctx, 3)
			cancel()
			if err != nil {
				return err
			}
			var toLeader, toWrite []time.Duration
			for r := 0; r < rounds; r++ {
				fr, err := failoverRound(ctx, cl, 3, true)
				if err != nil {
					return fmt.Errorf("round %d: %w", r+1, err)
				}
				dl, dw := fr.toLeader, fr.toWrite
				toLeader, toWrite = append(toLeader, dl), append(toWrite, dw)
				fmt.Fprintf(os.Stderr, "round %d: new leader after %v, first write after %v\n", r+1, dl.Round(time.Millisecond), dw.Round(time.Millisecond))
			}
			out := map[string]any{
				"benchmark": "failover", "nodes": 3, "rounds": rounds, "profile": profile, "busy_cores": busy,
				"time_to_leader_ms": summarize(toLeader), "time_to_write_ms": summarize(toWrite),
			}
			if watch > 0 {
				changes, err := watchLeader(ctx, cl, watch)
				if err != nil {
					return err
				}
				out["watch_s"] = watch.Seconds()
				out["leader_changes"] = changes
			}
			return printJSON(cmd.OutOrStdout(), out)
		},
	}
	cmd.Flags().IntVar(&rounds, "rounds", 5, "how many times to kill the leader")
	cmd.Flags().StringVar(&profile, "profile", "lan", "timing profile of the nodes: lan (defaults) or local")
	cmd.Flags().StringVar(&keep, "dir", "", "keep data dirs and logs here (default: a temp dir, removed)")
	localPaths(cmd.Flags(), "dir")
	cmd.Flags().IntVar(&busy, "busy-cores", 0, "keep this many cores busy with a spinning thread of this process while measuring (a browser starting, a build)")
	cmd.Flags().DurationVar(&watch, "watch", 0, "after the rounds, watch the idle cluster this long and count leader changes (spurious elections)")
	return cmd
}

// spinCores keeps n cores busy (one locked thread each) until the
// returned func is called.
func spinCores(n int) (stop func()) {
	var quit atomic.Bool
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			x := 0
			for !quit.Load() {
				for i := 0; i < 1<<16; i++ {
					x += i
				}
			}
			_ = x
		}()
	}
	return func() { quit.Store(true); wg.Wait() }
}

// watchLeader polls every node's status for d and returns the most leader
// changes one node saw (a spell without a leader, then a leader again,
// counts as one).
func watchLeader(ctx context.Context, cl *localcluster.Cluster, d time.Duration) (int, error) {
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	first, err := cl.WaitConverged(wctx, 3)
	cancel()
	if err != nil {
		return 0, err
	}
	last := map[string]string{}
	for _, n := range cl.Nodes {
		last[n.Name] = first
	}
	seen := map[string]int{}
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		for _, n := range cl.Nodes {
			sctx, c := context.WithTimeout(ctx, 2*time.Second)
			st, err := localcluster.GetStatus(sctx, n)
			c()
			if err != nil || st.Leader == last[n.Name] {
				continue
			}
			{
				fmt.Fprintf(os.Stderr, "%s: %s sees leader %q (was %q)\n", time.Now().Format(time.TimeOnly), n.Name, st.Leader, last[n.Name])
			}
			if st.Leader != "" {
				seen[n.Name]++
			}
			last[n.Name] = st.Leader
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	most := 0
	for _, c := range seen {
		most = max(most, c)
	}
	return most, nil
}

// failoverResult is what one failover round measured, from the kill.
type failoverResult struct {
	// toLeader: the first surviving node (in start order) reports a new
	// leader; toLeaderLast: the last node does (at more than MaxVoters
	// nodes a non-voter, which learns the leader only from its first
	// append). toWrite: the first survivor's first accepted registry write.
	toLeader, toLeaderLast, toWrite time.Duration
}

// failoverRound kills the leader of a cluster that has converged on
// voters alive voters and measures; with restart it then restarts the
// victim and waits until it answers again.
func failoverRound(ctx context.Context, cl *localcluster.Cluster, voters int, restart bool) (failoverResult, error) {
	var res failoverResult
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	leaderName, err := cl.WaitConverged(wctx, voters)
	if err != nil {
		return res, err
	}
	victim := cl.ByName(leaderName)
	var survivor, last *localcluster.Node
	for _, n := range cl.Nodes {
		if n == victim {
			continue
		}
		if survivor == nil {
			survivor = n
		}
		last = n
	}
	sees := func(n *localcluster.Node) bool {
		sctx, c := context.WithTimeout(wctx, time.Second)
		defer c()
		st, err := localcluster.GetStatus(sctx, n)
		return err == nil && st.Leader != "" && st.Leader != leaderName
	}
	t0 := time.Now()
	if err := cl.Kill(victim); err != nil {
		return res, err
	}
	for res.toLeader == 0 || res.toLeaderLast == 0 {
		if res.toLeader == 0 && sees(survivor) {
			res.toLeader = time.Since(t0)
		}
		if res.toLeaderLast == 0 && sees(last) {
			res.toLeaderLast = time.Since(t0)
		}
		if wctx.Err() != nil {
			return res, fmt.Errorf("no new leader: %w", wctx.Err())
		}
		time.Sleep(5 * time.Millisecond)
	}
	for {
		sctx, c := context.WithTimeout(wctx, 5*time.Second)
		err := survivor.Client().Result(sctx, api.HiveRefreshCapabilitiesRequest{OnHive: api.OnHive{Hive: survivor.Name}}, nil, nil)
		c()
		if err == nil {
			res.toWrite = time.Since(t0)
			break
		}
		if wctx.Err() != nil {
			return res, fmt.Errorf("no write accepted: %w", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !restart {
		return res, nil
	}
	// victimRestart bounds the victim's restart: a loaded machine (100
	// nodes with 500 workers on two cores) took 46 s to bring one up.
	const victimRestart = 2 * time.Minute
	rctx, cancel := context.WithTimeout(ctx, victimRestart)
	defer cancel()
	if err := cl.StartNode(rctx, victim, nil); err != nil {
		return res, fmt.Errorf("restart %s: %w", victim.Name, err)
	}
	if err := localcluster.WaitHealthy(rctx, victim); err != nil {
		return res, fmt.Errorf("restart %s: %w", victim.Name, err)
	}
	return res, nil
}
