package owner

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

func TestOfPath(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no uids")
	}
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	uid, ok := OfPath(p)
	if !ok || uid != uint32(os.Getuid()) {
		t.Fatalf("owner %d %v, want %d", uid, ok, os.Getuid())
	}
	if os.Getuid() == 0 {
		if err := os.Chown(p, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if uid, ok := OfPath(p); !ok || uid != 65534 {
			t.Fatalf("owner %d %v after chown, want 65534", uid, ok)
		}
	}
	if _, ok := OfPath(filepath.Join(t.TempDir(), "absent")); ok {
		t.Fatal("an absent file has an owner")
	}
}
