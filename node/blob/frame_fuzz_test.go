package blob

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/stretchr/testify/require"

	modelcat "github.com/rbee-project/rbee/model/catalog"
	"github.com/rbee-project/rbee/p2p"
	workercat "github.com/rbee-project/rbee/worker/catalog"
)

// fuzzStream is a network.Stream over fixed input bytes: it records what
// is written and how it ends. Methods the blob protocol should not need
// are left to the nil embedded Stream (they would panic).
type fuzzStream struct {
	network.Stream
	in                      *bytes.Reader
	out                     bytes.Buffer
	closed, reset, closeOut bool
}

func newFuzzStream(in []byte) *fuzzStream { return &fuzzStream{in: bytes.NewReader(in)} }

func (s *fuzzStream) Read(p []byte) (int, error)       { return s.in.Read(p) }
func (s *fuzzStream) Write(p []byte) (int, error)      { return s.out.Write(p) }
func (s *fuzzStream) Close() error                     { s.closed = true; return nil }
func (s *fuzzStream) CloseWrite() error                { s.closeOut = true; return nil }
func (s *fuzzStream) Reset() error                     { s.reset = true; return nil }
func (s *fuzzStream) SetDeadline(time.Time) error      { return nil }
func (s *fuzzStream) SetReadDeadline(time.Time) error  { return nil }
func (s *fuzzStream) SetWriteDeadline(time.Time) error { return nil }
func (s *fuzzStream) Conn() network.Conn               { return fuzzConn{} }

// consumed is how many input bytes were read.
func (s *fuzzStream) consumed() int { return int(s.in.Size()) - s.in.Len() }

type fuzzConn struct{ network.Conn }

func (fuzzConn) RemoteMultiaddr() ma.Multiaddr { return ma.StringCast("/ip4/127.0.0.1/tcp/4001") }

// fuzzStreams opens one fuzzStream.
type fuzzStreams struct{ s *fuzzStream }

func (f *fuzzStreams) NewStream(context.Context, peer.ID, protocol.ID, ...protocol.ID) (network.Stream, error) {
	return f.s, nil
}

// fuzzModels serves one model; fuzzBinaries one release. Both record the
// requests they see.
type fuzzModels struct {
	path, sha string
	size      int64
	asked     []string
}

func (m *fuzzModels) OpenBySHA256(sum string) (*os.File, modelcat.Entry, error) {
	m.asked = append(m.asked, sum)
	if sum != m.sha {
		return nil, modelcat.Entry{}, errors.New("no model " + sum)
	}
	f, err := os.Open(m.path)
	return f, modelcat.Entry{Size: m.size, SHA256: m.sha}, err
}

type fuzzBinaries struct {
	body  []byte
	proof workercat.ReleaseProof
	asked []Request
}

func (b *fuzzBinaries) OpenRelease(typ, version, goos, goarch string) (io.ReadCloser, workercat.Entry, workercat.ReleaseProof, error) {
	b.asked = append(b.asked, Request{Kind: "binary", Type: typ, Version: version, OS: goos, Arch: goarch})
	if typ != "llama-server" || version != "b1" || goos != "linux" || goarch != "amd64" {
		return nil, workercat.Entry{}, workercat.ReleaseProof{}, errors.New("no such release")
	}
	s := sha256.Sum256(b.body)
	return io.NopCloser(bytes.NewReader(b.body)), workercat.Entry{Size: int64(len(b.body)), SHA256: hex.EncodeToString(s[:])}, b.proof, nil
}

