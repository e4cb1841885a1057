// Package tokenizer turns text into token ids and back for the vocabularies
// stored in GGUF metadata (tokenizer.ggml.*), reproducing llama.cpp's
// tokenizers, one per tokenizer.ggml.model: SentencePiece-style BPE
// ("llama": score-driven merges with <0xXX> byte fallback), byte-level BPE
// ("gpt2": rank-driven merges after the pre-tokenizer split that
// tokenizer.ggml.pre selects), WordPiece ("bert"), SentencePiece unigram
// ("t5": Viterbi over token scores after the precompiled normalizer) and
// RWKV's greedy byte trie ("rwkv").
//
// A Tokenizer is immutable after FromGGUF and safe for concurrent use by
// any number of goroutines. A StreamDecoder belongs to one goroutine.
package tokenizer

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
)

// Errors returned by FromGGUF, wrapped with details.
var (
	// ErrNoVocab: the metadata has no tokenizer.ggml.tokens (or no tokenizer.ggml.model).
	ErrNoVocab = errors.New("tokenizer: no vocabulary in metadata")
	// ErrUnsupported: tokenizer.ggml.model names a tokenizer this package does not implement.
	ErrUnsupported = errors.New("tokenizer: unsupported tokenizer model")
	// ErrBadMetadata: the tokenizer metadata is inconsistent (array lengths,
	// duplicate tokens, missing merges, bad split expression).
	ErrBadMetadata = errors.New("tokenizer: bad tokenizer metadata")
)

// Metadata is the read access FromGGUF needs; *gguf.File satisfies it.
type Metadata interface {
	String(key string) (string, bool)
	Strings(key string) ([]string, bool)
	Float32s(key string) ([]float32, bool)
	Int32s(key string) ([]int32, bool)
	Bytes(key string) ([]byte, bool)
	Uint(key string) (uint64, bool)
	Bool(key string) (bool, bool)
	// Has reports whether key is present, whatever its type: a typed
	// accessor's false then means the wrong type.
	Has(key string) bool
}

// Token types as stored in tokenizer.ggml.token_type (llama_token_type).
const (
	typeUndefined   = 0
	typeNormal      = 1
	typeUnknown     = 2
	typeControl     = 3
	typeUserDefined = 4
	typeUnused      = 5
	typeByte        = 6
)

// attr is a bit set like llama.cpp's llama_token_attr.
type attr uint16

const (
	attrUndefined attr = 1 << iota
	attrUnknown
	attrUnused
	attrNormal
	attrControl
	attrUserDefined
	attrByte
	attrLStrip
	attrRStrip
)

type kind int

const (
	kindSPM kind = iota + 1
	kindBPE
	kindWPM
	kindUGM
	kindRWKV
)

// noToken marks an absent special token id.
const noToken int32 = -1

// maxVocab bounds the vocabulary so ids fit int32 with room to spare; real
// vocabularies are below 300k tokens.
const maxVocab = 1 << 30

// Tokenizer encodes and decodes text for one vocabulary.
type Tokenizer struct {
	kind   kind
	pre    string
	tokens []string
	scores []float32
	attrs  []attr
	ids    map[string]int32

	merges map[string]int32 // "left right" -> rank (BPE)

	maxTokenLen int          // longest token text in bytes
	wpm         *prefixIndex // tokens by their text (WPM's greedy match)
	ugm         *ugmModel    // unigram model (UGM)
	rwkv        *prefixIndex // tokens by their unescaped bytes (RWKV)

	splitters    []splitter
	ignoreMerges bool

	bos, eos, eot, eom, unk, pad int32
	sep                          int32 // WordPiece's [SEP], noToken elsewhere
	addSEP                       bool  // a WordPiece input ends with sep (add_sep_token)
	addBOS, addEOS, addSpace     bool
	eog                          map[int32]bool

	special  []int32       // control/user-defined/unknown ids, longest text first
	specials *specialIndex // over special when there are more than manySpecials, else nil
	pieces   []string
	spmBytes [256]int32 // SPM byte-fallback token per byte, noToken if none

	warnings []string

	// Scratch state of Encode, reused across calls (sync.Pool is safe for
	// concurrent use).
	spmPool, bpePool sync.Pool

	// edges: the pieces of control and unknown tokens' texts that
	// SpecialEdges looks for, built on first use.
	edgesOnce sync.Once
	edges     *specialEdges
}

