// Command rbee is the CLI of an rbee cluster and, as `rbee node`, its daemon.
package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/rbee-project/rbee/internal/owner"
	"github.com/rbee-project/rbee/internal/peercred"
	"github.com/rbee-project/rbee/internal/workercmd"
	"github.com/rbee-project/rbee/node"
	"github.com/rbee-project/rbee/node/client"
	"github.com/rbee-project/rbee/node/tlsca"
)

// version is set at link time (-ldflags "-X main.version=v1.2.3").
var version = "dev"

// globals are the flags every client command shares.
type globals struct {
	node    string
	token   string
	output  string
	dataDir string
	// tokenSet: --token was given on the command line; dataDirSet:
	// --data-dir or RBEE_DATA_DIR was.
	tokenSet, dataDirSet bool
	// allowPlainHTTP: --allow-plain-http, the key may go to an http://
	// node off this machine.
	allowPlainHTTP bool
	adminOnce      sync.Once
	adminKey       string
	// adminUID owns the file adminKey came from: the admin key goes only
	// to a server that user runs (peercred.OwnedBy).
	adminUID uint32
	// caFile (--ca, RBEE_CA) and caFingerprint (--ca-fingerprint,
	// RBEE_CA_FINGERPRINT) say how an https:// node is verified; hc is the
	// HTTP client built from them.
	caFile, caFingerprint string
	hc                    *http.Client
}

// client is a client of --node with the credential credential() picks.
// With the node's admin key, its connections are checked to reach a
// server run by the key file's owner (any local user could be listening
// on the node's port while the node is down).
func (g *globals) client() *client.Client {
	cred := g.credential()
	c := client.New(g.node, cred)
	c.AllowPlainHTTP = g.allowPlainHTTP
	if g.hc != nil {
		c.HTTP = g.hc
	}
	if cred != "" && cred == g.adminKey {
		c.HTTP = peercred.OwnedBy(c.HTTP, g.adminUID)
	}
	return c
}

// setupTLS builds the HTTP client that verifies https:// nodes.
func (g *globals) setupTLS() error {
	var t client.TLS
	if g.caFile != "" {
		b, err := tlsca.ReadPEMFile(g.caFile)
		if err != nil {
			return fmt.Errorf("--ca: %w", err)
		}
		t.CAPEM = b
	}
	t.Fingerprint = g.caFingerprint
	hc, err := client.NewHTTPClient(t)
	if err != nil {
		return fmt.Errorf("--ca / --ca-fingerprint: %w", err)
	}
	g.hc = hc
	return nil
}

// credential picks what the CLI presents: --token when given; else, for a
// node on this machine, the node's admin key from the data dir when this
// user can read it (the node's own user); else RBEE_TOKEN. The admin key
// never goes to a node off loopback.
func (g *globals) credential() string {
	if g.tokenSet {
		return g.token
	}
	if client.IsLoopbackURL(g.node) {
		g.adminOnce.Do(func() { g.adminKey = g.findAdminKey() })
		if g.adminKey != "" {
			return g.adminKey
		}
	}
	return g.token
}

// findAdminKey reads the admin key of the node at --node: from --data-dir
// when given, else from the data dir the node names in /health (so a CLI
// pointed at any local node finds that node's key), else the default dir.
// A key file another user owns is skipped unless this is root (it may be
// a file planted for this user to present), and adminUID records the
// owner, the only user the key is sent to.
func (g *globals) findAdminKey() string {
	for _, d := range g.dataDirs() {
		uid, ok := owner.OfPath(filepath.Join(d, node.AdminKeyFile))
		if !ok || (uid != uint32(os.Geteuid()) && os.Geteuid() != 0) {
			continue
		}
		if k, err := node.ReadAdminKey(d); err == nil {
			g.adminUID = uid
			return k
		}
	}
	return ""
}

// dataDirs are the data dirs to read the node's files from, first first:
// --data-dir (or RBEE_DATA_DIR) when given; else the one a local node at
// --node names in /health, then the default (none without a home
// directory: never the working directory).
func (g *globals) dataDirs() []string {
	dirs := g.dataDirsOrNone()
	return slices.DeleteFunc(dirs, func(d string) bool { return d == "" })
}

