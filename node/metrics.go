package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/rbee-project/rbee/consensus"
	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/gossip"
	"github.com/rbee-project/rbee/node/jobs"
	"github.com/rbee-project/rbee/node/shardlink"
)

// metrics are the node's Prometheus metrics, in a registry of their own
// (no global state: several nodes share a test process).
type metrics struct {
	reg *prometheus.Registry

	// labels: the model names a request's series may carry (see
	// modelLabel), rebuilt when the registry's index moves.
	labelsMu    sync.Mutex
	labelsIndex uint64
	labels      map[string]bool

	requests   *prometheus.CounterVec   // by api, model, node, outcome
	ttft       *prometheus.HistogramVec // by model, node
	tps        *prometheus.HistogramVec // by model, node
	applyTime  prometheus.Histogram
	downloaded *prometheus.CounterVec // by kind
}

// Buckets: time to first token from sub-millisecond (a local worker on a
// tiny model) to tens of seconds (a long prompt on a big one); generation
// speed from 1 to ~16k tokens/s.
var (
	ttftBuckets  = prometheus.ExponentialBuckets(0.0005, 2, 17)
	tpsBuckets   = prometheus.ExponentialBuckets(1, 2, 15)
	applyBuckets = prometheus.ExponentialBuckets(0.0005, 2, 14)
)

// Request metrics are labelled by model and by the node that ran the
// worker, never by worker id: workers come and go (every spawn is a new
// id), and a series per worker would grow without bound; models and nodes
// are few and stay. Per-worker load is in rbee_queue_depth and
// rbee_worker_in_flight, which only report the workers that exist now.
func newMetrics(n *Node) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rbee_requests_total",
		Help: "Inference requests this node routed, by API, model, node of the worker and outcome."}, []string{"api", "model", "node", "outcome"})
	m.ttft = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "rbee_time_to_first_token_seconds",
		Help: "Time from routing a request to its first token, as seen by this node, by model and node of the worker.", Buckets: ttftBuckets}, []string{"model", "node"})
	m.tps = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "rbee_tokens_per_second",
		Help: "Generation speed of completed requests, by model and node of the worker.", Buckets: tpsBuckets}, []string{"model", "node"})
	m.applyTime = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "rbee_raft_apply_seconds",
		Help: "Latency of registry writes proposed by this node (forwarding to the leader included).", Buckets: applyBuckets})
	m.downloaded = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rbee_download_bytes_total",
		Help: "Bytes of models and worker binaries fetched by this node."}, []string{"kind"})
	m.reg.MustRegister(m.requests, m.ttft, m.tps, m.applyTime, m.downloaded,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "rbee_in_flight_requests",
		Help: "Requests this node has in flight to workers."}, func() float64 { return float64(n.InFlight()) }))
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "rbee_gossip_problems_total",
		Help: "Warnings and errors of the gossip layer (junk or undecryptable packets, failed probes); the log shows at most one per 10 s."},
		func() float64 {
			if n.gsp == nil {
				return 0
			}
			return float64(n.gsp.Problems())
		}))
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "rbee_gossip_sent_bytes_total",
		Help: "Bytes this node sent in gossip (packets and push/pull streams, headers of IP and UDP/TCP not counted)."},
		func() float64 {
			if n.gsp == nil {
				return 0
			}
			return float64(n.gsp.SentBytes())
		}))
	linkCount := func(name, help string, pick func(shardlink.Counts) uint64) {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 {
			if n.links == nil {
				return 0
			}
			return float64(pick(n.links.Counts()))
		}))
	}
	linkCount("rbee_shard_direct_offers_total",
		"Offers of a direct stage port (TLS) that this node's shard workers made to other nodes' group heads.",
		func(c shardlink.Counts) uint64 { return c.Offered })
	linkCount("rbee_shard_direct_redirects_total",
		"Stage links this node's group heads were sent to another node's shard worker's direct stage port for.",
		func(c shardlink.Counts) uint64 { return c.Redirected })
	linkCount("rbee_shard_bridged_links_total",
		"Stage links to other nodes' shards that this node carried for its group heads through libp2p (no direct port, or it failed).",
		func(c shardlink.Counts) uint64 { return c.Bridged })
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "rbee_blob_direct_transfers_total",
		Help: "File copies this node served over its blob port (TLS) rather than the libp2p stream."},
		func() float64 {
			if n.blobLn == nil {
				return 0
			}
			return float64(n.blobLn.Claimed())
		}))
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "rbee_raft_leader_changes_total",
		Help: "Leadership changes this node observed."}, func() float64 { return float64(n.cons.LeaderChanges()) }))
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "rbee_raft_is_leader",
		Help: "1 when this node is the Raft leader (the queen)."}, func() float64 {
		if n.IsLeader() {
			return 1
		}
		return 0
	}))
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "rbee_registry_feeds_serving",
		Help: "Replicas (nodes outside Raft's voters) this voter feeds the registry to now."},
		func() float64 { return float64(n.cons.FeedStats().Serving) }))
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "rbee_registry_feed_connected",
		Help: "1 while this node, a replica, follows the registry from a voter's feed."},
		func() float64 {
			if n.cons.FeedStats().Source != "" {
				return 1
			}
			return 0
		}))
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "rbee_registry_feed_snapshots_total",
		Help: "Registry snapshots this node restored from a voter's feed (it was behind what the voter keeps)."},
		func() float64 { return float64(n.cons.FeedStats().Snapshots) }))
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "rbee_registry_writes_relayed_total",
		Help: "Registry writes of replicas this voter forwarded to the leader and had its answer for (replicas write through the voter that feeds them)."},
		func() float64 { return float64(n.cons.FeedStats().Relayed) }))
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "rbee_raft_heartbeats_past_lane_total",
		Help: "Heartbeats this node sent as raft leader on a raft connection of their own, because an append to the same follower was still in flight after the lane wait (40 ms on lan)."},
		func() float64 { return float64(n.cons.HeartbeatsPastLane()) }))
	m.reg.MustRegister(&stateCollector{n: n})
	return m
}

