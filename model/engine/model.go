package engine

import (
	"fmt"
	"io"
	"log/slog"
	"math"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/rbee-project/rbee/internal/humanize"
	"github.com/rbee-project/rbee/model/gguf"
	"github.com/rbee-project/rbee/model/jinja"
	"github.com/rbee-project/rbee/model/quant"
	"github.com/rbee-project/rbee/model/tokenizer"
)

// Options configure Load. The zero value is ready to use.
type Options struct {
	// Threads is the number of compute goroutines; 0 means all cores.
	Threads int
	// ContextSize is the context window in tokens; 0 means the model's
	// trained context, capped at MaxDefaultContext.
	ContextSize int
	// Logger receives load-time notes; nil discards them.
	Logger *slog.Logger
	// NoRepack keeps every weight matrix in the file's layout. By default
	// the matrices of types with a multi-row kernel on this CPU (Q4_0,
	// Q5_0, Q8_0, Q4_K, Q5_K and Q6_K with AVX-512 VNNI; see quant.Matrix.Repack) are
	// repacked at load, which is faster and gives bit-identical results,
	// but for Q4_0 and the K-quants, whose repacked kernels round once per block
	// and row (results within float tolerance, the same greedy ids on the
	// fixtures); the option is for comparisons.
	NoRepack bool
	// RepackCache, when set, is a directory where the repacked weights
	// are kept in a file per model (and shard): the first load writes
	// it, later loads map it, and every process that maps it shares its
	// pages through the page cache, as they share the model file's
	// without repacking. A file that does not match the model (its
	// identity, the tensors, the layout version) is not used; one that
	// cannot be written leaves the copy in this process's memory.
	RepackCache string
	// KVCache is the element type of the KV cache: KVF16 (the zero
	// value), llama.cpp's default, or KVF32.
	KVCache KVType
	// MemoryLimit bounds, in bytes, what the model's shape asks this
	// process to allocate: the tables Load builds (RoPE's, for every
	// position), a prompt batch's activations and the KV caches of
	// Sessions Sessions grown to ContextSize (a shard's: its layers or KV
	// heads). A model
	// whose header asks for more (a hostile file's huge head size or
	// layer count, or a context too large for the machine) is refused at
	// Load with ErrBadRequest, instead of the process dying of it later.
	// 0: no bound.
	MemoryLimit int64
	// Sessions is how many Sessions the caller keeps at once (a worker's
	// slots), each of which may grow its KV cache to ContextSize:
	// MemoryLimit counts that many caches. 0 means 1.
	Sessions int

	// fullKV (tests): see Model.fullKV; set here so that every model of
	// a group (pipeline stages, tensor shards) keeps its whole cache.
	fullKV bool
}

// KVType is the element type of a Session's KV cache.
type KVType uint8

const (
	// KVF16 keeps keys and values as IEEE halves, as llama.cpp does by
	// default: half the memory of KVF32, and half the bytes attention
	// reads per token, which is what batched decoding waits for. Keys
	// and values are rounded once when stored; queries and attention
	// weights stay float32.
	KVF16 KVType = iota
	// KVF32 keeps keys and values as float32: twice the memory; the
	// fixture tests' tight reference (llama.cpp's f32-KV runs).
	KVF32
)

// String returns "f16" or "f32".
func (t KVType) String() string {
	if t == KVF32 {
		return "f32"
	}
	return "f16"
}

// Set parses s as ParseKVType does (flag.Value, pflag.Value).
func (t *KVType) Set(s string) error {
	v, err := ParseKVType(s)
	if err != nil {
		return err
	}
	*t = v
	return nil
}

// Type names the values (pflag.Value).
func (t *KVType) Type() string { return "f16|f32" }

// ParseKVType reads "f16" or "f32" (a flag's value).
func ParseKVType(s string) (KVType, error) {
	switch s {
	case "f16":
		return KVF16, nil
	case "f32":
		return KVF32, nil
	}
	return 0, fmt.Errorf("%w: KV cache type %q (want f16 or f32)", ErrBadRequest, s)
}

// MaxDefaultContext caps the context taken from the model when
// Options.ContextSize is 0: a 128k-context model would otherwise reserve a
// KV cache of many GiB per Session.
const MaxDefaultContext = 4096

// defaultTrainContext is used when the model does not say (llama.cpp's
// n_ctx_train is required; old llama2.c conversions use 2048).
const defaultTrainContext = 2048

// Info describes a loaded model.
type Info struct {
	Name               string
	Arch               string
	ContextLength      int // effective context of Sessions
	TrainContextLength int // {arch}.context_length
	VocabSize          int
	Params             int64  // total elements of all tensors
	Quantization       string // the type holding most weight elements, e.g. "Q4_K"
	Layers             int
	Dim                int
	Heads              int
	KVHeads            int
	KVCache            string // the KV cache's element type: "f16" or "f32"
	// MaxTokenBytes bounds the input bytes one token stands for: a text
	// longer than ContextLength*MaxTokenBytes cannot fit the context, which
	// a server may tell before it tokenizes the text. 0: no bound (a
	// vocabulary whose normalizer drops input; see
	// tokenizer.MaxTokenBytes).
	MaxTokenBytes int
}

