package tokenizer

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"unicode/utf8"
)

// ---- Unigram (llm_tokenizer_ugm, tokenizer.ggml.model "t5") ----
//
// SentencePiece's unigram model, as T5 and XLM-RoBERTa use it. The text is
// first normalized by the model's precompiled character map
// (tokenizer.ggml.precompiled_charsmap: SentencePiece's serialized
// normalizer, a double-array trie of input prefixes and the strings that
// replace them), spaces become "▁" (one in front, and runs merged when
// tokenizer.ggml.remove_extra_whitespaces is set). Then a Viterbi pass
// picks the segmentation with the highest sum of token scores; a code
// point no token covers costs the lowest score less 10 and becomes the
// unknown token (runs of them one).

// ugmUnknownPenalty is llama.cpp's unknown_token_score_penalty.
const ugmUnknownPenalty = 10.0

// ugmModel is what a unigram vocabulary adds to the Tokenizer. Read-only
// after newUGM.
type ugmModel struct {
	tokens      *prefixIndex // normal, user-defined and unused tokens
	userDefined *prefixIndex // user-defined tokens, kept whole by the normalizer
	unkScore    float64
	charsmap    *charsmap // nil: no normalization
	mergeSpaces bool      // tokenizer.ggml.remove_extra_whitespaces
}

func (t *Tokenizer) newUGM(md Metadata) error {
	u := &ugmModel{}
	var keys, udKeys []string
	var ids, udIDs []int32
	minScore := math.Inf(1)
	for id, a := range t.attrs {
		if a&attrNormal != 0 {
			minScore = min(minScore, float64(t.scores[id]))
		}
		if a&(attrNormal|attrUserDefined|attrUnused) != 0 {
			keys = append(keys, t.tokens[id])
			ids = append(ids, int32(id))
		}
		if a&attrUserDefined != 0 {
			udKeys = append(udKeys, t.tokens[id])
			udIDs = append(udIDs, int32(id))
		}
	}
	if math.IsInf(minScore, 1) {
		minScore = math.MaxFloat32 // llama.cpp's FLT_MAX start when no token is normal
	}
	u.unkScore = minScore - ugmUnknownPenalty
	u.tokens = newPrefixIndex(keys, ids)
	u.userDefined = newPrefixIndex(udKeys, udIDs)
	if v, ok := md.Bool("tokenizer.ggml.remove_extra_whitespaces"); ok {
		u.mergeSpaces = v
	}
	if raw, ok := md.Bytes("tokenizer.ggml.precompiled_charsmap"); ok && len(raw) > 0 {
		cm, err := parseCharsmap(raw)
		if err != nil {
			return err
		}
		u.charsmap = cm
	} else if !ok && md.Has("tokenizer.ggml.precompiled_charsmap") {
		return fmt.Errorf("%w: tokenizer.ggml.precompiled_charsmap is not an array of bytes", ErrBadMetadata)
	}
	t.ugm = u
	return nil
}

// charsmap is SentencePiece's precompiled normalizer: a 4-byte little-endian
// size, that many bytes of XOR-compressed compact double array (XCDA)
// units, then NUL-terminated replacement strings the trie's leaves point to.
type charsmap struct {
	units        []uint32
	replacements []byte
}

func parseCharsmap(raw []byte) (*charsmap, error) {
	if len(raw) < 4 {
		return nil, fmt.Errorf("%w: precompiled_charsmap of %d bytes", ErrBadMetadata, len(raw))
	}
	size := uint64(binary.LittleEndian.Uint32(raw))
	if size%4 != 0 || 4+size >= uint64(len(raw)) {
		return nil, fmt.Errorf("%w: precompiled_charsmap trie of %d bytes in %d", ErrBadMetadata, size, len(raw))
	}
	cm := &charsmap{units: make([]uint32, size/4), replacements: raw[4+size:]}
	for i := range cm.units {
		cm.units[i] = binary.LittleEndian.Uint32(raw[4+4*i:])
	}
	return cm, nil
}

// XCDA unit fields (SentencePiece's darts-clone layout).
func xcdaBase(u uint32) uint32   { return (u >> 10) << ((u & (1 << 9)) >> 6) }
func xcdaLCheck(u uint32) uint32 { return u & ((1 << 31) | 0xff) }
func xcdaIsLeaf(u uint32) bool   { return (u>>8)&1 == 1 }
func xcdaValue(u uint32) uint32  { return u & ((1 << 31) - 1) }

// maxCharsmapKey bounds the bytes of input one charsmap match walks, and
// of a replacement. SentencePiece's normalization rules match and produce
// a few dozen bytes at most; a crafted trie can lead a node back to itself
// and match a whole run (normalization quadratic in the input's length),
// or point at a string without its NUL (every matching byte expanded into
// the rest of the map).
const maxCharsmapKey = 256

