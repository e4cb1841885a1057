package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/internal/humanize"
	"github.com/rbee-project/rbee/node/jobs"
	workercat "github.com/rbee-project/rbee/worker/catalog"
)

// confirm asks a yes/no question on a terminal. Without a terminal it
// refuses: destructive commands need --yes in scripts.
func confirm(cmd *cobra.Command, yes bool, question string) error {
	if yes {
		return nil
	}
	if !term.IsTerminal(int(os.Stdin.Fd())) {
		return errors.New("refusing without confirmation: pass --yes")
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "%s [y/N] ", question)
	line, _ := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
	if a := strings.ToLower(strings.TrimSpace(line)); a == "y" || a == "yes" {
		return nil
	}
	return errors.New("cancelled")
}

// runOp runs an operation and prints its result: JSON as is with -o json,
// else decoded as T (the operation's result type of package api) through
// table (which may be nil: then the JSON is printed).
func runOp[T any](cmd *cobra.Command, g *globals, req api.Request, timeout time.Duration, table func(out io.Writer, res T) error) error {
	ctx := cmd.Context()
	if timeout > 0 {
		var cancel func()
		ctx, cancel = contextWithTimeout(ctx, timeout)
		defer cancel()
	}
	var raw json.RawMessage
	pb := newProgress(cmd.ErrOrStderr())
	err := g.client().Result(ctx, req, &raw, func(ev jobs.Event) {
		if ev.Type == jobs.TypeProgress {
			pb.update(ev)
			return
		}
		pb.clear()
		narrate(ev)
	})
	pb.clear()
	if err != nil {
		return err
	}
	if g.json() || table == nil {
		return printJSON(cmd.OutOrStdout(), raw)
	}
	var res T
	if err := json.Unmarshal(raw, &res); err != nil {
		return fmt.Errorf("%s: unexpected result: %w", req.Operation(), err)
	}
	return table(cmd.OutOrStdout(), res)
}

func hiveFlag(cmd *cobra.Command, hive *string) {
	cmd.Flags().StringVar(hive, "hive", "", "the hive (node name) to run on (default: the node the CLI talks to)")
}

func workerRows(ws []api.WorkerView) [][]string {
	var rows [][]string
	for _, w := range ws {
		age := "-"
		if w.LastHeartbeatAgeMs >= 0 {
			age = (time.Duration(w.LastHeartbeatAgeMs) * time.Millisecond).Round(100 * time.Millisecond).String()
		}
		rows = append(rows, []string{w.ID, w.Node, w.Model, w.Device, w.State, humanize.OrDash(w.LiveState),
			strconv.Itoa(w.InFlight + w.Queued), fmt.Sprintf("%.1f", w.TokensPerSecond), age})
	}
	return rows
}

// spawnOutput is worker_spawn's result: a worker's, or a group's (Group
// set).
type spawnOutput struct {
	api.SpawnResult
	Group *api.GroupView `json:"group,omitempty"`
}

var groupHeader = []string{"GROUP", "MODEL", "MODE", "STATE", "SHARDS"}

func groupRows(gs []api.GroupView) [][]string {
	var rows [][]string
	for _, g := range gs {
		var shards []string
		for _, s := range g.Shards {
			shards = append(shards, fmt.Sprintf("%s:%s[%d,%d)", s.WorkerID, s.Node, s.Lo, s.Hi))
		}
		state := g.State
		if g.Error != "" {
			state += " (" + g.Error + ")"
		}
		rows = append(rows, []string{g.ID, g.Model, g.Mode, state, strings.Join(shards, " ")})
	}
	return rows
}

var workerHeader = []string{"ID", "NODE", "MODEL", "DEVICE", "STATE", "LIVE", "IN FLIGHT", "TOK/S", "HEARTBEAT"}

func newWorkerCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "worker", Short: "Workers: the cluster's workers, and binaries and processes on a hive"}

	list := &cobra.Command{
		Use:   "list",
		Short: "List every worker in the cluster (from the registry)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runOp(cmd, g, api.WorkerListRequest{}, 30*time.Second, func(out io.Writer, res api.WorkerListResult) error {
				if len(res.Workers) == 0 {
					fmt.Fprintln(out, "no workers (start one with `rbee worker spawn --model builtin:stories260k`)")
					return nil
				}
				table(out, workerHeader, workerRows(res.Workers))
				if len(res.Groups) > 0 {
					fmt.Fprintln(out)
					table(out, groupHeader, groupRows(res.Groups))
				}
				return nil
			})
		},
	}
	get := &cobra.Command{
		Use:   "get ID",
		Short: "Show one worker",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runOp(cmd, g, api.WorkerGetRequest{WorkerID: args[0]}, 30*time.Second, func(out io.Writer, w api.WorkerView) error {
				table(out, workerHeader, workerRows([]api.WorkerView{w}))
				if w.Group != nil {
					fmt.Fprintln(out)
					table(out, groupHeader, groupRows([]api.GroupView{*w.Group}))
				}
				return nil
			})
		},
	}
	var yes bool
	retire := &cobra.Command{
		Use:   "retire ID",
		Short: "Stop routing new requests to a worker, let in-flight ones finish, then stop it (a group's id or shard: the whole group)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := confirm(cmd, yes, fmt.Sprintf("Retire worker %s?", args[0])); err != nil {
				return err
			}
			return runOp(cmd, g, api.WorkerRetireRequest{WorkerID: args[0]}, 60*time.Second, func(out io.Writer, _ api.WorkerView) error {
				fmt.Fprintf(out, "worker %s is retiring\n", args[0])
				return nil
			})
		},
	}
	retire.Flags().BoolVar(&yes, "yes", false, "do not ask for confirmation")

	var sp struct {
		model, device, typ, id, version, mode  string
		kv                                     string
		threads, slots, ctx, gpuLayers, shards int
		gpus                                   []int
		hives                                  []string
	}
	spawn := &cobra.Command{
		Use:   "spawn --model M",
		Short: "Start a worker process on a hive; it is registered when ready",
		Long: `Start a worker process on a hive; it is registered when ready.

--type cpu (the default) is rbee's own engine. --type llama-server, vllm,
ollama or openai start an engine registered on the hive with
` + "`rbee worker binary add`" + `, on loopback, with the worker's secret as its
API key where the engine takes one (llama-server, vLLM):

  rbee worker spawn --type llama-server --model hf:ORG/REPO:Q4_K_M --hive gpu-box --gpu 0 --ctx 8192

--shards N spreads one model over N cpu workers on N hives (a group): a
pipeline of layer ranges (--mode pipeline, the default) or a tensor split
of KV heads (--mode tensor), sized to each hive's free RAM. Name the hives
with --hive, once per shard (the first is the group's head, where requests
go), or let the node pick those with the most free RAM. Without --hive and
--shards, a cpu worker is split by itself when no hive has the RAM for the
model alone:

  rbee worker spawn --model M --shards 2 --hive box-a --hive box-b --mode tensor`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if sp.model == "" {
				return errors.New("--model is required (a catalog id or a model reference such as builtin:stories260k)")
			}
			if sp.shards < 0 || sp.shards < 2 && cmd.Flags().Changed("shards") {
				return fmt.Errorf("--shards %d: a group has 2 or more shards (leave --shards out for one worker)", sp.shards)
			}
			// -1 is --gpu-layers' "unset" (the request leaves it out), so a
			// lower value would silently mean the default.
			if sp.gpuLayers < -1 {
				return fmt.Errorf("--gpu-layers %d: want -1 (all with --gpu, none without) or 0 or more layers", sp.gpuLayers)
			}
			for _, c := range []struct {
				flag string
				v    int
			}{{"threads", sp.threads}, {"slots", sp.slots}, {"ctx", sp.ctx}} {
				if c.v < 0 {
					return fmt.Errorf("--%s %d: want 0 (the default) or more", c.flag, c.v)
				}
			}
			for _, i := range sp.gpus {
				if i < 0 {
					return fmt.Errorf("--gpu %d: want a GPU index, 0 or more", i)
				}
			}
			if sp.mode != "" && sp.shards < 2 && len(sp.hives) < 2 {
				return errors.New("--mode splits a group: give --shards N (2 or more) or --hive once per shard")
			}
			req := api.WorkerSpawnRequest{Model: g.localModelRef(sp.model, strings.Join(sp.hives, ",")), Device: sp.device, Type: sp.typ,
				Threads: sp.threads, Slots: sp.slots, WorkerID: sp.id, Version: sp.version, GPUs: sp.gpus, Ctx: sp.ctx, KVCache: sp.kv}
			if sp.gpuLayers >= 0 {
				req.GPULayers = &sp.gpuLayers
			}
			if len(sp.hives) > 0 {
				req.Hive = sp.hives[0]
			}
			if sp.shards > 1 || len(sp.hives) > 1 {
				req.Shards, req.Hives, req.Mode = sp.shards, sp.hives, sp.mode
			}
			return runOp(cmd, g, req, 0, func(out io.Writer, res spawnOutput) error {
				if res.Group != nil {
					fmt.Fprintf(out, "group %s (%s, %s) of %d shards, head %s: %s\n", res.Group.ID, res.Model, res.Group.Mode, len(res.Group.Shards), res.WorkerID, res.State)
					table(out, groupHeader, groupRows([]api.GroupView{*res.Group}))
					return nil
				}
				fmt.Fprintf(out, "worker %s (%s) on %s: pid %d, port %d, binary %s, %s\n", res.WorkerID, res.Model, res.Node, res.PID, res.Port, res.BinaryVersion, res.State)
				return nil
			})
		},
	}
	spawn.Flags().StringVar(&sp.model, "model", "", "model: a catalog id or a reference (hf:ORG/REPO[:QUANT], URL, path, builtin:stories260k)")
	spawn.Flags().StringVar(&sp.device, "device", "", "device: cpu, or for engines gpu, cuda, rocm, vulkan, metal (default: cpu for the cpu worker, gpu for engines)")
	spawn.Flags().StringVar(&sp.typ, "type", "cpu", "worker type: cpu, llama-server, vllm, ollama, openai")
	spawn.Flags().IntSliceVar(&sp.gpus, "gpu", nil, "GPU index the engine may use (repeat for several; default: the engine's choice)")
	spawn.Flags().IntVar(&sp.ctx, "ctx", 0, "context length in tokens per slot (0 = the model's, capped by the worker or engine)")
	spawn.Flags().StringVar(&sp.kv, "kv-cache", "", "cpu worker's KV cache type: f16 (the default, as llama.cpp) or f32 (twice the memory)")
	spawn.Flags().IntVar(&sp.gpuLayers, "gpu-layers", -1, "layers to offload to the GPUs (-1 = all with --gpu, none without)")
	spawn.Flags().StringVar(&sp.version, "version", "", "worker binary version (default: the hive's default binary: pinned, else built there or of the node's version)")
	spawn.Flags().IntVar(&sp.threads, "threads", 0, "threads (0 = all cores)")
	spawn.Flags().IntVar(&sp.slots, "slots", 0, "concurrent generations (0 = the worker's default)")
	spawn.Flags().StringVar(&sp.id, "worker-id", "", "worker id (default: generated)")
	spawn.Flags().StringArrayVar(&sp.hives, "hive", nil, "the hive (node name) to run on (default: the node the CLI talks to, or for a cpu worker too large for its RAM a hive that has it, or a group); with --shards, once per shard, the head first")
	spawn.Flags().IntVar(&sp.shards, "shards", 0, "spread the model over this many cpu workers on as many hives (a group: 2 or more; left out: one worker)")
	spawn.Flags().StringVar(&sp.mode, "mode", "", "how a group splits the model: pipeline (layer ranges, the default) or tensor (KV heads of every layer)")

	cmd.AddCommand(list, get, retire, spawn, newBinaryCmd(g), newProcessCmd(g), newBuildCmd(g), newDownloadCmd(g))
	return cmd
}

