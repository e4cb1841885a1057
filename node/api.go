package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/gossip"
	"github.com/rbee-project/rbee/internal/apierror"
	"github.com/rbee-project/rbee/internal/loopback"
	"github.com/rbee-project/rbee/internal/reqbody"
	"github.com/rbee-project/rbee/internal/sse"
	"github.com/rbee-project/rbee/node/auth"
	"github.com/rbee-project/rbee/node/jobs"
	"github.com/rbee-project/rbee/node/web"
)

// sseKeepAlive keeps idle SSE connections open through proxies and lets a
// client notice a dead node.
const sseKeepAlive = 15 * time.Second

// APIError is the JSON body of a non-2xx API answer.
type APIError = apierror.Body

// Handler is the node's HTTP API.
func (n *Node) Handler() http.Handler {
	mux := newRoutes()
	mux.HandleFunc("GET /health", n.handleHealth)
	mux.HandleFunc("POST /v1/jobs", n.handleSubmit)
	mux.HandleFunc("GET /v1/jobs", n.handleListJobs)
	mux.HandleFunc("GET /v1/jobs/{id}", n.handleGetJob)
	mux.HandleFunc("GET /v1/jobs/{id}/events", n.handleEvents)
	mux.HandleFunc("DELETE /v1/jobs/{id}", n.handleCancel)
	mux.HandleFunc("POST /v1/join", n.handleJoin)
	mux.HandleFunc("POST /v1/leave", n.handleLeave)
	mux.HandleFunc("POST /v1/workers/heartbeat", n.sup.HandleHeartbeat)
	mux.Handle("GET /{$}", web.Handler())
	mux.Handle("GET /ui/", web.Handler())
	mux.HandleFunc("GET /v1/cluster", n.handleClusterState)
	mux.HandleFunc("GET /v1/cluster/events", n.handleClusterEvents)
	mux.HandleFunc("GET /v1/models", n.handleModels)
	// {id...}: a name may have slashes ("hf:org/repo:Q4_K_M"), which
	// clients that do not escape the path send as they are.
	mux.HandleFunc("GET /v1/models/{id...}", n.handleModel)
	mux.HandleFunc("GET /api/version", n.handleOllamaVersion)
	mux.HandleFunc("GET /api/ps", n.handleOllamaPS)
	mux.HandleFunc("GET /v1/tls/ca", n.handleCA)
	mux.HandleFunc("GET /v1/tls/ca.pem", n.handleCA)
	mux.Handle("GET /metrics", n.handleMetrics())
	mux.HandleFunc("POST /v1/chat/completions", n.proxyOpenAI)
	mux.HandleFunc("POST /v1/completions", n.proxyOpenAI)
	mux.HandleFunc("POST /v1/embeddings", n.proxyOpenAI)
	mux.HandleFunc("GET /api/tags", n.handleOllamaTags)
	mux.HandleFunc("POST /api/generate", n.handleOllamaGenerate)
	mux.HandleFunc("POST /api/chat", n.handleOllamaChat)
	mux.HandleFunc("POST /api/show", n.handleOllamaShow)
	mux.HandleFunc("POST /api/pull", n.handleOllamaPull)
	mux.HandleFunc("DELETE /api/delete", n.handleOllamaDelete)
	mux.HandleFunc("POST /api/embed", n.handleOllamaEmbed)
	mux.HandleFunc("POST /api/embeddings", n.handleOllamaEmbeddings)
	mux.fallback()
	// Errors under /api/ in Ollama's shape ({"error":"..."}), whoever writes them.
	h := n.bounded(ollamaErrorShape(answerGone(n.auth.Wrap(mux))))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(api.StrictJobsHeader, "1")
		h.ServeHTTP(w, r)
	})
}

// routes is a ServeMux that knows each path's methods, so that a known
// path asked with another method is a 405 with Allow, and anything else
// a JSON 404, never the mux's text/plain page.
type routes struct {
	*http.ServeMux
	paths   *http.ServeMux      // each path pattern without its method
	methods map[string][]string // path pattern → methods
}

func newRoutes() *routes {
	return &routes{ServeMux: http.NewServeMux(), paths: http.NewServeMux(), methods: map[string][]string{}}
}

