package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/rbee-project/rbee/internal/jsonx"
)

// Strict decoding of job requests: a field the operation's request type
// does not declare is refused with a *FieldError naming it, so a job never
// runs with part of its request silently ignored (a misspelt "max_token"
// would otherwise run with the default).

// FieldError is a job request refused for one of its fields.
type FieldError struct {
	// Field is the JSON field at fault ("messages[0].bogus"); empty for
	// the body as a whole.
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Msg }

// inferWorkerFields are the fields of an infer job that InferRequest does
// not declare and the node passes to the worker's native /v1/infer, which
// takes and validates them. The worker's tests check that it takes each.
var inferWorkerFields = []string{"max_completion_tokens", "min_p", "repeat_penalty", "repeat_last_n", "n",
	"response_format", "tools", "tool_choice", "parallel_tool_calls", "logprobs", "top_logprobs", "chat_template_kwargs"}

// InferWorkerFields lists the fields an infer job passes to the worker
// besides InferRequest's own.
func InferWorkerFields() []string { return slices.Clone(inferWorkerFields) }

// messageFields are the fields of an infer job's message (Message's).
// refusal, audio, function_call and annotations come back in clients'
// copies of earlier answers; the worker takes them only as null.
var messageFields = []string{"role", "content", "tool_calls", "tool_call_id", "name",
	"refusal", "audio", "function_call", "annotations"}

// requestTypes are the request types by operation.
var requestTypes = func() map[string]reflect.Type {
	m := map[string]reflect.Type{}
	for _, r := range []Request{StatusRequest{}, HiveListRequest{}, HiveGetRequest{}, HiveStatusRequest{}, HiveRefreshCapabilitiesRequest{},
		InferRequest{}, WorkerListRequest{}, WorkerGetRequest{}, WorkerRetireRequest{},
		WorkerSpawnRequest{}, ProcessListRequest{}, ProcessGetRequest{}, ProcessDeleteRequest{},
		BinaryListRequest{}, BinaryGetRequest{}, BinaryDeleteRequest{}, BinaryAddRequest{},
		WorkerBuildRequest{}, WorkerDownloadRequest{}, ModelDownloadRequest{}, ModelListRequest{}, ModelGetRequest{}, ModelDeleteRequest{},
		ImportSSHRequest{}, SSHTestRequest{}, HiveInstallRequest{}, HiveUninstallRequest{}, HiveStartRequest{}, HiveStopRequest{},
		NodeLeaveRequest{}, APIKeyCreateRequest{}, APIKeyListRequest{}, APIKeyRevokeRequest{}} {
		m[r.Operation()] = reflect.TypeOf(r)
	}
	return m
}()

// extraFields are the fields an operation takes beyond its type's:
// "operation" everywhere, and "hive" where the node reads it as the
// name of the hive to report.
func extraFields(op string) []string {
	switch op {
	case OpHiveGet, OpHiveStatus:
		return []string{"operation", "hive"}
	case OpInfer:
		return append([]string{"operation"}, inferWorkerFields...)
	}
	return []string{"operation"}
}

// Decode reads a job body into its operation's request type. A missing or
// unknown operation, a field the operation does not take and a value of a
// wrong type are a *FieldError naming the field.
func Decode(body []byte) (Request, error) {
	var head struct {
		Operation *string `json:"operation"`
	}
	if b := bytes.TrimSpace(body); len(b) == 0 || b[0] != '{' {
		return nil, &FieldError{Msg: "a job request must be a JSON object"}
	}
	if err := json.Unmarshal(body, &head); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, &FieldError{Field: "operation", Msg: "operation must be a string (the operation's name)"}
		}
		return nil, &FieldError{Msg: "malformed job JSON: " + strings.TrimPrefix(err.Error(), "json: ")}
	}
	if head.Operation == nil || *head.Operation == "" {
		return nil, &FieldError{Field: "operation", Msg: `missing field "operation"`}
	}
	op := *head.Operation
	t, ok := requestTypes[op]
	if !ok {
		return nil, &FieldError{Field: "operation", Msg: fmt.Sprintf("unknown operation %q (known: %s)", op, strings.Join(Operations(), ", "))}
	}
	v := reflect.New(t)
	if t != reflect.TypeFor[InferRequest]() { // InferRequest checks itself
		if err := strictDecode(op, body, t, v.Interface()); err != nil {
			return nil, err
		}
	} else if err := json.Unmarshal(body, v.Interface()); err != nil {
		return nil, err
	}
	return v.Elem().Interface().(Request), nil
}

