package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/rbee-project/rbee/internal/limitread"
	"github.com/rbee-project/rbee/model/engine"
	"github.com/rbee-project/rbee/model/gguf"
	"github.com/rbee-project/rbee/model/quant"
	"github.com/rbee-project/rbee/model/synth"
	"github.com/rbee-project/rbee/model/tokenizer"
)

// newModelEngineCommands returns `run`, `tokenize`, `inspect` and `synth`,
// the local-file model commands that live under `rbee model`.
func newModelEngineCommands() []*cobra.Command {
	return []*cobra.Command{newModelRunCmd(), newModelTokenizeCmd(), newModelInspectCmd(), newModelSynthCmd()}
}

// outputFlag adds -o/--output (table|json) to cmd; it shadows the root's
// persistent flag of the same name so that the command also works alone.
func outputFlag(cmd *cobra.Command, dst *string) {
	cmd.Flags().StringVarP(dst, "output", "o", "table", "output format: table or json")
}

func checkOutput(o string) error {
	if o != "table" && o != "json" {
		return fmt.Errorf("-o must be table or json, not %q", o)
	}
	return nil
}

// isTerminal reports whether w is a character device such as a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// runOutput is `rbee model run -o json`'s object.
type runOutput struct {
	PromptIDs    []int32 `json:"prompt_ids"`
	GeneratedIDs []int32 `json:"generated_ids"`
	Text         string  `json:"text"`
}

func newModelRunCmd() *cobra.Command {
	var (
		prompt, output              string
		n, threads, topK, ctxSize   int
		temp, topP, minP, repeatPen float32
		seed                        int64
		chat                        bool
		kv                          engine.KVType
	)
	cmd := &cobra.Command{
		Use:   "run FILE.gguf|builtin:NAME",
		Short: "Generate text from a local GGUF model (streams the text to stdout)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			path, cleanup, err := localModel(args[0])
			if err != nil {
				return err
			}
			defer cleanup()
			m, err := engine.Load(path, engine.Options{Threads: threads, ContextSize: ctxSize, KVCache: kv})
			if err != nil {
				return err
			}
			defer m.Close()
			tok := m.Tokenizer()
			var ids []int32
			switch {
			case chat:
				if ids, err = m.ChatTokens(cmd.Context(), []engine.Message{{Role: "user", Content: prompt}}); err != nil {
					return err
				}
			case prompt == "":
				if tok.BOS() < 0 {
					return errors.New("empty prompt and the model has no BOS token")
				}
				ids = []int32{tok.BOS()}
			default:
				ids = tok.Encode(prompt, tok.AddBOS(), false)
			}
			s := uint64(seed)
			if seed < 0 {
				s = uint64(time.Now().UnixNano())
			}
			req := engine.GenerateRequest{Prompt: ids, MaxTokens: n, Sample: engine.SampleParams{
				Temperature: temp, TopK: topK, TopP: topP, MinP: minP, RepeatPenalty: repeatPen, Seed: s,
			}}
			out := cmd.OutOrStdout()
			var gen []int32
			var text strings.Builder
			_, err = m.NewSession().Generate(cmd.Context(), req, func(t engine.Token) error {
				if t.ID >= 0 {
					gen = append(gen, t.ID)
				}
				if output == "json" {
					text.WriteString(t.Text)
					return nil
				}
				_, err := io.WriteString(out, t.Text)
				return err
			})
			if err != nil {
				return err
			}
			if output == "json" {
				if gen == nil {
					gen = []int32{}
				}
				b, err := json.Marshal(runOutput{PromptIDs: ids, GeneratedIDs: gen, Text: text.String()})
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(out, "%s\n", b)
				return err
			}
			if isTerminal(out) { // keep the shell prompt off the text; pipes get the text only
				_, err = fmt.Fprintln(out)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&prompt, "prompt", "", "prompt text (empty: start from BOS alone)")
	f.IntVarP(&n, "n", "n", 128, "tokens to generate (0: until the context is full)")
	f.Float32Var(&temp, "temperature", 0.8, "sampling temperature (0: greedy)")
	f.IntVar(&topK, "top-k", 40, "top-k (0: off)")
	f.Float32Var(&topP, "top-p", 0.95, "top-p (1: off)")
	f.Float32Var(&minP, "min-p", 0.05, "min-p (0: off)")
	f.Float32Var(&repeatPen, "repeat-penalty", 1, "repetition penalty over the last 64 tokens (1: off)")
	f.Int64Var(&seed, "seed", -1, "random seed (-1: from the clock)")
	f.IntVar(&threads, "threads", 0, "compute threads (0: all cores)")
	f.IntVar(&ctxSize, "ctx", 0, "context size (0: the model's, at most 4096)")
	f.BoolVar(&chat, "chat", false, "wrap the prompt as a user message in the model's chat template")
	f.Var(&kv, "kv-cache", "element type of the KV cache: f16 (llama.cpp's default) or f32")
	outputFlag(cmd, &output)
	return cmd
}

func newModelTokenizeCmd() *cobra.Command {
	var (
		text, textFile, output string
		bos, special           bool
	)
	cmd := &cobra.Command{
		Use:   "tokenize FILE.gguf (--text TEXT | --text-file F)",
		Short: "Print the token ids of a text with a GGUF model's tokenizer",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if cmd.Flags().Changed("text") == cmd.Flags().Changed("text-file") {
				return errors.New("give exactly one of --text and --text-file")
			}
			if textFile != "" {
				b, err := readBounded(textFile, maxTextFile)
				if err != nil {
					return err
				}
				text = string(b)
			}
			path, cleanup, err := localModel(args[0])
			if err != nil {
				return err
			}
			defer cleanup()
			f, err := gguf.Open(path)
			if err != nil {
				return err
			}
			defer f.Close()
			tok, err := tokenizer.FromGGUF(f)
			if err != nil {
				return err
			}
			ids := tok.Encode(text, bos, special)
			if ids == nil {
				ids = []int32{}
			}
			out := cmd.OutOrStdout()
			if output == "json" {
				b, err := json.Marshal(ids)
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(out, "%s\n", b)
				return err
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tPIECE")
			for _, id := range ids {
				fmt.Fprintf(tw, "%d\t%q\n", id, tok.PieceSpecial(id))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&text, "text", "", "text to tokenize")
	cmd.Flags().StringVar(&textFile, "text-file", "", "file whose content to tokenize")
	localPaths(cmd.Flags(), "text-file")
	cmd.Flags().BoolVar(&bos, "bos", false, "prepend the BOS token")
	cmd.Flags().BoolVar(&special, "special", false, "parse special-token text (e.g. <s>) as special tokens")
	outputFlag(cmd, &output)
	return cmd
}

func newModelInspectCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "inspect FILE.gguf",
		Short: "Show a GGUF file's metadata and tensors",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			path, cleanup, err := localModel(args[0])
			if err != nil {
				return err
			}
			defer cleanup()
			f, err := gguf.Open(path)
			if err != nil {
				return err
			}
			defer f.Close()
			ins := engine.Inspect(f)
			out := cmd.OutOrStdout()
			if output == "json" {
				return writeJSON(out, ins)
			}
			fmt.Fprintf(out, "GGUF v%d, alignment %d, data offset %d, %d metadata pairs, %d tensors\n\n",
				ins.Version, ins.Alignment, ins.DataOffset, len(ins.Metadata), len(ins.Tensors))
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "KEY\tTYPE\tVALUE")
			for _, e := range ins.Metadata {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", cellSafe(e.Key), e.Type, cellSafe(e.Summary))
			}
			fmt.Fprintln(tw, "\t\t")
			fmt.Fprintln(tw, "TENSOR\tTYPE\tDIMS\tBYTES")
			for _, t := range ins.Tensors {
				fmt.Fprintf(tw, "%s\t%s\t%v\t%d\n", cellSafe(t.Name), t.Type, t.Dims, t.Bytes)
			}
			return tw.Flush()
		},
	}
	outputFlag(cmd, &output)
	return cmd
}