func newBinaryCmd(g *globals) *cobra.Command {
	var hive string
	var yes bool
	cmd := &cobra.Command{Use: "binary", Short: "The worker binary catalog of a hive"}
	printEntries := func(out io.Writer, res api.BinaryListResult) error {
		var rows [][]string
		for _, b := range res.Binaries {
			where := short(b.SHA256)
			if b.Source == "registered" {
				where = b.Path // the user's file, not a catalog copy
			}
			rows = append(rows, []string{b.Type, b.Version, b.OS + "/" + b.Arch, humanize.Bytes(uint64(b.Size)), string(b.Source),
				humanize.OrDash(strings.Join(b.Devices, ",")), where})
		}
		table(out, []string{"TYPE", "VERSION", "PLATFORM", "SIZE", "SOURCE", "DEVICES", "SHA256 / PATH"}, rows)
		return nil
	}
	list := &cobra.Command{Use: "list", Short: "List worker binaries", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runOp(cmd, g, api.BinaryListRequest{OnHive: api.OnHive{Hive: hive}}, 30*time.Second, printEntries)
		}}
	var getVersion string
	get := &cobra.Command{Use: "get TYPE", Short: "Show a worker binary (the newest of its type for the hive's platform, or --version)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := api.BinaryGetRequest{OnHive: api.OnHive{Hive: hive}, Type: args[0], Version: getVersion}
			return runOp(cmd, g, req, 30*time.Second, func(out io.Writer, b api.Binary) error {
				table(out, []string{"FIELD", "VALUE"}, [][]string{{"type", b.Type}, {"version", b.Version}, {"platform", b.OS + "/" + b.Arch},
					{"path", b.Path}, {"size", humanize.Bytes(uint64(b.Size))}, {"sha256", b.SHA256}, {"source", string(b.Source)},
					{"added", b.Added.Format(time.RFC3339)}, {"signed", fmt.Sprint(b.Signed)}, {"default", fmt.Sprint(b.Pinned)},
					{"devices", strings.Join(b.Devices, ", ")}})
				return nil
			})
		}}
	get.Flags().StringVar(&getVersion, "version", "", "the version to show (default: the newest)")
	var delVersion string
	var delAll bool
	del := &cobra.Command{Use: "delete TYPE", Short: "Delete a worker binary: one version, or every version with --all (refused while a process of it runs)",
		Long: `Delete a worker binary from a hive's catalog (a registered engine's file stays
where it is). --version V deletes that version (every platform of it);
without it the command deletes the type's only version, and refuses when
there are several: name one with --version, or delete them all with --all.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			typ := args[0]
			if typ == "" {
				typ = workercat.TypeCPU // as the node reads it
			}
			if delAll && delVersion != "" {
				return errors.New("--all deletes every version: give --all or --version V, not both")
			}
			req := api.BinaryDeleteRequest{OnHive: api.OnHive{Hive: hive}, Type: typ, Version: delVersion}
			question := fmt.Sprintf("Delete the %s worker binary %s?", typ, delVersion)
			if delVersion == "" {
				on, versions, err := binaryVersions(cmd, g, hive, typ)
				if err != nil {
					return err
				}
				switch {
				case len(versions) == 0:
					return fmt.Errorf("%s has no %s worker binary (`rbee worker binary list` shows what it has)", on, typ)
				case delAll:
					question = fmt.Sprintf("Delete every version of the %s worker binary (%s)?", typ, strings.Join(versions, ", "))
				case len(versions) > 1:
					return fmt.Errorf("%s has %d %s worker binary versions: %s; name one with --version V, or delete them all with --all",
						on, len(versions), typ, strings.Join(versions, ", "))
				case len(versions) == 1:
					// The only one, by name: a version added meanwhile stays.
					req.Version = versions[0]
					question = fmt.Sprintf("Delete the %s worker binary %s?", typ, req.Version)
				}
			}
			if err := confirm(cmd, yes, question); err != nil {
				return err
			}
			return runOp(cmd, g, req, 30*time.Second, func(out io.Writer, res api.BinaryDeleteResult) error {
				for _, e := range res.Deleted {
					fmt.Fprintf(out, "deleted %s %s (%s/%s)\n", e.Type, e.Version, e.OS, e.Arch)
				}
				if len(res.Deleted) == 0 {
					fmt.Fprintln(out, "deleted nothing")
				}
				return nil
			})
		}}
	del.Flags().StringVar(&delVersion, "version", "", "the version to delete (default: the only one; refused when there are several)")
	del.Flags().BoolVar(&delAll, "all", false, "delete every version of the type")
	del.Flags().BoolVar(&yes, "yes", false, "do not ask for confirmation")
	var add struct {
		typ, path, version, template, health string
		devices                              []string
		pin                                  bool
	}
	addCmd := &cobra.Command{Use: "add --type T --path P", Short: "Register an engine installed on a hive (llama-server, vllm, ollama, or any OpenAI-compatible server)",
		Long: `Register an engine you installed on the hive, where it is (its shared libraries
stay next to it; deleting the entry never deletes the file). The path must be an
existing executable file on the hive. Admin only.

  rbee worker binary add --type llama-server --path /opt/llama.cpp/build/bin/llama-server --device cuda
  rbee worker binary add --type openai --path /usr/local/bin/my-server       --template '--model {model} --port {port} --ctx-size {ctx} --n-gpu-layers {gpu_layers}' --health /health

A template (type openai only) is split at blanks, without a shell; leading
NAME=value words become environment variables. Placeholders: {model} {model_id}
{port} {host} {ctx} {gpu_layers} {threads} {gpus} {id} {socket}; {port} or
{socket} is required. Use {socket} (a Unix socket only the node's user can
reach) where the server can listen on one: on {port} alone every local user
of the hive can call it, and each spawn warns so.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if add.path == "" {
				return errors.New("--path is required (the engine's executable on the hive)")
			}
			p := add.path
			if hive == "" && !filepath.IsAbs(p) {
				if abs, err := filepath.Abs(p); err == nil {
					p = abs
				}
			}
			req := api.BinaryAddRequest{OnHive: api.OnHive{Hive: hive}, Type: add.typ, Path: p, Version: add.version,
				Template: add.template, Health: add.health, Devices: add.devices, Default: add.pin}
			return runOp(cmd, g, req, 30*time.Second, func(out io.Writer, e api.Binary) error {
				fmt.Fprintf(out, "%s %s registered: %s\n", e.Type, e.Version, e.Path)
				return nil
			})
		}}
	addCmd.Flags().StringVar(&add.typ, "type", "", "engine type: llama-server, vllm, ollama, openai")
	addCmd.Flags().StringVar(&add.path, "path", "", "the engine's executable on the hive")
	addCmd.Flags().StringVar(&add.version, "version", "", "a version name of your choice (default: local)")
	addCmd.Flags().StringVar(&add.template, "template", "", "command template (type openai only)")
	addCmd.Flags().StringVar(&add.health, "health", "", "health path that answers 200 once ready (default: /health)")
	addCmd.Flags().StringSliceVar(&add.devices, "device", nil, "devices the build drives: cuda, rocm, vulkan, metal, cpu (repeatable)")
	addCmd.Flags().BoolVar(&add.pin, "default", false, "make it the default binary of its type")
	_ = addCmd.MarkFlagRequired("type")
	for _, c := range []*cobra.Command{list, get, del, addCmd} {
		hiveFlag(c, &hive)
	}
	cmd.AddCommand(list, get, del, addCmd)
	return cmd
}