type hparams struct {
	arch     string
	dim      int
	nLayer   int
	nHead    int
	nHeadKV  int
	headDim  int
	ff       int
	vocab    int
	eps      float32
	trainCtx int
	nCtx     int

	// The gemma family's differences (gemma.go); zero values keep the
	// llama forward pass.
	embScale   float32 // embeddings multiplied by this (√dim); 0: not scaled
	gelu       bool    // FFN gate through GELU instead of SiLU
	qScale     float32 // q multiplied by this after RoPE, scores not scaled; 0: scores by 1/√headDim
	attnCap    float32 // attention scores soft-capped at this; 0: not capped
	finalCap   float32 // logits soft-capped at this; 0: not capped
	swaWindow  int     // sliding window of the windowed layers (a key sees the last swaWindow positions)
	swaPattern int     // in each run of swaPattern layers all but the last are windowed; 0: none

	// Mixture of experts (moe.go); nExpert 0 for a dense FFN.
	nExpert, nExpertUsed int
	ffExp, ffShared      int  // an expert's FFN width; the shared expert's (qwen2moe)
	normExperts          bool // the chosen experts' weights renormalised to sum 1
	// oai: gpt-oss's experts: chosen by the router's logits, weighted by
	// the softmax of the chosen ones' logits (llama.cpp's
	// SOFTMAX_WEIGHT gating), their gate clamped through swiglu_oai.
	oai bool
}

// qwenArch reports whether arch is one of Qwen's (ChatML, NEOX RoPE).
func qwenArch(arch string) bool {
	return arch == "qwen2" || arch == "qwen3" || arch == "qwen2moe" || arch == "qwen3moe"
}

// gemmaArch reports whether arch is one of the gemma family.
func gemmaArch(arch string) bool { return arch == "gemma" || arch == "gemma2" || arch == "gemma3" }

type layer struct {
	attnNorm, ffnNorm []float32
	wq, wk, wv, wo    *quant.Matrix
	bq, bk, bv        []float32 // nil when the model has no bias
	// qNorm and kNorm are the per-head RMS norms of q and k before RoPE
	// (qwen3, gemma3), one head's length, shared by all heads; nil for the others.
	qNorm, kNorm []float32
	// attnPost and ffnPost normalise the attention's and the FFN's
	// outputs before they join the residual (gemma2, gemma3); nil otherwise.
	attnPost, ffnPost []float32
	// bo is the attention output's bias, sinks each head's attention sink
	// logit (gpt-oss): a sink joins a head's softmax as one more score
	// that weighs no value. nil for the others.
	bo, sinks         []float32
	swa               bool      // attends through the sliding window (hparams.swaWindow)
	moe               *moeLayer // the experts, in place of wGate, wUp, wDown; nil for a dense FFN
	wGate, wUp, wDown *quant.Matrix
}

// Model is a loaded GGUF model. Its methods are safe for concurrent use.
// Weights stay memory-mapped until Close; Sessions must not be used after
// Close.
type Model struct {
	file   *gguf.File
	hp     hparams
	info   Info
	tok    *tokenizer.Tokenizer
	embd   *quant.Matrix
	outN   []float32
	output *quant.Matrix
	layers []layer
	rope   ropeTable
	// ropeSWA rotates gemma3's windowed layers (nil for other models:
	// they use rope everywhere).
	ropeSWA *ropeTable
	// fullKV (tests) makes the windowed layers keep every position and
	// score them all, masking those outside the window, as before their
	// caches slid: the reference the sliding caches are compared with.
	fullKV bool
	pool   *quant.Pool
	log    *slog.Logger
	// src maps each matrix wrapped by matrix() to its tensor, during
	// load only (repackWeights releases the file pages of what it copies).
	src map[*quant.Matrix]*gguf.TensorInfo
	// arena holds the repacked copies of weight matrices.
	arena weightArena

	// computeMu serialises forward passes (of Sessions and Batches): a
	// quant.Pool runs one MatMul at a time, and one forward pass already
	// uses every thread.
	computeMu sync.Mutex

	chatTmpl *jinja.Template // nil when the model has none or it does not compile
	chatErr  error

	closed atomic.Bool

	// Pipeline shard (see shard.go): this Model holds layers [lo, hi) of
	// hp.nLayer; layers[i] is layer lo+i. The full model is lo 0, hi
	// nLayer. next runs the later stages for a first stage that is not
	// also the last.
	lo, hi int
	next   Remote
	// heads and kvHeads are the attention heads this Model computes: all
	// of them, or a tensor shard's (tp, see tensor.go).
	heads, kvHeads int
	tp             *tensorSplit
	// kv is the element type of Sessions' KV caches (Options.KVCache).
	kv KVType
	// sessionIDs numbers Sessions (Session.ID), for the later stages.
	sessionIDs atomic.Uint64
}

// Load opens a GGUF model file (memory-mapped) and prepares it for inference.
func Load(path string, opts Options) (*Model, error) {
	f, err := openGGUF(path)
	if err != nil {
		return nil, err
	}
	m, err := newModel(f, path, opts, ShardSpec{})
	if err != nil {
		f.Close()
		return nil, err
	}
	return m, nil
}

func openGGUF(path string) (*gguf.File, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("engine: open %s: %w", path, err)
	}
	return f, nil
}

