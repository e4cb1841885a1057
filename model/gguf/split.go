package gguf

import (
	"fmt"
	"io"
	"math"
	"path/filepath"
	"regexp"
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

// NewMergeWriter returns a Writer that writes the model of a split set as
// one ordinary file: the first part's version and metadata without the
// split.* keys, then every part's tensors in order (the data aligned as
// the Writer aligns it). Its Size is the merged file's size, known before
// anything is written. The parts must stay open until WriteTo returns:
// the tensor data is read from them (and each tensor's pages are released
// once written, see File.ReleaseTensor).
//
// The set is checked first; a fault is ErrSplit naming the part (1-based,
// as in the file names): parts in order (split.no 0..n-1), the same
// split.count n = len(parts) in every part, as many tensors in all as the
// first part's split.tensors.count, no tensor name twice. Each part's
// tensor data lies inside its file (Parse checked it).
func NewMergeWriter(parts []*File) (*Writer, error) {
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
	type at struct{ part, tensor int }
	where := make([]at, 0, have)
	for i, p := range parts {
		for j := range p.Tensors {
			t := &p.Tensors[j]
			data, err := p.TensorData(t)
			if err != nil {
				return nil, fmt.Errorf("%w: part %d of %d: %w", ErrSplit, i+1, n, err)
			}
			if err := w.AddTensor(t.Name, t.Type, t.Dims, data); err != nil {
				return nil, fmt.Errorf("%w: part %d of %d: %w", ErrSplit, i+1, n, err)
			}
			where = append(where, at{i, j})
		}
	}
	w.written = func(k int) {
		p := parts[where[k].part]
		_ = p.ReleaseTensor(&p.Tensors[where[k].tensor])
	}
	return w, nil
}

// Merge writes the model of a split set (its parts in order) to out as one
// ordinary GGUF file; see NewMergeWriter for what is checked. Nothing is
// written when the check fails.
func Merge(out io.Writer, parts []*File) error {
	w, err := NewMergeWriter(parts)
	if err != nil {
		return err
	}
	_, err = w.WriteTo(out)
	return err
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