// binaryVersions are the versions of the worker binaries of typ on hive
// (any platform), sorted, and the hive's name.
func binaryVersions(cmd *cobra.Command, g *globals, hive, typ string) (string, []string, error) {
	ctx, cancel := contextWithTimeout(cmd.Context(), 30*time.Second)
	defer cancel()
	var res api.BinaryListResult
	if err := g.client().Result(ctx, api.BinaryListRequest{OnHive: api.OnHive{Hive: hive}}, &res, nil); err != nil {
		return "", nil, err
	}
	var versions []string
	for _, b := range res.Binaries {
		if b.Type == typ && !slices.Contains(versions, b.Version) {
			versions = append(versions, b.Version)
		}
	}
	sort.Strings(versions)
	on := res.Node
	if on == "" {
		on = "the hive"
	}
	return on, versions, nil
}

func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return humanize.OrDash(s)
}

func newProcessCmd(g *globals) *cobra.Command {
	var hive string
	var yes bool
	cmd := &cobra.Command{Use: "process", Short: "Worker processes rbee started on a hive"}
	list := &cobra.Command{Use: "list", Short: "List worker processes", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runOp(cmd, g, api.ProcessListRequest{OnHive: api.OnHive{Hive: hive}}, 30*time.Second, func(out io.Writer, res api.ProcessListResult) error {
				var rows [][]string
				for _, p := range res.Processes {
					rows = append(rows, []string{strconv.Itoa(p.PID), p.WorkerID, p.ModelID, strconv.Itoa(p.Port), humanize.Bytes(p.RSS),
						fmt.Sprintf("%.1f%%", p.CPUPercent), p.Uptime.Round(time.Second).String()})
				}
				table(out, []string{"PID", "WORKER", "MODEL", "PORT", "RSS", "CPU", "UPTIME"}, rows)
				return nil
			})
		}}
	get := &cobra.Command{Use: "get PID", Short: "Show a worker process", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pid, err := strconv.Atoi(args[0])
			if err != nil || pid <= 0 {
				return fmt.Errorf("PID must be a positive number")
			}
			return runOp(cmd, g, api.ProcessGetRequest{OnHive: api.OnHive{Hive: hive}, PID: pid}, 30*time.Second, func(out io.Writer, p api.Process) error {
				table(out, []string{"FIELD", "VALUE"}, [][]string{{"pid", strconv.Itoa(p.PID)}, {"worker", p.WorkerID}, {"type", p.Type},
					{"model", humanize.OrDash(p.ModelID)}, {"port", strconv.Itoa(p.Port)}, {"device", humanize.OrDash(p.Device)},
					{"rss", humanize.Bytes(p.RSS)}, {"cpu", fmt.Sprintf("%.1f%%", p.CPUPercent)}, {"uptime", p.Uptime.Round(time.Second).String()},
					{"binary", p.Binary}, {"log", p.LogPath}})
				return nil
			})
		}}
	del := &cobra.Command{Use: "delete PID", Short: "Stop a worker process rbee started (SIGTERM, then SIGKILL)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pid, err := strconv.Atoi(args[0])
			if err != nil || pid <= 0 {
				return fmt.Errorf("PID must be a positive number")
			}
			if err := confirm(cmd, yes, fmt.Sprintf("Stop worker process %d?", pid)); err != nil {
				return err
			}
			return runOp(cmd, g, api.ProcessDeleteRequest{OnHive: api.OnHive{Hive: hive}, PID: pid}, 2*time.Minute, func(out io.Writer, res api.ProcessDeleteResult) error {
				fmt.Fprintf(out, "stopped %d (worker %s)\n", res.PID, res.WorkerID)
				return nil
			})
		}}
	del.Flags().BoolVar(&yes, "yes", false, "do not ask for confirmation")
	for _, c := range []*cobra.Command{list, get, del} {
		hiveFlag(c, &hive)
	}
	cmd.AddCommand(list, get, del)
	return cmd
}

