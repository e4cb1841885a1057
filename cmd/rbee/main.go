// Command rbee is the CLI of an rbee cluster and, as `rbee node`, its daemon.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/rbee-project/rbee/node/client"
)

// version is set at link time (-ldflags "-X main.version=v1.2.3").
var version = "dev"

// globals are the flags every client command shares.
type globals struct {
	node   string
	token  string
	output string
}

func (g *globals) client() *client.Client { return client.New(g.node, g.token) }

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
			if g.output != "table" && g.output != "json" {
				return fmt.Errorf("-o must be table or json, not %q", g.output)
			}
			return nil
		},
	}
	defNode := os.Getenv("RBEE_NODE")
	if defNode == "" {
		defNode = "http://127.0.0.1:7833"
	}
	root.PersistentFlags().StringVar(&g.node, "node", defNode, "node API URL (env RBEE_NODE)")
	root.PersistentFlags().StringVar(&g.token, "token", os.Getenv("RBEE_TOKEN"), "cluster token, needed for a node off loopback (env RBEE_TOKEN)")
	root.PersistentFlags().StringVarP(&g.output, "output", "o", "table", "output format: table or json")

	root.AddCommand(newNodeCmd(g), newStatusCmd(g), newHiveCmd(g), newJoinCmd(g), newLeaveCmd(g), newTokenCmd(g), newDevCmd(g), newWorkerCmd(g), newInferCmd(g),
		newReleaseCmd())

	model := &cobra.Command{Use: "model", Short: "Models: download, list, get, delete on a hive; run, tokenize, inspect, synthesize GGUF files locally"}
	model.AddCommand(newModelEngineCommands()...)
	model.AddCommand(newModelClientCommands(g)...)
	root.AddCommand(model)

	bench := &cobra.Command{Use: "bench", Short: "Benchmarks that print machine-readable JSON"}
	bench.AddCommand(newBenchFailoverCmd(g), newBenchEngineCommand(), newBenchRouteCmd(g), newBenchTransferCmd(g))
	root.AddCommand(bench)
	return root
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRootCmd()
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		var je *client.JobError
		if errors.As(err, &je) && je.Code == "unknown_hive" {
			fmt.Fprintln(os.Stderr, "hint: `rbee hive list` shows the hives this cluster knows")
		}
		os.Exit(1)
	}
}
