package node

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/gossip"
	"github.com/rbee-project/rbee/internal/humanize"
	"github.com/rbee-project/rbee/node/auth"
	"github.com/rbee-project/rbee/node/hiveops"
	"github.com/rbee-project/rbee/node/hw"
	"github.com/rbee-project/rbee/node/jobs"
	"github.com/rbee-project/rbee/node/sshops"
)

// Request is a job request: the operation, the optional target hive, and the
// operation's own fields in Raw.
type Request struct {
	Operation string          `json:"operation"`
	Hive      string          `json:"hive,omitempty"`
	Name      string          `json:"name,omitempty"`
	Raw       json.RawMessage `json:"-"`
}

// maxRequestBytes bounds a job request body: operations carry names,
// prompts and options, never files.
const maxRequestBytes = 1 << 20

// maxJoinBytes bounds a join request body: a list of seed addresses.
const maxJoinBytes = 64 << 10

// op is one operation.
type op struct {
	// onHive: the operation runs on the node named by the request's hive
	// field (forwarded over libp2p when that is another node).
	onHive bool
	// needsName: the request's name field must name a known hive.
	needsName bool
	// validate checks the operation's own fields before a job exists.
	validate func(req Request) error
	// perm is what a caller needs to submit the operation (auth.Admin when
	// unset): reads and inference are open to local users, everything that
	// downloads, runs, changes or reveals secrets is admin only.
	perm auth.Perm
	run  func(ctx context.Context, em jobs.Emitter, req Request) error
}

func (n *Node) registerOps() {
	n.ops = map[string]op{
		api.OpStatus:                  {perm: auth.Read, run: n.opStatus},
		api.OpHiveList:                {perm: auth.Read, run: n.opHiveList},
		api.OpHiveGet:                 {perm: auth.Read, needsName: true, run: n.opHiveGet},
		api.OpHiveStatus:              {perm: auth.Read, needsName: true, run: n.opHiveStatus},
		api.OpHiveRefreshCapabilities: {onHive: true, run: n.opRefreshCapabilities},

		api.OpInfer:        {perm: auth.Inference, validate: validateInfer, run: n.opInfer},
		api.OpWorkerList:   {perm: auth.Read, run: n.opWorkerList},
		api.OpWorkerGet:    {perm: auth.Read, validate: validateWorkerID, run: n.opWorkerGet},
		api.OpWorkerRetire: {validate: validateWorkerID, run: n.opWorkerRetire},

		api.OpWorkerSpawn:   {onHive: true, validate: validateOnHive(checkSpawn), run: n.opWorkerSpawn},
		api.OpProcessList:   {perm: auth.Read, onHive: true, run: hiveOp((*hiveops.Ops).ProcessList, n)},
		api.OpProcessGet:    {perm: auth.Read, onHive: true, validate: validateOnHive(checkProcess), run: hiveOp((*hiveops.Ops).ProcessGet, n)},
		api.OpProcessDelete: {onHive: true, validate: validateOnHive(checkProcess), run: hiveOp((*hiveops.Ops).ProcessDelete, n)},
		api.OpBinaryList:    {perm: auth.Read, onHive: true, run: hiveOp((*hiveops.Ops).BinaryList, n)},
		api.OpBinaryGet:     {perm: auth.Read, onHive: true, validate: validateOnHive[api.BinaryGetRequest](nil), run: hiveOp((*hiveops.Ops).BinaryGet, n)},
		api.OpBinaryDelete:  {onHive: true, validate: validateOnHive[api.BinaryDeleteRequest](nil), run: hiveOp((*hiveops.Ops).BinaryDelete, n)},
		// Admin only (no perm): it names a local file rbee will execute.
		api.OpBinaryAdd:      {onHive: true, validate: n.validateBinaryAdd, run: hiveOp((*hiveops.Ops).BinaryAdd, n)},
		api.OpWorkerBuild:    {onHive: true, validate: validateOnHive[api.WorkerBuildRequest](nil), run: hiveOp((*hiveops.Ops).Build, n)},
		api.OpWorkerDownload: {onHive: true, validate: validateOnHive[api.WorkerDownloadRequest](nil), run: n.opWorkerDownload},
		api.OpModelDownload:  {onHive: true, validate: validateOnHive(checkModelRef), run: hiveOp((*hiveops.Ops).ModelDownload, n)},
		api.OpModelList:      {perm: auth.Read, onHive: true, run: hiveOp((*hiveops.Ops).ModelList, n)},
		api.OpModelGet:       {perm: auth.Read, onHive: true, validate: validateOnHive(checkModelID), run: hiveOp((*hiveops.Ops).ModelGet, n)},
		api.OpModelDelete:    {onHive: true, validate: validateOnHive(checkModelID), run: hiveOp((*hiveops.Ops).ModelDelete, n)},

		api.OpImportSSH:     {run: sshOp((*sshops.Ops).Import, n)},
		api.OpSSHTest:       {validate: n.validateHostName, run: sshOp((*sshops.Ops).Test, n)},
		api.OpHiveInstall:   {validate: n.validateHostName, run: sshOp((*sshops.Ops).Install, n)},
		api.OpHiveUninstall: {validate: n.validateHostName, run: sshOp((*sshops.Ops).Uninstall, n)},
		api.OpHiveStart:     {validate: n.validateHostName, run: sshOp((*sshops.Ops).Start, n)},
		api.OpHiveStop:      {validate: n.validateHostName, run: sshOp((*sshops.Ops).Stop, n)},
		api.OpNodeLeave:     {onHive: true, run: n.opNodeLeave},

		api.OpAPIKeyCreate: {validate: validateAPIKeyReq(true), run: n.opAPIKeyCreate},
		api.OpAPIKeyList:   {run: n.opAPIKeyList},
		api.OpAPIKeyRevoke: {validate: validateAPIKeyReq(false), run: n.opAPIKeyRevoke},
	}
}

