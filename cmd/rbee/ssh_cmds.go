package main

import (
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/internal/humanize"
)

// sshCommands are the `rbee hive` subcommands that manage hosts over SSH.
func sshCommands(g *globals) []*cobra.Command {
	var sshConfig string
	var overwrite, acceptNew, purge, yes bool
	var path, dataDir string
	var startReq api.HiveStartRequest
	say := func(msg string) func(io.Writer, json.RawMessage) error {
		return func(out io.Writer, _ json.RawMessage) error {
			fmt.Fprintln(out, msg)
			return nil
		}
	}
	imp := &cobra.Command{
		Use:   "import-ssh",
		Short: "Add the hosts of an OpenSSH config (default ~/.ssh/config of the node's user) to the inventory",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			// The node reads the file; a relative path means this shell's
			// directory, which a node on this machine does not share.
			if sshConfig != "" && !filepath.IsAbs(sshConfig) && !strings.HasPrefix(sshConfig, "~") {
				abs, err := filepath.Abs(sshConfig)
				if err != nil {
					return err
				}
				sshConfig = abs
			}
			req := api.ImportSSHRequest{SSHConfig: sshConfig, Overwrite: overwrite}
			return runOp(cmd, g, req, time.Minute, func(out io.Writer, res api.ImportSSHResult) error {
				fmt.Fprintf(out, "added %d, updated %d, skipped %d host(s); see `rbee hive list`\n", len(res.Added), len(res.Updated), len(res.Skipped))
				return nil
			})
		},
	}
	imp.Flags().StringVar(&sshConfig, "ssh-config", "", "OpenSSH client config to read (a path on the node's machine; a relative one is made absolute here)")
	imp.Flags().BoolVar(&overwrite, "overwrite", false, "replace existing inventory entries")

	test := &cobra.Command{
		Use:   "ssh-test NAME",
		Short: "Connect to a host, verify its key against known_hosts, run a command",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runOp(cmd, g, api.SSHTestRequest{Name: args[0], AcceptNew: acceptNew}, time.Minute, func(out io.Writer, r api.SSHTestResult) error {
				fmt.Fprintln(out, sshTestLine(args[0], r))
				return nil
			})
		},
	}
	test.Flags().BoolVar(&acceptNew, "accept-new", false, "record an unknown host key (like OpenSSH's accept-new); a changed key is always refused")

	install := &cobra.Command{
		Use:   "install NAME",
		Short: "Copy rbee to a host over SFTP and install a service there",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runOp(cmd, g, api.HiveInstallRequest{Name: args[0], Path: path}, 5*time.Minute, func(out io.Writer, res api.InstallResult) error {
				fmt.Fprintln(out, installLine(res))
				return nil
			})
		},
	}
	install.Flags().StringVar(&path, "path", "", "where the binary goes on the host (default ~/.local/bin/rbee)")

	start := &cobra.Command{
		Use:   "start NAME",
		Short: "Start a node on a host that joins this cluster (the secret travels in a 0600 file, never on a command line)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := startReq
			req.Name, req.DataDir = args[0], dataDir
			return runOp(cmd, g, req, 3*time.Minute, say(args[0]+" joined the cluster"))
		},
	}
	start.Flags().StringVar(&dataDir, "remote-data-dir", "", "data dir on the host (default: the node's default there); not the global --data-dir, which is this machine's")
	start.Flags().StringVar(&startReq.HTTPAddr, "http-addr", "", "the remote node's --http-addr (default: rbee node's)")
	start.Flags().StringVar(&startReq.GossipAddr, "gossip-addr", "", "the remote node's --gossip-addr (default: rbee node's)")
	start.Flags().StringVar(&startReq.P2PAddr, "p2p-addr", "", "the remote node's --p2p-addr (default: rbee node's)")
	start.Flags().StringArrayVar(&startReq.NodeArgs, "node-arg", nil, "a further argument for the remote rbee node, e.g. --node-arg=--memory-limit=8GiB (repeatable)")

	stop := &cobra.Command{
		Use:   "stop NAME",
		Short: "Stop the node on a host: graceful leave over p2p (workers first), SSH as the fallback",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runOp(cmd, g, api.HiveStopRequest{Name: args[0]}, 3*time.Minute, say(args[0]+" stopped"))
		},
	}

	uninstall := &cobra.Command{
		Use:   "uninstall NAME",
		Short: "Stop rbee on a host and remove its binary and service (--purge: its data dir too)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			what := "binary and service"
			if purge {
				what += " and data dir"
			}
			if err := confirm(cmd, yes, fmt.Sprintf("Remove rbee's %s from %s?", what, args[0])); err != nil {
				return err
			}
			return runOp(cmd, g, api.HiveUninstallRequest{Name: args[0], Purge: purge, DataDir: dataDir}, 3*time.Minute, say("uninstalled"))
		},
	}
	uninstall.Flags().BoolVar(&purge, "purge", false, "also remove the node's data dir there")
	uninstall.Flags().BoolVar(&yes, "yes", false, "do not ask for confirmation")
	uninstall.Flags().StringVar(&dataDir, "remote-data-dir", "", "the data dir on the host to purge (default: the one hive start used, from its run script)")
	return []*cobra.Command{imp, test, install, start, stop, uninstall}
}

// The remote host writes the version (what its rbee prints), the uname and,
// through its $HOME, the install path: a hostile host could put terminal
// escapes in them, so they are printed through terminalSafe.

// sshTestLine is ssh-test's summary line.
func sshTestLine(name string, r api.SSHTestResult) string {
	return terminalSafe(fmt.Sprintf("%s: ok, %s/%s, round trip %.2f ms, rbee %s", name, r.OS, r.Arch, r.RoundTripMs,
		humanize.OrDash(bareVersion(r.RbeeVersion))))
}

// installLine is hive install's summary line.
func installLine(res api.InstallResult) string {
	return terminalSafe(fmt.Sprintf("installed %s (rbee %s, service: %s)", res.BinaryPath, humanize.OrDash(bareVersion(res.Version)), res.Service))
}

// bareVersion is a version as `rbee --version` prints it ("rbee version
// X") without the words, for lines that say "rbee" themselves.
func bareVersion(v string) string {
	return strings.TrimPrefix(strings.TrimSpace(v), "rbee version ")
}
