package catalog

import (
	"context"
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"math"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"time"

	"github.com/rbee-project/rbee/internal/atomicfile"
	"github.com/rbee-project/rbee/model/gguf"
	"github.com/rbee-project/rbee/model/hf"
)

// Split models (gguf-split's PREFIX-00001-of-0000N.gguf sets) are merged
// when they are fetched: the catalog holds one ordinary GGUF per model, so
// workers (rbee's engine, llama-server), peer copies by sha256 and
// placement need nothing of their own for them. See DESIGN.md.

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

// urlSplitTarget is the target of a URL whose file is named like a part of
// a split model: its first part (a later part is refused, naming the
// first), with the others' URLs derived from its name as llama.cpp names
// them, next to it on the same server (same directory, same query). Their
// sizes and sha256 are unknown until they are downloaded; the ref's
// #sha256= is the merged file's (the catalog's sha256 of the entry).
func urlSplitTarget(ref Ref, u *url.URL, client *hf.Client) (target, error) {
	prefix, i, n, _ := gguf.ParseSplitName(u.Path)
	if i != 0 {
		first := *u
		first.Path, first.RawPath = gguf.SplitPath(prefix, 0, n), ""
		return target{}, fmt.Errorf("%w: %s is part %d of %d of a split model; a split model is named by its first part, %s", ErrBadRef, ref.URL, i+1, n, first.String())
	}
	name := path.Base(prefix) + ".gguf"
	if err := ValidateFileName(name); err != nil {
		return target{}, fmt.Errorf("%w: %v", ErrBadRef, err)
	}
	t := target{id: IDFor(ref, name), ref: ref.String(), file: name, sha: ref.SHA256, source: SourceURL}
	for k := range n {
		pu := *u
		pu.Path, pu.RawPath = gguf.SplitPath(prefix, k, n), ""
		t.parts = append(t.parts, splitPart{name: path.Base(pu.Path), origin: client.URLOpener(pu.String())})
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

// Files of a merge in PartialDir, next to the parts' partials.
const (
	// mergeSuffix ends the merged file being written,
	// <set partial name>.merge.
	mergeSuffix = ".merge"
	// journalSuffix ends the journal of a merge of downloaded parts, the
	// merged file's name and this (<set partial name>.merge.journal):
	// which parts the merged file holds and the sha256 state after them,
	// so a merge stopped by a cancellation, an error or a crash resumes
	// after the last part it holds. A merged file without a journal is
	// never resumed.
	journalSuffix = ".journal"
	// journalVersion is the journal's format; another is not resumed.
	journalVersion = 1
	// headFirstRead is how much of a part is downloaded first for its
	// header: a part other than the first has a few KB of header (the
	// split keys, its tensors' names and shapes), the first a few MB
	// with a vocabulary; the read doubles until the header parses.
	headFirstRead = 64 << 10
	// maxHeadRead bounds the bytes read for one part's header: gguf
	// bounds a header's values to MaxHeaderMemory, which their encoding
	// does not exceed, and its tensor descriptions to MaxTensors of at
	// most 104 bytes of fixed fields and a 63-byte name (under 11 MiB).
	maxHeadRead = gguf.MaxHeaderMemory + 16<<20
)

// fetchSplit fetches every part of t's set and merges them into one file
// that Add stores (fetchTarget's steps 5-6 for a split set; partName is
// the set's, locked by the caller). The disk holds at most the merged file
// and one part (and the headers of the parts still to come): first each
// downloaded (Hub or URL) part's header is downloaded into its partial (the download later
// resumes after it, so no byte comes twice) and the merged file's layout
// planned from them (gguf.PlanMerge); then each part in turn is
// downloaded, verified with its LFS sha256, its data appended to the merged
// file (hashed as written), the merged file fsynced, the journal written
// atomically, and the part's partial removed. A cancellation, an error or
// a crash keeps the merged file and its journal for the next fetch, which
// resumes after the last part the journal names (and the part cut short).
// A set whose parts do not make one model is ErrNotGGUF naming the part;
// the merge and the downloaded parts are deleted (the Hub's bytes, as
// verified: fetching them again gives the same set). A local set, read in
// place, is merged in one go (mergeLocal).
func (c *Catalog) fetchSplit(ctx context.Context, t target, opts FetchOptions, partName string) (Entry, error) {
	if t.parts[0].local != "" {
		return c.mergeLocal(ctx, t, opts, partName)
	}
	n := len(t.parts)
	dir := filepath.Join(c.dir, PartialDir)
	m := &splitMerge{c: c, t: t, opts: opts, out: filepath.Join(dir, partName+mergeSuffix), partials: make([]string, n)}
	var total int64
	for i, p := range t.parts {
		name := partName + fmt.Sprintf("-%05d", i+1)
		if p.sha != "" {
			name = t.id + "-" + p.sha[:16]
		}
		unlock, err := c.lockPartial(ctx, name)
		if err != nil {
			return Entry{}, err
		}
		defer unlock()
		m.partials[i] = filepath.Join(dir, name+".part")
		total += p.size
	}
	if opts.MaxSize > 0 && total > opts.MaxSize {
		return Entry{}, fmt.Errorf("catalog: %s: %w: its %d parts have %d bytes, the limit is %d", t.ref, hf.ErrTooLarge, n, total, opts.MaxSize)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Entry{}, fmt.Errorf("catalog: %w", err)
	}
	e, err := m.run(ctx, total)
	if errors.Is(err, ErrNotGGUF) {
		m.discard()
		for _, p := range m.partials {
			removePartial(p)
		}
	}
	return e, err
}

// splitMerge is one fetch of a Hub split set (fetchSplit).
type splitMerge struct {
	c        *Catalog
	t        target
	opts     FetchOptions
	out      string   // the merged file
	partials []string // the parts' partials
	plan     *gguf.MergePlan
	j        mergeJournal
	h        hash.Hash // sha256 of the merged file's bytes so far
}

// mergeJournal is the journal of a merge (journalSuffix), rewritten
// atomically after every part the merged file takes.
type mergeJournal struct {
	Version int           `json:"version"`
	Parts   []journalPart `json:"parts"`
	// Counts are the parts' tensor counts and HeadSize the merged
	// header's bytes (the merged file's start): with them the plan is
	// read back from the merged file (gguf.ParseMergePlan).
	Counts   []int `json:"counts"`
	HeadSize int   `json:"head_size"`
	Size     int64 `json:"size"`
	// Merged is how many parts' data the merged file holds; the bytes
	// after them (a part cut short by a crash) are cut off on resume.
	Merged int `json:"merged"`
	// SHA256State is the sha256 state (MarshalBinary) after those bytes.
	SHA256State []byte `json:"sha256_state"`
}

// journalPart is one part as the journal knows it: which content (the
// LFS sha256 and size) and the header the plan was made from (its length
// and sha256, checked against the verified part before its data counts).
type journalPart struct {
	SHA256     string `json:"sha256"`
	Size       int64  `json:"size"`
	Head       int64  `json:"head"`
	HeadSHA256 string `json:"head_sha256"`
}

// run resumes or starts the merge, then fetches and appends the parts it
// does not hold yet, and Adds the merged file.
func (m *splitMerge) run(ctx context.Context, total int64) (Entry, error) {
	t, n := m.t, len(m.t.parts)
	m.resume()
	// Before the first byte: room for the rest of the merged file (its
	// size is the parts' sum, less their headers, until it is planned)
	// and for the largest part still to come.
	if err := m.checkSpace(total); err != nil {
		return Entry{}, err
	}
	if m.plan == nil {
		if err := m.start(ctx); err != nil {
			return Entry{}, err
		}
		if err := m.checkSpace(total); err != nil {
			return Entry{}, err
		}
	}
	total = 0
	for i := range n {
		total += m.partSize(i)
	}
	var before, resumed int64
	for i := range m.j.Merged {
		before += m.partSize(i)
	}
	resumed = before
	for i := m.j.Merged; i < n; i++ {
		p := t.parts[i]
		spec := m.partSpec(i)
		if m.opts.Progress != nil {
			before, resumedBefore := before, resumed
			spec.Progress = func(hp hf.Progress) {
				hp.Done += before
				hp.Resumed += resumedBefore
				hp.Total = total
				if hp.Rate > 0 && hp.Total > hp.Done {
					hp.ETA = time.Duration(float64(hp.Total-hp.Done) / hp.Rate * float64(time.Second))
				}
				m.opts.Progress(Progress{Progress: hp, ID: t.id, Source: t.source})
			}
		}
		res, err := hf.Transfer(ctx, p.origin, spec)
		if err != nil {
			return Entry{}, fmt.Errorf("catalog: fetching %s: part %d of %d, %s: %w", t.ref, i+1, n, p.name, err)
		}
		before += res.Size
		resumed += res.Resumed
		if err := m.append(ctx, i); err != nil {
			return Entry{}, err
		}
	}
	sum := hex.EncodeToString(m.h.Sum(nil))
	if t.sha != "" && sum != t.sha {
		// A set by URL whose ref names the merged file's sha256.
		m.discard()
		return Entry{}, fmt.Errorf("catalog: %s: %w: the merged file's sha256 is %s, the reference says %s; merged file deleted", t.ref, hf.ErrChecksum, sum, t.sha)
	}
	e, err := m.c.Add(m.out, NewEntry{ID: t.id, Ref: t.ref, FileName: t.file, SHA256: sum, Source: t.source, Parts: n})
	if err != nil {
		return Entry{}, err
	}
	removeQuiet(m.out + journalSuffix)
	return e, nil
}

// partSize is part i's size: the source's (the Hub's listing), or, for a
// part of unknown size (a set by URL) once the merge is planned, its
// header's bytes and its data's as the plan has them (padding aside).
func (m *splitMerge) partSize(i int) int64 {
	if s := m.t.parts[i].size; s > 0 || m.plan == nil {
		return s
	}
	return m.j.Parts[i].Head + m.plan.PartStart(i+1) - m.plan.PartStart(i)
}

// partSpec is the Transfer of part i into its partial.
func (m *splitMerge) partSpec(i int) hf.Spec {
	p := m.t.parts[i]
	return hf.Spec{Partial: m.partials[i], Size: p.size, SHA256: p.sha, ProgressInterval: m.opts.ProgressInterval,
		MaxSize: m.opts.MaxSize, CheckHead: checkHead, HeadSize: gguf.HeaderSize, Retries: retries(m.opts)}
}

// resume takes up the merge a journal describes when it is of this set
// and its merged file holds what it says; anything else a merge left is
// removed. The partials of the parts it holds go (a crash may have come
// before their removal).
func (m *splitMerge) resume() {
	j, plan, h, err := m.load()
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			m.c.log.Info("catalog: a merge left by an earlier fetch is not resumed; starting over", "file", m.out, "err", err)
		}
		m.discard()
		return
	}
	if err := os.Truncate(m.out, plan.PartStart(j.Merged)); err != nil {
		m.c.log.Warn("catalog: cannot resume a merge; starting over", "file", m.out, "err", err)
		m.discard()
		return
	}
	for i := range j.Merged {
		removePartial(m.partials[i])
	}
	m.j, m.plan, m.h = j, plan, h
	m.c.log.Info("catalog: resuming a merge", "id", m.t.id, "parts_merged", j.Merged, "parts", len(j.Parts), "bytes", plan.PartStart(j.Merged))
}

// load reads the journal and the plan and checks them against the set and
// the merged file.
func (m *splitMerge) load() (mergeJournal, *gguf.MergePlan, hash.Hash, error) {
	var j mergeJournal
	b, err := os.ReadFile(m.out + journalSuffix)
	if err != nil {
		return j, nil, nil, err
	}
	if err := json.Unmarshal(b, &j); err != nil {
		return j, nil, nil, fmt.Errorf("journal: %w", err)
	}
	n := len(m.t.parts)
	if j.Version != journalVersion || len(j.Parts) != n || j.Merged < 0 || j.Merged > n || j.HeadSize <= 0 || j.HeadSize > maxHeadRead*n {
		return j, nil, nil, errors.New("journal: another version, set or layout")
	}
	for i, p := range m.t.parts {
		if j.Parts[i].SHA256 != p.sha || j.Parts[i].Size != p.size {
			return j, nil, nil, fmt.Errorf("journal: part %d of %d is another file", i+1, n)
		}
	}
	f, err := os.Open(m.out)
	if err != nil {
		return j, nil, nil, err
	}
	defer f.Close()
	head := make([]byte, j.HeadSize)
	if _, err := io.ReadFull(f, head); err != nil {
		return j, nil, nil, fmt.Errorf("merged file: %w", err)
	}
	plan, err := gguf.ParseMergePlan(head, j.Counts)
	if err != nil {
		return j, nil, nil, err
	}
	st, err := f.Stat()
	if err != nil {
		return j, nil, nil, err
	}
	if plan.Size() != j.Size || plan.Parts() != n || st.Size() < plan.PartStart(j.Merged) {
		return j, nil, nil, fmt.Errorf("merged file: %d bytes, the journal says %d parts of %d bytes are in it", st.Size(), j.Merged, plan.PartStart(j.Merged))
	}
	h := sha256.New()
	if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(j.SHA256State); err != nil {
		return j, nil, nil, fmt.Errorf("journal: sha256 state: %w", err)
	}
	return j, plan, h, nil
}

