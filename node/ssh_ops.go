package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"time"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/gossip"
	"github.com/rbee-project/rbee/internal/humanize"
	"github.com/rbee-project/rbee/node/jobs"
	"github.com/rbee-project/rbee/node/sshhive"
	workercat "github.com/rbee-project/rbee/worker/catalog"
)

// hostStartTimeout bounds hive_start's wait for the new node to appear in
// gossip: a fresh machine may take a while to start and join.
const hostStartTimeout = 90 * time.Second

func (n *Node) sshHome() string {
	if n.cfg.SSHHome != "" {
		return n.cfg.SSHHome
	}
	h, _ := os.UserHomeDir()
	return h
}

func (n *Node) knownHosts() string {
	if n.cfg.SSHKnownHosts != "" {
		return n.cfg.SSHKnownHosts
	}
	return sshhive.DefaultKnownHostsFile(n.sshHome())
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
	if r.Name == "" {
		return jobs.Errorf(jobs.CodeBadRequest, "%s needs field \"name\" (an inventory host)", req.Operation)
	}
	if _, ok := n.reg.Host(r.Name); !ok {
		return jobs.Errorf(jobs.CodeNotFound, "no host %q in the inventory (add it with `rbee hive import-ssh`; see `rbee hive list`)", r.Name)
	}
	return nil
}

func sshError(err error) error {
	switch {
	case errors.Is(err, sshhive.ErrUnknownHost), errors.Is(err, sshhive.ErrHostKeyMismatch), errors.Is(err, sshhive.ErrAuth):
		return &jobs.Error{Code: jobs.CodeForbidden, Err: err}
	case errors.Is(err, sshhive.ErrUnreachable):
		return &jobs.Error{Code: jobs.CodeUnavailable, Err: err}
	case errors.Is(err, sshhive.ErrInvalid):
		return &jobs.Error{Code: jobs.CodeBadRequest, Err: err}
	case errors.Is(err, sshhive.ErrNotInstalled), errors.Is(err, sshhive.ErrAlreadyRunning), errors.Is(err, sshhive.ErrNotRunning):
		return &jobs.Error{Code: jobs.CodeConflict, Err: err}
	case errors.Is(err, sshhive.ErrRemoteCommand):
		return &jobs.Error{Code: "remote_command_failed", Err: err}
	}
	return err
}

func (n *Node) hostTarget(h fsm.Host, acceptNew bool) sshhive.Target {
	t := sshhive.TargetFromHost(h, n.knownHosts())
	if len(t.IdentityFiles) == 0 {
		t.IdentityFiles = sshhive.DefaultIdentityFiles(n.sshHome())
	}
	t.AcceptNew = acceptNew
	t.AgentSocket = n.cfg.SSHAgentSocket
	t.Logger = n.log.With("component", "ssh", "host", h.Name)
	return t
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
	deadline := time.Now().Add(replicaWait)
	for !done() && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
}

func (n *Node) opImportSSH(ctx context.Context, em jobs.Emitter, req Request) error {
	r, _ := decode[api.ImportSSHRequest](req)
	opts := sshhive.ImportOptions{Home: n.sshHome(), Overwrite: r.Overwrite}
	if u, err := user.Current(); err == nil {
		opts.DefaultUser = u.Username
	}
	path := r.SSHConfig
	if path == "" {
		path = filepath.Join(n.sshHome(), ".ssh", "config")
	}
	em.Narrate("ssh", "import", "reading %s on %s", path, n.cfg.Name)
	res, err := sshhive.ImportConfigFile(path, n.reg.Hosts(), opts)
	if err != nil {
		return &jobs.Error{Code: jobs.CodeBadRequest, Err: fmt.Errorf("import %s: %w", path, err)}
	}
	for _, h := range append(append([]fsm.Host{}, res.Added...), res.Updated...) {
		if h.State == "" {
			h.State = fsm.HostKnown
		}
		if err := n.putHost(ctx, h); err != nil {
			return err
		}
	}
	for _, h := range res.Added {
		em.Narrate("ssh", "import", "added %s (%s@%s:%d)", h.Name, h.User, h.Host, h.Port)
	}
	for _, h := range res.Updated {
		em.Narrate("ssh", "import", "updated %s", h.Name)
	}
	for _, s := range res.Skipped {
		em.Narrate("ssh", "import", "skipped %s: %s", s.Host.Name, s.Reason)
	}
	for _, w := range res.Warnings {
		em.Narrate("ssh", "import", "warning: %s", w)
	}
	return em.Result(res)
}

