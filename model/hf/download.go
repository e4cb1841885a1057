package hf

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rbee-project/rbee/internal/minrate"
)

const (
	// DefaultProgressInterval throttles progress callbacks: ten a second is
	// smooth for a progress bar and cheap for an event stream.
	DefaultProgressInterval = 100 * time.Millisecond
	// DefaultRetries is a sensible Spec.Retries for callers: a few resumes
	// absorb a flaky link without hiding a dead one for long.
	DefaultRetries = 3
	// defaultRetryBackoff is the first pause before a resume; it doubles.
	defaultRetryBackoff = 500 * time.Millisecond
	// spaceReserve is kept free on the file system beyond the download, so
	// a model does not fill the disk to the last byte (index, logs, raft).
	spaceReserve = 16 << 20
	// spaceCheckEvery: a download of unknown size checks the free space
	// each time it grows by this much (a statfs per 64 MiB costs nothing).
	spaceCheckEvery = 64 << 20
	// copyBuffer is the size of one buffer of the copy pipeline: reads
	// from the source fill it whole before it is hashed and written, so a
	// transport that returns ~40 KiB per read (a libp2p stream) costs one
	// hand-off per 256 KiB.
	copyBuffer = 256 << 10
	// copyBuffers is how many buffers the pipeline cycles: the reader may
	// run up to 1.75 MiB ahead of the writer and the hasher.
	copyBuffers = 8
	// writePiece is the largest single write to the partial. Larger writes
	// make ext4 (Linux 6.16+) allocate large page-cache folios, which on a
	// busy machine cost 4-6x the CPU per byte (BenchmarkModelPeerCopy
	// profile: 256 KiB writes 1.4 s, 64 KiB writes 0.3 s for 805 MB).
	writePiece = 64 << 10
	// writebackEvery: the writer asks the kernel to start writing back
	// each 2 MiB it has written, so the final fsync waits only for the
	// tail instead of the whole file. After 256 MiB in 64 KiB writes the
	// final fsync took 9-60 ms with 64 MiB ranges and 9-25 ms with 8 MiB
	// (this machine, under load); with 8 MiB an strace of a 32 MiB peer
	// copy still showed a 20 ms fsync, the largest cost after the last
	// byte. 2 MiB against 8 MiB, back to back, 5 rounds of 256 MiB peer
	// copies each: 682-860 (median 757) against 679-751 (691) MiB/s. The
	// writes are sequential either way, so smaller ranges cost a disk
	// nothing; the kernel CPU of starting writeback stays per byte.
	writebackEvery = 2 << 20
	// flushEvery: a goroutine beside the writer flushes the partial to the
	// device (fdatasync) after each 32 MiB written, without stalling the
	// copy. Starting writeback is not enough on a virtual disk: the host
	// caches what the guest writes, and the final fsync paid for flushing
	// all of it. On this machine (ext4 on virtio), 285 MiB written at a
	// peer copy's pace with writeback every 2 MiB: the final fsync took
	// 143-206 ms with no flush during the copy (a local copy of the file
	// spends 200-250 ms in its one fsync), 7-10 ms flushing every 16 MiB,
	// 16-24 ms every 32 MiB and 17-27 ms every 64 MiB. Flushing every
	// 16 MiB slowed the copy itself (513-589 ms against 385-449 ms).
	flushEvery = 32 << 20
	// DefaultIdleTimeout: a connection silent for a minute is dead (TCP
	// would take far longer to say so); resuming costs one request.
	DefaultIdleTimeout = 60 * time.Second
	// DefaultRateWindow and DefaultMinBytes: an attempt that receives
	// fewer than 64 KiB in 30 s is ended and retried (see
	// internal/minrate for why these values).
	DefaultRateWindow = minrate.DefaultWindow
	DefaultMinBytes   = minrate.DefaultMinBytes
	// maxRetryAfter caps the Retry-After (of a 429, a 503, any status
	// worth a retry) that Transfer
	// waits for before its next try: a download job that waits longer
	// than its source may stay silent (DefaultIdleTimeout) would look
	// hung. A longer wait fails the attempt at once, saying how long the
	// server asked for; the partial stays for a later resume.
	maxRetryAfter = DefaultIdleTimeout
)