// discard removes the merged file and its journal.
func (m *splitMerge) discard() {
	removeQuiet(m.out)
	removeQuiet(m.out + journalSuffix)
}

// checkSpace checks that the disk holds what the merge still writes: the
// rest of the merged file and the largest part still to come, less what
// their partials hold, and, before the merge is planned, the first read
// of the other parts' headers (they stay until their part is merged).
// total, the parts' sum, stands for the merged file's size until then.
//
// A set of unknown sizes (by URL) is checked once planned: before, only
// the first read of each header is asked of the disk (by Transfer).
func (m *splitMerge) checkSpace(total int64) error {
	size := total
	if m.plan != nil {
		size = m.plan.Size()
	} else {
		for _, p := range m.t.parts {
			if p.size <= 0 {
				return nil
			}
		}
	}
	var have, part, heads int64
	if st, err := os.Stat(m.out); err == nil {
		have = st.Size()
	}
	for i := m.j.Merged; i < len(m.t.parts); i++ {
		left := m.partSize(i)
		if st, err := os.Stat(m.partials[i]); err == nil && st.Size() <= left {
			left -= st.Size()
		}
		if m.plan == nil {
			heads += min(left, headFirstRead)
		}
		part = max(part, left)
	}
	heads -= min(part, headFirstRead) // the largest part's is in part
	what := fmt.Sprintf("%s (the merged file, %d bytes, %d of them written, and one of its %d parts at a time, the largest still to come %d bytes", m.t.ref, size, have, len(m.t.parts), part)
	if heads > 0 {
		what += fmt.Sprintf(", and the first %d bytes of the others for their headers", heads)
	}
	return hf.CheckSpace(filepath.Dir(m.out), size-have+part+heads, what+")")
}

