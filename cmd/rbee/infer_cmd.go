package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/rbee-project/rbee/node/jobs"
)

func newInferCmd(g *globals) *cobra.Command {
	var model, hive, device, workerID string
	var n, topK int
	var temp, topP float64
	var seed int64
	cmd := &cobra.Command{
		Use:   "infer --model M PROMPT",
		Short: "Run a prompt on the cluster: the text streams to stdout, narration to stderr",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if model == "" && workerID == "" {
				return errors.New("--model is required (see `rbee worker list` for the models served)")
			}
			req := map[string]any{"operation": "infer", "model": model, "prompt": strings.Join(args, " "), "max_tokens": n}
			if hive != "" {
				req["hive"] = hive
			}
			if device != "" {
				req["device"] = device
			}
			if workerID != "" {
				req["worker_id"] = workerID
			}
			f := cmd.Flags()
			if f.Changed("temperature") {
				req["temperature"] = temp
			}
			if f.Changed("top-p") {
				req["top_p"] = topP
			}
			if f.Changed("top-k") {
				req["top_k"] = topK
			}
			if f.Changed("seed") {
				req["seed"] = seed
			}
			out := cmd.OutOrStdout()
			var result []byte
			err := g.client().Run(cmd.Context(), req, func(ev jobs.Event) error {
				switch ev.Type {
				case jobs.TypeToken:
					if !g.json() {
						fmt.Fprint(out, ev.Text)
					}
				case jobs.TypeResult:
					result = ev.Result
				default:
					narrate(ev)
				}
				return nil
			})
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(out, jsonRaw(result))
			}
			fmt.Fprintln(out)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&model, "model", "", "model to use")
	f.StringVar(&hive, "hive", "", "only workers on this hive")
	f.StringVar(&device, "device", "", "only workers on this device")
	f.StringVar(&workerID, "worker-id", "", "this worker")
	f.IntVarP(&n, "max-tokens", "n", 128, "maximum tokens to generate")
	f.Float64Var(&temp, "temperature", 0.8, "sampling temperature (0 = greedy)")
	f.Float64Var(&topP, "top-p", 0.95, "nucleus sampling")
	f.IntVar(&topK, "top-k", 40, "top-k sampling")
	f.Int64Var(&seed, "seed", 0, "sampling seed")
	return cmd
}

type jsonRaw []byte

func (j jsonRaw) MarshalJSON() ([]byte, error) {
	if len(j) == 0 {
		return []byte("null"), nil
	}
	return j, nil
}
