package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/internal/humanize"
)

func newModelClientCommands(g *globals) []*cobra.Command {
	var hive string
	var all, yes bool
	download := &cobra.Command{
		Use:   "download REF",
		Short: "Download a model to a hive (from a peer that has it, else its origin); resumable and verified",
		Long: `REF is one of:
  hf:ORG/REPO              a GGUF of the repo, by quantization preference
  hf:ORG/REPO:Q4_K_M       that quantization
  hf:ORG/REPO/FILE.gguf    that file
  https://...              a URL (append #sha256=HEX to verify)
  /path/to/file.gguf       a local file
  builtin:stories260k      the tiny model bundled in the binary`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runOp(cmd, g, api.ModelDownloadRequest{OnHive: api.OnHive{Hive: hive}, Model: g.localModelRef(args[0], hive)}, 0, func(out io.Writer, e api.Model) error {
				fmt.Fprintf(out, "%s: %s, %s, %s\n", e.ID, e.FileName, humanize.Bytes(uint64(e.Size)), e.Quantization)
				return nil
			})
		},
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the models of the cluster and the nodes holding each (with --hive, one hive's catalog)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			// The cluster view unless a hive is named.
			all := all || hive == ""
			req := api.ModelListRequest{OnHive: api.OnHive{Hive: hive}, All: all}
			if all {
				return runOp(cmd, g, req, 30*time.Second, func(out io.Writer, res api.ClusterModelListResult) error {
					var rows [][]string
					for _, m := range res.Models {
						rows = append(rows, []string{m.ID, humanize.Bytes(m.Size), humanize.OrDash(m.Quantization), short(m.SHA256), strings.Join(m.Nodes, ",")})
					}
					table(out, []string{"ID", "SIZE", "QUANT", "SHA256", "NODES"}, rows)
					return nil
				})
			}
			return runOp(cmd, g, req, 30*time.Second, func(out io.Writer, res api.ModelListResult) error {
				var rows [][]string
				for _, m := range res.Models {
					rows = append(rows, []string{m.ID, m.FileName, humanize.Bytes(uint64(m.Size)), humanize.OrDash(m.Quantization), short(m.SHA256)})
				}
				table(out, []string{"ID", "FILE", "SIZE", "QUANT", "SHA256"}, rows)
				return nil
			})
		},
	}
	list.Flags().BoolVar(&all, "all", false, "cluster-wide even with --hive (the default without it)")
	get := &cobra.Command{
		Use:   "get ID",
		Short: "Show a model of a hive's catalog",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runOp(cmd, g, api.ModelGetRequest{OnHive: api.OnHive{Hive: hive}, ID: args[0]}, 30*time.Second, func(out io.Writer, e api.Model) error {
				table(out, []string{"FIELD", "VALUE"}, [][]string{{"id", e.ID}, {"file", e.FileName}, {"size", humanize.Bytes(uint64(e.Size))},
					{"sha256", e.SHA256}, {"architecture", e.Architecture}, {"parameters", fmt.Sprint(e.Parameters)},
					{"quantization", e.Quantization}, {"context", fmt.Sprint(e.ContextLength)}, {"source", string(e.Source)}})
				return nil
			})
		},
	}
	del := &cobra.Command{
		Use:   "delete ID",
		Short: "Delete a model from a hive (refused while a worker uses it)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := confirm(cmd, yes, fmt.Sprintf("Delete model %s?", args[0])); err != nil {
				return err
			}
			return runOp(cmd, g, api.ModelDeleteRequest{OnHive: api.OnHive{Hive: hive}, ID: args[0]}, 30*time.Second, func(out io.Writer, res api.ModelDeleteResult) error {
				fmt.Fprintf(out, "deleted %s from %s\n", res.Deleted, res.Node)
				return nil
			})
		},
	}
	del.Flags().BoolVar(&yes, "yes", false, "do not ask for confirmation")
	for _, c := range []*cobra.Command{download, list, get, del} {
		hiveFlag(c, &hive)
	}
	return []*cobra.Command{download, list, get, del}
}
