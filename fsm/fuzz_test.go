package fsm

import (
	"bytes"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// FuzzApply feeds arbitrary bytes to Apply on a populated registry. Apply
// must never panic; a rejected command must leave the state untouched; an
// accepted one must re-encode to a command that decodes again, and the
// resulting state must survive a snapshot round trip.
func FuzzApply(f *testing.F) {
	for _, c := range sampleCommands() {
		b, err := Encode(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{byte(TypeDeleteNode), '{', '}'})
	if b, err := Encode(CreateAPIKey{Key: APIKey{Name: "webui", Scope: ScopeInference, Hash: strings.Repeat("0f", 32)}}); err == nil {
		f.Add(b)
	}
	f.Add(append([]byte{byte(TypeDeleteAPIKey)}, `{"name":"webui"}`...))
	if b, err := Encode(CreateClusterCA{CA: testCA(f)}); err == nil {
		f.Add(b)
	}
	f.Add(append([]byte{byte(TypeCreateClusterCA)}, `{"ca":{"cert_pem":"-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n","sealed_key":"AAAA"}}`...))
	for _, c := range sampleCommands()[:3] {
		if b, err := EncodeOnce(OnceID{1}, 90, enc(f, c)); err == nil {
			f.Add(b)
		}
	}
	f.Add(append([]byte{byte(TypeOnce)}, make([]byte, onceHeaderSize)...))
	f.Fuzz(func(t *testing.T, data []byte) {
		fsm := New(nil)
		for i, c := range append(sampleCommands(), SetRegistryVersion{Version: Version}) {
			b, _ := Encode(c)
			if _, err := fsm.ApplyCommand(uint64(i+1), b); err != nil {
				t.Fatal(err)
			}
		}
		before := fsm.State()
		var want bytes.Buffer
		if err := WriteSnapshot(&want, before); err != nil {
			t.Fatal(err)
		}
		res := fsm.Apply(&raft.Log{Index: 100, Type: raft.LogCommand, Data: data})
		_, isErr := res.(error)
		if !isErr && len(data) > 0 && Since(CommandType(data[0])) == 0 && CommandType(data[0])&IgnorableFlag != 0 {
			// An ignorable type this build does not know: skipped.
			if fsm.State() != before {
				t.Fatalf("a skipped command changed the state")
			}
			return
		}
		if isErr {
			var got bytes.Buffer
			if err := WriteSnapshot(&got, fsm.State()); err != nil {
				t.Fatal(err)
			}
			if fsm.State() != before || !bytes.Equal(want.Bytes(), got.Bytes()) {
				t.Fatalf("rejected command changed the state")
			}
			return
		}
		inner := data
		if len(data) > 0 && CommandType(data[0]) == TypeOnce {
			var err error
			if _, _, inner, err = DecodeOnce(data); err != nil {
				t.Fatalf("Apply accepted an envelope DecodeOnce rejects: %v", err)
			}
		}
		cmd, err := Decode(inner)
		if err != nil {
			t.Fatalf("Apply accepted what Decode rejects: %v", err)
		}
		if _, err := Encode(cmd); err != nil {
			t.Fatalf("accepted command does not re-encode: %v", err)
		}
		if fsm.Index() != 100 {
			t.Fatalf("index %d after accepted command", fsm.Index())
		}
		var snap bytes.Buffer
		if err := WriteSnapshot(&snap, fsm.State()); err != nil {
			t.Fatal(err)
		}
		st, err := ReadSnapshot(bytes.NewReader(snap.Bytes()))
		if err != nil {
			t.Fatalf("snapshot of accepted state does not restore: %v", err)
		}
		var again bytes.Buffer
		if err := WriteSnapshot(&again, st); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(snap.Bytes(), again.Bytes()) {
			t.Fatalf("snapshot round trip differs")
		}
	})
}

// FuzzRestore feeds arbitrary bytes to Restore: never a panic, and a
// rejected snapshot keeps the old state.
func FuzzRestore(f *testing.F) {
	src := New(nil)
	for i, c := range sampleCommands() {
		b, _ := Encode(c)
		if _, err := src.ApplyCommand(uint64(i+1), b); err != nil {
			f.Fatal(err)
		}
	}
	var good bytes.Buffer
	if err := WriteSnapshot(&good, src.State()); err != nil {
		f.Fatal(err)
	}
	f.Add(good.Bytes())
	f.Add([]byte("RBEE\x01{}"))
	f.Add([]byte("RBEE\x02{}"))
	f.Add([]byte("RBEE\x03{\"cluster_ca\":" + caJSON(f) + "}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		fsm := New(nil)
		before := fsm.State()
		if err := fsm.Restore(nopCloser{bytes.NewReader(data)}); err != nil && fsm.State() != before {
			t.Fatalf("failed restore replaced the state")
		}
	})
}

type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }
