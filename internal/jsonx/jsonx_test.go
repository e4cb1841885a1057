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
	for in, got := range map[string]string{`1`: "a number", `{"a":1}`: "an object", `[1]`: "an array with an element that is not a string", `true`: "a boolean"} {
		var v struct {
			S StringList `json:"s"`
		}
		err := json.Unmarshal([]byte(`{"s":`+in+`}`), &v)
		var te *json.UnmarshalTypeError
		require.True(t, errors.As(err, &te), "%s: %v", in, err)
		require.Equal(t, "s", te.Field)
		require.Equal(t, got, Got(te.Value), in)
	}
}
