package catalog

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rbee-project/rbee/internal/humanize"
	"github.com/rbee-project/rbee/internal/minrate"
	"github.com/rbee-project/rbee/internal/redirectguard"
)

const (
	// SumsFile is the checksum file in every release folder.
	SumsFile = "SHA256SUMS"
	// LatestFile, at the release base, holds the newest version's name; it
	// is read when DownloadOptions.Version is empty.
	LatestFile = "LATEST"
	// maxLatestBytes bounds LatestFile (one version name).
	maxLatestBytes = 256
	// DefaultIdleTimeout is Config.IdleTimeout's default: a release server
	// silent for a minute is gone.
	DefaultIdleTimeout = 60 * time.Second
)

// maxRedirects bounds the redirects of one release request (net/http's
// default).
const maxRedirects = 10

// errRedirect is a redirect the catalog does not follow: to a URL that is
// not http(s), or one too many.
var errRedirect = errors.New("the release server redirected")

// checkRedirect is the release client's CheckRedirect (unless the
// Config's client has its own): it follows at most maxRedirects
// redirects, to http(s) URLs only, never from https to http nor to a
// local or private address of another host (redirectguard), and says which
// rule a refused one broke (net/http's own errors would quote the
// server's Location).
func checkRedirect(req *http.Request, via []*http.Request) error {
	if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
		return fmt.Errorf("%w to a URL that is not http(s)", errRedirect)
	}
	if len(via) >= maxRedirects {
		return fmt.Errorf("%w more than %d times", errRedirect, maxRedirects)
	}
	if err := redirectguard.CheckRedirect(req, via); err != nil {
		return fmt.Errorf("%w: %w", errRedirect, err)
	}
	return nil
}

// errStalled is the cause of a request the release server left without
// an answer or a byte for Config.IdleTimeout, or whose body brought fewer
// than Config.MinBytes in a Config.RateWindow.
var errStalled = errors.New("the release server stalled")

// AssetName is the release file name of a type's binary for goos/goarch:
// "{binary}-{os}-{arch}", plus ".exe" on Windows.
func AssetName(t WorkerType, goos, goarch string) string {
	name := t.Binary + "-" + goos + "-" + goarch
	if goos == "windows" {
		name += ".exe"
	}
	return name
}

// DownloadOptions says which binary to download from the release
// location (Config.ReleaseBaseURL; there is deliberately no per-call URL:
// where executables come from is node configuration, not a request).
type DownloadOptions struct {
	// Type is the worker type; "" means TypeCPU.
	Type string
	// Version is the release folder; "" means the one named by
	// {base}/LATEST.
	Version string
	// OS and Arch default to this machine's.
	OS, Arch string
	// Accel picks an archive type's build: "cpu" (default), "cuda",
	// "rocm", "vulkan" or "metal" (see ArchiveAssets).
	Accel string
	// Pin makes the binary the default of its type and platform (see
	// Catalog.Default and AddOptions.Pin).
	Pin bool
	// Progress, when set, is called as bytes arrive (total is -1 when the
	// server sends no length).
	Progress func(done, total int64)
}

