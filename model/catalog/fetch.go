package catalog

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/rbee-project/rbee/model/builtin"
	"github.com/rbee-project/rbee/model/gguf"
	"github.com/rbee-project/rbee/model/hf"
)

// PeerSource finds a file on the other nodes of the cluster. The node
// implements it over libp2p and the registry.
type PeerSource interface {
	// OpenRange opens the file with this sha256 on some peer that has it,
	// starting at offset, and returns its total size. The body must start
	// exactly at offset. Any error means "not from a peer now"; Fetch then
	// goes to the ref's origin (resuming what the peer delivered).
	OpenRange(ctx context.Context, sha256 string, offset int64) (body io.ReadCloser, size int64, err error)
}

// BadCopyReporter is a PeerSource that can be told that the copy of a
// sha256 it served last failed its check or stalled (hf.ErrStalled), so
// that its next OpenRange for it asks another peer.
type BadCopyReporter interface {
	BadCopy(sha256 string)
}

// maxPeerCopies is how many peer copies of one file a fetch tries when the
// copies fail their check (each from another holder).
const maxPeerCopies = 3

// Progress is one progress report of Fetch.
type Progress struct {
	hf.Progress
	// ID is the entry being fetched.
	ID string `json:"id"`
	// Source is where the bytes are coming from right now (peer, hf, url,
	// local, builtin).
	Source Source `json:"source"`
	// Merging is set while a split model's parts are merged into one file
	// (each part after its download, so the download's reports and these
	// alternate): Done and Total are bytes of the merged file, written
	// locally, not downloaded.
	Merging bool `json:"merging,omitempty"`
}

// FetchOptions are the dependencies and knobs of one Fetch.
type FetchOptions struct {
	// HF is the Hub client; needed for hf refs. Its http.Client also serves
	// URL downloads (the token only ever goes to the Hub host). nil makes
	// URL downloads use a client for the public Hub.
	HF *hf.Client
	// Peers, when set, is asked first for any file whose sha256 is known
	// before downloading (hf refs, URLs with #sha256=).
	Peers PeerSource
	// Revision of hf refs; "" means hf.DefaultRevision.
	Revision string
	// Progress receives throttled progress reports (see hf.Spec).
	Progress func(Progress)
	// ProgressInterval defaults to hf.DefaultProgressInterval.
	ProgressInterval time.Duration
	// Retries per source after a cut connection; 0 means hf.DefaultRetries,
	// negative means none.
	Retries int
	// LinkLocal hard-links local files into the catalog instead of copying
	// them (saves space; later edits of the original would then change the
	// catalog's copy, which a mismatching sha256 does not catch).
	LinkLocal bool
	// MaxSize, when > 0, caps the model file (see hf.Spec.MaxSize).
	MaxSize int64
}

// target is a resolved ref: what to store and where to get it.
type target struct {
	id, ref, file string
	sha           string // "" when unknown before download
	size          int64  // 0 when unknown
	source        Source
	origin        hf.Opener
	link          string // local file to try to hard-link (LinkLocal)
	// parts, for a split model, are its parts in order (origin and size
	// unused): they are fetched and merged into file (split.go).
	parts []splitPart
	// merged is the Parts of a peer copy's entry: the file was merged from
	// that many parts on the node it comes from.
	merged int
}

// Fetch brings the model of ref into the catalog and returns its entry;
// the node's model_download calls it. In order:
//
//  1. resolve the ref (hf: the tree API or a HEAD; url; local; builtin) to
//     an id (IDFor), a file name, and the sha256 and size when knowable;
//  2. if the id is present with that sha256 (or, sha256 unknown, at all),
//     return it; a different sha256 is ErrExists;
//  3. if another entry has the sha256, copy or hard-link its file;
//  4. if opts.Peers is set and the sha256 is known, copy from a peer (ranged,
//     resumable, verified), falling back to step 5 on any failure, keeping
//     what arrived (the content is the same, so the origin resumes it);
//  5. download from the origin into <dir>/.partial/<id>[-<sha prefix>].part
//     (resume, sha256 check, disk-space check, retries, progress);
//  6. Add the verified file (ErrNotGGUF deletes it).
//
// A split model (gguf-split parts, named by hf:ORG/REPO[:QUANT] or its
// first part: hf:, a URL or a local path) skips steps 3-4: its parts are
// downloaded (or, local, read in place) and merged into the one file step
// 6 adds, each downloaded part removed once merged (split.go).
//
// Cancelling ctx stops the transfer and keeps the partial for a later
// Fetch. Concurrent Fetches of the same file wait for each other.
func (c *Catalog) Fetch(ctx context.Context, ref Ref, opts FetchOptions) (Entry, error) {
	t, err := c.resolve(ctx, ref, opts)
	if err != nil {
		return Entry{}, err
	}
	return c.fetchTarget(ctx, t, opts)
}

