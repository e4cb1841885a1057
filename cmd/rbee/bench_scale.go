package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/internal/cputime"
	"github.com/rbee-project/rbee/internal/promtext"
	"github.com/rbee-project/rbee/node/localcluster"
)

// maxScaleProcesses bounds --nodes: each node process takes ~35 MB and a
// share of the CPU; past a few hundred a single machine measures its own
// overload, not rbee (the in-process simulation covers larger counts).
const maxScaleProcesses = 300

// minScaleIdle bounds --idle from below: idle CPU and gossip bytes/s are
// a difference of two readings divided by the time between them, and
// under a second that is mostly the readings' own jitter (a node's CPU
// time moves in 10 ms ticks, gossip by whole packets).
const minScaleIdle = time.Second

// rssEvery: how often each node's RSS is sampled through the idle window
// (at most half of it, so that there is a sample).
const rssEvery = 5 * time.Second

// maxVoters mirrors consensus' MaxVoters default: the number of alive
// voters a converged cluster of n nodes shows.
func scaleVoters(n int) int { return min(n, 5) }

func newBenchScaleCmd(g *globals) *cobra.Command {
	var nodes []int
	var workersPerNode, samples, wave, failoverRounds int
	var profile, keep string
	var idle time.Duration
	var cpuProfiles, memProfiles, failover bool
	cmd := &cobra.Command{
		Use:   "scale",
		Short: "Start N local node processes and measure convergence, status latency and size, RSS, idle CPU, gossip traffic, registry writes and failover (JSON)",
		Long: `Starts N rbee node processes on loopback (node1 first, then the
others joining node1, all at once or --wave at a time), optionally K real workers per node (the
built-in tiny model, one thread, registered through the real heartbeat
path), and prints one JSON object per N with (_ms: milliseconds; a
{median, p95, min, max} object: over the samples, or over the nodes):

  nodes / workers_per_node / profile   what was measured
  leader                               the leader's name before the failover
  converge_first_ms / converge_all_ms  the first / every node sees all N alive, from when
                                       the nodes after node1 start, by each node's own
                                       record of when the last member became alive there
  last_started_ms                      when the last node's process started, from the same start
  converge_all_after_last_start_ms     every node sees all N alive, from that moment: gossip's
                                       part, without the machine's time to start N processes
  admitted_all_ms                      every node is in raft's configuration and in the
                                       leader's registry with its capabilities (it can host
                                       workers), from the same start, as polls of the leader
                                       (every 200 ms, after convergence) find it; idle CPU and
                                       gossip are measured after it
  workers_spawn_ms                     how long spawning the workers took (with --workers-per-node)
  leader_changes_while_spawning        leader changes the leader of before the spawning observed
                                       during it
  status_api_ms / status_cli_ms        status from the last (non-leader) node:
                                       API round trip, and 'rbee status -o json' with
                                       CLI start (a summary past 20 nodes)
  status_json_bytes                    size of that status result
  status_all_api_ms / status_all_json_bytes  the same with --all (every node and worker)
  rss_bytes / private_bytes            per node, its sample of largest RSS, of samples
                                       every 5 s over --idle; private (of that sample):
                                       without the binary's code, which processes on
                                       one machine share
  rss_largest                          the three nodes of largest RSS (name, leader, RSS, private)
  idle_cpu_leader_pct / idle_cpu_follower_pct  the leader's and the followers' CPU at
                                       idle over --idle, % of one core
  gossip_sent_bytes_per_s              per node at idle
  registry_write_leader_ms / registry_write_follower_ms  a registry write through the API,
                                       on the leader and forwarded from the last node
  apply_seconds_mean_leader            raft apply latency on the leader, mean over every
                                       write since it started, in seconds (-1: unknown)
  snapshot_bytes                       newest raft snapshot on the leader (0: none yet)
  failover_first_survivor_ms / failover_last_node_ms  kill -9 leader -> a survivor / the
                                       last node sees a new leader (an object with
                                       --failover-rounds above 1)
  failover_first_write_ms              kill -9 leader -> the first write accepted
  failover_error                       why a failover round failed (no new leader, no write
                                       accepted, the victim's restart); the rounds before it
                                       are reported. Like "error", it does not change the exit code
  error / nodes_seeing_all_alive       why the count was not measured; when convergence
                                       timed out, how many nodes saw all alive`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, n := range nodes {
				if n < 3 || n > maxScaleProcesses {
					return fmt.Errorf("--nodes must be 3..%d (larger counts: go test ./gossip -run TestScaleSimulation)", maxScaleProcesses)
				}
			}
			if workersPerNode < 0 || workersPerNode > 16 {
				return fmt.Errorf("--workers-per-node must be 0..16")
			}
			if samples < 1 || samples > 1000 {
				return fmt.Errorf("--samples must be 1..1000")
			}
			if failoverRounds < 1 || failoverRounds > 100 {
				return fmt.Errorf("--failover-rounds must be 1..100")
			}
			if wave < 0 {
				return fmt.Errorf("--wave must be 0 (all at once) or more")
			}
			if idle < minScaleIdle {
				return fmt.Errorf("--idle must be %v or more", minScaleIdle)
			}
			if err := localcluster.CheckProfile(profile); err != nil {
				return fmt.Errorf("--profile: %w", err)
			}
			bin, err := os.Executable()
			if err != nil {
				return err
			}
			var results []map[string]any
			for _, n := range nodes {
				dir := keep
				if dir == "" {
					if dir, err = os.MkdirTemp("", "rbee-bench-scale-"); err != nil {
						return err
					}
				} else {
					dir = fmt.Sprintf("%s/n%d", keep, n)
				}
				res, err := benchScale(cmd.Context(), scaleRun{bin: bin, dir: dir, nodes: n, workers: workersPerNode, samples: samples, wave: wave, profile: profile, idle: idle, cpuProfiles: cpuProfiles, memProfiles: memProfiles, failover: failover, failoverRounds: failoverRounds})
				if keep == "" {
					os.RemoveAll(dir)
				}
				if err != nil {
					// The other counts still run: a cluster that did not
					// converge is a figure too.
					fmt.Fprintf(os.Stderr, "%d nodes: %v\n", n, err)
					res = map[string]any{"nodes": n, "error": err.Error()}
				}
				results = append(results, res)
			}
			return printJSON(cmd.OutOrStdout(), map[string]any{"benchmark": "scale", "results": results})
		},
	}
	cmd.Flags().IntSliceVar(&nodes, "nodes", []int{3}, "node counts to measure, one cluster each (e.g. 3,30,60,100)")
	cmd.Flags().IntVar(&workersPerNode, "workers-per-node", 0, "real workers (built-in tiny model, 1 thread) to spawn on every node")
	cmd.Flags().IntVar(&samples, "samples", 20, "status and registry-write samples")
	cmd.Flags().StringVar(&profile, "profile", "lan", "timing profile of the nodes: lan (defaults) or local")
	cmd.Flags().StringVar(&keep, "dir", "", "keep data dirs and logs here (default: a temp dir, removed)")
	localPaths(cmd.Flags(), "dir")
	cmd.Flags().BoolVar(&failover, "failover", true, "end with kill -9 of the leader (--failover=false keeps its CPU profile)")
	cmd.Flags().IntVar(&failoverRounds, "failover-rounds", 1, "kill the leader this many times (the victim restarts and rejoins between rounds); more than one reports median, p95, min and max")
	cmd.Flags().BoolVar(&memProfiles, "mem-profile", false, "every node writes a heap profile to <dir>/<node>.heap.pprof (and .heap.pprof.txt with runtime.MemStats, .heap.pprof.goroutines.txt) when the bench stops it (use with --dir; a node killed by failover writes none)")
	cmd.Flags().BoolVar(&cpuProfiles, "cpu-profile", false, "every node writes a CPU profile of its run to <dir>/<node>.cpu.pprof (use with --dir)")
	cmd.Flags().IntVar(&wave, "wave", 0, "start at most this many nodes at a time after node1, each waiting for its API (0: all at once)")
	cmd.Flags().DurationVar(&idle, "idle", 10*time.Second, "how long idle CPU and gossip traffic are measured")
	return cmd
}

