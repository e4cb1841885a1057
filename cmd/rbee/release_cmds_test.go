package main

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	workercat "github.com/rbee-project/rbee/worker/catalog"
)

// rbee runs the CLI in-process and returns stdout.
func rbee(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

func TestReleaseKeygenAndSign(t *testing.T) {
	tmp := t.TempDir()
	keyFile := filepath.Join(tmp, "release.key")
	out, err := rbee(t, "release", "keygen", "--out", keyFile)
	require.NoError(t, err)
	pub, err := workercat.ParsePublicKey(strings.TrimSpace(out))
	require.NoError(t, err, "keygen prints the public key: %q", out)
	fi, err := os.Stat(keyFile)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	_, err = rbee(t, "release", "keygen", "--out", keyFile)
	require.ErrorContains(t, err, "--out "+keyFile+" exists: keygen never overwrites a key", "an existing key is never overwritten")
	require.NotContains(t, err.Error(), ".tmp-", "no temporary file name")
	jsonOut, err := rbee(t, "release", "keygen", "--out", filepath.Join(tmp, "k2.key"), "-o", "json")
	require.NoError(t, err)
	var kj struct {
		PublicKey string `json:"public_key"`
		File      string `json:"private_key_file"`
	}
	require.NoError(t, json.Unmarshal([]byte(jsonOut), &kj), jsonOut)
	_, err = workercat.ParsePublicKey(kj.PublicKey)
	require.NoError(t, err)
	require.Equal(t, filepath.Join(tmp, "k2.key"), kj.File)

	dir := filepath.Join(tmp, "v1.2.3")
	require.NoError(t, os.Mkdir(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "rbee-worker-linux-amd64"), []byte("#!/bin/sh\n"), 0o755))
	_, err = rbee(t, "release", "sign", "--key", keyFile, dir)
	require.ErrorContains(t, err, "--write-sums", "no SHA256SUMS yet")
	_, err = rbee(t, "release", "sign", "--key", keyFile, "--write-sums", dir)
	require.NoError(t, err)
	// -o json is JSON (it printed the text line).
	jsonOut, err = rbee(t, "release", "sign", "--key", keyFile, dir, "-o", "json")
	require.NoError(t, err)
	var sj struct {
		Version   string `json:"version"`
		Signature string `json:"signature"`
		PublicKey string `json:"public_key"`
	}
	require.NoError(t, json.Unmarshal([]byte(jsonOut), &sj), jsonOut)
	require.Equal(t, "v1.2.3", sj.Version)
	require.Equal(t, filepath.Join(dir, workercat.SigFile), sj.Signature)
	require.Equal(t, workercat.FormatPublicKey(pub), sj.PublicKey)

	sums, err := os.ReadFile(filepath.Join(dir, workercat.SumsFile))
	require.NoError(t, err)
	sig, err := os.ReadFile(filepath.Join(dir, workercat.SigFile))
	require.NoError(t, err)
	got, err := workercat.VerifyRelease([]ed25519.PublicKey{pub}, "v1.2.3", sums, sig)
	require.NoError(t, err)
	require.Contains(t, got, "rbee-worker-linux-amd64")
	_, err = workercat.VerifyRelease([]ed25519.PublicKey{workercat.BuiltinReleaseKey()}, "v1.2.3", sums, sig)
	require.ErrorIs(t, err, workercat.ErrSignature)

	// Re-signing an existing SHA256SUMS for another version name.
	_, err = rbee(t, "release", "sign", "--key", keyFile, "--version", "v9", dir)
	require.NoError(t, err)
	sig, err = os.ReadFile(filepath.Join(dir, workercat.SigFile))
	require.NoError(t, err)
	_, err = workercat.VerifyRelease([]ed25519.PublicKey{pub}, "v9", sums, sig)
	require.NoError(t, err)

	for _, args := range [][]string{
		{"release", "sign", dir},                                                  // no key
		{"release", "sign", "--key", filepath.Join(tmp, "x"), dir},                // missing key file
		{"release", "sign", "--key", filepath.Join(dir, workercat.SumsFile), dir}, // not a key
		{"release", "keygen"},                                                     // no --out
	} {
		_, err := rbee(t, args...)
		require.Error(t, err, "%v", args)
	}
	// A key inside the release folder would be published with it.
	inside := filepath.Join(dir, "release.key")
	_, err = rbee(t, "release", "keygen", "--out", inside)
	require.NoError(t, err)
	_, err = rbee(t, "release", "sign", "--key", inside, "--write-sums", dir)
	require.ErrorContains(t, err, "inside the release folder")
	sums2, err := os.ReadFile(filepath.Join(dir, workercat.SumsFile))
	require.NoError(t, err)
	require.NotContains(t, string(sums2), "release.key", "nothing was rewritten")
	_, err = rbee(t, "release", "sign", "--key", keyFile, filepath.Join(tmp, "nope"))
	require.ErrorContains(t, err, "not a directory")
}

func TestNodeRefusesABadReleaseKey(t *testing.T) {
	_, err := rbee(t, "node", "--data-dir", t.TempDir(), "--worker-release-key", "not-a-key", "--http-addr", "127.0.0.1:0")
	require.ErrorContains(t, err, "--worker-release-key")
}

// TestModelSynthJSON: model synth -o json prints a JSON document (it
// printed nothing on stdout).
func TestModelSynthJSON(t *testing.T) {
	file := filepath.Join(t.TempDir(), "s.gguf")
	out, err := rbee(t, "model", "synth", file, "--arch", "llama", "--dim", "64", "--layers", "1", "--heads", "2", "--kv-heads", "2",
		"--ff", "128", "--vocab", "300", "--type", "f32", "-o", "json")
	require.NoError(t, err)
	var res struct {
		File string `json:"file"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &res), out)
	require.Equal(t, file, res.File)
	require.FileExists(t, file)
}
