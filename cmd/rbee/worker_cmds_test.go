package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/node/nodetest"
)

// TestBinaryVersions: `worker binary get|delete TYPE --version V` address
// one version; delete without --version refuses when the type has several
// (listing them) instead of deleting them all, deletes the only one, and
// --all deletes every one.
func TestBinaryVersions(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	c := nodetest.New(t, 1)
	c.WaitLeader()
	url, admin := c.Nodes[0].URL(), c.Nodes[0].AdminKey()
	engine := filepath.Join(t.TempDir(), "my-server")
	require.NoError(t, os.WriteFile(engine, []byte("#!/bin/sh\nexit 0\n"), 0o755))

	cli := func(args ...string) (string, error) {
		t.Helper()
		root := newRootCmd()
		root.SetArgs(append(args, "--node", url, "--token", admin))
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&bytes.Buffer{})
		err := root.Execute()
		return out.String(), err
	}
	add := func(version string) {
		t.Helper()
		_, err := cli("worker", "binary", "add", "--type", "openai", "--path", engine, "--version", version, "--template", "--port {port}")
		require.NoError(t, err)
	}
	versions := func() []string {
		t.Helper()
		out, err := cli("worker", "binary", "list", "-o", "json")
		require.NoError(t, err)
		var res api.BinaryListResult
		require.NoError(t, json.Unmarshal([]byte(out), &res))
		var vs []string
		for _, b := range res.Binaries {
			if b.Type == "openai" {
				vs = append(vs, b.Version)
			}
		}
		return vs
	}
	add("local")
	add("sleeper")
	require.ElementsMatch(t, []string{"local", "sleeper"}, versions())

	// get --version shows that version, whichever is newest.
	for _, v := range []string{"local", "sleeper"} {
		out, err := cli("worker", "binary", "get", "openai", "--version", v, "-o", "json")
		require.NoError(t, err)
		var b struct{ Version string }
		require.NoError(t, json.Unmarshal([]byte(out), &b))
		require.Equal(t, v, b.Version)
	}

	_, err := cli("worker", "binary", "delete", "openai", "--yes")
	require.ErrorContains(t, err, "node0 has 2 openai worker binary versions: local, sleeper; name one with --version V, or delete them all with --all")
	require.ElementsMatch(t, []string{"local", "sleeper"}, versions(), "nothing deleted")
	_, err = cli("worker", "binary", "delete", "openai", "--yes", "--all", "--version", "local")
	require.ErrorContains(t, err, "not both")

	out, err := cli("worker", "binary", "delete", "openai", "--version", "sleeper", "--yes")
	require.NoError(t, err)
	require.Contains(t, out, "deleted openai sleeper")
	require.NotContains(t, out, "local")
	require.Equal(t, []string{"local"}, versions())

	// The only version goes without --version.
	out, err = cli("worker", "binary", "delete", "openai", "--yes")
	require.NoError(t, err)
	require.Contains(t, out, "deleted openai local")
	require.Empty(t, versions())
	_, err = cli("worker", "binary", "delete", "openai", "--yes")
	require.ErrorContains(t, err, "node0 has no openai worker binary")

	// --all deletes every version, as delete without a version did.
	add("local")
	add("sleeper")
	out, err = cli("worker", "binary", "delete", "openai", "--all", "--yes")
	require.NoError(t, err)
	require.Contains(t, out, "deleted openai local")
	require.Contains(t, out, "deleted openai sleeper")
	require.Empty(t, versions())
}
