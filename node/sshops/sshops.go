// Package sshops runs the SSH operations on inventory hosts: import an
// OpenSSH config, test a host, install, start, stop and uninstall rbee
// there. It owns no state: the inventory lives in the registry, and the
// node supplies it and the cluster's membership through Cluster.
package sshops

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"time"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/fsm"
	"github.com/rbee-project/rbee/internal/humanize"
	"github.com/rbee-project/rbee/node/jobs"
	"github.com/rbee-project/rbee/node/sshhive"
)

// Cluster is what the SSH operations need of the node.
type Cluster interface {
	// Host and Hosts read the inventory (the registry replica).
	Host(name string) (fsm.Host, bool)
	Hosts() []fsm.Host
	// PutHost writes an inventory entry and waits until this node's
	// replica shows it.
	PutHost(ctx context.Context, h fsm.Host) error
	// LiveMember is the peer id of the alive node named name.
	LiveMember(name string) (id string, ok bool)
	// IsLastVoter reports whether id is the only voter of the cluster.
	IsLastVoter(id string) bool
	// Leave asks the named node to leave gracefully (its workers drained
	// first) and waits until gossip shows it left.
	Leave(ctx context.Context, em jobs.Emitter, name string) error
	// RbeeBinary is the rbee executable to install on a platform.
	RbeeBinary(goos, goarch string) (string, error)
	// JoinAddr is the gossip address a started node joins.
	JoinAddr() string
}

// Config configures Ops.
type Config struct {
	// LocalID and LocalName are the running node's peer id and name.
	LocalID, LocalName string
	// Home is where .ssh is ("" is the user's home), KnownHosts the
	// known_hosts file ("" is Home's), AgentSocket an ssh-agent socket.
	Home, KnownHosts, AgentSocket string
	// Secret is the cluster secret a started node joins with (it travels
	// in a 0600 file, never on a command line).
	Secret  string
	Cluster Cluster
	Logger  *slog.Logger
}

// Ops runs the SSH operations. Safe for concurrent use.
type Ops struct{ cfg Config }

// New returns the SSH operations.
func New(cfg Config) *Ops {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Ops{cfg: cfg}
}

// CheckHost checks that name is an inventory host (a request's "name").
func (o *Ops) CheckHost(op, name string) error {
	if name == "" {
		return jobs.Errorf(jobs.CodeBadRequest, "%s needs field \"name\" (an inventory host)", op)
	}
	if _, ok := o.cfg.Cluster.Host(name); !ok {
		return jobs.Errorf(jobs.CodeNotFound, "no host %q in the inventory (add it with `rbee hive import-ssh`; see `rbee hive list`)", name)
	}
	return nil
}

// hostStartTimeout bounds hive_start's wait for the new node to appear in
// gossip: a fresh machine may take a while to start and join.
const hostStartTimeout = 90 * time.Second

func (o *Ops) sshHome() string {
	if o.cfg.Home != "" {
		return o.cfg.Home
	}
	h, _ := os.UserHomeDir()
	return h
}

func (o *Ops) knownHosts() string {
	if o.cfg.KnownHosts != "" {
		return o.cfg.KnownHosts
	}
	return sshhive.DefaultKnownHostsFile(o.sshHome())
}

