package node

import (
	"encoding/json"
	"testing"
)

// FuzzOllamaRequest feeds arbitrary bodies to the check of /api/generate
// and /api/chat requests: it never panics, and what it accepts is a JSON
// object.
func FuzzOllamaRequest(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","prompt":"hi"}`,
		`{"model":"m","messages":[{"role":"user","content":"hi","images":[]}],"options":{"num_predict":-1,"temperature":0}}`,
		`{"model":"m","prompt":"x","options":{"mirostat":0,"typical_p":1,"num_ctx":99999999}}`,
		`{"model":"m","prompt":"x","raw":true,"system":"s"}`,
		`{"model":"m","messages":"x"}`,
		`{"options":[]}`,
		`[]`, `null`, `{`, ``,
	} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, body []byte, chat bool) {
		if _, err := checkOllamaRequest(body, chat); err == nil {
			var m map[string]json.RawMessage
			if json.Unmarshal(body, &m) != nil || m == nil {
				t.Fatalf("accepted a body that is not a JSON object: %q", body)
			}
		}
	})
}