// FromGGUF builds the tokenizer described by the tokenizer.ggml.* keys of md.
func FromGGUF(md Metadata) (*Tokenizer, error) {
	model, ok := md.String("tokenizer.ggml.model")
	if !ok {
		return nil, fmt.Errorf("%w: tokenizer.ggml.model missing", ErrNoVocab)
	}
	t := &Tokenizer{eot: noToken, eom: noToken, pad: noToken, sep: noToken}
	t.spmPool.New = func() any { return new(spmSession) }
	t.bpePool.New = func() any { return new(bpeSession) }
	switch model {
	case "llama":
		t.kind = kindSPM
		t.bos, t.eos, t.unk = 1, 2, 0
		t.addSpace, t.addBOS = true, true
	case "gpt2":
		t.kind = kindBPE
		t.bos, t.eos, t.unk = 11, 11, noToken // llama.cpp's (odd) BPE defaults
	case "bert":
		t.kind = kindWPM
		t.bos, t.eos, t.unk, t.pad, t.sep = 101, noToken, 100, 0, 102 // [CLS], -, [UNK], [PAD], [SEP]
		t.addSEP = true
		t.addBOS = true
	case "t5":
		t.kind = kindUGM
		t.bos, t.eos, t.unk, t.pad = noToken, 1, 2, 0 // -, </s>, <unk>, <pad>
		t.addEOS = true
	case "rwkv":
		t.kind = kindRWKV
		t.bos, t.eos, t.unk = noToken, noToken, noToken
	default:
		return nil, fmt.Errorf("%w: %q", ErrUnsupported, model)
	}

	tokens, ok := md.Strings("tokenizer.ggml.tokens")
	if !ok && md.Has("tokenizer.ggml.tokens") {
		return nil, fmt.Errorf("%w: tokenizer.ggml.tokens is not an array of strings", ErrBadMetadata)
	}
	if !ok || len(tokens) == 0 {
		return nil, fmt.Errorf("%w: tokenizer.ggml.tokens missing or empty", ErrNoVocab)
	}
	if len(tokens) > maxVocab {
		return nil, fmt.Errorf("%w: %d tokens", ErrBadMetadata, len(tokens))
	}
	n := len(tokens)
	t.tokens = make([]string, n)
	t.ids = make(map[string]int32, n)
	for i, w := range tokens {
		if w == "" {
			w = fmt.Sprintf("[EMPTY_%d]", i)
		}
		if j, dup := t.ids[w]; dup {
			return nil, fmt.Errorf("%w: duplicate token %q (ids %d and %d)", ErrBadMetadata, w, j, i)
		}
		t.ids[w] = int32(i)
		t.tokens[i] = w
	}

	t.scores = make([]float32, n)
	if sc, ok := md.Float32s("tokenizer.ggml.scores"); ok {
		if len(sc) < n {
			return nil, fmt.Errorf("%w: %d scores for %d tokens", ErrBadMetadata, len(sc), n)
		}
		copy(t.scores, sc)
	} else if isc, ok := md.Int32s("tokenizer.ggml.scores"); ok {
		if len(isc) < n {
			return nil, fmt.Errorf("%w: %d scores for %d tokens", ErrBadMetadata, len(isc), n)
		}
		for i := range t.scores {
			t.scores[i] = float32(isc[i])
		}
	} else if md.Has("tokenizer.ggml.scores") {
		return nil, fmt.Errorf("%w: tokenizer.ggml.scores is not an array of numbers", ErrBadMetadata)
	}

	t.attrs = make([]attr, n)
	types, hasTypes := md.Int32s("tokenizer.ggml.token_type")
	if !hasTypes && md.Has("tokenizer.ggml.token_type") {
		return nil, fmt.Errorf("%w: tokenizer.ggml.token_type is not an array of 32-bit integers", ErrBadMetadata)
	}
	if hasTypes && len(types) < n {
		return nil, fmt.Errorf("%w: %d token types for %d tokens", ErrBadMetadata, len(types), n)
	}
	for i := range t.attrs {
		t.attrs[i] = attrNormal
		if hasTypes {
			switch types[i] {
			case typeUnknown:
				t.attrs[i] = attrUnknown
			case typeUnused:
				t.attrs[i] = attrUnused
			case typeNormal:
				t.attrs[i] = attrNormal
			case typeControl:
				t.attrs[i] = attrControl
			case typeUserDefined:
				t.attrs[i] = attrUserDefined
			case typeByte:
				t.attrs[i] = attrByte
			default:
				t.attrs[i] = attrUndefined
			}
		}
	}

	if t.kind == kindBPE {
		if err := t.loadBPE(md); err != nil {
			return nil, err
		}
	}
	if v, ok := md.Bool("tokenizer.ggml.add_space_prefix"); ok {
		t.addSpace = v
	}
	t.maxTokenLen = 1
	for _, s := range t.tokens {
		t.maxTokenLen = max(t.maxTokenLen, len(s))
	}

	// Default ids that fall outside the vocabulary are disabled, then the
	// metadata overrides them where it holds an in-range id.
	for _, p := range []*int32{&t.bos, &t.eos, &t.unk, &t.sep} {
		if *p >= int32(n) {
			*p = noToken
		}
	}
	for _, s := range []struct {
		key string
		id  *int32
	}{
		{"tokenizer.ggml.bos_token_id", &t.bos},
		{"tokenizer.ggml.eos_token_id", &t.eos},
		{"tokenizer.ggml.eot_token_id", &t.eot},
		{"tokenizer.ggml.eom_token_id", &t.eom},
		{"tokenizer.ggml.unknown_token_id", &t.unk},
		{"tokenizer.ggml.padding_token_id", &t.pad},
		{"tokenizer.ggml.seperator_token_id", &t.sep}, // llama.cpp's spelling
	} {
		v, ok := md.Uint(s.key)
		if !ok {
			continue
		}
		if v >= uint64(n) {
			t.warnings = append(t.warnings, fmt.Sprintf("%s = %d is outside the vocabulary (%d tokens); ignored", s.key, v, n))
			continue
		}
		*s.id = int32(v)
	}
	if v, ok := md.Bool("tokenizer.ggml.add_bos_token"); ok {
		t.addBOS = v
	}
	if v, ok := md.Bool("tokenizer.ggml.add_eos_token"); ok {
		t.addEOS = v
	}
	if v, ok := md.Bool("tokenizer.ggml.add_sep_token"); ok {
		t.addSEP = v
	}
	if t.sep == noToken {
		t.addSEP = false
	}
	if t.addBOS && t.bos == noToken {
		t.addBOS = false
		t.warnings = append(t.warnings, "add_bos_token is set but the vocabulary has no BOS token; not adding BOS")
	}

	name, _ := md.String("general.name")
	t.detectSpecial(strings.ToLower(name))
	// tokenizer.ggml.eos_token_ids (Ollama's converter writes it, e.g.
	// gpt-oss's <|return|>, <|endoftext|> and <|call|>, the ids of its
	// generation_config's eos_token_id list): each ends generation too,
	// whatever its text.
	if ids, ok := md.Int32s("tokenizer.ggml.eos_token_ids"); ok {
		for _, id := range ids {
			if id < 0 || int(id) >= n {
				t.warnings = append(t.warnings, fmt.Sprintf("tokenizer.ggml.eos_token_ids holds %d, outside the vocabulary (%d tokens); ignored", id, n))
				continue
			}
			t.eog[id] = true
		}
	}
	if len(t.special) > manySpecials {
		x, err := newSpecialIndex(t.tokens, t.special)
		if err != nil {
			return nil, err
		}
		t.specials = x
	}

	switch t.kind {
	case kindUGM:
		if err := t.newUGM(md); err != nil {
			return nil, err
		}
	case kindRWKV:
		t.newRWKV()
	case kindWPM:
		t.newWPM()
	}

	for b := range t.spmBytes {
		t.spmBytes[b] = noToken
		if t.kind == kindSPM {
			if id, ok := t.ids[fmt.Sprintf("<0x%02X>", b)]; ok {
				t.spmBytes[b] = id
			} else if id, ok := t.ids[string([]byte{byte(b)})]; ok {
				t.spmBytes[b] = id
			}
		}
	}
	t.pieces = make([]string, n)
	for i := range t.pieces {
		t.pieces[i] = t.renderPiece(int32(i))
	}
	return t, nil
}

