package hf

import (
	"fmt"
	"path"
	"regexp"
	"sort"
	"strings"
	"sync"

	"github.com/rbee-project/rbee/model/gguf"
)

// QuantPreference returns (a fresh copy of) the order in which PickGGUF
// chooses a file when the ref names neither a file nor a quantization: the
// usual quality/size sweet spot first (Q4_K_M, as llama.cpp and LM Studio
// default to), then larger K-quants and Q8_0, then legacy and smaller
// quants, then the unquantized formats, which are large and slow on CPUs.
func QuantPreference() []string {
	return []string{
		"Q4_K_M", "Q4_K_S", "Q5_K_M", "Q5_K_S", "Q8_0", "Q6_K",
		"Q4_0", "IQ4_XS", "IQ4_NL", "Q4_1", "Q5_0", "Q5_1",
		"Q3_K_L", "Q3_K_M", "Q3_K_S", "Q2_K", "BF16", "F16", "F32",
	}
}

// splitRE matches names shaped like gguf-split parts (model-00001-of-00003.gguf),
// loosely: any case, any numbers. gguf.ParseSplitName is the exact rule.
var splitRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`(?i)-\d{5}-of-\d{5}\.gguf$`) })

// IsSplitShard reports whether p is named like one part of a gguf-split
// model (model-00001-of-00003.gguf), which is no model on its own; a name
// of that shape that breaks llama.cpp's rule (gguf.ParseSplitName) is no
// part of a set PickModel can take either.
func IsSplitShard(p string) bool { return splitRE().MatchString(path.Base(p)) }

// IsGGUF reports whether p names a GGUF file (by extension).
func IsGGUF(p string) bool { return strings.HasSuffix(strings.ToLower(p), ".gguf") }

// isMMProj reports whether p names a multimodal projector (mmproj), which
// is no model on its own.
func isMMProj(p string) bool { return strings.Contains(strings.ToLower(path.Base(p)), "mmproj") }

// HasQuantTag reports whether the base name of p contains tag as a token,
// case-insensitively: preceded by the start or a non-alphanumeric character
// and followed by the end or a character that is neither alphanumeric nor
// "_" (so "Q4_K" does not match "Q4_K_M", but "model_Q4_K_M.gguf" and
// "model-q4_k_m.gguf" both match "Q4_K_M").
func HasQuantTag(p, tag string) bool {
	if tag == "" {
		return false
	}
	name := strings.ToLower(path.Base(p))
	tag = strings.ToLower(tag)
	for i := 0; ; {
		j := strings.Index(name[i:], tag)
		if j < 0 {
			return false
		}
		j += i
		end := j + len(tag)
		leftOK := j == 0 || !isAlnum(name[j-1])
		rightOK := end == len(name) || !(isAlnum(name[end]) || name[end] == '_')
		if leftOK && rightOK {
			return true
		}
		i = j + 1
	}
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// PickModel chooses the files of one model in a repo listing: a single
// GGUF, or every part of a gguf-split set (PREFIX-00001-of-0000N.gguf ...,
// in order), which is one candidate, named by its first part:
//
//   - file != "": exactly that path (a .gguf; a split set's first part
//     stands for the set, whose parts must all be listed; another part is
//     refused with the first part's name);
//   - quant != "": the candidate whose (first part's) name carries that
//     quantization tag (HasQuantTag), the first by path if several do (a
//     single file before a split set);
//   - otherwise the first tag of QuantPreference() that a candidate
//     carries, or the only candidate.
//
// mmproj files and incomplete split sets are never chosen implicitly. The
// error wraps ErrNoGGUF (or ErrNotFound for a missing exact file or part)
// and lists what the repo has.
func PickModel(files []File, file, quant string) ([]File, error) {
	sorted := append([]File(nil), files...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })
	cands, incomplete := candidates(sorted)
	if file != "" {
		for _, f := range sorted {
			if f.Path != file {
				continue
			}
			if !IsGGUF(f.Path) {
				return nil, fmt.Errorf("%w: %q is not a .gguf file", ErrNoGGUF, file)
			}
			if prefix, i, n, ok := gguf.ParseSplitName(f.Path); ok {
				if i != 0 {
					return nil, fmt.Errorf("%w: %q is part %d of a model split in %d files; name its first part, %s", ErrNoGGUF, file, i+1, n, gguf.SplitPath(prefix, 0, n))
				}
				if miss, ok := incomplete[f.Path]; ok {
					return nil, fmt.Errorf("%w: %q is the first of %d parts, and the repo has no %s", ErrNotFound, file, n, miss)
				}
				for _, c := range cands {
					if c[0].Path == f.Path {
						return c, nil
					}
				}
			}
			return []File{f}, nil
		}
		return nil, fmt.Errorf("%w: file %q is not in the repo (GGUF files: %s)", ErrNotFound, file, listGGUF(sorted))
	}
	if len(cands) == 0 {
		return nil, fmt.Errorf("%w: the repo has no GGUF model (GGUF files: %s)", ErrNoGGUF, listGGUF(sorted))
	}
	if quant != "" {
		for _, c := range cands {
			if HasQuantTag(c[0].Path, quant) {
				return c, nil
			}
		}
		return nil, fmt.Errorf("%w: no GGUF with quantization %s (GGUF files: %s)", ErrNoGGUF, quant, listGGUF(sorted))
	}
	for _, tag := range QuantPreference() {
		for _, c := range cands {
			if HasQuantTag(c[0].Path, tag) {
				return c, nil
			}
		}
	}
	if len(cands) == 1 {
		return cands[0], nil
	}
	return nil, fmt.Errorf("%w: several GGUF models and none with a known quantization tag; name one (GGUF files: %s)", ErrNoGGUF, listGGUF(sorted))
}

// candidates returns the models of a listing sorted by path: each single
// GGUF that is not an mmproj, by path, then each complete split set (its
// parts in order), by first path: of two with the same tag, the single
// file, which needs no merge (and no room for one). incomplete maps the
// first part of each incomplete set to the name of a missing part.
func candidates(sorted []File) (cands [][]File, incomplete map[string]string) {
	byPath := make(map[string]File, len(sorted))
	for _, f := range sorted {
		byPath[f.Path] = f
	}
	incomplete = map[string]string{}
	var sets [][]File
	for _, f := range sorted {
		if !IsGGUF(f.Path) || isMMProj(f.Path) {
			continue
		}
		prefix, i, n, ok := gguf.ParseSplitName(f.Path)
		switch {
		case !ok && IsSplitShard(f.Path):
			// Shaped like a part, but no set llama.cpp would load.
		case !ok:
			cands = append(cands, []File{f})
		case i == 0:
			set := make([]File, 0, n)
			for k := range n {
				p, has := byPath[gguf.SplitPath(prefix, k, n)]
				if !has {
					incomplete[f.Path] = path.Base(gguf.SplitPath(prefix, k, n))
					break
				}
				set = append(set, p)
			}
			if len(set) == n {
				sets = append(sets, set)
			}
		}
	}
	return append(cands, sets...), incomplete
}

func listGGUF(files []File) string {
	var names []string
	for _, f := range files {
		prefix, i, n, split := gguf.ParseSplitName(f.Path)
		switch {
		case !IsGGUF(f.Path), split && i > 0:
		case split:
			// A set is listed once: a 235B model has dozens of parts.
			names = append(names, fmt.Sprintf("%s (%d parts)", gguf.SplitPath(prefix, 0, n), n))
		default:
			names = append(names, f.Path)
		}
	}
	if len(names) == 0 {
		return "none"
	}
	const maxListed = 20 // keep error messages readable for repos with hundreds of shards
	if len(names) > maxListed {
		names = append(names[:maxListed], fmt.Sprintf("... %d more", len(names)-maxListed))
	}
	return strings.Join(names, ", ")
}
