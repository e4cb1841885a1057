package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/rbee-project/rbee/internal/engineguard"
	"github.com/rbee-project/rbee/internal/nodefile"
)

// engineGuardCmd is the hidden `rbee engine-guard` the node runs external
// engines under (see internal/engineguard):
//
//	rbee engine-guard --node URL --node-id ID --grace D [--interval D] -- ENGINE ARGS...
func engineGuardCmd(args []string, stderr io.Writer) int {
	cfg := engineguard.DefaultConfig()
	fs := flag.NewFlagSet("engine-guard", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.NodeURL, "node", "", "the node's API URL")
	fs.StringVar(&cfg.NodeID, "node-id", "", "the node's id, as its /health reports it")
	fs.DurationVar(&cfg.Grace, "grace", cfg.Grace, "stop the engine once the node has been gone this long")
	fs.DurationVar(&cfg.Interval, "interval", cfg.Interval, "how often to ask the node")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg.Command = fs.Args()
	cfg.NodeFile = os.Getenv(nodefile.Env)
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, nil)).With("component", "engine-guard")
	code, err := engineguard.Run(context.Background(), cfg)
	if err != nil {
		fmt.Fprintln(stderr, "engine-guard:", err)
	}
	return code
}

// isEngineGuard reports whether rbee was started as the engine guard.
func isEngineGuard() bool { return len(os.Args) > 1 && os.Args[1] == "engine-guard" }