// Progress is one progress report of a Transfer.
type Progress struct {
	// Done is the number of bytes received, including resumed ones; the
	// partial file holds them all or (at most a few MiB) fewer, still on
	// their way to the disk. The final report counts the complete file.
	Done int64 `json:"done"`
	// Total is the expected size, or -1 when unknown.
	Total int64 `json:"total"`
	// Resumed is how many bytes were already present when the transfer started.
	Resumed int64 `json:"resumed"`
	// Rate is the average speed of this transfer in bytes per second.
	Rate float64 `json:"rate"`
	// ETA is the estimated time left, or -1 when unknown (JSON: nanoseconds).
	ETA time.Duration `json:"eta_ns"`
}

// Opener opens the content at offset. It returns the body, the offset the
// body really starts at (offset, or 0 when the source ignored the range) and
// the total size (0 when unknown). Errors wrapped with Retryable may be
// retried by Transfer.
type Opener func(ctx context.Context, offset int64) (body io.ReadCloser, start, total int64, err error)

// Spec describes one Transfer.
type Spec struct {
	// Partial is the partial file ("<dir>/.partial/<name>.part"); its
	// directory is created. An existing partial is resumed.
	Partial string
	// Size is the expected size in bytes; 0 means unknown (learnt from the
	// source when it says).
	Size int64
	// SHA256 is the expected lower-case hex sha256; "" means compute only.
	SHA256 string
	// Progress, when set, is called at most every ProgressInterval and once
	// at the end, from the calling goroutine.
	Progress func(Progress)
	// ProgressInterval defaults to DefaultProgressInterval.
	ProgressInterval time.Duration
	// Retries is how many times a retryable failure (cut connection, 5xx,
	// 429) is resumed from the partial within this call; 0 means none.
	Retries int
	// RetryBackoff is the first pause between retries (doubling); 0 means
	// 500 ms.
	RetryBackoff time.Duration
	// Retrying, when set, is called before each retry with the error that
	// ended the attempt, so a caller whose Opener picks the source (a
	// peer) can pick another after a stall (errors.Is(err, ErrStalled)).
	Retrying func(err error)
	// IdleTimeout aborts an attempt (retryably) when no byte arrives for
	// this long, including the wait for the response; 0 means
	// DefaultIdleTimeout. A whole download has no deadline: models take hours.
	IdleTimeout time.Duration
	// MinBytes and RateWindow: an attempt that receives fewer than
	// MinBytes in a RateWindow of its body (each window counted from the
	// end of the last) ends with ErrStalled and is retried; 0 means
	// DefaultMinBytes and DefaultRateWindow, MinBytes < 0 no minimum.
	MinBytes   int64
	RateWindow time.Duration
	// MaxSize, when > 0, caps the file: a source announcing more is refused
	// before a byte is written, one sending more (of unknown size) is cut
	// there and the partial deleted (ErrTooLarge).
	MaxSize int64
	// CheckHead, when set, checks the first HeadSize bytes of the file
	// before anything is written (a format's magic); an error stops the
	// transfer, deletes the partial and is returned as is.
	CheckHead func(head []byte) error
	HeadSize  int
}

// Result is a completed, verified Transfer.
type Result struct {
	// Path is Spec.Partial, now complete, fsynced and verified.
	Path string
	// Size is its size in bytes.
	Size int64
	// SHA256 is its lower-case hex sha256.
	SHA256 string
	// Resumed is how many bytes came from an earlier partial.
	Resumed int64
}

type retryable struct {
	err   error
	after time.Duration // the wait the source asked for (Retry-After), 0 none
}

func (r retryable) Error() string { return r.err.Error() }
func (r retryable) Unwrap() error { return r.err }

// Retryable marks err as worth a retry for Transfer (network trouble, not
// a refusal).
func Retryable(err error) error {
	if err == nil {
		return nil
	}
	return retryable{err: err}
}

// retryableAfter is Retryable for a source that asked to be tried again
// after a while (Retry-After).
func retryableAfter(err error, after time.Duration) error {
	return retryable{err: err, after: after}
}

// retryWait is the wait the source asked for before the retry of err.
func retryWait(err error) time.Duration {
	var r retryable
	if errors.As(err, &r) {
		return r.after
	}
	return 0
}

func isRetryable(err error) bool {
	var r retryable
	return errors.As(err, &r)
}

// IsRetryable reports whether err (from Transfer, possibly wrapped) is
// trouble with the source that a later try may not meet: a cut or
// stalled connection, a server error, 429, an unreachable host.
func IsRetryable(err error) bool { return isRetryable(err) }

