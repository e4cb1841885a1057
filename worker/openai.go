package worker

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/rbee-project/rbee/internal/sse"
)

// OpenAI-compatible shapes. Only the fields rbee fills are declared.

// Usage counts tokens of one completion.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
	// PromptTokensDetails says how many prompt tokens the worker's cache
	// held already (prefix reuse: an earlier turn of the conversation).
	PromptTokensDetails PromptTokensDetails `json:"prompt_tokens_details"`
}

// PromptTokensDetails is OpenAI's breakdown of a usage's prompt tokens.
type PromptTokensDetails struct {
	CachedTokens int `json:"cached_tokens"`
}

// ChatCompletion is the non-streaming answer of /v1/chat/completions.
type ChatCompletion struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"` // "chat.completion"
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []ChatChoice `json:"choices"`
	Usage   Usage        `json:"usage"`
}

// ChatChoice is one choice of a ChatCompletion.
type ChatChoice struct {
	Index        int             `json:"index"`
	Message      Message         `json:"message"`
	Logprobs     *ChoiceLogprobs `json:"logprobs"`
	FinishReason string          `json:"finish_reason"`
}

// ChatCompletionChunk is one streamed event of /v1/chat/completions.
type ChatCompletionChunk struct {
	ID      string            `json:"id"`
	Object  string            `json:"object"` // "chat.completion.chunk"
	Created int64             `json:"created"`
	Model   string            `json:"model"`
	Choices []ChatChunkChoice `json:"choices"`
	Usage   *Usage            `json:"usage,omitempty"`
}

// ChatChunkChoice is one choice of a chunk; FinishReason is null until the last.
type ChatChunkChoice struct {
	Index        int             `json:"index"`
	Delta        ChatDelta       `json:"delta"`
	Logprobs     *ChoiceLogprobs `json:"logprobs"`
	FinishReason *string         `json:"finish_reason"`
}

// MarshalJSON writes the message's content as null when the message is
// tool calls alone, as OpenAI does (a client tells "no text" from "empty
// text" by it).
func (c ChatChoice) MarshalJSON() ([]byte, error) {
	type plain ChatChoice
	if c.Message.Content != "" || len(c.Message.ToolCalls) == 0 {
		return json.Marshal(plain(c))
	}
	type message Message
	return json.Marshal(struct {
		plain
		Message struct {
			message
			Content *string `json:"content"`
		} `json:"message"`
	}{plain: plain(c), Message: struct {
		message
		Content *string `json:"content"`
	}{message: message(c.Message)}})
}

// ChatDelta is the increment of a streamed message.
type ChatDelta struct {
	Role    string `json:"role,omitempty"`
	Content string `json:"content,omitempty"`
	// ReasoningContent is the model's reasoning (gpt-oss's analysis
	// channel), as llama-server and vLLM stream it.
	ReasoningContent string     `json:"reasoning_content,omitempty"`
	ToolCalls        []ToolCall `json:"tool_calls,omitempty"`
	// nullContent writes "content": null: the first delta of the tool
	// calls of an answer that is tool calls alone, as OpenAI streams it.
	nullContent bool
}

// MarshalJSON writes the delta, with "content": null when nullContent.
func (d ChatDelta) MarshalJSON() ([]byte, error) {
	type plain ChatDelta
	if !d.nullContent {
		return json.Marshal(plain(d))
	}
	return json.Marshal(struct {
		Role      string     `json:"role,omitempty"`
		Content   *string    `json:"content"`
		ToolCalls []ToolCall `json:"tool_calls,omitempty"`
	}{Role: d.Role, ToolCalls: d.ToolCalls})
}

// TextCompletion is the answer (and, with object "text_completion" too, each
// streamed chunk) of /v1/completions.
type TextCompletion struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"` // "text_completion"
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []TextChoice `json:"choices"`
	Usage   *Usage       `json:"usage,omitempty"`
}

// TextChoice is one choice of a TextCompletion; FinishReason is null in
// streamed chunks until the last.
type TextChoice struct {
	Text         string        `json:"text"`
	Index        int           `json:"index"`
	Logprobs     *TextLogprobs `json:"logprobs"`
	FinishReason *string       `json:"finish_reason"`
}

