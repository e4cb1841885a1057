package catalog

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBuiltinReleaseKey(t *testing.T) {
	k, err := ParsePublicKey(ReleasePublicKey)
	require.NoError(t, err)
	assert.Len(t, k, ed25519.PublicKeySize)
	assert.Equal(t, ReleasePublicKey, FormatPublicKey(BuiltinReleaseKey()))
	// Every catalog trusts it, besides the configured keys.
	c := newCatalog(t, t.TempDir(), trustA)
	assert.Equal(t, []ed25519.PublicKey{k, pub(keyA)}, c.keys)
	cfg := DefaultConfig()
	cfg.Dir = t.TempDir()
	cfg.ReleaseKeys = []ed25519.PublicKey{make([]byte, 31)}
	_, err = New(cfg)
	require.ErrorIs(t, err, ErrBadKey)
}

func TestKeyFiles(t *testing.T) {
	pubK, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	file := MarshalPrivateKey(priv)
	assert.Contains(t, string(file), "# public key: "+FormatPublicKey(pubK))
	got, err := ParsePrivateKey(file)
	require.NoError(t, err)
	assert.True(t, priv.Equal(got))
	back, err := ParsePublicKey(" " + FormatPublicKey(pubK) + "\n")
	require.NoError(t, err)
	assert.True(t, pubK.Equal(back))

	seed := base64.StdEncoding.EncodeToString(priv)
	corrupt := bytes.Clone(priv)
	corrupt[40] ^= 1
	for _, tt := range []struct {
		name string
		in   string
	}{
		{"empty", ""},
		{"comments only", "# nothing\n\n"},
		{"two keys", seed + "\n" + seed + "\n"},
		{"not base64", "hunter2 is my password\n"},
		{"a public key", FormatPublicKey(pubK) + "\n"},
		{"a bare seed", base64.StdEncoding.EncodeToString(priv.Seed()) + "\n"},
		{"halves differ", base64.StdEncoding.EncodeToString(corrupt) + "\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParsePrivateKey([]byte(tt.in))
			require.ErrorIs(t, err, ErrBadKey)
			assert.NotContains(t, err.Error(), "hunter2")
		})
	}
	for _, s := range []string{"", "abc", base64.StdEncoding.EncodeToString(make([]byte, 31)), base64.StdEncoding.EncodeToString(priv)} {
		_, err := ParsePublicKey(s)
		require.ErrorIs(t, err, ErrBadKey, s)
	}
}

func TestSignAndVerifyRelease(t *testing.T) {
	sums := []byte(sha([]byte("a")) + "  rbee-worker-linux-amd64\n" + sha([]byte("b")) + "  rbee-worker-darwin-arm64\n")
	sigA := sign(t, keyA, "v1.2.3", sums)
	sigB := sign(t, keyB, "v1.2.3", sums)
	trusted := []ed25519.PublicKey{BuiltinReleaseKey(), pub(keyA)}
	flipped := bytes.Clone(sums)
	flipped[3] ^= 1

	tests := []struct {
		name    string
		version string
		sums    []byte
		sig     []byte
		want    error
	}{
		{"signed by a trusted key", "v1.2.3", sums, sigA, nil},
		{"rotation: untrusted line first, trusted second", "v1.2.3", sums, append(bytes.Clone(sigB), sigA...), nil},
		{"CRLF and blank lines", "v1.2.3", sums, []byte("\r\n" + strings.TrimSpace(string(sigA)) + "\r\n\r\n"), nil},
		{"no signature", "v1.2.3", sums, nil, ErrUnsigned},
		{"blank signature file", "v1.2.3", sums, []byte("\n \n"), ErrUnsigned},
		{"untrusted key", "v1.2.3", sums, sigB, ErrSignature},
		{"another version", "v1.2.4", sums, sigA, ErrSignature},
		{"sums changed", "v1.2.3", flipped, sigA, ErrSignature},
		{"truncated signature", "v1.2.3", sums, sigA[:40], ErrSignature},
		{"signature of the bare sums", "v1.2.3", sums, []byte(base64.StdEncoding.EncodeToString(ed25519.Sign(keyA, sums))), ErrSignature},
		{"too many lines", "v1.2.3", sums, bytes.Repeat(sigB, maxSignatures+1), ErrSignature},
		{"too large", "v1.2.3", sums, bytes.Repeat([]byte{'\n'}, maxSigBytes+1), ErrSignature},
		{"hostile version", "../v1", sums, sigA, ErrBadName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := VerifyRelease(trusted, tt.version, tt.sums, tt.sig)
			if tt.want != nil {
				require.ErrorIs(t, err, tt.want)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, sha([]byte("a")), got["rbee-worker-linux-amd64"])
		})
	}

	// What cannot be signed.
	_, err := SignRelease(keyA, "v1", []byte("not sums\n"))
	require.ErrorIs(t, err, ErrBadName)
	_, err = SignRelease(keyA, "v1", []byte("# nothing listed\n"))
	require.ErrorIs(t, err, ErrBadName)
	_, err = SignRelease(keyA, "a/b", sums)
	require.ErrorIs(t, err, ErrBadName)
	_, err = SignRelease(keyA[:10], "v1", sums)
	require.ErrorIs(t, err, ErrBadKey)
}

