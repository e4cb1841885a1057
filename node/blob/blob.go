// Package blob copies catalogued files (models and worker binaries)
// between nodes over libp2p: one request frame, one head frame (size,
// sha256 or an error), then the raw bytes from the requested offset to
// the end. Files never go through Raft. The Service serves this node's
// catalogs and opens peers' files; ModelSource and BinarySource adapt it
// to the catalogs' PeerSource interfaces, choosing peers from the
// registry's holdings.
package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/rbee-project/rbee/fsm"
	modelcat "github.com/rbee-project/rbee/model/catalog"
	"github.com/rbee-project/rbee/p2p"
	workercat "github.com/rbee-project/rbee/worker/catalog"
)

// Protocol is the blob protocol's id.
const Protocol protocol.ID = "/rbee/blob/1.0.0"

// idle bounds how long a transfer may stall before it is reset.
const idle = 30 * time.Second

// Chunk is the serving side's copy buffer: large reads keep a multi-GiB
// model transfer at disk and network speed.
const Chunk = 256 << 10

// maxHead bounds a head frame: a binary's head carries its release's
// SHA256SUMS (at most 1 MiB, base64 in JSON: 1.34 MiB) and signature.
const maxHead = 2 << 20

// maxRequest bounds a request frame: names and a sha256.
const maxRequest = 4096

// Request asks a peer for one file.
type Request struct {
	Kind    string `json:"kind"` // "model" or "binary"
	SHA256  string `json:"sha256,omitempty"`
	Offset  int64  `json:"offset,omitempty"`
	Type    string `json:"type,omitempty"`
	Version string `json:"version,omitempty"`
	OS      string `json:"os,omitempty"`
	Arch    string `json:"arch,omitempty"`
}

// Head is the serving side's answer before the bytes.
type Head struct {
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	Error  string `json:"error,omitempty"`
	// Sums and SumsSig (binaries) are the release's SHA256SUMS and
	// SHA256SUMS.sig as the serving node keeps them; the receiver checks
	// the binary against them with its own trusted keys. A node serves
	// only signed binaries.
	Sums    []byte `json:"sums,omitempty"`
	SumsSig []byte `json:"sums_sig,omitempty"`
}

// Models is the model catalog as the service serves it.
type Models interface {
	OpenBySHA256(sum string) (*os.File, modelcat.Entry, error)
}

// Binaries is the worker catalog as the service serves it.
type Binaries interface {
	OpenRelease(typ, version, goos, goarch string) (io.ReadCloser, workercat.Entry, workercat.ReleaseProof, error)
}

// Streams opens libp2p streams (the node's p2p host).
type Streams interface {
	NewStream(ctx context.Context, p peer.ID, pid protocol.ID, more ...protocol.ID) (network.Stream, error)
}

// Holdings says which peers hold what: the registry replica and the live
// members.
type Holdings interface {
	// AlivePeers are the ids of the alive peers, this node excluded.
	AlivePeers() map[string]bool
	Models() []fsm.ModelHolding
	Binaries() []fsm.BinaryHolding
}

// Config configures a Service.
type Config struct {
	Models   Models
	Binaries Binaries
	Streams  Streams
	Holdings Holdings
}

// Service serves and fetches files. Safe for concurrent use.
type Service struct{ cfg Config }

// New returns a service.
func New(cfg Config) *Service { return &Service{cfg: cfg} }

// Handle serves one stream of Protocol: the file asked for, or a head
// with an error.
func (b *Service) Handle(s network.Stream) {
	_ = s.SetReadDeadline(time.Now().Add(10 * time.Second))
	var req Request
	if err := p2p.ReadJSON(s, maxRequest, &req); err != nil {
		_ = s.Reset()
		return
	}
	rc, head, err := b.open(req)
	if err != nil {
		_ = s.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if p2p.WriteJSON(s, Head{Error: err.Error()}) != nil {
			_ = s.Reset()
			return
		}
		_ = s.Close()
		return
	}
	defer rc.Close()
	_ = s.SetWriteDeadline(time.Now().Add(idle))
	if err := p2p.WriteJSON(s, head); err != nil {
		_ = s.Reset()
		return
	}
	if err := p2p.Pump(rc, Chunk, idle, s, func(p []byte) error { _, err := s.Write(p); return err }); err != nil {
		_ = s.Reset()
		return
	}
	_ = s.Close()
}

