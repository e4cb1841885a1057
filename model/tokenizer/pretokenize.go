package tokenizer

import "fmt"

// splitter refines a list of fragment lengths (in code points) into a finer
// one. Fragments never merge: each one is split on its own, and lookahead
// at a fragment's end sees the end of input (as in llama.cpp).
type splitter interface {
	split(t *reText, offsets []int, out []int) []int
}

// The split expressions llama.cpp uses, verbatim. The three that have a
// hand-written splitter are recognised by their exact text, as llama.cpp's
// unicode_regex_split_custom does.
const (
	reGPT2 = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`
	// reLlama3 is the Llama 3 expression with (?i:...) spelled out, as llama.cpp adapted it.
	reLlama3 = `(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	// reQwen2 is reLlama3 with single digits.
	reQwen2      = `(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	reLlama3Orig = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	reQwen2Orig  = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`

	reGPT4o    = `[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	reTekken   = `[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	reCJK      = `[一-龥ࠀ-一가-퟿]+`
	reBloom    = ` ?[^(\s|.,!?…。，、।۔،)]+`
	reDeepseek = "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-\u1f7dᾀ-ᾴᾶ-ᾼ\u1fbeῂ-ῄῆ-ῌῐ-\u1fd3ῖ-\u1fdbῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\u2126ℨ\u212a-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+" // code points that NFC would fold are escaped
)

// preTokenizer is what tokenizer.ggml.pre selects (llama.cpp's llm_tokenizer_bpe
// constructor plus the per-type flags of llama_vocab::impl::load).
type preTokenizer struct {
	exprs        []string
	ignoreMerges bool
	addBOS       bool // default for add_bos_token when the key is absent
	noBOS        bool // the type clears the default BOS id (chatglm)
}

// preTokenizerFor maps a tokenizer.ggml.pre value to its pre-tokenizer. ok is
// false for values it does not know; the caller then falls back to "default".
func preTokenizerFor(pre string) (p preTokenizer, ok bool) {
	switch pre {
	case "", "default":
		return preTokenizer{exprs: []string{`[\p{P}\$\+<=>\^~\|]+`, reGPT2, `\p{N}+`, `[0-9][0-9][0-9]`}}, true
	case "llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano":
		return preTokenizer{exprs: []string{reLlama3}, ignoreMerges: true, addBOS: true}, true
	case "dbrx", "smaug-bpe":
		return preTokenizer{exprs: []string{reLlama3}}, true
	case "glm4", "chatglm-bpe":
		return preTokenizer{exprs: []string{reLlama3}, noBOS: true}, true
	case "deepseek-llm":
		return preTokenizer{exprs: []string{`[\r\n]`, reDeepseek, `\s?[!-/:-~！-／：-～‘-‟　-。]+`, `\s+$`, reCJK, `\p{N}+`}}, true
	case "deepseek-coder":
		return preTokenizer{exprs: []string{`[\r\n]`, `\s?\p{L}+`, `\s?\p{P}+`, reCJK, `\p{N}`}}, true
	case "deepseek-v3", "hunyuan-dense", "joyai-llm":
		return preTokenizer{exprs: []string{`\p{N}{1,3}`, `[一-龥぀-ゟ゠-ヿ]+`,
			`[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_` + "`" + `{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`}}, true
	case "falcon":
		return preTokenizer{exprs: []string{`[\p{P}\$\+<=>\^~\|` + "`" + `]+`, reGPT2, `[0-9][0-9][0-9]`}}, true
	case "starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b", "mellum2":
		return preTokenizer{exprs: []string{`\p{N}`, reGPT2}}, true
	case "gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0",
		"mellum", "modern-bert", "jina-v1-en", "jina-v2-code", "roberta-bpe", "exaone4",
		"mpt", "olmo", "jais", "trillion", "granite-docling":
		return preTokenizer{exprs: []string{reGPT2}}, true
	case "qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2", "hunyuan", "solar-open", "grok-2":
		return preTokenizer{exprs: []string{reQwen2}}, true
	case "qwen35":
		return preTokenizer{exprs: []string{`(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`}}, true
	case "poro-chat", "bloom", "gpt3-finnish":
		return preTokenizer{exprs: []string{reBloom}}, true
	case "viking":
		return preTokenizer{exprs: []string{reBloom, `\p{N}`}}, true
	case "tekken":
		return preTokenizer{exprs: []string{reTekken}, ignoreMerges: true, addBOS: true}, true
	case "chameleon":
		return preTokenizer{exprs: []string{`<sentinel:[0-9]+>`, `(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z`,
			`([\t\n]|    |  )`, `\p{N}`, `[\p{P}!-/:-@\[-` + "`" + `{-~]`, reGPT2}, addBOS: true}, true
	case "gpt-4o", "llama4", "kanana2", "minimax-m2":
		return preTokenizer{exprs: []string{reGPT4o}}, true
	case "superbpe":
		return preTokenizer{exprs: []string{`\p{N}+`, `(?=(\d{3})+(?!\d))`}}, true
	case "bailingmoe", "bailingmoe2", "llada-moe":
		return preTokenizer{exprs: []string{`'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+`}}, true
	case "seed-coder":
		return preTokenizer{exprs: []string{`(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+`}}, true
	}
	return preTokenizer{}, false
}

// compileSplitter returns the hand-written splitter for the expressions that
// have one and the backtracking engine for the rest.
func compileSplitter(expr string) (splitter, error) {
	switch expr {
	case reGPT2:
		return gpt2Splitter{}, nil
	case reLlama3, reLlama3Orig:
		return llama3Splitter{maxDigits: 3}, nil
	case reQwen2, reQwen2Orig:
		return llama3Splitter{maxDigits: 1}, nil
	}
	re, err := compileRegex(expr)
	if err != nil {
		return nil, err
	}
	return &regexSplitter{re: re}, nil
}

func compileSplitters(exprs []string) ([]splitter, error) {
	out := make([]splitter, 0, len(exprs))
	for _, e := range exprs {
		s, err := compileSplitter(e)
		if err != nil {
			return nil, fmt.Errorf("pre-tokenizer: %w", err)
		}
		out = append(out, s)
	}
	return out, nil
}

// fragCursor gives bounds-checked access to one fragment [lo, hi) of a text:
// outside it the code point is -1 and the flags are 0, like llama.cpp's
// OUT_OF_RANGE sentinel.
type fragCursor struct {
	t      *reText
	lo, hi int
	prev   int
	out    []int
}

func (c *fragCursor) cpt(pos int) rune {
	if pos >= c.lo && pos < c.hi {
		return c.t.cpts[pos]
	}
	return -1
}

func (c *fragCursor) flags(pos int) cptFlags {
	if pos >= c.lo && pos < c.hi {
		return c.t.flags[pos]
	}
	return 0
}

// emit ends the current piece at end and returns its length.
func (c *fragCursor) emit(end int) int {
	n := end - c.prev
	if n > 0 {
		c.out = append(c.out, n)
	}
	c.prev = end
	return n
}

const notWordChar = flagWhitespace | flagLetter | flagNumber

// gpt2Splitter implements reGPT2 by hand:
// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)
type gpt2Splitter struct{}

func (gpt2Splitter) split(t *reText, offsets []int, out []int) []int {
	start := 0
	for _, length := range offsets {
		c := fragCursor{t: t, lo: start, hi: start + length, prev: start, out: out}
		for pos := c.lo; pos < c.hi; {
			r := c.cpt(pos)
			f := c.flags(pos)
			if r == '\'' && pos+1 < c.hi {
				n := c.cpt(pos + 1)
				if n == 's' || n == 't' || n == 'm' || n == 'd' {
					pos += c.emit(pos + 2)
					continue
				}
				if pos+2 < c.hi {
					nn := c.cpt(pos + 2)
					if (n == 'r' && nn == 'e') || (n == 'v' && nn == 'e') || (n == 'l' && nn == 'l') {
						pos += c.emit(pos + 3)
						continue
					}
				}
			}
			f2 := f
			if r == ' ' {
				f2 = c.flags(pos + 1)
			}
			switch {
			case f2&flagLetter != 0:
				if r == ' ' {
					pos++
				}
				for c.flags(pos)&flagLetter != 0 {
					pos++
				}
				c.emit(pos)
				continue
			case f2&flagNumber != 0:
				if r == ' ' {
					pos++
				}
				for c.flags(pos)&flagNumber != 0 {
					pos++
				}
				c.emit(pos)
				continue
			case f2&notWordChar == 0 && f2 != 0:
				if r == ' ' {
					pos++
				}
				for g := c.flags(pos); g&notWordChar == 0 && g != 0; g = c.flags(pos) {
					pos++
				}
				c.emit(pos)
				continue
			}
			nws := 0
			for c.flags(pos+nws)&flagWhitespace != 0 {
				nws++
			}
			if nws > 1 && c.cpt(pos+nws) != -1 { // \s+(?!\S) followed by a non-space
				pos += nws - 1
				c.emit(pos)
				continue
			}
			if nws > 0 {
				pos += nws
				c.emit(pos)
				continue
			}
			pos++
			c.emit(pos)
		}
		out = c.out
		start += length
	}
	return out
}

// llama3Splitter implements reLlama3 (maxDigits 3) and reQwen2 (maxDigits 1) by hand:
// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,maxDigits}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
type llama3Splitter struct{ maxDigits int }

func asciiLower(r rune) rune {
	if r >= 'A' && r <= 'Z' {
		return r + 32
	}
	return r
}

func (s llama3Splitter) split(t *reText, offsets []int, out []int) []int {
	start := 0
	for _, length := range offsets {
		c := fragCursor{t: t, lo: start, hi: start + length, prev: start, out: out}
		for pos := c.lo; pos < c.hi; {
			r := c.cpt(pos)
			f := c.flags(pos)
			if r == '\'' && pos+1 < c.hi {
				n := asciiLower(c.cpt(pos + 1))
				if n == 's' || n == 't' || n == 'm' || n == 'd' {
					pos += c.emit(pos + 2)
					continue
				}
				if pos+2 < c.hi {
					nn := asciiLower(c.cpt(pos + 2))
					if (n == 'r' && nn == 'e') || (n == 'v' && nn == 'e') || (n == 'l' && nn == 'l') {
						pos += c.emit(pos + 3)
						continue
					}
				}
			}
			// [^\r\n\p{L}\p{N}]?\p{L}+
			if r != '\r' && r != '\n' && f&flagNumber == 0 {
				if f&flagLetter != 0 || c.flags(pos+1)&flagLetter != 0 {
					pos++
					for c.flags(pos)&flagLetter != 0 {
						pos++
					}
					c.emit(pos)
					continue
				}
			}
			// \p{N}{1,maxDigits}
			if f&flagNumber != 0 {
				ini := pos
				for c.flags(pos)&flagNumber != 0 {
					pos++
					if pos-ini >= s.maxDigits {
						c.emit(pos)
						ini = pos
					}
				}
				c.emit(pos)
				continue
			}
			// ' '?[^\s\p{L}\p{N}]+[\r\n]*
			f2 := f
			if r == ' ' {
				f2 = c.flags(pos + 1)
			}
			if f2&notWordChar == 0 && f2 != 0 {
				if r == ' ' {
					pos++
				}
				for g := c.flags(pos); g&notWordChar == 0 && g != 0; g = c.flags(pos) {
					pos++
				}
				for r2 := c.cpt(pos); r2 == '\r' || r2 == '\n'; r2 = c.cpt(pos) {
					pos++
				}
				c.emit(pos)
				continue
			}
			nws, lastNL := 0, 0
			for c.flags(pos+nws)&flagWhitespace != 0 {
				if r2 := c.cpt(pos + nws); r2 == '\r' || r2 == '\n' {
					lastNL = pos + nws + 1
				}
				nws++
			}
			if lastNL > 0 { // \s*[\r\n]+
				pos = lastNL
				c.emit(pos)
				continue
			}
			if nws > 1 && c.cpt(pos+nws) != -1 { // \s+(?!\S)
				pos += nws - 1
				c.emit(pos)
				continue
			}
			if nws > 0 { // \s+
				pos += nws
				c.emit(pos)
				continue
			}
			pos++
			c.emit(pos)
		}
		out = c.out
		start += length
	}
	return out
}
