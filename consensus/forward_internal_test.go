package consensus

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/fsm"
)

func TestFrameLimits(t *testing.T) {
	var buf bytes.Buffer
	require.ErrorIs(t, writeFrame(&buf, make([]byte, maxFrame+1)), errFrameTooLarge)
	require.Zero(t, buf.Len())

	hdr := make([]byte, 4)
	binary.BigEndian.PutUint32(hdr, maxFrame+1)
	_, err := readFrame(bytes.NewReader(hdr))
	require.ErrorIs(t, err, errFrameTooLarge)

	_, err = readFrame(bytes.NewReader([]byte{0, 0, 0, 9, 1}))
	require.Error(t, err, "truncated frame")

	require.NoError(t, writeFrame(&buf, []byte{opStatus}))
	got, err := readFrame(&buf)
	require.NoError(t, err)
	op, body, err := parseRequest(got)
	require.NoError(t, err)
	require.Equal(t, opStatus, op)
	require.Empty(t, body)

	_, _, err = parseRequest(nil)
	require.Error(t, err)
	_, _, err = parseRequest([]byte{99})
	require.Error(t, err)
}

func TestResponseErrors(t *testing.T) {
	tests := []struct {
		resp forwardResponse
		want []error
	}{
		{forwardResponse{Code: codeOK}, nil},
		{forwardResponse{Code: codeNotLeader}, []error{ErrNotLeader}},
		{forwardResponse{Code: codeRejected, FSMCode: "not_found", Message: "x"}, []error{ErrRejected, fsm.ErrNotFound}},
		{forwardResponse{Code: codeError, Message: "boom"}, []error{ErrForward}},
		{forwardResponse{Code: "weird"}, []error{ErrForward}},
		{forwardResponse{Code: codeSent, Message: "lost leadership"}, []error{ErrForward, errSent}},
	}
	for _, tc := range tests {
		err := errFromResponse(tc.resp)
		if tc.want == nil {
			require.NoError(t, err)
		}
		for _, w := range tc.want {
			require.ErrorIs(t, err, w)
		}
		// And the server side produces what the client decodes.
		if tc.resp.Code == codeRejected {
			back := responseFor(nil, err)
			require.Equal(t, codeRejected, back.Code)
			require.Equal(t, "not_found", back.FSMCode)
		}
	}
	// A leader that could not learn the outcome says so, whatever raft
	// called it: the caller must count the attempt as maybe applied.
	for _, cause := range []error{raft.ErrLeadershipLost, context.DeadlineExceeded, ErrClosed} {
		sent := fmt.Errorf("%w: %w", errSent, translate(cause))
		back := errFromResponse(responseFor(nil, sent))
		require.ErrorIs(t, back, errSent, "%v", cause)
		require.True(t, retryable(back))
	}
	require.True(t, retryable(errFromResponse(forwardResponse{Code: codeNotLeader})))
	require.False(t, retryable(errFromResponse(forwardResponse{Code: codeRejected})))
	require.True(t, retryable(errors.Join(ErrForward)))
}

// FuzzForwardFrames feeds arbitrary bytes to both parsers of the forward
// protocol: the server's request framing and the client's response
// decoding. Neither may panic or accept a frame over the cap.
func FuzzForwardFrames(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, opStatus})
	f.Add([]byte{0, 0, 0, 3, opApply, 4, '{'})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte(`{"code":"rejected","fsm_code":"invalid","message":"m"}`))
	f.Add([]byte(`{"code":"ok","result":{"index":3,"type":1,"changed":true}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if frame, err := readFrame(bytes.NewReader(data)); err == nil {
			if len(frame) > maxFrame {
				t.Fatalf("frame of %d bytes accepted", len(frame))
			}
			if op, _, err := parseRequest(frame); err == nil && op != opApply && op != opStatus && op != opRemove {
				t.Fatalf("unknown op %d accepted", op)
			}
		}
		var resp forwardResponse
		if json.Unmarshal(data, &resp) == nil {
			err := errFromResponse(resp)
			if resp.Code != codeOK && err == nil {
				t.Fatalf("code %q gave no error", resp.Code)
			}
		}
	})
}
