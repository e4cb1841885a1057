package catalog

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// ReleasePublicKey is the rbee project's release key: the base64 (standard
// encoding, padded) of a 32-byte ed25519 public key. Every catalog trusts
// it; Config.ReleaseKeys adds keys for self-built releases.
//
// The private half is the release key held by whoever cuts rbee releases.
// It is not in this repository and must never be: a release is signed
// with `rbee release sign --key FILE DIR` on the machine that holds it.
const ReleasePublicKey = "ywmtHNTnMrayJo4WWJ/gEmAevu9/RDtN++LpKCBj9Fw="

const (
	// SigFile is the detached signature of SumsFile in every release
	// folder: one or more lines, each the standard (padded) base64 of a
	// 64-byte ed25519 signature over SignedMessage(version, SHA256SUMS).
	SigFile = SumsFile + ".sig"
	// maxSignatures bounds the lines of a SigFile: a release signed by
	// the old and the new key during a key rotation needs two; eight
	// leaves room without letting a hostile file cost much verification.
	maxSignatures = 8
	// maxSigBytes bounds a SigFile: eight 88-character lines with CRLF
	// endings and some blank lines fit in well under 1 KiB; 4 KiB is
	// generous and stops a hostile server.
	maxSigBytes = 4 << 10
	// sigDomain starts every signed message, so that a release signature
	// can never be mistaken for (or replayed as) a signature of anything
	// else made with the same key; the "v1" changes if the format does.
	sigDomain = "rbee-release-v1\n"
	// privateKeyHeader is the comment line rbee writes atop a private
	// key file (see MarshalPrivateKey).
	privateKeyHeader = "# rbee release signing key (ed25519, base64 of seed and public key). Keep it secret; never commit it.\n"
)

// ReleaseProof is what makes a binary a signed release: the release
// folder's SHA256SUMS and SHA256SUMS.sig, byte for byte. The catalog keeps
// it next to a downloaded binary, so that a peer copying the binary can
// check the signature with its own trusted keys.
type ReleaseProof struct {
	Sums []byte
	Sig  []byte
}

// SignedMessage is what a release signature signs: the domain line
// "rbee-release-v1\n", the version (the release folder's name) and a
// newline, then the SHA256SUMS file exactly as served. Binding the
// version means a signed older release cannot be passed off as a newer
// one (or the other way round).
func SignedMessage(version string, sums []byte) []byte {
	msg := make([]byte, 0, len(sigDomain)+len(version)+1+len(sums))
	msg = append(msg, sigDomain...)
	msg = append(msg, version...)
	msg = append(msg, '\n')
	return append(msg, sums...)
}

// BuiltinReleaseKey returns ReleasePublicKey decoded.
func BuiltinReleaseKey() ed25519.PublicKey {
	k, err := ParsePublicKey(ReleasePublicKey)
	if err != nil {
		// ReleasePublicKey is a constant checked by the tests.
		panic(err)
	}
	return k
}

// ParsePublicKey decodes a release public key: the standard (padded)
// base64 of 32 bytes, surrounding spaces ignored. The error wraps
// ErrBadKey.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: a release public key is the base64 of %d bytes (44 characters)", ErrBadKey, ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(b), nil
}

// FormatPublicKey is the text form ParsePublicKey reads.
func FormatPublicKey(k ed25519.PublicKey) string { return base64.StdEncoding.EncodeToString(k) }

// MarshalPrivateKey is the private key file `rbee release keygen` writes:
// comment lines (starting with '#'; one names the public key), then one
// line with the standard base64 of the 64-byte ed25519 private key (the
// 32-byte seed followed by the 32-byte public key, as crypto/ed25519 and
// libsodium hold it). Its length tells it from a public key.
func MarshalPrivateKey(k ed25519.PrivateKey) []byte {
	pub := k.Public().(ed25519.PublicKey)
	return []byte(privateKeyHeader +
		"# public key: " + FormatPublicKey(pub) + "\n" +
		base64.StdEncoding.EncodeToString(k) + "\n")
}

// ParsePrivateKey reads a file written by MarshalPrivateKey: blank lines
// and lines starting with '#' are skipped; exactly one line must remain,
// the base64 of a 64-byte private key whose second half is the public key
// of its first. The error wraps ErrBadKey and never quotes the file.
func ParsePrivateKey(data []byte) (ed25519.PrivateKey, error) {
	var key ed25519.PrivateKey
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if key != nil {
			return nil, fmt.Errorf("%w: a private key file holds one key line", ErrBadKey)
		}
		b, err := base64.StdEncoding.DecodeString(line)
		if err != nil || len(b) != ed25519.PrivateKeySize {
			return nil, fmt.Errorf("%w: the key line is not the base64 of a %d-byte ed25519 private key", ErrBadKey, ed25519.PrivateKeySize)
		}
		key = ed25519.NewKeyFromSeed(b[:ed25519.SeedSize])
		if !bytes.Equal(key[ed25519.SeedSize:], b[ed25519.SeedSize:]) {
			return nil, fmt.Errorf("%w: the private key is corrupt (its halves do not match)", ErrBadKey)
		}
	}
	if key == nil {
		return nil, fmt.Errorf("%w: no key line in the private key file", ErrBadKey)
	}
	return key, nil
}

