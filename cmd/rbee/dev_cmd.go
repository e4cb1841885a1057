package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/rbee-project/rbee/node/localcluster"
)

func newDevCmd(g *globals) *cobra.Command {
	var nodes int
	var dir string
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
				if dir, err = os.MkdirTemp("", "rbee-dev-"); err != nil {
					return err
				}
				defer os.RemoveAll(dir)
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
			sub := newRootCmd()
			sub.SetArgs([]string{"status", "--node", cl.Nodes[0].URL()})
			sub.SetOut(out)
			if err := sub.ExecuteContext(ctx); err != nil {
				return err
			}
			fmt.Fprintf(out, "\nTry (in another terminal):\n")
			for _, n := range cl.Nodes {
				fmt.Fprintf(out, "  rbee status --node %s\n", n.URL())
			}
			fmt.Fprintf(out, "  rbee hive list --node %s\n  rbee hive status node2 --node %s\n", cl.Nodes[0].URL(), cl.Nodes[0].URL())
			fmt.Fprintf(out, "Logs: %s\nPress Ctrl-C to stop.\n", filepath.Join(dir, "node*.log"))
			<-ctx.Done()
			fmt.Fprintln(out, "\nstopping ...")
			return nil
		},
	}
	cmd.Flags().IntVar(&nodes, "nodes", 3, "number of nodes")
	cmd.Flags().StringVar(&dir, "dir", "", "keep data dirs and logs here (default: a temp dir, removed on exit)")
	return cmd
}