// recoverFault, deferred by a function that reads the mapped file after
// debug.SetPanicOnFault(true), turns a memory fault (the file was
// truncated under the mapping: SIGBUS) into ErrFileChanged in *err; other
// panics go on.
//
// Only a fault inside a mapping of a file (holds) is that: a fault at any
// other address is a bug (a kernel reading past its slice), which must end
// the process with its stack as before, not pass for a changed file (the
// worker would stop as model_lost and the node retry the request on the
// next worker, and the next).
func recoverFault(err *error, holds func(addr uintptr) bool) {
	r := recover()
	if r == nil {
		return
	}
	if !quant.IsFault(r) {
		panic(r)
	}
	if a, ok := r.(interface{ Addr() uintptr }); !ok || holds == nil || !holds(a.Addr()) {
		panic(r)
	}
	*err = fmt.Errorf("%w: a read of its mapping faulted", ErrFileChanged)
}

// filesChanged returns ErrFileChanged when a file the model maps (the
// model file or its repack cache file) was written or truncated in place
// since it was mapped (gguf.File.Changed, filewatch): a read of it may
// then have given other bytes than were loaded without any fault (zeros
// in the rest of a truncated file's last page, or new contents), and
// what was computed from them is not the model's. Two fstats; a forward
// pass checks it before it returns, so no pass returns a result read
// from a file changed before that check.
func (m *Model) filesChanged() error {
	err := m.file.Changed()
	if err == nil {
		err = m.arena.changed()
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrFileChanged, err)
	}
	return nil
}

// holdsFileMapping reports whether addr lies in a mapping of a file the
// model reads: the model file or its repack cache.
func (m *Model) holdsFileMapping(addr uintptr) bool {
	return m.file.Holds(addr) || m.arena.holds(addr)
}

// newModel prepares the model of f, opened from path ("" when it was not
// opened from a file: no repack cache then).
func newModel(f *gguf.File, path string, opts Options, spec ShardSpec) (_ *Model, err error) {
	var made *Model // once made: its repack cache's mapping counts too
	// Deferred itself: recover works only in the deferred call.
	defer recoverFault(&err, func(addr uintptr) bool {
		return f.Holds(addr) || (made != nil && made.arena.holds(addr))
	})
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.KVCache > KVF32 {
		return nil, fmt.Errorf("%w: KV cache type %d", ErrBadRequest, opts.KVCache)
	}
	m := &Model{file: f, log: log, kv: opts.KVCache, fullKV: opts.fullKV}
	made = m
	if err := m.readHparams(opts); err != nil {
		return nil, err
	}
	if err := m.setShard(spec); err != nil {
		return nil, err
	}
	if m.kv == KVF16 && m.hp.headDim%2 != 0 {
		// quant's f16 attention kernels take pairs of dimensions.
		log.Info("odd head size: keeping the KV cache in f32", "head_dim", m.hp.headDim)
		m.kv = KVF32
	}
	if err := m.checkMemory(opts.MemoryLimit, max(1, opts.Sessions)); err != nil {
		return nil, err
	}
	if err := m.loadTensors(); err != nil {
		return nil, err
	}
	tok, err := tokenizer.FromGGUF(f)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadModel, err)
	}
	m.tok = tok
	if tok.VocabSize() > m.hp.vocab {
		// Its last tokens have no embedding: a prompt holding one would be
		// refused as the client's fault (llama.cpp refuses the shape).
		return nil, fmt.Errorf("%w: the tokenizer has %d tokens but token_embd.weight has %d rows", ErrBadModel, tok.VocabSize(), m.hp.vocab)
	}
	if tok.VocabSize() != m.hp.vocab {
		log.Warn("tokenizer and embedding vocab sizes differ", "tokenizer", tok.VocabSize(), "embedding", m.hp.vocab)
	}
	if err := m.readRope(); err != nil {
		return nil, err
	}
	m.initChat()
	threads := opts.Threads
	if threads <= 0 {
		threads = runtime.NumCPU()
	}
	m.pool = quant.NewPool(threads)
	if !opts.NoRepack {
		m.repackWeights(path, opts.RepackCache)
	}
	m.adviseFileLayout()
	m.releaseCopies()
	m.src = nil
	m.info = m.buildInfo()
	return m, nil
}

func (m *Model) key(k string) string { return m.hp.arch + "." + k }

func (m *Model) needUint(k string) (int, error) {
	v, ok := m.file.Uint(m.key(k))
	if !ok {
		return 0, fmt.Errorf("%w: missing or non-integer key %s", ErrBadModel, m.key(k))
	}
	if v == 0 || v > 1<<24 {
		return 0, fmt.Errorf("%w: %s = %d out of range", ErrBadModel, m.key(k), v)
	}
	return int(v), nil
}

func (m *Model) optUint(k string, def int) (int, error) {
	if _, ok := m.file.Get(m.key(k)); !ok {
		return def, nil
	}
	return m.needUint(k)
}

// optUint0 is optUint for the keys whose 0 llama.cpp reads as "none" or
// "the default" (expert_count, the expert widths, sliding_window): absent
// or 0 is def.
func (m *Model) optUint0(k string, def int) (int, error) {
	if v, ok := m.file.Uint(m.key(k)); ok && v == 0 {
		return def, nil
	}
	return m.optUint(k, def)
}

// optFloat reads an optional float key: absent is ok false; a value that
// is not a number (a string, an array) or not finite is ErrBadModel, not
// silently the default.
func (m *Model) optFloat(k string) (float64, bool, error) {
	val, ok := m.file.Get(m.key(k))
	if !ok {
		return 0, false, nil
	}
	v, ok := val.Float()
	if !ok {
		return 0, false, fmt.Errorf("%w: %s has type %s, want a number", ErrBadModel, m.key(k), val.Type)
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, false, fmt.Errorf("%w: %s = %v", ErrBadModel, m.key(k), v)
	}
	return v, true, nil
}