func (m *routes) Handle(pattern string, h http.Handler) {
	m.ServeMux.Handle(pattern, h)
	method, path, ok := strings.Cut(pattern, " ")
	if !ok {
		return
	}
	if _, seen := m.methods[path]; !seen {
		m.paths.Handle(path, h)
	}
	m.methods[path] = append(m.methods[path], method)
	if method == http.MethodGet {
		m.methods[path] = append(m.methods[path], http.MethodHead)
	}
}

func (m *routes) HandleFunc(pattern string, h func(http.ResponseWriter, *http.Request)) {
	m.Handle(pattern, http.HandlerFunc(h))
}

// fallback answers what no route takes.
func (m *routes) fallback() {
	m.ServeMux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if _, path := m.paths.Handler(r); path != "" {
			if methods := m.methods[path]; len(methods) > 0 {
				w.Header().Set("Allow", strings.Join(methods, ", "))
				writeError(w, http.StatusMethodNotAllowed, jobs.CodeMethodNotAllowed,
					fmt.Sprintf("%s %s: use %s", r.Method, r.URL.Path, strings.Join(methods, " or ")))
				return
			}
		}
		writeError(w, http.StatusNotFound, jobs.CodeNotFound, fmt.Sprintf("no route %s %s", r.Method, r.URL.Path))
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	apierror.Write(w, status, code, msg)
}

