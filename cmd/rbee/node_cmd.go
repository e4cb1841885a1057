package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/rbee-project/rbee/node"
	workercat "github.com/rbee-project/rbee/worker/catalog"
)

// defaultDataDir is $XDG_DATA_HOME/rbee, else ~/.local/share/rbee.
func defaultDataDir() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "rbee")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "share", "rbee")
	}
	return ".rbee"
}

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
	var releaseKeys []string
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Run the rbee daemon on this machine (a hive of the cluster)",
		Long: `Run the rbee daemon. The first machine creates the cluster:

  rbee node

Every other machine joins it with the token the first one printed:

  rbee node --join 192.168.1.10:7834 --token <token>

A node restarted with its data dir rejoins without flags.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := newLogger(logLevel, logFormat)
			if err != nil {
				return err
			}
			cfg.Logger = log
			cfg.MDNS = !noMDNS
			cfg.Version = version
			switch {
			case tokenFile != "":
				b, err := os.ReadFile(tokenFile)
				if err != nil {
					return fmt.Errorf("--token-file: %w", err)
				}
				cfg.Token = strings.TrimSpace(string(b))
			case cmd.Flags().Changed("token"):
				cfg.Token = g.token
			case os.Getenv("RBEE_TOKEN") != "":
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
				if !strings.Contains(j, ":") {
					cfg.Join[i] = j + ":7834"
				}
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
			n, err := node.New(cfg)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if err := n.Start(ctx); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "rbee node %q (id %s) is up\n  API:    %s\n  gossip: %s\n", n.Name(), n.ID(), n.URL(), n.GossipAddr())
			if n.SecretCreated() {
				fmt.Fprintf(out, "\nA new cluster secret was created and kept in %s.\nJoin other machines with:\n\n  %s\n\n", filepath.Join(cfg.DataDir, "cluster.secret"), n.JoinCommand())
			}
			select {
			case <-ctx.Done():
				fmt.Fprintln(os.Stderr, "shutting down (Ctrl-C); the node stays a member and rejoins on restart, and its workers keep running to be re-adopted: use `rbee leave` to leave for good")
				return n.Close()
			case <-n.Stopped():
				fmt.Fprintln(os.Stderr, "node left the cluster")
				return nil
			}
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Name, "name", "", "hive name (default: hostname)")
	f.StringVar(&cfg.DataDir, "data-dir", defaultDataDir(), "data directory")
	f.StringVar(&cfg.HTTPAddr, "http-addr", node.DefaultHTTPAddr, "API listen address (loopback unless told otherwise; off loopback clients need the token)")
	f.StringVar(&cfg.GossipAddr, "gossip-addr", node.DefaultGossipAddr, "gossip (memberlist) bind address")
	f.StringVar(&cfg.GossipAdvertise, "gossip-advertise", "", "gossip address to advertise (default: detected)")
	f.StringVar(&cfg.P2PAddr, "p2p-addr", node.DefaultP2PAddr, "libp2p listen address")
	f.StringSliceVar(&cfg.Join, "join", nil, "gossip address(es) of cluster members to join (repeatable)")
	f.IntVar(&cfg.BootstrapExpect, "bootstrap-expect", 0, "wait for this many nodes before bootstrapping the cluster (all must agree)")
	f.BoolVar(&cfg.RequireToken, "require-token", false, "require the token from loopback clients too")
	f.StringVar(&tokenFile, "token-file", "", "read the cluster token from this file (keeps it out of `ps`)")
	f.BoolVar(&noMDNS, "no-mdns", false, "do not discover LAN peers with mDNS")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	f.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	f.StringVar(&cfg.Profile, "profile", "lan", "timing profile: lan, or local for clusters on one machine (tests)")
	f.DurationVar(&cfg.ReconcileInterval, "reconcile-interval", 0, "leader's periodic full reconcile (default 30s)")
	f.StringVar(&cfg.WorkerReleaseURL, "worker-release-url", "", "release location of worker binaries ({url}/{version}/rbee-worker-{os}-{arch}, SHA256SUMS, SHA256SUMS.sig; {url}/LATEST); jobs cannot name another")
	f.StringSliceVar(&releaseKeys, "worker-release-key", nil, "also trust this ed25519 public key (base64, as rbee release keygen prints it) to sign worker releases, besides the built-in rbee release key (repeatable or comma-separated)")
	f.StringVar(&cfg.SourceDir, "source-dir", "", "rbee source tree for `worker build` (default: the checkout the current directory is in, if any)")
	f.StringVar(&cfg.WorkerBinary, "worker-binary", "", "rbee-worker to catalog when the catalog has none (default: the one next to rbee)")
	f.DurationVar(&cfg.WorkerHeartbeatTimeout, "worker-timeout", 30*time.Second, "a worker whose heartbeats stop this long leaves the schedule")
	_ = f.MarkHidden("profile")
	_ = f.MarkHidden("reconcile-interval")
	return cmd
}

// siblingWorker is the rbee-worker installed next to this binary, if any.
func siblingWorker() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	if p := filepath.Join(filepath.Dir(exe), "rbee-worker"); fileExists(p) {
		return p
	}
	return ""
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