// start plans a new merge from the parts' headers and writes the merged
// file's header and the journal.
func (m *splitMerge) start(ctx context.Context) error {
	t, n := m.t, len(m.t.parts)
	heads := make([]*gguf.File, n)
	m.j = mergeJournal{Version: journalVersion, Parts: make([]journalPart, n)}
	for i, p := range t.parts {
		f, head, err := m.partHead(ctx, i)
		if err != nil {
			return err
		}
		heads[i] = f
		sum := sha256.Sum256(head)
		m.j.Parts[i] = journalPart{SHA256: p.sha, Size: p.size, Head: int64(len(head)), HeadSHA256: hex.EncodeToString(sum[:])}
	}
	plan, err := gguf.PlanMerge(heads)
	if err != nil {
		return fmt.Errorf("catalog: %s: %w: the parts %s … %s do not make one model: %v", t.ref, ErrNotGGUF, t.parts[0].name, t.parts[n-1].name, err)
	}
	if m.opts.MaxSize > 0 && plan.Size() > m.opts.MaxSize {
		return fmt.Errorf("catalog: %s: %w: %d bytes merged, the limit is %d", t.ref, hf.ErrTooLarge, plan.Size(), m.opts.MaxSize)
	}
	m.plan, m.h = plan, sha256.New()
	m.j.Counts, m.j.HeadSize, m.j.Size = plan.Counts(), len(plan.Head()), plan.Size()
	f, err := os.OpenFile(m.out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("catalog: merging %s: %w", t.ref, err)
	}
	defer f.Close()
	if _, err := f.Write(plan.Head()); err != nil {
		return fmt.Errorf("catalog: merging %s: %w", t.ref, err)
	}
	m.h.Write(plan.Head())
	if err := f.Sync(); err != nil {
		return fmt.Errorf("catalog: merging %s: %w", t.ref, err)
	}
	return m.commit(0)
}