func (n *Node) dialHost(ctx context.Context, em jobs.Emitter, name string, acceptNew bool) (fsm.Host, *sshhive.Client, error) {
	h, ok := n.reg.Host(name)
	if !ok {
		return h, nil, jobs.Errorf(jobs.CodeNotFound, "no host %q in the inventory", name)
	}
	em.Narrate("ssh", "connect", "connecting to %s@%s:%d", h.User, h.Host, h.Port)
	c, err := sshhive.Dial(ctx, n.hostTarget(h, acceptNew))
	if err != nil {
		return h, nil, sshError(err)
	}
	return h, c, nil
}

func (n *Node) opSSHTest(ctx context.Context, em jobs.Emitter, req Request) error {
	r, _ := decode[api.SSHTestRequest](req)
	h, ok := n.reg.Host(r.Name)
	if !ok {
		return jobs.Errorf(jobs.CodeNotFound, "no host %q in the inventory", r.Name)
	}
	em.Narrate("ssh", "test", "testing %s@%s:%d", h.User, h.Host, h.Port)
	res, err := sshhive.Test(ctx, n.hostTarget(h, r.AcceptNew), h.InstallPath)
	if err != nil {
		return sshError(err)
	}
	em.Narrate("ssh", "test", "%s: %s/%s, round trip %v, rbee %s", h.Name, res.OS, res.Arch, res.RoundTrip.Round(time.Microsecond), humanize.OrDash(res.RbeeVersion))
	return em.Result(api.SSHTestResult{Name: h.Name, RoundTripMs: float64(res.RoundTrip.Microseconds()) / 1000,
		ConnectMs: float64(res.Connect.Microseconds()) / 1000, OS: res.OS, Arch: res.Arch, Uname: res.Uname, RbeeVersion: res.RbeeVersion})
}

func layoutOf(h fsm.Host) sshhive.Layout { return sshhive.Layout{BinaryPath: h.InstallPath} }