func TestReleaseSums(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"rbee-worker-linux-amd64": "a", "rbee-linux-amd64": "b", SumsFile: "old", SigFile: "old", ".hidden": "x",
	} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644))
	}
	require.NoError(t, os.Mkdir(filepath.Join(dir, "sub"), 0o755))
	got, err := ReleaseSums(dir)
	require.NoError(t, err)
	assert.Equal(t, sha([]byte("b"))+"  rbee-linux-amd64\n"+sha([]byte("a"))+"  rbee-worker-linux-amd64\n", string(got))
	_, err = SignRelease(keyA, "v1", got)
	require.NoError(t, err)

	_, err = ReleaseSums(t.TempDir())
	require.ErrorIs(t, err, ErrBadName, "an empty folder")
	bad := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(bad, "a b"), nil, 0o644))
	_, err = ReleaseSums(bad)
	require.ErrorIs(t, err, ErrBadName)
}

// signedProof is a proof for one binary of the cpu type on this platform.
func signedProof(t *testing.T, k ed25519.PrivateKey, version string, content []byte) *ReleaseProof {
	sums := []byte(fmt.Sprintf("%s  %s\n", sha(content), AssetName(CPUType(), runtime.GOOS, runtime.GOARCH)))
	return &ReleaseProof{Sums: sums, Sig: sign(t, k, version, sums)}
}

func TestDefault(t *testing.T) {
	ctx := context.Background()
	type add struct {
		version string
		source  Source
		signed  bool
		pin     bool
	}
	tests := []struct {
		name string
		own  string
		adds []add  // in this order (later = newer)
		want string // "" = none (ErrNotFound)
	}{
		{"empty", "v1", nil, ""},
		{"own version release", "v1", []add{{"v1", SourceDownloaded, true, false}}, "v1"},
		{"newer release of another version is no default", "v1", []add{{"v1", SourceDownloaded, true, false}, {"v9", SourceDownloaded, true, false}}, "v1"},
		{"only another version", "v1", []add{{"v9", SourceDownloaded, true, false}}, ""},
		{"peer copy of another version", "v1", []add{{"v9", SourcePeer, true, false}}, ""},
		{"built is eligible", "v1", []add{{"v1", SourceDownloaded, true, false}, {"dev-abc", SourceBuilt, false, false}}, "dev-abc"},
		{"added is eligible", "v1", []add{{"local", SourceAdded, false, false}}, "local"},
		{"newer own version over older build", "v1", []add{{"dev-abc", SourceBuilt, false, false}, {"v1", SourcePeer, true, false}}, "v1"},
		{"pin wins", "v1", []add{{"v9", SourceDownloaded, true, true}, {"v1", SourceDownloaded, true, false}, {"dev", SourceBuilt, false, false}}, "v9"},
		{"last pin wins", "v1", []add{{"v8", SourceDownloaded, true, true}, {"v9", SourceDownloaded, true, true}}, "v9"},
		{"no own version known", "", []add{{"v9", SourceDownloaded, true, false}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			mod := func(cfg *Config) {
				cfg.Version = tt.own
				trustA(cfg)
			}
			c := newCatalog(t, dir, mod)
			for _, a := range tt.adds {
				content := []byte("#!/bin/sh\necho " + a.version + "\n")
				opts := AddOptions{Type: TypeCPU, Version: a.version, Source: a.source, Pin: a.pin}
				if a.signed {
					opts.Release = signedProof(t, keyA, a.version, content)
				}
				_, err := c.AddReader(ctx, opts, bytes.NewReader(content))
				require.NoError(t, err)
				time.Sleep(2 * time.Millisecond) // distinct Added times
			}
			for _, cat := range []*Catalog{c, newCatalog(t, dir, mod)} { // and after a restart
				e, err := cat.Default(TypeCPU, runtime.GOOS, runtime.GOARCH)
				if tt.want == "" {
					require.ErrorIs(t, err, ErrNotFound)
					continue
				}
				require.NoError(t, err)
				assert.Equal(t, tt.want, e.Version)
			}
		})
	}
}

