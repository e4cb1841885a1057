package tokenizer

// ---- RWKV "world" (llm_tokenizer_rwkv, tokenizer.ggml.model "rwkv") ----
//
// The vocabulary stores arbitrary bytes escaped as text (\t \n \r, \xHH,
// and a backslash before any other character stands for that character).
// Encoding takes the longest token that matches the bytes at each position,
// left to right; a byte no token starts with becomes the unknown token.

// rwkvUnescape decodes one token text to its bytes, as llama.cpp's
// llama_unescape_rwkv_token does (a hex digit outside 0-9a-f reads as
// llama.cpp reads it: by subtraction).
func rwkvUnescape(s string) string {
	out := make([]byte, 0, len(s))
	escaping := false
	hexLeft, acc := 0, byte(0)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case hexLeft > 0:
			v := c - '0'
			if c >= 'a' {
				v = c - 'a' + 10
			}
			acc = acc<<4 + v
			hexLeft--
			if hexLeft == 0 {
				out = append(out, acc)
				acc = 0
			}
		case escaping:
			escaping = false
			switch c {
			case 't':
				out = append(out, '\t')
			case 'n':
				out = append(out, '\n')
			case 'r':
				out = append(out, '\r')
			case 'x':
				hexLeft = 2
			default:
				out = append(out, c)
			}
		case c == '\\':
			escaping = true
		default:
			out = append(out, c)
		}
	}
	return string(out)
}

// newRWKV indexes every token by its unescaped bytes.
func (t *Tokenizer) newRWKV() {
	keys := make([]string, len(t.tokens))
	ids := make([]int32, len(t.tokens))
	for i, s := range t.tokens {
		keys[i], ids[i] = rwkvUnescape(s), int32(i)
	}
	t.rwkv = newPrefixIndex(keys, ids)
}

// rwkvTokenize appends the greedy longest-match tokens of text to out.
func (t *Tokenizer) rwkvTokenize(text string, out []int32) []int32 {
	for pos := 0; pos < len(text); {
		n, id := t.rwkv.longest(text[pos:])
		if n == 0 {
			// No token starts here (llama.cpp would loop forever when a
			// longer token starts with this byte but none is this byte).
			if t.unk != noToken {
				out = append(out, t.unk)
			}
			pos++
			continue
		}
		out = append(out, id)
		pos += n
	}
	return out
}