func (t *Tokenizer) loadBPE(md Metadata) error {
	t.pre, _ = md.String("tokenizer.ggml.pre")
	pt, ok := preTokenizerFor(t.pre)
	if !ok {
		t.warnings = append(t.warnings, fmt.Sprintf("unknown pre-tokenizer %q; using llama.cpp's \"default\" split", t.pre))
		pt, _ = preTokenizerFor("default")
	} else if t.pre == "" {
		t.warnings = append(t.warnings, "tokenizer.ggml.pre missing; using llama.cpp's \"default\" split (generation quality may suffer)")
	}
	sp, err := compileSplitters(pt.exprs)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadMetadata, err)
	}
	t.splitters = sp
	t.ignoreMerges = pt.ignoreMerges
	t.addBOS = pt.addBOS
	if pt.noBOS {
		t.bos = noToken
	}
	merges, ok := md.Strings("tokenizer.ggml.merges")
	if !ok && md.Has("tokenizer.ggml.merges") {
		return fmt.Errorf("%w: tokenizer.ggml.merges is not an array of strings", ErrBadMetadata)
	}
	if !ok {
		return fmt.Errorf("%w: tokenizer.ggml.merges missing", ErrBadMetadata)
	}
	t.merges = make(map[string]int32, len(merges))
	for i, m := range merges {
		// Split at the first space after the first byte, like llama.cpp.
		if len(m) < 2 || strings.IndexByte(m[1:], ' ') < 0 {
			continue
		}
		if _, dup := t.merges[m]; !dup {
			t.merges[m] = int32(i)
		}
	}
	return nil
}