// opPerm is what a caller needs to submit operation.
func (n *Node) opPerm(operation string) auth.Perm {
	if p := n.ops[operation].perm; p != 0 {
		return p
	}
	return auth.Admin
}

// Operations lists the operation names this node serves.
func (n *Node) Operations() []string {
	out := make([]string, 0, len(n.ops))
	for k := range n.ops {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ParseRequest decodes and validates a job request body. Errors are
// *jobs.Error with a code (bad_request, unknown_operation, unknown_hive).
func (n *Node) ParseRequest(body []byte) (Request, error) {
	return n.parseRequestAs(body, auth.Principal{Perms: auth.Admin})
}

// parseRequestAs is ParseRequest for a caller p: an operation p may not
// submit is refused (forbidden) before its fields are looked at, so its
// validation (which stats files and resolves hosts as the node's user)
// tells such a caller nothing.
func (n *Node) parseRequestAs(body []byte, p auth.Principal) (Request, error) {
	var req Request
	dec := json.NewDecoder(strings.NewReader(string(body)))
	if err := dec.Decode(&req); err != nil {
		return req, jobs.Errorf(jobs.CodeBadRequest, "malformed job JSON: %v", err)
	}
	if dec.More() {
		return req, jobs.Errorf(jobs.CodeBadRequest, "malformed job JSON: trailing data after the object")
	}
	req.Raw = append(json.RawMessage(nil), body...)
	if req.Operation == "" {
		return req, jobs.Errorf(jobs.CodeBadRequest, "missing field \"operation\"")
	}
	o, ok := n.ops[req.Operation]
	if !ok {
		return req, jobs.Errorf(jobs.CodeUnknownOperation, "unknown operation %q (known: %s)", req.Operation, strings.Join(n.Operations(), ", "))
	}
	if need := n.opPerm(req.Operation); !p.Can(need) {
		return req, jobs.Errorf(jobs.CodeForbidden, "%s", auth.NeedMessage(need, "operation "+req.Operation))
	}
	if req.Hive != "" {
		if _, err := n.resolveHive(req.Hive); err != nil {
			return req, err
		}
	}
	if o.validate != nil {
		if err := o.validate(req); err != nil {
			return req, err
		}
	}
	// Every field must be one the operation takes: a misspelt or
	// unsupported one is refused, not ignored.
	if slices.Contains(api.Operations(), req.Operation) {
		if _, err := api.Decode(body); err != nil {
			return req, jobs.Errorf(jobs.CodeBadRequest, "%s: %v", req.Operation, err)
		}
	}
	if o.needsName {
		if req.Name == "" {
			req.Name = req.Hive
		}
		if req.Name == "" {
			return req, jobs.Errorf(jobs.CodeBadRequest, "operation %s needs field \"name\" (a hive name)", req.Operation)
		}
		if _, err := n.resolveHive(req.Name); err != nil {
			return req, err
		}
	}
	return req, nil
}

// Submit starts a validated request as a job owned by the admin.
func (n *Node) Submit(ctx context.Context, req Request) (*jobs.Job, error) {
	return n.submitAs(ctx, req, auth.OwnerAdmin)
}

// submitAs starts a validated request as a job of owner.
func (n *Node) submitAs(ctx context.Context, req Request, owner string) (*jobs.Job, error) {
	o := n.ops[req.Operation]
	return n.jobs.SubmitOwned(ctx, req.Operation, owner, func(ctx context.Context, em jobs.Emitter) error {
		if o.onHive && req.Hive != "" && req.Hive != n.cfg.Name {
			target, err := n.resolveHive(req.Hive)
			if err != nil {
				return err
			}
			if target.ID != n.ID() {
				return n.forwardJob(ctx, target, req, em)
			}
		}
		return o.run(ctx, em, req)
	})
}

// Jobs exposes the job manager.
func (n *Node) Jobs() *jobs.Manager { return n.jobs }

// hives merges gossip members, registry nodes and raft servers into one
// list, sorted by name.
func (n *Node) hives() []api.Hive {
	suffrage := map[string]string{}
	if servers, err := n.cons.Servers(); err == nil {
		for _, s := range servers {
			suffrage[s.ID] = s.Suffrage
		}
	}
	leader := n.cons.LeaderID()
	byID := map[string]*api.Hive{}
	feeds := map[string]bool{} // members that follow the registry by feed outside raft
	for _, m := range n.gsp.Members() {
		feeds[m.ID] = m.Meta.Features&gossip.FeatureRegistryFeed != 0
		h := &api.Hive{
			Name: m.Meta.Name, ID: m.ID, State: m.State.String(), HTTPAddr: m.Meta.HTTPAddr, HTTPSAddr: m.Meta.HTTPSAddr,
			GossipAddr: m.Addr, P2PAddrs: m.Meta.P2PAddrs, Version: m.Meta.Version,
		}
		if !m.Since.IsZero() {
			since, age := m.Since, time.Since(m.Since).Milliseconds()
			h.StateSince, h.StateAgeMs = &since, &age
		}
		byID[m.ID] = h
	}
	for _, rn := range n.reg.Nodes() {
		h, ok := byID[rn.ID]
		if !ok {
			state := string(rn.State)
			if rn.State == fsm.NodeFailed {
				state = "dead"
			}
			h = &api.Hive{Name: rn.Name, ID: rn.ID, State: state, HTTPAddr: rn.HTTPAddr, HTTPSAddr: rn.HTTPSAddr,
				GossipAddr: rn.GossipAddr, P2PAddrs: rn.P2PAddrs, Version: rn.Version}
			byID[rn.ID] = h
		}
		if rn.Capabilities != nil {
			c := rn.Capabilities.Clone()
			h.Capabilities = &c
		}
	}
	names := map[string]*api.Hive{}
	for _, h := range byID {
		names[h.Name] = h
	}
	for _, host := range n.reg.Hosts() {
		host := host
		if h, ok := names[host.Name]; ok {
			h.Host = &host
			continue
		}
		byID["host:"+host.Name] = &api.Hive{Name: host.Name, ID: "", State: string(host.State), Host: &host}
	}
	out := make([]api.Hive, 0, len(byID))
	for id, h := range byID {
		h.Suffrage = suffrage[id]
		if h.Suffrage == "" && feeds[id] && h.State == "alive" && len(suffrage) > 0 {
			h.Suffrage = "replica"
		}
		h.Voter = h.Suffrage == "voter"
		h.Leader = id == leader && leader != ""
		out = append(out, *h)
	}
	sort.Slice(out, func(a, b int) bool {
		if out[a].Name != out[b].Name {
			return out[a].Name < out[b].Name
		}
		return out[a].ID < out[b].ID
	})
	return out
}

// resolveHive finds a node by hive name (or peer id). A name that is only a
// left or dead node's still resolves; the caller decides what it can do.
func (n *Node) resolveHive(name string) (api.Hive, error) {
	var found []api.Hive
	for _, h := range n.hives() {
		if h.ID == name && name != "" {
			return h, nil // a peer id names one node
		}
		if h.Name == name {
			found = append(found, h)
		}
	}
	if len(found) == 0 {
		return api.Hive{}, &jobs.Error{Code: jobs.CodeUnknownHive, Err: fmt.Errorf("%w %q (see `rbee hive list`)", ErrUnknownHive, name)}
	}
	// Prefer a live node when a name was reused; a name that two live
	// nodes go by (a second machine started with the same --name or
	// hostname) names neither: acting on one of them would be a guess.
	var alive []api.Hive
	for _, h := range found {
		if h.State == "alive" {
			alive = append(alive, h)
		}
	}
	switch {
	case len(alive) == 1:
		return alive[0], nil
	case len(alive) > 1:
		ids := make([]string, len(alive))
		for i, h := range alive {
			ids[i] = h.ID
		}
		return api.Hive{}, &jobs.Error{Code: jobs.CodeConflict, Err: fmt.Errorf("%w %q: %d live nodes have it (ids %s); name one by its id, and give the others their own --name",
			ErrAmbiguousHive, name, len(alive), strings.Join(ids, ", "))}
	}
	return found[0], nil
}

// status is the status operation's result; all: never cut.
func (n *Node) status(all bool) api.StatusResult {
	var hs []api.Hive
	for _, h := range n.hives() {
		if h.ID != "" { // inventory hosts without a node are in hive_list only
			hs = append(hs, h)
		}
	}
	res := api.StatusResult{Node: n.cfg.Name, NodeID: n.ID(), LeaderID: n.cons.LeaderID(), RaftState: n.cons.State(),
		Nodes: hs, Workers: n.workerViews(), Models: n.reg.Models(), Stale: n.cons.Stale(), RegistryVersion: n.reg.RegistryVersion()}
	if err := n.reg.Halted(); err != nil {
		res.RegistryHalted = err.Error()
	} else if err := n.cons.StoreError(); err != nil {
		res.RegistryHalted = err.Error()
	}
	if lc := n.cons.LastLeaderContact(); !lc.IsZero() {
		lc = lc.UTC()
		res.LastLeaderContact = &lc
	}
	if res.Models == nil {
		res.Models = []fsm.ModelHolding{}
	}
	if gs := n.reg.Groups(); len(gs) > 0 {
		names := n.nodeNames()
		for _, g := range gs {
			res.Groups = append(res.Groups, n.groupView(g, names))
		}
	}
	for _, h := range hs {
		if h.Leader {
			res.Leader = h.Name
		}
	}
	for _, w := range res.Workers {
		res.InFlight += w.InFlight + w.Queued
	}
	if !all && len(res.Nodes) > api.StatusListAll {
		summarize(&res)
	}
	return res
}

// summarize cuts a status to what needs attention and counts the rest (see
// api.StatusResult.Summary): at 100 nodes with 5 workers each the whole
// status is about 250 KB of JSON.
func summarize(res *api.StatusResult) {
	sum := &api.StatusSummary{Nodes: map[string]int{}, Workers: map[string]int{}, Models: len(res.Models)}
	var nodes []api.Hive
	for _, h := range res.Nodes {
		sum.Nodes[h.State]++
		if h.Leader || h.Voter || h.State != "alive" || h.ID == res.NodeID {
			nodes = append(nodes, h)
		}
	}
	var workers []api.WorkerView
	for _, w := range res.Workers {
		sum.Workers[w.State]++
		if w.State != string(fsm.WorkerReady) {
			workers = append(workers, w)
		}
	}
	if workers == nil {
		workers = []api.WorkerView{}
	}
	res.Nodes, res.Workers, res.Models, res.Summary = nodes, workers, []fsm.ModelHolding{}, sum
}

func (n *Node) opStatus(ctx context.Context, em jobs.Emitter, req Request) error {
	var r api.StatusRequest
	if len(req.Raw) > 0 {
		if err := json.Unmarshal(req.Raw, &r); err != nil {
			return &jobs.Error{Code: jobs.CodeBadRequest, Err: fmt.Errorf("status request: %w", err)}
		}
	}
	return em.Result(n.status(r.All))
}

func (n *Node) opHiveList(ctx context.Context, em jobs.Emitter, req Request) error {
	return em.Result(api.HiveListResult{Hives: n.hives()})
}

func (n *Node) opHiveGet(ctx context.Context, em jobs.Emitter, req Request) error {
	h, err := n.resolveHive(req.Name)
	if err != nil {
		return err
	}
	return em.Result(h)
}

func (n *Node) opHiveStatus(ctx context.Context, em jobs.Emitter, req Request) error {
	h, err := n.resolveHive(req.Name)
	if err != nil {
		return err
	}
	st := api.HiveStatus{Name: h.Name, ID: h.ID, GossipState: h.State, Version: h.Version}
	if h.ID == "" {
		st.GossipState = "not a member"
		st.APIError = "no node runs on this inventory host (state " + h.State + ")"
		return em.Result(st)
	}
	em.Narrate("node", "hive_status", "checking %s: gossip says %s", h.Name, h.State)
	pid, err := peer.Decode(h.ID)
	if err != nil {
		return jobs.Errorf(jobs.CodeInternal, "bad peer id %q: %v", h.ID, err)
	}
	if h.ID == n.ID() {
		st.P2PRTTMs = 0
		st.APIHealthy = true
		st.RaftState = n.cons.State()
	} else {
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		rtt, err := n.host.Ping(pctx, pid)
		cancel()
		if err != nil {
			st.P2PError = err.Error()
		} else {
			st.P2PRTTMs = float64(rtt.Microseconds()) / 1000
		}
		ictx, cancel := context.WithTimeout(ctx, 3*time.Second)
		info, err := n.peerInfo(ictx, pid)
		cancel()
		if err != nil {
			st.APIError = err.Error()
		} else {
			st.APIHealthy = info.APIHealthy
			st.RaftState = info.RaftState
			if !info.APIHealthy {
				st.APIError = info.APIError
			}
		}
	}
	return em.Result(st)
}

// checkLocalAPI makes a real request to this node's own HTTP API.
func (n *Node) checkLocalAPI(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.URL()+"/health", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("health answered %s", resp.Status)
	}
	return nil
}

func (n *Node) opRefreshCapabilities(ctx context.Context, em jobs.Emitter, req Request) error {
	em.Narrate("hive", "detect", "detecting CPU, RAM and GPUs on %s", n.cfg.Name)
	caps := DetectCapabilities(ctx)
	if err := n.storeCapabilities(ctx, caps); err != nil {
		return writeFailed(err, "store capabilities")
	}
	em.Narrate("hive", "stored", "%s: %s, %d cores, %s RAM, %d GPU(s)", n.cfg.Name, caps.CPUModel, caps.Cores, humanize.Bytes(caps.RAMTotal), len(caps.GPUs))
	return em.Result(caps)
}

// storeCapabilities writes this node's capabilities. A node that just
// joined is in the registry once the leader's next reconcile writes it;
// until then the command would be refused, so it waits for that first.
func (n *Node) storeCapabilities(ctx context.Context, caps fsm.Capabilities) error {
	_, err := n.storeCapabilitiesAt(ctx, caps)
	return err
}

// storeCapabilitiesAt is storeCapabilities returning the write's log
// index.
func (n *Node) storeCapabilitiesAt(ctx context.Context, caps fsm.Capabilities) (uint64, error) {
	// Free RAM as of now, less what this hive's CPU workers and the
	// spawns starting here were admitted for, within --memory-limit
	// (ram.go).
	if total, avail, err := hw.RAM(ctx); err == nil {
		caps.RAMTotal, caps.RAMFree = total, avail
	}
	caps.RAMFree = n.hiveRAMFree(caps.RAMTotal, caps.RAMFree)
	n.waitReplica(ctx, func() bool { _, ok := n.reg.Node(n.ID()); return ok })
	cmd, err := fsm.Encode(fsm.SetNodeCapabilities{ID: n.ID(), Capabilities: caps, At: time.Now().UTC()})
	if err != nil {
		return 0, err
	}
	res, err := n.apply(ctx, cmd)
	if err != nil {
		return 0, err
	}
	r, _ := res.(fsm.Result)
	return r.Index, nil
}

// holdingsCheckInterval: how often the node compares its registry entry's
// holdings with its disk besides reacting to registry events (repairs a
// lost write; registry events are dropped for a subscriber that falls
// behind).
const holdingsCheckInterval = 30 * time.Second

// capabilitiesLoop stores this node's capabilities and holdings whenever
// the leader (re)creates its node entry: once after start, and again after
// the node was reaped (DeleteNode cascades to its holdings) and re-admitted,
// which an entry without capabilities shows. Every holdingsCheckInterval,
// while a leader is known, it also makes the holdings match the disk.
func (n *Node) capabilitiesLoop() {
	defer n.wg.Done()
	events, unsubscribe := n.reg.Subscribe()
	defer unsubscribe()
	check := time.NewTicker(holdingsCheckInterval)
	defer check.Stop()
	caps := DetectCapabilities(n.ctx)
	synced := false // the current registry entry has this node's capabilities and holdings
	var retry <-chan time.Time
	for attempt := 0; ; {
		rn, ok := n.reg.Node(n.ID())
		if !ok {
			synced = false // reaped: store everything again when the leader re-creates the entry
		}
		if ok && rn.State == fsm.NodeAlive && (!synced || rn.Capabilities == nil) && retry == nil {
			ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
			idx, err := n.storeCapabilitiesAt(ctx, caps)
			if err == nil {
				// The registry can now take this node's holdings: make
				// them match its disk (after a restart, a lost write or
				// a re-admission). First this replica applies the write,
				// and so everything committed before it: after a restart
				// it is still catching up, and a holding deleted
				// meanwhile would look present.
				n.waitReplica(ctx, func() bool { return n.reg.Index() >= idx })
				n.syncHoldings()
				synced, attempt = true, 0
			} else {
				n.log.Debug("store capabilities", "err", err)
				retry = time.After(min(backoff(attempt), time.Second))
				attempt++
			}
			cancel()
		}
		select {
		case <-n.ctx.Done():
			return
		case <-events:
		case <-retry:
			retry = nil
		case <-n.capsRefresh:
			caps = DetectCapabilities(n.ctx)
			synced = false
		case <-check.C:
			if synced && !n.cons.Stale() {
				n.syncHoldings()
			}
		}
	}
}

// backoff grows from 100 ms to 5 s: retries of a write while an election
// runs (about a second) stay quick, a long outage costs little.
func backoff(attempt int) time.Duration {
	d := 100 * time.Millisecond << min(attempt, 6)
	return min(d, 5*time.Second)
}
