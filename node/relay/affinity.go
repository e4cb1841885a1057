package relay

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"hash"
)

// Sizes of what AffinityKey reads of a prompt.
const (
	// affinityPromptBytes: a raw prompt's key is its first this many
	// bytes, and a shorter prompt has none. A continuation of a prompt
	// (the next turn of a conversation a client renders itself) starts
	// with the same bytes only if the cut falls inside the earlier part,
	// so a short prompt cannot be keyed without its next turn keying
	// differently; and a prompt this short (some 128 tokens) is cheap to
	// evaluate again on any worker.
	affinityPromptBytes = 512
	// affinityChatBytes bounds what a chat's key reads of its messages
	// (role and content, canonical): enough to tell conversations apart,
	// and conversations that share this much share that prefix in a
	// worker's cache too.
	affinityChatBytes = 4096
)

// AffinityKey is the body's routing key (router.Filter.Affinity): what
// stays the same across the turns of one conversation, so that every
// node sends them to the worker whose KV cache holds the earlier turns.
// It is computed from the request's JSON alone, never by tokenizing the
// prompt (only the worker holds the tokenizer and template):
//
//   - a chat ("messages"): the messages up to and including the first
//     user message, as role and content re-encoded as canonical JSON (so
//     whitespace and key order do not matter), at most affinityChatBytes
//     of them. Every later turn of the chat repeats them first, so the
//     whole chat has one key however long it grows;
//   - a prompt ("prompt", a string or a list of one): its first
//     affinityPromptBytes bytes; a shorter prompt has no key.
//
// Anything else (embeddings, a malformed body, which the worker refuses)
// has no key: "" routes by load alone. The key is a hex digest, of fixed
// length whatever the prompt.
func (b Body) AffinityKey() string {
	if raw, ok := b["messages"]; ok {
		return chatKey(raw)
	}
	if raw, ok := b["prompt"]; ok {
		return promptKey(raw)
	}
	return ""
}

func chatKey(raw json.RawMessage) string {
	// Decoded one message at a time: the messages after the first user
	// message (a long conversation's) are not read.
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('[') || !dec.More() {
		return ""
	}
	h := sha256.New()
	h.Write([]byte("chat\x00"))
	w := &boundedWriter{h: h, left: affinityChatBytes}
	for dec.More() && w.left > 0 {
		var msg struct {
			Role    string `json:"role"`
			Content any    `json:"content"`
		}
		if dec.Decode(&msg) != nil {
			return ""
		}
		w.write([]byte(msg.Role))
		if text, ok := msg.Content.(string); ok {
			w.write([]byte("\x00s"))
			w.write([]byte(text))
		} else {
			content, _ := json.Marshal(msg.Content) // maps come out in key order
			w.write([]byte("\x00j"))
			w.write(content)
		}
		w.write([]byte{0})
		if msg.Role == "user" {
			break
		}
	}
	return digest(h)
}

func promptKey(raw json.RawMessage) string {
	var p string
	if json.Unmarshal(raw, &p) != nil {
		var list []string
		if json.Unmarshal(raw, &list) != nil || len(list) != 1 {
			return ""
		}
		p = list[0]
	}
	if len(p) < affinityPromptBytes {
		return ""
	}
	h := sha256.New()
	h.Write([]byte("prompt\x00"))
	h.Write([]byte(p[:affinityPromptBytes]))
	return digest(h)
}

// digest is h's sum, cut to 128 bits (no two conversations meet by
// chance) and hex encoded.
func digest(h hash.Hash) string {
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// boundedWriter writes to h until left bytes are written, then drops the
// rest.
type boundedWriter struct {
	h    hash.Hash
	left int
}

func (w *boundedWriter) write(p []byte) {
	if len(p) > w.left {
		p = p[:w.left]
	}
	w.h.Write(p)
	w.left -= len(p)
}