func TestPinIsKeptAndMoved(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c := newCatalog(t, dir, trustA)
	addV := func(v string, pin bool, src Source) Entry {
		content := []byte("echo " + v)
		opts := AddOptions{Type: TypeCPU, Version: v, Source: src, Pin: pin}
		if src != SourceBuilt {
			opts.Release = signedProof(t, keyA, v, content)
		}
		e, err := c.AddReader(ctx, opts, bytes.NewReader(content))
		require.NoError(t, err)
		return e
	}
	addV("v1", true, SourceDownloaded)
	assert.True(t, addV("v1", false, SourceDownloaded).Pinned, "re-adding keeps the pin")
	addV("v2", true, SourceDownloaded)
	v1, err := c.Get(TypeCPU, "v1")
	require.NoError(t, err)
	assert.False(t, v1.Pinned, "one pin per platform")
	// A build that replaces a signed release drops its proof.
	e := addV("v2", false, SourceBuilt)
	assert.False(t, e.Signed)
	assert.True(t, e.Pinned)
	_, err = os.Stat(filepath.Join(filepath.Dir(e.Path), SumsFile))
	require.ErrorIs(t, err, os.ErrNotExist)
	// Deleting the pinned one removes the pin (and its files).
	_, err = c.Delete(TypeCPU, "v2")
	require.NoError(t, err)
	_, err = c.Default(TypeCPU, runtime.GOOS, runtime.GOARCH)
	require.ErrorIs(t, err, ErrNotFound)
	_, err = c.Delete(TypeCPU, "v1")
	require.NoError(t, err)
	assert.Equal(t, []string{indexFile}, files(t, dir), "Delete removes the proofs too")
}