// Download fetches a worker binary from the release location, checks the
// release signature (SHA256SUMS.sig over SHA256SUMS and the version, by a
// trusted key) before it fetches the binary, verifies the binary against
// the signed SHA256SUMS and adds it with SourceDownloaded, keeping the
// signed sums with it. The binary streams into a temp file in the catalog
// (see AddReader); on a missing or bad signature, a checksum mismatch, an
// HTTP error or a cancelled ctx nothing is added. Errors describe what
// went wrong (status, size, which file) without quoting the server.
func (c *Catalog) Download(ctx context.Context, opts DownloadOptions) (Entry, error) {
	if opts.Type == "" {
		opts.Type = TypeCPU
	}
	if opts.OS == "" {
		opts.OS = runtime.GOOS
	}
	if opts.Arch == "" {
		opts.Arch = runtime.GOARCH
	}
	base := c.base
	if base == "" {
		return Entry{}, fmt.Errorf("%w: no release location configured", ErrDownload)
	}
	if !strings.HasPrefix(base, "http://") && !strings.HasPrefix(base, "https://") {
		return Entry{}, fmt.Errorf("%w: the release location is not an http(s) URL", ErrBadName)
	}
	base = strings.TrimRight(base, "/")
	t, err := c.Type(opts.Type)
	if err != nil {
		return Entry{}, err
	}
	if t.External && !t.Archive {
		return Entry{}, fmt.Errorf("%w: rbee does not download %s; install it and register it (rbee worker binary add --type %s --path P)", ErrBadName, t.Name, t.Name)
	}
	if t.Archive {
		// Engines have their own versions: their releases live in a
		// folder per type, each with its own LATEST.
		base += "/" + t.Name
	}
	if opts.Version == "" {
		b, err := c.fetchSmall(ctx, base+"/"+LatestFile, maxLatestBytes)
		if err != nil {
			return Entry{}, err
		}
		v := strings.TrimSpace(string(b))
		if ValidName("version", v) != nil {
			return Entry{}, fmt.Errorf("%w: %s is not a version string (%d bytes; want 1-128 of [A-Za-z0-9._+-])", ErrDownload, LatestFile, len(b))
		}
		opts.Version = v
	}
	if err := validNames(t.Name, opts.Version, opts.OS, opts.Arch, false); err != nil {
		return Entry{}, err
	}
	folder := base + "/" + opts.Version + "/"

	var proof ReleaseProof
	if proof.Sums, err = c.fetchSmall(ctx, folder+SumsFile, maxSumsBytes); err != nil {
		return Entry{}, err
	}
	if proof.Sig, err = c.fetchSmall(ctx, folder+SigFile, maxSigBytes); err != nil {
		var se *statusError
		if errors.As(err, &se) && se.code == http.StatusNotFound {
			return Entry{}, fmt.Errorf("%w: %s has no %s", ErrUnsigned, folder, SigFile)
		}
		return Entry{}, err
	}
	// Refuse before fetching the binary; AddReader checks again.
	add := AddOptions{
		Type: t.Name, Version: opts.Version, OS: opts.OS, Arch: opts.Arch,
		Source: SourceDownloaded, Progress: opts.Progress,
		Release: &proof, Pin: opts.Pin, Accel: opts.Accel,
	}
	asset := AssetName(t, opts.OS, opts.Arch)
	if t.Archive {
		if asset, err = c.archiveAsset(t, &add); err != nil {
			return Entry{}, err
		}
		add.Asset = asset
	}
	if _, err := c.signedSumOf(asset, opts.Version, proof); err != nil {
		return Entry{}, err
	}

	resp, err := c.get(ctx, folder+asset)
	if err != nil {
		return Entry{}, err
	}
	defer resp.Body.Close()
	add.Size = resp.ContentLength
	e, err := c.AddReader(ctx, add, resp.Body)
	if qb, ok := resp.Body.(*quietBody); ok && err != nil && qb.err != nil && !errors.Is(err, ErrDownload) {
		// The release server broke off or stalled: a download failure,
		// not this node's.
		err = fmt.Errorf("%w: %w", ErrDownload, err)
	}
	return e, err
}

// statusError is an HTTP answer other than 200. It keeps the code only:
// the reason phrase is the server's text and is not repeated.
type statusError struct {
	url  string
	code int
}

func (e *statusError) Error() string {
	return fmt.Sprintf("GET %s: HTTP %d %s", e.url, e.code, http.StatusText(e.code))
}

// Unwrap makes a 404 an ErrNotFound: the release location has no such
// version or file.
func (e *statusError) Unwrap() error {
	if e.code == http.StatusNotFound {
		return ErrNotFound
	}
	return nil
}