func (g *globals) dataDirsOrNone() []string {
	if g.dataDirSet || !client.IsLoopbackURL(g.node) {
		return []string{g.dataDir}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c := client.New(g.node, "")
	if g.hc != nil {
		c.HTTP = g.hc
	}
	if d, err := c.DataDir(ctx); err == nil && d != "" && d != g.dataDir {
		return []string{d, g.dataDir}
	}
	return []string{g.dataDir}
}

func (g *globals) json() bool { return g.output == "json" }

func newRootCmd() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "rbee",
		Short:         "rbee pools the machines of a LAN into one LLM inference cluster",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			g.tokenSet = cmd.Flags().Changed("token")
			g.dataDirSet = cmd.Flags().Changed("data-dir") || os.Getenv("RBEE_DATA_DIR") != ""
			if err := expandHome(cmd); err != nil {
				return err
			}
			if g.output != "table" && g.output != "json" {
				return fmt.Errorf("-o must be table or json, not %q", g.output)
			}
			if cmd.Name() == "node" && cmd.Parent() == cmd.Root() {
				return nil // the daemon reads --ca-fingerprint itself
			}
			return g.setupTLS()
		},
	}
	defNode := os.Getenv("RBEE_NODE")
	if defNode == "" {
		defNode = "http://127.0.0.1:7833"
	}
	root.PersistentFlags().StringVar(&g.node, "node", defNode, "node API URL (env RBEE_NODE)")
	root.PersistentFlags().StringVar(&g.token, "token", os.Getenv("RBEE_TOKEN"), "API key (rbee apikey create), needed for a node off this machine (env RBEE_TOKEN); on this machine the CLI uses the node's admin key from --data-dir when it can read it")
	defData := os.Getenv("RBEE_DATA_DIR")
	if defData == "" {
		defData = defaultDataDir()
	}
	root.PersistentFlags().StringVar(&g.dataDir, "data-dir", defData, "the node's data directory (env RBEE_DATA_DIR); client commands read the admin key there")
	root.PersistentFlags().StringVarP(&g.output, "output", "o", "table", "output format: table or json")
	root.PersistentFlags().BoolVar(&g.allowPlainHTTP, "allow-plain-http", os.Getenv("RBEE_ALLOW_PLAIN_HTTP") != "", "send the API key to an http:// --node off this machine (a node run with --insecure-http), unencrypted: anyone on the network can read it (env RBEE_ALLOW_PLAIN_HTTP)")
	root.PersistentFlags().StringVar(&g.caFile, "ca", os.Getenv("RBEE_CA"), "CA certificate `FILE` (PEM) to verify an https:// node with, e.g. the output of 'rbee tls ca' (env RBEE_CA; default: the system's roots)")
	localPaths(root.PersistentFlags(), "data-dir", "ca")
	root.PersistentFlags().StringVar(&g.caFingerprint, "ca-fingerprint", os.Getenv(node.CAFingerprintEnv), "pin the cluster CA by its `FINGERPRINT` (sha256:…, printed by the first node and by 'rbee tls ca -o json'): the CLI accepts only an https:// node whose certificate comes from that CA, and 'rbee node' refuses to join a cluster with another CA (env "+node.CAFingerprintEnv+")")

	root.AddCommand(newNodeCmd(g), newStatusCmd(g), newHiveCmd(g), newJoinCmd(g), newLeaveCmd(g), newTokenCmd(g), newDevCmd(g), newWorkerCmd(g), newInferCmd(g),
		newReleaseCmd(), newAPIKeyCmd(g), newTLSCmd(g), newVersionCmd(g))
	root.SetVersionTemplate(versionTemplate)

	model := &cobra.Command{Use: "model", Short: "Models: download, list, get, delete on a hive; run, tokenize, inspect, synthesize GGUF files locally"}
	model.AddCommand(newModelEngineCommands()...)
	model.AddCommand(newModelClientCommands(g)...)
	root.AddCommand(model)

	bench := &cobra.Command{Use: "bench", Short: "Benchmarks that print machine-readable JSON"}
	bench.AddCommand(newBenchFailoverCmd(g), newBenchScaleCmd(g), newBenchEngineCommand(), newBenchRouteCmd(g), newBenchServeCmd(), newBenchTransferCmd(g), newBenchShardCmd(g))
	root.AddCommand(bench)
	// cobra adds help and completion when it runs; added now, they are
	// made strict with the rest. The completion scripts go to the writer
	// cobra's command holds from now: rootOut, the root's output when the
	// script is written (SetOut comes later, in execute and in tests).
	root.InitDefaultHelpCmd()
	root.SetOut(rootOut{root})
	root.InitDefaultCompletionCmd()
	root.SetOut(nil)
	strictGroups(root)
	explainArgs(root)
	strictHelpAndCompletion(root)
	registerCompletions(root, g)
	return root
}

