package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/node/jobs"
)

func newInferCmd(g *globals) *cobra.Command {
	var model, hive, device, workerID string
	var n, topK int
	var temp, topP float64
	var seed int64
	cmd := &cobra.Command{
		Use:   "infer --model M [PROMPT | -]",
		Short: "Run a prompt on the cluster: the text streams to stdout, narration to stderr",
		Long: `Run a prompt on the cluster: the text streams to stdout, narration to stderr.
The prompt is the arguments; with "-", or with none while stdin is not a terminal,
it is read from stdin (echo "Once upon" | rbee infer --model stories260k).`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if model == "" && workerID == "" {
				return errors.New("--model is required (see `rbee worker list` for the models served)")
			}
			if err := checkSampling(cmd.Flags(), n, temp, topP, topK); err != nil {
				return err
			}
			prompt, err := promptFrom(args, cmd.InOrStdin())
			if err != nil {
				return err
			}
			req := api.InferRequest{Model: model, Hive: hive, Device: device, WorkerID: workerID, Prompt: &prompt, MaxTokens: n}
			f := cmd.Flags()
			if f.Changed("temperature") {
				t := float32(temp)
				req.Temperature = &t
			}
			if f.Changed("top-p") {
				p := float32(topP)
				req.TopP = &p
			}
			if f.Changed("top-k") {
				req.TopK = &topK
			}
			if f.Changed("seed") {
				req.Seed = &seed
			}
			out := cmd.OutOrStdout()
			var result []byte
			err = g.client().Run(cmd.Context(), req, func(ev jobs.Event) error {
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
	f.IntVarP(&n, "max-tokens", "n", defaultInferTokens, "maximum tokens to generate (1 or more)")
	f.Float64Var(&temp, "temperature", 0.8, "sampling temperature (0 = greedy)")
	f.Float64Var(&topP, "top-p", 0.95, "nucleus sampling, 0 to 1")
	f.IntVar(&topK, "top-k", 40, "top-k sampling (0 = off)")
	f.Int64Var(&seed, "seed", 0, "sampling seed")
	return cmd
}

// defaultInferTokens is what `rbee infer` asks for without -n. It is
// always sent: a request without max_tokens runs until the model stops or
// its context is full, not what the help says.
const defaultInferTokens = 128

// checkSampling refuses values of infer's flags that the API refuses or
// that would not mean what they say: -n 0 would be left out of the
// request (max_tokens is omitted when 0) and generate the worker's
// default. The sampling flags are checked only when given, as only then
// are they sent.
func checkSampling(f *pflag.FlagSet, n int, temp, topP float64, topK int) error {
	if n < 1 {
		return fmt.Errorf("-n/--max-tokens %d: want 1 or more tokens", n)
	}
	if f.Changed("temperature") && !(temp >= 0) {
		return fmt.Errorf("--temperature %v: want 0 (greedy) or more", temp)
	}
	if f.Changed("top-p") && !(topP >= 0 && topP <= 1) {
		return fmt.Errorf("--top-p %v: want 0 to 1", topP)
	}
	if f.Changed("top-k") && topK < 0 {
		return fmt.Errorf("--top-k %d: want 0 (off) or more", topK)
	}
	return nil
}

type jsonRaw []byte

func (j jsonRaw) MarshalJSON() ([]byte, error) {
	if len(j) == 0 {
		return []byte("null"), nil
	}
	return j, nil
}

// maxStdinPrompt bounds a prompt read from stdin: the node refuses job
// requests over 1 MiB anyway.
const maxStdinPrompt = 1 << 20

// promptFrom is the prompt of `rbee infer`: the arguments, or stdin for
// "-" or for no arguments when stdin is not a terminal.
func promptFrom(args []string, stdin io.Reader) (string, error) {
	fromStdin := len(args) == 1 && args[0] == "-"
	if len(args) == 0 {
		f, ok := stdin.(*os.File)
		if ok && term.IsTerminal(int(f.Fd())) {
			return "", errors.New("a prompt is required: as arguments, or on stdin (rbee infer --model M - < prompt.txt)")
		}
		fromStdin = true
	}
	if !fromStdin {
		return strings.Join(args, " "), nil
	}
	b, err := io.ReadAll(io.LimitReader(stdin, maxStdinPrompt+1))
	if err != nil {
		return "", fmt.Errorf("read the prompt from stdin: %w", err)
	}
	if len(b) > maxStdinPrompt {
		return "", fmt.Errorf("the prompt on stdin is over %d bytes", maxStdinPrompt)
	}
	p := strings.TrimRight(string(b), "\n")
	if strings.TrimSpace(p) == "" {
		return "", errors.New("the prompt on stdin is empty")
	}
	return p, nil
}
