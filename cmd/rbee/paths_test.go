package main

import (
	"bytes"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/node/jobs"
)

// TestHomeInPathFlags: a ~ the shell left alone (after --flag=, in
// quotes, in RBEE_DATA_DIR) is the user's home in a path flag, not a
// directory named "~" under the current one; paths on hives and SSH
// hosts are left as they are.
func TestHomeInPathFlags(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	cwd := t.TempDir()
	t.Chdir(cwd)
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string // in the error: the path the command used
	}{
		{"--data-dir=~/", nil, []string{"token", "--data-dir=~/rbee"}, filepath.Join(home, "rbee", "cluster.secret")},
		{"RBEE_DATA_DIR", map[string]string{"RBEE_DATA_DIR": "~/rbee"}, []string{"token"}, filepath.Join(home, "rbee", "cluster.secret")},
		{"--ca=~/", nil, []string{"status", "--ca=~/ca.pem"}, filepath.Join(home, "ca.pem")},
		{"RBEE_CA", map[string]string{"RBEE_CA": "~/ca.pem"}, []string{"status"}, filepath.Join(home, "ca.pem")},
		{"--key=~/", nil, []string{"release", "sign", "--key=~/release.key", cwd}, filepath.Join(home, "release.key")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			root := newRootCmd()
			root.SetArgs(tc.args)
			root.SetOut(io.Discard)
			root.SetErr(io.Discard)
			require.ErrorContains(t, root.Execute(), tc.want)
		})
	}

	root := newRootCmd()
	root.SetArgs([]string{"release", "keygen", "--out=~/release.key"})
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(io.Discard)
	require.NoError(t, root.Execute())
	require.FileExists(t, filepath.Join(home, "release.key"))
	require.NoDirExists(t, filepath.Join(cwd, "~"))
}

// TestRelativeModelPath: a model file named by a relative path, for a node
// on this machine, is sent as an absolute path (the node resolves a
// relative one in its own working directory and answered "no such
// file"); references and names that are no file here, and paths for a
// named hive, go as they are.
func TestRelativeModelPath(t *testing.T) {
	cwd := t.TempDir()
	t.Chdir(cwd)
	require.NoError(t, os.WriteFile(filepath.Join(cwd, "m.gguf"), []byte("GGUF"), 0o600))
	require.NoError(t, os.Mkdir(filepath.Join(cwd, "stories260k"), 0o700))
	abs := filepath.Join(cwd, "m.gguf")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"model", "download", "m.gguf"}, abs},
		{[]string{"model", "download", "./m.gguf"}, abs},
		{[]string{"worker", "spawn", "--model", "m.gguf"}, abs},
		{[]string{"model", "download", "m.gguf", "--hive", "box"}, "m.gguf"},
		{[]string{"worker", "spawn", "--model", "m.gguf", "--hive", "box"}, "m.gguf"},
		{[]string{"model", "download", "stories260k"}, "stories260k"},
		{[]string{"model", "download", "builtin:stories260k"}, "builtin:stories260k"},
		{[]string{"model", "download", "other.gguf"}, "other.gguf"},
	} {
		fake := &fakeJobNode{events: []jobs.Event{{Type: jobs.TypeResult, Result: []byte(`{"id":"m"}`)}}}
		srv := httptest.NewServer(fake)
		root := newRootCmd()
		root.SetArgs(append(tc.args, "--node", srv.URL, "--token", "t"))
		root.SetOut(io.Discard)
		root.SetErr(io.Discard)
		require.NoError(t, root.Execute(), "%v", tc.args)
		srv.Close()
		require.Len(t, fake.bodies, 1, "%v", tc.args)
		require.Equal(t, tc.want, fake.bodies[0]["model"], "%v", tc.args)
	}
}