// UnmarshalJSON decodes an infer job strictly: besides its own fields
// (and "operation"), only the worker's fields the node passes on
// (InferWorkerFields) are taken, and each message takes Message's fields.
// The node decodes every infer job into an InferRequest before it runs,
// so a stray field is refused when the job is submitted.
func (r *InferRequest) UnmarshalJSON(b []byte) error {
	type plain InferRequest
	if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		return nil
	}
	var p plain
	if err := strictDecode(OpInfer, b, reflect.TypeFor[InferRequest](), &p); err != nil {
		return err
	}
	var fields struct {
		Messages []map[string]json.RawMessage `json:"messages"`
	}
	if json.Unmarshal(b, &fields) == nil {
		for i, m := range fields.Messages {
			if k := firstUnknown(m, messageFields); k != "" {
				return &FieldError{Field: fmt.Sprintf("messages[%d].%s", i, k),
					Msg: fmt.Sprintf("unknown field %q in messages[%d]: a message takes %s", k, i, strings.Join(messageFields, ", "))}
			}
		}
	}
	*r = InferRequest(p)
	return nil
}

// strictDecode decodes body into v (a pointer to t, or to a type with t's
// fields and no methods) after checking that every field of the body is
// one of t's or of op's extra fields.
func strictDecode(op string, body []byte, t reflect.Type, v any) error {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil || fields == nil {
		return &FieldError{Msg: "a job request must be a JSON object"}
	}
	own := jsonFields(t)
	if k := firstUnknown(fields, append(slices.Clone(own), extraFields(op)...)); k != "" {
		takes := "no fields"
		if len(own) > 0 {
			takes = strings.Join(own, ", ")
		}
		return &FieldError{Field: k, Msg: fmt.Sprintf("unknown field %q: %s takes %s", k, op, takes)}
	}
	if err := json.Unmarshal(body, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return &FieldError{Field: te.Field, Msg: fmt.Sprintf("%s must be %s", te.Field, jsonx.TypeWant(te.Type))}
		}
		return &FieldError{Msg: fmt.Sprintf("%s: %s", op, strings.TrimPrefix(err.Error(), "json: "))}
	}
	return nil
}

// firstUnknown is the first field of m, in name order, not in known.
func firstUnknown[V any](m map[string]V, known []string) string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		if !slices.Contains(known, k) {
			return k
		}
	}
	return ""
}

// jsonFields lists the JSON field names of struct type t, those of its
// embedded structs included, in declaration order.
func jsonFields(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			out = append(out, jsonFields(f.Type)...)
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, name)
	}
	return out
}

// looseFields are, by operation, the request fields that a build which
// decodes job requests loosely may not know: one from before strict
// decoding ignores a field it does not know, so a job forwarded to it
// with one of these would run without it (a worker_spawn with shards 2
// would start one whole worker). They are the fields added since the
// oldest build a cluster mixes with (2026-12-04); every build since
// decodes strictly and refuses what it does not know, so the list does
// not grow.
var looseFields = map[string][]string{
	OpStatus:      {"all"},
	OpWorkerSpawn: {"kv_cache", "shards", "hives", "mode", "group", "shard"},
}

// LooseIgnored lists, in name order, the fields of the op job body that a
// build which decodes job requests loosely may ignore: those of
// looseFields the body sets to something other than null or a zero value
// ("", 0, false, [], {}), which such a build would take the same as the
// field's absence.
func LooseIgnored(op string, body []byte) []string {
	known := looseFields[op]
	if len(known) == 0 {
		return nil
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(body, &fields) != nil {
		return nil
	}
	var out []string
	for _, k := range known {
		v, ok := fields[k]
		if !ok {
			continue
		}
		switch string(bytes.TrimSpace(v)) {
		case "null", `""`, "0", "false", "[]", "{}":
			continue
		}
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
