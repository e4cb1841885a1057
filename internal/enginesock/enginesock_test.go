package enginesock

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// MakeDir's directory is the owner's alone and goes with Remove; Remove
// leaves anything else alone.
func TestMakeDirAndRemove(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no Unix sockets")
	}
	s, err := MakeDir()
	require.NoError(t, err)
	st, err := os.Stat(filepath.Dir(s))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), st.Mode().Perm())
	assert.Equal(t, ".sock", filepath.Ext(s))
	assert.LessOrEqual(t, len(s), maxPath)

	other := filepath.Join(t.TempDir(), "keep", socketName)
	require.NoError(t, os.MkdirAll(filepath.Dir(other), 0o700))
	Remove(other)
	Remove("")
	assert.DirExists(t, filepath.Dir(other), "not a directory MakeDir made")

	Remove(s)
	assert.NoDirExists(t, filepath.Dir(s))
}

// Dial sends a port that has a socket to the socket, any other through
// its base dialer.
func TestDial(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no Unix sockets")
	}
	serve := func(ln net.Listener, word string) {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				_, _ = io.WriteString(c, word)
				c.Close()
			}
		}()
	}
	sock := filepath.Join(t.TempDir(), socketName)
	uln, err := net.Listen("unix", sock)
	require.NoError(t, err)
	defer uln.Close()
	serve(uln, "socket")
	tln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer tln.Close()
	serve(tln, "port")

	const enginePort = 7
	dial := Dial(nil, func(port int) string {
		if port == enginePort {
			return sock
		}
		return ""
	})
	for addr, want := range map[string]string{
		"127.0.0.1:" + strconv.Itoa(enginePort): "socket",
		tln.Addr().String():                     "port",
	} {
		c, err := dial(context.Background(), "tcp", addr)
		require.NoError(t, err, addr)
		got, err := io.ReadAll(c)
		c.Close()
		require.NoError(t, err)
		assert.Equal(t, want, string(got), addr)
	}
}