// partHead returns part i's header, parsed, and its bytes: the first
// bytes of its partial, downloaded as far as needed (headFirstRead,
// doubling), which the part's download later resumes after.
func (m *splitMerge) partHead(ctx context.Context, i int) (*gguf.File, []byte, error) {
	p, n := m.t.parts[i], len(m.t.parts)
	fail := func(err error) (*gguf.File, []byte, error) {
		return nil, nil, fmt.Errorf("catalog: %s: %w: part %d of %d, %s: %v", m.t.ref, ErrNotGGUF, i+1, n, p.name, err)
	}
	size := p.size
	if size <= 0 {
		size = math.MaxInt64 // unknown (a set by URL): its tensors are checked when it is here
	}
	limit := min(size, maxHeadRead)
	complete := false
	for want := int64(headFirstRead); ; want *= 2 {
		prefix, err := readPrefix(m.partials[i], limit)
		if err != nil {
			return nil, nil, fmt.Errorf("catalog: %s: part %d of %d: %w", m.t.ref, i+1, n, err)
		}
		f, err := gguf.ParseHeader(prefix, size)
		if err == nil {
			return f, prefix[:min(f.DataOffset, uint64(size))], nil
		}
		if !errors.Is(err, gguf.ErrTruncated) || int64(len(prefix)) >= limit || complete {
			return fail(err)
		}
		want = max(want, int64(len(prefix))+headFirstRead)
		hctx, stop := context.WithCancelCause(ctx)
		_, err = hf.Transfer(hctx, stopAfter(p.origin, min(want, limit), stop), m.partSpec(i))
		stop(nil)
		complete = err == nil // the whole part, smaller than asked for
		if err != nil && (ctx.Err() != nil || !errors.Is(context.Cause(hctx), errHeadRead)) {
			return nil, nil, fmt.Errorf("catalog: fetching %s: part %d of %d, %s: %w", m.t.ref, i+1, n, p.name, err)
		}
	}
}

// errHeadRead ends the download of a part's header (partHead): the
// partial keeps what arrived, and the part's download resumes there.
var errHeadRead = errors.New("catalog: a part's header downloaded")

// stopAfter opens like open, but its body stops at end: the read that
// reaches it cancels the transfer (stop, with errHeadRead), which then
// keeps its partial for the resume.
func stopAfter(open hf.Opener, end int64, stop context.CancelCauseFunc) hf.Opener {
	return func(ctx context.Context, offset int64) (io.ReadCloser, int64, int64, error) {
		body, start, total, err := open(ctx, offset)
		if err != nil {
			return nil, 0, 0, err
		}
		return &headBody{ReadCloser: body, left: end - start, stop: stop}, start, total, nil
	}
}

type headBody struct {
	io.ReadCloser
	left int64
	stop context.CancelCauseFunc
}

func (b *headBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		b.stop(errHeadRead)
		return 0, errHeadRead
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	k, err := b.ReadCloser.Read(p)
	b.left -= int64(k)
	return k, err
}

// readPrefix returns the first bytes of a file, at most limit; none for a
// file that is not there.
func readPrefix(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, limit))
}

