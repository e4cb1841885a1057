package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/node/client"
)

// Dynamic shell completion (cobra's `rbee completion bash|zsh|fish`): hive
// names, worker ids and model ids come from the node at --node, asked with
// a short timeout; on any error the completion offers nothing.

// completionTimeout bounds the one API call a completion makes.
const completionTimeout = time.Second

// clusterNames is what completions offer, from GET /v1/cluster.
type clusterNames struct {
	Hives, Workers, Models []string
}

func (g *globals) clusterNames(ctx context.Context) (clusterNames, bool) {
	ctx, cancel := context.WithTimeout(ctx, completionTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(g.node, "/")+"/v1/cluster", nil)
	if err != nil {
		return clusterNames{}, false
	}
	if g.token != "" && (g.allowPlainHTTP || client.Encrypted(req.URL)) {
		req.Header.Set("Authorization", "Bearer "+g.token)
	}
	hc := http.DefaultClient
	if g.hc != nil {
		hc = g.hc
	}
	resp, err := hc.Do(req)
	if err != nil {
		return clusterNames{}, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return clusterNames{}, false
	}
	var snap api.ClusterSnapshot
	if err := json.NewDecoder(io.LimitReader(resp.Body, 8<<20)).Decode(&snap); err != nil {
		return clusterNames{}, false
	}
	var out clusterNames
	for _, n := range snap.Status.Nodes {
		out.Hives = append(out.Hives, n.Name)
	}
	for _, w := range snap.Status.Workers {
		out.Workers = append(out.Workers, w.ID)
		out.Models = append(out.Models, w.Model)
	}
	for _, m := range snap.Status.Models {
		out.Models = append(out.Models, m.ModelID)
	}
	out.Hives, out.Workers, out.Models = uniq(out.Hives), uniq(out.Workers), uniq(out.Models)
	return out, true
}

// uniq sorts ss and drops empty and repeated entries.
func uniq(ss []string) []string {
	sort.Strings(ss)
	out := ss[:0]
	for i, s := range ss {
		if s != "" && (i == 0 || s != ss[i-1]) {
			out = append(out, s)
		}
	}
	return out
}

// completeFrom returns a completion function offering pick(names) that
// start with what was typed; nothing (and no file names) on error.
func (g *globals) completeFrom(pick func(clusterNames) []string, extra ...string) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		names, ok := g.clusterNames(cmd.Context())
		if !ok {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []string
		for _, s := range append(pick(names), extra...) {
			if strings.HasPrefix(s, toComplete) {
				out = append(out, s)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// firstArg completes only the first positional argument.
func firstArg(f cobra.CompletionFunc) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return f(cmd, args, toComplete)
	}
}

// Commands whose first argument names a hive, a worker or a model of the
// cluster (by command path).
var (
	hiveArgCmds   = []string{"rbee hive get", "rbee hive status", "rbee hive refresh-capabilities", "rbee hive ssh-test", "rbee hive start", "rbee hive stop", "rbee hive install", "rbee hive uninstall"}
	workerArgCmds = []string{"rbee worker get", "rbee worker retire"}
	modelArgCmds  = []string{"rbee model get", "rbee model delete"}
	// modelFlagCmds take a cluster model in --model (the engine commands
	// take a local file there).
	modelFlagCmds = []string{"rbee infer", "rbee worker spawn"}
)

// listedBy names the command that lists what the first argument of the
// command at path names (an existing hive, worker, model, key, binary or
// process), or "".
func listedBy(path string) string {
	for list, cmds := range map[string][]string{
		"rbee hive list":           hiveArgCmds,
		"rbee worker list":         workerArgCmds,
		"rbee model list":          modelArgCmds,
		"rbee apikey list":         {"rbee apikey revoke"},
		"rbee worker binary list":  {"rbee worker binary get", "rbee worker binary delete"},
		"rbee worker process list": {"rbee worker process get", "rbee worker process delete"},
	} {
		if slices.Contains(cmds, path) {
			return list
		}
	}
	return ""
}

// registerCompletions adds the dynamic completions to the command tree.
func registerCompletions(root *cobra.Command, g *globals) {
	hives := g.completeFrom(func(n clusterNames) []string { return n.Hives })
	workers := g.completeFrom(func(n clusterNames) []string { return n.Workers })
	models := g.completeFrom(func(n clusterNames) []string { return n.Models })
	spawnModels := g.completeFrom(func(n clusterNames) []string { return n.Models }, "builtin:stories260k")
	var visit func(c *cobra.Command)
	visit = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			visit(sub)
		}
		path := c.CommandPath()
		if c.Flags().Lookup("hive") != nil {
			_ = c.RegisterFlagCompletionFunc("hive", hives)
		}
		if slices.Contains(modelFlagCmds, path) && c.Flags().Lookup("model") != nil {
			f := models
			if path == "rbee worker spawn" {
				f = spawnModels
			}
			_ = c.RegisterFlagCompletionFunc("model", f)
		}
		switch {
		case slices.Contains(hiveArgCmds, path):
			c.ValidArgsFunction = firstArg(hives)
		case slices.Contains(workerArgCmds, path):
			c.ValidArgsFunction = firstArg(workers)
		case slices.Contains(modelArgCmds, path):
			c.ValidArgsFunction = firstArg(models)
		}
	}
	visit(root)
}
