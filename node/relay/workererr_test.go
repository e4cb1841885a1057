package relay

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestWorkerError(t *testing.T) {
	cases := []struct {
		body, msg, code string
		ok              bool
		text            string
	}{
		{`{"error":{"message":"bad temperature","type":"invalid_request_error","param":"temperature","code":"invalid_request"}}`, "bad temperature", "invalid_request", true, "bad temperature (field temperature)"},
		{`{"error":{"message":"out of memory","code":500}}`, "out of memory", "500", true, "out of memory"},
		{`{"error":{"message":"x","code":null}}`, "x", "", true, "x"},
		{`{"error":"plain string"}`, "", "", false, `{"error":"plain string"}`},
		{`{"error":{"message":""}}`, "", "", false, `{"error":{"message":""}}`},
		{"  upstream timed out\n", "", "", false, "upstream timed out"},
	}
	for _, tc := range cases {
		d, ok := WorkerError([]byte(tc.body))
		require.Equal(t, tc.ok, ok, tc.body)
		require.Equal(t, tc.msg, d.Message, tc.body)
		require.Equal(t, tc.code, d.Code, tc.body)
		require.Equal(t, tc.text, WorkerErrorMessage([]byte(tc.body)), tc.body)
	}
}
