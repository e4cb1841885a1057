package auth_test

import (
	"strings"
	"testing"

	"github.com/rbee-project/rbee/node/auth"
)

// FuzzParseAPIKey: any presented credential is accepted as well-formed only
// when it has the key's prefix and alphabet; a key from NewAPIKey always
// is; a malformed one's error never contains it.
func FuzzParseAPIKey(f *testing.F) {
	k, _ := auth.NewAPIKey()
	for _, s := range []string{k, "rbk_", "rbk_ABC", "rbee_secret", "Bearer rbk_x", strings.Repeat("a", 300), "rbk_" + strings.Repeat("z", 300), "rbk_a\x00b", "rbk_é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		err := auth.ParseAPIKey(tok)
		if err == nil {
			if !strings.HasPrefix(tok, "rbk_") || len(tok) > 256 || strings.Trim(tok[4:], "abcdefghijklmnopqrstuvwxyz234567") != "" || len(tok) == 4 {
				t.Fatalf("accepted %q", tok)
			}
			if auth.HashAPIKey(tok) != auth.HashAPIKey(tok) || len(auth.HashAPIKey(tok)) != 64 {
				t.Fatalf("hash of %q", tok)
			}
			return
		}
		if len(tok) > 3 && strings.Contains(err.Error(), tok) {
			t.Fatalf("error echoes the credential: %v", err)
		}
	})
}

func TestNewAPIKeyParses(t *testing.T) {
	for i := 0; i < 100; i++ {
		k, h := auth.NewAPIKey()
		if err := auth.ParseAPIKey(k); err != nil || h != auth.HashAPIKey(k) {
			t.Fatalf("%s: %v", k, err)
		}
	}
}
