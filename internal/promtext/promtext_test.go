package promtext

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestValue(t *testing.T) {
	const body = `# HELP rbee_x_total X.
# TYPE rbee_x_total counter
rbee_x_total 42
rbee_x_total_other 7
rbee_y{label="a"} 3
rbee_bad notanumber
`
	for _, tc := range []struct {
		name string
		v    float64
		ok   bool
	}{
		{"rbee_x_total", 42, true},
		{"rbee_x_total_other", 7, true},
		{"rbee_y", 0, false}, // labelled: not an unlabelled sample
		{"rbee_bad", 0, false},
		{"rbee_missing", 0, false},
	} {
		v, ok := Value(strings.NewReader(body), tc.name)
		require.Equal(t, tc.ok, ok, tc.name)
		require.Equal(t, tc.v, v, tc.name)
	}
}
