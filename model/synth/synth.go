// Package synth writes random-weight llama, qwen2, qwen3, gemma, gemma2 and gemma3 GGUF models of any shape
// with a valid SentencePiece-style vocabulary, for benchmarks and tests of
// the engine. The files load with engine.Load and run like real models; the
// text they generate is meaningless.
package synth

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"

	"github.com/rbee-project/rbee/model/gguf"
	"github.com/rbee-project/rbee/model/quant"
)

// ErrConfig is returned (wrapped) for an impossible model shape.
var ErrConfig = errors.New("synth: bad config")

// Config is the shape of the model to write. Start from DefaultConfig.
type Config struct {
	Arch    string     // "llama", "qwen2", "qwen3", "gemma", "gemma2" or "gemma3"
	Dim     int        // embedding length
	Layers  int        // transformer blocks
	Heads   int        // query heads
	HeadDim int        // length of a head; 0: Dim/Heads
	KVHeads int        // key/value heads (divides Heads)
	FF      int        // feed-forward length
	Vocab   int        // tokens, at least MinVocab
	Type    quant.Type // type of the 2-D weights (see Write for the fallback)
	Seed    uint64     // weights are a function of the seed and the shape
	Ctx     int        // context_length written to the file
	// Std is the standard deviation of the random weights.
	Std float32
	// EmbedStd, when positive, is the token embedding's instead (gemma
	// scales embeddings by √dim, and a large one drowns the layers).
	EmbedStd float32
	// ChatTemplate, when set, is written as tokenizer.chat_template.
	ChatTemplate string
	// SlidingWindow, AttnCap and FinalCap are written for gemma2 and
	// gemma3 when positive: attention.sliding_window,
	// attn_logit_softcapping (gemma2 only) and final_logit_softcapping.
	SlidingWindow     int
	AttnCap, FinalCap float32
	// Experts and ExpertsUsed make every FFN a mixture of experts (llama
	// becomes Mixtral-like; qwen2moe and qwen3moe need them), each
	// expert ExpertFF wide (0: FF for llama, FF/ExpertsUsed for qwen);
	// qwen2moe adds a shared expert SharedFF wide (0: FF).
	Experts, ExpertsUsed, ExpertFF, SharedFF int
	// LongRoPE (phi3): OrigCtx > 0 writes rope.scaling.original_context_length
	// and the short and long factor tensors; RopeAttnFactor > 0 writes
	// rope.scaling.attn_factor.
	OrigCtx        int
	RopeAttnFactor float32
	// YarnFactor > 0 writes YaRN rope scaling (rope.scaling.type yarn and
	// its factor; OrigCtx is then the original context alone, without
	// LongRoPE's tensors), as gpt-oss's files have it.
	YarnFactor float32
	// Harmony writes o200k_harmony's special tokens (HarmonyTokens) as
	// the last tokens of the vocabulary, control tokens as in gpt-oss's
	// files, so that a model speaks (and its tokenizer reads) the
	// harmony format's markers; and no space is put before a text
	// (add_space_prefix false), as o200k_harmony's BPE puts none.
	Harmony bool
}

// HarmonyTokens are the special tokens of gpt-oss's harmony format that
// Config.Harmony writes, in order at the end of the vocabulary.
func HarmonyTokens() []string {
	return []string{"<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|constrain|>", "<|return|>", "<|call|>"}
}

// Archs lists the architectures Write can make.
func Archs() []string {
	return []string{"llama", "qwen2", "qwen3", "qwen2moe", "qwen3moe", "gemma", "gemma2", "gemma3", "phi3", "gpt-oss"}
}

// MinVocab is the smallest vocabulary: <unk>, <s>, </s> and 256 byte tokens,
// plus one piece.
const MinVocab = 3 + 256 + 1

// DefaultConfig is a tiny llama-architecture F32 model.
func DefaultConfig() Config {
	return Config{
		Arch: "llama", Dim: 64, Layers: 2, Heads: 4, KVHeads: 4, FF: 128, Vocab: 512,
		Type: quant.F32, Seed: 1, Ctx: 512,
		// 0.02 is the usual initialiser scale (GPT-2, Llama); it keeps
		// activations in a realistic range.
		Std: 0.02,
	}
}

