package worker

import (
	"fmt"
	"net/http"
	"regexp"
	"sync"

	"github.com/rbee-project/rbee/internal/sse"
)

// ExtField is the request field of rbee's own extension of the inference
// endpoints (/v1/infer and both OpenAI ones). Nodes set it; clients have no
// use for it (nothing in it grants anything: it only steers the generation
// of the request that carries it).
const ExtField = "rbee"

// ExtVersion is the version of Ext this worker reads; a request with
// another one is refused, so a node never gets a silently different meaning.
const ExtVersion = 1

// TokenIDEvent is the SSE event type that, with Ext.TokenIDs, precedes each
// generated token's chunk in an OpenAI stream (every token with an id, also
// those whose text is still held back). Nodes consume it; it never reaches
// a client.
const TokenIDEvent = "rbee_token"

// Ext is the extension field: how a node resumes an interrupted stream on
// another worker.
//
// Resume holds the token ids the interrupted generation had emitted; the
// worker continues the request exactly: its prompt (tokenized as before)
// plus these ids, the remaining max_tokens, the same sampling parameters
// and seed (the random draw is advanced by one draw per resumed token, as
// the engine draws once per non-greedy token), with text decoding and stop
// strings resumed mid-stream. Token indexes and counts go on from there.
// A chat stream that resumes tokens or keeps an ID continues one its client
// has begun, so it starts without its role chunk.
type Ext struct {
	V int `json:"v"`
	// TokenIDs asks an OpenAI stream for a TokenIDEvent before each token.
	TokenIDs bool    `json:"token_ids,omitempty"`
	Resume   []int32 `json:"resume,omitempty"`
	// ID and Created keep an OpenAI completion's id and creation time
	// across the workers of one stream.
	ID      string `json:"id,omitempty"`
	Created int64  `json:"created,omitempty"`
	// TextOffset is the length in bytes of the text the client already
	// has: a resumed /v1/completions stream's logprobs text_offset counts
	// on from it.
	TextOffset int `json:"text_offset,omitempty"`
}

// TokenID is the data of a TokenIDEvent.
type TokenID struct {
	ID int32 `json:"id"`
}

// extIDPattern bounds a kept completion id: what newID makes, with a
// prefix, and nothing an SSE line or a log could be confused by.
var extIDPattern = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`) })

// check validates the extension; nil when absent.
func (e *Ext) check() *apiError {
	switch {
	case e == nil:
		return nil
	case e.V != ExtVersion:
		return badRequest(ExtField+".v", "invalid_value", fmt.Sprintf("extension version %d is not supported; this worker reads version %d", e.V, ExtVersion))
	case e.ID != "" && !extIDPattern().MatchString(e.ID):
		return badRequest(ExtField+".id", "invalid_value", "id must be 1..64 characters of A-Z a-z 0-9 _ -")
	case e.Created < 0:
		return badRequest(ExtField+".created", "invalid_value", "created must be a Unix time")
	case e.TextOffset < 0 || e.TextOffset > maxTextOffset:
		return badRequest(ExtField+".text_offset", "invalid_value", fmt.Sprintf("text_offset must be 0..%d", maxTextOffset))
	}
	return nil
}

// resume appends the resumed ids to a prompt of n tokens, checking that
// they fit the context.
func (e *Ext) resume(ids []int32, ctxLen int, param string) ([]int32, int, *apiError) {
	if e == nil || len(e.Resume) == 0 {
		return ids, 0, nil
	}
	// Equal is allowed: the interrupted attempt filled the context (its
	// last token was emitted, never evaluated); the engine then ends
	// with "length" at once.
	if len(ids)+len(e.Resume) > ctxLen {
		return nil, 0, &apiError{status: http.StatusBadRequest, typ: errTypeInvalid, code: "context_length_exceeded", param: ExtField + ".resume",
			msg: fmt.Sprintf("%s (%d tokens) and %d resumed tokens fill the context of %d", param, len(ids), len(e.Resume), ctxLen)}
	}
	return append(append(make([]int32, 0, len(ids)+len(e.Resume)), ids...), e.Resume...), len(e.Resume), nil
}

// maxTextOffset bounds Ext.TextOffset: far more text than any context
// window holds (a million tokens of 64 bytes).
const maxTextOffset = 64 << 20

// textOffset is where the text this job generates begins in the text its
// client has: 0, or Ext.TextOffset for a resumed stream.
func (j *job) textOffset() int {
	if j.g.Rbee == nil || j.req.Resume == 0 {
		return 0
	}
	return j.g.Rbee.TextOffset
}

// resumed reports whether the job continues a stream its client has
// begun to receive: it resumes tokens, or keeps a completion id.
func (j *job) resumed() bool { return j.req.Resume > 0 || (j.g.Rbee != nil && j.g.Rbee.ID != "") }

// tokenIDs reports whether the job's OpenAI stream carries TokenIDEvents.
func (j *job) tokenIDs() bool { return j.g.Rbee != nil && j.g.Rbee.TokenIDs }

// emitTokenID writes the TokenIDEvent of t when the job asked for them.
func (j *job) emitTokenID(out *sse.Writer, t Token) error {
	if !j.tokenIDs() || t.ID < 0 {
		return nil
	}
	return out.JSON(TokenIDEvent, TokenID{ID: t.ID})
}