func newModelSynthCmd() *cobra.Command {
	cfg := synth.DefaultConfig()
	var typ string
	var seed uint64
	cmd := &cobra.Command{
		Use:   "synth OUT.gguf",
		Short: "Write a random-weight model of a given shape and architecture (for benchmarks and tests)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := quant.ParseType(typ)
			if err != nil {
				return err
			}
			cfg.Type, cfg.Seed = t, seed
			if err := synth.Write(args[0], cfg); err != nil {
				return err
			}
			if f := cmd.Flag("output"); f != nil && f.Value.String() == "json" {
				return writeJSON(cmd.OutOrStdout(), map[string]string{"file": args[0]})
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s\n", args[0])
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Arch, "arch", cfg.Arch, "architecture: "+strings.Join(synth.Archs(), ", "))
	f.IntVar(&cfg.SlidingWindow, "sliding-window", 0, "gemma2/gemma3/gpt-oss: attention.sliding_window (default: the architecture's; gpt-oss 128)")
	f.Float32Var(&cfg.AttnCap, "attn-softcap", 0, "gemma2: attn_logit_softcapping (default 50)")
	f.IntVar(&cfg.OrigCtx, "orig-ctx", 0, "LongRoPE: rope.scaling.original_context_length, with short and long factor tensors")
	f.Float32Var(&cfg.RopeAttnFactor, "rope-attn-factor", 0, "rope.scaling.attn_factor")
	f.Float32Var(&cfg.YarnFactor, "yarn-factor", 0, "YaRN rope scaling by this factor (with --orig-ctx: the original context, no LongRoPE tensors)")
	f.IntVar(&cfg.Experts, "experts", 0, "experts per FFN (a mixture of experts; llama becomes Mixtral-like; qwen2moe, qwen3moe and gpt-oss need them)")
	f.IntVar(&cfg.ExpertsUsed, "experts-used", 0, "experts each token uses")
	f.IntVar(&cfg.ExpertFF, "expert-ff", 0, "an expert's FFN width (default: ff for llama, ff/experts-used for the others)")
	f.IntVar(&cfg.SharedFF, "shared-ff", 0, "qwen2moe: the shared expert's FFN width (default: ff)")
	f.Float32Var(&cfg.FinalCap, "final-softcap", 0, "gemma2/gemma3: final_logit_softcapping (default 30 for gemma2, none for gemma3)")
	f.IntVar(&cfg.Dim, "dim", cfg.Dim, "embedding length")
	f.IntVar(&cfg.Layers, "layers", cfg.Layers, "transformer blocks")
	f.IntVar(&cfg.Heads, "heads", cfg.Heads, "attention heads")
	f.IntVar(&cfg.KVHeads, "kv-heads", cfg.KVHeads, "key/value heads")
	f.IntVar(&cfg.HeadDim, "head-dim", 0, "length of one attention head (default: dim / heads)")
	f.Float32Var(&cfg.Std, "std", cfg.Std, "standard deviation of the random weights")
	f.Float32Var(&cfg.EmbedStd, "embed-std", 0, "standard deviation of the token embedding (default: --std)")
	f.IntVar(&cfg.FF, "ff", cfg.FF, "feed-forward length")
	f.IntVar(&cfg.Vocab, "vocab", cfg.Vocab, "vocabulary size")
	f.IntVar(&cfg.Ctx, "ctx", cfg.Ctx, "context length")
	f.StringVar(&typ, "type", "f32", "weight type: f32, f16, q8_0, q4_0, q4_k, q6_k, ... (K-quants fall back for rows not a multiple of 256)")
	f.Uint64Var(&seed, "seed", 1, "random seed")
	return cmd
}

// newBenchEngineCommand returns `engine`, added under `rbee bench`.
func newBenchEngineCommand() *cobra.Command {
	var (
		model         string
		threads, p, n int
		reps          int
		parallel      []int
		kv            engine.KVType
	)
	cmd := &cobra.Command{
		Use:   "engine --model FILE.gguf",
		Short: "Measure prompt processing (pp) and generation (tg) speed of the local engine, as JSON",
		Long: `Measure prompt processing (pp) and generation (tg) speed of the local engine, as JSON.

pp evaluates a -p token prompt as one batch; tg decodes -n tokens one at a
time, as llama-bench does. With --parallel K (repeatable), K sequences each
evaluate a -p token prompt and then decode -n tokens together, one batched
step per token, as a worker with K busy slots does (llama-batched-bench's
-npl): "parallel" reports pp and tg tokens/s of all K together, and tg
against the first level's.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if model == "" {
				return errors.New("--model is required")
			}
			ctxSize := max(p, n) + 1
			if len(parallel) > 0 {
				ctxSize = max(ctxSize, p+n)
			}
			if p <= 0 && n <= 0 {
				return errors.New("-p and -n are both 0: nothing to measure")
			}
			if threads < 0 {
				return fmt.Errorf("--threads %d: want 0 (all cores) or more", threads)
			}
			path, cleanup, err := localModel(model)
			if err != nil {
				return err
			}
			defer cleanup()
			m, err := engine.Load(path, engine.Options{Threads: threads, ContextSize: ctxSize, KVCache: kv})
			if err != nil {
				return err
			}
			defer m.Close()
			if tc := m.Info().TrainContextLength; ctxSize > tc {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: the bench needs a context of %d tokens, past the %d the model was trained for: its output is no model's, its speed is\n", ctxSize, tc)
			}
			res, err := engine.Bench(cmd.Context(), m, engine.BenchConfig{PromptTokens: p, GenTokens: n, Reps: reps, Parallel: parallel})
			if err != nil {
				return err
			}
			res.Model = model
			return writeJSON(cmd.OutOrStdout(), res)
		},
	}
	cmd.Flags().StringVar(&model, "model", "", "GGUF model file")
	localPaths(cmd.Flags(), "model")
	cmd.Flags().IntVar(&threads, "threads", 0, "compute threads (0: all cores)")
	cmd.Flags().IntVarP(&p, "p", "p", 128, "prompt tokens")
	cmd.Flags().IntVarP(&n, "n", "n", 128, "generated tokens")
	cmd.Flags().IntVar(&reps, "reps", 3, "repetitions")
	cmd.Flags().IntSliceVar(&parallel, "parallel", nil, "also decode this many sequences together (repeatable, e.g. --parallel 1 --parallel 8)")
	cmd.Flags().Var(&kv, "kv-cache", "element type of the KV cache: f16 (llama.cpp's default, as llama-bench) or f32")
	return cmd
}

// maxTextFile bounds what `model tokenize --text-file` reads: far more
// than any context holds, and a device such as /dev/zero ends.
const maxTextFile = 64 << 20

// readBounded reads the file at path, failing past max bytes.
func readBounded(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := limitread.All(f, max)
	if errors.Is(err, limitread.ErrTooLarge) {
		return nil, fmt.Errorf("%s is over %d MiB: not a text to tokenize", path, max>>20)
	}
	return b, err
}