func (n *Node) opInstall(ctx context.Context, em jobs.Emitter, req Request) error {
	r, _ := decode[api.HiveInstallRequest](req)
	h, c, err := n.dialHost(ctx, em, r.Name, false)
	if err != nil {
		return err
	}
	defer c.Close()
	if r.Path != "" {
		h.InstallPath = r.Path
	}
	uname, err := c.Run(ctx, "uname -sm")
	if err != nil {
		return sshError(err)
	}
	goos, goarch, err := sshhive.ParseUname(uname)
	if err != nil {
		return sshError(err)
	}
	self, err := n.rbeeBinaryFor(goos, goarch)
	if err != nil {
		return err
	}
	em.Narrate("ssh", "install", "copying rbee to %s over SFTP", h.Name)
	res, err := sshhive.Install(ctx, c, sshhive.InstallOptions{Layout: layoutOf(h), LocalBinary: self})
	if err != nil {
		return sshError(err)
	}
	for _, w := range res.Warnings {
		em.Narrate("ssh", "install", "warning: %s", w)
	}
	em.Narrate("ssh", "install", "installed %s (rbee %s, service: %s)", res.BinaryPath, res.Version, res.Service)
	h.InstallPath = res.BinaryPath
	h.State = fsm.HostInstalled
	if err := n.putHost(ctx, h); err != nil {
		return err
	}
	return em.Result(res)
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

func (n *Node) opUninstall(ctx context.Context, em jobs.Emitter, req Request) error {
	r, _ := decode[api.HiveUninstallRequest](req)
	if m, ok := n.memberByName(r.Name); ok {
		servers, err := n.cons.Servers()
		if err == nil {
			voters, isVoter := 0, false
			for _, s := range servers {
				if s.Suffrage == "voter" {
					voters++
					isVoter = isVoter || s.ID == m.ID
				}
			}
			if isVoter && voters <= 1 {
				return jobs.Errorf(jobs.CodeConflict, "%s is the last voter of this cluster: uninstalling it would destroy the cluster's registry", r.Name)
			}
		}
		if m.ID == n.ID() {
			return jobs.Errorf(jobs.CodeConflict, "refusing to uninstall the node that runs this operation (%s); ask another node", r.Name)
		}
	}
	h, c, err := n.dialHost(ctx, em, r.Name, false)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, ok := n.memberByName(r.Name); ok {
		em.Narrate("ssh", "uninstall", "%s runs a node: asking it to leave first", r.Name)
		if err := n.leaveRemote(ctx, em, r.Name); err != nil {
			em.Narrate("ssh", "uninstall", "graceful leave failed (%v); stopping over SSH", err)
		}
	}
	res, err := sshhive.Uninstall(ctx, c, sshhive.UninstallOptions{Layout: layoutOf(h), Purge: r.Purge, DataDir: r.DataDir})
	if err != nil {
		return sshError(err)
	}
	for _, p := range res.Removed {
		em.Narrate("ssh", "uninstall", "removed %s", p)
	}
	h.State = fsm.HostKnown
	if err := n.putHost(ctx, h); err != nil {
		return err
	}
	return em.Result(res)
}

func (n *Node) opStartHost(ctx context.Context, em jobs.Emitter, req Request) error {
	r, _ := decode[api.HiveStartRequest](req)
	if _, ok := n.memberByName(r.Name); ok {
		return jobs.Errorf(jobs.CodeConflict, "a node named %s is already a live member", r.Name)
	}
	h, c, err := n.dialHost(ctx, em, r.Name, false)
	if err != nil {
		return err
	}
	defer c.Close()
	em.Narrate("ssh", "start", "starting rbee node %s there, joining %s", h.Name, n.gsp.Addr())
	res, err := sshhive.Start(ctx, c, sshhive.StartOptions{Layout: layoutOf(h), Name: h.Name, JoinAddrs: []string{n.gsp.Addr()},
		Secret: n.secret, DataDir: r.DataDir, HTTPAddr: r.HTTPAddr, GossipAddr: r.GossipAddr, P2PAddr: r.P2PAddr, ExtraArgs: r.NodeArgs})
	if err != nil {
		return sshError(err)
	}
	em.Narrate("ssh", "start", "node process %d runs on %s; waiting for it in gossip", res.PID, h.Name)
	wctx, cancel := context.WithTimeout(ctx, hostStartTimeout)
	defer cancel()
	for {
		if _, ok := n.memberByName(h.Name); ok {
			break
		}
		select {
		case <-wctx.Done():
			return jobs.Errorf(jobs.CodeUnavailable, "%s started (pid %d, log %s) but did not join within %v", h.Name, res.PID, res.LogFile, hostStartTimeout)
		case <-time.After(100 * time.Millisecond):
		}
	}
	em.Narrate("ssh", "start", "%s joined the cluster", h.Name)
	h.State = fsm.HostRunning
	if err := n.putHost(ctx, h); err != nil {
		return err
	}
	return em.Result(api.HiveStartResult{Name: h.Name, PID: res.PID, Service: string(res.Service), Log: res.LogFile})
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

func (n *Node) opStopHost(ctx context.Context, em jobs.Emitter, req Request) error {
	r, _ := decode[api.HiveStopRequest](req)
	h, _ := n.reg.Host(r.Name)
	graceful := false
	if _, ok := n.memberByName(r.Name); ok {
		em.Narrate("node", "stop", "asking %s to leave gracefully over p2p", r.Name)
		if err := n.leaveRemote(ctx, em, r.Name); err != nil {
			em.Narrate("node", "stop", "graceful leave failed (%v); falling back to SSH", err)
		} else {
			graceful = true
		}
	}
	_, c, err := n.dialHost(ctx, em, r.Name, false)
	if err != nil {
		if !graceful {
			return err
		}
	} else {
		defer c.Close()
		res, err := sshhive.Stop(ctx, c, sshhive.StopOptions{Layout: layoutOf(h)})
		if err != nil && !graceful {
			return sshError(err)
		}
		if res.WasRunning {
			em.Narrate("ssh", "stop", "stopped pid %d on %s (killed: %v)", res.PID, r.Name, res.Killed)
		}
	}
	h.State = fsm.HostStopped
	if err := n.putHost(ctx, h); err != nil {
		return err
	}
	return em.Result(api.HiveStopResult{Name: r.Name, Graceful: graceful, State: h.State})
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