type scaleRun struct {
	bin, dir, profile string
	nodes, workers    int
	samples, wave     int
	idle              time.Duration
	cpuProfiles       bool
	memProfiles       bool
	failover          bool
	failoverRounds    int
}

// benchScale measures one cluster of r.nodes processes.
func benchScale(ctx context.Context, r scaleRun) (map[string]any, error) {
	// Info logs: at a hundred nodes debug logging is a load of its own.
	cl, err := localcluster.New(localcluster.Config{Binary: r.bin, Dir: r.dir, Nodes: r.nodes, Profile: r.profile,
		ExtraArgs: []string{"--log-level", "info"}})
	if err != nil {
		return nil, err
	}
	if r.cpuProfiles {
		for _, n := range cl.Nodes {
			n.ExtraArgs = append(n.ExtraArgs, "--cpu-profile", filepath.Join(r.dir, n.Name+".cpu.pprof"))
		}
	}
	if r.memProfiles {
		for _, n := range cl.Nodes {
			n.ExtraArgs = append(n.ExtraArgs, "--mem-profile", filepath.Join(r.dir, n.Name+".heap.pprof"))
		}
	}
	defer cl.Close()
	out := map[string]any{"nodes": r.nodes, "workers_per_node": r.workers, "profile": r.profile}
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "%s [%d nodes] %s\n", time.Now().Format(time.TimeOnly), r.nodes, fmt.Sprintf(format, args...))
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	t0, err := cl.StartWaves(sctx, r.wave)
	cancel()
	if err != nil {
		return nil, err
	}
	logf("all APIs up after %v", time.Since(t0).Round(time.Millisecond))
	cctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	first, all, seen, err := waitAllAlive(cctx, cl, r.nodes, t0)
	cancel()
	if err != nil {
		out["error"], out["nodes_seeing_all_alive"] = err.Error(), seen
		if seen > 0 {
			out["converge_first_ms"] = ms(first)
		}
		return out, nil
	}
	out["converge_first_ms"], out["converge_all_ms"] = ms(first), ms(all)
	// The same from when the last process started: gossip's part, without
	// the time this machine takes to start N processes.
	var lastStart time.Time
	for _, n := range cl.Nodes {
		if s := n.Started(); s.After(lastStart) {
			lastStart = s
		}
	}
	if after := t0.Add(all).Sub(lastStart); len(cl.Nodes) > 1 && !lastStart.IsZero() {
		out["last_started_ms"], out["converge_all_after_last_start_ms"] = ms(max(lastStart.Sub(t0), 0)), ms(max(after, 0))
	}
	logf("first node sees all alive after %v, every node after %v", first.Round(time.Millisecond), all.Round(time.Millisecond))

	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	leaderName, err := cl.WaitConverged(wctx, scaleVoters(r.nodes))
	cancel()
	if err != nil {
		return nil, err
	}
	actx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	admitted, err := waitAdmitted(actx, cl.ByName(leaderName), r.nodes, t0)
	cancel()
	if err != nil {
		return nil, err
	}
	out["admitted_all_ms"] = ms(admitted)
	logf("every node in raft's configuration and the registry after %v", admitted.Round(time.Millisecond))
	if r.workers > 0 {
		// Every node counts the leader changes it observed since it
		// started; the leader's count before and after is what the
		// spawning cost.
		changesBefore := leaderChanges(ctx, cl, leaderName)
		observer := leaderName
		start := time.Now()
		if err := spawnScaleWorkers(ctx, cl, r.workers); err != nil {
			return nil, err
		}
		out["workers_spawn_ms"] = ms(time.Since(start))
		logf("%d workers ready after %v", r.workers*r.nodes, time.Since(start).Round(time.Millisecond))
		// The leader may have changed while the machine spawned them.
		wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		leaderName, err = cl.WaitConverged(wctx, scaleVoters(r.nodes))
		cancel()
		if err != nil {
			return nil, err
		}
		if after := leaderChanges(ctx, cl, observer); changesBefore >= 0 && after >= 0 {
			out["leader_changes_while_spawning"] = after - changesBefore
		}
	}
	leader := cl.ByName(leaderName)
	last := cl.Nodes[len(cl.Nodes)-1]
	if last == leader {
		last = cl.Nodes[len(cl.Nodes)-2]
	}

	// Idle: let the joins settle, then CPU and gossip traffic over r.idle.
	time.Sleep(3 * time.Second)
	cpu0, gossip0 := cpuTimes(cl), gossipSent(ctx, cl)
	s0 := time.Now()
	// RSS and private memory: each node's sample of the largest RSS,
	// sampled every rssEvery through the idle window (never the instant
	// after the bench's own scrape of every node's /metrics, whose garbage
	// a node holds until its next collection).
	type memSample struct{ rss, private int64 }
	peak := map[*localcluster.Node]memSample{}
	every := min(rssEvery, r.idle/2)
	for next := s0.Add(every); ; next = next.Add(every) {
		if end := s0.Add(r.idle); next.After(end) {
			time.Sleep(time.Until(end))
			break
		}
		time.Sleep(time.Until(next))
		for _, n := range cl.Nodes {
			// The sample of the largest RSS, its private memory with it.
			if m := (memSample{n.RSS(), n.PrivateMemory()}); m.rss > peak[n].rss {
				peak[n] = m
			}
		}
	}
	cpu1, gossip1 := cpuTimes(cl), gossipSent(ctx, cl)
	el := time.Since(s0)
	var followerCPU, perNodeGossip []float64
	for _, n := range cl.Nodes {
		pct := 100 * float64(cpu1[n.Name]-cpu0[n.Name]) / float64(el)
		if n == leader {
			out["idle_cpu_leader_pct"] = round1(pct)
		} else {
			followerCPU = append(followerCPU, pct)
		}
		if g1, ok := gossip1[n.Name]; ok {
			perNodeGossip = append(perNodeGossip, (g1-gossip0[n.Name])/el.Seconds())
		}
	}
	out["idle_cpu_follower_pct"] = floatStats(followerCPU)
	if len(perNodeGossip) > 0 {
		out["gossip_sent_bytes_per_s"] = floatStats(perNodeGossip)
	}
	var rss, private []float64
	type nodeMem struct {
		Node    string `json:"node"`
		Leader  bool   `json:"leader,omitempty"`
		RSS     int64  `json:"rss_bytes"`
		Private int64  `json:"private_bytes"`
	}
	var mems []nodeMem
	for _, n := range cl.Nodes {
		m := nodeMem{Node: n.Name, Leader: n == leader, RSS: peak[n].rss, Private: peak[n].private}
		mems = append(mems, m)
		rss, private = append(rss, float64(m.RSS)), append(private, float64(m.Private))
	}
	out["rss_bytes"], out["private_bytes"] = floatStats(rss), floatStats(private)
	sort.Slice(mems, func(i, j int) bool { return mems[i].RSS > mems[j].RSS })
	out["rss_largest"] = mems[:min(3, len(mems))]

	// status from the last node: the API (as the CLI asks by default, a
	// summary past api.StatusListAll nodes, and with --all), then the CLI.
	viaAPI := func(all bool) ([]time.Duration, int, error) {
		var ds []time.Duration
		size := 0
		for range r.samples {
			var raw json.RawMessage
			qctx, c := context.WithTimeout(ctx, 10*time.Second)
			start := time.Now()
			err := last.Client().Result(qctx, api.StatusRequest{All: all}, &raw, nil)
			c()
			if err != nil {
				return nil, 0, fmt.Errorf("status on %s: %w", last.Name, err)
			}
			ds = append(ds, time.Since(start))
			size = len(raw)
		}
		return ds, size, nil
	}
	summary, size, err := viaAPI(false)
	if err != nil {
		return nil, err
	}
	full, fullSize, err := viaAPI(true)
	if err != nil {
		return nil, err
	}
	var cli []time.Duration
	for range r.samples {
		qctx, c := context.WithTimeout(ctx, 10*time.Second)
		start := time.Now()
		err := exec.CommandContext(qctx, r.bin, "status", "--node", last.URL(), "--data-dir", last.DataDir, "-o", "json").Run()
		c()
		if err != nil {
			return nil, fmt.Errorf("rbee status on %s: %w", last.Name, err)
		}
		cli = append(cli, time.Since(start))
	}
	out["status_api_ms"], out["status_cli_ms"], out["status_json_bytes"] = brief(summary), brief(cli), size
	out["status_all_api_ms"], out["status_all_json_bytes"] = brief(full), fullSize

	// Registry writes through the API: on the leader, and forwarded.
	write := func(n *localcluster.Node) ([]time.Duration, error) {
		var ds []time.Duration
		for range r.samples {
			qctx, c := context.WithTimeout(ctx, 10*time.Second)
			start := time.Now()
			err := n.Client().Result(qctx, api.HiveRefreshCapabilitiesRequest{OnHive: api.OnHive{Hive: n.Name}}, nil, nil)
			c()
			if err != nil {
				return nil, fmt.Errorf("registry write on %s: %w", n.Name, err)
			}
			ds = append(ds, time.Since(start))
		}
		return ds, nil
	}
	wl, err := write(leader)
	if err != nil {
		return nil, err
	}
	wf, err := write(last)
	if err != nil {
		return nil, err
	}
	out["registry_write_leader_ms"], out["registry_write_follower_ms"] = brief(wl), brief(wf)
	out["apply_seconds_mean_leader"] = applyMean(ctx, leader)
	out["snapshot_bytes"] = leader.SnapshotBytes()

	out["leader"] = leaderName
	if !r.failover {
		return out, nil
	}
	// Each round but the last restarts the killed node, which rejoins
	// before the next kill (WaitConverged in failoverRound).
	var toLeader, toLast, toWrite []time.Duration
	for i := range max(r.failoverRounds, 1) {
		fr, err := failoverRound(ctx, cl, scaleVoters(r.nodes), i < r.failoverRounds-1)
		if err != nil {
			// What was measured before stays: the rounds done so far
			// (this one too when only its restart failed) and every
			// figure above.
			if fr.toWrite > 0 {
				toLeader, toLast, toWrite = append(toLeader, fr.toLeader), append(toLast, fr.toLeaderLast), append(toWrite, fr.toWrite)
			}
			out["failover_error"] = fmt.Sprintf("failover round %d: %v", i+1, err)
			logf("%v", out["failover_error"])
			break
		}
		logf("failover %d: new leader seen after %v (first survivor) / %v (last node), first write after %v", i+1,
			fr.toLeader.Round(time.Millisecond), fr.toLeaderLast.Round(time.Millisecond), fr.toWrite.Round(time.Millisecond))
		toLeader, toLast, toWrite = append(toLeader, fr.toLeader), append(toLast, fr.toLeaderLast), append(toWrite, fr.toWrite)
	}
	switch len(toLeader) {
	case 0:
	case 1:
		out["failover_first_survivor_ms"], out["failover_last_node_ms"], out["failover_first_write_ms"] = ms(toLeader[0]), ms(toLast[0]), ms(toWrite[0])
	default:
		out["failover_first_survivor_ms"], out["failover_last_node_ms"], out["failover_first_write_ms"] = brief(toLeader), brief(toLast), brief(toWrite)
	}
	return out, nil
}