// append appends the data of part i, downloaded and verified in its
// partial, to the merged file, records it in the journal and removes the
// partial.
func (m *splitMerge) append(ctx context.Context, i int) error {
	t, n := m.t, len(m.t.parts)
	jp := m.j.Parts[i]
	head, err := readPrefix(m.partials[i], jp.Head)
	if err != nil {
		return fmt.Errorf("catalog: %s: part %d of %d: %w", t.ref, i+1, n, err)
	}
	if sum := sha256.Sum256(head); hex.EncodeToString(sum[:]) != jp.HeadSHA256 {
		// The part's partial started over (its file on the Hub changed):
		// the plan is of other bytes. The next fetch plans again.
		m.discard()
		return fmt.Errorf("catalog: merging %s: part %d of %d, %s, is not the file whose header the merge was planned on (it changed on the Hub); the merge starts over on the next fetch", t.ref, i+1, n, t.parts[i].name)
	}
	part, err := gguf.Open(m.partials[i])
	if err != nil {
		return fmt.Errorf("catalog: %s: %w: part %d of %d, %s: %v", t.ref, ErrNotGGUF, i+1, n, t.parts[i].name, err)
	}
	defer part.Close()
	if err := m.write(ctx, i, part); err != nil {
		return err
	}
	if err := m.commit(i + 1); err != nil {
		return err
	}
	removePartial(m.partials[i])
	return nil
}

// write appends part's data to the merged file at PartStart(i), hashing
// it, and fsyncs the file.
func (m *splitMerge) write(ctx context.Context, i int, part *gguf.File) error {
	f, err := os.OpenFile(m.out, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("catalog: merging %s: %w", m.t.ref, err)
	}
	defer f.Close()
	progress := mergeReporter(m.t, m.opts, m.plan.Size(), time.Now(), m.plan.PartStart(i))
	if err := appendPart(ctx, f, m.h, m.plan, i, part, progress, mergeEvery(m.opts)); err != nil {
		return fmt.Errorf("catalog: merging %s: %w", m.t.ref, m.partError(i, err))
	}
	return nil
}

// partError is ErrNotGGUF for a part that does not fit the plan.
func (m *splitMerge) partError(i int, err error) error {
	if errors.Is(err, gguf.ErrSplit) {
		return fmt.Errorf("%w: part %d of %d, %s: %v", ErrNotGGUF, i+1, len(m.t.parts), m.t.parts[i].name, err)
	}
	return err
}

// commit writes the journal with the first merged parts in the merged
// file (fsynced before): written whole to a temporary file, fsynced,
// renamed over the old one.
func (m *splitMerge) commit(merged int) error {
	state, err := m.h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return fmt.Errorf("catalog: merging %s: %w", m.t.ref, err)
	}
	m.j.Merged, m.j.SHA256State = merged, state
	b, err := json.Marshal(m.j)
	if err != nil {
		return fmt.Errorf("catalog: merging %s: %w", m.t.ref, err)
	}
	if err := atomicfile.WriteFile(m.out+journalSuffix, b, 0o644); err != nil {
		return fmt.Errorf("catalog: merging %s: %w", m.t.ref, err)
	}
	return nil
}

// mergeEvery is how often a merge reports progress (FetchOptions.ProgressInterval).
func mergeEvery(opts FetchOptions) time.Duration {
	if opts.ProgressInterval > 0 {
		return opts.ProgressInterval
	}
	return hf.DefaultProgressInterval
}

// mergeReporter is the progress of a merge of size bytes, its rate that of
// the bytes written since began, when from of them were written.
func mergeReporter(t target, opts FetchOptions, size int64, began time.Time, from int64) func(int64) {
	return func(done int64) {
		if opts.Progress == nil {
			return
		}
		p := hf.Progress{Done: done, Total: size}
		if s := time.Since(began).Seconds(); s > 0 && done > from {
			p.Rate = float64(done-from) / s
			p.ETA = time.Duration(float64(size-done) / p.Rate * float64(time.Second))
		}
		opts.Progress(Progress{Progress: p, ID: t.id, Source: t.source, Merging: true})
	}
}

