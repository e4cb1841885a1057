package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"time"
	"unicode"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/rbee-project/rbee/node"
	"github.com/rbee-project/rbee/node/auth"
	"github.com/rbee-project/rbee/node/supervisor"
	workercat "github.com/rbee-project/rbee/worker/catalog"
)

// nodeGCPercent: once a node is up, its garbage collector lets the heap
// grow to 1.25× the live data between cycles instead of Go's 2×. A node's
// live heap is a few MB and an idle node allocates about 0.2–0.25 MB a
// second (100 nodes with 5 workers each, since load reports are decoded
// with a reused inflater; 0.6 MB before), so a cycle comes every few
// seconds and costs well under 1% of a core, and each node keeps about 4 MB
// less resident than with Go's default. It is set after the start, which
// allocates most and would pay for the cycles. GOGC in the environment
// still decides. Measured with `rbee bench scale --nodes 100
// --workers-per-node 5` (2026-12-07): 50 before (RSS median 37.5 against
// 39.8 MB at 100); 25 then gave the largest RSS 40.5 against 42.1–42.7
// MB, the median 36.3 against 37.2–37.7, the leader's idle CPU 3.5%
// against 3.7%. (25 had been tried before the inflater was reused, and
// left at 50 then: the leader's idle CPU 3.8–4.8% against 3.1–4.5%.)
const nodeGCPercent = 25

// setMemProfiling leaves Go's heap profiling on only for a node that will
// write a profile (--mem-profile). Go samples an allocation every 512 KB
// by default in every program that links runtime/pprof, and keeps every
// sampled stack for the life of the process, in a 1.4 MB hash table that
// fills page by page: about 0.5 MB of every node's private memory at 100
// nodes (median 12.7 → 12.2 MB, `rbee bench scale`, 2026-12-07) for a
// profile nothing reads. Set before the node starts, as runtime
// documents.
func setMemProfiling(on bool) {
	if !on {
		runtime.MemProfileRate = 0
	}
}

// defaultDataDir is $XDG_DATA_HOME/rbee, else ~/.local/share/rbee.
func defaultDataDir() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "rbee")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "share", "rbee")
	}
	// No $HOME (a service started without one, `env -i`): the user
	// database's home, so that the node and the CLI agree whatever their
	// working directories.
	if u, err := user.Current(); err == nil && filepath.IsAbs(u.HomeDir) && u.HomeDir != "/" {
		return filepath.Join(u.HomeDir, ".local", "share", "rbee")
	}
	return ""
}

// errNoDataDir: no default data dir (no $HOME, no home in the user
// database) and none given.
var errNoDataDir = errors.New("no data dir: $HOME is not set and the user database names no home directory; pass --data-dir or set RBEE_DATA_DIR")

func newLogger(level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format must be text or json")
}

