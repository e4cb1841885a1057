package jinja

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseJSON(t *testing.T) {
	v, err := ParseJSON([]byte(`{"z": 1, "a": [true, null, "s", 2.5], "m": {"y": {}, "b": []}}`))
	require.NoError(t, err)
	tmpl, err := Compile(`{{ v | tojson }}|{% for k in v %}{{ k }}{% endfor %}|{{ v.a[3] + 1 }}`)
	require.NoError(t, err)
	out, err := tmpl.Render(t.Context(), map[string]any{"v": v})
	require.NoError(t, err)
	// Keys keep the document's order, as Python's json.loads does.
	require.Equal(t, `{"z": 1, "a": [true, null, "s", 2.5], "m": {"y": {}, "b": []}}|zam|3.5`, out)

	for _, bad := range []string{`{"a":`, `{} x`, `[` + strings.Repeat(`[`, 70) + strings.Repeat(`]`, 71), ``} {
		_, err := ParseJSON([]byte(bad))
		require.Error(t, err, bad)
	}
}
