package catalog

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"time"

	"github.com/rbee-project/rbee/model/gguf"
	"github.com/rbee-project/rbee/model/hf"
)

// Split models (gguf-split's PREFIX-00001-of-0000N.gguf sets) are merged
// when they are fetched: the catalog holds one ordinary GGUF per model, so
// workers (rbee's engine, llama-server), peer copies by sha256 and
// placement need nothing of their own for them. See DESIGN.md.

// mergeSuffix ends the file a merge writes in PartialDir: never resumed, it
// goes when its fetch ends and, left by a crash, with the next sweep.
const mergeSuffix = ".merge"

// splitPart is one part of a split set to fetch.
type splitPart struct {
	name   string // file name, for messages
	sha    string // the Hub's LFS sha256, "" when unknown
	size   int64  // 0 when unknown
	origin hf.Opener
	local  string // a local part, read in place
}

// hfSplitTarget is the target of a split set PickModel chose: one entry
// named after the set (PREFIX.gguf), whose ref is the first part's.
func hfSplitTarget(ref Ref, rev string, parts []hf.File, client *hf.Client) (target, error) {
	prefix, _, _, ok := gguf.ParseSplitName(parts[0].Path)
	if !ok {
		return target{}, fmt.Errorf("%w: %q is not named like a split model's first part", ErrBadRef, parts[0].Path)
	}
	exact := Ref{Source: SourceHF, Repo: ref.Repo, File: parts[0].Path}
	t := target{id: IDFor(ref, prefix+".gguf"), ref: exact.String(), file: path.Base(prefix) + ".gguf", source: SourceHF}
	for _, p := range parts {
		t.parts = append(t.parts, splitPart{name: path.Base(p.Path), sha: p.SHA256, size: p.Size,
			origin: client.URLOpener(client.ResolveURL(ref.Repo, rev, p.Path))})
	}
	return t, nil
}

// localSplitTarget is the target of a local file whose header says it is
// a part of a split model: its first part, with the others found next to
// it by name (each must be there).
func localSplitTarget(ref Ref, abs string) (target, error) {
	paths, err := gguf.SplitPaths(abs)
	if err != nil {
		return target{}, fmt.Errorf("%w: local model: %v", ErrNotGGUF, err)
	}
	prefix, _, _, _ := gguf.ParseSplitName(abs)
	t := target{id: IDFor(ref, filepath.Base(prefix)+".gguf"), ref: abs, file: filepath.Base(prefix) + ".gguf", source: SourceLocal}
	for i, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return target{}, fmt.Errorf("catalog: local model %s: part %d of %d: %w", abs, i+1, len(paths), err)
		}
		if !st.Mode().IsRegular() {
			return target{}, fmt.Errorf("%w: local model %s: part %d of %d, %s, is not a regular file", ErrBadRef, abs, i+1, len(paths), p)
		}
		t.parts = append(t.parts, splitPart{name: filepath.Base(p), size: st.Size(), local: p})
	}
	return t, nil
}

// fetchSplit fetches every part of t's set and merges them into one file
// that Add stores (fetchTarget's steps 5-6 for a split set; partName is
// the set's, locked by the caller). Each Hub part goes through its own
// resumable partial, verified with its sha256; the disk must hold the
// parts and the merged file together. The merged file's sha256 is
// computed as it is written; an error or a cancellation removes it
// (partials stay for a resume), and the parts' partials go once the entry
// is stored. A set whose parts do not make one model is ErrNotGGUF naming
// the part, and its downloaded parts are deleted (the Hub's bytes, as
// verified: fetching them again gives the same set).
func (c *Catalog) fetchSplit(ctx context.Context, t target, opts FetchOptions, partName string) (Entry, error) {
	n := len(t.parts)
	dir := filepath.Join(c.dir, PartialDir)
	partials := make([]string, n)
	var total, have int64
	for i, p := range t.parts {
		if p.local != "" {
			continue
		}
		name := partName + fmt.Sprintf("-%05d", i+1)
		if p.sha != "" {
			name = t.id + "-" + p.sha[:16]
		}
		unlock, err := c.lockPartial(ctx, name)
		if err != nil {
			return Entry{}, err
		}
		defer unlock()
		partials[i] = filepath.Join(dir, name+".part")
		total += p.size
		if st, err := os.Stat(partials[i]); err == nil && st.Size() <= p.size {
			have += st.Size()
		}
	}
	if opts.MaxSize > 0 && total > opts.MaxSize {
		return Entry{}, fmt.Errorf("catalog: %s: %w: its %d parts have %d bytes, the limit is %d", t.ref, hf.ErrTooLarge, n, total, opts.MaxSize)
	}
	// The parts still to download and the merged file, about as large as
	// the parts (checked exactly once they are here).
	if err := hf.CheckSpace(dir, total-have+total, fmt.Sprintf("%s (%d parts and the file they merge into)", t.ref, n)); err != nil {
		return Entry{}, err
	}
	var done, resumed int64
	for i, p := range t.parts {
		if p.local != "" {
			continue
		}
		spec := hf.Spec{Partial: partials[i], Size: p.size, SHA256: p.sha, ProgressInterval: opts.ProgressInterval,
			MaxSize: opts.MaxSize, CheckHead: checkHead, HeadSize: gguf.HeaderSize, Retries: retries(opts)}
		if opts.Progress != nil {
			before, resumedBefore := done, resumed
			spec.Progress = func(hp hf.Progress) {
				hp.Done += before
				hp.Resumed += resumedBefore
				hp.Total = total
				if hp.Rate > 0 && hp.Total > hp.Done {
					hp.ETA = time.Duration(float64(hp.Total-hp.Done) / hp.Rate * float64(time.Second))
				}
				opts.Progress(Progress{Progress: hp, ID: t.id, Source: t.source})
			}
		}
		res, err := hf.Transfer(ctx, p.origin, spec)
		if err != nil {
			return Entry{}, fmt.Errorf("catalog: fetching %s: part %d of %d, %s: %w", t.ref, i+1, n, p.name, err)
		}
		done += res.Size
		resumed += res.Resumed
	}
	e, err := c.mergeParts(ctx, t, opts, partName, partials)
	if err != nil {
		if errors.Is(err, ErrNotGGUF) {
			for _, p := range partials {
				if p != "" {
					os.Remove(p)
				}
			}
		}
		return Entry{}, err
	}
	for _, p := range partials {
		if p != "" {
			os.Remove(p)
		}
	}
	return e, nil
}

