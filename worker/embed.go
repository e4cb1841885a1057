package worker

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"math"
	"net/http"
	"slices"
	"unicode/utf8"
)

// maxEmbedInputs bounds the texts of one embeddings request: OpenAI's
// limit, which clients size their batches by (LangChain's OpenAIEmbeddings
// sends 1,000 a request). The inputs are evaluated one after the other on
// one slot, and each is bounded by the context, so the request's work is
// bounded too.
const maxEmbedInputs = 2048

// embedRequest is an OpenAI embeddings request.
type embedRequest struct {
	Model          string   `json:"model"`
	Input          textList `json:"input"`
	EncodingFormat string   `json:"encoding_format"`
	User           string   `json:"user"`
	// Truncate (rbee's, not OpenAI's: Ollama's /api/embed truncate) cuts
	// an input longer than the context to its first context-length
	// tokens; without it such an input is a 400, as OpenAI answers.
	Truncate bool `json:"truncate"`
}

// embedPrefixMargin is how many tokens' worth of bytes embedPrefix keeps
// past the context: tokenizing a prefix can differ from tokenizing the
// whole text only near the cut, and those tokens are then truncated away.
const embedPrefixMargin = 64

// embedPrefix cuts text, to be truncated to the context, to the bytes its
// first context-length tokens can span (each token spans at most
// MaxTokenBytes), plus a margin, at a character boundary.
func embedPrefix(info ModelInfo, text string) string {
	if info.MaxTokenBytes <= 0 || info.ContextLength <= 0 {
		return text
	}
	keep := (info.ContextLength + embedPrefixMargin) * info.MaxTokenBytes
	if len(text) <= keep {
		return text
	}
	for keep > 0 && !utf8.RuneStart(text[keep]) {
		keep--
	}
	return text[:keep]
}

// EmbedResponse is the body of a POST /v1/embeddings answer.
type EmbedResponse struct {
	Object string      `json:"object"`
	Data   []Embedding `json:"data"`
	Model  string      `json:"model"`
	Usage  struct {
		PromptTokens int `json:"prompt_tokens"`
		TotalTokens  int `json:"total_tokens"`
	} `json:"usage"`
}

// Embedding is one input's vector.
type Embedding struct {
	Object    string    `json:"object"`
	Index     int       `json:"index"`
	Embedding []float32 `json:"embedding"`
}

// handleEmbeddings serves POST /v1/embeddings: each input is evaluated on a
// slot and its final hidden states are mean-pooled (see engine Embed).
func (s *Server) handleEmbeddings(w http.ResponseWriter, r *http.Request) {
	m, pool, st, err := s.admit()
	if err != nil {
		writeError(w, notAdmitted(st))
		return
	}
	defer s.reqs.Done()
	if aerr := stageOnly(m); aerr != nil {
		writeError(w, aerr)
		return
	}
	var req embedRequest
	if aerr := decodeBody(w, r, &req, endpointEmbed); aerr != nil {
		writeError(w, aerr)
		return
	}
	if req.EncodingFormat != "" && req.EncodingFormat != "float" && req.EncodingFormat != "base64" {
		writeError(w, badRequest("encoding_format", "invalid_value", "encoding_format must be \"float\" or \"base64\""))
		return
	}
	switch {
	case len(req.Input) == 0:
		writeError(w, badRequest("input", "missing", "input must be a string or a non-empty array of strings"))
		return
	case len(req.Input) > maxEmbedInputs:
		writeError(w, badRequest("input", "invalid_value", fmt.Sprintf("at most %d inputs per request", maxEmbedInputs)))
		return
	}
	info := m.Info()
	ctxLen := info.ContextLength
	prompts := make([][]int32, len(req.Input))
	var res EmbedResponse
	for i, text := range req.Input {
		if text == "" {
			writeError(w, badRequest(fmt.Sprintf("input[%d]", i), "missing", "inputs must not be empty"))
			return
		}
		// Tokenizing costs memory in proportion to the text (hundreds
		// of MB for a megabyte): a text that cannot fit is refused, or
		// cut to what its first context-length tokens can span, first.
		if req.Truncate {
			text = embedPrefix(info, text)
		} else if aerr := tooLongToTokenize(info, len(text), fmt.Sprintf("input[%d]", i)); aerr != nil {
			writeError(w, aerr)
			return
		}
		prompts[i] = m.Encode(text)
		if req.Truncate && len(prompts[i]) > ctxLen {
			prompts[i] = prompts[i][:ctxLen]
		}
		if len(prompts[i]) > ctxLen {
			writeError(w, &apiError{status: http.StatusBadRequest, typ: errTypeInvalid, code: "context_length_exceeded", param: fmt.Sprintf("input[%d]", i),
				msg: fmt.Sprintf("input %d is %d tokens; the context holds %d", i, len(prompts[i]), ctxLen)})
			return
		}
		res.Usage.PromptTokens += len(prompts[i])
	}
	res.Usage.TotalTokens = res.Usage.PromptTokens

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(s.hardCtx, cancel)()
	sl, err := pool.acquire(ctx)
	if err != nil {
		if aerr := s.notAcquired(err); aerr != nil {
			writeError(w, aerr)
		}
		return
	}
	defer pool.release(sl)
	s.mu.Lock()
	s.inFlight++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inFlight--
		s.mu.Unlock()
	}()
	res.Object, res.Model = "list", s.modelName
	for i, p := range prompts {
		vec, err := sl.session.Embed(ctx, p)
		s.checkModelLost(err)
		if err != nil {
			if ctx.Err() != nil && r.Context().Err() != nil {
				return // the client went away
			}
			if s.hardCtx.Err() != nil {
				writeError(w, &apiError{status: http.StatusServiceUnavailable, typ: errTypeUnavailable, code: "draining", msg: "worker is shutting down"})
				return
			}
			writeError(w, &apiError{status: http.StatusInternalServerError, typ: "server_error", code: "embedding_failed", msg: err.Error()})
			return
		}
		res.Data = append(res.Data, Embedding{Object: "embedding", Index: i, Embedding: slices.Clip(vec)})
	}
	if req.EncodingFormat == "base64" {
		// What OpenAI's Python and Node clients ask for by default: the
		// little-endian float32 bytes of each vector, in base64.
		type b64 struct {
			Object    string `json:"object"`
			Index     int    `json:"index"`
			Embedding string `json:"embedding"`
		}
		data := make([]b64, len(res.Data))
		for i, d := range res.Data {
			buf := make([]byte, 4*len(d.Embedding))
			for k, v := range d.Embedding {
				binary.LittleEndian.PutUint32(buf[4*k:], math.Float32bits(v))
			}
			data[i] = b64{Object: d.Object, Index: d.Index, Embedding: base64.StdEncoding.EncodeToString(buf)}
		}
		writeJSON(w, http.StatusOK, map[string]any{"object": res.Object, "data": data, "model": res.Model, "usage": res.Usage})
		return
	}
	writeJSON(w, http.StatusOK, res)
}