func (m *Model) readHparams(opts Options) error {
	arch, ok := m.file.String("general.architecture")
	if !ok {
		return fmt.Errorf("%w: missing general.architecture", ErrBadModel)
	}
	switch arch {
	case "llama", "qwen2", "qwen3", "qwen2moe", "qwen3moe", "gemma", "gemma2", "gemma3", "phi3", "gpt-oss":
	default:
		return fmt.Errorf("%w: architecture %q (supported: llama, qwen2, qwen3, qwen2moe, qwen3moe, gemma, gemma2, gemma3, phi3, gpt-oss)", ErrUnsupportedModel, arch)
	}
	hp := &m.hp
	hp.arch = arch
	var err error
	if hp.dim, err = m.needUint("embedding_length"); err != nil {
		return err
	}
	if hp.nLayer, err = m.needUint("block_count"); err != nil {
		return err
	}
	// Every block has at least 6 tensors (Phi-3's fused ones); the bound
	// keeps a corrupt count from allocating before the missing tensors
	// are noticed.
	if hp.nLayer > len(m.file.Tensors)/6 {
		return fmt.Errorf("%w: block_count %d but only %d tensors", ErrBadModel, hp.nLayer, len(m.file.Tensors))
	}
	if hp.ff, err = m.needUint("feed_forward_length"); err != nil {
		return err
	}
	if hp.nHead, err = m.needUint("attention.head_count"); err != nil {
		return err
	}
	if hp.nHeadKV, err = m.optUint("attention.head_count_kv", hp.nHead); err != nil {
		return err
	}
	if hp.headDim, err = m.optUint("attention.key_length", 0); err != nil {
		return err
	}
	if hp.headDim == 0 {
		// Without key_length a head is dim/heads long.
		if hp.dim%hp.nHead != 0 {
			return fmt.Errorf("%w: embedding_length %d not divisible by head_count %d", ErrUnsupportedModel, hp.dim, hp.nHead)
		}
		hp.headDim = hp.dim / hp.nHead
	}
	if vl, err := m.optUint("attention.value_length", hp.headDim); err != nil {
		return err
	} else if vl != hp.headDim {
		return fmt.Errorf("%w: value_length %d != key_length %d", ErrUnsupportedModel, vl, hp.headDim)
	}
	if hp.nHead > hp.dim || hp.nHeadKV > hp.nHead || hp.headDim > hp.dim*4 {
		return fmt.Errorf("%w: %d heads, %d kv heads, head dim %d for embedding %d", ErrBadModel, hp.nHead, hp.nHeadKV, hp.headDim, hp.dim)
	}
	if hp.nHead%hp.nHeadKV != 0 {
		return fmt.Errorf("%w: head_count %d not a multiple of head_count_kv %d", ErrUnsupportedModel, hp.nHead, hp.nHeadKV)
	}
	hp.eps = 1e-5
	if v, ok, err := m.optFloat("attention.layer_norm_rms_epsilon"); err != nil {
		return err
	} else if ok {
		if !(v > 0 && v < 1) {
			return fmt.Errorf("%w: layer_norm_rms_epsilon %v", ErrBadModel, v)
		}
		hp.eps = float32(v)
	}
	if hp.trainCtx, err = m.optUint("context_length", defaultTrainContext); err != nil {
		return err
	}
	hp.nCtx = opts.ContextSize
	if hp.nCtx <= 0 {
		hp.nCtx = min(hp.trainCtx, MaxDefaultContext)
	}
	if hp.nCtx > 1<<20 {
		return fmt.Errorf("%w: context size %d too large", ErrBadRequest, hp.nCtx)
	}
	if err := m.readExperts(); err != nil {
		return err
	}
	if gemmaArch(arch) {
		return m.readGemma()
	}
	if arch == "gpt-oss" {
		return m.readGPTOSS()
	}
	if arch == "phi3" {
		// Phi-3 scales q after RoPE (its graph's ggml_scale), not the scores.
		hp.qScale = 1 / float32(math.Sqrt(float64(float32(hp.headDim))))
	}
	return nil
}

// checkMemory refuses a model (or shard: its layers and KV heads, after
// setShard) whose shape asks for more than limit bytes (0: no bound; see
// Options.MemoryLimit), before anything is allocated for it.
func (m *Model) checkMemory(limit int64, sessions int) error {
	if limit <= 0 {
		return nil
	}
	vocab := 0
	if t, ok := m.tensor("token_embd.weight"); ok && len(t.Dims) == 2 {
		vocab = int(min(t.Dims[1], 1<<40))
	}
	need := m.hp.memoryNeed(m.kv, m.lo, m.hi, m.heads, m.kvHeads, vocab, sessions)
	if need <= float64(limit) {
		return nil
	}
	fewer := "ask for a smaller context"
	if sessions > 1 {
		fewer = "ask for a smaller context or fewer slots"
	}
	return fmt.Errorf("%w: at context %d this model needs %s (the KV caches of %d sequence(s) and its tables: %d layers, %d KV heads of %d, embedding %d), more than the %s allowed; %s",
		ErrBadRequest, m.hp.nCtx, humanize.Bytes(uint64(min(need, 1<<62))), sessions, m.hi-m.lo, m.kvHeads, m.hp.headDim, m.hp.dim, humanize.Bytes(uint64(limit)), fewer)
}