func (c Config) validate() error {
	switch {
	case !slices.Contains(Archs(), c.Arch):
		return fmt.Errorf("%w: arch %q (one of %s)", ErrConfig, c.Arch, strings.Join(Archs(), ", "))
	case (c.Arch == "qwen2moe" || c.Arch == "qwen3moe" || c.Arch == "gpt-oss") && c.Experts == 0:
		return fmt.Errorf("%w: %s needs experts", ErrConfig, c.Arch)
	case c.Experts < 0 || c.Experts > 512 || c.ExpertsUsed < 0 || c.ExpertsUsed > c.Experts || (c.Experts > 0 && c.ExpertsUsed == 0) || c.ExpertFF < 0 || c.SharedFF < 0:
		return fmt.Errorf("%w: %d experts, %d used", ErrConfig, c.Experts, c.ExpertsUsed)
	case c.Experts > 0 && c.Arch != "llama" && c.ExpertFF == 0 && c.FF/c.ExpertsUsed == 0:
		return fmt.Errorf("%w: ff %d leaves no width for each of %d experts used", ErrConfig, c.FF, c.ExpertsUsed)
	case c.Experts > 0 && c.Arch == "llama" && c.ExpertFF > 0 && c.ExpertFF != c.FF:
		return fmt.Errorf("%w: llama's experts are ff wide (llama.cpp reads no expert width for it)", ErrConfig)
	case c.Experts > 0 && c.Arch != "llama" && c.Arch != "qwen2moe" && c.Arch != "qwen3moe" && c.Arch != "gpt-oss":
		return fmt.Errorf("%w: experts for %s", ErrConfig, c.Arch)
	case c.Harmony && c.Vocab < MinVocab+len(HarmonyTokens()):
		return fmt.Errorf("%w: vocab %d leaves no room for the harmony tokens (at least %d)", ErrConfig, c.Vocab, MinVocab+len(HarmonyTokens()))
	case c.SlidingWindow < 0 || c.AttnCap < 0 || c.FinalCap < 0 || c.EmbedStd < 0 || c.OrigCtx < 0 || c.RopeAttnFactor < 0 || c.YarnFactor < 0:
		return fmt.Errorf("%w: sliding window and soft caps cannot be negative", ErrConfig)
	case c.Dim <= 0 || c.Layers <= 0 || c.Heads <= 0 || c.KVHeads <= 0 || c.FF <= 0 || c.Ctx <= 0 || c.HeadDim < 0:
		return fmt.Errorf("%w: dim, layers, heads, kv-heads, ff and ctx must be positive", ErrConfig)
	case c.HeadDim == 0 && c.Dim%c.Heads != 0:
		return fmt.Errorf("%w: dim %d not divisible by heads %d", ErrConfig, c.Dim, c.Heads)
	case c.headDim()%2 != 0 || c.HeadDim > 1024:
		return fmt.Errorf("%w: head dim %d must be even for RoPE (and at most 1024)", ErrConfig, c.headDim())
	case c.Heads%c.KVHeads != 0:
		return fmt.Errorf("%w: heads %d not a multiple of kv-heads %d", ErrConfig, c.Heads, c.KVHeads)
	case c.Vocab < MinVocab:
		return fmt.Errorf("%w: vocab %d < %d", ErrConfig, c.Vocab, MinVocab)
	case c.Vocab > 1<<20 || c.Dim > 1<<16 || c.FF > 1<<18 || c.Layers > 1024:
		return fmt.Errorf("%w: shape too large", ErrConfig)
	case !(c.Std > 0):
		return fmt.Errorf("%w: std must be positive", ErrConfig)
	}
	if _, err := c.Type.RowBytes(c.Type.BlockSize()); err != nil || c.Type.BlockSize() == 0 {
		return fmt.Errorf("%w: type %v", ErrConfig, c.Type)
	}
	return nil
}

func (c Config) headDim() int {
	if c.HeadDim > 0 {
		return c.HeadDim
	}
	return c.Dim / c.Heads
}

// StoredType is the type Write uses for a row of cols values when cfg asks
// for t: llama-quantize's fallback when the row is not a multiple of the
// block (K-quants → Q5_0/Q5_1/Q8_0/Q4_0, then F16).
func StoredType(t quant.Type, cols int) quant.Type {
	if cols%t.BlockSize() == 0 {
		return t
	}
	switch t {
	case quant.Q4_K:
		t = quant.Q5_0
	case quant.Q5_K:
		t = quant.Q5_1
	case quant.Q6_K:
		t = quant.Q8_0
	case quant.Q2_K, quant.Q3_K, quant.IQ4_XS:
		t = quant.IQ4_NL
	default:
		return quant.F16
	}
	if cols%t.BlockSize() != 0 {
		return quant.F16
	}
	return t
}