// PeerCopy names a file another node holds: what the registry records of
// it (id, the reference it came from, file name, sha256, size, and how
// many split parts it was merged from, which the copy's entry keeps).
type PeerCopy struct {
	ID, Ref, FileName, SHA256 string
	Size                      int64
	Parts                     int
}

// FetchPeer copies a file that another node holds from opts.Peers, under
// that node's id and reference: no origin (hub, URL) is asked, so a LAN
// without internet can copy any model one node has. The copy is verified
// against the sha256 like every fetch.
func (c *Catalog) FetchPeer(ctx context.Context, pc PeerCopy, opts FetchOptions) (Entry, error) {
	if opts.Peers == nil {
		return Entry{}, fmt.Errorf("%w: a peer copy needs a peer source", ErrBadRef)
	}
	if !isSHA256(pc.SHA256) {
		return Entry{}, fmt.Errorf("%w: a peer copy needs the file's sha256", ErrBadRef)
	}
	if pc.Parts < 0 || pc.Parts > gguf.MaxSplitParts {
		return Entry{}, fmt.Errorf("%w: a peer copy of %d parts (0..%d)", ErrBadRef, pc.Parts, gguf.MaxSplitParts)
	}
	t := target{id: pc.ID, ref: pc.Ref, file: pc.FileName, sha: pc.SHA256, size: pc.Size, source: SourcePeer,
		origin: peerOpener(opts.Peers, pc.SHA256), merged: pc.Parts}
	if t.ref == "" {
		t.ref = "peer:" + pc.ID
	}
	return c.fetchTarget(ctx, t, opts)
}