// fuzzFrame is what p2p.WriteJSON writes for v.
func fuzzFrame(tb testing.TB, v any) []byte {
	var buf bytes.Buffer
	if err := p2p.WriteJSON(&buf, v); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// fuzzFirstFrame splits in as the frame readers see it: the payload of
// its first frame and what follows, or ok false when there is no whole
// frame of at most max bytes.
func fuzzFirstFrame(in []byte, max int) (payload, rest []byte, ok bool) {
	if len(in) < 4 {
		return nil, nil, false
	}
	n := binary.BigEndian.Uint32(in)
	if uint64(n) > uint64(max) || uint64(len(in)-4) < uint64(n) {
		return nil, nil, false
	}
	return in[4 : 4+n], in[4+n:], true
}

// FuzzHandleRequest serves a stream whose bytes are arbitrary. Handle never
// panics and never reads more than the 4 KiB request frame (plus its 4-byte
// length). When there is no whole request frame of valid JSON within that
// cap it resets the stream, writes nothing and asks no catalog. Otherwise
// the catalogs are asked exactly for the decoded request, and the answer is
// one head frame the client's reader (2 MiB cap) accepts: an error head and
// a clean close for a request it cannot serve, else the file's size and
// sha256 (and release proof) followed by the file's bytes from the offset.
func FuzzHandleRequest(f *testing.F) {
	model := []byte(strings.Repeat("GGUF model bytes ", 64))
	ms := sha256.Sum256(model)
	modelSHA := hex.EncodeToString(ms[:])
	modelPath := filepath.Join(f.TempDir(), "m.gguf")
	if err := os.WriteFile(modelPath, model, 0o644); err != nil {
		f.Fatal(err)
	}
	bin := []byte("#!/bin/sh\necho llama-server\n")
	proof := workercat.ReleaseProof{Sums: []byte(strings.Repeat("0", 64) + "  llama-server-linux-amd64-cpu.tar.gz\n"), Sig: make([]byte, ed25519.SignatureSize)}

	for _, r := range []Request{
		{Kind: "model", SHA256: modelSHA},
		{Kind: "model", SHA256: modelSHA, Offset: 100, Direct: true},
		{Kind: "model", SHA256: modelSHA, Offset: int64(len(model))},
		{Kind: "model", SHA256: modelSHA, Offset: int64(len(model)) + 1},
		{Kind: "model", SHA256: modelSHA, Offset: -1},
		{Kind: "model", SHA256: strings.Repeat("0", 64)},
		{Kind: "binary", Type: "llama-server", Version: "b1", OS: "linux", Arch: "amd64"},
		{Kind: "binary", Type: "../x", Version: "b1", OS: "linux", Arch: "amd64", Direct: true},
		{Kind: "other"},
		{},
	} {
		f.Add(fuzzFrame(f, r))
	}
	// The cap: a request frame of exactly 4096 bytes, and one over.
	pad := func(n int) []byte {
		b := []byte(`{"kind":"model","sha256":"` + modelSHA + `"}`)
		b = append(b, bytes.Repeat([]byte(" "), n-len(b))...)
		return append(binary.BigEndian.AppendUint32(nil, uint32(len(b))), b...)
	}
	f.Add(pad(maxRequest))
	f.Add(pad(maxRequest + 1))
	good := fuzzFrame(f, Request{Kind: "model", SHA256: modelSHA})
	f.Add(good[:len(good)-1])
	f.Add(append(good, good...))
	f.Add([]byte{0, 0, 0, 2, '{', '}'})
	f.Add([]byte{0, 0, 0, 3, 'n', 'o', 'p'})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, '{'})
	f.Add([]byte{0, 0})
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, in []byte) {
		models := &fuzzModels{path: modelPath, sha: modelSHA, size: int64(len(model))}
		binaries := &fuzzBinaries{body: bin, proof: proof}
		s := newFuzzStream(in)
		New(Config{Models: models, Binaries: binaries}).Handle(s)

		require.LessOrEqual(t, s.consumed(), 4+maxRequest, "read past the request frame's cap")
		payload, _, ok := fuzzFirstFrame(in, maxRequest)
		var req Request
		if ok {
			ok = json.Unmarshal(payload, &req) == nil
		}
		if !ok {
			require.True(t, s.reset, "a bad request frame resets the stream")
			require.Zero(t, s.out.Len(), "nothing is answered to a bad request frame")
			require.Empty(t, models.asked)
			require.Empty(t, binaries.asked)
			return
		}
		require.Equal(t, 4+len(payload), s.consumed(), "reads exactly the request frame")
		switch req.Kind {
		case "model":
			require.Equal(t, []string{req.SHA256}, models.asked)
			require.Empty(t, binaries.asked)
		case "binary":
			require.Empty(t, models.asked)
			require.Equal(t, []Request{{Kind: "binary", Type: req.Type, Version: req.Version, OS: req.OS, Arch: req.Arch}}, binaries.asked)
		default:
			require.Empty(t, models.asked)
			require.Empty(t, binaries.asked)
		}

		out := bytes.NewReader(s.out.Bytes())
		var head Head
		require.NoError(t, p2p.ReadJSON(out, maxHead, &head), "the client cannot read the head")
		rest, err := io.ReadAll(out)
		require.NoError(t, err)
		require.Nil(t, head.Direct, "no direct offer without a listener")
		require.True(t, s.closed, "an answered stream is closed")
		require.False(t, s.reset)
		switch {
		case req.Kind == "model" && req.SHA256 == modelSHA && req.Offset >= 0 && req.Offset <= int64(len(model)):
			require.Equal(t, Head{Size: int64(len(model)), SHA256: modelSHA}, head)
			require.Equal(t, model[req.Offset:], rest)
		case req.Kind == "binary" && len(binaries.asked) == 1 && req.Type == "llama-server" && req.Version == "b1" && req.OS == "linux" && req.Arch == "amd64":
			bs := sha256.Sum256(bin)
			require.Equal(t, Head{Size: int64(len(bin)), SHA256: hex.EncodeToString(bs[:]), Sums: proof.Sums, SumsSig: proof.Sig}, head)
			require.Equal(t, bin, rest)
		default:
			require.NotEmpty(t, head.Error, "an unserved request gets an error head")
			require.Equal(t, Head{Error: head.Error}, head)
			require.Empty(t, rest)
		}
	})
}