// appendPart writes part i's data to f at plan.PartStart(i) through h,
// reporting the merged file's bytes at most every interval, and fsyncs f.
func appendPart(ctx context.Context, f *os.File, h hash.Hash, plan *gguf.MergePlan, i int, part *gguf.File, progress func(int64), interval time.Duration) error {
	at := plan.PartStart(i)
	if _, err := f.Seek(at, io.SeekStart); err != nil {
		return err
	}
	sink := &mergeSink{ctx: ctx, w: io.MultiWriter(f, h), n: at, progress: progress, interval: interval}
	k, err := plan.WritePart(sink, i, part)
	if err != nil {
		return err
	}
	if want := plan.PartStart(i+1) - at; k != want {
		return fmt.Errorf("wrote %d bytes of part %d, expected %d", k, i+1, want)
	}
	progress(sink.n)
	return f.Sync()
}

// mergeLocal merges a local set (its parts read in place) into
// PartialDir/<partName>.merge and Adds that. Nothing was downloaded, so a
// failure or a cancellation removes the merged file; a fetch again merges
// from the start.
func (c *Catalog) mergeLocal(ctx context.Context, t target, opts FetchOptions, partName string) (Entry, error) {
	n := len(t.parts)
	files := make([]*gguf.File, 0, n)
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for i, p := range t.parts {
		f, err := gguf.Open(p.local)
		if err != nil {
			return Entry{}, fmt.Errorf("catalog: %s: %w: part %d of %d, %s: %v", t.ref, ErrNotGGUF, i+1, n, p.name, err)
		}
		files = append(files, f)
	}
	plan, err := gguf.PlanMerge(files)
	if err != nil {
		return Entry{}, fmt.Errorf("catalog: %s: %w: the parts %s … %s do not make one model: %v", t.ref, ErrNotGGUF, t.parts[0].name, t.parts[n-1].name, err)
	}
	if opts.MaxSize > 0 && plan.Size() > opts.MaxSize {
		return Entry{}, fmt.Errorf("catalog: %s: %w: %d bytes merged, the limit is %d", t.ref, hf.ErrTooLarge, plan.Size(), opts.MaxSize)
	}
	dir := filepath.Join(c.dir, PartialDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Entry{}, fmt.Errorf("catalog: %w", err)
	}
	if err := hf.CheckSpace(dir, plan.Size(), "merging "+t.ref); err != nil {
		return Entry{}, err
	}
	out := filepath.Join(dir, partName+mergeSuffix)
	sum, err := writeLocalMerge(ctx, plan, files, out, mergeReporter(t, opts, plan.Size(), time.Now(), 0), mergeEvery(opts))
	if err != nil {
		removeQuiet(out)
		return Entry{}, fmt.Errorf("catalog: merging %s: %w", t.ref, err)
	}
	e, err := c.Add(out, NewEntry{ID: t.id, Ref: t.ref, FileName: t.file, SHA256: sum, Source: t.source, Parts: n})
	if err != nil {
		removeQuiet(out)
		return Entry{}, err
	}
	return e, nil
}

// writeLocalMerge writes the merged file of plan from files to out, new,
// and returns its sha256.
func writeLocalMerge(ctx context.Context, plan *gguf.MergePlan, files []*gguf.File, out string, progress func(int64), interval time.Duration) (string, error) {
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.MultiWriter(f, h).Write(plan.Head()); err != nil {
		return "", err
	}
	for i, part := range files {
		if err := appendPart(ctx, f, h, plan, i, part, progress, interval); err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil)), f.Close()
}

// mergeSink is the merge's writer: it stops when ctx ends and reports
// the merged file's bytes at most every interval (gguf's WritePart writes
// at most 4 MiB at once, so both come often enough).
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

// removePartial removes a part's partial and its validator (model/hf).
func removePartial(p string) {
	removeQuiet(p)
	removeQuiet(p + hf.ValidatorSuffix)
}

// removeQuiet removes a file that may not be there.
func removeQuiet(p string) { _ = os.Remove(p) }

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
