package relay_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/node/relay"
	"github.com/rbee-project/rbee/worker"
)

// A client cannot set the node's extension or dodge the pinned seed by
// spelling a field in another case (Go's JSON decoding ignores case).
func TestNewBodyFieldCase(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		seed     *int64 // the seed the worker sees; nil: any (a pinned random one)
	}{
		{"extension", `{"prompt":"x","RBEE":{"resume":{"tokens":[1]}},"Rbee":{},"rbee":{}}`, nil},
		{"seed in another case", `{"prompt":"x","Seed":7}`, ptr(int64(7))},
		{"negative seed in another case", `{"prompt":"x","SEED":-1}`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := relay.NewBody([]byte(tc.in), true)
			require.NoError(t, err)
			var got map[string]json.RawMessage
			require.NoError(t, json.Unmarshal(b.With(nil), &got))
			// What the worker decodes, case-insensitively.
			var seen struct {
				Seed *int64          `json:"seed"`
				Ext  json.RawMessage `json:"rbee"`
			}
			require.NoError(t, json.Unmarshal(b.With(nil), &seen))
			require.Nil(t, seen.Ext, "no extension from the client: %s", b.With(nil))
			require.NotNil(t, seen.Seed)
			require.GreaterOrEqual(t, *seen.Seed, int64(0))
			if tc.seed != nil {
				require.Equal(t, *tc.seed, *seen.Seed)
			}
			for k := range got {
				require.NotEqual(t, worker.ExtField, k)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }
