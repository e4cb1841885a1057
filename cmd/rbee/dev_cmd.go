package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/rbee-project/rbee/node/localcluster"
)

func newDevCmd(g *globals) *cobra.Command {
	var nodes int
	var dir, model string
	var noWorker bool
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Start a local cluster of `rbee node` processes on loopback and keep it running until Ctrl-C (what `make run` does)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if nodes < 1 || nodes > 9 {
				return fmt.Errorf("--nodes must be 1..9")
			}
			bin, err := os.Executable()
			if err != nil {
				return err
			}
			if dir == "" {
				// Kept after exit with the logs in it: the user deletes it.
				if dir, err = os.MkdirTemp("", "rbee-dev-"); err != nil {
					return err
				}
			}
			ctx := cmd.Context()
			cl, err := localcluster.New(localcluster.Config{Binary: bin, Dir: dir, Nodes: nodes, Profile: "local"})
			if err != nil {
				return err
			}
			defer cl.Close()
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "starting %d nodes in %s ...\n", nodes, dir)
			if err := cl.Start(ctx); err != nil {
				return err
			}
			wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
			leader, err := cl.WaitConverged(wctx, min(nodes, 5))
			cancel()
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "cluster is up; leader (queen): %s\n\n", leader)
			sub := func(args ...string) error {
				c := newRootCmd()
				c.SetArgs(args)
				c.SetOut(out)
				return c.ExecuteContext(ctx)
			}
			host := cl.Nodes[len(cl.Nodes)-1]
			entry := cl.Nodes[0]
			if !noWorker {
				fmt.Fprintf(out, "$ rbee worker spawn --model %s --hive %s\n", model, host.Name)
				if err := sub("worker", "spawn", "--model", model, "--hive", host.Name, "--node", entry.URL()); err != nil {
					return fmt.Errorf("spawn a worker: %w (is rbee-worker built next to rbee? `make build` does it)", err)
				}
				fmt.Fprintf(out, "\n$ rbee infer --model stories260k --node %s \"Once upon a time\"   # %s has no worker: the request hops over libp2p\n", entry.URL(), entry.Name)
				if err := sub("infer", "--model", "stories260k", "--temperature", "0", "-n", "60", "--node", entry.URL(), "Once upon a time"); err != nil {
					return err
				}
				fmt.Fprintln(out)
			}
			if err := sub("status", "--node", entry.URL()); err != nil {
				return err
			}
			devTry(out, bin, dir, cl.Nodes, host.Name)
			<-ctx.Done()
			fmt.Fprintln(out, "\nstopping ...")
			defer fmt.Fprintf(out, "stopped; data dirs and logs are kept in %s (delete it when done: rm -r %s)\n", dir, dir)
			return nil
		},
	}
	cmd.Flags().IntVar(&nodes, "nodes", 3, "number of nodes")
	cmd.Flags().StringVar(&model, "model", "builtin:stories260k", "model to serve")
	cmd.Flags().BoolVar(&noWorker, "no-worker", false, "start the nodes only")
	cmd.Flags().StringVar(&dir, "dir", "", "keep data dirs and logs here (default: a new temp dir, kept after exit)")
	localPaths(cmd.Flags(), "dir")
	return cmd
}

// devTry prints how to use a running dev cluster: its nodes' ports, the
// commands to try with the running rbee binary's absolute path (it is
// usually not on PATH: make build puts it in bin/), and where the logs are.
func devTry(out io.Writer, bin, dir string, nodes []*localcluster.Node, host string) {
	entry := nodes[0]
	fmt.Fprintf(out, "\nNodes:\n")
	for _, n := range nodes {
		fmt.Fprintf(out, "  %-6s api %s  gossip %s  p2p %s  log %s\n", n.Name, n.URL(), n.GossipAddr, n.P2PAddr, n.LogPath)
	}
	rbee := bin
	if strings.ContainsAny(rbee, " '\"$\\") {
		rbee = "'" + strings.ReplaceAll(rbee, "'", `'\''`) + "'"
	}
	fmt.Fprintf(out, "\nTry (in another terminal):\n")
	fmt.Fprintf(out, "  export RBEE_NODE=%s\n", entry.URL())
	fmt.Fprintf(out, "  %s status\n  %s worker list\n  %s infer --model stories260k \"Lily went to the park\"\n", rbee, rbee, rbee)
	fmt.Fprintf(out, "  curl -s %s/v1/chat/completions --json '{\"model\":\"stories260k\",\"messages\":[{\"role\":\"user\",\"content\":\"Tell me a story\"}],\"max_tokens\":60}'\n", entry.URL())
	fmt.Fprintf(out, "  %s hive list\n  %s hive status %s\n", rbee, rbee, host)
	fmt.Fprintf(out, "  open %s/ in a browser for the web page\n", entry.URL())
	fmt.Fprintf(out, "Logs: %s (kept after exit)\nPress Ctrl-C to stop.\n", filepath.Join(dir, "node*.log"))
}