// fetchTarget runs steps 2-6 of Fetch for a resolved target.
func (c *Catalog) fetchTarget(ctx context.Context, t target, opts FetchOptions) (Entry, error) {
	if err := ValidateID(t.id); err != nil {
		return Entry{}, err
	}
	if err := ValidateFileName(t.file); err != nil {
		return Entry{}, err
	}
	// A partial belongs to one content: its sha256 when known, else its
	// exact source (two URLs of one host and file name share an id, and
	// one must never resume the other's bytes).
	partName := t.id
	if t.sha != "" {
		partName += "-" + t.sha[:16]
	} else {
		sum := sha256.Sum256([]byte(t.ref))
		partName += "-ref-" + hex.EncodeToString(sum[:8])
	}
	unlock, err := c.lockPartial(ctx, partName)
	if err != nil {
		return Entry{}, err
	}
	defer unlock()
	c.sweepPartials()
	if e, ok, err := c.existing(t); ok || err != nil {
		return e, err
	}
	if len(t.parts) > 0 {
		return c.fetchSplit(ctx, t, opts, partName)
	}
	partial := filepath.Join(c.dir, PartialDir, partName+".part")
	spec := func(src Source) hf.Spec {
		// Every source must start with a GGUF header: a non-model stops at
		// its first bytes, before it is stored or downloaded whole.
		s := hf.Spec{Partial: partial, Size: t.size, SHA256: t.sha, ProgressInterval: opts.ProgressInterval,
			MaxSize: opts.MaxSize, CheckHead: checkHead, HeadSize: gguf.HeaderSize, Retries: retries(opts)}
		if opts.Progress != nil {
			s.Progress = func(p hf.Progress) { opts.Progress(Progress{Progress: p, ID: t.id, Source: src}) }
		}
		return s
	}

	// 3. Same content already here under another id.
	if t.sha != "" {
		if other, ok := c.FindBySHA256(t.sha); ok {
			tryLink(other.Path, partial)
			s := spec(SourceLocal)
			if s.Size == 0 {
				// Known here: the link is then already the whole file
				// (Transfer writes through no link that is not).
				s.Size = other.Size
			}
			res, err := hf.Transfer(ctx, fileOpener(other.Path), s)
			if err == nil {
				return c.addFetched(res, t, t.source)
			}
			if ctx.Err() != nil {
				return Entry{}, err
			}
			c.log.Warn("catalog: copying an existing entry failed; downloading", "id", t.id, "from", other.ID, "err", err)
		}
	}
	// 4. A peer.
	if opts.Peers != nil && t.sha != "" && t.source != SourceBuiltin && t.source != SourceLocal && t.source != SourcePeer {
		res, err := fromPeers(ctx, opts.Peers, t.sha, spec(SourcePeer))
		if err == nil {
			return c.addFetched(res, t, SourcePeer)
		}
		if ctx.Err() != nil {
			return Entry{}, err
		}
		c.log.Info("catalog: no peer copy, using the origin", "id", t.id, "err", err)
	}
	// 5. The origin.
	switch {
	case t.link != "":
		tryLink(t.link, partial)
	case t.source == SourceLocal:
		// A local copy is cheap to redo, and a stale partial of another file
		// with the same name must not be "resumed" (its sha256 is unknown).
		os.Remove(partial)
	}
	var res hf.Result
	if t.source == SourcePeer {
		res, err = fromPeers(ctx, opts.Peers, t.sha, spec(t.source))
	} else {
		res, err = hf.Transfer(ctx, t.origin, spec(t.source))
	}
	if err != nil {
		// A partial with nothing in it resumes nothing.
		if st, serr := os.Stat(partial); serr == nil && st.Size() == 0 {
			os.Remove(partial)
			os.Remove(partial + hf.ValidatorSuffix)
		}
		return Entry{}, fmt.Errorf("catalog: fetching %s: %w", t.ref, err)
	}
	return c.addFetched(res, t, t.source)
}

// fromPeers copies sha from peers: a copy that fails its check (sha256,
// size) or stalls is reported to a BadCopyReporter and tried again from
// another holder, resuming what arrived, up to maxPeerCopies copies. A
// stall is reported before the transfer's own retry, so the retry goes to
// another holder instead of waiting on the same one again.
func fromPeers(ctx context.Context, peers PeerSource, sha string, spec hf.Spec) (hf.Result, error) {
	bad, tell := peers.(BadCopyReporter)
	if tell {
		spec.Retrying = func(err error) {
			if errors.Is(err, hf.ErrStalled) {
				bad.BadCopy(sha)
			}
		}
	}
	for n := 1; ; n++ {
		res, err := hf.Transfer(ctx, peerOpener(peers, sha), spec)
		if err == nil || ctx.Err() != nil || !tell || n >= maxPeerCopies ||
			!(errors.Is(err, hf.ErrChecksum) || errors.Is(err, hf.ErrStalled)) {
			return res, err
		}
		bad.BadCopy(sha)
	}
}

func (c *Catalog) addFetched(res hf.Result, t target, src Source) (Entry, error) {
	e, err := c.Add(res.Path, NewEntry{ID: t.id, Ref: t.ref, FileName: t.file, SHA256: res.SHA256, Source: src, Parts: t.merged})
	if errors.Is(err, ErrNotGGUF) {
		os.Remove(res.Path)
		// The download's file name in .partial is ours, not the user's.
		msg := strings.ReplaceAll(err.Error(), res.Path, t.file)
		return Entry{}, fmt.Errorf("catalog: %s: %w (%s)", t.ref, ErrNotGGUF, strings.TrimPrefix(msg, ErrNotGGUF.Error()+": "))
	}
	return e, err
}