// Transfer copies the content that open serves into spec.Partial, resuming
// from what the partial already holds, and verifies size and sha256 before
// returning. It checks the free disk space first (ErrNoSpace). On a sha256
// or size mismatch it deletes the partial and returns ErrChecksum. When ctx
// is cancelled or the source fails, the partial stays for a later resume.
// Transfer must not run twice at once on the same partial (the caller
// serialises per file).
func Transfer(ctx context.Context, open Opener, spec Spec) (Result, error) {
	spec.SHA256 = strings.ToLower(spec.SHA256)
	if spec.SHA256 != "" && !sha256RE().MatchString(spec.SHA256) {
		return Result{}, fmt.Errorf("%w: expected sha256 %q is not 64 hex digits", ErrChecksum, spec.SHA256)
	}
	if spec.Partial == "" || spec.Size < 0 {
		return Result{}, fmt.Errorf("hf: transfer needs a partial path and a non-negative size")
	}
	if spec.MaxSize > 0 && spec.Size > spec.MaxSize {
		return Result{}, fmt.Errorf("%w: %d bytes, the limit is %d", ErrTooLarge, spec.Size, spec.MaxSize)
	}
	if spec.ProgressInterval <= 0 {
		spec.ProgressInterval = DefaultProgressInterval
	}
	if spec.RetryBackoff <= 0 {
		spec.RetryBackoff = defaultRetryBackoff
	}
	if spec.IdleTimeout <= 0 {
		spec.IdleTimeout = DefaultIdleTimeout
	}
	if spec.MinBytes == 0 {
		spec.MinBytes = DefaultMinBytes
	}
	if spec.RateWindow <= 0 {
		spec.RateWindow = DefaultRateWindow
	}
	dir := filepath.Dir(spec.Partial)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Result{}, fmt.Errorf("hf: %w", err)
	}
	f, st, err := openPartial(spec)
	if err != nil {
		return Result{}, err
	}
	defer f.Close()
	t := &transfer{f: f, spec: spec, h: sha256.New(), n: st.Size(), total: spec.Size, began: time.Now()}
	if spec.Size > 0 && t.n > spec.Size {
		if err := t.restart(); err != nil {
			return Result{}, err
		}
	}
	if err := t.checkSpace(); err != nil {
		return Result{}, err
	}
	// Hash what an earlier attempt left, so the final sum covers the file.
	if t.n > 0 {
		if _, err := io.Copy(t.h, ctxReader{ctx, io.NewSectionReader(f, 0, t.n)}); err != nil {
			return Result{}, fmt.Errorf("hf: reading partial: %w", err)
		}
	}
	t.resumed = t.n
	if spec.Size == 0 || t.n < spec.Size {
		backoff := spec.RetryBackoff
		for attempt := 0; ; attempt++ {
			err := t.once(ctx, open)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return Result{}, t.interrupted(ctx)
			}
			if !isRetryable(err) || attempt >= spec.Retries {
				if _, serr := os.Stat(spec.Partial); serr != nil {
					return Result{}, err // deleted: nothing kept
				}
				if t.n == 0 {
					// Nothing to resume: no empty partial is left behind,
					// and the message does not promise one.
					t.discard()
					return Result{}, err
				}
				return Result{}, fmt.Errorf("%w (%d bytes kept in %s for a resume)", err, t.n, spec.Partial)
			}
			if spec.Retrying != nil {
				spec.Retrying(err)
			}
			select {
			case <-ctx.Done():
				return Result{}, t.interrupted(ctx)
			case <-time.After(max(backoff, retryWait(err))):
			}
			backoff *= 2
		}
	}
	t.report(t.n, true)
	if t.total > 0 && t.n != t.total {
		t.discard()
		return Result{}, fmt.Errorf("%w: got %d bytes, expected %d; partial deleted", ErrChecksum, t.n, t.total)
	}
	sum := hex.EncodeToString(t.h.Sum(nil))
	if spec.SHA256 != "" && sum != spec.SHA256 {
		t.discard()
		return Result{}, fmt.Errorf("%w: sha256 %s, expected %s; partial deleted", ErrChecksum, sum, spec.SHA256)
	}
	if err := f.Sync(); err != nil {
		return Result{}, fmt.Errorf("hf: %w", err)
	}
	// Complete: the caller moves the partial into place; its validator
	// has served.
	_ = dropValidator(spec.Partial)
	return Result{Path: spec.Partial, Size: t.n, SHA256: sum, Resumed: t.resumed}, nil
}

