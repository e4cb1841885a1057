package main

import (
	"bytes"
	"io"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
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