// memoryNeed is what Options.MemoryLimit bounds, in bytes (float64: a
// hostile header's product of dimensions may not fit an int) for a model
// (or shard) of layers [lo, hi) with heads query and kvHeads KV heads:
// the keys and values of sessions Sessions at nCtx (a windowed layer's
// at most swaSpan), the RoPE table (at most head size floats per
// position), and a prompt batch's activations and logits.
func (hp *hparams) memoryNeed(kv KVType, lo, hi, heads, kvHeads, vocab, sessions int) float64 {
	elem := 2.0
	if kv == KVF32 {
		elem = 4
	}
	f := func(v int) float64 { return float64(v) }
	windowed := hp.swaLayers(hi) - hp.swaLayers(lo)
	positions := f(hi-lo-windowed)*f(hp.nCtx) + f(windowed)*f(min(hp.nCtx, hp.swaSpan()))
	cache := f(sessions) * positions * 2 * f(kvHeads) * f(hp.headDim) * elem
	rope := f(hp.nCtx) * f(hp.headDim) * 4
	if hp.arch == "gemma3" && hp.swaPattern > 0 {
		rope *= 2 // the windowed layers' own table (Model.ropeSWA)
	}
	batch := f(promptBatch) * (4*f(hp.dim) + 3*f(max(hp.ff, hp.ffExp)) + f(heads)*f(hp.headDim)*2 + f(vocab)) * 4
	if hp.nExpert > 0 {
		// moeBuffers: router probabilities, picks and weights, each pick's
		// output, the gathered rows and their outputs, the shared expert.
		k := f(hp.nExpertUsed)
		batch += f(promptBatch) * (f(hp.nExpert) + 2*k + k*f(hp.dim) + 2*f(hp.dim) + 2*f(hp.ffShared)) * 4
	}
	return cache + rope + batch
}

func (m *Model) tensor(name string) (*gguf.TensorInfo, bool) { return m.file.Tensor(name) }

// weightData checks that t's rows of cols values have a matrix product
// and returns its mapped data and the bytes of one row.
func (m *Model) weightData(t *gguf.TensorInfo, cols int) ([]byte, int, error) {
	rb, err := t.Type.RowBytes(cols)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: tensor %s: %w", ErrUnsupportedModel, t.Name, err)
	}
	if _, ok := quant.VecDotType(t.Type); !ok && t.Type != quant.F32 {
		return nil, 0, fmt.Errorf("%w: tensor %s: no matrix product for type %s", ErrUnsupportedModel, t.Name, t.Type)
	}
	data, err := m.file.TensorData(t)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: tensor %s: %w", ErrBadModel, t.Name, err)
	}
	return data, rb, nil
}

// matrix maps a 2-D weight tensor of rows×cols (GGUF dims [cols, rows]).
func (m *Model) matrix(name string, rows, cols int) (*quant.Matrix, error) {
	t, ok := m.tensor(name)
	if !ok {
		return nil, fmt.Errorf("%w: missing tensor %s", ErrBadModel, name)
	}
	if len(t.Dims) != 2 || t.Dims[0] != uint64(cols) || (rows >= 0 && t.Dims[1] != uint64(rows)) {
		return nil, fmt.Errorf("%w: tensor %s has dims %v, want [%d %d]", ErrBadModel, name, t.Dims, cols, rows)
	}
	data, _, err := m.weightData(t, cols)
	if err != nil {
		return nil, err
	}
	mat := &quant.Matrix{Type: t.Type, Rows: int(t.Dims[1]), Cols: cols, Data: data}
	if m.src == nil {
		m.src = make(map[*quant.Matrix]*gguf.TensorInfo)
	}
	m.src[mat] = t
	return mat, nil
}

// streamedMatrices lists the weight matrices a forward pass multiplies
// by: each layer's (a mixture's experts, router and shared expert
// included) and the output matrix.
func (m *Model) streamedMatrices() []*quant.Matrix {
	mats := make([]*quant.Matrix, 0, 7*len(m.layers)+1)
	for i := range m.layers {
		l := &m.layers[i]
		for _, mat := range []*quant.Matrix{l.wq, l.wk, l.wv, l.wo, l.wGate, l.wUp, l.wDown} {
			if mat != nil { // an expert layer has no dense FFN
				mats = append(mats, mat)
			}
		}
		if e := l.moe; e != nil {
			// The experts are most of a mixture's weights: each runs over
			// the rows routed to it as one batch, on the multi-row
			// kernels like a dense matrix.
			for _, mat := range []*quant.Matrix{e.router, e.shGate, e.shUp, e.shDown} {
				if mat != nil {
					mats = append(mats, mat)
				}
			}
			for _, set := range [][]*quant.Matrix{e.gate, e.up, e.down} {
				mats = append(mats, set...)
			}
		}
	}
	if m.output != nil {
		mats = append(mats, m.output)
	}
	return mats
}