// openPartial opens (creating) spec.Partial. A partial that is a hard
// link to another file (a catalog links a copy of the same content it
// already holds) is written and truncated by nothing: unless it is
// already the whole file, its name is removed and a new, empty file takes
// it, so a source of another size, or one that ignores ranges, cannot
// change the other file through the shared inode.
func openPartial(spec Spec) (*os.File, os.FileInfo, error) {
	for fresh := false; ; fresh = true {
		f, err := os.OpenFile(spec.Partial, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, nil, fmt.Errorf("hf: %w", err)
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("hf: %w", err)
		}
		if fresh || linkCount(st) <= 1 || (spec.Size > 0 && st.Size() == spec.Size) {
			return f, st, nil
		}
		f.Close()
		if err := os.Remove(spec.Partial); err != nil {
			return nil, nil, fmt.Errorf("hf: unlinking a linked partial: %w", err)
		}
		if err := dropValidator(spec.Partial); err != nil {
			return nil, nil, fmt.Errorf("hf: %w", err)
		}
	}
}

// ctxReader stops reading once ctx is done (re-hashing a partial of many
// GB takes seconds).
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

type transfer struct {
	f       *os.File
	spec    Spec
	h       hash.Hash
	n       int64 // bytes in the partial (and hashed)
	total   int64 // expected size, 0 unknown
	resumed int64
	began   time.Time
	lastRep time.Time
	recv    atomic.Int64 // bytes read from sources, for watchRate
}

func (t *transfer) restart() error {
	// The old version's validator goes first and the truncation is
	// synced before a new one is written: a crash never leaves the old
	// bytes with the new version's validator.
	if err := dropValidator(t.spec.Partial); err != nil {
		return fmt.Errorf("hf: %w", err)
	}
	if err := t.f.Truncate(0); err != nil {
		return fmt.Errorf("hf: %w", err)
	}
	if err := t.f.Sync(); err != nil {
		return fmt.Errorf("hf: %w", err)
	}
	t.n, t.resumed = 0, 0
	t.h.Reset()
	return nil
}

// interrupted is the error of a transfer whose ctx ended: what it keeps
// for a resume, or, with nothing received, that it keeps nothing.
func (t *transfer) interrupted(ctx context.Context) error {
	if t.n == 0 {
		t.discard()
		return fmt.Errorf("hf: download interrupted before its first byte: %w", ctx.Err())
	}
	return fmt.Errorf("hf: download interrupted, %d bytes kept in %s: %w", t.n, t.spec.Partial, ctx.Err())
}

func (t *transfer) discard() {
	t.f.Close()
	os.Remove(t.spec.Partial)
	_ = dropValidator(t.spec.Partial)
}

func (t *transfer) checkSpace() error {
	if t.total <= 0 || t.n >= t.total {
		return nil
	}
	need := uint64(t.total-t.n) + spaceReserve
	free, ok, err := freeBytes(filepath.Dir(t.spec.Partial))
	if err != nil || !ok {
		return err
	}
	if free < need {
		return fmt.Errorf("%w: %d bytes to download (+%d reserve), %d free in %s", ErrNoSpace, t.total-t.n, spaceReserve, free, filepath.Dir(t.spec.Partial))
	}
	return nil
}

