package nodefile

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestAPIURL(t *testing.T) {
	dir := t.TempDir()
	write := func(content string) string {
		p := filepath.Join(dir, "node.json")
		require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
		return p
	}
	u, err := APIURL(write(`{"id":"12D3","name":"n1","api_url":"http://127.0.0.1:7833","gossip_addr":"127.0.0.1:7834"}`))
	require.NoError(t, err)
	require.Equal(t, "http://127.0.0.1:7833", u)

	for name, content := range map[string]string{
		"not JSON":     `api_url=http://x`,
		"no api_url":   `{"id":"x"}`,
		"not http":     `{"api_url":"file:///etc/passwd"}`,
		"no host":      `{"api_url":"http://"}`,
		"over the cap": `{"api_url":"http://127.0.0.1:1","pad":"` + strings.Repeat("x", maxSize) + `"}`,
	} {
		_, err := APIURL(write(content))
		require.ErrorIs(t, err, ErrBad, name)
	}
	_, err = APIURL(filepath.Join(dir, "missing.json"))
	require.ErrorIs(t, err, os.ErrNotExist)

	fifo := filepath.Join(dir, "fifo.json")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	_, err = APIURL(fifo) // refused at once, not blocked on a writer
	require.Error(t, err)
}
