package node_test

import (
	"testing"

	"github.com/rbee-project/rbee/node/jobs"
	"github.com/rbee-project/rbee/node/nodetest"
)

// FuzzParseRequest: any body either parses into a known operation or is
// refused with a coded error; never a panic.
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{`{"operation":"status"}`, `{"operation":"hive_get","name":"node0"}`, `{"operation":"infer","model":"m","prompt":"x"}`,
		`{"operation":"worker_spawn","model":"builtin:stories260k","threads":-1}`, `{"operation":"model_get","id":"../x"}`,
		`{"operation":"infer","messages":[{"role":"user","content":"hi"}],"model":"m"}`, `[]`, `{"operation":1}`, `{`} {
		f.Add([]byte(s))
	}
	c := nodetest.New(f, 1)
	n := c.Nodes[0]
	ops := map[string]bool{}
	for _, o := range n.Operations() {
		ops[o] = true
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := n.ParseRequest(body)
		if err != nil {
			if jobs.CodeOf(err) == jobs.CodeInternal {
				t.Fatalf("uncoded error for %q: %v", body, err)
			}
			return
		}
		if !ops[req.Operation] {
			t.Fatalf("accepted unknown operation %q", req.Operation)
		}
	})
}