// Text lists of llama.cpp's llama_vocab::impl::load, used to find special
// tokens that the converters did not declare in the metadata.
var (
	eotTexts = []string{"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
		"<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>"}
	eomTexts    = []string{"<|eom_id|>"}
	fimPreTexts = []string{"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>", "<|code_prefix|>", "<|prefix|>"}
	fimSufTexts = []string{"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>", "<|code_suffix|>", "<|suffix|>"}
	fimMidTexts = []string{"<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>", "<|code_middle|>", "<|middle|>"}
	fimPadTexts = []string{"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"}
	fimRepTexts = []string{"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"}
	fimSepTexts = []string{"<|file_sep|>"}
	eogTexts    = []string{"<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
		"<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
		"<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>", "<｜end▁of▁sentence｜>", "[e~["}
)

// detectSpecial finds EOT/EOM/FIM/EOG tokens by their text, marks them as
// control tokens, builds the end-of-generation set and the special-token
// list for parsing, as llama.cpp does after loading the vocabulary.
func (t *Tokenizer) detectSpecial(modelName string) {
	find := func(texts []string) int32 {
		for _, s := range texts {
			if id, ok := t.ids[s]; ok {
				t.attrs[id] |= attrControl
				return id
			}
		}
		return noToken
	}
	if t.eot == noToken {
		t.eot = findFirstByText(t, eotTexts)
	}
	if t.eom == noToken {
		t.eom = findFirstByText(t, eomTexts)
	}
	for _, id := range []int32{t.eot, t.eom} {
		if id != noToken {
			t.attrs[id] |= attrControl
		}
	}
	find(fimPreTexts)
	find(fimSufTexts)
	find(fimMidTexts)
	fimPad, fimRep, fimSep := find(fimPadTexts), find(fimRepTexts), find(fimSepTexts)

	for id, a := range t.attrs {
		if a&attrControl != 0 && a&attrUnused == 0 && strings.Contains(t.tokens[id], "unused") {
			t.attrs[id] |= attrUnused
		}
	}

	t.eog = map[int32]bool{}
	for _, id := range []int32{fimPad, fimRep, fimSep} {
		if id != noToken {
			t.eog[id] = true
		}
	}
	for _, s := range eogTexts {
		if id, ok := t.ids[s]; ok {
			t.eog[id] = true
			t.attrs[id] |= attrControl
		}
	}
	for _, s := range []string{"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"} {
		if id, ok := t.ids[s]; ok {
			t.attrs[id] = attrUserDefined
		}
	}
	for _, id := range []int32{t.eos, t.eot, t.eom} {
		if id != noToken {
			t.eog[id] = true
		}
	}
	// o200k_harmony / solar-open: "<|end|>" does not end generation there.
	has := func(s string) bool { id, ok := t.ids[s]; return ok && t.eog[id] }
	if end, ok := t.ids["<|end|>"]; ok && t.eog[end] &&
		((has("<|return|>") && has("<|call|>")) || (has("<|calls|>") && has("<|flush|>"))) {
		delete(t.eog, end)
		t.attrs[end] = attrUserDefined
	}
	if s, ok := t.ids["</s>"]; ok && t.eog[s] && has("<|tool_response>") {
		delete(t.eog, s)
		t.attrs[s] = attrNormal
	}

	for id, a := range t.attrs {
		if a&(attrControl|attrUserDefined|attrUnknown) != 0 {
			t.special = append(t.special, int32(id))
		}
	}
	sort.SliceStable(t.special, func(i, j int) bool {
		return len(t.tokens[t.special[i]]) > len(t.tokens[t.special[j]])
	})

	if strings.Contains(modelName, "phi-3") || strings.Contains(modelName, "phi3") {
		for _, id := range t.special {
			t.attrs[id] |= attrRStrip
		}
		if id, ok := t.ids["</s>"]; ok {
			t.attrs[id] |= attrRStrip
		}
		for _, s := range []string{"<unk>", "<s>", "<|endoftext|>"} {
			if id, ok := t.ids[s]; ok {
				t.attrs[id] &^= attrRStrip
			}
		}
	}
}

