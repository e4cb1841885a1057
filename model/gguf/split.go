package gguf

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Metadata keys of llama.cpp's gguf-split (LLM_KV_SPLIT_* in its
// src/llama-arch.cpp). Every part of a split model carries the three.
const (
	// KeySplitNo is the part's 0-based number (uint16).
	KeySplitNo = "split.no"
	// KeySplitCount is how many parts the model has (uint16).
	KeySplitCount = "split.count"
	// KeySplitTensors is how many tensors all parts hold together (int32).
	KeySplitTensors = "split.tensors.count"
	// splitKeyPrefix starts every split key; Merge drops them all.
	splitKeyPrefix = "split."
)

// MaxSplitParts is the most parts a split model can have: split.count is a
// uint16 (and the five digits of llama.cpp's names hold it).
const MaxSplitParts = math.MaxUint16

// splitNameRE matches llama.cpp's part names, PREFIX-%05d-of-%05d.gguf
// (llama_split_path), with the 1-based part number and the count.
var splitNameRE = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^(.+)-(\d{5})-of-(\d{5})\.gguf$`)
})

// SplitPath returns the path of part i (0-based) of n of the model with
// this prefix, as llama.cpp names it: PREFIX-%05d-of-%05d.gguf with
// 1-based numbers ("dir/model", 0, 3 → "dir/model-00001-of-00003.gguf").
func SplitPath(prefix string, i, n int) string {
	return fmt.Sprintf("%s-%05d-of-%05d.gguf", prefix, i+1, n)
}

// ParseSplitName splits a part's file name (or path: only its last
// element is read) into the prefix, the 0-based part number and the part
// count. ok is false for a name not in llama.cpp's form or with numbers
// out of range (part 0, a part past the count, a count over MaxSplitParts).
// The prefix of a path keeps its directory.
func ParseSplitName(name string) (prefix string, i, n int, ok bool) {
	dir, base := splitDir(name)
	m := splitNameRE().FindStringSubmatch(base)
	if m == nil {
		return "", 0, 0, false
	}
	part, _ := strconv.Atoi(m[2])
	n, _ = strconv.Atoi(m[3])
	if part < 1 || n < 1 || part > n || n > MaxSplitParts {
		return "", 0, 0, false
	}
	return dir + m[1], part - 1, n, true
}

// splitDir cuts p after its last separator ('/', and on Windows '\').
func splitDir(p string) (dir, base string) {
	i := strings.LastIndexAny(p, "/"+string(filepath.Separator))
	return p[:i+1], p[i+1:]
}

// SplitPaths returns the paths of every part of the split model whose first
// part is first ("dir/m-00001-of-00003.gguf" → the three parts, in order),
// by llama.cpp's naming rule; it does not look at the files. A name not in
// that form, or of a part other than the first, is ErrSplit.
func SplitPaths(first string) ([]string, error) {
	prefix, i, n, ok := ParseSplitName(first)
	if !ok {
		return nil, fmt.Errorf("%w: %q is not named like a part of a split model (PREFIX-00001-of-0000N.gguf)", ErrSplit, first)
	}
	if i != 0 {
		return nil, fmt.Errorf("%w: %q is part %d of %d; a split model is named by its first part, %s", ErrSplit, first, i+1, n, SplitPath(prefix, 0, n))
	}
	out := make([]string, n)
	for k := range out {
		out[k] = SplitPath(prefix, k, n)
	}
	return out, nil
}

// SplitCount returns f's split.count, 0 for a file that is not a part of
// a split model (no such key).
func (f *File) SplitCount() int {
	n, ok := f.Uint(KeySplitCount)
	if !ok || n > MaxSplitParts {
		return 0
	}
	return int(n)
}

// PlanMerge lays out the one ordinary file a split set merges into: the
// first part's version and metadata without the split.* keys, then every
// part's tensors in order (the data aligned as the Writer aligns it). It
// needs the parts' headers alone (ParseHeader of their first bytes, or
// Open), so a caller can write the merged file part by part as the parts
// arrive and drop each once written: Head first, then WritePart for each
// part in order with the part's whole file. The merged file's Size is
// known before anything is written.
//
// The set is checked first; a fault is ErrSplit naming the part (1-based,
// as in the file names): parts in order (split.no 0..n-1), the same
// split.count n = len(parts) in every part, as many tensors in all as the
// first part's split.tensors.count, no tensor name twice.
func PlanMerge(parts []*File) (*MergePlan, error) {
	n := len(parts)
	if n == 0 {
		return nil, fmt.Errorf("%w: no parts", ErrSplit)
	}
	if n > MaxSplitParts {
		return nil, fmt.Errorf("%w: %d parts, at most %d", ErrSplit, n, MaxSplitParts)
	}
	total, ok := parts[0].Get(KeySplitTensors)
	want, iok := total.Int()
	if !ok || !iok || want < 0 {
		return nil, fmt.Errorf("%w: part 1 of %d has no %s", ErrSplit, n, KeySplitTensors)
	}
	if want > MaxTensors {
		// The merged file could not be opened: refused before it is written.
		return nil, fmt.Errorf("%w: %s is %d, more than the %d tensors a file may have", ErrSplit, KeySplitTensors, want, MaxTensors)
	}
	have := 0
	counts := make([]int, n)
	for i, p := range parts {
		no, ok := p.Uint(KeySplitNo)
		if !ok {
			return nil, fmt.Errorf("%w: part %d of %d has no %s: not a part of a split model", ErrSplit, i+1, n, KeySplitNo)
		}
		if no != uint64(i) {
			return nil, fmt.Errorf("%w: part %d of %d says it is part %d (%s = %d)", ErrSplit, i+1, n, no+1, KeySplitNo, no)
		}
		if c, ok := p.Uint(KeySplitCount); !ok || c != uint64(n) {
			return nil, fmt.Errorf("%w: part %d of %d says the model has %d parts (%s)", ErrSplit, i+1, n, c, KeySplitCount)
		}
		if v, ok := p.Get(KeySplitTensors); ok {
			if t, _ := v.Int(); t != want {
				return nil, fmt.Errorf("%w: part %d of %d says the model has %d tensors, part 1 says %d (%s)", ErrSplit, i+1, n, t, want, KeySplitTensors)
			}
		}
		counts[i] = len(p.Tensors)
		have += len(p.Tensors)
	}
	if int64(have) != want {
		return nil, fmt.Errorf("%w: the %d parts hold %d tensors, %s says %d", ErrSplit, n, have, KeySplitTensors, want)
	}
	w := NewWriter()
	w.Version = parts[0].Version
	for _, kv := range parts[0].KVs {
		if strings.HasPrefix(kv.Key, splitKeyPrefix) {
			continue
		}
		if err := w.AddKV(kv.Key, kv.Value); err != nil {
			return nil, fmt.Errorf("%w: part 1 of %d: %w", ErrSplit, n, err)
		}
	}
	for i, p := range parts {
		for _, t := range p.Tensors {
			if err := w.addInfo(t.Name, t.Type, t.Dims); err != nil {
				return nil, fmt.Errorf("%w: part %d of %d: %w", ErrSplit, i+1, n, err)
			}
		}
	}
	var head bytes.Buffer
	c := &countWriter{w: bufio.NewWriter(&head)}
	if _, _, err := w.writeHeader(c); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSplit, err)
	}
	if c.err == nil {
		c.err = c.w.Flush()
	}
	if c.err != nil {
		return nil, c.err
	}
	return ParseMergePlan(head.Bytes(), counts)
}

// MergePlan is the layout of a split set's merged file (PlanMerge). It
// holds no part: the parts' files are given to WritePart one at a time.
type MergePlan struct {
	head    []byte
	f       *File // head parsed: the merged file's tensors, in order
	first   []int // part i's tensors are f.Tensors[first[i]:first[i+1]]
	size    int64
	dataEnd []uint64 // data offset where part i's data ends (padding included)
}

// ParseMergePlan returns the plan whose Head is head and whose parts hold
// counts tensors each (Counts): the plan of a merge already under way, read
// back from the start of its file. A head that is not a merged file's
// header as PlanMerge lays it out (tensors one after another, each padded
// to the alignment, the data right after the header), or counts that do not
// add up to its tensors, is ErrSplit.
func ParseMergePlan(head []byte, counts []int) (*MergePlan, error) {
	f, err := ParseHeader(head, math.MaxInt64)
	if err != nil {
		return nil, fmt.Errorf("%w: the merged header: %w", ErrSplit, err)
	}
	if f.DataOffset != uint64(len(head)) {
		return nil, fmt.Errorf("%w: the merged header has %d bytes, its data starts at %d", ErrSplit, len(head), f.DataOffset)
	}
	if len(counts) == 0 || len(counts) > MaxSplitParts {
		return nil, fmt.Errorf("%w: %d parts", ErrSplit, len(counts))
	}
	p := &MergePlan{head: head, f: f, first: make([]int, len(counts)+1), dataEnd: make([]uint64, len(counts))}
	off := uint64(0)
	for i, c := range counts {
		if c < 0 || c > len(f.Tensors)-p.first[i] {
			return nil, fmt.Errorf("%w: the parts' tensor counts %v do not add up to the merged file's %d tensors", ErrSplit, counts, len(f.Tensors))
		}
		p.first[i+1] = p.first[i] + c
		for _, t := range f.Tensors[p.first[i]:p.first[i+1]] {
			if t.Offset != off {
				return nil, fmt.Errorf("%w: tensor %q of the merged header is at %d, not %d", ErrSplit, t.Name, t.Offset, off)
			}
			var ok bool
			if off, ok = alignUp(off+t.Size, f.Alignment); !ok || off > math.MaxInt64-f.DataOffset {
				return nil, fmt.Errorf("%w: the merged file's size overflows", ErrSplit)
			}
		}
		p.dataEnd[i] = off
	}
	if p.first[len(counts)] != len(f.Tensors) {
		return nil, fmt.Errorf("%w: the parts' tensor counts %v do not add up to the merged file's %d tensors", ErrSplit, counts, len(f.Tensors))
	}
	p.size = int64(f.DataOffset + off)
	return p, nil
}

// Head returns the merged file's first bytes: everything before the first
// tensor's data, padding included. The slice must not be changed.
func (p *MergePlan) Head() []byte { return p.head }

// Size returns the merged file's size in bytes.
func (p *MergePlan) Size() int64 { return p.size }

// Parts returns how many parts the set has.
func (p *MergePlan) Parts() int { return len(p.dataEnd) }

// Counts returns how many tensors each part holds (for ParseMergePlan).
func (p *MergePlan) Counts() []int {
	c := make([]int, len(p.dataEnd))
	for i := range c {
		c[i] = p.first[i+1] - p.first[i]
	}
	return c
}

// PartStart returns the offset in the merged file where part i's data
// starts, which is where the parts before it end: len(Head()) for part 0,
// Size() for i = Parts().
func (p *MergePlan) PartStart(i int) int64 {
	if i <= 0 {
		return int64(len(p.head))
	}
	return int64(p.f.DataOffset + p.dataEnd[min(i, len(p.dataEnd))-1])
}

// writePiece bounds one Write of WritePart: a tensor may have gigabytes,
// and a caller's writer checks for cancellation and reports progress
// between writes.
const writePiece = 4 << 20

// WritePart writes part i's tensor data, each tensor padded to the
// alignment, to w, which must be at PartStart(i) of the merged file, and
// returns the bytes written (PartStart(i+1) - PartStart(i) when all went
// well). part is the part's whole file; its tensors must be the ones the
// plan holds for part i (name, type, shape, order), else ErrSplit and
// nothing is written. Each tensor's pages are released once written
// (File.ReleaseTensor), so a 100 GB merge does not stay resident.
func (p *MergePlan) WritePart(w io.Writer, i int, part *File) (int64, error) {
	n := len(p.dataEnd)
	if i < 0 || i >= n {
		return 0, fmt.Errorf("%w: part %d of %d", ErrSplit, i+1, n)
	}
	want := p.f.Tensors[p.first[i]:p.first[i+1]]
	if len(part.Tensors) != len(want) {
		return 0, fmt.Errorf("%w: part %d of %d has %d tensors, its header said %d", ErrSplit, i+1, n, len(part.Tensors), len(want))
	}
	for j := range want {
		a, b := &part.Tensors[j], &want[j]
		if a.Name != b.Name || a.Type != b.Type || !slices.Equal(a.Dims, b.Dims) {
			return 0, fmt.Errorf("%w: part %d of %d: tensor %d is %q (%s %v), its header said %q (%s %v)", ErrSplit, i+1, n, j, a.Name, a.Type, a.Dims, b.Name, b.Type, b.Dims)
		}
		if _, err := part.TensorData(a); err != nil {
			return 0, fmt.Errorf("%w: part %d of %d: %w", ErrSplit, i+1, n, err)
		}
	}
	var written int64
	var zeros []byte
	for j := range want {
		t := &part.Tensors[j]
		data, _ := part.TensorData(t) // checked above
		pad := int(p.alignUp(t.Size) - t.Size)
		if len(zeros) < pad {
			zeros = make([]byte, pad)
		}
		for len(data) > 0 || pad > 0 {
			k := min(len(data), writePiece)
			b := data[:k]
			if k == 0 {
				b, pad = zeros[:pad], 0
			}
			m, err := w.Write(b)
			written += int64(m)
			if err != nil {
				return written, err
			}
			data = data[k:]
		}
		_ = part.ReleaseTensor(t)
	}
	return written, nil
}

func (p *MergePlan) alignUp(x uint64) uint64 {
	a := p.f.Alignment
	return (x + a - 1) / a * a // no overflow: ParseMergePlan checked the sums
}

// Merge writes the model of a split set (its parts in order, opened whole)
// to out as one ordinary GGUF file; see PlanMerge for what is checked.
// Nothing is written when the check fails.
func Merge(out io.Writer, parts []*File) error {
	p, err := PlanMerge(parts)
	if err != nil {
		return err
	}
	if _, err := out.Write(p.Head()); err != nil {
		return err
	}
	for i, f := range parts {
		if _, err := p.WritePart(out, i, f); err != nil {
			return err
		}
	}
	return nil
}

// SplitOptions are the choices of Split.
type SplitOptions struct {
	// MetadataOnlyFirst puts no tensor in the first part, as gguf-split
	// --no-tensor-first-split does (n must then be at least 2).
	MetadataOnlyFirst bool
}

// Split writes f as n parts in llama.cpp's gguf-split format, named
// SplitPath(prefix, i, n), and returns their paths in order: the first
// part holds f's metadata and, as every part, split.no, split.count and
// split.tensors.count; the other parts hold only those three keys (so
// their data is aligned to the default alignment, as gguf-split writes
// them). f's tensors are dealt in order, as evenly by count as they go.
// Each part is written atomically (Writer.WriteFile). A file that is
// already a part of a split model is refused (ErrSplit).
func Split(f *File, prefix string, n int, opts SplitOptions) ([]string, error) {
	first := 0
	if opts.MetadataOnlyFirst {
		first = 1
	}
	if n < 1+first || n > MaxSplitParts {
		return nil, fmt.Errorf("%w: cannot split into %d parts", ErrSplit, n)
	}
	if f.Has(KeySplitCount) || f.Has(KeySplitNo) {
		return nil, fmt.Errorf("%w: the file is a part of a split model already", ErrSplit)
	}
	if len(f.Tensors) > math.MaxInt32 {
		return nil, fmt.Errorf("%w: %d tensors do not fit %s", ErrSplit, len(f.Tensors), KeySplitTensors)
	}
	holders := n - first
	paths := make([]string, n)
	for i := range n {
		w := NewWriter()
		w.Version = f.Version
		if i == 0 {
			for _, kv := range f.KVs {
				if err := w.AddKV(kv.Key, kv.Value); err != nil {
					return nil, err
				}
			}
		}
		for _, kv := range []KV{
			{KeySplitNo, Value{Type: TypeUint16, Data: uint16(i)}},
			{KeySplitCount, Value{Type: TypeUint16, Data: uint16(n)}},
			{KeySplitTensors, Value{Type: TypeInt32, Data: int32(len(f.Tensors))}},
		} {
			if err := w.AddKV(kv.Key, kv.Value); err != nil {
				return nil, err
			}
		}
		if h := i - first; h >= 0 {
			lo, hi := h*len(f.Tensors)/holders, (h+1)*len(f.Tensors)/holders
			for j := lo; j < hi; j++ {
				t := &f.Tensors[j]
				data, err := f.TensorData(t)
				if err != nil {
					return nil, err
				}
				if err := w.AddTensor(t.Name, t.Type, t.Dims, data); err != nil {
					return nil, err
				}
			}
		}
		paths[i] = SplitPath(prefix, i, n)
		if err := w.WriteFile(paths[i]); err != nil {
			return nil, err
		}
	}
	return paths, nil
}
