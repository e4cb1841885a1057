package node

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestOllamaName(t *testing.T) {
	for in, want := range map[string]string{
		"stories260k:latest":      "stories260k",
		"stories260k:LATEST":      "stories260k",
		" stories260k ":           "stories260k",
		"stories260k":             "stories260k",
		"hf:org/repo:Q4_K_M":      "hf:org/repo:Q4_K_M",
		"builtin:stories260k":     "builtin:stories260k",
		":latest":                 ":latest",
		"hf:org/repo:Q8_0:latest": "hf:org/repo:Q8_0",
	} {
		require.Equal(t, want, ollamaName(in), in)
	}
}

func TestParameterSize(t *testing.T) {
	for _, tc := range []struct {
		n    uint64
		want string
	}{
		{0, ""},
		{999, "999"},
		{260_000, "260K"},
		{292_352, "292K"},
		{15_200_000, "15M"},
		{494_032_768, "0.5B"},
		{8_030_261_248, "8.0B"},
		{70_550_000_000, "70.5B"},
	} {
		require.Equal(t, tc.want, parameterSize(tc.n), tc.n)
	}
}
