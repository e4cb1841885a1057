package hf

import (
	"net/url"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseContentRange(t *testing.T) {
	for _, tc := range []struct {
		in                 string
		first, last, total int64
		ok                 bool
	}{
		{"bytes 0-9/10", 0, 9, 10, true},
		{"bytes 100-199/*", 100, 199, 0, true},
		{"bytes 5-4/10", 0, 0, 0, false},
		{"bytes 0-9/9", 0, 0, 0, false},
		{"bytes -1-9/10", 0, 0, 0, false},
		{"bytes */10", 0, 0, 0, false},
		{"items 0-9/10", 0, 0, 0, false},
		{"", 0, 0, 0, false},
	} {
		f, l, tot, err := parseContentRange(tc.in)
		if !tc.ok {
			require.ErrorIs(t, err, ErrBadRange, tc.in)
			continue
		}
		require.NoError(t, err, tc.in)
		require.Equal(t, []int64{tc.first, tc.last, tc.total}, []int64{f, l, tot}, tc.in)
	}
}

func TestNextLink(t *testing.T) {
	base, _ := url.Parse("https://hub.example/api/models/a/b/tree/main?recursive=true")
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"", "", true},
		{`<https://hub.example/api/x?cursor=2>; rel="next"`, "https://hub.example/api/x?cursor=2", true},
		{`</api/x?cursor=3>; rel="prev", </api/y?cursor=4>; rel="next"`, "https://hub.example/api/y?cursor=4", true},
		{`<https://evil.example/x>; rel="next"`, "", false},
		{`<https://hub.example/x>; rel="last"`, "", true},
	} {
		got, err := nextLink(tc.in, base)
		if !tc.ok {
			require.Error(t, err, tc.in)
			continue
		}
		require.NoError(t, err, tc.in)
		require.Equal(t, tc.want, got, tc.in)
	}
}

func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes 0-9/10", "bytes 100-199/*", "bytes */10", "bytes 9223372036854775807-9223372036854775807/*", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		first, last, total, err := parseContentRange(s)
		if err != nil {
			return
		}
		if first < 0 || last < first || (total != 0 && total <= last) {
			t.Fatalf("%q: inconsistent %d-%d/%d", s, first, last, total)
		}
	})
}

func FuzzNextLink(f *testing.F) {
	for _, s := range []string{`<https://hub.example/api/x?cursor=2>; rel="next"`, `</a>; rel=next, <b>`, `<`, `<>; rel="next"`} {
		f.Add(s)
	}
	base, _ := url.Parse("https://hub.example/api/models/a/b/tree/main")
	f.Fuzz(func(t *testing.T, s string) {
		got, err := nextLink(s, base)
		if err != nil || got == "" {
			return
		}
		u, err := url.Parse(got)
		if err != nil || u.Host != base.Host {
			t.Fatalf("%q: followed %q off host", s, got)
		}
	})
}