// Vocab returns the n token pieces, their scores and types of the synthetic
// SentencePiece vocabulary: <unk>, <s>, </s>, the byte tokens <0x00>…<0xFF>,
// then "▁", letters, punctuation and "▁"-prefixed and plain letter n-grams,
// each reachable by merging two shorter pieces, scored by rank.
func Vocab(n int) (tokens []string, scores []float32, types []int32) {
	const (
		typeNormal  = 1
		typeUnknown = 2
		typeControl = 3
		typeByte    = 6
	)
	add := func(s string, typ int32) {
		tokens = append(tokens, s)
		scores = append(scores, -float32(len(tokens)))
		types = append(types, typ)
	}
	add("<unk>", typeUnknown)
	add("<s>", typeControl)
	add("</s>", typeControl)
	for b := 0; b < 256; b++ {
		add(fmt.Sprintf("<0x%02X>", b), typeByte)
	}
	seen := map[string]bool{}
	piece := func(s string) bool {
		if len(tokens) >= n {
			return false
		}
		if !seen[s] {
			seen[s] = true
			add(s, typeNormal)
		}
		return len(tokens) < n
	}
	const letters = "etaoinshrdlcumwfgypbvkjxqz"
	singles := "▁" + letters + "ETAOINSHRDLCUMWFGYPBVKJXQZ" + ".,!?'\"-:;()0123456789"
	for _, r := range singles {
		if !piece(string(r)) {
			return
		}
	}
	prev := []string{""}
	for len(tokens) < n {
		var next []string
		for _, p := range prev {
			for _, r := range letters {
				s := p + string(r)
				next = append(next, s)
				if !piece("▁"+s) || !piece(s) {
					return
				}
			}
		}
		prev = next
	}
	return
}

// Write builds the model described by cfg and writes it to path atomically.
// 2-D weights use cfg.Type, or StoredType's fallback for rows the type's
// block does not divide; norms are F32 ones; embeddings are tied (no
// output.weight, but for qwen2moe), like llama2.c's models. qwen2 models get q/k/v biases,
// qwen3 and gemma3 models per-head q/k norms, gemma2 and gemma3 models
// norms after attention and FFN (all around 1, not 1, so that they count).
func Write(path string, cfg Config) error {
	w, err := Build(cfg)
	if err != nil {
		return err
	}
	return w.WriteFile(path)
}