func newBuildCmd(g *globals) *cobra.Command {
	var hive, typ, module, goos, goarch string
	cmd := &cobra.Command{Use: "build", Short: "Build a worker binary on a hive from source (streams the build output)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			req := api.WorkerBuildRequest{OnHive: api.OnHive{Hive: hive}, Type: typ, OS: goos, Arch: goarch, Module: module}
			return runOp(cmd, g, req, 0, func(out io.Writer, e api.Binary) error {
				fmt.Fprintf(out, "built %s %s: %s\n", e.Type, e.Version, e.Path)
				return nil
			})
		}}
	cmd.Flags().StringVar(&typ, "type", "cpu", "worker type (or rbee: rbee itself, for 'rbee hive install' on other platforms)")
	cmd.Flags().StringVar(&module, "module-version", "", "build this module version instead of the node's source tree")
	cmd.Flags().StringVar(&goos, "os", "", "target OS (default: the hive's); cross-compiles from the source tree")
	cmd.Flags().StringVar(&goarch, "arch", "", "target architecture (default: the hive's)")
	hiveFlag(cmd, &hive)
	return cmd
}

func newDownloadCmd(g *globals) *cobra.Command {
	var hive, typ, version, goos, goarch, accel string
	var pin bool
	cmd := &cobra.Command{Use: "download", Short: "Download a signed worker release to a hive (from a peer, else the node's release location)",
		Long: `Download a worker binary to a hive: a copy from a peer that has the same
version and platform, else the release location the node was started with
(rbee node --worker-release-url). Either way the binary must be part of a
release signed by the rbee release key or a key the node trusts
(rbee node --worker-release-key); anything else is refused.

A downloaded binary becomes the default for new workers only when its version
is the node's own or with --default; otherwise spawn it by version:
rbee worker spawn --version V.

--type llama-server fetches llama.cpp's server as an archive built for the
hive's accelerator (--accel, default from its GPUs: cuda for NVIDIA, rocm
for AMD, metal on Apple, vulkan for others, else cpu) from
{release location}/llama-server/{version}/, checks it against the signed
SHA256SUMS, unpacks it (with its shared libraries) and installs it
atomically. Engine archives are not copied between hives.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			req := api.WorkerDownloadRequest{OnHive: api.OnHive{Hive: hive}, Type: typ, Version: version, OS: goos, Arch: goarch, Accel: accel, Default: pin}
			return runOp(cmd, g, req, 0, func(out io.Writer, e api.Binary) error {
				fmt.Fprintf(out, "downloaded %s %s: %s\n", e.Type, e.Version, e.Path)
				if e.Pinned {
					fmt.Fprintf(out, "%s %s is now the default for new %s workers\n", e.Type, e.Version, e.Type)
				}
				return nil
			})
		}}
	cmd.Flags().StringVar(&typ, "type", "cpu", "worker type: cpu, or llama-server (an engine archive)")
	cmd.Flags().StringVar(&version, "version", "", "version (default: the latest release)")
	cmd.Flags().StringVar(&accel, "accel", "", "llama-server build: cpu, cuda, rocm, vulkan or metal (default: from the hive's GPUs)")
	cmd.Flags().BoolVar(&pin, "default", false, "make this binary the default for new workers of its type, whatever its version")
	cmd.Flags().StringVar(&goos, "os", "", "target OS (default: the hive's)")
	cmd.Flags().StringVar(&goarch, "arch", "", "target architecture (default: the hive's)")
	hiveFlag(cmd, &hive)
	return cmd
}