// longest finds the longest prefix of s the map replaces: its length in s
// and the replacement. n is 0 when no prefix matches. Indexes the trie
// points outside itself end the match (a damaged map normalizes less; it
// never reads out of bounds), and so does a match past maxCharsmapKey
// bytes (a cyclic trie costs linear time, not quadratic); a replacement
// with no NUL within maxCharsmapKey bytes is no match.
func (cm *charsmap) longest(s string) (n int, repl string) {
	unit := func(i uint32) (uint32, bool) {
		if uint64(i) >= uint64(len(cm.units)) {
			return 0, false
		}
		return cm.units[i], true
	}
	root, ok := unit(0)
	if !ok {
		return 0, ""
	}
	node := xcdaBase(root)
	valueAt := uint32(0)
	for i := 0; i < min(len(s), maxCharsmapKey); i++ {
		c := uint32(s[i])
		if c == 0 {
			break
		}
		node ^= c
		u, ok := unit(node)
		if !ok || xcdaLCheck(u) != c {
			break
		}
		leaf := xcdaIsLeaf(u)
		node ^= xcdaBase(u)
		if leaf {
			v, ok := unit(node)
			if !ok {
				break
			}
			n, valueAt = i+1, xcdaValue(v)
		}
	}
	if n == 0 {
		return 0, ""
	}
	if uint64(valueAt) >= uint64(len(cm.replacements)) {
		return 0, ""
	}
	r := cm.replacements[valueAt:]
	r = r[:min(len(r), maxCharsmapKey+1)]
	end := bytes.IndexByte(r, 0)
	if end < 0 && len(r) > maxCharsmapKey {
		// No NUL within maxCharsmapKey bytes: a damaged map, whose
		// "replacement" could be megabytes for every matching byte.
		return 0, ""
	}
	if end >= 0 {
		r = r[:end]
	}
	return n, string(r)
}

// ugmNormalize is llama.cpp's llm_tokenizer_ugm_session::normalize with
// escaped whitespace ("▁") and whitespace as a prefix, SentencePiece's
// defaults for these models.
func (t *Tokenizer) ugmNormalize(text string) string {
	u := t.ugm
	const space = "▁"
	out := make([]byte, 0, len(text)*3/2+8)
	prepend := t.addSpace
	prepended, inWord := false, false
	for off := 0; off < len(text); {
		norm, consumed := t.ugmNormalizePrefix(text[off:])
		for i := 0; i < len(norm); i++ {
			c := norm[i]
			if c != ' ' {
				if !inWord {
					inWord = true
					if (prepend && !prepended) || u.mergeSpaces {
						out = append(out, space...)
						prepended = true
					}
				}
				out = append(out, c)
				continue
			}
			inWord = false
			if !u.mergeSpaces {
				out = append(out, space...)
			}
		}
		off += consumed
	}
	return string(out)
}

// ugmNormalizePrefix returns the normalized form of the start of s and how
// many bytes of s it stands for: a user-defined token as it is, else the
// charsmap's longest replacement, else one code point as it is (an invalid
// byte becomes U+FFFD).
func (t *Tokenizer) ugmNormalizePrefix(s string) (string, int) {
	if n, _ := t.ugm.userDefined.longest(s); n > 0 {
		return s[:n], n
	}
	if t.ugm.charsmap != nil {
		if n, repl := t.ugm.charsmap.longest(s); n > 0 {
			return repl, n
		}
	}
	r, n := utf8.DecodeRuneInString(s)
	if r == utf8.RuneError && n <= 1 {
		return "\uFFFD", 1
	}
	return s[:n], n
}

type ugmBest struct {
	id    int32
	from  int
	score float64
}

// ugmTokenize appends the unigram tokens of one raw text fragment to out.
func (t *Tokenizer) ugmTokenize(text string, out []int32) []int32 {
	s := t.ugmNormalize(text)
	if s == "" {
		return out
	}
	best := make([]ugmBest, len(s)+1)
	for i := range best {
		best[i] = ugmBest{id: t.unk, score: -math.MaxFloat64}
	}
	best[0] = ugmBest{id: t.unk, score: 0}
	for off := 0; off < len(s); {
		n := min(utf8LenFromLead(s[off]), len(s)-off)
		cur := best[off]
		whole := false
		t.ugm.tokens.walk(s[off:], func(m int, id int32) bool {
			if m == n {
				whole = true
			}
			score := float64(t.scores[id])
			if t.attrs[id]&attrUserDefined != 0 {
				score = 0 // user-defined tokens win over log-probabilities
			}
			if c := cur.score + score; c > best[off+m].score {
				best[off+m] = ugmBest{id: id, from: off, score: c}
			}
			return true
		})
		if !whole {
			if c := cur.score + t.ugm.unkScore; c > best[off+n].score {
				best[off+n] = ugmBest{id: t.unk, from: off, score: c}
			}
		}
		off += n
	}
	start := len(out)
	prevUnknown := false
	for at := len(s); ; {
		b := best[at]
		unknown := b.id == t.unk
		if !(prevUnknown && unknown) {
			out = append(out, b.id)
		}
		if b.from == 0 {
			break
		}
		prevUnknown = unknown
		at = b.from
	}
	for i, j := start, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	if t.unk == noToken {
		// No unknown token to stand for what no token covers: drop it.
		kept := out[:start]
		for _, id := range out[start:] {
			if id != noToken {
				kept = append(kept, id)
			}
		}
		out = kept
	}
	return out
}
