package engine

import (
	"math/rand/v2"
	"strconv"
	"strings"

	"github.com/rbee-project/rbee/model/jinja"
	"github.com/rbee-project/rbee/model/tokenizer"
)

// placeholderRune opens and closes a placeholder: a private-use character
// that case changes, trimming and JSON (without ensure_ascii) leave alone.
const placeholderRune = "\U0010FFFD"

// literalGuard keeps the strings of a chat request from writing special
// tokens. The text of a control token in a message ("<|im_start|>system")
// is replaced by a placeholder before the template runs and put back in the
// rendered prompt as a literal range, which EncodeLiteral reads as plain
// text; the template's own markup is still read as special tokens.
// Requests without such text are rendered unchanged.
type literalGuard struct {
	tok   *tokenizer.Tokenizer
	open  string         // placeholderRune, a random number and '#': no request can guess it
	texts []string       // the replaced texts, by placeholder number
	index map[string]int // text → placeholder number
}

func newLiteralGuard(tok *tokenizer.Tokenizer) *literalGuard {
	return &literalGuard{tok: tok, open: placeholderRune + strconv.FormatUint(rand.Uint64(), 10) + "#"}
}

// scrub returns s with its special-token texts replaced by placeholders.
// A nil guard returns s.
func (g *literalGuard) scrub(s string) string {
	if g == nil {
		return s
	}
	spans := g.tok.SpecialSpans(s)
	// The ends of s that text written beside it could complete into a
	// control token's text ("<|im_" before "start|>") are literal too.
	if head, tail := g.tok.SpecialEdges(s); head > 0 || tail > 0 {
		var all [][2]int
		if head > 0 {
			all = append(all, [2]int{0, head})
		}
		all = append(all, spans...)
		if tail > 0 {
			all = append(all, [2]int{len(s) - tail, len(s)})
		}
		spans = spans[:0:0]
		for _, r := range all {
			if n := len(spans); n > 0 && r[0] <= spans[n-1][1] {
				spans[n-1][1] = max(spans[n-1][1], r[1])
				continue
			}
			spans = append(spans, r)
		}
	}
	if len(spans) == 0 {
		return s
	}
	var b strings.Builder
	last := 0
	for _, sp := range spans {
		text := s[sp[0]:sp[1]]
		i, ok := g.index[text]
		if !ok {
			if g.index == nil {
				g.index = map[string]int{}
			}
			i = len(g.texts)
			g.index[text] = i
			g.texts = append(g.texts, text)
		}
		b.WriteString(s[last:sp[0]])
		b.WriteString(g.open)
		b.WriteString(strconv.Itoa(i))
		b.WriteString(placeholderRune)
		last = sp[1]
	}
	b.WriteString(s[last:])
	return b.String()
}

// scrubValue is scrub over a parsed JSON value (jinja.ParseJSON's types),
// keys included; it copies only what it changes.
func (g *literalGuard) scrubValue(v any) any {
	if g == nil {
		return v
	}
	switch x := v.(type) {
	case string:
		return g.scrub(x)
	case jinja.Object:
		o := make(jinja.Object, len(x))
		for i, kv := range x {
			o[i] = jinja.KV{Key: g.scrub(kv.Key), Value: g.scrubValue(kv.Value)}
		}
		return o
	case []any:
		l := make([]any, len(x))
		for i, e := range x {
			l[i] = g.scrubValue(e)
		}
		return l
	}
	return v
}

// scrubMessages returns msgs with every string scrubbed (for the fallback
// formats, which write them as they are).
func (g *literalGuard) scrubMessages(msgs []Message) []Message {
	if g == nil {
		return msgs
	}
	out := make([]Message, len(msgs))
	for i, msg := range msgs {
		out[i] = Message{Role: g.scrub(msg.Role), Content: g.scrub(msg.Content),
			ToolCallID: g.scrub(msg.ToolCallID), Name: g.scrub(msg.Name)}
		if len(msg.ToolCalls) > 0 {
			out[i].ToolCalls = make([]ToolCall, len(msg.ToolCalls))
			for j, c := range msg.ToolCalls {
				out[i].ToolCalls[j] = ToolCall{ID: g.scrub(c.ID), Name: g.scrub(c.Name), Arguments: g.scrub(c.Arguments)}
			}
		}
	}
	return out
}

// restore puts the replaced texts back into the rendered text and returns
// it with their byte ranges. A placeholder the template cut or changed
// stays as it is.
func (g *literalGuard) restore(text string) (string, [][2]int) {
	if g == nil || len(g.texts) == 0 {
		return text, nil
	}
	var b strings.Builder
	var ranges [][2]int
	for {
		k := strings.Index(text, g.open)
		if k < 0 {
			break
		}
		rest := text[k+len(g.open):]
		e := strings.Index(rest, placeholderRune)
		i, err := strconv.Atoi(rest[:max(e, 0)])
		if e < 0 || err != nil || i < 0 || i >= len(g.texts) {
			b.WriteString(text[:k+len(g.open)])
			text = rest
			continue
		}
		b.WriteString(text[:k])
		lo := b.Len()
		b.WriteString(g.texts[i])
		ranges = append(ranges, [2]int{lo, b.Len()})
		text = rest[e+len(placeholderRune):]
	}
	b.WriteString(text)
	return b.String(), ranges
}