// adviseFileLayout asks for huge pages for the weight matrices that a
// decode step streams from the file's mapping: the layer matrices and the
// output matrix left in the file's layout (types without a repacked
// kernel on this CPU, f32, f16, or any with Options.NoRepack), each for
// its own bytes (a shard's share of a tensor, not the rest): a TLB miss
// per 2 MiB instead of per 4 KiB where the kernel can
// (gguf.File.AdviseHugePages). Before their first read, so the page
// cache reads them in huge folios. The token embedding keeps base pages
// unless it is the output matrix: a lookup brings back the pages of its
// rows, not 2 MiB around them. Column slices are copies, not the file's.
func (m *Model) adviseFileLayout() {
	for _, mat := range m.streamedMatrices() {
		if mat.Repacked() || !m.file.Holds(uintptr(unsafe.Pointer(unsafe.SliceData(mat.Data)))) {
			continue
		}
		if err := m.file.AdviseHugePages(mat.Data); err != nil {
			m.log.Debug("huge page advice not taken", "err", err)
		}
	}
}

// repackWeights repacks the layer matrices and the output matrix where
// quant can (Matrix.RepackInto) and releases the mapped file pages of each
// one repacked, so the weights are resident once (as the copy), not twice.
// A tensor shard's row slices are repacked too (rowSlice), so that its
// rows give the whole model's results, also for Q4_0 and Q4_K, whose
// repacked kernels have float contracts of their own; releasing a slice releases its
// whole tensor's pages. A tied output is the token embedding: MatMul reads
// the copy, lookups read Data, so only the looked-up rows' pages come back
// from the file.
func (m *Model) repackWeights(path, cacheDir string) {
	mats := m.streamedMatrices()
	if cacheDir != "" && path != "" {
		n, err := m.repackCached(path, cacheDir, mats)
		if err == nil {
			return
		}
		if n > 0 {
			// Cannot happen: repackCached repacks only once nothing can
			// fail any more. Were it to, the matrices point into memory
			// that is gone.
			panic(fmt.Sprintf("engine: repack cache failed after repacking %d matrices: %v", n, err))
		}
		m.log.Warn("repack cache not used; repacking in memory", "dir", cacheDir, "err", err)
	}
	// Matrices are repacked in parallel on the Model's Pool (repacking
	// reads every page of the file's layer tensors once), into one
	// mapping (allocAll).
	sizes := make([]int, len(mats))
	for i, mat := range mats {
		if _, ok := m.src[mat]; ok {
			sizes[i], _ = mat.RepackedSize()
		}
	}
	regions := m.arena.allocAll(sizes)
	var n atomic.Int32
	m.pool.Run(len(mats), func(_, start, end int) {
		for i := start; i < end; i++ {
			mat, region := mats[i], regions[i]
			t, ok := m.src[mat]
			if !ok || !mat.RepackInto(func(int) []byte { return region }) {
				continue
			}
			n.Add(1)
			if err := m.file.ReleaseTensor(t); err != nil {
				m.log.Warn("release of repacked tensor pages failed", "tensor", t.Name, "err", err)
			}
		}
	})
	if n := n.Load(); n > 0 {
		m.log.Info("repacked weight matrices for the multi-row kernels", "matrices", n)
	}
}

// vector dequantises a 1-D tensor of n elements; with optional, a missing
// tensor gives nil.
func (m *Model) vector(name string, n int, optional bool) ([]float32, error) {
	t, ok := m.tensor(name)
	if !ok {
		if optional {
			return nil, nil
		}
		return nil, fmt.Errorf("%w: missing tensor %s", ErrBadModel, name)
	}
	if len(t.Dims) != 1 || t.Dims[0] != uint64(n) {
		return nil, fmt.Errorf("%w: tensor %s has dims %v, want [%d]", ErrBadModel, name, t.Dims, n)
	}
	data, err := m.file.TensorData(t)
	if err != nil {
		return nil, fmt.Errorf("%w: tensor %s: %w", ErrBadModel, name, err)
	}
	out := make([]float32, n)
	if err := quant.Dequantize(t.Type, data, out); err != nil {
		return nil, fmt.Errorf("%w: tensor %s: %w", ErrUnsupportedModel, name, err)
	}
	return out, nil
}