// Build returns a gguf.Writer holding the model described by cfg.
func Build(cfg Config) (*gguf.Writer, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	w := gguf.NewWriter()
	a := cfg.Arch
	headDim := cfg.headDim()
	ropeBase, eps := float32(10000), float32(1e-5)
	if a == "qwen2" || a == "qwen3" || a == "qwen2moe" || a == "qwen3moe" || a == "gemma3" {
		ropeBase = 1e6 // Qwen2's, Qwen3's and Gemma 3's (global layers') rope_theta
	}
	if a == "gpt-oss" {
		ropeBase = 150000 // gpt-oss's rope_theta
	}
	if a != "llama" && a != "qwen2" && a != "gpt-oss" {
		eps = 1e-6
	}
	// llama.cpp marks a "phi3"-named model's special tokens for
	// stripping, by texts this vocabulary lacks (it then fails to load).
	name := "synth-" + a
	if a == "phi3" {
		name = "synth-phi"
	}
	kvs := []struct {
		k string
		v any
	}{
		{"general.architecture", a},
		{"general.name", name},
		{"general.description", fmt.Sprintf("rbee synth: random weights N(0, %g), seed %d", cfg.Std, cfg.Seed)},
		{a + ".context_length", uint32(cfg.Ctx)},
		{a + ".embedding_length", uint32(cfg.Dim)},
		{a + ".block_count", uint32(cfg.Layers)},
		{a + ".feed_forward_length", uint32(cfg.FF)},
		{a + ".attention.head_count", uint32(cfg.Heads)},
		{a + ".attention.head_count_kv", uint32(cfg.KVHeads)},
		{a + ".rope.dimension_count", uint32(headDim)},
		{a + ".rope.freq_base", ropeBase},
		{a + ".attention.layer_norm_rms_epsilon", eps},
	}
	if a == "gpt-oss" {
		// llama.cpp requires the window (gpt-oss's is 128): every other
		// layer, from the first, attends through it.
		win := cfg.SlidingWindow
		if win == 0 {
			win = 128
		}
		kvs = append(kvs, struct {
			k string
			v any
		}{a + ".attention.sliding_window", uint32(win)})
	}
	if a == "gemma2" || a == "gemma3" {
		for _, kv := range []struct {
			k  string
			v  float32
			ok bool
		}{
			{".attention.sliding_window", float32(cfg.SlidingWindow), cfg.SlidingWindow > 0},
			{".attn_logit_softcapping", cfg.AttnCap, cfg.AttnCap > 0 && a == "gemma2"},
			{".final_logit_softcapping", cfg.FinalCap, cfg.FinalCap > 0},
		} {
			if !kv.ok {
				continue
			}
			var v any = kv.v
			if kv.k == ".attention.sliding_window" {
				v = uint32(kv.v)
			}
			kvs = append(kvs, struct {
				k string
				v any
			}{a + kv.k, v})
		}
	}
	ffExp, ffSh := cfg.ExpertFF, cfg.SharedFF
	if cfg.Experts > 0 {
		if ffExp == 0 {
			ffExp = cfg.FF
			if a != "llama" {
				ffExp = cfg.FF / cfg.ExpertsUsed
			}
		}
		if ffSh == 0 {
			ffSh = cfg.FF
		}
		kvs = append(kvs, []struct {
			k string
			v any
		}{
			{a + ".expert_count", uint32(cfg.Experts)},
			{a + ".expert_used_count", uint32(cfg.ExpertsUsed)},
		}...)
		if a != "llama" {
			kvs = append(kvs, struct {
				k string
				v any
			}{a + ".expert_feed_forward_length", uint32(ffExp)})
		}
		if a == "qwen2moe" {
			kvs = append(kvs, struct {
				k string
				v any
			}{a + ".expert_shared_feed_forward_length", uint32(ffSh)})
		}
	}
	if cfg.OrigCtx > 0 {
		kvs = append(kvs, struct {
			k string
			v any
		}{a + ".rope.scaling.original_context_length", uint32(cfg.OrigCtx)})
	}
	if cfg.YarnFactor > 0 {
		kvs = append(kvs, []struct {
			k string
			v any
		}{
			{a + ".rope.scaling.type", "yarn"},
			{a + ".rope.scaling.factor", cfg.YarnFactor},
		}...)
	}
	if cfg.RopeAttnFactor > 0 {
		kvs = append(kvs, struct {
			k string
			v any
		}{a + ".rope.scaling.attn_factor", cfg.RopeAttnFactor})
	}
	if cfg.HeadDim > 0 {
		kvs = append(kvs, []struct {
			k string
			v any
		}{
			{a + ".attention.key_length", uint32(headDim)},
			{a + ".attention.value_length", uint32(headDim)},
		}...)
	}
	tokens, scores, types := Vocab(cfg.Vocab)
	if cfg.Harmony {
		const typeControl = 3
		at := len(tokens) - len(HarmonyTokens())
		for i, t := range HarmonyTokens() {
			tokens[at+i], types[at+i] = t, typeControl
		}
	}
	kvs = append(kvs, []struct {
		k string
		v any
	}{
		{"tokenizer.ggml.model", "llama"},
		{"tokenizer.ggml.tokens", tokens},
		{"tokenizer.ggml.scores", scores},
		{"tokenizer.ggml.token_type", types},
		{"tokenizer.ggml.bos_token_id", uint32(1)},
		{"tokenizer.ggml.eos_token_id", uint32(2)},
		{"tokenizer.ggml.unknown_token_id", uint32(0)},
	}...)
	if cfg.Harmony {
		// o200k_harmony is byte-level BPE: no space before the text
		// after a marker.
		kvs = append(kvs, struct {
			k string
			v any
		}{"tokenizer.ggml.add_space_prefix", false})
	}
	if cfg.ChatTemplate != "" {
		kvs = append(kvs, struct {
			k string
			v any
		}{"tokenizer.chat_template", cfg.ChatTemplate})
	}
	for _, kv := range kvs {
		if err := w.AddKV(kv.k, kv.v); err != nil {
			return nil, fmt.Errorf("synth: %s: %w", kv.k, err)
		}
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, uint64(cfg.Dim)<<32|uint64(cfg.Layers)))
	buf := make([]float32, 0)
	randn := func(n int) []float32 {
		if cap(buf) < n {
			buf = make([]float32, n)
		}
		buf = buf[:n]
		for i := range buf {
			buf[i] = float32(rng.NormFloat64()) * cfg.Std
		}
		return buf
	}
	ones := func(n int) []byte {
		b := make([]byte, 4*n)
		for i := 0; i < n; i++ {
			putF32(b[4*i:], 1)
		}
		return b
	}
	addMat := func(name string, rows, cols int) error {
		t := StoredType(cfg.Type, cols)
		rb, err := t.RowBytes(cols)
		if err != nil {
			return fmt.Errorf("synth: %s: %w", name, err)
		}
		data := make([]byte, rb*rows)
		// Quantise row by row so the float buffer stays one row long.
		for r := 0; r < rows; r++ {
			if err := quant.Quantize(t, randn(cols), data[r*rb:(r+1)*rb]); err != nil {
				return fmt.Errorf("synth: %s: %w", name, err)
			}
		}
		return w.AddTensor(name, t, []uint64{uint64(cols), uint64(rows)}, data)
	}
	addVec := func(name string, data []byte, n int) error {
		return w.AddTensor(name, quant.F32, []uint64{uint64(n)}, data)
	}
	// addStack writes n matrices of rows×cols as one 3-D tensor.
	addStack := func(name string, n, rows, cols int) error {
		t := StoredType(cfg.Type, cols)
		rb, err := t.RowBytes(cols)
		if err != nil {
			return fmt.Errorf("synth: %s: %w", name, err)
		}
		data := make([]byte, rb*rows*n)
		for r := 0; r < rows*n; r++ {
			if err := quant.Quantize(t, randn(cols), data[r*rb:(r+1)*rb]); err != nil {
				return fmt.Errorf("synth: %s: %w", name, err)
			}
		}
		return w.AddTensor(name, t, []uint64{uint64(cols), uint64(rows), uint64(n)}, data)
	}
	// addExperts writes a layer's router (F32, as converters keep it),
	// its experts, and qwen2moe's shared expert.
	addExperts := func(p string, ffExp, ffSh int) error {
		if err := w.AddTensor(p+"ffn_gate_inp.weight", quant.F32, []uint64{uint64(cfg.Dim), uint64(cfg.Experts)}, vecOf(randn(cfg.Dim*cfg.Experts))); err != nil {
			return err
		}
		for _, s := range []struct {
			name       string
			rows, cols int
		}{{"ffn_gate_exps.weight", ffExp, cfg.Dim}, {"ffn_up_exps.weight", ffExp, cfg.Dim}, {"ffn_down_exps.weight", cfg.Dim, ffExp}} {
			if err := addStack(p+s.name, cfg.Experts, s.rows, s.cols); err != nil {
				return err
			}
		}
		if a == "gpt-oss" {
			// Biases: the router's, and each expert's (F32, one row of
			// its width per expert).
			if err := addVec(p+"ffn_gate_inp.bias", vecOf(randn(cfg.Experts)), cfg.Experts); err != nil {
				return err
			}
			for _, b := range []struct {
				name  string
				width int
			}{{"ffn_gate_exps.bias", ffExp}, {"ffn_up_exps.bias", ffExp}, {"ffn_down_exps.bias", cfg.Dim}} {
				if err := w.AddTensor(p+b.name, quant.F32, []uint64{uint64(b.width), uint64(cfg.Experts)}, vecOf(randn(b.width*cfg.Experts))); err != nil {
					return err
				}
			}
		}
		if a != "qwen2moe" {
			return nil
		}
		if err := addVec(p+"ffn_gate_inp_shexp.weight", vecOf(randn(cfg.Dim)), cfg.Dim); err != nil {
			return err
		}
		for _, s := range []struct {
			name       string
			rows, cols int
		}{{"ffn_gate_shexp.weight", ffSh, cfg.Dim}, {"ffn_up_shexp.weight", ffSh, cfg.Dim}, {"ffn_down_shexp.weight", cfg.Dim, ffSh}} {
			if err := addMat(p+s.name, s.rows, s.cols); err != nil {
				return err
			}
		}
		return nil
	}
	qDim, kvDim := cfg.Heads*headDim, cfg.KVHeads*headDim
	if cfg.OrigCtx > 0 && cfg.YarnFactor == 0 {
		for _, name := range []string{"rope_factors_short.weight", "rope_factors_long.weight"} {
			v := randn(headDim / 2)
			for i := range v {
				v[i] = 1 + float32(math.Abs(float64(v[i])))*4
			}
			if err := addVec(name, vecOf(v), headDim/2); err != nil {
				return nil, err
			}
		}
	}
	std := cfg.Std
	if cfg.EmbedStd > 0 {
		cfg.Std = cfg.EmbedStd
	}
	if err := addMat("token_embd.weight", cfg.Vocab, cfg.Dim); err != nil {
		return nil, err
	}
	cfg.Std = std
	for l := 0; l < cfg.Layers; l++ {
		p := "blk." + strconv.Itoa(l) + "."
		if err := addVec(p+"attn_norm.weight", ones(cfg.Dim), cfg.Dim); err != nil {
			return nil, err
		}
		mats := []struct {
			name       string
			rows, cols int
		}{
			{"attn_q.weight", qDim, cfg.Dim},
			{"attn_k.weight", kvDim, cfg.Dim},
			{"attn_v.weight", kvDim, cfg.Dim},
			{"attn_output.weight", cfg.Dim, qDim},
			{"ffn_gate.weight", cfg.FF, cfg.Dim},
			{"ffn_up.weight", cfg.FF, cfg.Dim},
			{"ffn_down.weight", cfg.Dim, cfg.FF},
		}
		if cfg.Experts > 0 {
			mats = mats[:4]
		}
		if a == "phi3" {
			// Fused: q, k, v rows in one matrix; the gate's rows, then up's.
			mats = []struct {
				name       string
				rows, cols int
			}{
				{"attn_qkv.weight", qDim + 2*kvDim, cfg.Dim},
				{"attn_output.weight", cfg.Dim, qDim},
				{"ffn_up.weight", 2 * cfg.FF, cfg.Dim},
				{"ffn_down.weight", cfg.Dim, cfg.FF},
			}
		}
		for _, m := range mats {
			if err := addMat(p+m.name, m.rows, m.cols); err != nil {
				return nil, err
			}
		}
		if cfg.Experts > 0 {
			if err := addExperts(p, ffExp, ffSh); err != nil {
				return nil, err
			}
		}
		if a == "qwen2" || a == "qwen2moe" || a == "gpt-oss" {
			biases := []struct {
				name string
				n    int
			}{{"attn_q.bias", qDim}, {"attn_k.bias", kvDim}, {"attn_v.bias", kvDim}}
			if a == "gpt-oss" {
				biases = append(biases, struct {
					name string
					n    int
				}{"attn_output.bias", cfg.Dim}, struct {
					name string
					n    int
				}{"attn_sinks.weight", cfg.Heads})
			}
			for _, b := range biases {
				if err := addVec(p+b.name, vecOf(randn(b.n)), b.n); err != nil {
					return nil, err
				}
			}
		}
		// Norms around 1, not 1, so that they count.
		around1 := func(n int) []byte {
			v := randn(n)
			for i := range v {
				v[i] += 1
			}
			return vecOf(v)
		}
		if a == "qwen3" || a == "qwen3moe" || a == "gemma3" {
			for _, name := range []string{"attn_q_norm.weight", "attn_k_norm.weight"} {
				if err := addVec(p+name, around1(headDim), headDim); err != nil {
					return nil, err
				}
			}
		}
		if a == "gemma2" || a == "gemma3" {
			for _, name := range []string{"post_attention_norm.weight", "post_ffw_norm.weight"} {
				if err := addVec(p+name, around1(cfg.Dim), cfg.Dim); err != nil {
					return nil, err
				}
			}
		}
		// gpt-oss names its FFN's input norm post_attention_norm.
		ffnNorm := "ffn_norm.weight"
		if a == "gpt-oss" {
			ffnNorm = "post_attention_norm.weight"
		}
		if err := addVec(p+ffnNorm, ones(cfg.Dim), cfg.Dim); err != nil {
			return nil, err
		}
	}
	if err := addVec("output_norm.weight", ones(cfg.Dim), cfg.Dim); err != nil {
		return nil, err
	}
	if a == "qwen2moe" || a == "gpt-oss" {
		// llama.cpp loads qwen2moe and gpt-oss only with an output matrix
		// of their own.
		if err := addMat("output.weight", cfg.Vocab, cfg.Dim); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// vecOf is v as little-endian float32 bytes.
func vecOf(v []float32) []byte {
	data := make([]byte, 4*len(v))
	for i, f := range v {
		putF32(data[4*i:], f)
	}
	return data
}

func putF32(b []byte, f float32) {
	u := math.Float32bits(f)
	b[0], b[1], b[2], b[3] = byte(u), byte(u>>8), byte(u>>16), byte(u>>24)
}