// A signed entry whose proof no longer verifies (edited on disk, or its
// key no longer trusted) stays usable here but is no longer served.
func TestProofCheckedOnOpen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c := newCatalog(t, dir, trustA)
	content := []byte("echo v1")
	e, err := c.AddReader(ctx, AddOptions{Type: TypeCPU, Version: "v1", Source: SourceDownloaded, Release: signedProof(t, keyA, "v1", content)},
		bytes.NewReader(content))
	require.NoError(t, err)
	rc, _, proof, err := c.OpenRelease(TypeCPU, "v1", runtime.GOOS, runtime.GOARCH)
	require.NoError(t, err)
	rc.Close()
	_, err = VerifyRelease([]ed25519.PublicKey{pub(keyA)}, "v1", proof.Sums, proof.Sig)
	require.NoError(t, err)

	// Key no longer trusted.
	c2 := newCatalog(t, dir, nil)
	e2, err := c2.Get(TypeCPU, "v1")
	require.NoError(t, err)
	assert.False(t, e2.Signed)
	_, _, _, err = c2.OpenRelease(TypeCPU, "v1", runtime.GOOS, runtime.GOARCH)
	require.ErrorIs(t, err, ErrUnsigned)

	// Proof edited.
	require.NoError(t, os.WriteFile(filepath.Join(filepath.Dir(e.Path), SumsFile), []byte(sha([]byte("x"))+"  "+AssetName(CPUType(), runtime.GOOS, runtime.GOARCH)+"\n"), 0o644))
	c3 := newCatalog(t, dir, trustA)
	e3, err := c3.Get(TypeCPU, "v1")
	require.NoError(t, err)
	assert.False(t, e3.Signed)
	_, _, _, err = c3.OpenRelease(TypeCPU, "v1", runtime.GOOS, runtime.GOARCH)
	require.ErrorIs(t, err, ErrUnsigned)
	_, _, _, err = c3.OpenRelease(TypeCPU, "", runtime.GOOS, runtime.GOARCH)
	require.ErrorIs(t, err, ErrBadName)
}

func FuzzParseSignatures(f *testing.F) {
	sums := []byte(sha([]byte("1")) + "  rbee-worker-linux-amd64\n")
	good := sign0(keyA, "v1", string(sums))
	f.Add(good)
	f.Add(append(bytes.Clone(good), good...))
	f.Add([]byte("\r\n  " + string(good[:88]) + "\t\r\n"))
	f.Add([]byte("not base64\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, data []byte) {
		sigs, err := ParseSignatures(data)
		if err != nil {
			return
		}
		if len(sigs) == 0 || len(sigs) > maxSignatures || len(data) > maxSigBytes {
			t.Fatalf("accepted %d signatures from %d bytes", len(sigs), len(data))
		}
		for _, s := range sigs {
			if len(s) != ed25519.SignatureSize {
				t.Fatalf("signature of %d bytes", len(s))
			}
		}
	})
}

// FuzzVerifyRelease: hostile sums and signatures never verify or panic;
// whatever sums parse can be signed and then verify to the same map, and
// not for another version.
func FuzzVerifyRelease(f *testing.F) {
	sums := sha([]byte("1")) + "  rbee-worker-linux-amd64\n"
	f.Add("v1", []byte(sums), sign0(keyA, "v1", sums))
	f.Add("v1", []byte(sums), sign0(keyB, "v1", sums))
	f.Add("v2", []byte(sums), sign0(keyA, "v1", sums))
	f.Add("v1", []byte(sums+"# c\n"), sign0(keyA, "v1", sums))
	f.Add("v1", []byte("garbage"), []byte("garbage"))
	trusted := []ed25519.PublicKey{BuiltinReleaseKey(), pub(keyA)}
	f.Fuzz(func(t *testing.T, version string, sums, sig []byte) {
		if got, err := VerifyRelease(trusted, version, sums, sig); err == nil {
			// Only a real signature by keyA can get here (the fuzzer
			// cannot forge one): the sums must be what was signed.
			if _, perr := ParseSHA256SUMS(sums); perr != nil || got == nil {
				t.Fatalf("verified unparsable sums")
			}
		}
		parsed, err := ParseSHA256SUMS(sums)
		if err != nil || len(parsed) == 0 || ValidName("version", version) != nil {
			return
		}
		own, err := SignRelease(keyA, version, sums)
		if err != nil {
			t.Fatalf("cannot sign parsable sums: %v", err)
		}
		got, err := VerifyRelease(trusted, version, sums, own)
		if err != nil || len(got) != len(parsed) {
			t.Fatalf("own signature does not verify: %v", err)
		}
		if _, err := VerifyRelease(trusted, version+"x", sums, own); err == nil {
			t.Fatalf("signature verified for another version")
		}
		if _, err := VerifyRelease([]ed25519.PublicKey{pub(keyB)}, version, sums, own); err == nil {
			t.Fatalf("signature verified with another key")
		}
	})
}
