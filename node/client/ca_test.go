package client

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/api"
	"github.com/rbee-project/rbee/node/tlsca"
)

// TestCAIsChecked: `rbee tls ca` believes nothing the answer says about
// itself. Over plain HTTP (or through anything that alters it) a node's
// answer could carry another CA, a second certificate after the right
// one, or a fingerprint that is not the certificate's; with a pinned
// fingerprint only that CA is accepted, and the fingerprint printed is
// the certificate's own.
func TestCAIsChecked(t *testing.T) {
	now := time.Now()
	good, err := tlsca.NewCA("good", now)
	require.NoError(t, err)
	evil, err := tlsca.NewCA("evil", now)
	require.NoError(t, err)
	goodPEM, evilPEM := string(tlsca.EncodeCertPEM(good.Cert)), string(tlsca.EncodeCertPEM(evil.Cert))
	for _, tc := range []struct {
		name    string
		answer  api.CAInfo
		pin     string
		wantErr error
		wantFP  string
	}{
		{"the pinned CA", api.CAInfo{CertPEM: goodPEM, Fingerprint: good.Fingerprint()}, good.Fingerprint(), nil, good.Fingerprint()},
		{"another CA claiming the pinned fingerprint", api.CAInfo{CertPEM: evilPEM, Fingerprint: good.Fingerprint()}, good.Fingerprint(), tlsca.ErrWrongCA, ""},
		{"the pinned CA and one more", api.CAInfo{CertPEM: goodPEM + evilPEM, Fingerprint: good.Fingerprint()}, good.Fingerprint(), tlsca.ErrBadPEM, ""},
		{"no pin: the fingerprint is the certificate's", api.CAInfo{CertPEM: evilPEM, Fingerprint: good.Fingerprint()}, "", nil, evil.Fingerprint()},
		{"not a certificate", api.CAInfo{CertPEM: "hello", Fingerprint: good.Fingerprint()}, "", tlsca.ErrBadPEM, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				_ = json.NewEncoder(w).Encode(tc.answer)
			}))
			defer hs.Close()
			info, err := New(hs.URL, "").CA(t.Context(), tc.pin)
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.wantFP, info.Fingerprint)
			cert, err := tlsca.ParseCACertPEM([]byte(info.CertPEM))
			require.NoError(t, err)
			require.Equal(t, tc.wantFP, tlsca.Fingerprint(cert))
		})
	}
}