// get issues a GET and turns any status but 200 into an ErrDownload. The
// request fails when the server sends nothing for c.idle, for its answer
// or any read of the body (a quietBody, whose errors are safe to show).
func (c *Catalog) get(ctx context.Context, target string) (*http.Response, error) {
	rctx, cancel := context.WithCancelCause(ctx)
	stalled := fmt.Errorf("%w: it sent nothing for %s", errStalled, c.idle)
	idle := time.AfterFunc(c.idle, func() { cancel(stalled) })
	stop := func() { idle.Stop(); cancel(nil) }
	u, err := url.Parse(target)
	if err != nil {
		stop()
		return nil, fmt.Errorf("%w: the release location is not a valid URL", ErrDownload)
	}
	// Redirects reach a local or private address on this host only.
	req, err := http.NewRequestWithContext(redirectguard.WithOrigin(rctx, u), http.MethodGet, target, nil)
	if err != nil {
		stop()
		return nil, fmt.Errorf("%w: the release location is not a valid URL", ErrDownload)
	}
	// No transparent gzip: a small compressed answer would unpack to
	// MaxBinarySize, and Content-Length would not bound the body.
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := c.client.Do(req)
	if err != nil {
		err = transportError(rctx, err)
		stop()
		return nil, fmt.Errorf("%w: GET %s: %w", ErrDownload, target, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		stop()
		return nil, fmt.Errorf("%w: %w", ErrDownload, &statusError{url: target, code: resp.StatusCode})
	}
	qb := &quietBody{ctx: rctx, rc: resp.Body, idle: idle, d: c.idle}
	stopRate := minrate.Watch(&qb.n, c.minB, c.window, func(moved int64) {
		cancel(fmt.Errorf("%w: %d bytes in %s, fewer than the %d a download must move", errStalled, moved, c.window, c.minB))
	})
	qb.stop = func() { stopRate(); stop() }
	resp.Body = qb
	return resp, nil
}

// fetchSmall GETs a small file, refusing more than max bytes.
func (c *Catalog) fetchSmall(ctx context.Context, url string, max int64) ([]byte, error) {
	resp, err := c.get(ctx, url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err != nil {
		return nil, fmt.Errorf("%w: GET %s: %w", ErrDownload, url, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%w: GET %s: larger than %d bytes", ErrDownload, url, max)
	}
	return b, nil
}

// errBadResponse stands for any transport failure whose text could carry
// bytes of the server's answer (net/http quotes a malformed status line
// or header, for instance).
var errBadResponse = errors.New("malformed or interrupted HTTP response")

// transportError keeps what is safe to show of a failed request or body
// read: the context's own error, a timeout, a connection-level error
// (addresses and the OS error), a DNS failure, or else a generic
// errBadResponse: never text the server sent.
func transportError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return errors.New("timed out")
	}
	if reason, ok := redirectguard.Reason(err); ok {
		// Refused at dial time: the rule, not the URL redirected to.
		return fmt.Errorf("%w: %w", errRedirect, reason)
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return oe
	}
	var de *net.DNSError
	if errors.As(err, &de) {
		return de
	}
	var ce *tls.CertificateVerificationError
	if errors.As(err, &ce) {
		return errors.New("the server's TLS certificate does not verify")
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return io.ErrUnexpectedEOF
	}
	if errors.Is(err, errRedirect) {
		// The url.Error names the URL redirected to; keep only the rule.
		for e := err; e != nil; e = errors.Unwrap(e) {
			if _, ok := e.(*url.Error); !ok {
				return e
			}
		}
	}
	return errBadResponse
}

// quietBody is a response body whose read errors go through
// transportError (a chunked body's trailer error would quote the server),
// whose every read restarts the idle timer of its request, and whose
// request fails when it moves fewer than the minimum bytes in a window.
type quietBody struct {
	ctx  context.Context
	rc   io.ReadCloser
	idle *time.Timer
	d    time.Duration
	stop func()
	err  error        // the first read error but EOF, as returned
	n    atomic.Int64 // bytes read, for the minimum rate
}

func (q *quietBody) Read(p []byte) (int, error) {
	n, err := q.rc.Read(p)
	if n > 0 {
		q.idle.Reset(q.d)
		q.n.Add(int64(n))
	}
	if err != nil && !errors.Is(err, io.EOF) {
		err = transportError(q.ctx, err)
		if q.err == nil {
			q.err = err
		}
	}
	return n, err
}

func (q *quietBody) Close() error {
	q.stop()
	return q.rc.Close()
}

// PeerBinary is a binary a peer serves: the content, its size as the
// peer announces it, and the release proof the peer keeps with it.
type PeerBinary struct {
	Body    io.ReadCloser
	Size    int64
	Release ReleaseProof
}

// PeerSource is a node that already has a binary: the node implements it
// over libp2p (the serving side answers with Catalog.OpenRelease). The
// caller closes Body. What the peer says about the binary's sha256 does
// not matter: the copy is checked against the signed SHA256SUMS.
type PeerSource interface {
	Open(ctx context.Context, typ, version, goos, goarch string) (PeerBinary, error)
}

// PeerOptions says which binary to copy from a peer. Version is required
// (ask the peer for its list first); OS and Arch default to this machine's.
type PeerOptions struct {
	Type     string
	Version  string
	OS, Arch string
	// Pin: see DownloadOptions.Pin.
	Pin      bool
	Progress func(done, total int64)
}

// maxPeerError bounds how much of a peer's error text is repeated.
const maxPeerError = 200

// BadCopyReporter is a PeerSource that can be told that the copy it served
// last of a binary failed its check (a proof no trusted key verifies, a
// size or sha256 that differs from the signed SHA256SUMS, a body that
// broke off or stalled), so that its next Open for that binary asks
// another holder.
type BadCopyReporter interface {
	BadCopy(typ, version, goos, goarch string)
}

// maxPeerCopies is how many peer copies of one binary FetchFromPeer tries
// when copies fail their check (each from another holder).
const maxPeerCopies = 3

// errPeerBody marks a failed read of a peer's body (a stall, a reset), as
// opposed to a failure of this machine's disk.
var errPeerBody = errors.New("the peer's transfer broke off")

// FetchFromPeer copies a signed binary from a peer and adds it with
// SourcePeer. The peer sends the release proof it keeps with the binary;
// this catalog verifies the signature with its own trusted keys, then the
// content against the signed sha256 (AddReader). A binary without a proof
// (built or added on the peer) is refused with ErrUnsigned; on any
// mismatch nothing is added. When src is a BadCopyReporter, a copy that
// fails its check is reported and the binary is copied again (from
// another holder), up to maxPeerCopies copies.
func (c *Catalog) FetchFromPeer(ctx context.Context, src PeerSource, opts PeerOptions) (Entry, error) {
	if opts.Type == "" {
		opts.Type = TypeCPU
	}
	if opts.OS == "" {
		opts.OS = runtime.GOOS
	}
	if opts.Arch == "" {
		opts.Arch = runtime.GOARCH
	}
	if err := validNames(opts.Type, opts.Version, opts.OS, opts.Arch, false); err != nil {
		return Entry{}, err
	}
	t, err := c.Type(opts.Type)
	if err != nil {
		return Entry{}, err
	}
	if t.Archive {
		return Entry{}, fmt.Errorf("%w: %s is an engine archive, built per accelerator: download it from the release location", ErrDownload, t.Name)
	}
	bad, tell := src.(BadCopyReporter)
	var first error // the first bad copy's error
	for n := 1; ; n++ {
		e, err := c.fetchPeerCopy(ctx, src, t, opts)
		if err != nil && first != nil && ctx.Err() == nil && !badPeerCopy(err) {
			// No other holder to ask: why the copy failed is the answer.
			return Entry{}, first
		}
		if tell && err != nil && ctx.Err() == nil && badPeerCopy(err) {
			// Skipped next time, the last holder tried too.
			bad.BadCopy(opts.Type, opts.Version, opts.OS, opts.Arch)
		}
		if err == nil || ctx.Err() != nil || !tell || n >= maxPeerCopies || !badPeerCopy(err) {
			return e, err
		}
		if first == nil {
			first = err
		}
	}
}

// badPeerCopy says whether err is the fault of the peer's copy, so another
// holder may have a good one.
func badPeerCopy(err error) bool {
	return errors.Is(err, ErrChecksum) || errors.Is(err, ErrSignature) || errors.Is(err, ErrUnsigned) || errors.Is(err, errPeerBody)
}

// fetchPeerCopy is one copy of FetchFromPeer.
func (c *Catalog) fetchPeerCopy(ctx context.Context, src PeerSource, t WorkerType, opts PeerOptions) (Entry, error) {
	// The copy has its own context, so that a peer too slow to matter can
	// be cut off (the node's source resets the stream when it ends).
	pctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	pb, err := src.Open(pctx, opts.Type, opts.Version, opts.OS, opts.Arch)
	if err != nil {
		if errors.Is(err, ErrUnsigned) || errors.Is(err, ErrNotFound) {
			return Entry{}, fmt.Errorf("%w: from peer: %w", ErrDownload, err)
		}
		return Entry{}, fmt.Errorf("%w: from peer: %s", ErrDownload, humanize.Clip(err.Error(), maxPeerError))
	}
	defer pb.Body.Close()
	if len(pb.Release.Sig) == 0 {
		return Entry{}, fmt.Errorf("%w: the peer sent %s %s without a signed %s; only signed releases are copied between nodes",
			ErrUnsigned, opts.Type, opts.Version, SumsFile)
	}
	if _, err := c.signedSum(t, opts.Version, opts.OS, opts.Arch, pb.Release); err != nil {
		return Entry{}, err
	}
	if pb.Size <= 0 {
		return Entry{}, fmt.Errorf("%w: peer announced size %d", ErrChecksum, pb.Size)
	}
	body := &peerBody{r: pb.Body}
	defer minrate.Watch(&body.n, c.minB, c.window, func(moved int64) {
		cancel(fmt.Errorf("%w: %d bytes in %s, fewer than the %d a copy must move", errPeerBody, moved, c.window, c.minB))
	})()
	// AddReader runs under ctx, not pctx: a window that ends after the
	// last byte (the copy being synced and installed) with few bytes in
	// it must not undo a complete copy; pctx's end stops the peer's
	// stream, and so a copy still reading.
	e, err := c.AddReader(ctx, AddOptions{
		Type: opts.Type, Version: opts.Version, OS: opts.OS, Arch: opts.Arch,
		Source: SourcePeer, Size: pb.Size, Progress: opts.Progress,
		Release: &pb.Release, Pin: opts.Pin,
	}, body)
	if cause := context.Cause(pctx); err != nil && ctx.Err() == nil && errors.Is(cause, errPeerBody) {
		err = fmt.Errorf("%w: %w", ErrDownload, cause)
	}
	return e, err
}

// peerBody marks the read errors of a peer's body with errPeerBody and
// counts its bytes (for the minimum rate).
type peerBody struct {
	r io.Reader
	n atomic.Int64
}

func (p *peerBody) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n.Add(int64(n))
	if err != nil && !errors.Is(err, io.EOF) {
		err = fmt.Errorf("%w: %w", errPeerBody, err)
	}
	return n, err
}