// mergeParts opens the parts (downloaded partials, or local files in
// place), merges them into PartialDir/<partName>.merge and Adds that.
func (c *Catalog) mergeParts(ctx context.Context, t target, opts FetchOptions, partName string, partials []string) (Entry, error) {
	n := len(t.parts)
	files := make([]*gguf.File, 0, n)
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for i, p := range t.parts {
		src := p.local
		if src == "" {
			src = partials[i]
		}
		f, err := gguf.Open(src)
		if err != nil {
			return Entry{}, fmt.Errorf("catalog: %s: %w: part %d of %d, %s: %v", t.ref, ErrNotGGUF, i+1, n, p.name, err)
		}
		files = append(files, f)
	}
	w, err := gguf.NewMergeWriter(files)
	if err != nil {
		return Entry{}, fmt.Errorf("catalog: %s: %w: the parts %s … %s do not make one model: %v", t.ref, ErrNotGGUF, t.parts[0].name, t.parts[n-1].name, err)
	}
	size, err := w.Size()
	if err != nil {
		return Entry{}, fmt.Errorf("catalog: %s: %w", t.ref, err)
	}
	if opts.MaxSize > 0 && size > opts.MaxSize {
		return Entry{}, fmt.Errorf("catalog: %s: %w: %d bytes merged, the limit is %d", t.ref, hf.ErrTooLarge, size, opts.MaxSize)
	}
	dir := filepath.Join(c.dir, PartialDir)
	if err := hf.CheckSpace(dir, size, "merging "+t.ref); err != nil {
		return Entry{}, err
	}
	out := filepath.Join(dir, partName+mergeSuffix)
	began := time.Now()
	sum, err := writeMerged(ctx, w, out, size, func(done int64) {
		if opts.Progress == nil {
			return
		}
		p := hf.Progress{Done: done, Total: size}
		if s := time.Since(began).Seconds(); s > 0 && done > 0 {
			p.Rate = float64(done) / s
			p.ETA = time.Duration(float64(size-done) / p.Rate * float64(time.Second))
		}
		opts.Progress(Progress{Progress: p, ID: t.id, Source: t.source, Merging: true})
	}, opts.ProgressInterval)
	if err != nil {
		os.Remove(out)
		return Entry{}, fmt.Errorf("catalog: merging %s: %w", t.ref, err)
	}
	e, err := c.Add(out, NewEntry{ID: t.id, Ref: t.ref, FileName: t.file, SHA256: sum, Source: t.source, Parts: n})
	if err != nil {
		os.Remove(out)
		return Entry{}, err
	}
	return e, nil
}

// writeMerged writes w to a new file at out, hashing what it writes, and
// fsyncs it; ctx stops it between writes. progress gets the bytes written
// at most every interval and at the end.
func writeMerged(ctx context.Context, w *gguf.Writer, out string, size int64, progress func(int64), interval time.Duration) (string, error) {
	os.Remove(out) // a merge is never resumed
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if interval <= 0 {
		interval = hf.DefaultProgressInterval
	}
	h := sha256.New()
	mw := &mergeSink{ctx: ctx, w: io.MultiWriter(f, h), progress: progress, interval: interval}
	n, err := w.WriteTo(mw)
	if err != nil {
		return "", err
	}
	if n != size {
		return "", fmt.Errorf("wrote %d bytes, expected %d", n, size)
	}
	progress(n)
	if err := f.Sync(); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), f.Close()
}

// mergeSink is the merge's writer: it stops when ctx ends and reports
// progress.
type mergeSink struct {
	ctx      context.Context
	w        io.Writer
	n        int64
	last     time.Time
	progress func(int64)
	interval time.Duration
}

func (s *mergeSink) Write(b []byte) (int, error) {
	if err := s.ctx.Err(); err != nil {
		return 0, err
	}
	k, err := s.w.Write(b)
	s.n += int64(k)
	if now := time.Now(); now.Sub(s.last) >= s.interval {
		s.last = now
		s.progress(s.n)
	}
	return k, err
}

// retries is hf.Spec.Retries for FetchOptions.Retries.
func retries(opts FetchOptions) int {
	switch {
	case opts.Retries == 0:
		return hf.DefaultRetries
	case opts.Retries > 0:
		return opts.Retries
	}
	return 0
}
