// Package blob copies catalogued files (models and worker binaries)
// between nodes over libp2p: one request frame, one head frame (size,
// sha256 or an error), then the raw bytes from the requested offset to
// the end. Files never go through Raft. The Service serves this node's
// catalogs and opens peers' files; ModelSource and BinarySource adapt it
// to the catalogs' PeerSource interfaces, choosing peers from the
// registry's holdings. The bytes themselves go over the direct path (a
// pinned TLS connection to the serving node's blob port, offered over the
// stream) when the receiver can reach it; see direct.go and DESIGN.md.
package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"sync"
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
	// Direct says the receiver can take the bytes over the direct path
	// (see Offer); a server without a Listener, or an older one, ignores
	// it and streams. The field's name carries the framing's version: the
	// first direct path, TLS records end to end (field "direct"), is no
	// longer offered, so a peer that speaks only it copies over the
	// stream.
	Direct bool `json:"direct_frames,omitempty"`
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
	// Direct, when set, invites the receiver to fetch the bytes over the
	// direct path. The receiver then claims it there and closes the
	// stream, or sends choiceStream and reads the bytes on the stream.
	Direct *Offer `json:"direct,omitempty"`
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
	// Direct, when set, is this node's blob port: the service offers the
	// direct path to receivers that ask for it. The caller runs and
	// closes it.
	Direct *Listener
	// NoDirect makes this node's downloads always read the stream.
	NoDirect bool
	Log      *slog.Logger
}

// Service serves and fetches files. Safe for concurrent use.
type Service struct {
	cfg Config

	mu       sync.Mutex
	noDirect map[string]time.Time // peer -> when its blob port failed
	served   map[string]string    // file key -> the peer its last copy came from
	badCopy  map[string]time.Time // file key + "/" + peer -> when a copy from it failed its check
}

// badCopyFor is how long a peer whose copy of a file failed its check (or
// stalled) is not asked for that file again (its file has rotted or
// changed, and stays wrong until someone repairs it; a peer that stalled
// is overloaded or its link is, which rarely clears within minutes).
const badCopyFor = 10 * time.Minute

// New returns a service.
func New(cfg Config) *Service {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Service{cfg: cfg, noDirect: map[string]time.Time{}, served: map[string]string{}, badCopy: map[string]time.Time{}}
}

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
	if ip, err := remoteIP(s); err == nil && req.Direct && b.cfg.Direct != nil {
		if o, key, err := b.cfg.Direct.offer(rc, ip); err == nil {
			head.Direct = &o
			b.serveOffer(s, head, key)
			return
		}
	}
	b.stream(s, rc, head)
}

// stream sends head and then rc on s.
func (b *Service) stream(s network.Stream, rc io.ReadCloser, head Head) {
	defer rc.Close()
	_ = s.SetWriteDeadline(time.Now().Add(idle))
	if err := p2p.WriteJSON(s, head); err != nil {
		_ = s.Reset()
		return
	}
	b.pump(s, rc)
}

func (b *Service) pump(s network.Stream, rc io.Reader) {
	if err := p2p.Pump(rc, Chunk, idle, s, func(p []byte) error { _, err := s.Write(p); return err }); err != nil {
		_ = s.Reset()
		return
	}
	_ = s.Close()
}

// serveOffer sends a head with a direct offer, then waits for the
// receiver: it claims the offer on the blob port and closes the stream,
// or asks for the bytes on the stream.
func (b *Service) serveOffer(s network.Stream, head Head, key [32]byte) {
	_ = s.SetWriteDeadline(time.Now().Add(idle))
	if err := p2p.WriteJSON(s, head); err != nil {
		if rc, ok := b.cfg.Direct.take(key); ok {
			_ = rc.Close()
		}
		_ = s.Reset()
		return
	}
	_ = s.SetReadDeadline(time.Now().Add(directChoice))
	var c [1]byte
	_, err := io.ReadFull(s, c[:])
	rc, ok := b.cfg.Direct.take(key)
	switch {
	case ok && err == nil && c[0] == choiceStream:
		defer rc.Close()
		b.pump(s, rc)
	case ok: // the receiver went away without a choice
		_ = rc.Close()
		_ = s.Reset()
	case err == nil && c[0] == choiceStream:
		// Claimed, yet the receiver asks for the stream: its claim failed
		// after the token. A reset, not an empty body, so it retries.
		_ = s.Reset()
	default: // claimed on the blob port
		_ = s.Close()
	}
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
	req.Direct = !b.cfg.NoDirect && b.directOK(nodeID)
	if err := p2p.WriteJSON(s, req); err != nil {
		_ = s.Reset()
		return nil, Head{}, err
	}
	var head Head
	if err := p2p.ReadJSON(s, maxHead, &head); err != nil {
		_ = s.Reset()
		return nil, Head{}, err
	}
	if head.Error != "" {
		_ = s.Close()
		return nil, head, errors.New(head.Error)
	}
	if head.Direct != nil {
		if !req.Direct {
			_ = s.Reset()
			return nil, Head{}, errors.New("blob: the peer offered a direct path nobody asked for")
		}
		ip, err := remoteIP(s)
		var dc *directConn
		if err == nil {
			dc, err = dialDirect(ctx, ip, head.Direct)
		}
		if err == nil {
			_ = s.Close()
			return newDirectBody(dc, head.Size-req.Offset, context.AfterFunc(ctx, func() { _ = dc.c.Close() })), head, nil
		}
		if ctx.Err() != nil {
			_ = s.Reset()
			return nil, Head{}, ctx.Err()
		}
		b.cfg.Log.Info("blob: the direct path to the peer failed; copying over libp2p", "peer", nodeID, "err", err)
		if errors.Is(err, errUnreachable) {
			b.directFailed(nodeID)
		}
		_ = s.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := s.Write([]byte{choiceStream}); err != nil {
			_ = s.Reset()
			return nil, Head{}, err
		}
	}
	_ = s.CloseWrite()
	_ = s.SetDeadline(time.Time{})
	return &body{s: s, stop: context.AfterFunc(ctx, func() { _ = s.Reset() })}, head, nil
}