// findFirstByText returns the id of the first text in texts that the
// vocabulary has (llama.cpp takes whichever its hash map yields first; the
// list order prefers chat-turn ends such as <|im_end|> over <|endoftext|>).
func findFirstByText(t *Tokenizer, texts []string) int32 {
	for _, s := range texts {
		if id, ok := t.ids[s]; ok {
			return id
		}
	}
	return noToken
}

// BOS returns the beginning-of-sequence token id, or -1 if the vocabulary has none.
func (t *Tokenizer) BOS() int32 { return t.bos }

// EOS returns the end-of-sequence token id, or -1 if the vocabulary has none.
func (t *Tokenizer) EOS() int32 { return t.eos }

// EOT returns the end-of-turn token id, or -1 if the vocabulary has none.
func (t *Tokenizer) EOT() int32 { return t.eot }

// IsEOG reports whether id ends generation (EOS, EOT, EOM and the other
// end-of-generation tokens llama.cpp recognises by their text).
func (t *Tokenizer) IsEOG(id int32) bool { return t.eog[id] }

// AddBOS reports whether prompts for this model start with BOS:
// tokenizer.ggml.add_bos_token, else llama.cpp's per-model default
// (SentencePiece: true; BPE: false except the llama3/tekken/chameleon families).
func (t *Tokenizer) AddBOS() bool { return t.addBOS }

// SEP returns WordPiece's separator token id ([SEP], llama.cpp's
// token_sep), or -1 if the vocabulary has none.
func (t *Tokenizer) SEP() int32 { return t.sep }

// AddSEP reports whether a WordPiece input ends with SEP (llama.cpp's
// add_sep with add_special; tokenizer.ggml.add_sep_token). Encode never
// appends it itself.
func (t *Tokenizer) AddSEP() bool { return t.addSEP }

// AddEOS reports tokenizer.ggml.add_eos_token (default false). Encode never adds EOS itself.
func (t *Tokenizer) AddEOS() bool { return t.addEOS }

// MaxTokenBytes is the length in bytes of the longest token text: no token
// stands for more bytes of input text than that (a SentencePiece "▁" is
// three bytes for one space, a byte token "<0x0A>" six for one byte, a
// byte-level BPE character one or two for one byte), so a text of n bytes
// has at least n/MaxTokenBytes tokens. It is 0 (no bound) for WordPiece
// and unigram, whose normalizers drop characters (whitespace runs, control
// characters, what the charsmap maps to nothing: one token may stand for
// any number of input bytes), and for RWKV without an unknown token (bytes
// no token starts are dropped).
func (t *Tokenizer) MaxTokenBytes() int {
	if t.kind == kindWPM || t.kind == kindUGM || (t.kind == kindRWKV && t.unk == noToken) {
		return 0
	}
	return t.maxTokenLen
}

// VocabSize returns the number of tokens.
func (t *Tokenizer) VocabSize() int { return len(t.tokens) }

// TokenID returns the id of the token whose vocabulary text is exactly text
// (SentencePiece texts spell spaces as "▁", byte-level BPE texts as "Ġ").
func (t *Tokenizer) TokenID(text string) (int32, bool) {
	id, ok := t.ids[text]
	return id, ok
}

// TokenText returns the raw vocabulary text of id ("" if out of range).
func (t *Tokenizer) TokenText(id int32) string {
	if id < 0 || int(id) >= len(t.tokens) {
		return ""
	}
	return t.tokens[id]
}

// IsControl reports whether id is a control token (rendered as "" by Piece).
func (t *Tokenizer) IsControl(id int32) bool {
	return id >= 0 && int(id) < len(t.attrs) && t.attrs[id]&attrControl != 0
}

// Model returns tokenizer.ggml.model: "llama" (SentencePiece BPE), "gpt2"
// (byte-level BPE), "bert" (WordPiece), "t5" (unigram) or "rwkv".
func (t *Tokenizer) Model() string {
	switch t.kind {
	case kindSPM:
		return "llama"
	case kindWPM:
		return "bert"
	case kindUGM:
		return "t5"
	case kindRWKV:
		return "rwkv"
	}
	return "gpt2"
}

// Pre returns tokenizer.ggml.pre as found in the metadata ("" for SentencePiece).
func (t *Tokenizer) Pre() string { return t.pre }

// Warnings lists the problems FromGGUF worked around (unknown pre-tokenizer,
// out-of-range special ids, ...), for the caller to log.
func (t *Tokenizer) Warnings() []string { return append([]string(nil), t.warnings...) }
