package main

import (
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/internal/humanize"
	"github.com/rbee-project/rbee/node"
)

func role(h api.Hive) string {
	switch {
	case h.Leader:
		return "leader"
	case h.Suffrage != "":
		return h.Suffrage
	}
	return "-"
}

func hardware(h api.Hive) string {
	c := h.Capabilities
	if c == nil {
		return "-"
	}
	s := fmt.Sprintf("%d cores, %s", c.Cores, humanize.Bytes(c.RAMTotal))
	for _, g := range c.GPUs {
		s += fmt.Sprintf(", %s %s", g.Vendor, humanize.Bytes(g.VRAMTotal))
	}
	return s
}

func hiveRows(hs []api.Hive) [][]string {
	var rows [][]string
	for _, h := range hs {
		rows = append(rows, []string{h.Name, h.State, stateAge(h), role(h), humanize.OrDash(h.HTTPAddr), humanize.OrDash(h.HTTPSAddr), humanize.OrDash(h.Version), hardware(h)})
	}
	return rows
}

var hiveHeader = []string{"NAME", "STATE", "SINCE", "ROLE", "API", "HTTPS", "VERSION", "HARDWARE"}

// stateAge is how long a hive has been in its state, by the answering
// node's clock ("-" for a hive it knows only from the registry).
func stateAge(h api.Hive) string {
	switch {
	case h.StateAgeMs != nil:
		return humanize.Age(time.Duration(*h.StateAgeMs) * time.Millisecond)
	case h.StateSince != nil: // an older node
		return humanize.Age(time.Since(*h.StateSince))
	}
	return "-"
}

// statusNodes is the line under the node table of a cut status (the
// node answered with a summary): how many nodes there are in each state
// and how many are not listed.
func statusNodes(st api.StatusResult) string {
	if st.Summary == nil {
		return ""
	}
	total := 0
	var parts []string
	for _, state := range []string{"alive", "suspect", "dead", "left"} {
		if c := st.Summary.Nodes[state]; c > 0 {
			total += c
			parts = append(parts, fmt.Sprintf("%d %s", c, state))
		}
	}
	return fmt.Sprintf("%d nodes (%s); %d more alive nodes that do not vote (replicas) not listed: rbee status --all, or rbee hive list", total, strings.Join(parts, ", "), total-len(st.Nodes))
}