// SignRelease signs a release folder's SHA256SUMS for version and returns
// one SigFile line (base64 and a newline). Several lines may be
// concatenated (one per key) into one SigFile. The sums must parse: a
// signature over a file nobody can read would be useless.
func SignRelease(k ed25519.PrivateKey, version string, sums []byte) ([]byte, error) {
	if len(k) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("%w: not an ed25519 private key", ErrBadKey)
	}
	if err := ValidName("version", version); err != nil {
		return nil, err
	}
	parsed, err := ParseSHA256SUMS(sums)
	if err != nil {
		return nil, err
	}
	if len(parsed) == 0 {
		return nil, fmt.Errorf("%w: %s lists no file", ErrBadName, SumsFile)
	}
	sig := ed25519.Sign(k, SignedMessage(version, sums))
	return []byte(base64.StdEncoding.EncodeToString(sig) + "\n"), nil
}

// ParseSignatures parses a SigFile: lines separated by '\n' (a trailing
// '\r' and surrounding spaces or tabs are ignored, blank lines skipped),
// each the standard padded base64 of a 64-byte signature; 1 to 8 lines,
// at most 4 KiB in all. Errors wrap ErrSignature, name the line number
// only and never quote the input.
func ParseSignatures(data []byte) ([][]byte, error) {
	if len(data) > maxSigBytes {
		return nil, fmt.Errorf("%w: %s larger than %d bytes", ErrSignature, SigFile, maxSigBytes)
	}
	var sigs [][]byte
	for n, line := range bytes.Split(data, []byte("\n")) {
		line = bytes.Trim(line, " \t\r")
		if len(line) == 0 {
			continue
		}
		if len(sigs) == maxSignatures {
			return nil, fmt.Errorf("%w: %s has more than %d signatures", ErrSignature, SigFile, maxSignatures)
		}
		sig := make([]byte, base64.StdEncoding.DecodedLen(len(line)))
		k, err := base64.StdEncoding.Strict().Decode(sig, line)
		if err != nil || k != ed25519.SignatureSize {
			return nil, fmt.Errorf("%w: %s line %d is not the base64 of a %d-byte ed25519 signature", ErrSignature, SigFile, n+1, ed25519.SignatureSize)
		}
		sigs = append(sigs, sig[:k])
	}
	if len(sigs) == 0 {
		return nil, fmt.Errorf("%w: %s holds no signature", ErrUnsigned, SigFile)
	}
	return sigs, nil
}

// VerifyRelease checks that one of the signatures in sig is a valid
// signature of SignedMessage(version, sums) by one of keys, and only then
// parses sums (file name → lowercase hex sha256). An empty sig wraps
// ErrUnsigned; a malformed one or one no key verifies wraps ErrSignature.
func VerifyRelease(keys []ed25519.PublicKey, version string, sums, sig []byte) (map[string]string, error) {
	if len(sig) == 0 {
		return nil, fmt.Errorf("%w: no %s", ErrUnsigned, SigFile)
	}
	if err := ValidName("version", version); err != nil {
		return nil, err
	}
	if len(sums) > maxSumsBytes {
		return nil, fmt.Errorf("%w: %s larger than %d bytes", ErrBadName, SumsFile, maxSumsBytes)
	}
	sigs, err := ParseSignatures(sig)
	if err != nil {
		return nil, err
	}
	msg := SignedMessage(version, sums)
	ok := false
	for _, s := range sigs {
		for _, k := range keys {
			if len(k) == ed25519.PublicKeySize && ed25519.Verify(k, msg, s) {
				ok = true
				break
			}
		}
		if ok {
			break
		}
	}
	if !ok {
		return nil, fmt.Errorf("%w: no signature in %s verifies %s of %s with a trusted key (%d signature(s), %d trusted key(s))",
			ErrSignature, SigFile, SumsFile, version, len(sigs), len(keys))
	}
	return ParseSHA256SUMS(sums)
}

// ReleaseSums returns a SHA256SUMS file (text mode, "<sha256>  <name>",
// sorted by name) for the regular files directly in dir, leaving out
// SHA256SUMS, SHA256SUMS.sig and hidden files. Every name must be a valid
// catalog name (release assets are, e.g. rbee-worker-linux-amd64).
func ReleaseSums(dir string) ([]byte, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	var names []string
	for _, d := range des {
		name := d.Name()
		if name == SumsFile || name == SigFile || strings.HasPrefix(name, ".") || !d.Type().IsRegular() {
			continue
		}
		if err := ValidName("release file", name); err != nil {
			return nil, err
		}
		names = append(names, name)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%w: no release files in %s", ErrBadName, dir)
	}
	sort.Strings(names)
	var out bytes.Buffer
	for _, name := range names {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("catalog: %w", err)
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("catalog: %w", err)
		}
		fmt.Fprintf(&out, "%s  %s\n", hex.EncodeToString(h.Sum(nil)), name)
	}
	return out.Bytes(), nil
}