// once opens the source at t.n and copies until EOF or an error.
func (t *transfer) once(ctx context.Context, open Opener) (err error) {
	// The attempt has its own context so a stall can abort the request (and
	// unblock a Read) without cancelling the caller's ctx.
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	idle := time.AfterFunc(t.spec.IdleTimeout, func() {
		cancel(fmt.Errorf("%w: nothing received within the idle timeout (%s)", ErrStalled, t.spec.IdleTimeout))
	})
	defer idle.Stop()
	defer func() {
		if cause := context.Cause(actx); err != nil && ctx.Err() == nil && errors.Is(cause, ErrStalled) {
			err = Retryable(fmt.Errorf("%w (at %d bytes)", cause, t.n))
		}
	}()
	if t.n > 0 {
		if v := loadValidator(t.spec.Partial); v != "" {
			actx = withIfRange(actx, v)
		}
	}
	body, start, total, err := open(actx, t.n)
	if err != nil {
		return err
	}
	defer body.Close()
	if start != t.n {
		if start != 0 {
			return fmt.Errorf("%w: asked for offset %d, got %d", ErrBadRange, t.n, start)
		}
		// The source ignored the range, or its file changed (If-Range):
		// start over cleanly.
		if err := t.restart(); err != nil {
			return err
		}
	}
	if start == 0 {
		// Before the first byte is written: a resume must know which
		// version the partial holds.
		if err := keepValidator(t.spec.Partial, body); err != nil {
			return fmt.Errorf("hf: %w", err)
		}
	}
	if total > 0 {
		if t.total > 0 && total != t.total {
			return fmt.Errorf("%w: source has %d bytes, expected %d", ErrChecksum, total, t.total)
		}
		if t.total == 0 {
			if t.spec.MaxSize > 0 && total > t.spec.MaxSize {
				t.discard()
				return fmt.Errorf("%w: the source has %d bytes, the limit is %d", ErrTooLarge, total, t.spec.MaxSize)
			}
			t.total = total
			if err := t.checkSpace(); err != nil {
				return err
			}
		}
	}
	if t.n == 0 && t.spec.CheckHead != nil {
		head := make([]byte, t.spec.HeadSize)
		k, rerr := readHead(body, head)
		if rerr != nil && rerr != io.EOF {
			// A cut connection, not a short file.
			return Retryable(fmt.Errorf("hf: reading the first bytes: %w", rerr))
		}
		if k < len(head) && t.total > int64(k) {
			// The source announced more: it was cut, the file is not short.
			return Retryable(fmt.Errorf("hf: the source ended after %d of %d bytes: %w", k, t.total, io.ErrUnexpectedEOF))
		}
		if err := t.spec.CheckHead(head[:k]); err != nil {
			t.discard()
			return err
		}
		body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(head[:k]), body), body}
	}
	if _, err := t.f.Seek(t.n, io.SeekStart); err != nil {
		return fmt.Errorf("hf: %w", err)
	}
	defer t.watchRate(cancel)()
	return t.copyBody(ctx, body, idle)
}

// watchRate ends the attempt (cancel, with ErrStalled) when fewer than
// spec.MinBytes arrive in a spec.RateWindow; the returned func stops it.
func (t *transfer) watchRate(cancel context.CancelCauseFunc) func() {
	return minrate.Watch(&t.recv, t.spec.MinBytes, t.spec.RateWindow, func(moved int64) {
		cancel(fmt.Errorf("%w: %d bytes in %s, fewer than the %d a transfer must move", ErrStalled, moved, t.spec.RateWindow, t.spec.MinBytes))
	})
}

// readHead fills head from r like io.ReadFull, but returns r's own error:
// io.EOF only when the source ended cleanly (a short file), anything else
// (io.ErrUnexpectedEOF from a cut HTTP body) as it came.
func readHead(r io.Reader, head []byte) (int, error) {
	k := 0
	for k < len(head) {
		n, err := r.Read(head[k:])
		k += n
		if err != nil {
			return k, err
		}
	}
	return k, nil
}

// report calls spec.Progress with done bytes received.
func (t *transfer) report(done int64, final bool) {
	if t.spec.Progress == nil {
		return
	}
	now := time.Now()
	if !final && now.Sub(t.lastRep) < t.spec.ProgressInterval {
		return
	}
	t.lastRep = now
	p := Progress{Done: done, Total: -1, Resumed: t.resumed, ETA: -1}
	if t.total > 0 {
		p.Total = t.total
	}
	if el := now.Sub(t.began).Seconds(); el > 0 {
		p.Rate = float64(done-t.resumed) / el
	}
	if p.Total >= 0 && p.Rate > 0 {
		p.ETA = time.Duration(float64(p.Total-p.Done) / p.Rate * float64(time.Second))
	}
	t.spec.Progress(p)
}

// URLOpener returns an Opener that GETs target, asking for "Range:
// bytes=N-" when resuming. The Authorization header is sent only when target
// is on the Hub endpoint's host, and dropped on redirects to other hosts.
// A 206 answer must carry a Content-Range starting at the offset; a 200
// answer means the server ignored the range (Transfer restarts cleanly).
func (c *Client) URLOpener(target string) Opener {
	return func(ctx context.Context, offset int64) (io.ReadCloser, int64, int64, error) {
		return c.openRange(ctx, target, offset, true)
	}
}