func (m *Model) loadTensors() error {
	hp := &m.hp
	var err error
	// Wrapping a matrix touches none of its pages; dequantising a vector
	// does. A shard wraps what it uses and dequantises only its own
	// layers' vectors, so the mapped pages it reads are its share.
	embd, err := m.matrix("token_embd.weight", -1, hp.dim)
	if err != nil {
		return err
	}
	hp.vocab = embd.Rows
	if hp.vocab < 1 {
		return fmt.Errorf("%w: empty vocabulary", ErrBadModel)
	}
	if m.lo == 0 {
		m.embd = embd
	}
	if m.hi == hp.nLayer {
		if m.outN, err = m.vector("output_norm.weight", hp.dim, false); err != nil {
			return err
		}
		if _, ok := m.tensor("output.weight"); ok {
			if m.output, err = m.matrix("output.weight", hp.vocab, hp.dim); err != nil {
				return err
			}
		} else {
			m.output = embd // tied embeddings
		}
	}
	qDim, kvDim := hp.nHead*hp.headDim, hp.nHeadKV*hp.headDim
	m.layers = make([]layer, m.hi-m.lo)
	for i := range m.layers {
		l := &m.layers[i]
		p := "blk." + strconv.Itoa(m.lo+i) + "."
		steps := []matrixStep{
			{&l.wq, "attn_q.weight", qDim, hp.dim},
			{&l.wk, "attn_k.weight", kvDim, hp.dim},
			{&l.wv, "attn_v.weight", kvDim, hp.dim},
			{&l.wo, "attn_output.weight", hp.dim, qDim},
			{&l.wGate, "ffn_gate.weight", hp.ff, hp.dim},
			{&l.wUp, "ffn_up.weight", hp.ff, hp.dim},
			{&l.wDown, "ffn_down.weight", hp.dim, hp.ff},
		}
		if hp.nExpert > 0 {
			steps = steps[:4]
			if err := m.loadExperts(l, p); err != nil {
				return err
			}
		}
		if hp.arch == "phi3" {
			if steps, err = m.loadFused(l, p, steps); err != nil {
				return err
			}
		}
		for _, s := range steps {
			if *s.dst, err = m.matrix(p+s.name, s.rows, s.cols); err != nil {
				return err
			}
		}
		if l.attnNorm, err = m.vector(p+"attn_norm.weight", hp.dim, false); err != nil {
			return err
		}
		ffnNorm := "ffn_norm.weight"
		if hp.arch == "gpt-oss" {
			ffnNorm = "post_attention_norm.weight" // gpt-oss's name for it
		}
		if l.ffnNorm, err = m.vector(p+ffnNorm, hp.dim, false); err != nil {
			return err
		}
		if hp.arch == "gpt-oss" {
			if l.bo, err = m.vector(p+"attn_output.bias", hp.dim, false); err != nil {
				return err
			}
			if l.sinks, err = m.vector(p+"attn_sinks.weight", hp.nHead, false); err != nil {
				return err
			}
		}
		if l.bq, err = m.vector(p+"attn_q.bias", qDim, true); err != nil {
			return err
		}
		if l.bk, err = m.vector(p+"attn_k.bias", kvDim, true); err != nil {
			return err
		}
		if l.bv, err = m.vector(p+"attn_v.bias", kvDim, true); err != nil {
			return err
		}
		qkNorms := hp.arch == "qwen3" || hp.arch == "qwen3moe" || hp.arch == "gemma3"
		if l.qNorm, err = m.vector(p+"attn_q_norm.weight", hp.headDim, !qkNorms); err != nil {
			return err
		}
		if l.kNorm, err = m.vector(p+"attn_k_norm.weight", hp.headDim, !qkNorms); err != nil {
			return err
		}
		postNorms := hp.arch == "gemma2" || hp.arch == "gemma3"
		if hp.arch == "gpt-oss" {
			// already read, as the FFN's input norm
		} else if l.attnPost, err = m.vector(p+"post_attention_norm.weight", hp.dim, !postNorms); err != nil {
			return err
		}
		if l.ffnPost, err = m.vector(p+"post_ffw_norm.weight", hp.dim, !postNorms); err != nil {
			return err
		}
		l.swa = hp.swaLayer(m.lo + i)
	}
	if m.tp != nil {
		return m.sliceTensors()
	}
	return nil
}