// directOK says whether to ask nodeID for the direct path: not within
// directRetry of a failure to reach it.
func (b *Service) directOK(nodeID string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	t, ok := b.noDirect[nodeID]
	if ok && time.Since(t) > directRetry {
		delete(b.noDirect, nodeID)
		return true
	}
	return !ok
}

func (b *Service) directFailed(nodeID string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.noDirect[nodeID] = time.Now()
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
		if h.SHA256 != sha || !alive[h.NodeID] || m.b.distrusted(modelKey(sha), h.NodeID) {
			continue
		}
		rc, head, err := m.b.Open(ctx, h.NodeID, Request{Kind: "model", SHA256: sha, Offset: offset})
		if err != nil {
			last = err
			continue
		}
		m.b.servedBy(modelKey(sha), h.NodeID)
		return rc, head.Size, nil
	}
	return nil, 0, last
}

// BadCopy is told that the copy of sha256 it served last failed its check
// or stalled (catalog.BadCopyReporter): that peer is not asked for it again for
// badCopyFor, so the next OpenRange goes to another holder.
func (m modelSource) BadCopy(sha string) {
	m.b.badCopyOf(modelKey(sha), "a model", "sha256", sha)
}

// modelKey and binaryKey name a file in served and badCopy (a sha256 is
// hex, so the two never meet).
func modelKey(sha string) string { return sha }

func binaryKey(typ, version, goos, goarch string) string {
	return "binary:" + typ + "/" + version + "/" + goos + "/" + goarch
}

// servedBy records that the copy of key being made comes from node.
func (b *Service) servedBy(key, node string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.served[key] = node
}

// badCopyOf marks the peer that served key last as distrusted for it.
func (b *Service) badCopyOf(key, what string, attrs ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if node, ok := b.served[key]; ok {
		b.badCopy[key+"/"+node] = time.Now()
		delete(b.served, key)
		b.cfg.Log.Warn("blob: a peer's copy of "+what+" failed its check; asking other holders", append(attrs, "peer", node)...)
	}
}

func (b *Service) distrusted(key, node string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	at, ok := b.badCopy[key+"/"+node]
	if ok && time.Since(at) > badCopyFor {
		delete(b.badCopy, key+"/"+node)
		return false
	}
	return ok
}

// BinarySource is the worker catalog's PeerSource (and
// BadCopyReporter): any alive peer the registry says holds the binary,
// skipping one whose copy failed its check within badCopyFor.
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
	key := binaryKey(typ, version, goos, goarch)
	var last error = fmt.Errorf("no peer holds %s %s for %s/%s", typ, version, goos, goarch)
	for _, h := range p.b.cfg.Holdings.Binaries() {
		if !alive[h.NodeID] || h.Type != typ || h.Version != version || h.OS != goos || h.Arch != goarch || p.b.distrusted(key, h.NodeID) {
			continue
		}
		rc, head, err := p.b.Open(ctx, h.NodeID, Request{Kind: "binary", Type: typ, Version: version, OS: goos, Arch: goarch})
		if err != nil {
			last = err
			continue
		}
		p.b.servedBy(key, h.NodeID)
		// What the peer says of the sha256 is not used: the catalog
		// checks the copy against the signed SHA256SUMS.
		return workercat.PeerBinary{Body: rc, Size: head.Size,
			Release: workercat.ReleaseProof{Sums: head.Sums, Sig: head.SumsSig}}, nil
	}
	return workercat.PeerBinary{}, last
}

// BadCopy is told that the copy of the binary it served last failed its
// check (catalog.BadCopyReporter): that peer is not asked for it again
// for badCopyFor, so the next Open goes to another holder.
func (p binarySource) BadCopy(typ, version, goos, goarch string) {
	p.b.badCopyOf(binaryKey(typ, version, goos, goarch), "a worker binary", "type", typ, "version", version, "os", goos, "arch", goarch)
}