// open opens the local file a request names.
func (b *Service) open(req Request) (io.ReadCloser, Head, error) {
	switch req.Kind {
	case "model":
		f, e, err := b.cfg.Models.OpenBySHA256(req.SHA256)
		if err != nil {
			return nil, Head{}, err
		}
		if req.Offset < 0 || req.Offset > e.Size {
			f.Close()
			return nil, Head{}, errors.New("offset out of range")
		}
		if _, err := f.Seek(req.Offset, io.SeekStart); err != nil {
			f.Close()
			return nil, Head{}, err
		}
		return f, Head{Size: e.Size, SHA256: e.SHA256}, nil
	case "binary":
		r, e, proof, err := b.cfg.Binaries.OpenRelease(req.Type, req.Version, req.OS, req.Arch)
		if err != nil {
			return nil, Head{}, err
		}
		return r, Head{Size: e.Size, SHA256: e.SHA256, Sums: proof.Sums, SumsSig: proof.Sig}, nil
	}
	return nil, Head{}, errors.New("unknown kind")
}

// Open asks peer nodeID for a file. The body fails when the transfer
// stalls for longer than idle or ctx ends.
func (b *Service) Open(ctx context.Context, nodeID string, req Request) (io.ReadCloser, Head, error) {
	pid, err := peer.Decode(nodeID)
	if err != nil {
		return nil, Head{}, err
	}
	s, err := b.cfg.Streams.NewStream(ctx, pid, Protocol)
	if err != nil {
		return nil, Head{}, err
	}
	_ = s.SetDeadline(time.Now().Add(10 * time.Second))
	if err := p2p.WriteJSON(s, req); err != nil {
		_ = s.Reset()
		return nil, Head{}, err
	}
	_ = s.CloseWrite()
	var head Head
	if err := p2p.ReadJSON(s, maxHead, &head); err != nil {
		_ = s.Reset()
		return nil, Head{}, err
	}
	if head.Error != "" {
		_ = s.Close()
		return nil, head, errors.New(head.Error)
	}
	_ = s.SetDeadline(time.Time{})
	return &body{s: s, stop: context.AfterFunc(ctx, func() { _ = s.Reset() })}, head, nil
}

// body is a transfer in progress; a stall longer than idle fails it.
type body struct {
	s    network.Stream
	stop func() bool
	eof  bool
}

func (b *body) Read(p []byte) (int, error) {
	_ = b.s.SetReadDeadline(time.Now().Add(idle))
	k, err := b.s.Read(p)
	if errors.Is(err, io.EOF) {
		b.eof = true
	}
	return k, err
}

func (b *body) Close() error {
	b.stop()
	if b.eof {
		return b.s.Close()
	}
	return b.s.Reset()
}

// ModelSource is the model catalog's PeerSource: any alive peer the
// registry says holds the sha256.
func (b *Service) ModelSource() modelcat.PeerSource { return modelSource{b} }

type modelSource struct{ b *Service }

func (m modelSource) OpenRange(ctx context.Context, sha string, offset int64) (io.ReadCloser, int64, error) {
	alive := m.b.cfg.Holdings.AlivePeers()
	var last error = fmt.Errorf("no peer holds %s", sha)
	for _, h := range m.b.cfg.Holdings.Models() {
		if h.SHA256 != sha || !alive[h.NodeID] {
			continue
		}
		rc, head, err := m.b.Open(ctx, h.NodeID, Request{Kind: "model", SHA256: sha, Offset: offset})
		if err != nil {
			last = err
			continue
		}
		return rc, head.Size, nil
	}
	return nil, 0, last
}

// BinarySource is the worker catalog's PeerSource.
func (b *Service) BinarySource() workercat.PeerSource { return binarySource{b} }

type binarySource struct{ b *Service }

func (p binarySource) Open(ctx context.Context, typ, version, goos, goarch string) (workercat.PeerBinary, error) {
	if goos == "" {
		goos = runtime.GOOS
	}
	if goarch == "" {
		goarch = runtime.GOARCH
	}
	alive := p.b.cfg.Holdings.AlivePeers()
	var last error = fmt.Errorf("no peer holds %s %s for %s/%s", typ, version, goos, goarch)
	for _, h := range p.b.cfg.Holdings.Binaries() {
		if !alive[h.NodeID] || h.Type != typ || h.Version != version || h.OS != goos || h.Arch != goarch {
			continue
		}
		rc, head, err := p.b.Open(ctx, h.NodeID, Request{Kind: "binary", Type: typ, Version: version, OS: goos, Arch: goarch})
		if err != nil {
			last = err
			continue
		}
		// What the peer says of the sha256 is not used: the catalog
		// checks the copy against the signed SHA256SUMS.
		return workercat.PeerBinary{Body: rc, Size: head.Size,
			Release: workercat.ReleaseProof{Sums: head.Sums, Sig: head.SumsSig}}, nil
	}
	return workercat.PeerBinary{}, last
}