func newNodeCmd(g *globals) *cobra.Command {
	cfg := node.DefaultConfig()
	var noMDNS bool
	var tokenFile string
	var logLevel, logFormat string
	var stopWorkers bool
	var cpuProfile, memProfile string
	var releaseKeys []string
	cmd := &cobra.Command{
		Use:     "node",
		Version: version,
		Short:   "Run the rbee daemon on this machine (a hive of the cluster)",
		Long: `Run the rbee daemon. The first machine creates the cluster:

  rbee node

Every other machine joins it with the command the first one printed, which
passes the cluster secret in the environment (never on the command line,
where ps shows it to every user) and pins the cluster CA:

  RBEE_CLUSTER_TOKEN=<token> rbee node --join 192.168.1.10:7834 --ca-fingerprint sha256:…

The API listens on loopback (--http-addr 127.0.0.1:7833). Clients on the LAN
use HTTPS with an API key: --https-addr 0.0.0.0:7843 serves the same API with
a certificate from the cluster CA, which the first node creates and every node
issues itself from (rbee tls ca prints it; rbee apikey create makes a key).

--token-file FILE works as well; --token still works, with a warning.

A node restarted with its data dir rejoins without flags.

Stopping the node (Ctrl-C, SIGTERM) leaves its worker processes running, so
that a restart or an upgrade with the same data dir re-adopts them; it prints
how many keep running. A worker whose node accepts none of its heartbeats
for --worker-orphan-grace (5m) exits on its own; --stop-workers stops them
with the node, and ` + "`rbee leave`" + ` always does.`,
		Args: cobra.NoArgs,
		PreRunE: func(cmd *cobra.Command, args []string) error {
			return checkNodeFlags(cmd.Flags(), &cfg)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := newLogger(logLevel, logFormat)
			if err != nil {
				return err
			}
			cfg.Logger = log
			cfg.MDNS = !noMDNS
			cfg.Version = version
			if g.dataDir == "" {
				return errNoDataDir
			}
			cfg.DataDir = g.dataDir
			cfg.CAFingerprint = g.caFingerprint
			switch {
			case tokenFile != "":
				tok, loose, err := readTokenFile(tokenFile)
				if err != nil {
					return fmt.Errorf("--token-file: %w", err)
				}
				if loose != "" {
					fmt.Fprintln(os.Stderr, "warning: --token-file "+loose)
				}
				cfg.Token = tok
			case os.Getenv(node.ClusterTokenEnv) != "":
				cfg.Token = os.Getenv(node.ClusterTokenEnv)
			case cmd.Flags().Changed("token"):
				fmt.Fprintf(os.Stderr, "warning: --token puts the cluster secret on the command line, where every user of this machine can read it with ps; use %s=… or --token-file\n", node.ClusterTokenEnv)
				cfg.Token = g.token
			case os.Getenv("RBEE_TOKEN") != "" && !auth.IsCredential(os.Getenv("RBEE_TOKEN")):
				// RBEE_TOKEN holding an API key is the CLI's credential
				// (the README exports it for clients), not a cluster token.
				cfg.Token = os.Getenv("RBEE_TOKEN")
			}
			if cfg.Name == "" {
				h, err := os.Hostname()
				if err != nil || h == "" {
					return fmt.Errorf("no --name given and the hostname is unknown")
				}
				cfg.Name = h
			}
			for i, j := range cfg.Join {
				cfg.Join[i] = withGossipPort(j)
			}
			cfg.HFEndpoint = os.Getenv("HF_ENDPOINT")
			cfg.HFToken = os.Getenv("HF_TOKEN")
			cfg.SSHAgentSocket = os.Getenv("SSH_AUTH_SOCK")
			for _, k := range releaseKeys {
				pub, err := workercat.ParsePublicKey(k)
				if err != nil {
					return fmt.Errorf("--worker-release-key: %w", err)
				}
				cfg.WorkerReleaseKeys = append(cfg.WorkerReleaseKeys, pub)
			}
			if cfg.WorkerBinary == "" {
				cfg.WorkerBinary = siblingWorker()
			}
			if cfg.SourceDir == "" {
				cfg.SourceDir = findSourceTree()
			}
			if exe, err := os.Executable(); err == nil {
				cfg.EngineGuard = exe // this rbee runs `rbee engine-guard`
			}
			if cmd.Flags().Changed("worker-orphan-grace") && cfg.WorkerOrphanGrace == 0 {
				cfg.WorkerOrphanGrace = -1 // the flag's 0 is "never"; the config's 0 is the default
			}
			if cpuProfile != "" {
				stop, err := startCPUProfile(cpuProfile)
				if err != nil {
					return err
				}
				defer stop()
			}
			setMemProfiling(memProfile != "")
			n, err := node.New(cfg)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if err := n.Start(ctx); err != nil {
				return err
			}
			if os.Getenv("GOGC") == "" {
				debug.SetGCPercent(nodeGCPercent)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "rbee node %q (id %s) is up\n  API:    %s\n", n.Name(), n.ID(), n.URL())
			if u := n.HTTPSURL(); u != "" {
				fmt.Fprintf(out, "  HTTPS:  %s (%s)\n", u, n.HTTPSAddr())
			}
			fmt.Fprintf(out, "  gossip: %s\n", n.GossipAddr())
			if n.SecretCreated() {
				// The leader of a new cluster creates the CA in a moment;
				// the join command pins it.
				wctx, cancel := context.WithTimeout(ctx, caPrintWait)
				_, _ = n.WaitClusterCA(wctx)
				cancel()
			}
			if fp := n.CAFingerprint(); fp != "" {
				fmt.Fprintf(out, "  cluster CA: %s (rbee tls ca prints it)\n", fp)
			}
			if n.SecretCreated() {
				printJoin(out, filepath.Join(cfg.DataDir, "cluster.secret"), n.JoinCommand())
			}
			select {
			case <-ctx.Done():
				if memProfile != "" {
					if err := writeHeapProfile(memProfile); err != nil {
						fmt.Fprintf(os.Stderr, "heap profile: %v\n", err)
					}
				}
				fmt.Fprintln(os.Stderr, "shutting down; the node stays a member and rejoins on restart: use `rbee leave` to leave for good")
				if stopWorkers {
					fmt.Fprintln(os.Stderr, "stopping this node's workers (--stop-workers): in-flight requests finish first")
					sctx, cancel := context.WithTimeout(context.Background(), workerStopTimeout)
					if err := n.StopWorkers(sctx); err != nil {
						fmt.Fprintf(os.Stderr, "stopping workers: %v\n", err)
					}
					cancel()
				}
				fmt.Fprintln(os.Stderr, keptWorkersNotice(n.WorkerProcesses(), n.WorkerOrphanGrace()))
				return n.Close()
			case <-n.Stopped():
				if err := n.Err(); err != nil {
					return err
				}
				fmt.Fprintln(os.Stderr, "node left the cluster")
				return nil
			}
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Name, "name", "", "hive name (default: hostname)")
	f.StringVar(&cfg.HTTPAddr, "http-addr", node.DefaultHTTPAddr, "plain HTTP API listen address, for clients on this machine: loopback only, unless --insecure-http")
	f.StringVar(&cfg.HTTPSAddr, "https-addr", "", "HTTPS API listen address for clients on the LAN, e.g. "+node.ExampleHTTPSAddr+" (off by default); the certificate comes from the cluster CA (rbee tls ca)")
	f.BoolVar(&cfg.InsecureHTTP, "insecure-http", false, "allow --http-addr off loopback: plain HTTP on the network (keys and prompts unencrypted); the node warns in its log and on its page")
	f.StringVar(&cfg.TLSCertFile, "tls-cert", "", "serve this certificate chain (PEM) on --https-addr instead of one from the cluster CA (reloaded when it changes)")
	f.StringVar(&cfg.TLSKeyFile, "tls-key", "", "the private key (PEM) of --tls-cert")
	f.DurationVar(&cfg.CertLifetime, "tls-cert-lifetime", cfg.CertLifetime, "lifetime of the certificate the node issues itself from the cluster CA (renewed at 2/3 of it)")
	f.DurationVar(&cfg.CertCheckInterval, "tls-check-interval", cfg.CertCheckInterval, "how often the node checks its certificate's age and its addresses")
	f.StringSliceVar(&cfg.AllowedHosts, "allowed-host", nil, "extra name or address clients may use in the Host header (repeatable; the node's name, hostname, localhost and its addresses are always allowed)")
	f.StringSliceVar(&cfg.CORSOrigins, "cors-origin", nil, "browser origin besides the node's own that may call the API, e.g. http://chat.lan:3000 (repeatable)")
	f.IntVar(&cfg.MaxConnsPerClient, "max-conns-per-client", node.DefaultMaxConnsPerClient, "open API connections allowed per client address")
	f.DurationVar(&cfg.HTTPBodyTimeout, "http-body-timeout", node.DefaultHTTPBodyTimeout, "a request body must arrive within this time")
	f.DurationVar(&cfg.HTTPIdleTimeout, "http-idle-timeout", node.DefaultHTTPIdleTimeout, "idle keep-alive API connections close after this time")
	f.DurationVar(&cfg.HTTPStallTimeout, "http-stall-timeout", node.DefaultHTTPStallTimeout, "close an API connection whose client leaves 64 KiB of an answer unread this long (one that stopped reading a stream frees its worker)")
	f.Int64Var(&cfg.MaxDownloadSize, "max-download-size", node.DefaultMaxDownloadSize, "largest model download in bytes (also caps downloads of unknown size)")
	f.Uint64Var(&cfg.MemoryLimit, "memory-limit", 0, "give CPU workers at most this many bytes of RAM in all: spawns that do not fit are refused, and placement and group splits see the rest (0 = what the machine has free)")
	f.StringVar(&cfg.GossipAddr, "gossip-addr", node.DefaultGossipAddr, "gossip (memberlist) bind address")
	f.StringVar(&cfg.GossipAdvertise, "gossip-advertise", "", "gossip address to advertise (default: detected)")
	f.StringVar(&cfg.P2PAddr, "p2p-addr", node.DefaultP2PAddr, "libp2p listen address")
	f.BoolVar(&cfg.StageDirect, "stage-direct", cfg.StageDirect, "shard workers of sharded groups listen on a port of --p2p-addr's host for their head's direct TLS connection (offered over libp2p); false: their links go through the nodes")
	f.StringVar(&cfg.BlobAddr, "blob-addr", node.DefaultBlobAddr, "listen address of the direct path for model and binary copies between nodes (TLS, offered to peers over libp2p; off: peers copy over libp2p)")
	f.StringSliceVar(&cfg.Join, "join", nil, "gossip address(es) of cluster members to join (repeatable)")
	f.IntVar(&cfg.BootstrapExpect, "bootstrap-expect", 0, "wait for this many nodes before bootstrapping the cluster (all must agree)")
	f.BoolVar(&cfg.RequireToken, "require-token", false, "require a credential from loopback clients too, for inference and reads as well")
	f.StringVar(&tokenFile, "token-file", "", "read the cluster token from this file (env RBEE_CLUSTER_TOKEN works too; both keep it out of ps)")
	f.BoolVar(&noMDNS, "no-mdns", false, "do not discover LAN peers with mDNS")
	f.BoolVar(&cfg.NoPrefixAffinity, "no-prefix-affinity", false, "route requests among a model's workers by load alone, not the turns of a conversation to the worker holding its earlier ones (for measuring what affinity gains)")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	f.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	f.StringVar(&cfg.Profile, "profile", "lan", "timing profile: lan, or local for clusters on one machine (tests)")
	f.DurationVar(&cfg.ReconcileInterval, "reconcile-interval", 0, "leader's periodic full reconcile (default 30s)")
	f.DurationVar(&cfg.ReapGrace, "reap-grace", 0, "how long the leader keeps a node gossip lost (failed or partitioned away) in the raft configuration and registry before it removes it (default 1m; it rejoins as a voter when it comes back)")
	f.StringVar(&cfg.WorkerReleaseURL, "worker-release-url", "", "release location of worker binaries ({url}/{version}/rbee-worker-{os}-{arch}, SHA256SUMS, SHA256SUMS.sig; {url}/LATEST); jobs cannot name another")
	f.StringSliceVar(&releaseKeys, "worker-release-key", nil, "also trust this ed25519 public key (base64, as rbee release keygen prints it) to sign worker releases, besides the built-in rbee release key (repeatable or comma-separated)")
	f.StringVar(&cfg.SourceDir, "source-dir", "", "rbee source tree for 'rbee worker build' (default: the checkout the current directory is in, if any)")
	f.StringVar(&cfg.WorkerBinary, "worker-binary", "", "rbee-worker to catalog when the catalog has none (default: the one next to rbee)")
	f.DurationVar(&cfg.WorkerHeartbeatTimeout, "worker-timeout", 30*time.Second, "a worker whose heartbeats stop this long leaves the schedule")
	f.DurationVar(&cfg.EngineFirstByteTimeout, "engine-first-byte-timeout", supervisor.DefaultEngineFirstByte, "an external engine's streamed answer must begin within this time (else the request goes to another worker)")
	f.DurationVar(&cfg.WorkerOrphanGrace, "worker-orphan-grace", cfg.WorkerOrphanGrace, "a worker this node spawns exits on its own once the node has accepted none of its heartbeats for this long (0 = never)")
	f.BoolVar(&stopWorkers, "stop-workers", false, "stop this node's worker processes when it stops (by default they keep running for a restart to re-adopt)")
	_ = f.MarkHidden("profile")
	f.StringVar(&cpuProfile, "cpu-profile", "", "write a CPU profile of this run to this file when the node stops (for rbee bench scale --cpu-profile)")
	_ = f.MarkHidden("cpu-profile")
	f.IntVar(&cfg.WorkerNice, "worker-nice", cfg.WorkerNice, "run workers this many nice levels below the node (Linux; 0: same priority), so inference on every core does not delay gossip and raft heartbeats")
	f.StringVar(&memProfile, "mem-profile", "", "write a heap profile to this file when the node is told to stop, before it closes anything (for rbee bench scale --mem-profile)")
	_ = f.MarkHidden("mem-profile")
	_ = f.MarkHidden("tls-cert-lifetime")
	_ = f.MarkHidden("tls-check-interval")
	_ = f.MarkHidden("reconcile-interval")
	localPaths(f, "tls-cert", "tls-key", "token-file", "source-dir", "worker-binary", "cpu-profile", "mem-profile")
	return cmd
}

// checkNodeFlags refuses flag values of `rbee node` that node.New would
// silently replace by its defaults (a zero or negative limit or timeout),
// read as something else (a negative orphan grace as "never"), or refuse
// only once the node starts to come up, so that a typo stops the command
// before anything starts. Values that were valid keep their meaning: 0 is
// still "the default" where the help says so, and "never" for
// --worker-orphan-grace.
func checkNodeFlags(f *pflag.FlagSet, cfg *node.Config) error {
	if f.Changed("name") && cfg.Name != "" && !validNodeName(cfg.Name) {
		return fmt.Errorf("--name %q: want a name of 1-253 printable characters without spaces or slashes, not starting with '-' (a host name, an SSH alias)", cfg.Name)
	}
	if cfg.MaxConnsPerClient < 1 {
		return fmt.Errorf("--max-conns-per-client %d: want 1 or more (default %d)", cfg.MaxConnsPerClient, node.DefaultMaxConnsPerClient)
	}
	if cfg.MaxDownloadSize < 1 {
		return fmt.Errorf("--max-download-size %d: want 1 or more bytes (default %d)", cfg.MaxDownloadSize, node.DefaultMaxDownloadSize)
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{
		{"http-body-timeout", cfg.HTTPBodyTimeout},
		{"http-idle-timeout", cfg.HTTPIdleTimeout},
		{"http-stall-timeout", cfg.HTTPStallTimeout},
		{"worker-timeout", cfg.WorkerHeartbeatTimeout},
		{"engine-first-byte-timeout", cfg.EngineFirstByteTimeout},
	} {
		if d.v <= 0 {
			return fmt.Errorf("--%s %v: want a positive duration such as %v", d.flag, d.v, f.Lookup(d.flag).DefValue)
		}
	}
	for _, d := range []struct {
		flag, zero string
		v          time.Duration
	}{
		{"worker-orphan-grace", "never", cfg.WorkerOrphanGrace},
		{"reconcile-interval", "the default", cfg.ReconcileInterval},
		{"reap-grace", "the default", cfg.ReapGrace},
		{"tls-cert-lifetime", "the default", cfg.CertLifetime},
		{"tls-check-interval", "the default", cfg.CertCheckInterval},
	} {
		if d.v < 0 {
			return fmt.Errorf("--%s %v: want 0 (%s) or a positive duration", d.flag, d.v, d.zero)
		}
	}
	if cfg.WorkerNice < 0 || cfg.WorkerNice > 19 {
		return fmt.Errorf("--worker-nice %d: want 0 (the node's priority) to 19", cfg.WorkerNice)
	}
	if cfg.BootstrapExpect < 0 {
		return fmt.Errorf("--bootstrap-expect %d: want 0 or more nodes", cfg.BootstrapExpect)
	}
	return nil
}

// validNodeName: a node's name is how people and the CLI name it (hive
// names, `--hive`, the web page), and the hive name an SSH alias gave it
// (which may hold "+" or "'"), so the rule is loose: 1-253 printable
// characters, no spaces, no path separators, not starting with "-" (it
// would read as a flag).
func validNodeName(s string) bool {
	if s == "" || len(s) > 253 || s[0] == '-' {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f || r == '/' || r == '\\' || !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// caPrintWait bounds how long a new cluster's first node waits for its CA
// before it prints the join command: the CA comes a moment after the
// election (about a second); without it the command pins nothing.
const caPrintWait = 10 * time.Second

// workerStopTimeout bounds --stop-workers at shutdown: the workers get 10 s
// after SIGTERM (node.StopWorkers), and a service manager's stop timeout is
// typically a minute.
const workerStopTimeout = 30 * time.Second

// keptWorkersNotice says, at a stop, what happens to the worker processes
// the node leaves running.
func keptWorkersNotice(count int, grace time.Duration) string {
	switch {
	case count == 0:
		return "no worker processes of this node are running"
	case grace <= 0:
		return fmt.Sprintf("%d worker process(es) keep running, without end (--worker-orphan-grace 0): a restart with this data dir re-adopts them; `rbee node --stop-workers` or `rbee leave` stops them with the node", count)
	}
	return fmt.Sprintf("%d worker process(es) keep running: a restart with this data dir within %s re-adopts them; otherwise each exits %s after its last heartbeat this node accepted (the grace set when it was spawned). `rbee node --stop-workers` or `rbee leave` stops them with the node", count, grace, grace)
}

// siblingWorker is the cpu worker this node catalogs when it has none: the
// rbee-worker installed next to this binary, else this binary itself, which
// runs the worker when started under the name rbee-worker (the catalog
// stores it under that name). A machine with only rbee serves models.
func siblingWorker() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	if p := filepath.Join(filepath.Dir(exe), "rbee-worker"); fileExists(p) {
		return p
	}
	if p, err := filepath.EvalSymlinks(exe); err == nil {
		return p
	}
	return exe
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// findSourceTree walks up from the working directory to an rbee checkout.
func findSourceTree() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil {
			if strings.Contains(string(b), "module github.com/rbee-project/rbee\n") && fileExists(filepath.Join(dir, "cmd", "rbee-worker", "main.go")) {
				return dir
			}
			return ""
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// waitCtx bounds client calls that should answer quickly.
func waitCtx(parent context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(parent, 30*time.Second)
}

// maxTokenFile bounds --token-file: a cluster token is a line of about
// 60 characters.
const maxTokenFile = 4 << 10

// readTokenFile reads the cluster token from path, at most maxTokenFile
// bytes: a path that never ends (a device, a pipe, a wrong file) is an
// error, not a read without end. loose, when not "", says that other
// users of this machine can read the file (the cluster secret is the key
// to the whole cluster; the node refuses such a cluster.secret).
func readTokenFile(path string) (token, loose string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Mode().IsRegular() && runtime.GOOS != "windows" && st.Mode().Perm()&0o077 != 0 {
		loose = fmt.Sprintf("%s has mode %#o: other users of this machine can read the cluster secret (chmod 600 %s)", path, st.Mode().Perm(), path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxTokenFile+1))
	if err != nil {
		return "", "", err
	}
	if len(b) > maxTokenFile {
		return "", "", fmt.Errorf("%s is over %d bytes: not a cluster token file", path, maxTokenFile)
	}
	return strings.TrimSpace(string(b)), loose, nil
}

// printJoin tells the user of a new cluster how to join other machines:
// the join command, with the cluster secret, on a terminal; where the
// output is not one (a service's journal, a log file other users or a
// log shipper may read) the secret stays out, and `rbee token` prints it.
func printJoin(out io.Writer, secretPath, joinCommand string) {
	if f, ok := out.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprintf(out, "\nA new cluster secret was created and kept in %s.\nJoin other machines with:\n\n  %s\n\n", secretPath, joinCommand)
		return
	}
	fmt.Fprintf(out, "\nA new cluster secret was created and kept in %s.\nThe command that joins other machines holds it, so it is not written here (not a terminal): run `rbee token` as this user to print it.\n\n", secretPath)
}