// FuzzOpenHead reads an arbitrary answer to Open (NoDirect: the request
// asks for no direct path). Open never panics. What it writes is one
// request frame the server's reader (4 KiB cap) decodes to the request
// given. It never reads more than the 2 MiB head frame (plus its length)
// before returning. With no whole head frame of valid JSON within that cap,
// or with a direct offer nobody asked for, it fails with a zero head and
// resets the stream. A head with an error fails with that error and the
// head, closing the stream. Any other head is returned as decoded (and
// survives a write/read round trip), with a body of exactly the bytes after
// the frame; reading it to the end and closing it closes the stream.
func FuzzOpenHead(f *testing.F) {
	k, _, err := crypto.GenerateEd25519Key(bytes.NewReader(make([]byte, 64)))
	if err != nil {
		f.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		f.Fatal(err)
	}
	sha := strings.Repeat("ab", 32)
	for _, h := range []struct {
		head Head
		body string
	}{
		{Head{Size: 11, SHA256: sha}, "hello world"},
		{Head{Size: 5, SHA256: sha, Sums: []byte(sha + "  llama-server-linux-amd64-cpu.tar.gz\n"), SumsSig: make([]byte, 64)}, "12345"},
		{Head{Error: "no model " + sha}, ""},
		{Head{Size: 5, SHA256: sha, Direct: &Offer{Port: 4002, CertSHA256: sha, Token: strings.Repeat("00", 32)}}, "12345"},
		{Head{}, ""},
	} {
		f.Add(append(fuzzFrame(f, h.head), h.body...))
	}
	f.Add(append(binary.BigEndian.AppendUint32(nil, maxHead+1), '{', '}'))
	f.Add(append(binary.BigEndian.AppendUint32(nil, 2), '{', '}', 'x'))
	f.Add([]byte{0, 0, 0, 9, '{', '"', 's', 'i', 'z', 'e', '"', ':', '-'})
	f.Add([]byte{0, 0, 0})
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, in []byte) {
		s := newFuzzStream(in)
		svc := New(Config{Streams: &fuzzStreams{s: s}, NoDirect: true})
		want := Request{Kind: "model", SHA256: sha, Offset: 3}
		rc, head, err := svc.Open(context.Background(), id.String(), want)

		var sent Request
		written := bytes.NewReader(s.out.Bytes())
		require.NoError(t, p2p.ReadJSON(written, maxRequest, &sent), "the server cannot read the request")
		require.Equal(t, want, sent)
		require.Zero(t, written.Len(), "one request frame, nothing else")

		require.LessOrEqual(t, s.consumed(), 4+maxHead, "read past the head frame's cap")
		payload, rest, ok := fuzzFirstFrame(in, maxHead)
		var wantHead Head
		if ok {
			ok = json.Unmarshal(payload, &wantHead) == nil
		}
		if !ok || wantHead.Error == "" && wantHead.Direct != nil {
			require.Error(t, err)
			require.Nil(t, rc)
			require.Equal(t, Head{}, head)
			require.True(t, s.reset, "a bad head resets the stream")
			return
		}
		require.Equal(t, 4+len(payload), s.consumed(), "reads exactly the head frame")
		if wantHead.Error != "" {
			require.EqualError(t, err, wantHead.Error)
			require.Nil(t, rc)
			require.Equal(t, wantHead, head)
			require.True(t, s.closed)
			require.False(t, s.reset)
			return
		}
		require.NoError(t, err)
		require.Equal(t, wantHead, head)
		var again Head
		require.NoError(t, p2p.ReadJSON(bytes.NewReader(fuzzFrame(t, head)), maxHead, &again))
		require.Equal(t, head, again, "the head survives a write/read round trip")
		require.True(t, s.closeOut, "the request side is closed once the head is read")
		got, err := io.ReadAll(rc)
		require.NoError(t, err)
		require.Equal(t, rest, got)
		require.NoError(t, rc.Close())
		require.True(t, s.closed, "a body read to the end closes the stream")
		require.False(t, s.reset)
	})
}
