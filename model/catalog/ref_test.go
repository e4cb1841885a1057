package catalog

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseRef(t *testing.T) {
	sha := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		in   string
		want Ref
		str  string // canonical form; "" means the input
	}{
		{"hf:ggml-org/models", Ref{Source: SourceHF, Repo: "ggml-org/models"}, ""},
		{"hf://ggml-org/models", Ref{Source: SourceHF, Repo: "ggml-org/models"}, "hf:ggml-org/models"},
		{"hf:TheBloke/Llama-2-7B-GGUF:q4_k_m", Ref{Source: SourceHF, Repo: "TheBloke/Llama-2-7B-GGUF", Quant: "Q4_K_M"}, "hf:TheBloke/Llama-2-7B-GGUF:Q4_K_M"},
		{"hf:ggml-org/models/tinyllamas/stories260K.gguf", Ref{Source: SourceHF, Repo: "ggml-org/models", File: "tinyllamas/stories260K.gguf"}, ""},
		{"  HF:a/b  ", Ref{Source: SourceHF, Repo: "a/b"}, "hf:a/b"},
		{"https://example.com/m/model.Q8_0.gguf", Ref{Source: SourceURL, URL: "https://example.com/m/model.Q8_0.gguf"}, ""},
		{"http://10.0.0.2:8080/x.gguf#sha256=" + sha, Ref{Source: SourceURL, URL: "http://10.0.0.2:8080/x.gguf", SHA256: sha}, ""},
		{"https://h/dl?id=3#sha256=" + strings.ToUpper(sha), Ref{Source: SourceURL, URL: "https://h/dl?id=3", SHA256: sha}, "https://h/dl?id=3#sha256=" + sha},
		{"builtin:stories260k", Ref{Source: SourceBuiltin, Name: "stories260k"}, ""},
		{"builtin:Stories260K", Ref{Source: SourceBuiltin, Name: "stories260k"}, "builtin:stories260k"},
		{"/models/a.gguf", Ref{Source: SourceLocal, Path: "/models/a.gguf"}, ""},
		{"./a/../b.gguf", Ref{Source: SourceLocal, Path: "b.gguf"}, "b.gguf"},
		{"file:///models/a.gguf", Ref{Source: SourceLocal, Path: "/models/a.gguf"}, "/models/a.gguf"},
		{"./hf:x.gguf", Ref{Source: SourceLocal, Path: "hf:x.gguf"}, "./hf:x.gguf"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			r, err := ParseRef(tc.in)
			require.NoError(t, err)
			require.Equal(t, tc.want, r)
			want := tc.str
			if want == "" {
				want = tc.in
			}
			require.Equal(t, want, r.String())
			again, err := ParseRef(r.String())
			require.NoError(t, err)
			require.Equal(t, r, again)
		})
	}
}

func TestParseRefErrors(t *testing.T) {
	for _, tc := range []struct{ in, msg string }{
		{"", "empty"},
		{"   ", "empty"},
		{"hf:", "want hf:ORG/REPO"},
		{"hf:justrepo", "want hf:ORG/REPO"},
		{"hf:../x", "repo id"},
		{"hf:org/..", "repo id"},
		{"hf:org/a--b", "repo id"},
		{"hf:org/repo:", "quantization"},
		{"hf:org/repo:Q4 K", "quantization"},
		{"hf:org/repo/../../etc/passwd.gguf", "segment"},
		{"hf:org/repo//x.gguf", "segment"},
		{"hf:org/repo/README.md", "not a .gguf"},
		{"hf:org/repo/a.gguf:Q4_K_M", "not both"},
		{"hf:org/repo/.hidden.gguf", "must not start with '.'"},
		{"builtin:stories15m", "unknown builtin"},
		{"builtin:../stories260k", "unknown builtin"},
		{"ftp://x/y.gguf", "unknown scheme"},
		{"s3:bucket/key", "unknown scheme"},
		{"https://", "no host"},
		{"https:///x.gguf", "no host"},
		{"https://user:pw@host/x.gguf", "credentials"},
		{"https://host/x.gguf#md5=00", "sha256"},
		{"https://host/x.gguf#sha256=abc", "sha256"},
		{"https://host/", "no file name"},
		{"https://host/.hidden", "must not start with '.'"},
		{"file://remote/x.gguf", "file:///"},
		{"/", "not a file path"},
		{"..", "not a file path"},
		{"a\x00b", "control character"},
		{"hf:org/repo\n", ""},
		{"hf:org/re\tpo", "control character"},
		{"\xff\xfe", "UTF-8"},
		{strings.Repeat("a", maxRefLen+1), "longer than"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			r, err := ParseRef(tc.in)
			if tc.in == "hf:org/repo\n" { // trailing space is trimmed: accepted
				require.NoError(t, err)
				require.Equal(t, "org/repo", r.Repo)
				return
			}
			require.ErrorIs(t, err, ErrBadRef, "got %+v", r)
			require.ErrorContains(t, err, tc.msg)
		})
	}
}

// FuzzParseRef: no panics; an accepted ref round-trips through String and
// never yields a name that could escape the catalog directory.
func FuzzParseRef(f *testing.F) {
	for _, s := range []string{
		"hf:ggml-org/models", "hf:a/b:Q4_K_M", "hf:a/b/c/d.gguf", "https://h/x.gguf#sha256=" + strings.Repeat("0", 64),
		"builtin:stories260k", "/x/y.gguf", "file:///x.gguf", "./hf:x", "C:\\x.gguf", "hf:a/b/..", "http://[::1]:80/a.gguf",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRef(s)
		if err != nil {
			return
		}
		again, err := ParseRef(r.String())
		if err != nil {
			t.Fatalf("%q → %q does not parse again: %v", s, r.String(), err)
		}
		if again != r {
			t.Fatalf("%q: round trip %+v → %q → %+v", s, r, r.String(), again)
		}
		var file string
		switch r.Source {
		case SourceHF:
			if r.File != "" {
				file = r.File[strings.LastIndexByte(r.File, '/')+1:]
				if err := ValidateFileName(file); err != nil {
					t.Fatalf("%q: file name %q: %v", s, file, err)
				}
			}
		case SourceURL:
			if r.SHA256 != "" && !isSHA256(r.SHA256) {
				t.Fatalf("%q: sha256 %q", s, r.SHA256)
			}
		}
		if id := IDFor(r, file+"x.gguf"); ValidateID(id) != nil {
			t.Fatalf("%q: IDFor gave invalid id %q", s, id)
		}
	})
}