// sshError maps sshhive's errors to job error codes.
func sshError(err error) error {
	switch {
	case errors.Is(err, sshhive.ErrUnknownHost), errors.Is(err, sshhive.ErrHostKeyMismatch), errors.Is(err, sshhive.ErrAuth):
		return &jobs.Error{Code: jobs.CodeForbidden, Err: err}
	case errors.Is(err, sshhive.ErrUnreachable):
		return &jobs.Error{Code: jobs.CodeUnavailable, Err: err}
	case errors.Is(err, sshhive.ErrInvalid):
		return &jobs.Error{Code: jobs.CodeBadRequest, Err: err}
	case errors.Is(err, sshhive.ErrNotInstalled), errors.Is(err, sshhive.ErrAlreadyRunning), errors.Is(err, sshhive.ErrNotRunning),
		errors.Is(err, sshhive.ErrOtherCluster):
		return &jobs.Error{Code: jobs.CodeConflict, Err: err}
	case errors.Is(err, sshhive.ErrRemoteCommand):
		return &jobs.Error{Code: "remote_command_failed", Err: err}
	case errors.Is(err, sshhive.ErrTransfer):
		return &jobs.Error{Code: "transfer_failed", Err: err}
	case errors.Is(err, sshhive.ErrRemoteFS):
		return &jobs.Error{Code: "remote_filesystem", Err: err}
	case errors.Is(err, sshhive.ErrSFTP):
		return &jobs.Error{Code: jobs.CodeUnavailable, Err: err}
	}
	return err
}

func (o *Ops) hostTarget(h fsm.Host, acceptNew bool) sshhive.Target {
	t := sshhive.TargetFromHost(h, o.knownHosts())
	if len(t.IdentityFiles) == 0 {
		t.IdentityFiles = sshhive.DefaultIdentityFiles(o.sshHome())
	}
	t.AcceptNew = acceptNew
	t.AgentSocket = o.cfg.AgentSocket
	t.Logger = o.cfg.Logger.With("component", "ssh", "host", h.Name)
	return t
}