// existing returns the entry that already satisfies t, if any.
func (c *Catalog) existing(t target) (Entry, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return Entry{}, false, ErrClosed
	}
	e, ok := c.entries[t.id]
	if !ok {
		return Entry{}, false, nil
	}
	switch {
	case t.sha == e.SHA256:
		return e, true, nil
	case t.sha == "" && t.ref == e.Ref:
		return e, true, nil
	case t.sha == "":
		// Nothing says the two are the same file.
		return Entry{}, false, fmt.Errorf("%w: %q came from %s, not %s; delete it first (or name the file's sha256)", ErrExists, t.id, e.Ref, t.ref)
	}
	return Entry{}, false, fmt.Errorf("%w: %q has sha256 %s but %s now has %s; delete it first", ErrExists, t.id, e.SHA256, t.ref, t.sha)
}

// lockPartial serialises fetches of one partial file.
func (c *Catalog) lockPartial(ctx context.Context, name string) (func(), error) {
	for {
		c.fmu.Lock()
		ch, busy := c.inflight[name]
		if !busy {
			ch = make(chan struct{})
			c.inflight[name] = ch
			c.fmu.Unlock()
			return func() {
				c.fmu.Lock()
				delete(c.inflight, name)
				c.fmu.Unlock()
				close(ch)
			}, nil
		}
		c.fmu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (c *Catalog) resolve(ctx context.Context, ref Ref, opts FetchOptions) (target, error) {
	switch ref.Source {
	case SourceBuiltin:
		m, err := builtin.Lookup(ref.Name)
		if err != nil {
			return target{}, fmt.Errorf("%w: %v", ErrBadRef, err)
		}
		return target{id: IDFor(ref, m.FileName), ref: ref.String(), file: m.FileName, sha: m.SHA256, size: m.Size,
			source: SourceBuiltin, origin: builtinOpener(m.Name)}, nil

	case SourceLocal:
		st, err := os.Stat(ref.Path)
		if err != nil {
			hint := ""
			if errors.Is(err, os.ErrNotExist) && !filepath.IsAbs(ref.Path) {
				hint = " (for a Hugging Face repo write hf:" + filepath.ToSlash(ref.Path) + ")"
			}
			return target{}, fmt.Errorf("catalog: local model %s: %w%s", ref.Path, err, hint)
		}
		if !st.Mode().IsRegular() {
			return target{}, fmt.Errorf("%w: local model %s is not a regular file", ErrBadRef, ref.Path)
		}
		if err := checkLocalHead(ref.Path); err != nil {
			return target{}, fmt.Errorf("catalog: local model %s: %w", ref.Path, err)
		}
		// The whole file parses (metadata, tensor table, tensor data within
		// the file) before it is copied: a truncated model stops here, not
		// after a copy of all of it.
		f, err := gguf.Open(ref.Path)
		if err != nil {
			// gguf's errors name the file already.
			return target{}, fmt.Errorf("%w: local model: %v", ErrNotGGUF, err)
		}
		parts := f.SplitCount()
		f.Close()
		abs, err := filepath.Abs(ref.Path)
		if err != nil {
			return target{}, fmt.Errorf("catalog: %w", err)
		}
		if parts > 1 {
			return localSplitTarget(ref, abs)
		}
		name := filepath.Base(abs)
		t := target{id: IDFor(ref, name), ref: abs, file: name, size: st.Size(), source: SourceLocal, origin: fileOpener(abs)}
		if opts.LinkLocal {
			t.link = abs
		}
		return t, nil

	case SourceURL:
		u, err := url.Parse(ref.URL)
		if err != nil {
			return target{}, fmt.Errorf("%w: %v", ErrBadRef, err)
		}
		name, err := urlFileName(u)
		if err != nil {
			return target{}, fmt.Errorf("%w: %v", ErrBadRef, err)
		}
		client := opts.HF
		if client == nil {
			if client, err = hf.New(hf.DefaultConfig()); err != nil {
				return target{}, err
			}
		}
		if _, _, n, ok := gguf.ParseSplitName(name); ok && n > 1 {
			return urlSplitTarget(ref, u, client)
		}
		return target{id: IDFor(ref, name), ref: ref.String(), file: name, sha: ref.SHA256, source: SourceURL,
			origin: client.URLOpener(ref.URL)}, nil

	case SourceHF:
		if opts.HF == nil {
			return target{}, fmt.Errorf("catalog: %s needs a Hugging Face client (FetchOptions.HF)", ref)
		}
		rev := opts.Revision
		if rev == "" {
			rev = hf.DefaultRevision
		}
		var f hf.File
		if ref.File != "" && !hf.IsSplitShard(ref.File) {
			m, err := opts.HF.FileMetadata(ctx, ref.Repo, rev, ref.File)
			if err != nil {
				return target{}, err
			}
			f = hf.File{Path: ref.File, SHA256: m.SHA256}
			if m.Size > 0 {
				f.Size = m.Size
			}
		} else {
			files, err := opts.HF.ListFiles(ctx, ref.Repo, rev)
			if err != nil {
				return target{}, err
			}
			// A split part is looked up in the listing, which has every
			// part's size and sha256.
			picked, err := hf.PickModel(files, ref.File, ref.Quant)
			if err != nil {
				return target{}, fmt.Errorf("catalog: %s: %w", ref, err)
			}
			if len(picked) > 1 {
				return hfSplitTarget(ref, rev, picked, opts.HF)
			}
			f = picked[0]
		}
		name := path.Base(f.Path)
		exact := Ref{Source: SourceHF, Repo: ref.Repo, File: f.Path}
		return target{id: IDFor(ref, f.Path), ref: exact.String(), file: name, sha: f.SHA256, size: f.Size, source: SourceHF,
			origin: opts.HF.URLOpener(opts.HF.ResolveURL(ref.Repo, rev, f.Path))}, nil
	}
	return target{}, fmt.Errorf("%w: empty reference", ErrBadRef)
}

// tryLink hard-links src to the partial path when no partial exists yet;
// failure (other file system, no permission) just means a copy.
// checkHead is hf.Spec.CheckHead for model files.
func checkHead(head []byte) error {
	if err := gguf.CheckHeader(head); err != nil {
		return fmt.Errorf("%w: %v", ErrNotGGUF, err)
	}
	return nil
}

// checkLocalHead reads a local file's first bytes and checks them: nothing
// of a file that is not a model is copied (and none of its bytes appear
// in the error).
func checkLocalHead(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	head := make([]byte, gguf.HeaderSize)
	k, err := io.ReadFull(f, head)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return err
	}
	return checkHead(head[:k])
}

func tryLink(src, partial string) {
	if !hf.LinksCounted() {
		return // the transfer could not tell the link from a partial of its own
	}
	if _, err := os.Lstat(partial); err == nil {
		return
	}
	_ = os.MkdirAll(filepath.Dir(partial), 0o755)
	_ = os.Link(src, partial)
}

func fileOpener(p string) hf.Opener {
	return func(_ context.Context, off int64) (io.ReadCloser, int64, int64, error) {
		f, err := os.Open(p)
		if err != nil {
			return nil, 0, 0, fmt.Errorf("catalog: %w", err)
		}
		st, err := f.Stat()
		if err == nil {
			_, err = f.Seek(off, io.SeekStart)
		}
		if err != nil {
			f.Close()
			return nil, 0, 0, fmt.Errorf("catalog: %w", err)
		}
		return f, off, st.Size(), nil
	}
}

func builtinOpener(name string) hf.Opener {
	return func(_ context.Context, off int64) (io.ReadCloser, int64, int64, error) {
		r, size, _, err := builtin.Open(name)
		if err != nil {
			return nil, 0, 0, err
		}
		if _, err := io.CopyN(io.Discard, r, off); err != nil {
			r.Close()
			return nil, 0, 0, fmt.Errorf("catalog: builtin %s: offset %d: %w", name, off, err)
		}
		return r, off, size, nil
	}
}

func peerOpener(p PeerSource, sha string) hf.Opener {
	return func(ctx context.Context, off int64) (io.ReadCloser, int64, int64, error) {
		body, size, err := p.OpenRange(ctx, sha, off)
		if err != nil {
			return nil, 0, 0, fmt.Errorf("catalog: peer: %w", err)
		}
		if size <= 0 || off > size {
			body.Close()
			return nil, 0, 0, fmt.Errorf("catalog: peer reports size %d for offset %d", size, off)
		}
		return body, off, size, nil
	}
}
