package node

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"time"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/gossip"
	"github.com/rbee-project/rbee/node/jobs"
	"github.com/rbee-project/rbee/node/sshops"
	workercat "github.com/rbee-project/rbee/worker/catalog"
)

// sshOps is the SSH operations component over this node.
func (n *Node) sshOps() *sshops.Ops {
	return sshops.New(sshops.Config{LocalID: n.ID(), LocalName: n.cfg.Name, Home: n.cfg.SSHHome, KnownHosts: n.cfg.SSHKnownHosts,
		AgentSocket: n.cfg.SSHAgentSocket, Secret: n.secret, Cluster: sshCluster{n}, Logger: n.log})
}

// sshCluster is what the SSH operations read and write of this node.
type sshCluster struct{ n *Node }

func (c sshCluster) Host(name string) (fsm.Host, bool)             { return c.n.reg.Host(name) }
func (c sshCluster) Hosts() []fsm.Host                             { return c.n.reg.Hosts() }
func (c sshCluster) PutHost(ctx context.Context, h fsm.Host) error { return c.n.putHost(ctx, h) }
func (c sshCluster) JoinAddr() string                              { return c.n.gsp.Addr() }
func (c sshCluster) RbeeBinary(goos, goarch string) (string, error) {
	return c.n.rbeeBinaryFor(goos, goarch)
}
func (c sshCluster) Leave(ctx context.Context, em jobs.Emitter, name string) error {
	return c.n.leaveRemote(ctx, em, name)
}

func (c sshCluster) LiveMember(name string) (string, bool) {
	m, ok := c.n.memberByName(name)
	return m.ID, ok
}

func (c sshCluster) IsLastVoter(id string) bool {
	servers, err := c.n.cons.Servers()
	if err != nil {
		return false
	}
	voters, isVoter := 0, false
	for _, s := range servers {
		if s.Suffrage == "voter" {
			voters++
			isVoter = isVoter || s.ID == id
		}
	}
	return isVoter && voters <= 1
}

// validateHostName checks that the request names an inventory host.
func (n *Node) validateHostName(req Request) error {
	// Every host operation's request (api.SSHTestRequest, api.HiveInstallRequest, …) names it.
	r, err := decode[struct {
		Name string `json:"name"`
	}](req)
	if err != nil {
		return err
	}
	return n.sshOps().CheckHost(req.Operation, r.Name)
}

// sshOp runs an SSH operation with its api request type.
func sshOp[T any](run func(*sshops.Ops, context.Context, jobs.Emitter, T) error, n *Node) func(context.Context, jobs.Emitter, Request) error {
	return func(ctx context.Context, em jobs.Emitter, req Request) error {
		r, err := decode[T](req)
		if err != nil {
			return err
		}
		return run(n.sshOps(), ctx, em, r)
	}
}

func (n *Node) putHost(ctx context.Context, h fsm.Host) error {
	h.UpdatedAt = time.Now().UTC()
	b, err := fsm.Encode(fsm.UpsertHost{Host: h})
	if err != nil {
		return err
	}
	if _, err := n.apply(ctx, b); err != nil {
		return writeFailed(err, "record host %s", h.Name)
	}
	// Read your writes: when another node leads, this replica applies the
	// entry a moment later; the operation answers once it has.
	n.waitReplica(ctx, func() bool {
		cur, ok := n.reg.Host(h.Name)
		return ok && cur.State == h.State && cur.InstallPath == h.InstallPath
	})
	return nil
}

// replicaWait bounds waitReplica: a follower applies a committed entry
// within a heartbeat or two.
const replicaWait = 10 * time.Second

// waitReplica polls until done reports that this node's replica shows a
// write, or replicaWait or ctx ends.
func (n *Node) waitReplica(ctx context.Context, done func() bool) {
	n.waitReplicaFor(ctx, replicaWait, done)
}

// waitReplicaFor is waitReplica bounded by d instead of replicaWait.
func (n *Node) waitReplicaFor(ctx context.Context, d time.Duration, done func() bool) {
	deadline := time.Now().Add(d)
	for !done() && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
}

// rbeeBinaryFor is the rbee executable for a host's platform: this binary
// when the platforms match, else one from the catalog (type "rbee": built
// with `rbee worker build --type rbee --os O --arch A`, or downloaded).
func (n *Node) rbeeBinaryFor(goos, goarch string) (string, error) {
	if goos == runtime.GOOS && goarch == runtime.GOARCH {
		if n.cfg.RbeeBinary != "" {
			return n.cfg.RbeeBinary, nil
		}
		return os.Executable()
	}
	e, err := n.binaries.Lookup(workercat.TypeRbee, "", goos, goarch)
	if err != nil {
		return "", jobs.Errorf(jobs.CodeNotFound, "the host is %s/%s and this node is %s/%s: put rbee for %s/%s in the catalog first (`rbee worker build --type rbee --os %s --arch %s --hive %s` or `rbee worker download --type rbee --os %s --arch %s --hive %s`)",
			goos, goarch, runtime.GOOS, runtime.GOARCH, goos, goarch, goos, goarch, n.cfg.Name, goos, goarch, n.cfg.Name)
	}
	return e.Path, nil
}

// memberByName finds a gossip member by hive name.
func (n *Node) memberByName(name string) (gossip.Member, bool) {
	for _, m := range n.gsp.Members() {
		if m.Meta.Name == name && m.State == gossip.StateAlive {
			return m, true
		}
	}
	return gossip.Member{}, false
}

// leaveRemote asks a member to leave gracefully (workers drained first,
// leadership handed over) and waits until gossip shows it left.
func (n *Node) leaveRemote(ctx context.Context, em jobs.Emitter, name string) error {
	target, err := n.resolveHive(name)
	if err != nil {
		return err
	}
	if target.ID == n.ID() {
		return jobs.Errorf(jobs.CodeConflict, "a node cannot stop itself through this operation: use `rbee leave` on it")
	}
	raw, _ := api.Encode(api.NodeLeaveRequest{OnHive: api.OnHive{Hive: name}})
	if err := n.forwardJob(ctx, target, Request{Operation: "node_leave", Hive: name, Raw: raw}, em); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		if _, ok := n.memberByName(name); !ok {
			return nil
		}
		select {
		case <-wctx.Done():
			return fmt.Errorf("%s did not leave in time", name)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// opNodeLeave runs on the node that leaves: its workers are drained and
// stopped first, then it leaves (leadership handed over if it leads) and
// shuts down, after answering.
func (n *Node) opNodeLeave(ctx context.Context, em jobs.Emitter, req Request) error {
	em.Narrate("node", "leave", "%s: draining and stopping its workers", n.cfg.Name)
	if err := n.StopWorkers(ctx); err != nil {
		em.Narrate("node", "leave", "stopping workers: %v", err)
	}
	em.Narrate("node", "leave", "%s is leaving the cluster", n.cfg.Name)
	go func() {
		// ctx ends once this operation's answer (its done event) is out.
		<-ctx.Done()
		lctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := n.Leave(lctx); err != nil {
			n.log.Warn("leave", "err", err)
		}
	}()
	return em.Result(api.NodeLeaveResult{Name: n.cfg.Name, Leaving: true})
}
