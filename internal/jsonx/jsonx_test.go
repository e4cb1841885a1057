package jsonx

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestStringList(t *testing.T) {
	for in, want := range map[string]StringList{`"a"`: {"a"}, `["a","b"]`: {"a", "b"}, `null`: nil, `[]`: {}} {
		var v struct {
			S StringList `json:"s"`
		}
		require.NoError(t, json.Unmarshal([]byte(`{"s":`+in+`}`), &v), in)
		require.Equal(t, want, v.S, in)
	}
	for _, in := range []string{`1`, `{"a":1}`, `[1]`, `true`} {
		var v struct {
			S StringList `json:"s"`
		}
		err := json.Unmarshal([]byte(`{"s":`+in+`}`), &v)
		var te *json.UnmarshalTypeError
		require.True(t, errors.As(err, &te), "%s: %v", in, err)
		require.Equal(t, "s", te.Field)
	}
}
