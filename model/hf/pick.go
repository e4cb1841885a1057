package hf

import (
	"fmt"
	"path"
	"regexp"
	"sort"
	"strings"
	"sync"
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

// splitRE matches llama.cpp's gguf-split shard names (model-00001-of-00003.gguf).
var splitRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`(?i)-\d{5}-of-\d{5}\.gguf$`) })

// IsSplitShard reports whether p names one shard of a gguf-split model
// (model-00001-of-00003.gguf), which cannot be loaded on its own.
func IsSplitShard(p string) bool { return splitRE().MatchString(path.Base(p)) }

// IsGGUF reports whether p names a GGUF file (by extension).
func IsGGUF(p string) bool { return strings.HasSuffix(strings.ToLower(p), ".gguf") }

// isCandidate reports whether p is a whole-model GGUF: not a split shard and
// not a multimodal projector (mmproj), which cannot be loaded on its own.
func isCandidate(p string) bool {
	base := strings.ToLower(path.Base(p))
	return IsGGUF(p) && !splitRE().MatchString(base) && !strings.Contains(base, "mmproj")
}

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

// PickGGUF chooses one file of a repo listing:
//
//   - file != "": exactly that path (it must be a GGUF and not a split shard);
//   - quant != "": the GGUF whose name carries that quantization tag
//     (HasQuantTag), the first by path if several do;
//   - otherwise the first tag of QuantPreference() that some GGUF carries, or
//     the only GGUF when there is exactly one.
//
// Split shards and mmproj files are never chosen implicitly. The error wraps
// ErrNoGGUF (or ErrNotFound for a missing exact file) and lists what the repo
// has.
func PickGGUF(files []File, file, quant string) (File, error) {
	sorted := append([]File(nil), files...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })
	if file != "" {
		for _, f := range sorted {
			if f.Path == file {
				if !IsGGUF(f.Path) {
					return File{}, fmt.Errorf("%w: %q is not a .gguf file", ErrNoGGUF, file)
				}
				if IsSplitShard(f.Path) {
					return File{}, fmt.Errorf("%w: %q is one shard of a split GGUF; split models are not supported", ErrNoGGUF, file)
				}
				return f, nil
			}
		}
		return File{}, fmt.Errorf("%w: file %q is not in the repo (GGUF files: %s)", ErrNotFound, file, listGGUF(sorted))
	}
	var cands []File
	for _, f := range sorted {
		if isCandidate(f.Path) {
			cands = append(cands, f)
		}
	}
	if len(cands) == 0 {
		return File{}, fmt.Errorf("%w: the repo has no single-file GGUF model (GGUF files: %s)", ErrNoGGUF, listGGUF(sorted))
	}
	if quant != "" {
		for _, f := range cands {
			if HasQuantTag(f.Path, quant) {
				return f, nil
			}
		}
		return File{}, fmt.Errorf("%w: no GGUF with quantization %s (GGUF files: %s)", ErrNoGGUF, quant, listGGUF(cands))
	}
	for _, tag := range QuantPreference() {
		for _, f := range cands {
			if HasQuantTag(f.Path, tag) {
				return f, nil
			}
		}
	}
	if len(cands) == 1 {
		return cands[0], nil
	}
	return File{}, fmt.Errorf("%w: several GGUF files and none with a known quantization tag; name one (GGUF files: %s)", ErrNoGGUF, listGGUF(cands))
}

func listGGUF(files []File) string {
	var names []string
	for _, f := range files {
		if IsGGUF(f.Path) {
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
