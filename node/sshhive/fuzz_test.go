package sshhive

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rbee-project/rbee/fsm"
)

// FuzzImportConfig: any config text gives a result or an error, never a
// panic, and every host it adds passes the registry's own checks.
func FuzzImportConfig(f *testing.F) {
	f.Add(mainConfig)
	f.Add("Host a b *.lan !c\n  HostName %h.x\n  Port 2222\n  User u\n  IdentityFile ~/.ssh/%r_%h\n")
	f.Add("Include inc/*\nHost x\n")
	f.Add("Match host a,b\n  User m\nMatch all\n  Port 1\nMatch user x\nHost a\n")
	f.Add("Host=a\nHostName=\"quoted name\"\nPort=0\n")
	home := f.TempDir()
	inc := filepath.Join(home, ".ssh", "inc")
	if err := os.MkdirAll(inc, 0o700); err != nil {
		f.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(inc, "one"), []byte("Host fromfile\n  Include inc/*\n"), 0o600); err != nil {
		f.Fatal(err)
	}
	existing := []fsm.Host{{Name: "a", Host: "10.0.0.1", State: fsm.HostInstalled}}
	f.Fuzz(func(t *testing.T, cfg string) {
		for _, overwrite := range []bool{false, true} {
			res, err := ImportConfig(strings.NewReader(cfg), existing, ImportOptions{Home: home, DefaultUser: "me", Overwrite: overwrite})
			if err != nil {
				continue
			}
			for _, h := range append(res.Added, res.Updated...) {
				if _, err := fsm.Encode(fsm.UpsertHost{Host: h}); err != nil {
					t.Fatalf("imported host fails registry validation: %v (%+v)", err, h)
				}
				if h.Host == "" || strings.ContainsAny(h.Name, "*?!") {
					t.Fatalf("bad host %+v", h)
				}
			}
		}
	})
}

// FuzzParseUname: never panics; a success is a known GOOS/GOARCH pair.
func FuzzParseUname(f *testing.F) {
	for _, s := range []string{"Linux x86_64", "Darwin arm64", "MINGW64_NT-10.0 x86_64", "Linux armv7l", "", " \n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		goos, goarch, err := ParseUname(s)
		if err != nil {
			return
		}
		if goos == "" || goarch == "" {
			t.Fatalf("ParseUname(%q) = %q, %q without error", s, goos, goarch)
		}
	})
}