// waitAdmitted polls the leader until its registry holds want nodes, each
// in raft's configuration and with its capabilities (what placement needs
// of a node), and returns when, from t0.
func waitAdmitted(ctx context.Context, leader *localcluster.Node, want int, t0 time.Time) (time.Duration, error) {
	var have int
	for {
		qctx, c := context.WithTimeout(ctx, 5*time.Second)
		st, err := localcluster.GetStatusAll(qctx, leader)
		c()
		if err == nil {
			have = 0
			for _, m := range st.Nodes {
				if m.Suffrage != "" && m.Capabilities != nil {
					have++
				}
			}
			if have >= want {
				return time.Since(t0), nil
			}
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("%d of %d nodes admitted: %w", have, want, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waitAllAlive polls every node's status (a few at a time) until it lists
// want alive nodes and returns when the first and the last did, from t0:
// by the nodes' state_since of their latest member to become alive, so a
// node's figure does not include how long the polls took to reach it.
// When ctx ends first it returns how many did, and when the first did.
func waitAllAlive(ctx context.Context, cl *localcluster.Cluster, want int, t0 time.Time) (first, all time.Duration, seen int, err error) {
	// pollers bounds concurrent status calls: the nodes share the CPU
	// with the benchmark.
	const pollers = 4
	var mu sync.Mutex
	done := map[string]time.Duration{}
	work := make(chan *localcluster.Node)
	var wg sync.WaitGroup
	for range pollers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range work {
				qctx, c := context.WithTimeout(ctx, 5*time.Second)
				st, err := localcluster.GetStatusAll(qctx, n)
				c()
				if err != nil {
					continue
				}
				// When the node saw all alive: the latest time a member
				// became alive in its view (its state_since; same
				// machine, same clock), not when this poll reached it.
				alive, at, exact := 0, t0, true
				for _, m := range st.Nodes {
					if m.State == "alive" {
						alive++
						if m.StateSince == nil {
							exact = false
						} else if m.StateSince.After(at) {
							at = *m.StateSince
						}
					}
				}
				if alive >= want {
					seen := time.Since(t0)
					if exact {
						seen = min(seen, at.Sub(t0))
					}
					mu.Lock()
					if _, ok := done[n.Name]; !ok {
						done[n.Name] = seen
					}
					mu.Unlock()
				}
			}
		}()
	}
	defer func() { close(work); wg.Wait() }()
	summary := func() (first, all time.Duration, seen int) {
		mu.Lock()
		defer mu.Unlock()
		first = time.Duration(1<<63 - 1)
		for _, d := range done {
			first, all = min(first, d), max(all, d)
		}
		return first, all, len(done)
	}
	for {
		mu.Lock()
		left := len(cl.Nodes) - len(done)
		mu.Unlock()
		if left == 0 {
			break
		}
		for _, n := range cl.Nodes {
			mu.Lock()
			_, ok := done[n.Name]
			mu.Unlock()
			if ok {
				continue
			}
			select {
			case work <- n:
			case <-ctx.Done():
				first, all, seen := summary()
				return first, all, seen, fmt.Errorf("%d nodes do not see all %d alive: %w", left, want, ctx.Err())
			}
		}
		select {
		case <-ctx.Done():
			first, all, seen := summary()
			return first, all, seen, fmt.Errorf("%d nodes do not see all %d alive: %w", left, want, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	first, all, seen = summary()
	return first, all, seen, nil
}

// spawnScaleWorkers starts k real workers of the built-in tiny model on
// every node, two spawns at a time (each loads a model).
func spawnScaleWorkers(ctx context.Context, cl *localcluster.Cluster, k int) error {
	sem := make(chan struct{}, 2)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for _, n := range cl.Nodes {
		for range k {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				qctx, c := context.WithTimeout(ctx, 2*time.Minute)
				defer c()
				err := n.Client().Result(qctx, api.WorkerSpawnRequest{OnHive: api.OnHive{Hive: n.Name},
					Model: "builtin:stories260k", Threads: 1, Slots: 1}, nil, nil)
				if err != nil {
					mu.Lock()
					if first == nil {
						first = fmt.Errorf("spawn on %s: %w", n.Name, err)
					}
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	return first
}

// cpuTimes reads every running node's CPU time.
func cpuTimes(cl *localcluster.Cluster) map[string]time.Duration {
	out := map[string]time.Duration{}
	for _, n := range cl.Nodes {
		if pid := n.PID(); pid != 0 {
			if d, err := cputime.Process(pid); err == nil {
				out[n.Name] = d
			}
		}
	}
	return out
}

// gossipSent reads rbee_gossip_sent_bytes_total from every node's metrics
// (absent on nodes that do not export it).
func gossipSent(ctx context.Context, cl *localcluster.Cluster) map[string]float64 {
	out := map[string]float64{}
	for _, n := range cl.Nodes {
		if v, ok := scrapeMetric(ctx, n, "rbee_gossip_sent_bytes_total"); ok {
			out[n.Name] = v
		}
	}
	return out
}

// leaderChanges is rbee_raft_leader_changes_total on the named node (-1
// when unknown): elections since it started.
func leaderChanges(ctx context.Context, cl *localcluster.Cluster, name string) float64 {
	v, ok := scrapeMetric(ctx, cl.ByName(name), "rbee_raft_leader_changes_total")
	if !ok {
		return -1
	}
	return v
}

// applyMean is the mean of the leader's rbee_raft_apply_seconds (-1 when
// unknown).
func applyMean(ctx context.Context, n *localcluster.Node) float64 {
	sum, ok1 := scrapeMetric(ctx, n, "rbee_raft_apply_seconds_sum")
	count, ok2 := scrapeMetric(ctx, n, "rbee_raft_apply_seconds_count")
	if !ok1 || !ok2 || count == 0 {
		return -1
	}
	return sum / count
}

// scrapeMetric reads one unlabelled sample from a node's /metrics.
func scrapeMetric(ctx context.Context, n *localcluster.Node, name string) (float64, bool) {
	qctx, c := context.WithTimeout(ctx, 5*time.Second)
	defer c()
	req, err := http.NewRequestWithContext(qctx, http.MethodGet, n.URL()+"/metrics", nil)
	if err != nil {
		return 0, false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	return promtext.Value(io.LimitReader(resp.Body, 4<<20), name)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func round1(f float64) float64 { return float64(int64(f*10+0.5)) / 10 }

// brief is stats without the individual values.
func brief(ds []time.Duration) stats {
	s := summarize(ds)
	s.Values = nil
	return s
}

// floatStats summarises values (median, p95, min, max).
func floatStats(v []float64) map[string]float64 {
	if len(v) == 0 {
		return nil
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	p := func(q float64) float64 { return round1(s[int(q*float64(len(s)-1)+0.5)]) }
	return map[string]float64{"median": p(0.5), "p95": p(0.95), "min": round1(s[0]), "max": round1(s[len(s)-1])}
}

// startCPUProfile writes a CPU profile to path until stop is called.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// writeHeapProfile writes the live heap (after a GC) to path, the same
// profile as text, which ends with runtime.MemStats (stacks, GC metadata,
// what the runtime holds from the OS), to path+".txt", and the
// goroutines, counted by stack, to path+".goroutines.txt".
func writeHeapProfile(path string) error {
	runtime.GC()
	for _, p := range []struct {
		name, profile string
		debug         int
	}{{path, "heap", 0}, {path + ".txt", "heap", 1}, {path + ".goroutines.txt", "goroutine", 1}} {
		f, err := os.Create(p.name)
		if err != nil {
			return err
		}
		err = pprof.Lookup(p.profile).WriteTo(f, p.debug)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}