func statusForCode(code string) int {
	switch code {
	case jobs.CodeBadRequest, jobs.CodeUnknownOperation:
		return http.StatusBadRequest
	case jobs.CodeNotFound, jobs.CodeUnknownHive:
		return http.StatusNotFound
	case jobs.CodeConflict, jobs.CodeUpgradeRequired:
		return http.StatusConflict
	case jobs.CodeForbidden:
		return http.StatusForbidden
	case jobs.CodeUnavailable, jobs.CodeNoQuorum:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// handleHealth answers "up". A client on this machine also learns the data
// dir, where the CLI finds the admin key when its user may read it (the
// file is 0600: naming the directory grants nothing).
func (n *Node) handleHealth(w http.ResponseWriter, r *http.Request) {
	if !n.auth.HostAllowed(r.Host) {
		// /health skips the guard's Host check, so that a proxy's probe
		// may use any name; a page that rebinds its own name to this
		// machine (DNS rebinding) reads it too: it learns only "up", not
		// the node, its version or the data dir (which names the user).
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
		return
	}
	out := map[string]any{"status": "ok", "node": n.cfg.Name, "id": n.ID(), "version": n.cfg.Version}
	if loopback.Request(r) {
		if abs, err := filepath.Abs(n.cfg.DataDir); err == nil {
			out["data_dir"] = abs
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (n *Node) handleSubmit(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(reqbody.Reader(w, r, maxRequestBytes))
	if err != nil {
		if reqbody.TooLarge(err) {
			writeError(w, http.StatusRequestEntityTooLarge, jobs.CodeBadRequest, fmt.Sprintf("job request over %d bytes", maxRequestBytes))
			return
		}
		writeError(w, http.StatusBadRequest, jobs.CodeBadRequest, "read body: "+err.Error())
		return
	}
	p := auth.FromContext(r.Context())
	req, err := n.parseRequestAs(body, p)
	if err == nil {
		err = refuseInternalSpawnFields(req)
	}
	if err != nil {
		code := jobs.CodeOf(err)
		writeError(w, statusForCode(code), code, err.Error())
		return
	}
	job, err := n.submitAs(r.Context(), req, p.Owner)
	if errors.Is(err, jobs.ErrOwnerBusy) {
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusTooManyRequests, jobs.CodeTooManyJobs, err.Error())
		return
	}
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, jobs.CodeUnavailable, err.Error())
		return
	}
	events := "/v1/jobs/" + job.ID + "/events"
	if strings.Contains(r.Header.Get("Accept"), sse.ContentType) {
		// Submit and follow in one round trip: the events stream in this
		// answer, the job's id in its headers (a client whose stream
		// breaks follows it on at the events URL, as after a 202).
		w.Header().Set(api.JobIDHeader, job.ID)
		w.Header().Set("Location", events)
		n.streamJob(w, r, job, 0)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"job_id": job.ID, "events_url": events})
}

type jobView struct {
	ID        string    `json:"job_id"`
	Operation string    `json:"operation"`
	Status    string    `json:"status"`
	Created   time.Time `json:"created"`
}

func (n *Node) handleListJobs(w http.ResponseWriter, r *http.Request) {
	out := []jobView{}
	p := auth.FromContext(r.Context())
	for _, j := range n.jobs.List() {
		if p.MayRead(j.Owner, true) {
			out = append(out, jobView{j.ID, j.Operation, j.Status(), j.Created})
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"jobs": out})
}

// ownJob returns the request's job if the caller may see it; another
// user's job is "not found", like one that never existed.
func (n *Node) ownJob(r *http.Request) (*jobs.Job, error) {
	j, err := n.jobs.Get(r.PathValue("id"))
	if err != nil {
		return nil, err
	}
	if !auth.FromContext(r.Context()).MayRead(j.Owner, false) {
		return nil, jobs.ErrNotFound
	}
	return j, nil
}

func (n *Node) handleGetJob(w http.ResponseWriter, r *http.Request) {
	j, err := n.ownJob(r)
	if err != nil {
		writeError(w, http.StatusNotFound, jobs.CodeNotFound, err.Error())
		return
	}
	evs, _, _ := j.Events(0)
	writeJSON(w, http.StatusOK, map[string]any{"job_id": j.ID, "operation": j.Operation, "status": j.Status(), "created": j.Created, "events": evs})
}

// handleEvents streams a job's events as SSE: "id: seq", "event: type",
// "data: json". Last-Event-ID (header) or ?after= resumes after that seq.
func (n *Node) handleEvents(w http.ResponseWriter, r *http.Request) {
	j, err := n.ownJob(r)
	if err != nil {
		writeError(w, http.StatusNotFound, jobs.CodeNotFound, err.Error())
		return
	}
	after := int64(0)
	for _, v := range []string{r.Header.Get("Last-Event-ID"), r.URL.Query().Get("after")} {
		if v == "" {
			continue
		}
		a, err := strconv.ParseInt(v, 10, 64)
		if err != nil || a < 0 {
			writeError(w, http.StatusBadRequest, jobs.CodeBadRequest, "Last-Event-ID must be a non-negative event sequence number")
			return
		}
		after = a
	}
	n.streamJob(w, r, j, after)
}

// streamJob sends j's events after seq after as SSE until the job is done
// or the client goes away.
func (n *Node) streamJob(w http.ResponseWriter, r *http.Request, j *jobs.Job, after int64) {
	sw := sse.Start(w)
	ctx := r.Context()
	ticker := time.NewTicker(sseKeepAlive)
	defer ticker.Stop()
	for {
		evs, more, done := j.Events(after)
		for _, ev := range evs {
			b, _ := json.Marshal(ev)
			if err := sw.Event(sse.Event{ID: strconv.FormatInt(ev.Seq, 10), Type: ev.Type, Data: b}); err != nil {
				return
			}
			after = ev.Seq
		}
		if done {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-more:
		case <-ticker.C:
			if err := sw.KeepAlive(); err != nil {
				return
			}
		}
	}
}

func (n *Node) handleCancel(w http.ResponseWriter, r *http.Request) {
	j, err := n.ownJob(r)
	if err == nil {
		err = n.jobs.Cancel(j.ID)
	}
	if err != nil {
		writeError(w, http.StatusNotFound, jobs.CodeNotFound, err.Error())
		return
	}
	// A job that had ended says how ("ok", "failed", "cancelled"); a
	// running one is being cancelled and ends with done "cancelled".
	st := j.Status()
	if st == "running" {
		st = "cancelling"
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": st})
}

// JoinCommand is the command another machine runs to join this cluster.
// The secret travels in the environment, never in argv, where `ps` would
// show it to every user of the joining machine. Once the node knows the
// cluster CA, the command pins its fingerprint.
func (n *Node) JoinCommand() string {
	return JoinCommand(n.gsp.Addr(), n.secret, n.CAFingerprint())
}

// JoinCommand is the join command for a cluster member at gossipAddr;
// caFingerprint ("" = none) makes the joining node refuse a cluster with
// another CA.
func JoinCommand(gossipAddr, secret, caFingerprint string) string {
	cmd := fmt.Sprintf("%s=%s rbee node --join %s", ClusterTokenEnv, secret, gossipAddr)
	if caFingerprint != "" {
		cmd += " --ca-fingerprint " + caFingerprint
	}
	return cmd
}

// ClusterTokenEnv is the environment variable `rbee node` reads the cluster
// secret from (the cmd layer reads it; the join command sets it).
const ClusterTokenEnv = "RBEE_CLUSTER_TOKEN"

func (n *Node) handleJoin(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Addrs []string `json:"addrs"`
	}
	if err := json.NewDecoder(reqbody.Reader(w, r, maxJoinBytes)).Decode(&req); reqbody.TooLarge(err) {
		writeError(w, http.StatusRequestEntityTooLarge, jobs.CodeBadRequest, fmt.Sprintf("join request over %d bytes", maxJoinBytes))
		return
	} else if err != nil || len(req.Addrs) == 0 {
		writeError(w, http.StatusBadRequest, jobs.CodeBadRequest, "body must be {\"addrs\": [\"host:port\", ...]}")
		return
	}
	for _, a := range req.Addrs {
		if err := checkJoinAddr(a); err != nil {
			writeError(w, http.StatusBadRequest, jobs.CodeBadRequest, err.Error())
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	cnt, err := n.Join(ctx, req.Addrs)
	if err != nil {
		// memberlist's errors run over several lines ("1 error occurred:
		// * ..."); one line, and what usually causes them.
		msg := strings.Join(strings.Fields(err.Error()), " ")
		writeError(w, http.StatusBadGateway, jobs.CodeUnavailable, fmt.Sprintf("join %s: %s (check that it is a node's gossip address, not its API port, and that both nodes have this cluster's secret)",
			strings.Join(req.Addrs, ", "), msg))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"joined": cnt})
}

// checkJoinAddr refuses what cannot be a member's gossip address: host:port
// with a host and a port in 1-65535 (a name or an IP; an IPv6 one in
// brackets).
func checkJoinAddr(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return fmt.Errorf("join address %q: %v (want host:port, [ipv6]:port)", a, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("join address %q: port %q is not a number in 1-65535", a, port)
	}
	if host == "" {
		return fmt.Errorf("join address %q has no host", a)
	}
	return nil
}

// leaveBlocked says why this node cannot leave now, "" when it can: with
// other voters in its raft configuration and no leader in reach (the
// minority side of a partition), a leave could tell nobody. It stopped
// the node all the same, which the others kept as a failed voter until
// the reap grace, while the CLI said it was leaving and the node's log
// "node left the cluster".
func (n *Node) leaveBlocked() string {
	if n.cons == nil || n.cons.LeaderID() != "" {
		return ""
	}
	servers, err := n.cons.Servers()
	if err != nil {
		return ""
	}
	alive := map[string]bool{}
	for _, m := range n.gsp.Members() {
		if m.State == gossip.StateAlive {
			alive[m.ID] = true
		}
	}
	others, seen := 0, 0
	for _, s := range servers {
		if s.Suffrage == "voter" && s.ID != n.ID() {
			others++
			if alive[s.ID] {
				seen++
			}
		}
	}
	if others == 0 {
		return ""
	}
	if 2*seen > others {
		// Gossip sees most of the voters, yet raft hears from no leader:
		// not a partition. A leave cut short (the node killed after raft
		// removed it, before the rest) looks like this, as does a blocked
		// p2p port.
		return fmt.Sprintf("cannot leave now: raft hears from no leader, though gossip sees %d of the %d other voters alive: "+
			"an earlier `rbee leave` of this node that was cut short (raft removed it, then the node stopped) leaves it so until the leader adds it back, within about a minute; "+
			"else raft's p2p port (--p2p-addr) is not reachable between the nodes. Try again in a minute, or stop the node (the others remove it after --reap-grace)", seen, others)
	}
	return "cannot leave now: no leader is in reach (this node is cut off from the majority, or an election is under way), so the cluster would not learn of it; try again once `rbee status` shows a leader, or stop the node (the others remove it after --reap-grace)"
}

// handleLeave answers first, then leaves: the client gets its answer before
// the API goes away.
func (n *Node) handleLeave(w http.ResponseWriter, r *http.Request) {
	if msg := n.leaveBlocked(); msg != "" {
		writeError(w, http.StatusServiceUnavailable, jobs.CodeNoQuorum, msg)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"status": "leaving"})
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := n.Leave(ctx); err != nil {
			n.log.Warn("leave", "err", err)
		}
	}()
}