// rootOut writes to the output root has when it writes.
type rootOut struct{ root *cobra.Command }

func (o rootOut) Write(p []byte) (int, error) { return o.root.OutOrStdout().Write(p) }

// strictHelpAndCompletion makes cobra's own commands refuse what they do
// not know with an error and a non-zero exit, where they print help and
// exit 0: `rbee completion SHELL` a shell it has no script for, `rbee help
// TOPIC` a command that does not exist.
func strictHelpAndCompletion(root *cobra.Command) {
	for _, c := range root.Commands() {
		switch c.Name() {
		case "completion":
			var shells []string
			for _, sh := range []string{"bash", "zsh", "fish", "powershell"} {
				if sub, _, err := c.Find([]string{sh}); err == nil && sub != c {
					shells = append(shells, sh)
				}
			}
			c.Args = func(cmd *cobra.Command, args []string) error {
				if len(args) == 0 {
					return nil
				}
				return fmt.Errorf("unsupported shell %s; one of %s", args[0], strings.Join(shells, ", "))
			}
		case "help":
			c.Run = nil
			c.RunE = func(cmd *cobra.Command, args []string) error {
				found, rest, err := cmd.Root().Find(args)
				if err != nil || found == nil || len(rest) > 0 {
					return fmt.Errorf("unknown help topic %q (`rbee help` lists the commands)", strings.Join(args, " "))
				}
				found.InitDefaultHelpFlag()
				found.InitDefaultVersionFlag()
				return found.Help()
			}
		}
	}
}

// strictGroups makes every command group (a command with subcommands and
// no action of its own) refuse an unknown subcommand with an error and a
// non-zero exit, as the root does, instead of printing help and exiting 0.
func strictGroups(c *cobra.Command) {
	for _, sub := range c.Commands() {
		strictGroups(sub)
	}
	if c == c.Root() || !c.HasSubCommands() || c.Run != nil || c.RunE != nil {
		return
	}
	c.Args = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return nil
		}
		msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
		if cmd.SuggestionsMinimumDistance <= 0 {
			cmd.SuggestionsMinimumDistance = 2
		}
		if sugg := cmd.SuggestionsFor(args[0]); len(sugg) > 0 {
			msg += "; did you mean " + strings.Join(sugg, ", ") + "?"
		}
		return errors.New(msg)
	}
	c.RunE = func(cmd *cobra.Command, args []string) error { return cmd.Help() }
}

// explainArgs makes every command's refusal of its positional arguments
// say which command, what it takes (its usage line) and, for a command
// whose argument names something a list command shows (listedBy), where
// to find one: cobra alone says "accepts 1 arg(s), received 0". Command
// groups keep strictGroups' message.
func explainArgs(c *cobra.Command) {
	for _, sub := range c.Commands() {
		explainArgs(sub)
	}
	check := c.Args
	if check == nil || c.HasSubCommands() {
		return
	}
	c.Args = func(cmd *cobra.Command, args []string) error {
		err := check(cmd, args)
		if err == nil {
			return nil
		}
		msg := fmt.Sprintf("%s: %v (usage: %s", cmd.CommandPath(), err, cmd.UseLine())
		if list := listedBy(cmd.CommandPath()); list != "" {
			msg += "; `" + list + "` lists them"
		}
		return errors.New(msg + ")")
	}
}

func main() {
	// Started under the worker's name (the node catalogs this executable
	// as its cpu worker, file name rbee-worker), rbee is the worker.
	if strings.TrimSuffix(filepath.Base(os.Args[0]), ".exe") == workercmd.Name {
		os.Exit(workercmd.Run(os.Args[1:], os.Stderr))
	}
	if isEngineGuard() {
		os.Exit(engineGuardCmd(os.Args[2:], os.Stderr))
	}
	ctx, stop := notifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := execute(ctx, newRootCmd(), os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