func newStatusCmd(g *globals) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the cluster: leader, nodes, workers, models",
		Long: `Show the cluster: leader, nodes, workers, models. Past 20 nodes the node
answers with a summary: the leader, the voters, itself and every node that is
not alive, the workers that are not ready, and counts of the rest (also with
-o json, under "summary"). --all asks for everything.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runOp(cmd, g, api.StatusRequest{All: all}, 30*time.Second, func(out io.Writer, st api.StatusResult) error {
				leader := st.Leader
				if leader == "" {
					leader = "(none: election in progress or no quorum)"
				}
				fmt.Fprintf(out, "Leader (queen): %s\nAnswered by:    %s (%s)\n", leader, st.Node, st.RaftState)
				if st.Stale {
					contact := "never"
					if c := st.LastLeaderContact; c != nil {
						contact = c.Local().Format(time.RFC3339) + " (" + time.Since(*c).Round(time.Second).String() + " ago)"
					}
					fmt.Fprintf(out, "Registry:       STALE (last known copy; last leader contact: %s)\n", contact)
				}
				if st.RegistryHalted != "" {
					fmt.Fprintf(out, "Registry:       HALTED on %s: %s\n", st.Node, st.RegistryHalted)
				}
				workers, models := len(st.Workers), len(st.Models)
				if sum := st.Summary; sum != nil {
					workers, models = 0, sum.Models
					for _, c := range sum.Workers {
						workers += c
					}
				}
				fmt.Fprintf(out, "Workers: %d   Model copies (a model on a node): %d   In flight: %d\n\n", workers, models, st.InFlight)
				rest := statusNodes(st)
				table(out, hiveHeader, hiveRows(st.Nodes))
				if rest != "" {
					fmt.Fprintln(out, rest)
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "list every node, however many")
	return cmd
}

func newHiveCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "hive", Short: "Hives: the machines of the cluster"}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the hives (members and known hosts)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runOp(cmd, g, api.HiveListRequest{}, 30*time.Second, func(out io.Writer, res api.HiveListResult) error {
				table(out, hiveHeader, hiveRows(res.Hives))
				return nil
			})
		},
	}
	get := &cobra.Command{
		Use:   "get NAME",
		Short: "Show one hive",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runOp(cmd, g, api.HiveGetRequest{Name: args[0]}, 30*time.Second, func(out io.Writer, h api.Hive) error {
				rows := [][]string{{"name", h.Name}, {"id", h.ID}, {"state", h.State}, {"role", role(h)},
					{"api", humanize.OrDash(h.HTTPAddr)}, {"https", humanize.OrDash(h.HTTPSAddr)}, {"gossip", humanize.OrDash(h.GossipAddr)}, {"p2p", humanize.OrDash(strings.Join(h.P2PAddrs, " "))},
					{"version", humanize.OrDash(h.Version)}}
				if s := h.Host; s != nil {
					port := ""
					if s.Port > 0 {
						port = ":" + strconv.Itoa(s.Port)
					}
					rows = append(rows, []string{"ssh", humanize.OrDash(s.User) + "@" + s.Host + port},
						[]string{"ssh identity", humanize.OrDash(s.IdentityFile)}, []string{"ssh state", humanize.OrDash(string(s.State))})
				}
				if c := h.Capabilities; c != nil {
					rows = append(rows, []string{"cpu", fmt.Sprintf("%s (%d cores, %d threads)", c.CPUModel, c.Cores, c.Threads)},
						[]string{"ram", humanize.Bytes(c.RAMTotal)}, []string{"os/arch", c.OS + "/" + c.Arch})
					for i, gpu := range c.GPUs {
						rows = append(rows, []string{"gpu" + strconv.Itoa(i), fmt.Sprintf("%s %s, %s VRAM", gpu.Vendor, gpu.Name, humanize.Bytes(gpu.VRAMTotal))})
					}
				}
				table(out, []string{"FIELD", "VALUE"}, rows)
				return nil
			})
		},
	}
	status := &cobra.Command{
		Use:   "status NAME",
		Short: "Check a hive: gossip state, p2p round trip, API health",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runOp(cmd, g, api.HiveStatusRequest{Name: args[0]}, 30*time.Second, func(out io.Writer, st api.HiveStatus) error {
				p2p := fmt.Sprintf("%.2f ms", st.P2PRTTMs)
				if st.P2PError != "" {
					p2p = "unreachable: " + st.P2PError
				}
				health := "healthy"
				if !st.APIHealthy {
					health = "unhealthy: " + st.APIError
				}
				table(out, []string{"FIELD", "VALUE"}, [][]string{{"name", st.Name}, {"gossip", st.GossipState},
					{"p2p round trip", p2p}, {"api", health}, {"raft", humanize.OrDash(st.RaftState)}})
				return nil
			})
		},
	}
	refresh := &cobra.Command{
		Use:   "refresh-capabilities NAME",
		Short: "Re-detect a hive's CPU, RAM and GPUs and store them in the registry",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := api.HiveRefreshCapabilitiesRequest{OnHive: api.OnHive{Hive: args[0]}}
			return runOp(cmd, g, req, 30*time.Second, func(out io.Writer, c api.Capabilities) error {
				fmt.Fprintf(out, "capabilities stored: %d cores, %s RAM, %d GPU(s)\n", c.Cores, humanize.Bytes(c.RAMTotal), len(c.GPUs))
				return nil
			})
		},
	}
	cmd.AddCommand(list, get, status, refresh)
	cmd.AddCommand(sshCommands(g)...)
	return cmd
}

func newJoinCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "join ADDR...",
		Short: "Tell the running node to join the cluster at ADDR (a gossip address, port 7834 by default)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := waitCtx(cmd.Context())
			defer cancel()
			for i, a := range args {
				args[i] = withGossipPort(a)
			}
			n, err := g.client().Join(ctx, args)
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(cmd.OutOrStdout(), map[string]int{"joined": n})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "joined: contacted %d node(s)\n", n)
			return nil
		},
	}
}

func newLeaveCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "leave",
		Short: "Leave the cluster gracefully and stop the node",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := waitCtx(cmd.Context())
			defer cancel()
			if err := g.client().Leave(ctx); err != nil {
				return err
			}
			if g.json() {
				return printJSON(cmd.OutOrStdout(), map[string]string{"status": "leaving"})
			}
			fmt.Fprintln(cmd.OutOrStdout(), "the node is leaving the cluster")
			return nil
		},
	}
}

func newTokenCmd(g *globals) *cobra.Command {
	var admin bool
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Print the cluster token and the join command (reads the node's data dir)",
		Long: `Print the cluster secret and the command that joins another machine (with
the cluster CA's fingerprint once the node knows it), read from the node's data dir (--data-dir, env RBEE_DATA_DIR, else the one the node at
--node names): only the node's own user can read them. The token goes to stdout alone (TOK=$(rbee token)), the join command to stderr. With --admin, print the node's local admin key instead: the
credential the CLI uses on the node's machine, e.g. for the web page.

The cluster secret joins nodes; it is not an API credential on this machine.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			dirs := g.dataDirs()
			if len(dirs) == 0 {
				return errNoDataDir
			}
			dir := dirs[0]
			if admin {
				k, err := node.ReadAdminKey(dir)
				if err != nil {
					return fmt.Errorf("%w (run as the node's user, or point --data-dir at its data dir)", err)
				}
				if g.json() {
					return printJSON(cmd.OutOrStdout(), map[string]string{"admin_key": k})
				}
				fmt.Fprintln(cmd.OutOrStdout(), k)
				return nil
			}
			tok, err := node.ReadSecret(dir)
			if err != nil {
				return fmt.Errorf("read the cluster secret: %w (run as the node's user, or point --data-dir at its data dir)", err)
			}
			addr, fp := "<this-node>:7834", ""
			if ni, err := node.ReadNodeInfo(dir); err == nil {
				if ni.GossipAddr != "" {
					addr = ni.GossipAddr
				}
				fp = ni.CAFingerprint
			}
			join := node.JoinCommand(addr, tok, fp)
			if g.json() {
				out := map[string]string{"token": tok, "join_command": join}
				if fp != "" {
					out["ca_fingerprint"] = fp
				}
				return printJSON(cmd.OutOrStdout(), out)
			}
			// The token alone on stdout (TOK=$(rbee token)); the join
			// command for a person on stderr.
			fmt.Fprintln(cmd.OutOrStdout(), tok)
			fmt.Fprintf(cmd.ErrOrStderr(), "Join another machine with:\n  %s\n", join)
			return nil
		},
	}
	cmd.Flags().BoolVar(&admin, "admin", false, "print the local admin key instead of the cluster secret")
	return cmd
}

// withGossipPort adds the default gossip port to a join address that has
// none: a host name, an IPv4 address, or an IPv6 address with or without
// brackets (::1 and [::1] were sent on without a port and refused).
func withGossipPort(addr string) string {
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return addr
	}
	host := strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]")
	if ip := net.ParseIP(host); ip != nil || !strings.Contains(addr, ":") {
		_, port, _ := net.SplitHostPort(node.DefaultGossipAddr)
		return net.JoinHostPort(host, port)
	}
	return addr
}
