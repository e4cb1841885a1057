package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/rbee-project/rbee/internal/humanize"
)

type modelEntry struct {
	ID            string `json:"id"`
	FileName      string `json:"file_name"`
	Size          int64  `json:"size"`
	SHA256        string `json:"sha256"`
	Quantization  string `json:"quantization"`
	Architecture  string `json:"architecture"`
	Parameters    uint64 `json:"parameters"`
	ContextLength uint64 `json:"context_length"`
	Source        string `json:"source"`
}

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
			return runOp(cmd, g, withHive(map[string]any{"operation": "model_download", "model": args[0]}, hive), 0, func(out io.Writer, raw json.RawMessage) error {
				var e modelEntry
				if err := json.Unmarshal(raw, &e); err != nil {
					return err
				}
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
			req := withHive(map[string]any{"operation": "model_list", "all": all}, hive)
			return runOp(cmd, g, req, 30*time.Second, func(out io.Writer, raw json.RawMessage) error {
				if all {
					var res struct {
						Models []struct {
							ID, SHA256, Quantization string
							Size                     uint64
							Nodes                    []string
						} `json:"models"`
					}
					if err := json.Unmarshal(raw, &res); err != nil {
						return err
					}
					var rows [][]string
					for _, m := range res.Models {
						rows = append(rows, []string{m.ID, humanize.Bytes(m.Size), humanize.OrDash(m.Quantization), short(m.SHA256), strings.Join(m.Nodes, ",")})
					}
					table(out, []string{"ID", "SIZE", "QUANT", "SHA256", "NODES"}, rows)
					return nil
				}
				var res struct {
					Models []modelEntry `json:"models"`
				}
				if err := json.Unmarshal(raw, &res); err != nil {
					return err
				}
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
			return runOp(cmd, g, withHive(map[string]any{"operation": "model_get", "id": args[0]}, hive), 30*time.Second, func(out io.Writer, raw json.RawMessage) error {
				var e modelEntry
				if err := json.Unmarshal(raw, &e); err != nil {
					return err
				}
				table(out, []string{"FIELD", "VALUE"}, [][]string{{"id", e.ID}, {"file", e.FileName}, {"size", humanize.Bytes(uint64(e.Size))},
					{"sha256", e.SHA256}, {"architecture", e.Architecture}, {"parameters", fmt.Sprint(e.Parameters)},
					{"quantization", e.Quantization}, {"context", fmt.Sprint(e.ContextLength)}, {"source", e.Source}})
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
			return runOp(cmd, g, withHive(map[string]any{"operation": "model_delete", "id": args[0]}, hive), 30*time.Second, func(out io.Writer, raw json.RawMessage) error {
				fmt.Fprintf(out, "deleted %s\n", args[0])
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
