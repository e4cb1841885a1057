package main

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"
)

// versionTemplate is what --version prints, on rbee and on rbee node, and
// what rbee version prints as a table.
const versionTemplate = "rbee version {{.Version}}\n"

// newVersionCmd prints the version of this rbee binary (-o json adds the
// Go version and the platform); `rbee status` shows each node's.
func newVersionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of this rbee binary (each node's: rbee status)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if g.json() {
				return printJSON(cmd.OutOrStdout(), map[string]string{
					"version": version, "go": runtime.Version(), "os": runtime.GOOS, "arch": runtime.GOARCH,
				})
			}
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "rbee version %s\n", version)
			return err
		},
	}
}