func (m *Model) readRope() error {
	hp := &m.hp
	p := ropeParams{mode: ropeNorm, freqBase: 10000, freqScale: 1, attnFactor: 1, origCtx: hp.trainCtx}
	if qwenArch(hp.arch) || gemmaArch(hp.arch) || hp.arch == "phi3" || hp.arch == "gpt-oss" {
		p.mode = ropeNeox
	}
	var err error
	if p.nRot, err = m.optUint("rope.dimension_count", hp.headDim); err != nil {
		return err
	}
	if p.nRot%2 != 0 || p.nRot > hp.headDim {
		return fmt.Errorf("%w: rope.dimension_count %d (head_dim %d)", ErrBadModel, p.nRot, hp.headDim)
	}
	if v, ok, err := m.optFloat("rope.freq_base"); err != nil {
		return err
	} else if ok {
		if !(v > 1) {
			return fmt.Errorf("%w: rope.freq_base %v", ErrBadModel, v)
		}
		p.freqBase = float32(v)
	}
	factor := 0.0
	for _, k := range []string{"rope.scaling.factor", "rope.scale_linear"} {
		v, ok, err := m.optFloat(k)
		if err != nil {
			return err
		}
		if ok {
			factor = v
			break
		}
	}
	typ, ok := m.file.String(m.key("rope.scaling.type"))
	if val, present := m.file.Get(m.key("rope.scaling.type")); present && !ok {
		return fmt.Errorf("%w: %s has type %s, want a string", ErrBadModel, m.key("rope.scaling.type"), val.Type)
	}
	if typ == "" && factor > 0 && factor != 1 {
		typ = "linear"
	}
	switch typ {
	case "", "none", "longrope": // LongRoPE's factors are tensors (below)
	case "linear", "yarn":
		if !(factor > 0) {
			return fmt.Errorf("%w: rope scaling %s without a positive factor", ErrBadModel, typ)
		}
		p.freqScale = float32(1 / factor)
		if typ == "yarn" {
			p.extFactor = 1
			if p.origCtx, err = m.optUint("rope.scaling.original_context_length", hp.trainCtx); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("%w: rope scaling type %q", ErrUnsupportedModel, typ)
	}
	// rope.scaling.attn_factor multiplies every rotation's magnitude
	// (llama.cpp's rope_attn_factor: Phi-3's LongRoPE sets it).
	if v, ok, err := m.optFloat("rope.scaling.attn_factor"); err != nil {
		return err
	} else if ok {
		if !(v > 0 && v < 100) {
			return fmt.Errorf("%w: rope.scaling.attn_factor %v", ErrBadModel, v)
		}
		p.attnFactor = float32(v)
	}
	if p.freqFactor, err = m.vector("rope_freqs.weight", p.nRot/2, true); err != nil {
		return err
	}
	if p.freqFactor == nil {
		// LongRoPE (Phi-3): the long factors beyond the original context,
		// else the short ones, as llama.cpp picks them by context size.
		orig, err := m.optUint("rope.scaling.original_context_length", hp.trainCtx)
		if err != nil {
			return err
		}
		name := "rope_factors_short.weight"
		if hp.nCtx > orig {
			name = "rope_factors_long.weight"
		}
		if p.freqFactor, err = m.vector(name, p.nRot/2, true); err != nil {
			return err
		}
		if p.freqFactor == nil && typ == "longrope" {
			return fmt.Errorf("%w: rope scaling longrope without %s", ErrUnsupportedModel, name)
		}
	}
	m.rope = newRopeTable(p, hp.nCtx)
	if hp.arch == "gemma3" && hp.swaPattern > 0 {
		// The windowed layers rotate with base 10000, unscaled (llama.cpp's
		// rope_freq_base_train_swa); the file's base and scaling are the
		// global layers'.
		local := ropeParams{mode: p.mode, nRot: p.nRot, freqBase: 10000, freqScale: 1, attnFactor: 1, origCtx: p.origCtx}
		t := newRopeTable(local, hp.nCtx)
		m.ropeSWA = &t
	}
	return nil
}

func (m *Model) buildInfo() Info {
	hp := m.hp
	name, _ := m.file.String("general.name")
	var params int64
	byType := map[quant.Type]uint64{}
	for i := range m.file.Tensors {
		t := &m.file.Tensors[i]
		n := t.NumElements()
		params += int64(n)
		if len(t.Dims) == 2 {
			byType[t.Type] += n
		}
	}
	var best quant.Type
	var bestN uint64
	for t, n := range byType {
		if n > bestN || (n == bestN && t < best) {
			best, bestN = t, n
		}
	}
	return Info{
		Name: name, Arch: hp.arch, ContextLength: hp.nCtx, TrainContextLength: hp.trainCtx,
		VocabSize: hp.vocab, Params: params, Quantization: best.String(),
		Layers: hp.nLayer, Dim: hp.dim, Heads: hp.nHead, KVHeads: hp.nHeadKV, MaxTokenBytes: m.tok.MaxTokenBytes(),
		KVCache: m.kv.String(),
	}
}

// Info describes the model.
func (m *Model) Info() Info { return m.info }

// Tokenizer returns the model's tokenizer.
func (m *Model) Tokenizer() *tokenizer.Tokenizer { return m.tok }

// File returns the underlying GGUF file (valid until Close).
func (m *Model) File() *gguf.File { return m.file }

// Close stops the compute pool and unmaps the weights. Sessions must not be
// used afterwards. Close is idempotent.
func (m *Model) Close() error {
	if m.closed.Swap(true) {
		return nil
	}
	m.computeMu.Lock()
	defer m.computeMu.Unlock()
	m.pool.Close()
	m.arena.free()
	return m.file.Close()
}

// matrixStep is one weight matrix of a layer to map.
type matrixStep struct {
	dst        **quant.Matrix
	name       string
	rows, cols int
}

// loadFused reads Phi-3's fused projections: attn_qkv (q, k and v rows
// one after the other) if the file has it, and ffn_up holding the gate's
// rows then the up rows (no ffn_gate). It returns the steps still to load.
func (m *Model) loadFused(l *layer, p string, steps []matrixStep) ([]matrixStep, error) {
	hp := &m.hp
	qDim, kvDim := hp.nHead*hp.headDim, hp.nHeadKV*hp.headDim
	var rest []matrixStep
	for _, s := range steps {
		switch s.name {
		case "attn_q.weight", "attn_k.weight", "attn_v.weight":
			if _, fused := m.tensor(p + "attn_qkv.weight"); fused {
				continue
			}
		case "ffn_gate.weight", "ffn_up.weight":
			continue
		}
		rest = append(rest, s)
	}
	if _, fused := m.tensor(p + "attn_qkv.weight"); fused {
		qkv, err := m.matrix(p+"attn_qkv.weight", qDim+2*kvDim, hp.dim)
		if err != nil {
			return nil, err
		}
		if err := m.splitRows(qkv, []**quant.Matrix{&l.wq, &l.wk, &l.wv}, []int{qDim, kvDim, kvDim}); err != nil {
			return nil, err
		}
	}
	up, err := m.matrix(p+"ffn_up.weight", 2*hp.ff, hp.dim)
	if err != nil {
		return nil, err
	}
	if err := m.splitRows(up, []**quant.Matrix{&l.wGate, &l.wUp}, []int{hp.ff, hp.ff}); err != nil {
		return nil, err
	}
	return rest, nil
}

// splitRows cuts mat into consecutive row ranges of the given sizes, one
// view per destination; mat itself is no longer a repack source.
func (m *Model) splitRows(mat *quant.Matrix, dst []**quant.Matrix, sizes []int) error {
	lo := 0
	for i, n := range sizes {
		v, err := m.rowView(mat, lo, lo+n)
		if err != nil {
			return err
		}
		*dst[i] = v
		lo += n
	}
	delete(m.src, mat)
	return nil
}
