package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/rbee-project/rbee/gossip"
	"github.com/rbee-project/rbee/p2p"
	workercat "github.com/rbee-project/rbee/worker/catalog"
)

// protoBlob copies a catalogued file between nodes: one request frame,
// one head frame (size, sha256 or an error), then the raw bytes from the
// requested offset to the end. Files never go through Raft.
const protoBlob protocol.ID = "/rbee/blob/1.0.0"

// blobIdle bounds how long a transfer may stall before it is reset.
const blobIdle = 30 * time.Second

// blobChunk is the serving side's copy buffer: large reads keep a
// multi-GiB model transfer at disk and network speed.
const blobChunk = 256 << 10

// maxBlobHead bounds a head frame: a binary's head carries its release's
// SHA256SUMS (at most 1 MiB, base64 in JSON: 1.34 MiB) and signature.
const maxBlobHead = 2 << 20

type blobReq struct {
	Kind    string `json:"kind"` // "model" or "binary"
	SHA256  string `json:"sha256,omitempty"`
	Offset  int64  `json:"offset,omitempty"`
	Type    string `json:"type,omitempty"`
	Version string `json:"version,omitempty"`
	OS      string `json:"os,omitempty"`
	Arch    string `json:"arch,omitempty"`
}

type blobHead struct {
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

// handleBlob serves a catalogued file.
func (n *Node) handleBlob(s network.Stream) {
	_ = s.SetReadDeadline(time.Now().Add(10 * time.Second))
	var req blobReq
	if err := p2p.ReadJSON(s, 4096, &req); err != nil {
		_ = s.Reset()
		return
	}
	fail := func(msg string) {
		_ = s.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if p2p.WriteJSON(s, blobHead{Error: msg}) != nil {
			_ = s.Reset()
			return
		}
		_ = s.Close()
	}
	var rc io.ReadCloser
	var head blobHead
	switch req.Kind {
	case "model":
		f, e, err := n.models.OpenBySHA256(req.SHA256)
		if err != nil {
			fail(err.Error())
			return
		}
		if req.Offset < 0 || req.Offset > e.Size {
			f.Close()
			fail("offset out of range")
			return
		}
		if _, err := f.Seek(req.Offset, io.SeekStart); err != nil {
			f.Close()
			fail(err.Error())
			return
		}
		rc, head = f, blobHead{Size: e.Size, SHA256: e.SHA256}
	case "binary":
		r, e, proof, err := n.binaries.OpenRelease(req.Type, req.Version, req.OS, req.Arch)
		if err != nil {
			fail(err.Error())
			return
		}
		rc, head = r, blobHead{Size: e.Size, SHA256: e.SHA256, Sums: proof.Sums, SumsSig: proof.Sig}
	default:
		fail("unknown kind")
		return
	}
	defer rc.Close()
	_ = s.SetWriteDeadline(time.Now().Add(blobIdle))
	if err := p2p.WriteJSON(s, head); err != nil {
		_ = s.Reset()
		return
	}
	if err := pump(rc, blobChunk, blobIdle, s, func(b []byte) error { _, err := s.Write(b); return err }); err != nil {
		_ = s.Reset()
		return
	}
	_ = s.Close()
}

// openBlob asks a peer for a file.
func (n *Node) openBlob(ctx context.Context, nodeID string, req blobReq) (io.ReadCloser, blobHead, error) {
	pid, err := peer.Decode(nodeID)
	if err != nil {
		return nil, blobHead{}, err
	}
	s, err := n.host.NewStream(ctx, pid, protoBlob)
	if err != nil {
		return nil, blobHead{}, err
	}
	_ = s.SetDeadline(time.Now().Add(10 * time.Second))
	if err := p2p.WriteJSON(s, req); err != nil {
		_ = s.Reset()
		return nil, blobHead{}, err
	}
	_ = s.CloseWrite()
	var head blobHead
	if err := p2p.ReadJSON(s, maxBlobHead, &head); err != nil {
		_ = s.Reset()
		return nil, blobHead{}, err
	}
	if head.Error != "" {
		_ = s.Close()
		return nil, head, errors.New(head.Error)
	}
	_ = s.SetDeadline(time.Time{})
	return &blobBody{s: s, stop: context.AfterFunc(ctx, func() { _ = s.Reset() })}, head, nil
}

// blobBody is a transfer in progress; a stall longer than blobIdle fails it.
type blobBody struct {
	s    network.Stream
	stop func() bool
	eof  bool
}

func (b *blobBody) Read(p []byte) (int, error) {
	_ = b.s.SetReadDeadline(time.Now().Add(blobIdle))
	k, err := b.s.Read(p)
	if errors.Is(err, io.EOF) {
		b.eof = true
	}
	return k, err
}

func (b *blobBody) Close() error {
	b.stop()
	if b.eof {
		return b.s.Close()
	}
	return b.s.Reset()
}

// aliveOthers returns the ids of the alive peers (not this node).
func (n *Node) aliveOthers() map[string]bool {
	out := map[string]bool{}
	for _, m := range n.gsp.Members() {
		if m.State == gossip.StateAlive && m.ID != n.ID() {
			out[m.ID] = true
		}
	}
	return out
}

// peerModelSource implements the model catalog's PeerSource over the
// registry (who holds which sha256) and protoBlob.
type peerModelSource struct{ n *Node }

func (n *Node) peerModels() *peerModelSource { return &peerModelSource{n} }

func (p *peerModelSource) OpenRange(ctx context.Context, sha string, offset int64) (io.ReadCloser, int64, error) {
	alive := p.n.aliveOthers()
	var last error = fmt.Errorf("no peer holds %s", sha)
	for _, h := range p.n.reg.Models() {
		if h.SHA256 != sha || !alive[h.NodeID] {
			continue
		}
		rc, head, err := p.n.openBlob(ctx, h.NodeID, blobReq{Kind: "model", SHA256: sha, Offset: offset})
		if err != nil {
			last = err
			continue
		}
		return rc, head.Size, nil
	}
	return nil, 0, last
}

// peerBinarySource implements the worker catalog's PeerSource.
type peerBinarySource struct{ n *Node }

func (n *Node) peerBinaries() *peerBinarySource { return &peerBinarySource{n} }

func (p *peerBinarySource) Open(ctx context.Context, typ, version, goos, goarch string) (workercat.PeerBinary, error) {
	if goos == "" {
		goos = runtime.GOOS
	}
	if goarch == "" {
		goarch = runtime.GOARCH
	}
	alive := p.n.aliveOthers()
	var last error = fmt.Errorf("no peer holds %s %s for %s/%s", typ, version, goos, goarch)
	for _, h := range p.n.reg.Binaries() {
		if !alive[h.NodeID] || h.Type != typ || h.Version != version || h.OS != goos || h.Arch != goarch {
			continue
		}
		rc, head, err := p.n.openBlob(ctx, h.NodeID, blobReq{Kind: "binary", Type: typ, Version: version, OS: goos, Arch: goarch})
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
