package humanize

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestBytes(t *testing.T) {
	tests := []struct {
		in   uint64
		want string
	}{
		{0, "0 B"},
		{1, "1 B"},
		{1023, "1023 B"},
		{1024, "1.0 KiB"},
		{1536, "1.5 KiB"},
		{1<<20 - 1, "1024.0 KiB"},
		{1 << 20, "1.0 MiB"},
		{4_080_218_931, "3.8 GiB"},
		{1 << 40, "1.0 TiB"},
		{1 << 50, "1.0 PiB"},
		{1 << 60, "1.0 EiB"},
		{math.MaxUint64, "16.0 EiB"},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, Bytes(tt.in), "Bytes(%d)", tt.in)
	}
}

func TestAge(t *testing.T) {
	for _, c := range []struct {
		in   time.Duration
		want string
	}{
		{-time.Hour, "0s"},
		{0, "0s"},
		{999 * time.Millisecond, "0s"},
		{59 * time.Second, "59s"},
		{time.Minute, "1m"},
		{59*time.Minute + 59*time.Second, "59m"},
		{time.Hour, "1h"},
		{47 * time.Hour, "47h"},
		{48 * time.Hour, "2d"},
		{400 * 24 * time.Hour, "400d"},
	} {
		require.Equal(t, c.want, Age(c.in), "Age(%v)", c.in)
	}
}

func TestOrDash(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "-"},
		{"v1.2.3", "v1.2.3"},
		{" ", " "},
		{"-", "-"},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, OrDash(tt.in), "OrDash(%q)", tt.in)
	}
}

func TestClip(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"short", "short"},
		{"a\nb\x00c\x7f", "abc"},
		{"0123456789abc", "0123456789a…"},
		{"ééééééé", "ééééé…"}, // cut inside a character: the partial one goes
	} {
		if got := Clip(c.in, 11); got != c.want {
			t.Errorf("Clip(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