func (c *Client) openRange(ctx context.Context, target string, offset int64, retry416 bool) (io.ReadCloser, int64, int64, error) {
	hdr := http.Header{"Accept-Encoding": {"identity"}}
	ifRange := ""
	if offset > 0 {
		hdr.Set("Range", "bytes="+strconv.FormatInt(offset, 10)+"-")
		if ifRange = ifRangeFrom(ctx); ifRange != "" {
			hdr.Set("If-Range", ifRange)
		}
	}
	resp, err := c.do(ctx, http.MethodGet, target, hdr, true)
	if err != nil {
		if ctx.Err() != nil || errors.Is(err, ErrRedirect) || errors.Is(err, ErrHTTP) {
			// Cancelled, a refused redirect or one too many (a loop):
			// the next try would meet the same.
			return nil, 0, 0, err
		}
		return nil, 0, 0, Retryable(err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		total := resp.ContentLength
		if total < 0 {
			total = 0
		}
		return validatedBody{resp.Body, responseValidator(resp)}, 0, total, nil
	case http.StatusPartialContent:
		start, _, total, err := parseContentRange(resp.Header.Get("Content-Range"))
		if err != nil || start != offset {
			resp.Body.Close()
			return nil, 0, 0, fmt.Errorf("%w: asked for bytes=%d-, got Content-Range %q", ErrBadRange, offset, resp.Header.Get("Content-Range"))
		}
		if otherVersion(ifRange, resp) {
			// A server that ignores If-Range but says its file changed:
			// the range is of another file. Read it whole.
			resp.Body.Close()
			return c.openRange(withIfRange(ctx, ""), target, 0, false)
		}
		return resp.Body, start, total, nil
	case http.StatusRequestedRangeNotSatisfiable:
		resp.Body.Close()
		// "bytes */T": complete when the partial already has T bytes.
		cr := resp.Header.Get("Content-Range")
		if t, ok := strings.CutPrefix(cr, "bytes */"); ok {
			if n, err := strconv.ParseInt(t, 10, 64); err == nil && n == offset {
				return io.NopCloser(strings.NewReader("")), offset, n, nil
			}
		}
		if retry416 && offset > 0 {
			return c.openRange(ctx, target, 0, false)
		}
		return nil, 0, 0, fmt.Errorf("%w: HTTP 416 for bytes=%d- (Content-Range %q)", ErrBadRange, offset, cr)
	}
	err = c.checkStatus(resp, redact(target))
	resp.Body.Close()
	if !retryableStatus(resp.StatusCode) {
		return nil, 0, 0, err
	}
	_, err = retryLater(resp, err, "the server", maxRetryAfter)
	return nil, 0, 0, err
}

// parseContentRange parses "bytes FIRST-LAST/TOTAL" (TOTAL may be "*",
// returned as 0).
func parseContentRange(s string) (first, last, total int64, err error) {
	bad := fmt.Errorf("%w: Content-Range %q", ErrBadRange, s)
	rest, ok := strings.CutPrefix(s, "bytes ")
	if !ok {
		return 0, 0, 0, bad
	}
	rng, tot, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, 0, 0, bad
	}
	a, b, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, 0, bad
	}
	if first, err = strconv.ParseInt(a, 10, 64); err != nil || first < 0 {
		return 0, 0, 0, bad
	}
	if last, err = strconv.ParseInt(b, 10, 64); err != nil || last < first {
		return 0, 0, 0, bad
	}
	if tot != "*" {
		if total, err = strconv.ParseInt(tot, 10, 64); err != nil || total <= last {
			return 0, 0, 0, bad
		}
	}
	return first, last, total, nil
}

// DownloadFile downloads a repo file (from ListFiles or PickModel) through
// the resolve endpoint into spec.Partial, with f's size and LFS sha256 as
// the expectations unless spec sets them. Every (re)try goes through the
// Hub again, so an expired signed CDN URL is never reused.
func (c *Client) DownloadFile(ctx context.Context, repo, revision string, f File, spec Spec) (Result, error) {
	if err := ValidateRepoID(repo); err != nil {
		return Result{}, err
	}
	if err := validateRevision(revision); err != nil {
		return Result{}, err
	}
	if err := ValidatePath(f.Path); err != nil {
		return Result{}, err
	}
	if spec.Size == 0 && f.Size > 0 {
		spec.Size = f.Size
	}
	if spec.SHA256 == "" {
		spec.SHA256 = f.SHA256
	}
	return Transfer(ctx, c.URLOpener(c.ResolveURL(repo, revision, f.Path)), spec)
}