// Import adds the hosts of an OpenSSH config on this node to the inventory.
func (o *Ops) Import(ctx context.Context, em jobs.Emitter, r api.ImportSSHRequest) error {
	opts := sshhive.ImportOptions{Home: o.sshHome(), Overwrite: r.Overwrite}
	if u, err := user.Current(); err == nil {
		opts.DefaultUser = u.Username
	}
	path := r.SSHConfig
	if path == "" {
		path = filepath.Join(o.sshHome(), ".ssh", "config")
	}
	em.Narrate("ssh", "import", "reading %s on %s", path, o.cfg.LocalName)
	res, err := sshhive.ImportConfigFile(path, o.cfg.Cluster.Hosts(), opts)
	if err != nil {
		return &jobs.Error{Code: jobs.CodeBadRequest, Err: fmt.Errorf("import %s: %w", path, err)}
	}
	for _, h := range append(append([]fsm.Host{}, res.Added...), res.Updated...) {
		if h.State == "" {
			h.State = fsm.HostKnown
		}
		if err := o.cfg.Cluster.PutHost(ctx, h); err != nil {
			return err
		}
	}
	for _, h := range res.Added {
		em.Narrate("ssh", "import", "added %s (%s)", h.Name, login(h))
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

func (o *Ops) dialHost(ctx context.Context, em jobs.Emitter, name string, acceptNew bool) (fsm.Host, *sshhive.Client, error) {
	h, ok := o.cfg.Cluster.Host(name)
	if !ok {
		return h, nil, jobs.Errorf(jobs.CodeNotFound, "no host %q in the inventory", name)
	}
	em.Narrate("ssh", "connect", "connecting to %s", login(h))
	c, err := sshhive.Dial(ctx, o.hostTarget(h, acceptNew))
	if err != nil {
		return h, nil, sshError(err)
	}
	// The operation's end (a cancel, the job's time limit) closes the
	// connection: an SFTP write to a host that stopped reading waits on
	// the SSH window and would otherwise never return.
	context.AfterFunc(ctx, func() { _ = c.Close() })
	return h, c, nil
}

// opError is sshError, or the context's error when the operation ended
// because ctx did (its connection was closed under it).
func opError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return sshError(err)
}

// Test connects to a host, checks its key and runs a command there.
func (o *Ops) Test(ctx context.Context, em jobs.Emitter, r api.SSHTestRequest) error {
	h, ok := o.cfg.Cluster.Host(r.Name)
	if !ok {
		return jobs.Errorf(jobs.CodeNotFound, "no host %q in the inventory", r.Name)
	}
	em.Narrate("ssh", "test", "testing %s", login(h))
	res, err := sshhive.Test(ctx, o.hostTarget(h, r.AcceptNew), h.InstallPath)
	if err != nil {
		return opError(ctx, err)
	}
	em.Narrate("ssh", "test", "%s: %s/%s, round trip %v, rbee %s", h.Name, res.OS, res.Arch, res.RoundTrip.Round(time.Microsecond), humanize.OrDash(bareVersion(res.RbeeVersion)))
	return em.Result(api.SSHTestResult{Name: h.Name, RoundTripMs: float64(res.RoundTrip.Microseconds()) / 1000,
		ConnectMs: float64(res.Connect.Microseconds()) / 1000, OS: res.OS, Arch: res.Arch, Uname: res.Uname, RbeeVersion: res.RbeeVersion})
}

func layoutOf(h fsm.Host) sshhive.Layout { return sshhive.Layout{BinaryPath: h.InstallPath} }

// Install copies rbee to a host and installs its service.
func (o *Ops) Install(ctx context.Context, em jobs.Emitter, r api.HiveInstallRequest) error {
	h, c, err := o.dialHost(ctx, em, r.Name, false)
	if err != nil {
		return err
	}
	defer c.Close()
	if r.Path != "" {
		h.InstallPath = r.Path
	}
	uname, err := c.Run(ctx, "uname -sm")
	if err != nil {
		return opError(ctx, err)
	}
	goos, goarch, err := sshhive.ParseUname(uname)
	if err != nil {
		return opError(ctx, err)
	}
	self, err := o.cfg.Cluster.RbeeBinary(goos, goarch)
	if err != nil {
		return err
	}
	em.Narrate("ssh", "install", "copying rbee to %s over SFTP", h.Name)
	res, err := sshhive.Install(ctx, c, sshhive.InstallOptions{Layout: layoutOf(h), LocalBinary: self, Secret: o.cfg.Secret})
	if err != nil {
		return opError(ctx, err)
	}
	for _, w := range res.Warnings {
		em.Narrate("ssh", "install", "warning: %s", w)
	}
	em.Narrate("ssh", "install", "installed %s (rbee %s, service: %s)", res.BinaryPath, bareVersion(res.Version), res.Service)
	h.InstallPath = res.BinaryPath
	h.State = fsm.HostInstalled
	if err := o.cfg.Cluster.PutHost(ctx, h); err != nil {
		return err
	}
	return em.Result(res)
}

// Uninstall removes rbee from a host: its node leaves first.
func (o *Ops) Uninstall(ctx context.Context, em jobs.Emitter, r api.HiveUninstallRequest) error {
	if id, ok := o.cfg.Cluster.LiveMember(r.Name); ok {
		if o.cfg.Cluster.IsLastVoter(id) {
			return jobs.Errorf(jobs.CodeConflict, "%s is the last voter of this cluster: uninstalling it would destroy the cluster's registry", r.Name)
		}
		if id == o.cfg.LocalID {
			return jobs.Errorf(jobs.CodeConflict, "refusing to uninstall the node that runs this operation (%s); ask another node", r.Name)
		}
	}
	h, c, err := o.dialHost(ctx, em, r.Name, false)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, ok := o.cfg.Cluster.LiveMember(r.Name); ok {
		em.Narrate("ssh", "uninstall", "%s runs a node: asking it to leave first", r.Name)
		if err := o.cfg.Cluster.Leave(ctx, em, r.Name); err != nil {
			em.Narrate("ssh", "uninstall", "graceful leave failed (%v); stopping over SSH", err)
		}
	}
	res, err := sshhive.Uninstall(ctx, c, sshhive.UninstallOptions{Layout: layoutOf(h), Purge: r.Purge, DataDir: r.DataDir,
		Stop: sshhive.StopOptions{Secret: o.cfg.Secret}})
	if err != nil {
		return opError(ctx, err)
	}
	for _, p := range res.Removed {
		em.Narrate("ssh", "uninstall", "removed %s", p)
	}
	h.State = fsm.HostKnown
	if err := o.cfg.Cluster.PutHost(ctx, h); err != nil {
		return err
	}
	return em.Result(res)
}

// Start starts a node on a host that joins this cluster.
func (o *Ops) Start(ctx context.Context, em jobs.Emitter, r api.HiveStartRequest) error {
	if _, ok := o.cfg.Cluster.LiveMember(r.Name); ok {
		return jobs.Errorf(jobs.CodeConflict, "a node named %s is already a live member", r.Name)
	}
	h, c, err := o.dialHost(ctx, em, r.Name, false)
	if err != nil {
		return err
	}
	defer c.Close()
	em.Narrate("ssh", "start", "starting rbee node %s there, joining %s", h.Name, o.cfg.Cluster.JoinAddr())
	res, err := sshhive.Start(ctx, c, sshhive.StartOptions{Layout: layoutOf(h), Name: h.Name, JoinAddrs: []string{o.cfg.Cluster.JoinAddr()},
		Secret: o.cfg.Secret, DataDir: r.DataDir, HTTPAddr: r.HTTPAddr, GossipAddr: r.GossipAddr, P2PAddr: r.P2PAddr, ExtraArgs: r.NodeArgs})
	if err != nil {
		return opError(ctx, err)
	}
	em.Narrate("ssh", "start", "node process %d runs on %s; waiting for it in gossip", res.PID, h.Name)
	wctx, cancel := context.WithTimeout(ctx, hostStartTimeout)
	defer cancel()
	for {
		if _, ok := o.cfg.Cluster.LiveMember(h.Name); ok {
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
	if err := o.cfg.Cluster.PutHost(ctx, h); err != nil {
		return err
	}
	return em.Result(api.HiveStartResult{Name: h.Name, PID: res.PID, Service: string(res.Service), Log: res.LogFile})
}

// Stop stops a host's node: a graceful leave over p2p, SSH as the fallback.
func (o *Ops) Stop(ctx context.Context, em jobs.Emitter, r api.HiveStopRequest) error {
	h, _ := o.cfg.Cluster.Host(r.Name)
	graceful := false
	if _, ok := o.cfg.Cluster.LiveMember(r.Name); ok {
		em.Narrate("node", "stop", "asking %s to leave gracefully over p2p", r.Name)
		if err := o.cfg.Cluster.Leave(ctx, em, r.Name); err != nil {
			em.Narrate("node", "stop", "graceful leave failed (%v); falling back to SSH", err)
		} else {
			graceful = true
		}
	}
	_, c, err := o.dialHost(ctx, em, r.Name, false)
	if err != nil {
		if !graceful {
			return err
		}
	} else {
		defer c.Close()
		res, err := sshhive.Stop(ctx, c, sshhive.StopOptions{Layout: layoutOf(h), Secret: o.cfg.Secret})
		if err != nil && !graceful {
			return opError(ctx, err)
		}
		if res.WasRunning {
			em.Narrate("ssh", "stop", "stopped pid %d on %s (killed: %v)", res.PID, r.Name, res.Killed)
		}
	}
	h.State = fsm.HostStopped
	if err := o.cfg.Cluster.PutHost(ctx, h); err != nil {
		return err
	}
	return em.Result(api.HiveStopResult{Name: r.Name, Graceful: graceful, State: h.State})
}

// login is user@host:port as ssh would dial it: an IPv6 address in
// brackets ([::1]:22, not ::1:22), the default port when none is set.
func login(h fsm.Host) string {
	t := sshhive.TargetFromHost(h, "")
	return t.User + "@" + t.Addr()
}

// bareVersion is a version as `rbee --version` prints it ("rbee version
// X") without the words, for messages that say "rbee" themselves.
func bareVersion(v string) string {
	return strings.TrimPrefix(strings.TrimSpace(v), "rbee version ")
}
