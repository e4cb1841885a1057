package catalog

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzIndex opens a catalog whose index.json holds arbitrary bytes: New
// never panics, and a catalog it opens lists only entries whose files are
// inside its directory.
func FuzzIndex(f *testing.F) {
	sha := strings.Repeat("a", 64)
	for _, s := range []string{
		`{"version":1,"models":[]}`,
		`{"version":1,"models":[{"id":"ok","file_name":"m.gguf","size":8,"sha256":"` + sha + `"}]}`,
		`{"version":1,"models":[{"id":"..","file_name":"../x","size":-1,"sha256":"zz"}]}`,
		`{"version":99}`, `{not json`, `null`, `[]`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, index []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, IndexFile), index, 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := New(DefaultConfig(dir))
		if err != nil {
			return
		}
		defer c.Close()
		list, err := c.List()
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range list {
			if rel, err := filepath.Rel(dir, e.Path); err != nil || strings.HasPrefix(rel, "..") {
				t.Fatalf("entry %q points outside the catalog: %s", e.ID, e.Path)
			}
		}
	})
}