// stateCollector reports gauges computed at scrape time: workers by state,
// queue depth and gossip members by state.
type stateCollector struct{ n *Node }

var (
	workersDesc = prometheus.NewDesc("rbee_workers", "Workers in the registry by state.", []string{"state"}, nil)
	queueDesc   = prometheus.NewDesc("rbee_queue_depth", "Requests waiting in workers' queues, by worker.", []string{"worker", "model"}, nil)
	workerIF    = prometheus.NewDesc("rbee_worker_in_flight", "Requests a worker is generating, by worker.", []string{"worker", "model"}, nil)
	membersDesc = prometheus.NewDesc("rbee_gossip_members", "Gossip members by state.", []string{"state"}, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- workersDesc
	ch <- queueDesc
	ch <- workerIF
	ch <- membersDesc
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	states := map[string]int{"registered": 0, "ready": 0, "retiring": 0}
	for _, w := range c.n.reg.Workers() {
		states[string(w.State)]++
	}
	for s, v := range states {
		ch <- prometheus.MustNewConstMetric(workersDesc, prometheus.GaugeValue, float64(v), s)
	}
	for _, w := range c.n.loads.workers() {
		ch <- prometheus.MustNewConstMetric(queueDesc, prometheus.GaugeValue, float64(w.Queued), w.ID, w.Model)
		ch <- prometheus.MustNewConstMetric(workerIF, prometheus.GaugeValue, float64(w.InFlight), w.ID, w.Model)
	}
	members := map[string]int{}
	for _, s := range []gossip.State{gossip.StateAlive, gossip.StateSuspect, gossip.StateDead, gossip.StateLeft} {
		members[s.String()] = 0
	}
	for _, m := range c.n.gsp.Members() {
		members[m.State.String()]++
	}
	for s, v := range members {
		ch <- prometheus.MustNewConstMetric(membersDesc, prometheus.GaugeValue, float64(v), s)
	}
}

// handleMetrics serves the registry uncompressed: a scrape is tens of KB,
// nothing on a LAN, while gzip's compressor holds about 800 KB of the
// node's heap while it writes (and in promhttp's pool after), the largest
// single allocation of an idle node.
func (n *Node) handleMetrics() http.Handler {
	return promhttp.HandlerFor(n.metrics.reg, promhttp.HandlerOpts{DisableCompression: true})
}

// apply proposes a registry command and records its latency.
func (n *Node) apply(ctx context.Context, cmd []byte) (any, error) {
	// Never write what a server's build does not know: it would halt it.
	if err := fsm.CheckWritable(cmd, n.reg.RegistryVersion()); err != nil {
		return nil, err
	}
	start := time.Now()
	res, err := n.cons.Apply(ctx, cmd)
	if err == nil {
		n.metrics.applyTime.Observe(time.Since(start).Seconds())
	}
	return res, err
}

// writeFailed is the job error of a failed registry write: no_quorum when
// no leader was reachable, upgrade_required for a command newer than the
// cluster's registry, bad_request for an invalid one, conflict when the
// registry refused it for its state, unavailable otherwise. The message says when the
// write may still commit.
func writeFailed(err error, format string, args ...any) error {
	code := jobs.CodeUnavailable
	switch {
	case errors.Is(err, consensus.ErrNoQuorum):
		code = jobs.CodeNoQuorum
	case errors.Is(err, fsm.ErrNeedsVersion):
		code = jobs.CodeUpgradeRequired
	case errors.Is(err, fsm.ErrInvalid):
		code = jobs.CodeBadRequest
	case errors.Is(err, fsm.ErrConflict):
		code = jobs.CodeConflict
	}
	return &jobs.Error{Code: code, Err: fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), err)}
}

// otherModel is the label of a request for a model the registry does not
// know: a client names any string it likes, and one series per name would
// let it grow the node's memory and every scrape without end.
const otherModel = "other"

// modelLabel is model when the registry (st) knows it, a worker's model or
// a holding's, else otherModel. Safe for concurrent use.
func (m *metrics) modelLabel(st *fsm.State, model string) string {
	m.labelsMu.Lock()
	defer m.labelsMu.Unlock()
	if m.labels == nil || m.labelsIndex != st.Index() {
		known := map[string]bool{}
		for _, h := range st.Models() {
			known[h.ModelID] = true
		}
		for _, w := range st.Workers() {
			known[w.Model] = true
		}
		m.labels, m.labelsIndex = known, st.Index()
	}
	if m.labels[model] {
		return model
	}
	return otherModel
}

// observeRequest records one routed request; node is the name of the node
// whose worker served it ("" when none was reached).
func (n *Node) observeRequest(api, model, node string, err error, ttft time.Duration, tps float64) {
	model = n.metrics.modelLabel(n.reg.State(), model)
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	n.metrics.requests.WithLabelValues(api, model, node, outcome).Inc()
	if ttft > 0 {
		n.metrics.ttft.WithLabelValues(model, node).Observe(ttft.Seconds())
	}
	if tps > 0 {
		n.metrics.tps.WithLabelValues(model, node).Observe(tps)
	}
}