// finishReason maps a stop reason to OpenAI's: the end of the text or a
// stop string is "stop", the token limit is "length".
func finishReason(stop string) string {
	if stop == StopLength {
		return "length"
	}
	return "stop"
}

func usage(res Result) Usage {
	return Usage{PromptTokens: res.PromptTokens, CompletionTokens: res.CompletionTokens, TotalTokens: res.PromptTokens + res.CompletionTokens,
		PromptTokensDetails: PromptTokensDetails{CachedTokens: res.CachedTokens}}
}

// failStream ends an OpenAI stream whose generation failed: an error object
// as data, as OpenAI does.
func (s *Server) failStream(j *job, out *sse.Writer, res Result, err error) bool {
	gone, stopping := j.interrupted(res, err)
	switch {
	case gone:
		return true
	case stopping:
		_ = out.JSON("", (&apiError{typ: errTypeUnavailable, code: "draining", msg: "worker is shutting down; generation cancelled"}).body())
		return true
	case err != nil:
		s.log.Error("generation failed", "request", j.id, "err", err)
		_ = out.JSON("", (&apiError{typ: errTypeServer, code: errCode(err), msg: err.Error()}).body())
		return true
	}
	return false
}

// failJSON answers a non-streaming request whose generation failed.
func (s *Server) failJSON(j *job, w http.ResponseWriter, res Result, err error) bool {
	gone, stopping := j.interrupted(res, err)
	switch {
	case gone:
		return true
	case stopping:
		writeError(w, &apiError{status: http.StatusServiceUnavailable, typ: errTypeUnavailable, code: "draining", msg: "worker is shutting down; generation cancelled"})
		return true
	case err != nil:
		s.log.Error("generation failed", "request", j.id, "err", err)
		ae := &apiError{status: http.StatusInternalServerError, typ: errTypeServer, code: errCode(err), msg: err.Error()}
		if errors.Is(err, ErrInvalidRequest) {
			ae.status, ae.typ = http.StatusBadRequest, errTypeInvalid
		}
		writeError(w, ae)
		return true
	}
	return false
}

// created is the completion's creation time: now, or the one a resumed
// stream keeps.
func (j *job) created() int64 {
	if e := j.g.Rbee; e != nil && e.Created > 0 {
		return e.Created
	}
	return time.Now().Unix()
}

func (s *Server) handleChat(w http.ResponseWriter, r *http.Request) {
	j, ok := s.begin(w, r, endpointChat, "chatcmpl-")
	if !ok {
		return
	}
	defer j.finish()
	created := j.created()

	if !j.g.Stream {
		var text strings.Builder
		var lp *ChoiceLogprobs
		if j.req.Logprobs {
			lp = &ChoiceLogprobs{Content: []LogprobContent{}}
		}
		var starts []int // each entry's byte offset in the generated text
		off := 0
		res, err := j.generate(func(t Token) error {
			text.WriteString(t.Text)
			if c, ok := logprobContent(t); ok && lp != nil {
				lp.Content = append(lp.Content, c)
				starts = append(starts, off)
				off += len(t.Piece)
			}
			return nil
		})
		if s.failJSON(j, w, res, err) {
			return
		}
		if lp != nil && res.StopReason == StopString {
			// The tokens of the stop string, cut from the text, are not
			// the answer's: their entries go too.
			lp.Content = lp.Content[:keptTokens(starts, text.Len())]
		}
		msg, fr := Message{Role: "assistant", Content: text.String()}, finishReason(res.StopReason)
		rs := j.reasoning()
		_, think := rs.(*ThinkStream)
		if rs != nil {
			msg, fr = reasoningAnswer(rs, msg.Content, j.g.tools, fr)
		} else if content, calls := ParseToolCalls(msg.Content, j.g.tools.names); len(calls) > 0 {
			msg.Content, msg.ToolCalls, fr = content, j.g.tools.limit(calls), "tool_calls"
		}
		if (rs == nil || think) && len(msg.ToolCalls) == 0 && res.StopReason == StopLength {
			// A call that max_tokens cut (after a think-tag model's
			// reasoning too): the call as far as it went, not its
			// markup as content; finish_reason length.
			if content, calls, ok := j.g.tools.cutAnswer(msg.Content); ok {
				msg.Content, msg.ToolCalls = content, j.g.tools.limit(calls)
			}
		}
		writeJSON(w, http.StatusOK, ChatCompletion{
			ID: j.id, Object: "chat.completion", Created: created, Model: s.modelName,
			Choices: []ChatChoice{{Message: msg, Logprobs: lp, FinishReason: fr}},
			Usage:   usage(res),
		})
		return
	}

	out := sse.Start(w)
	chunk := func(d ChatDelta, finish *string) ChatCompletionChunk {
		return ChatCompletionChunk{ID: j.id, Object: "chat.completion.chunk", Created: created, Model: s.modelName,
			Choices: []ChatChunkChoice{{Delta: d, FinishReason: finish}}}
	}
	if !j.resumed() && out.JSON("", chunk(ChatDelta{Role: "assistant"}, nil)) != nil {
		return
	}
	var ts *ToolStream
	// gpt-oss's channels, a think-tag model's reasoning: parsed from the
	// text, with the calls after it.
	hs := j.reasoning()
	if hs == nil && j.g.tools.names != nil {
		ts = &ToolStream{}
	}
	var held []LogprobContent // entries waiting for their token's text
	var heldAt []int          // and where those tokens start
	off, sent := 0, 0         // where the next token starts; the answer's text so far
	res, err := j.generate(func(t Token) error {
		// A tool stream holds text back and rewrites it: a resumed worker
		// could not rebuild that, so its token ids are not offered (the
		// node then does not resume this stream).
		if ts == nil && hs == nil {
			if err := j.emitTokenID(out, t); err != nil {
				return err
			}
		}
		text, reasoning := t.Text, ""
		if ts != nil {
			text = ts.Push(text)
		} else if hs != nil {
			text, reasoning = hs.Push(text)
		}
		c := chunk(ChatDelta{Content: text, ReasoningContent: reasoning}, nil)
		lc, ok := logprobContent(t)
		ok = ok && j.req.Logprobs
		// An entry goes out with the chunk that carries its token's
		// first byte of the answer: one held back as a possible stop
		// string waits, and one the stop cuts never goes, as in a whole
		// answer. A tool stream holds text back itself (and may turn
		// it into calls): its entries go out once the engine has given
		// that byte, with the chunk's content empty if need be.
		if ok {
			held, heldAt = append(held, lc), append(heldAt, off)
			off += len(t.Piece)
		}
		sent += len(t.Text)
		if n := keptTokens(heldAt, sent); n > 0 {
			c.Choices[0].Logprobs = &ChoiceLogprobs{Content: slices.Clone(held[:n])}
			held, heldAt = held[n:], heldAt[n:]
		} else if text == "" && reasoning == "" {
			return nil
		}
		return out.JSON("", c)
	})
	if s.failStream(j, out, res, err) {
		return
	}
	fr := finishReason(res.StopReason)
	if ts != nil || hs != nil {
		var rest, reasoning string
		var calls []ToolCall
		var textless bool
		cut := false
		if hs != nil {
			streamed := hs.StreamedContent()
			rest, reasoning, calls = hs.Finish(j.g.tools.names)
			if _, think := hs.(*ThinkStream); think && len(calls) == 0 && res.StopReason == StopLength {
				// As in a whole answer: the cut call after the
				// reasoning. The stream held the content back from the
				// call's first byte: rest begins there.
				var c []ToolCall
				var content string
				if content, c, cut = j.g.tools.cutAnswer(rest); cut {
					rest, calls = content, c
				}
			}
			textless = !streamed && rest == ""
		} else {
			rest, calls = ts.Finish(j.g.tools.names)
			if len(calls) == 0 && res.StopReason == StopLength {
				// As in a whole answer: the cut call, not its markup as
				// content. The text before it has been streamed: a stream
				// holds back from a call's first byte.
				var c []ToolCall
				if _, c, cut = j.g.tools.cutAnswer(ts.all.String()); cut {
					rest, calls = "", c
				}
			}
			// An answer that is tool calls alone has null content, which
			// OpenAI's stream says in the first call's delta.
			textless = ts.sent == 0 && rest == ""
		}
		if (rest != "" || reasoning != "") && out.JSON("", chunk(ChatDelta{Content: rest, ReasoningContent: reasoning}, nil)) != nil {
			return
		}
		for i, c := range j.g.tools.limit(calls) {
			// OpenAI's pattern: the call's id, type and name with empty
			// arguments, then the arguments.
			args := c.Function.Arguments
			c.Index, c.Function.Arguments = &i, ""
			if out.JSON("", chunk(ChatDelta{ToolCalls: []ToolCall{c}, nullContent: i == 0 && textless}, nil)) != nil ||
				out.JSON("", chunk(ChatDelta{ToolCalls: []ToolCall{{Index: &i, Function: ToolCallFunction{Arguments: args}}}}, nil)) != nil {
				return
			}
			if !cut {
				fr = "tool_calls"
			}
		}
	}
	if out.JSON("", chunk(ChatDelta{}, &fr)) != nil {
		return
	}
	if j.g.StreamOptions != nil && j.g.StreamOptions.IncludeUsage {
		u := usage(res)
		if out.JSON("", ChatCompletionChunk{ID: j.id, Object: "chat.completion.chunk", Created: created, Model: s.modelName,
			Choices: []ChatChunkChoice{}, Usage: &u}) != nil {
			return
		}
	}
	_ = out.Data("", []byte("[DONE]"))
}

func (s *Server) handleCompletion(w http.ResponseWriter, r *http.Request) {
	j, ok := s.begin(w, r, endpointCompletion, "cmpl-")
	if !ok {
		return
	}
	defer j.finish()
	created := j.created()

	if !j.g.Stream {
		var text strings.Builder
		var lp *TextLogprobs
		if j.req.Logprobs {
			lp = &TextLogprobs{}
		}
		off := 0 // where the next token starts: text held back (a possible stop string) is not emitted yet
		res, err := j.generate(func(t Token) error {
			if lp != nil && t.ID >= 0 {
				lp.add(t, off)
				off += len(t.Piece)
			}
			text.WriteString(t.Text)
			return nil
		})
		if s.failJSON(j, w, res, err) {
			return
		}
		if lp != nil && res.StopReason == StopString {
			lp.keep(keptTokens(lp.TextOffset, text.Len()))
		}
		fr := finishReason(res.StopReason)
		u := usage(res)
		writeJSON(w, http.StatusOK, TextCompletion{
			ID: j.id, Object: "text_completion", Created: created, Model: s.modelName,
			Choices: []TextChoice{{Text: text.String(), Logprobs: lp, FinishReason: &fr}},
			Usage:   &u,
		})
		return
	}

	out := sse.Start(w)
	chunk := func(text string, finish *string) TextCompletion {
		return TextCompletion{ID: j.id, Object: "text_completion", Created: created, Model: s.modelName,
			Choices: []TextChoice{{Text: text, FinishReason: finish}}}
	}
	// A token's logprobs entry goes out with the chunk that sends the
	// first byte of its text: one whose text is held back (a possible
	// stop string, part of a character) waits, and one a stop string
	// cuts never goes, as in a whole answer.
	off := j.textOffset() // where the next token starts
	sent := off           // the text the client has
	var held []Token      // tokens waiting for their text
	var heldAt []int      // and their offsets
	res, err := j.generate(func(t Token) error {
		if err := j.emitTokenID(out, t); err != nil {
			return err
		}
		if j.req.Logprobs && t.ID >= 0 {
			held, heldAt = append(held, t), append(heldAt, off)
		}
		if t.ID >= 0 {
			off += len(t.Piece)
		}
		sent += len(t.Text)
		c := chunk(t.Text, nil)
		if n := keptTokens(heldAt, sent); n > 0 {
			lp := &TextLogprobs{}
			for i := range n {
				lp.add(held[i], heldAt[i])
			}
			c.Choices[0].Logprobs = lp
			held, heldAt = held[n:], heldAt[n:]
		} else if t.Text == "" {
			return nil
		}
		return out.JSON("", c)
	})
	if s.failStream(j, out, res, err) {
		return
	}
	fr := finishReason(res.StopReason)
	if out.JSON("", chunk("", &fr)) != nil {
		return
	}
	if j.g.StreamOptions != nil && j.g.StreamOptions.IncludeUsage {
		u := usage(res)
		if out.JSON("", TextCompletion{ID: j.id, Object: "text_completion", Created: created, Model: s.modelName,
			Choices: []TextChoice{}, Usage: &u}) != nil {
			return
		}
	}
	_ = out.Data("", []byte("[DONE]"))
}
